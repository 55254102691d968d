//! Fuzz: any text as a condition, evaluated against a contact with every reserved key.
#![no_main]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use relance_core::condition::{Condition, EvalContext};
use relance_core::{Contact, History};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(condition) = serde_yaml::from_str::<Condition>(text) else { return };
    let contact = Contact::from_json(serde_json::json!({
        "id": "a", "email": "a@x.io", "age": 41, "score": "12", "signup": "2026-02-28T10:00:00Z",
        "birthday": "2000-02-29", "tags": ["vip"], "groups": ["beta"], "personas": ["buyer"],
        "nested": {"deep": {"x": [1, "2", null]}}, "flag": true, "nothing": null
    }))
    .unwrap_or_else(|_| Contact::bare("a"));
    let history = History::default();
    let mut sent = BTreeMap::new();
    let now = Utc.with_ymd_and_hms(2027, 2, 28, 12, 0, 0).single().unwrap_or_default();
    sent.insert("first".to_string(), now);
    for tz in [chrono_tz::UTC, chrono_tz::Pacific::Kiritimati, chrono_tz::America::St_Johns] {
        let cx = EvalContext { contact: &contact, history: &history, sent: &sent, now, since: Some(now), tz };
        let _ = condition.holds(&cx);
    }
});
