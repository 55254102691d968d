//! Consent as a log (DESIGN §4): every opt-in, opt-out, suppression and lifted suppression is
//! an append-only [`ConsentEvent`]; the contact's `subscriptions` and `suppressed` fields are
//! the state derived from it, written in the same unit of work as the events, so the engine's
//! consent checks read them as before. The pure rules here decide what a profile update, an
//! import row or an explicit consent call may change: an opt-out is never undone by an update
//! or an import, only by an explicit call with a source, and a suppression is lifted only by
//! an explicit call with a reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contact::Contact;

/// The sources Relance itself writes; an explicit call names its own (a form, a ticket).
pub mod source {
    /// The signed one-click unsubscribe link.
    pub const UNSUBSCRIBE_LINK: &str = "unsubscribe_link";
    /// An `unsubscribed` engagement reported by a provider or the engagement API.
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// A spam complaint.
    pub const COMPLAINT: &str = "complaint";
    /// A hard bounce.
    pub const BOUNCE: &str = "bounce";
    /// An SMS opt-out (STOP, or the carrier's opted-out answer).
    pub const SMS_STOP: &str = "sms_stop";
    /// A contact written through the API (or an EventBridge contact event).
    pub const API: &str = "api";
    /// A row of a contacts import.
    pub const IMPORT: &str = "import";
    /// The profile changes carried by a `contact.*` (or `profile`) activity event.
    pub const PROFILE_UPDATE: &str = "profile_update";
    /// A scenario's `update_profile` action.
    pub const SCENARIO: &str = "scenario";
    /// The contact's stored state written again into its trail, when a refused change found
    /// the trail saying otherwise (an earlier entry whose change did not land: its write lost
    /// to a concurrent one, or a contact older than the log).
    pub const RESTATED: &str = "restated";
}

/// The longest source, actor or reason kept (a free text from a caller is bounded).
pub const MAX_TEXT: usize = 500;

/// The state an event records. Subscribed and unsubscribed concern a communication type;
/// suppressed and lifted an address (email or phone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Opted in to a communication type.
    Subscribed,
    /// Opted out of a communication type.
    Unsubscribed,
    /// Nothing is sent to the address again (bounce, complaint, STOP, a suppression list).
    Suppressed,
    /// A suppression lifted by an explicit call with a reason.
    Lifted,
}

