//! Whether anything on Relance's bus could receive its informational events: the rules and
//! archives that read the bus, and their patterns judged against an event's `source` and
//! `detail-type` (the only fields every such event shares), always erring towards "could".
//!
//! EventBridge bills every event published, received or not, and only a rule or an archive on
//! the bus can receive one. So in a deployment whose informational events
//! (`config::MUTABLE_EVENTS`) no rule or archive could match, the tick stores which ones are
//! unheard (`DynamoStore::record_unheard`) and the functions leave them out while that
//! finding is fresh; a rule added later hears them from the tick after it (within about two
//! minutes: a tick a minute, a function re-reading the finding each minute; the events of
//! that window are not published). A check that fails stores that nothing is known (every
//! event is published). Events that
//! carry work are published whatever the finding.
//!
//! A pattern is judged on its top-level `source` and `detail-type` only, with every other
//! field dropped: dropping a condition can only widen a pattern, so one that cannot match an
//! event's source and detail-type cannot match the event. Any form this module does not know
//! (a top-level `$or`, a matcher it does not read, a pattern that is not JSON) counts as one
//! that could match.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::{Informational, MUTABLE_EVENTS};
use crate::dynamodb::DynamoStore;
use crate::error::{EventBridgeError, StoreError};
use crate::eventbridge::{EventBus, SOURCE};

/// Why the listeners were not checked (the previous finding then ages out: every event goes
/// out again after `HEARD_FRESH`).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Listing the bus's rules or archives failed.
    #[error(transparent)]
    Bus(#[from] EventBridgeError),
    /// Storing the finding failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tick's check (once a minute, at `wall`, the real clock): finds which informational
/// events nothing on `bus` could receive and stores it for the functions; returns them.
/// Nothing is checked when the store's configuration says `always`.
pub fn check(
    store: &DynamoStore,
    bus: &EventBus,
    wall: DateTime<Utc>,
) -> Result<Vec<&'static str>, CheckError> {
    if store.config().informational == Informational::Always {
        return Ok(Vec::new());
    }
    let listeners = match bus.listeners() {
        Ok(l) => l,
        Err(e) => {
            // Not known: every event goes out from now on, not only once the last finding
            // ages out. The bus's error is the one to report (logged first if the store
            // fails too).
            if let Err(store) = store.record_unheard(&[], wall) {
                tracing::warn!(error = %store, "the bus's listeners unknown, not stored");
            }
            return Err(e.into());
        }
    };
    let found = unheard(&listeners, &MUTABLE_EVENTS);
    store.record_unheard(&found, wall)?;
    Ok(found)
}

/// What reads the bus: the pattern of each enabled rule and archive (`None`: an archive with
/// no pattern, which keeps every event).
pub type Listeners = Vec<Option<String>>;

/// The informational events (`candidates`) none of `listeners` could receive.
pub fn unheard<'a>(listeners: &[Option<String>], candidates: &[&'a str]) -> Vec<&'a str> {
    candidates
        .iter()
        .copied()
        .filter(|detail_type| {
            !listeners.iter().any(|pattern| match pattern {
                None => true,
                Some(p) => pattern_may_match(p, SOURCE, detail_type),
            })
        })
        .collect()
}

/// Whether the event pattern `pattern` could match an event of `source` and `detail_type`
/// (whatever its other fields): false only when its `source` or `detail-type` condition
/// excludes them for certain.
pub fn pattern_may_match(pattern: &str, source: &str, detail_type: &str) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(pattern) else {
        return true;
    };
    if fields.contains_key("$or") {
        return true;
    }
    [("source", source), ("detail-type", detail_type)]
        .into_iter()
        .all(|(name, value)| fields.get(name).is_none_or(|m| field_may_match(value, m)))
}

/// A field's condition: a list of matchers, any of which may match.
fn field_may_match(value: &str, condition: &Value) -> bool {
    match condition {
        Value::Array(matchers) => matchers.iter().any(|m| matcher_may_match(value, m)),
        // Not a list: not a form EventBridge accepts for a string field; could match.
        _ => true,
    }
}

