//! Issue 12: the runtime tells a stale timer (the enrollment moved on: nothing happens, no
//! dead letter) from a timer naming a step the scenario version does not have (it cannot
//! run: kept as a dead letter with its reason), on the embedded store.

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::Contact;
use relance_core::engine::Wake;
use relance_core::ports::{EnrollmentStore, SourceFormat, Status};
use relance_core::wire::LaunchDetail;
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;

const SCENARIO: &str = "id: ghost\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: later, delay: {after: PT1H}, send: m, next: done}\n  - {id: done, end: success}\n";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A runtime where ana's enrollment waits for `later`, due an hour after `t0`.
fn launched() -> Runtime<SqliteStore> {
    let mut rt = Runtime::new(SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")));
    let put = rt
        .put_scenario(SCENARIO, SourceFormat::Yaml, t0())
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0())
        .unwrap_or_else(|e| panic!("{e}"));
    let ana = Contact::from_json(serde_json::json!({"id": "ana", "email": "ana@example.com"}))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.import(&[ana], t0(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    rt.launch(
        LaunchDetail {
            scenario: "ghost".into(),
            contacts: None,
        },
        t0(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt
}

fn wake(step: &str, at: DateTime<Utc>) -> Wake {
    Wake {
        enrollment: "ghost:ana:1".into(),
        contact: "ana".into(),
        step: step.into(),
        at,
    }
}

fn state(rt: &mut Runtime<SqliteStore>) -> String {
    let (en, _) = rt
        .store()
        .enrollment("ghost:ana:1")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no enrollment"));
    serde_json::to_string(&en.state).unwrap_or_default()
}

#[test]
fn a_stale_timer_changes_nothing_and_leaves_no_dead_letter() {
    let mut rt = launched();
    let before = state(&mut rt);
    let due = t0() + TimeDelta::hours(1);
    // `later` exists, but the enrollment's timer is due at another instant.
    rt.fire(
        &wake("later", due + TimeDelta::minutes(5)),
        due + TimeDelta::minutes(5),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state(&mut rt), before);
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert!(dead.is_empty(), "{dead:?}");
    // The real timer still fires and ends the enrollment.
    rt.fire(&wake("later", due), due)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(state(&mut rt).contains("ended"), "{}", state(&mut rt));
}

#[test]
fn a_timer_naming_an_unknown_step_is_a_dead_letter_with_its_reason() {
    let mut rt = launched();
    let before = state(&mut rt);
    let due = t0() + TimeDelta::hours(1);
    rt.fire(&wake("vanished", due), due)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state(&mut rt), before, "the enrollment did not move");
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "timer");
    assert!(dead[0].1.contains("vanished"), "{dead:?}");
    assert!(
        dead[0]
            .2
            .contains("scenario \"ghost\" has no step \"vanished\""),
        "{dead:?}"
    );
    // ana's own timer is untouched and still fires.
    rt.fire(&wake("later", due), due)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(state(&mut rt).contains("ended"), "{}", state(&mut rt));
}
