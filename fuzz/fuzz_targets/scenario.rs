//! Fuzz: any text as a scenario file (YAML and JSON) through the loader and the validator,
//! as a workspace policy and as a shared message store;
//! a scenario that validates is also drawn and played for a few contacts and events.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use relance_core::ports::SourceFormat;
use relance_core::script::{contacts_from_json_lines, events_from_json_lines};
use relance_core::{Format, Record, validate};
use relance_runtime::simulate::Simulation;

const CONTACTS: &str = r#"{"id": "a", "email": "a@x.io", "phone": "+33600000001", "timezone": "America/New_York", "city": "Lyon", "age": 30, "tags": ["vip"], "birthday": "2000-02-29"}
{"id": "b", "groups": ["beta"], "subscriptions": {"newsletter": false}, "push": {"android": "arn"}}"#;
const EVENTS: &str = r#"{"at": "2026-03-29T01:30:00Z", "contact": "a", "opened": "first"}
{"at": "2026-03-29T02:00:00Z", "contact": "b", "event": "purchase"}
{"at": "2026-03-30T00:00:00Z", "contact": "a", "clicked": "first", "link": "https://x.io/a?b=c"}
{"at": "2026-03-30T00:00:00Z", "contact": "a", "event": "cart.updated"}"#;

/// A scenario whose message comes from the shared store.
const USES_SHARED: &str = "id: shared\nlaunch: {type: manual}\nsteps:\n  - {id: a, send: welcome, next: done}\n  - {id: done, end: success}\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = validate::check_text(text, Format::Json);
    // The workspace files read the same way: the policy, and a shared message store (merged
    // into a scenario that uses one of its messages).
    let _ = relance_core::Policy::parse(text, Format::Yaml);
    if let Ok(shared) = relance_core::scenario::parse_shared_messages(text) {
        let _ = validate::check_text_with_messages(USES_SHARED, Format::Yaml, Some(&shared));
    }
    let report = validate::check_text(text, Format::Yaml);
    if let Some(scenario) = report.scenario {
        let _ = relance_core::graph::mermaid(&scenario, None);
        let _ = relance_core::graph::dot(&scenario, None);
        let (Ok(contacts), Ok(events)) = (contacts_from_json_lines(CONTACTS), events_from_json_lines(EVENTS)) else { return };
        let start = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).single().unwrap_or_default();
        let until = "P3D".parse().unwrap_or_else(|_| relance_core::IsoDuration::from_seconds(0));
        let mut sim = Simulation::new(scenario, text, SourceFormat::Yaml, start, until);
        sim.contacts = contacts;
        sim.events = events;
        // Refusals are results too; only a panic is a finding.
        let _ = sim.run(&mut |_: &Record| {});
    }
});