fn matcher_may_match(value: &str, matcher: &Value) -> bool {
    match matcher {
        Value::String(s) => s == value,
        // A number, a boolean or null never equals a text field.
        Value::Number(_) | Value::Bool(_) | Value::Null => false,
        Value::Object(m) if m.len() == 1 => {
            let Some((kind, arg)) = m.iter().next() else {
                return true;
            };
            match kind.as_str() {
                "prefix" => affix(value, arg, |v, a| v.starts_with(a)),
                "suffix" => affix(value, arg, |v, a| v.ends_with(a)),
                "equals-ignore-case" => texts(arg)
                    .map(|ts| {
                        ts.iter()
                            .any(|t| !t.is_ascii() || t.eq_ignore_ascii_case(value))
                    })
                    .unwrap_or(true),
                "wildcard" => texts(arg)
                    .map(|ts| ts.iter().any(|t| wildcard(t, value).unwrap_or(true)))
                    .unwrap_or(true),
                // The field is always there.
                "exists" => arg.as_bool() != Some(false),
                "anything-but" => anything_but(value, arg),
                // Numeric and address matchers apply to numbers and addresses, not to these
                // fields; unknown ones could match.
                _ => true,
            }
        }
        _ => true,
    }
}

/// `prefix` / `suffix`: a text, or `{"equals-ignore-case": text}`.
fn affix(value: &str, arg: &Value, test: impl Fn(&str, &str) -> bool) -> bool {
    match arg {
        Value::String(a) => test(value, a),
        // EventBridge folds case beyond ASCII: a non-ASCII text could match.
        Value::Object(o) if o.len() == 1 => match o.get("equals-ignore-case") {
            Some(Value::String(a)) if a.is_ascii() => {
                test(&value.to_ascii_lowercase(), &a.to_ascii_lowercase())
            }
            _ => true,
        },
        _ => true,
    }
}

