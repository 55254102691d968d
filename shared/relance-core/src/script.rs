//! The events and contacts files that scripts are written in (`relance simulate`, `relance
//! test`, the scripted tests): JSON lines, each line read on its own and every bad line
//! reported with its number. The runtime's player plays them.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::contact::{ActivityEvent, Contact, Engagement, EngagementKind};

/// One line of an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedEvent {
    /// The contact id.
    pub contact: String,
    /// What happened.
    pub what: Happening,
}

/// An activity event or an engagement.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// `{"event": "purchase", ...}`.
    Activity(ActivityEvent),
    /// `{"opened": "first"}`, `{"clicked": "first", "link": "..."}`, ...
    Engagement(Engagement),
}

impl ScriptedEvent {
    /// When it happens.
    pub fn at(&self) -> DateTime<Utc> {
        match &self.what {
            Happening::Activity(a) => a.at,
            Happening::Engagement(e) => e.at,
        }
    }

    /// Reads one events-file object: `at` (RFC 3339), `contact`, and either `event` (other
    /// keys become its properties) or one engagement key naming a send step.
    pub fn from_json(v: Value) -> Result<ScriptedEvent, String> {
        let Value::Object(mut map) = v else {
            return Err("an event must be a JSON object".into());
        };
        let at = match map.remove("at") {
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    format!("\"at\": \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })
                .and_then(|t| {
                    crate::instant::check(t).map_err(|_| {
                        format!("\"at\": \"{s}\" is outside {}", crate::instant::RANGE_TEXT)
                    })
                })?,
            Some(_) => return Err("\"at\" must be an RFC 3339 string".into()),
            None => return Err("missing \"at\"".into()),
        };
        let contact = match map.remove("contact") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("missing \"contact\" (the contact id)".into()),
        };
        let kinds: Vec<EngagementKind> = EngagementKind::ALL
            .into_iter()
            .filter(|k| map.contains_key(k.as_str()))
            .collect();
        match (map.remove("event"), kinds.as_slice()) {
            (Some(Value::String(name)), []) if !name.is_empty() => {
                Ok(ScriptedEvent { contact, what: Happening::Activity(ActivityEvent { at, name, properties: map }) })
            }
            (Some(_), []) => Err("\"event\" must be a non-empty name".into()),
            (None, [kind]) => {
                let kind = *kind;
                let step = match map.remove(kind.as_str()) {
                    Some(Value::String(s)) if !s.is_empty() => s,
                    _ => return Err(format!("\"{}\" must name the send step", kind.as_str())),
                };
                let url = ["link", "url"].iter().find_map(|k| map.get(*k).and_then(Value::as_str)).map(str::to_string);
                let link_tags = match map.get("link_attribute").or(map.get("link_tags")) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                    _ => Vec::new(),
                };
                Ok(ScriptedEvent { contact, what: Happening::Engagement(Engagement { at, step, kind, url, link_tags }) })
            }
            (None, []) => Err("an event needs \"event\" or one of delivered, opened, clicked, bounced, complained, unsubscribed".into()),
            _ => Err("an event line holds one event: \"event\" or a single engagement key".into()),
        }
    }
}

/// Reads a contacts file's lines (JSON lines), collecting every bad line with its number.
pub fn contacts_from_json_lines(text: &str) -> Result<Vec<Contact>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => match Contact::from_json(v) {
                Ok(c) => out.push(c),
                Err(e) => errors.push(format!("line {}: {e}", n + 1)),
            },
            Err(e) => errors.push(format!("line {}: not JSON: {e}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Reads an events file's lines (JSON lines), collecting every bad line with its number.
pub fn events_from_json_lines(text: &str) -> Result<Vec<ScriptedEvent>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(ScriptedEvent::from_json)
        {
            Ok(e) => out.push(e),
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