impl ConsentState {
    /// The name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Subscribed => "subscribed",
            ConsentState::Unsubscribed => "unsubscribed",
            ConsentState::Suppressed => "suppressed",
            ConsentState::Lifted => "lifted",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<ConsentState> {
        [
            ConsentState::Subscribed,
            ConsentState::Unsubscribed,
            ConsentState::Suppressed,
            ConsentState::Lifted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a contact's consent trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    /// The contact id.
    pub contact: String,
    /// The communication type (subscribed/unsubscribed) or the address (suppressed/lifted).
    pub subject: String,
    /// The state recorded (or, when `kept`, the state asked for and refused).
    pub state: ConsentState,
    /// Where it came from: one of [`source`], or the source an explicit call named.
    pub source: String,
    /// Who: the API caller, `cli`, `system`, the provider, the contact (`contact`).
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why (required to lift a suppression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True for a change an update or an import asked for and the log refused
    /// (`consent_kept`): the opt-out or the suppression stands, and this entry says it was tried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

/// A change of one subject's consent, before it is dated and attributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The communication type or the address.
    pub subject: String,
    /// The state.
    pub state: ConsentState,
}

impl Change {
    fn new(subject: &str, state: ConsentState) -> Change {
        Change {
            subject: subject.to_string(),
            state,
        }
    }

    /// The event recording this change.
    pub fn event(
        &self,
        contact: &str,
        source: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> ConsentEvent {
        ConsentEvent {
            contact: contact.to_string(),
            subject: self.subject.clone(),
            state: self.state,
            source: source.to_string(),
            actor: actor.to_string(),
            at,
            reason: None,
            kept: false,
        }
    }

    /// The `consent_kept` entry of a change that was refused.
    pub fn kept(
        &self,
        contact: &str,
        source: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> ConsentEvent {
        let mut e = self.event(contact, source, actor, at);
        e.kept = true;
        e.reason = Some(match self.state {
            ConsentState::Lifted => {
                "a suppression is lifted only by an explicit consent call with a reason".into()
            }
            _ => "an opt-out is undone only by an explicit consent call with a source".into(),
        });
        e
    }
}

/// The state a trail leads to: the latest event per subject (kept entries change nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Derived {
    /// Communication type → subscribed.
    pub subscriptions: BTreeMap<String, bool>,
    /// Address (lower case) → suppressed.
    pub suppressed: BTreeMap<String, bool>,
}

impl Derived {
    /// Replays a trail, oldest first.
    pub fn from_trail(trail: &[ConsentEvent]) -> Derived {
        let mut d = Derived::default();
        for e in trail.iter().filter(|e| !e.kept) {
            d.apply(&e.subject, e.state);
        }
        d
    }

    /// Applies the next entry of a trail that is not kept (a store that reads only those
    /// replays them through this, oldest first).
    pub fn apply(&mut self, subject: &str, state: ConsentState) {
        match state {
            ConsentState::Subscribed | ConsentState::Unsubscribed => {
                self.subscriptions
                    .insert(subject.to_string(), state == ConsentState::Subscribed);
            }
            ConsentState::Suppressed | ConsentState::Lifted => {
                self.suppressed.insert(
                    subject.to_ascii_lowercase(),
                    state == ConsentState::Suppressed,
                );
            }
        }
    }
}

/// What a profile update or an import row may change of consent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Screened {
    /// The changes to merge into the contact (top-level keys): the incoming ones with
    /// `subscriptions` merged per type and `suppressed` merged as a union.
    pub changes: Map<String, Value>,
    /// Consent changes that apply (each becomes a consent event).
    pub applied: Vec<Change>,
    /// Changes refused: an opt-out or a suppression stands (`consent_kept`).
    pub kept: Vec<Change>,
}

/// A consent value as written in a contact (`true`, `"unsubscribed"`, `0`, `"off"`, ...), or
/// None for anything else. The forms other systems export (1 and 0, yes and no, on and off,
/// opt-in and opt-out) are all read: an export of 0 for "opted out" must not read as "no
/// record", which counts as subscribed.
pub fn parse_subscription(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "subscribed" | "true" | "yes" | "y" | "on" | "1" | "opt_in" | "opted_in" | "optin" => {
                Some(true)
            }
            "unsubscribed" | "false" | "no" | "n" | "off" | "0" | "opt_out" | "opted_out"
            | "optout" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// True for a value that leaves a communication type without a record: absent, null or an
/// empty text (an empty CSV cell).
pub fn is_no_record(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The words [`parse_subscription`] reads, for an error that refuses another value.
pub const CONSENT_VALUES: &str =
    "true or false, 1 or 0, yes or no, on or off, subscribed or unsubscribed, opt_in or opt_out";

/// True for a field a profile change must not write directly: `subscriptions`,
/// `subscriptions.<type>` and `suppressed`.
pub fn is_consent_field(field: &str) -> bool {
    field == "subscriptions" || field == "suppressed" || field.starts_with("subscriptions.")
}

/// The rule for profile updates and import rows. Non-consent keys pass as they are. For each
/// communication type in `subscriptions` (or a `subscriptions.<type>` key): an opt-out
/// applies; an opt-in applies unless the contact opted out, when it is kept (so is any other
/// value over an opt-out); types the update does not name are left alone. For `suppressed`:
/// new addresses are suppressed; addresses the update leaves out stay suppressed (kept).
pub fn screen(existing: Option<&Contact>, incoming: &Map<String, Value>) -> Screened {
    let mut out = Screened::default();
    let mut subs: Option<Map<String, Value>> = None;
    let current_subs = || {
        existing
            .and_then(|c| c.fields().get("subscriptions"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    for (key, value) in incoming {
        if key == "subscriptions" {
            let merged = subs.get_or_insert_with(current_subs);
            match value {
                Value::Object(wanted) => {
                    for (kind, v) in wanted {
                        screen_subscription(existing, merged, kind, v, &mut out);
                    }
                }
                // Clearing every record would undo the opt-outs in it: each of them is kept.
                _ => {
                    for kind in merged.keys() {
                        if existing.and_then(|c| c.subscription(kind)) == Some(false) {
                            out.kept.push(Change::new(kind, ConsentState::Subscribed));
                        }
                    }
                }
            }
        } else if let Some(kind) = key.strip_prefix("subscriptions.") {
            let merged = subs.get_or_insert_with(current_subs);
            screen_subscription(existing, merged, kind, value, &mut out);
        } else if key == "suppressed" {
            let mut list: Vec<String> = existing
                .map(|c| c.names("suppressed").map(str::to_string).collect())
                .unwrap_or_default();
            let wanted: Vec<&str> = match value {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::String(s) => s.split([';', ',']).map(str::trim).collect(),
                _ => Vec::new(),
            };
            let wanted: Vec<&str> = wanted.into_iter().filter(|a| !a.is_empty()).collect();
            for a in &list {
                if !wanted.iter().any(|w| w.eq_ignore_ascii_case(a)) {
                    out.kept.push(Change::new(a, ConsentState::Lifted));
                }
            }
            for w in wanted {
                if !list.iter().any(|a| a.eq_ignore_ascii_case(w)) {
                    list.push(w.to_string());
                    out.applied.push(Change::new(w, ConsentState::Suppressed));
                }
            }
            out.changes.insert(
                "suppressed".into(),
                Value::Array(list.into_iter().map(Value::String).collect()),
            );
        } else {
            out.changes.insert(key.clone(), value.clone());
        }
    }
    if let Some(subs) = subs {
        out.changes
            .insert("subscriptions".into(), Value::Object(subs));
    }
    out
}

fn screen_subscription(
    existing: Option<&Contact>,
    merged: &mut Map<String, Value>,
    kind: &str,
    value: &Value,
    out: &mut Screened,
) {
    let current = existing.and_then(|c| c.subscription(kind));
    match (current, parse_subscription(value)) {
        (Some(false), Some(false)) | (Some(true), Some(true)) => {}
        (Some(false), _) => out.kept.push(Change::new(kind, ConsentState::Subscribed)),
        (_, Some(false)) => {
            merged.insert(kind.to_string(), Value::Bool(false));
            out.applied
                .push(Change::new(kind, ConsentState::Unsubscribed));
        }
        (_, Some(true)) => {
            merged.insert(kind.to_string(), Value::Bool(true));
            out.applied
                .push(Change::new(kind, ConsentState::Subscribed));
        }
        // No record (null, an empty cell) and no opt-out to protect: written as before, no
        // event.
        (_, None) if is_no_record(value) => {
            merged.insert(kind.to_string(), value.clone());
        }
        // Not a consent value (input is refused earlier, `Contact::from_json`; this is an
        // event's property or a scenario's action): not an opt-in, so it counts as an
        // opt-out, logged as one, rather than as "no record", which would count as subscribed.
        (_, None) => {
            merged.insert(kind.to_string(), Value::Bool(false));
            out.applied
                .push(Change::new(kind, ConsentState::Unsubscribed));
        }
    }
}

/// Writes a change into the contact's derived fields (`subscriptions.<type>`, `suppressed`).
pub fn apply_change(contact: &mut Contact, change: &Change) {
    match change.state {
        ConsentState::Subscribed | ConsentState::Unsubscribed => contact.set_field(
            &format!("subscriptions.{}", change.subject),
            Value::Bool(change.state == ConsentState::Subscribed),
        ),
        ConsentState::Suppressed | ConsentState::Lifted => {
            let mut list: Vec<Value> = contact
                .names("suppressed")
                .filter(|a| !a.eq_ignore_ascii_case(&change.subject))
                .map(|a| Value::String(a.to_string()))
                .collect();
            if change.state == ConsentState::Suppressed {
                list.push(Value::String(change.subject.clone()));
            }
            contact.set_field("suppressed", Value::Array(list));
        }
    }
}

/// After changes were replayed onto `before` (the contact as stored) to give `after`, the
/// opt-outs and suppressions `before` held stand in `after`: a replayed change may opt out or
/// suppress, never undo either.
pub fn keep_opt_outs(before: &Contact, after: &mut Contact) {
    let kinds: Vec<String> = before
        .fields()
        .get("subscriptions")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for kind in kinds {
        if before.subscription(&kind) == Some(false) && after.subscription(&kind) != Some(false) {
            apply_change(after, &Change::new(&kind, ConsentState::Unsubscribed));
        }
    }
    let suppressed: Vec<String> = before.names("suppressed").map(str::to_string).collect();
    for address in suppressed {
        if !after.is_suppressed(&address) {
            apply_change(after, &Change::new(&address, ConsentState::Suppressed));
        }
    }
}

/// For changes a screen refused (`kept`: an opt-in over an opt-out, a suppression left out),
/// the stored state to write again into the trail where the trail's state (`trail`) says
/// otherwise: an opt-out or a suppression the contact holds that its trail does not end on
/// (an earlier entry whose change lost to a concurrent write, or a contact older than the log).
pub fn restatements(kept: &[Change], trail: &Derived) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for c in kept {
        let (stored, trail_agrees) = match c.state {
            ConsentState::Subscribed | ConsentState::Unsubscribed => (
                ConsentState::Unsubscribed,
                trail.subscriptions.get(&c.subject) == Some(&false),
            ),
            ConsentState::Suppressed | ConsentState::Lifted => (
                ConsentState::Suppressed,
                trail.suppressed.get(&c.subject.to_ascii_lowercase()) == Some(&true),
            ),
        };
        let restated = Change::new(&c.subject, stored);
        // An address once, whatever its case (a communication type is its exact name).
        let same = |o: &Change| {
            o.state == stored
                && match stored {
                    ConsentState::Suppressed => o.subject.eq_ignore_ascii_case(&c.subject),
                    _ => o.subject == c.subject,
                }
        };
        if !trail_agrees && !out.iter().any(same) {
            out.push(restated);
        }
    }
    out
}

/// Sets `field` on `contact` as a transition's `SetField` effect asks, replayed onto the
/// contact as it is stored now (a concurrent writer may have changed it since the transition
/// read it): a consent field goes through [`screen`] against the contact now, so an opt-out or
/// a suppression written in between stands (the replay may opt out, never back in); any other
/// field is set as it is.
pub fn set_field_keeping_opt_outs(contact: &mut Contact, field: &str, value: &Value) {
    if !is_consent_field(field) {
        contact.set_field(field, value.clone());
        return;
    }
    let mut incoming = Map::new();
    incoming.insert(field.to_string(), value.clone());
    for (key, v) in screen(Some(contact), &incoming).changes {
        contact.set_field(&key, v);
    }
}

/// The consent changes between two versions of a contact (what a scenario's transition did),
/// for the trail.
pub fn diff(before: &Contact, after: &Contact) -> Vec<Change> {
    let mut out = Vec::new();
    let kinds = |c: &Contact| -> Vec<String> {
        c.fields()
            .get("subscriptions")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for kind in kinds(after) {
        match (before.subscription(&kind), after.subscription(&kind)) {
            (b, Some(a)) if b != Some(a) => out.push(Change::new(
                &kind,
                if a {
                    ConsentState::Subscribed
                } else {
                    ConsentState::Unsubscribed
                },
            )),
            _ => {}
        }
    }
    for a in after.names("suppressed") {
        if !before.is_suppressed(a) {
            out.push(Change::new(a, ConsentState::Suppressed));
        }
    }
    for b in before.names("suppressed") {
        if !after.is_suppressed(b) {
            out.push(Change::new(b, ConsentState::Lifted));
        }
    }
    out
}

/// An explicit consent call (`POST /v1/consent`, `relance consent set`, the
/// `relance.consent` EventBridge detail-type): the only way to re-subscribe after an opt-out
/// and, with a reason, to lift a suppression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// The contact id.
    pub contact: String,
    /// Communication type → subscribed (true) or unsubscribed (false).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subscriptions: BTreeMap<String, bool>,
    /// Addresses whose suppression is lifted (needs `reason`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsuppress: Vec<String>,
    /// Where the consent was given (a signup form, a support ticket): required.
    pub source: String,
    /// Why; required to lift a suppression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why an explicit consent call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConsentError {
    /// Which field of the call.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConsentError {
    ConsentError {
        field,
        message: message.into(),
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), ConsentError> {
    if text.trim().is_empty() {
        return Err(bad(field, "is required and must not be blank"));
    }
    if text.len() > MAX_TEXT {
        return Err(bad(field, format!("is longer than {MAX_TEXT} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

impl ConsentRequest {
    /// Checks the call's shape: a contact, at least one change, a source, and a reason when
    /// it lifts a suppression.
    pub fn check(&self) -> Result<(), ConsentError> {
        check_text("contact", &self.contact)?;
        check_text("source", &self.source)?;
        if self.subscriptions.is_empty() && self.unsuppress.is_empty() {
            return Err(bad(
                "subscriptions",
                "the call changes nothing: give \"subscriptions\" or \"unsuppress\"",
            ));
        }
        for kind in self.subscriptions.keys() {
            check_text("subscriptions", kind)?;
        }
        for a in &self.unsuppress {
            check_text("unsuppress", a)?;
        }
        match &self.reason {
            Some(r) => check_text("reason", r)?,
            None if !self.unsuppress.is_empty() => {
                return Err(bad(
                    "reason",
                    "lifting a suppression needs a reason (why the address may be mailed again)",
                ));
            }
            None => {}
        }
        Ok(())
    }

    /// What the call does to `contact`: the fields to merge and the consent changes (a
    /// subject already in the state asked for changes nothing and is left out).
    pub fn apply_to(
        &self,
        contact: &Contact,
    ) -> Result<(Map<String, Value>, Vec<Change>), ConsentError> {
        self.check()?;
        let mut changes = Map::new();
        let mut applied = Vec::new();
        if !self.subscriptions.is_empty() {
            let mut subs = contact
                .fields()
                .get("subscriptions")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (kind, &on) in &self.subscriptions {
                if contact.subscription(kind) != Some(on) {
                    subs.insert(kind.clone(), Value::Bool(on));
                    applied.push(Change::new(
                        kind,
                        if on {
                            ConsentState::Subscribed
                        } else {
                            ConsentState::Unsubscribed
                        },
                    ));
                }
            }
            changes.insert("subscriptions".into(), Value::Object(subs));
        }
        if !self.unsuppress.is_empty() {
            let mut list: Vec<String> = contact.names("suppressed").map(str::to_string).collect();
            for a in &self.unsuppress {
                if list.iter().any(|s| s.eq_ignore_ascii_case(a)) {
                    list.retain(|s| !s.eq_ignore_ascii_case(a));
                    applied.push(Change::new(a, ConsentState::Lifted));
                }
            }
            changes.insert(
                "suppressed".into(),
                Value::Array(list.into_iter().map(Value::String).collect()),
            );
        }
        Ok((changes, applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contact(v: Value) -> Contact {
        Contact::from_json(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_kept_change_restates_only_what_the_trail_does_not_end_on() {
        let kept = vec![
            Change::new("news", ConsentState::Subscribed),
            Change::new("promo", ConsentState::Subscribed),
            Change::new("X@y.io", ConsentState::Lifted),
            Change::new("z@y.io", ConsentState::Lifted),
            Change::new("Z@y.io", ConsentState::Lifted),
        ];
        let mut trail = Derived::default();
        trail.subscriptions.insert("news".into(), false);
        trail.subscriptions.insert("promo".into(), true);
        trail.suppressed.insert("x@y.io".into(), true);
        assert_eq!(
            restatements(&kept, &trail),
            vec![
                Change::new("promo", ConsentState::Unsubscribed),
                Change::new("z@y.io", ConsentState::Suppressed)
            ]
        );
    }

    #[test]
    fn opt_outs_and_suppressions_stand_after_a_replay() {
        let before = contact(
            json!({"id": "a", "subscriptions": {"news": false, "promo": true}, "suppressed": ["x@y.io"]}),
        );
        let mut after = contact(
            json!({"id": "a", "subscriptions": {"news": true, "promo": false}, "suppressed": []}),
        );
        keep_opt_outs(&before, &mut after);
        assert_eq!(after.subscription("news"), Some(false));
        assert_eq!(after.subscription("promo"), Some(false));
        assert!(after.is_suppressed("x@y.io"));
    }

    #[test]
    fn a_transitions_field_replayed_over_a_later_opt_out_keeps_the_opt_out() {
        // The transition read news: true, promo: true and opted the contact out of news (its
        // SetField carries the whole merged object); the contact opted out of promo since.
        let mut now = contact(
            json!({"id": "a", "name": "A", "subscriptions": {"news": true, "promo": false}, "suppressed": ["x@y.io"]}),
        );
        set_field_keeping_opt_outs(
            &mut now,
            "subscriptions",
            &json!({"news": false, "promo": true}),
        );
        assert_eq!(now.subscription("news"), Some(false));
        assert_eq!(now.subscription("promo"), Some(false));
        set_field_keeping_opt_outs(&mut now, "subscriptions.promo", &json!(true));
        assert_eq!(now.subscription("promo"), Some(false));
        // A suppression list replayed without a later suppression keeps it.
        set_field_keeping_opt_outs(&mut now, "suppressed", &json!([]));
        assert!(now.is_suppressed("x@y.io"));
        // Other fields are set as they are, dots reaching into objects.
        set_field_keeping_opt_outs(&mut now, "plan.tier", &json!("gold"));
        set_field_keeping_opt_outs(&mut now, "name", &json!("B"));
        assert_eq!(now.fields()["plan"], json!({"tier": "gold"}));
        assert_eq!(now.fields()["name"], json!("B"));
    }

    #[test]
    fn hostile_update_cannot_resubscribe_an_opt_out() {
        let c = contact(json!({"id": "a", "subscriptions": {"events": false, "news": true}}));
        let s = screen(
            Some(&c),
            &map(json!({"subscriptions": {"events": true}, "name": "A"})),
        );
        assert_eq!(
            s.kept,
            vec![Change::new("events", ConsentState::Subscribed)]
        );
        assert!(s.applied.is_empty());
        assert_eq!(
            s.changes["subscriptions"],
            json!({"events": false, "news": true})
        );
        assert_eq!(s.changes["name"], json!("A"));
        // The dotted form and a string value are refused the same way.
        let s = screen(
            Some(&c),
            &map(json!({"subscriptions.events": "subscribed"})),
        );
        assert_eq!(s.kept.len(), 1);
        assert_eq!(s.changes["subscriptions"]["events"], json!(false));
        // Clearing the whole object keeps the opt-out too.
        let s = screen(Some(&c), &map(json!({"subscriptions": null})));
        assert_eq!(s.kept.len(), 1);
        assert_eq!(s.changes["subscriptions"]["events"], json!(false));
    }

    #[test]
    fn hostile_update_cannot_lift_a_suppression() {
        let c = contact(json!({"id": "a", "suppressed": ["a@x.io"]}));
        let s = screen(Some(&c), &map(json!({"suppressed": []})));
        assert_eq!(s.kept, vec![Change::new("a@x.io", ConsentState::Lifted)]);
        assert_eq!(s.changes["suppressed"], json!(["a@x.io"]));
        let s = screen(Some(&c), &map(json!({"suppressed": ["A@X.io", "b@x.io"]})));
        assert!(s.kept.is_empty());
        assert_eq!(
            s.applied,
            vec![Change::new("b@x.io", ConsentState::Suppressed)]
        );
        assert_eq!(s.changes["suppressed"], json!(["a@x.io", "b@x.io"]));
    }

    #[test]
    fn opt_outs_and_first_opt_ins_in_updates_apply() {
        let c = contact(json!({"id": "a", "subscriptions": {"news": true}}));
        let s = screen(
            Some(&c),
            &map(json!({"subscriptions": {"news": false, "offers": true}})),
        );
        assert!(s.kept.is_empty());
        assert_eq!(
            s.applied,
            vec![
                Change::new("news", ConsentState::Unsubscribed),
                Change::new("offers", ConsentState::Subscribed)
            ]
        );
        assert_eq!(
            s.changes["subscriptions"],
            json!({"news": false, "offers": true})
        );
        // A new contact takes what it brings.
        let s = screen(None, &map(json!({"subscriptions": {"news": "false"}})));
        assert_eq!(
            s.applied,
            vec![Change::new("news", ConsentState::Unsubscribed)]
        );
    }

    #[test]
    fn explicit_calls_need_a_source_and_a_reason_to_lift() {
        let c = contact(
            json!({"id": "a", "subscriptions": {"events": false}, "suppressed": ["a@x.io"]}),
        );
        let mut r = ConsentRequest {
            contact: "a".into(),
            subscriptions: BTreeMap::from([("events".to_string(), true)]),
            source: " ".into(),
            ..ConsentRequest::default()
        };
        assert_eq!(r.apply_to(&c).map_err(|e| e.field), Err("source"));
        r.source = "signup_form".into();
        let (changes, applied) = r.apply_to(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes["subscriptions"], json!({"events": true}));
        assert_eq!(
            applied,
            vec![Change::new("events", ConsentState::Subscribed)]
        );
        r.unsuppress = vec!["A@x.io".into()];
        assert_eq!(r.apply_to(&c).map_err(|e| e.field), Err("reason"));
        r.reason = Some("bounced by mistake, confirmed by phone".into());
        let (changes, applied) = r.apply_to(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes["suppressed"], json!([]));
        assert_eq!(applied[1], Change::new("A@x.io", ConsentState::Lifted));
    }

    #[test]
    fn the_trail_derives_the_latest_state() {
        let at = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let e = |subject: &str, state, kept| {
            let mut e = Change::new(subject, state).event("a", "api", "cli", at);
            e.kept = kept;
            e
        };
        let d = Derived::from_trail(&[
            e("news", ConsentState::Unsubscribed, false),
            e("news", ConsentState::Subscribed, true),
            e("A@x.io", ConsentState::Suppressed, false),
            e("offers", ConsentState::Subscribed, false),
        ]);
        assert_eq!(d.subscriptions.get("news"), Some(&false));
        assert_eq!(d.subscriptions.get("offers"), Some(&true));
        assert_eq!(d.suppressed.get("a@x.io"), Some(&true));
    }

    #[test]
    fn diff_names_what_a_transition_changed() {
        let before =
            contact(json!({"id": "a", "subscriptions": {"news": true}, "suppressed": ["x"]}));
        let after =
            contact(json!({"id": "a", "subscriptions": {"news": false}, "suppressed": ["x", "y"]}));
        assert_eq!(
            diff(&before, &after),
            vec![
                Change::new("news", ConsentState::Unsubscribed),
                Change::new("y", ConsentState::Suppressed)
            ]
        );
    }

    /// A value that is not a consent value, from an event's properties or a scenario's action
    /// (input refuses it earlier), counts as an opt-out and is logged as one: as "no record"
    /// it would count as subscribed. Null or an empty text leaves the type without a record.
    #[test]
    fn a_value_that_is_not_a_consent_value_opts_out() {
        let c = Contact::from_json(json!({"id": "a"})).unwrap_or_else(|e| panic!("{e}"));
        let s = screen(
            Some(&c),
            &map(json!({"subscriptions": {"news": "pending"}})),
        );
        assert_eq!(s.changes["subscriptions"], json!({"news": false}));
        assert_eq!(
            s.applied,
            vec![Change::new("news", ConsentState::Unsubscribed)]
        );
        let s = screen(Some(&c), &map(json!({"subscriptions.news": 7})));
        assert_eq!(
            s.applied,
            vec![Change::new("news", ConsentState::Unsubscribed)]
        );
        let s = screen(
            Some(&c),
            &map(json!({"subscriptions": {"news": null, "sms": ""}})),
        );
        assert!(s.applied.is_empty() && s.kept.is_empty(), "{s:?}");
        assert_eq!(parse_subscription(&json!("0")), Some(false));
        assert_eq!(parse_subscription(&json!(1)), Some(true));
        assert_eq!(parse_subscription(&json!(0.5)), None);
    }
}
