//! Issue 11, finding 2, played: a due time past 9999-12-31 ends the enrollment with its
//! reason instead of arming a timer that would not read back.

use chrono::{TimeZone, Utc};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::SourceFormat;
use relance_core::{Contact, Format, IsoDuration, instant, validate};
use relance_runtime::simulate::Simulation;
use serde_json::json;

/// A delay that would take a timer past 9999-12-31 (the longest allowed, a century, from
/// 9950) ends the enrollment in failure with the reason, instead of a timer no store can keep.
#[test]
fn hostile_delay_past_the_end_of_time_fails_the_enrollment_with_a_reason() {
    let late = "id: late\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: first, send: m, next: later}\n  - {id: later, send: m, next: done, delay: {after: P100Y}}\n  - {id: done, end: success}\n";
    for wait in [
        "id: late\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: first, send: m, next: w}\n  - {id: w, wait_for: {opened: first}, timeout: P100Y, then: done, else: done}\n  - {id: done, end: success}\n",
    ] {
        // The same through a wait_for's timeout, when the file validates.
        if relance_core::validate::parse(wait, Format::Yaml).is_ok() {
            check_ends_late(wait);
        }
    }
    check_ends_late(late);
}

fn check_ends_late(yaml: &str) {
    let (scenario, _) = validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let contact = Contact::from_json(json!({"id": "c1", "email": "c1@x.io"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Utc.with_ymd_and_hms(9950, 1, 1, 0, 0, 0).unwrap();
    let until: IsoDuration = "P1D".parse().unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Simulation::new(scenario, yaml, SourceFormat::Yaml, start, until);
    sim.contacts = vec![contact];
    let mut records: Vec<Record> = Vec::new();
    sim.run(&mut |r: &Record| records.push(r.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let ended = records
        .iter()
        .find(|r| r.kind == RecordKind::Ended)
        .unwrap_or_else(|| panic!("not ended: {records:#?}"));
    assert_eq!(ended.end.as_deref(), Some("failure"));
    assert!(
        ended
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("would be due past 9999-12-31")),
        "{ended:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r.until.is_none_or(instant::in_range)),
        "no wait past the range: {records:#?}"
    );
}