/// A text or a list of texts; `None` for anything else.
fn texts(arg: &Value) -> Option<Vec<&str>> {
    match arg {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// `anything-but`: true unless it names the value for certain.
fn anything_but(value: &str, arg: &Value) -> bool {
    match arg {
        Value::String(s) => s != value,
        Value::Number(_) => true,
        Value::Array(items) => !items.iter().any(|i| i.as_str() == Some(value)),
        Value::Object(o) if o.len() == 1 => {
            let Some((kind, inner)) = o.iter().next() else {
                return true;
            };
            match kind.as_str() {
                // Only a plain text is judged (a case-folded one could match).
                "prefix" => inner.as_str().is_none_or(|a| !value.starts_with(a)),
                "suffix" => inner.as_str().is_none_or(|a| !value.ends_with(a)),
                "equals-ignore-case" => texts(inner)
                    .map(|ts| {
                        !ts.iter()
                            .any(|t| t.is_ascii() && t.eq_ignore_ascii_case(value))
                    })
                    .unwrap_or(true),
                "wildcard" => texts(inner)
                    .map(|ts| !ts.iter().any(|t| wildcard(t, value) == Some(true)))
                    .unwrap_or(true),
                _ => true,
            }
        }
        _ => true,
    }
}

/// A wildcard pattern (`*` for any run of characters) against `value`; `None` for a pattern
/// with an escape, which this module does not read.
fn wildcard(pattern: &str, value: &str) -> Option<bool> {
    if pattern.contains('\\') {
        return None;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first()?;
    let Some(mut tail) = value.strip_prefix(first) else {
        return Some(false);
    };
    let Some((last, middle)) = rest.split_last() else {
        return Some(tail.is_empty());
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return Some(false),
        }
    }
    Some(tail.len() >= last.len() && tail.ends_with(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDED: &str = "relance.enrollment.ended";

    fn may(pattern: &str) -> bool {
        pattern_may_match(pattern, SOURCE, ENDED)
    }

    #[test]
    fn a_pattern_excludes_an_event_only_by_its_source_or_detail_type_for_certain() {
        // The deployment's own rule: other sources, and a list of detail-types.
        assert!(!may(
            r#"{"source":[{"anything-but":"relance"}],"detail-type":["relance.contact","LaunchScenario"]}"#
        ));
        assert!(!may(r#"{"detail-type":["relance.task"]}"#));
        assert!(!may(r#"{"source":["shop"]}"#));
        assert!(!may(r#"{"source":[{"prefix":"com."}]}"#));
        assert!(!may(r#"{"detail-type":[{"suffix":".reached"}]}"#));
        assert!(!may(
            r#"{"detail-type":[{"wildcard":"relance.*.started"}]}"#
        ));
        assert!(!may(
            r#"{"detail-type":[{"anything-but":["relance.enrollment.ended"]}]}"#
        ));
        assert!(!may(
            r#"{"detail-type":[{"anything-but":{"prefix":"relance.enrollment"}}]}"#
        ));
        assert!(!may(r#"{"detail-type":[{"exists":false}]}"#));
        assert!(!may(r#"{"detail-type":[42, null]}"#));
        // Could match: by name, by a matcher that takes it, or through a field not judged.
        assert!(may(r#"{"source":["relance"]}"#));
        assert!(may(r#"{"detail-type":["relance.enrollment.ended"]}"#));
        assert!(may(r#"{"detail-type":[{"prefix":"relance."}]}"#));
        assert!(may(
            r#"{"detail-type":[{"prefix":{"equals-ignore-case":"RELANCE."}}]}"#
        ));
        assert!(may(r#"{"detail-type":[{"suffix":".ended"}]}"#));
        assert!(may(
            r#"{"detail-type":[{"equals-ignore-case":"Relance.Enrollment.Ended"}]}"#
        ));
        // Case beyond ASCII (the Kelvin sign folds to k): not judged, could match.
        assert!(may(r#"{"detail-type":[{"equals-ignore-case":"\u212A"}]}"#));
        assert!(may(
            r#"{"detail-type":[{"prefix":{"equals-ignore-case":"\u212A"}}]}"#
        ));
        assert!(!may(
            r#"{"detail-type":[{"equals-ignore-case":"relance.task"}]}"#
        ));
        assert!(may(r#"{"detail-type":[{"wildcard":"relance.*"}]}"#));
        assert!(may(r#"{"detail-type":[{"wildcard":"*.ended"}]}"#));
        assert!(may(r#"{"detail-type":[{"anything-but":"relance.task"}]}"#));
        assert!(may(r#"{"detail-type":[{"exists":true}]}"#));
        assert!(may(r#"{"detail":{"end":["success"]}}"#));
        assert!(may(r#"{"account":["123456789012"]}"#));
        // Forms not read here count as could-match.
        assert!(may(
            r#"{"$or":[{"detail-type":["relance.task"]},{"source":["x"]}]}"#
        ));
        assert!(may(r#"{"detail-type":[{"numeric":[">",0]}]}"#));
        assert!(may(r#"{"detail-type":[{"wildcard":"relance\\*"}]}"#));
        assert!(may(r#"{"detail-type":"relance.task"}"#));
        assert!(may("not json"));
        assert!(may("[]"));
    }

    #[test]
    fn an_event_is_unheard_when_no_listener_could_match_it() {
        let own = Some(
            r#"{"source":[{"anything-but":"relance"}],"detail-type":["relance.contact"]}"#
                .to_string(),
        );
        let tasks = Some(r#"{"detail-type":["relance.task"]}"#.to_string());
        let goals = Some(r#"{"detail-type":["relance.goal.reached"]}"#.to_string());
        let candidates = ["relance.enrollment.ended", "relance.goal.reached"];
        assert_eq!(
            unheard(&[own.clone(), tasks.clone()], &candidates),
            candidates.to_vec()
        );
        assert_eq!(
            unheard(&[own.clone(), goals], &candidates),
            ["relance.enrollment.ended"]
        );
        // An archive without a pattern keeps every event.
        assert!(unheard(&[own, None], &candidates).is_empty());
        assert_eq!(unheard(&[], &candidates), candidates.to_vec());
    }

    #[test]
    fn wildcards_match_as_eventbridge_reads_them() {
        assert_eq!(wildcard("a*c", "abc"), Some(true));
        assert_eq!(wildcard("a*c", "ac"), Some(true));
        assert_eq!(wildcard("a*c", "abd"), Some(false));
        assert_eq!(wildcard("*", ""), Some(true));
        assert_eq!(wildcard("a*b*c", "axxbyyc"), Some(true));
        assert_eq!(wildcard("a*b*c", "axxcyyb"), Some(false));
        assert_eq!(wildcard("ab*ba", "aba"), Some(false));
        assert_eq!(wildcard("abc", "abc"), Some(true));
        assert_eq!(wildcard("abc", "abcd"), Some(false));
        assert_eq!(wildcard("a\\*", "a*"), None);
    }
}
