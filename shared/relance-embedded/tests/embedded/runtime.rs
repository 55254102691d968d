//! The runtime over a real (in-memory) SQLite store, on a virtual clock: the same sends as
//! `simulate` for the same scenario and events, versions pinned for running enrollments,
//! the lifecycle, paused scenarios holding their timers, scheduled launches and inactivity.

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::Contact;
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{ContactChange, EnrollmentStore, JournalStore, SourceFormat, Status};
use relance_core::report::Report;
use relance_core::script;
use relance_core::wire::{ActivityDetail, LaunchDetail};
use relance_core::{Format, IsoDuration, validate};
use relance_embedded::runtime::{Runtime, RuntimeError};
use relance_embedded::store::SqliteStore;
use relance_runtime::player::{Play, Script, Strict, VirtualClock};
use relance_runtime::simulate::Simulation;
use serde_json::Value;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn runtime() -> Runtime<SqliteStore> {
    Runtime::new(SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")))
}

fn activate(rt: &mut Runtime<SqliteStore>, yaml: &str, now: DateTime<Utc>) -> String {
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    put.id
}

/// Sends in the outbox: (contact, step, at, subject).
fn sends(rt: &mut Runtime<SqliteStore>) -> Vec<(String, String, String, String)> {
    let rows = rt
        .store()
        .outbox_after(0, 100_000)
        .unwrap_or_else(|e| panic!("{e}"));
    rows.into_iter()
        .filter(|(_, kind, _)| kind == "send")
        .map(|(_, _, payload)| {
            let v: Value = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));
            let at = v["at"]
                .as_str()
                .map(|s| at(s).to_rfc3339())
                .unwrap_or_default();
            let s = &v["send"];
            let subject = s["content"]["subject"]
                .as_str()
                .or(s["content"]["text"].as_str())
                .unwrap_or("")
                .to_string();
            (
                s["contact"].as_str().unwrap_or("").to_string(),
                s["step"].as_str().unwrap_or("").to_string(),
                at,
                subject,
            )
        })
        .collect()
}

/// Plays the events on the runtime in time order, ticking at every due instant until `end`;
/// `launch_at_start` launches a manual scenario for everyone at `start`.
fn play(
    rt: &mut Runtime<SqliteStore>,
    scenario: &str,
    events_jsonl: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    launch_at_start: bool,
) {
    let script = script::events_from_json_lines(events_jsonl).unwrap_or_else(|e| panic!("{e:?}"));
    Play::new(scenario, start, end)
        .launching_at_start(launch_at_start)
        .run(
            rt,
            Script::new(script),
            &mut VirtualClock::new(start),
            &mut Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The same case through `simulate`: (contact, step, at).
fn simulated(
    yaml: &str,
    contacts: &str,
    events: &str,
    start: DateTime<Utc>,
    until: &str,
    policy: Option<&str>,
) -> Vec<(String, String, String)> {
    let (scenario, _) = validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let until: IsoDuration = until.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Simulation::new(scenario, yaml, SourceFormat::Yaml, start, until);
    sim.policy = policy;
    sim.contacts = script::contacts_from_json_lines(contacts).unwrap_or_else(|e| panic!("{e:?}"));
    sim.events = script::events_from_json_lines(events).unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = Vec::new();
    sim.run(&mut |r: &Record| {
        if r.kind == RecordKind::Sent {
            out.push((
                r.contact.clone(),
                r.step.clone().unwrap_or_default(),
                r.at.to_rfc3339(),
            ));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    out
}

fn import(rt: &mut Runtime<SqliteStore>, contacts: &str, now: DateTime<Utc>) {
    let list: Vec<Contact> =
        script::contacts_from_json_lines(contacts).unwrap_or_else(|e| panic!("{e:?}"));
    rt.import(&list, now, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
}

fn same_sends_as_simulate(yaml: &str, contacts: &str, events: &str, start: &str, until: &str) {
    same_sends_as_simulate_under(None, yaml, contacts, events, start, until);
}

fn same_sends_as_simulate_under(
    policy: Option<&str>,
    yaml: &str,
    contacts: &str,
    events: &str,
    start: &str,
    until: &str,
) {
    let start = at(start);
    let mut rt = runtime();
    if let Some(p) = policy {
        rt.set_policy(p, start - TimeDelta::days(2))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    import(&mut rt, contacts, start - TimeDelta::days(1));
    let id = activate(&mut rt, yaml, start - TimeDelta::days(1));
    let manual = yaml.contains("type: manual");
    let end = until
        .parse::<IsoDuration>()
        .unwrap_or_else(|e| panic!("{e}"))
        .add_to(start, chrono_tz::UTC);
    play(&mut rt, &id, events, start, end, manual);
    let mut got: Vec<(String, String, String)> = sends(&mut rt)
        .into_iter()
        .map(|(c, s, a, _)| (c, s, a))
        .collect();
    let mut want = simulated(yaml, contacts, events, start, until, policy);
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[test]
fn runtime_and_simulate_send_the_same_for_the_openers_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let read = |f: &str| {
        std::fs::read_to_string(format!("{root}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    same_sends_as_simulate(
        &read("openers-sms.yaml"),
        &read("contacts.jsonl"),
        &read("events.jsonl"),
        "2026-12-01T09:00:00Z",
        "P7D",
    );
    same_sends_as_simulate(
        &read("multichannel-reaction.yaml"),
        &read("contacts.jsonl"),
        &read("events.jsonl"),
        "2026-12-01T09:00:00Z",
        "P40D",
    );
}

/// `examples/best-time.yaml` sends what its comment says, on the SQLite runtime as in
/// `simulate`: each follow-up at the contact's best hour, or at `default_at`.
#[test]
fn the_best_time_example_sends_at_each_contacts_best_hour() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let read = |f: &str| {
        std::fs::read_to_string(format!("{root}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let (yaml, contacts, events) = (
        read("best-time.yaml"),
        read("contacts.jsonl"),
        read("best-time-events.jsonl"),
    );
    let start = "2026-12-01T09:00:00Z";
    same_sends_as_simulate(&yaml, &contacts, &events, start, "P3D");
    let mut follow_ups: Vec<(String, String)> =
        simulated(&yaml, &contacts, &events, at(start), "P3D", None)
            .into_iter()
            .filter(|(_, step, _)| step == "follow-up")
            .map(|(c, _, t)| (c, t))
            .collect();
    follow_ups.sort();
    let want = [
        ("u1", "2026-12-02T18:00:00+00:00"),
        ("u2", "2026-12-02T06:00:00+00:00"),
        ("u3", "2026-12-02T09:00:00+00:00"),
        ("u4", "2026-12-02T09:00:00+00:00"),
    ];
    assert_eq!(
        follow_ups,
        want.map(|(c, t)| (c.to_string(), t.to_string()))
    );
}

/// Quiet hours and a cap from the workspace policy hold and skip the same sends in the
/// runtime as in `simulate`; a transactional message escapes both.
#[test]
fn runtime_and_simulate_apply_the_same_policy() {
    let scenario = "id: pol
launch: {type: manual}
audience: {all: true}
messages:
  a: {channel: email, subject: A, text: a}
  b: {channel: email, subject: B, text: b}
  t: {channel: email, type: transactional, subject: T, text: t}
steps:
  - {id: s1, send: a, next: s2}
  - {id: s2, delay: {after: PT1H}, send: b, next: s3}
  - {id: s3, delay: {after: P1D}, send: b, next: s4}
  - {id: s4, send: t, next: done}
  - {id: done, end: success}
";
    let contacts = r#"{"id": "paris", "email": "p@example.org"}
{"id": "ny", "email": "n@example.org", "timezone": "America/New_York"}
{"id": "tokyo", "email": "t@example.org", "timezone": "Asia/Tokyo"}
"#;
    let policy = "quiet_hours: {from: \"21:00\", to: \"08:00\"}\nfrequency_cap: {max: 1, per: PT20H}\ntimezone: Europe/Paris\n";
    same_sends_as_simulate_under(
        Some(policy),
        scenario,
        contacts,
        "",
        "2026-12-01T19:30:00Z",
        "P4D",
    );
    // And the policy did something: without it every contact gets all four sends.
    let with = simulated(
        scenario,
        contacts,
        "",
        at("2026-12-01T19:30:00Z"),
        "P4D",
        Some(policy),
    );
    let without = simulated(
        scenario,
        contacts,
        "",
        at("2026-12-01T19:30:00Z"),
        "P4D",
        None,
    );
    assert_eq!(without.len(), 12);
    assert!(with.len() < without.len(), "{with:?}");
    assert!(with.iter().any(|(_, step, _)| step == "s4"));
}

const DRIP: &str = r#"
id: drip
timezone: Europe/Paris
launch: {type: trigger, event: signed_up}
once_per: P10D
exit_when: [{event: purchase}]
messages:
  hi: {channel: email, subject: "Hi {{ contact.first_name | default('there') }}", text: x}
  sms: {channel: sms, text: "Still there?"}
steps:
  - {id: hi, send: hi, next: wait}
  - id: wait
    wait_for: {clicked: hi, link: "https://x.io/p", ignore_query: true, timeout: P2D}
    on_event: tag
    on_timeout: nudge
  - {id: nudge, send: sms, next: done, delay: {at: "10:00"}}
  - {id: tag, action: {tag: {add: [clicker]}}, next: check}
  - id: check
    if: {tag: clicker}
    then: done
    else: nudge
  - {id: done, end: success}
"#;

#[test]
fn runtime_and_simulate_agree_on_triggers_waits_exits_and_once_per() {
    let contacts = "{\"id\": \"a\", \"email\": \"a@x.io\", \"phone\": \"+33600000001\"}\n{\"id\": \"b\", \"email\": \"b@x.io\", \"phone\": \"+33600000002\", \"first_name\": \"Bea\"}\n{\"id\": \"c\", \"email\": \"c@x.io\"}\n";
    let events = [
        r#"{"at": "2026-03-27T15:00:00Z", "contact": "a", "event": "signed_up"}"#,
        r#"{"at": "2026-03-27T15:00:00Z", "contact": "b", "event": "signed_up"}"#,
        r#"{"at": "2026-03-27T16:00:00Z", "contact": "c", "event": "signed_up"}"#,
        r#"{"at": "2026-03-28T08:00:00Z", "contact": "b", "clicked": "hi", "link": "https://x.io/p?utm=1"}"#,
        r#"{"at": "2026-03-28T09:00:00Z", "contact": "c", "event": "purchase"}"#,
        r#"{"at": "2026-03-30T12:00:00Z", "contact": "a", "event": "signed_up"}"#,
        r#"{"at": "2026-04-09T12:00:00Z", "contact": "b", "event": "signed_up"}"#,
    ]
    .join("\n");
    same_sends_as_simulate(DRIP, contacts, &events, "2026-03-27T00:00:00Z", "P20D");
}

#[test]
fn editing_an_active_scenario_pins_running_enrollments_to_their_version() {
    let v1 = "id: pin\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: \"version one\", text: x}\nsteps:\n  - {id: wait, delay: {after: P1D}, next: send}\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, v1, t0);
    rt.launch(
        LaunchDetail {
            scenario: "pin".into(),
            contacts: Some(vec!["a".into()]),
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let put = rt
        .put_scenario(
            &v1.replace("version one", "version two"),
            SourceFormat::Yaml,
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (put.version, put.active_version, put.changed),
        (2, Some(2), true)
    );
    let again = rt
        .put_scenario(
            &v1.replace("version one", "version two"),
            SourceFormat::Yaml,
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.version, again.changed), (2, false));
    rt.launch(
        LaunchDetail {
            scenario: "pin".into(),
            contacts: Some(vec!["b".into()]),
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, version_a) = rt
        .store()
        .running_enrollment("pin", "a")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("a runs"));
    let (_, version_b) = rt
        .store()
        .running_enrollment("pin", "b")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("b runs"));
    assert_eq!((version_a, version_b), (1, 2));
    rt.tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut subjects: Vec<(String, String)> = sends(&mut rt)
        .into_iter()
        .map(|(c, _, _, s)| (c, s))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            ("a".into(), "version one".into()),
            ("b".into(), "version two".into())
        ]
    );
}

#[test]
fn an_invalid_new_version_is_stored_but_does_not_replace_the_running_one() {
    let good = "id: keep\nlaunch: {type: manual}\nsteps:\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    activate(&mut rt, good, t0);
    let bad = rt
        .put_scenario(
            "id: keep\nlaunch: {type: manual}\nsteps:\n  - {id: a, next: ghost}\n",
            SourceFormat::Yaml,
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((bad.version, bad.active_version), (2, Some(1)));
    assert!(bad.problems.iter().any(|p| p.message.contains("ghost")));
    match rt.set_status("keep", Status::Active, t0) {
        Err(RuntimeError::Invalid { problems, .. }) => {
            assert!(problems.iter().any(|p| p.message.contains("ghost")))
        }
        other => panic!("activation of an invalid version: {other:?}"),
    }
}

#[test]
fn the_lifecycle_refuses_what_it_does_not_allow() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    rt.put_scenario(
        "id: life\nlaunch: {type: manual}\nsteps:\n  - {id: done, end: success}\n",
        SourceFormat::Yaml,
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        rt.set_status("life", Status::Paused, t0),
        Err(RuntimeError::Lifecycle { .. })
    ));
    assert!(matches!(
        rt.launch(
            LaunchDetail {
                scenario: "life".into(),
                contacts: None
            },
            t0
        ),
        Err(RuntimeError::NotActive { .. })
    ));
    rt.set_status("life", Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("life", Status::Paused, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("life", Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("life", Status::Archived, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        rt.set_status("life", Status::Active, t0),
        Err(RuntimeError::Lifecycle { .. })
    ));
    assert!(matches!(
        rt.set_status("nope", Status::Active, t0),
        Err(RuntimeError::UnknownScenario(_))
    ));
}

/// The runner's rounds: a bounded tick fires the oldest due timers up to its bound and leaves
/// the rest due; grouped rounds (one commit for many units) end with every timer fired once.
#[test]
fn a_bounded_tick_leaves_the_rest_due_and_grouped_rounds_fire_each_timer_once() {
    let yaml = "id: herd\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    let contacts: String = (0..25)
        .map(|i| format!("{{\"id\": \"c{i:02}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "herd".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let later = t0 + TimeDelta::hours(2);
    let first = rt.tick_bounded(later, 10).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.timers, 10);
    assert_eq!(sends(&mut rt).len(), 10);
    assert!(
        rt.next_due().ok().flatten().is_some_and(|d| d <= later),
        "the rest stay due"
    );
    let mut rounds = 0;
    loop {
        let (fired, committed) = rt.grouped(4, |rt| rt.tick_bounded(later, 10));
        committed.unwrap_or_else(|e| panic!("{e}"));
        rounds += 1;
        if fired.unwrap_or_else(|e| panic!("{e}")).timers == 0 {
            break;
        }
    }
    assert_eq!(rounds, 3, "10 + 5, then nothing");
    let sent = sends(&mut rt);
    assert_eq!(sent.len(), 25);
    let contacts: std::collections::BTreeSet<_> = sent.iter().map(|s| s.0.clone()).collect();
    assert_eq!(contacts.len(), 25, "each contact's send once");
    assert_eq!(rt.next_due().ok().flatten(), None);
}

#[test]
fn a_paused_scenario_holds_its_timers_until_it_is_active_again() {
    let yaml = "id: hold\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "hold".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("hold", Status::Paused, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.tick(t0 + TimeDelta::hours(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sends(&mut rt).is_empty());
    assert_eq!(
        rt.next_due().ok().flatten(),
        None,
        "a paused scenario's timers are not due"
    );
    rt.set_status("hold", Status::Active, t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    let report = rt
        .tick(t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.timers, 1);
    assert_eq!(sends(&mut rt).len(), 1);
    // Ticking again (a duplicated tick) sends nothing more.
    rt.tick(t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(&mut rt).len(), 1);
}

#[test]
fn recurring_launches_fire_at_each_occurrence_and_rearm() {
    let yaml = "id: monthly\ntimezone: UTC\nlaunch: {type: recurring, frequency: monthly, days: [31], last_day: true, time: \"08:00\"}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: neutral}\n";
    let t0 = at("2027-01-15T00:00:00Z");
    let mut rt = runtime();
    import(&mut rt, "{\"id\": \"m1\", \"email\": \"m1@x.io\"}\n", t0);
    activate(&mut rt, yaml, t0);
    let mut times = Vec::new();
    while let Some(due) = rt.next_due().ok().flatten() {
        if due > at("2027-04-15T00:00:00Z") {
            break;
        }
        rt.tick(due).unwrap_or_else(|e| panic!("{e}"));
        times.push(due.to_rfc3339());
    }
    assert_eq!(
        times,
        vec![
            "2027-01-31T08:00:00+00:00",
            "2027-02-28T08:00:00+00:00",
            "2027-03-31T08:00:00+00:00"
        ]
    );
    assert_eq!(sends(&mut rt).len(), 3);
}

#[test]
fn cart_abandoned_fires_after_the_quiet_period_and_a_purchase_cancels_it() {
    let yaml = "id: cart\nlaunch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, yaml, t0);
    let event = |c: &str, name: &str| ActivityDetail {
        idempotency_key: None,
        contact: c.into(),
        event: name.into(),
        properties: Default::default(),
        at: None,
    };
    rt.activity(event("a", "cart.updated"), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.activity(event("b", "cart.updated"), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.activity(event("b", "purchase"), t0 + TimeDelta::minutes(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rt.next_due().ok().flatten(),
        Some(t0 + TimeDelta::minutes(30))
    );
    rt.tick(t0 + TimeDelta::minutes(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<String> = sends(&mut rt)
        .into_iter()
        .map(|(c, _, a, _)| format!("{c} {a}"))
        .collect();
    assert_eq!(got, vec!["a 2026-12-01T09:30:00+00:00"]);
}

#[test]
fn imports_report_changes_and_after_import_takes_its_subset() {
    let yaml = "id: imported\nlaunch: {type: after_import, contacts: added}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(&mut rt, "{\"id\": \"old\", \"email\": \"old@x.io\"}\n", t0);
    activate(&mut rt, yaml, t0);
    let list = script::contacts_from_json_lines("{\"id\": \"old\", \"email\": \"old@x.io\", \"city\": \"Lyon\"}\n{\"id\": \"new\", \"email\": \"new@x.io\"}\n")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let results = rt
        .import(&list, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        results.iter().map(|r| r.change).collect::<Vec<_>>(),
        vec![ContactChange::Modified, ContactChange::Added]
    );
    let again = rt
        .import(&list, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.iter().all(|r| r.change == ContactChange::Unchanged));
    let got: Vec<String> = sends(&mut rt).into_iter().map(|(c, _, _, _)| c).collect();
    assert_eq!(got, vec!["new"]);
}

#[test]
fn a_timer_that_fails_becomes_a_dead_letter_and_the_others_still_fire() {
    let yaml = "id: dl\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let dir = std::env::temp_dir().join(format!("relance-dl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.join("dl.db");
    {
        let mut rt = Runtime::new(SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")));
        import(
            &mut rt,
            "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
            t0,
        );
        activate(&mut rt, yaml, t0);
        rt.launch(
            LaunchDetail {
                scenario: "dl".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // Corrupt a's enrollment behind the store's back, as a bad disk or a hand edit would.
    let conn = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    conn.execute(
        "UPDATE enrollment SET state = 'not json' WHERE contact_id = 'a'",
        [],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let mut rt = Runtime::new(SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")));
    let report = rt
        .tick(t0 + TimeDelta::hours(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.timers, 2);
    let got: Vec<String> = sends(&mut rt).into_iter().map(|(c, _, _, _)| c).collect();
    assert_eq!(got, vec!["b"], "b's timer still fires");
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "timer");
    assert!(
        dead[0].1.contains("dl:a:1") && dead[0].2.contains("corrupt"),
        "{dead:?}"
    );
    assert_eq!(
        rt.next_due().ok().flatten(),
        None,
        "nothing is retried forever"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario may send a message from the shared message store: the version stored takes a
/// copy, so a later change of the store does not change what a running version sends.
#[test]
fn shared_messages_are_copied_into_the_version_that_uses_them() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    let bad = rt.set_messages("promo: {channel: email, subject: 1}\n", t0);
    assert!(
        matches!(&bad, Err(RuntimeError::Invalid { problems, .. }) if problems.iter().any(|p| p.path.starts_with("promo"))),
        "{bad:?}"
    );
    rt.set_messages(
        "promo: {channel: email, subject: \"Sale for {{ contact.first_name }}\", text: Now}\nfooter: {channel: sms, text: Bye}\n",
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    import(
        &mut rt,
        r#"{"id": "ana", "email": "ana@example.org", "first_name": "Ana"}"#,
        t0,
    );
    let scenario = "id: sale\nlaunch: {type: manual}\naudience: {all: true}\nsteps:\n  - {id: first, send: promo, next: done}\n  - {id: done, end: success}\n";
    let id = activate(&mut rt, scenario, t0);
    rt.set_messages(
        "promo: {channel: email, subject: Changed, text: Changed}\n",
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.launch(
        LaunchDetail {
            scenario: id,
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sent = sends(&mut rt);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].3, "Sale for Ana");
    // Without the store, the same scenario does not validate.
    let mut bare = runtime();
    let put = bare
        .put_scenario(scenario, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!put.problems.is_empty(), "{put:?}");
}

/// Issue 11, finding 10: the policy's `retention` purges activity, engagement, journal
/// records, delivered outbox rows and dead letters older than their period, and nothing else.
#[test]
fn hostile_history_is_kept_only_as_long_as_the_retention_says() {
    use relance_core::contact::EngagementKind;
    use relance_core::ports::{ContactStore, JournalStore};
    use relance_core::wire::EngagementDetail;

    let dir = std::env::temp_dir().join(format!("relance-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut rt = runtime();
    let t0 = at("2026-01-01T09:00:00Z");
    rt.set_policy(
        "retention: {activity: P30D, engagement: P30D, journal: P30D, outbox: P30D, dead_letters: P30D}\n",
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let id = activate(
        &mut rt,
        "id: hello\nname: Hello\ntimezone: UTC\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: Hi, text: Hello}\nsteps:\n  - {id: email, send: m, next: done}\n  - {id: done, end: success}\n",
        t0,
    );
    let mut outbox = relance_embedded::outbox::OutboxFile::open(&dir.join("o.jsonl"), rt.store())
        .unwrap_or_else(|e| panic!("{e}"));
    // The same history for c1 at t0 and for c2 forty days later.
    for (contact, when) in [("c1", t0), ("c2", t0 + TimeDelta::days(40))] {
        let c = Contact::from_json(
            serde_json::json!({"id": contact, "email": format!("{contact}@example.org")}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.import(&[c], when, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        rt.activity(
            ActivityDetail {
                contact: contact.into(),
                event: "visit".into(),
                properties: Default::default(),
                at: Some(when),
                idempotency_key: None,
            },
            when,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.launch(
            LaunchDetail {
                scenario: id.clone(),
                contacts: Some(vec![contact.into()]),
            },
            when,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.engagement(
            EngagementDetail {
                contact: contact.into(),
                scenario: id.clone(),
                step: "email".into(),
                kind: EngagementKind::Opened,
                url: None,
                link_tags: Vec::new(),
                at: Some(when),
                idempotency_key: None,
            },
            when,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.store()
            .dead_letter("timer", contact, "kept for the test", when)
            .unwrap_or_else(|e| panic!("{e}"));
        outbox.deliver(rt.store()).unwrap_or_else(|e| panic!("{e}"));
    }
    let report = rt
        .purge_history(t0 + TimeDelta::days(41))
        .unwrap_or_else(|e| panic!("{e}"));
    for kind in [
        "activity",
        "engagement",
        "journal",
        "outbox",
        "dead_letters",
    ] {
        assert!(
            report.get(kind).is_some_and(|n| *n >= 1),
            "{kind}: {report:?}"
        );
    }
    let h1 = rt
        .store()
        .history("c1", &id, relance_core::contact::HistoryNeeds::ALL)
        .unwrap_or_else(|e| panic!("{e}"));
    let h2 = rt
        .store()
        .history("c2", &id, relance_core::contact::HistoryNeeds::ALL)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(h1.events.is_empty() && h1.engagement.is_empty(), "{h1:?}");
    assert!(!h2.events.is_empty() && !h2.engagement.is_empty(), "{h2:?}");
    assert!(
        rt.path(&id, "c1")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert!(
        !rt.path(&id, "c2")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    let contacts: Vec<String> = sends(&mut rt).into_iter().map(|s| s.0).collect();
    assert_eq!(contacts, vec!["c2".to_string()]);
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, "c2");
    // The contacts themselves stay.
    assert!(
        rt.store()
            .contact("c1")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11, finding 3: a template that loops for ever on one contact's data held the runner
/// thread (and after a restart, the same timer held it again). Now that send fails with its
/// reason, the timer is consumed, and another contact's send goes through.
#[test]
fn hostile_fuel_bomb_fails_its_send_only() {
    let loops = "{% for i in range(contact.n|int) %}{% for j in range(contact.n|int) %}{% for k in range(contact.n|int) %}{{ contact.id }}{% endfor %}{% endfor %}{% endfor %}";
    let yaml = format!(
        "id: bomb\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n  m: {{channel: email, subject: s, text: \"{loops}\"}}\nsteps:\n  - {{id: send, send: m, next: done, delay: {{after: PT1H}}}}\n  - {{id: done, end: success}}\n"
    );
    let t0 = at("2026-12-01T09:00:00Z");
    let dir = std::env::temp_dir().join(format!("relance-fuel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.join("fuel.db");
    {
        let mut rt = Runtime::new(SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")));
        import(
            &mut rt,
            "{\"id\": \"a\", \"email\": \"a@x.io\", \"n\": 1000}\n{\"id\": \"b\", \"email\": \"b@x.io\", \"n\": 2}\n",
            t0,
        );
        activate(&mut rt, &yaml, t0);
        rt.launch(
            LaunchDetail {
                scenario: "bomb".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let report = rt
            .tick(t0 + TimeDelta::hours(2))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.timers, 2);
        let got: Vec<String> = sends(&mut rt).into_iter().map(|(c, _, _, _)| c).collect();
        assert_eq!(got, vec!["b"], "b's send goes through");
        let path = rt.path("bomb", "a").unwrap_or_else(|e| panic!("{e}"));
        let failed: Vec<&str> = path
            .iter()
            .filter(|r| r.kind == RecordKind::Failed)
            .filter_map(|r| r.reason.as_deref())
            .collect();
        assert_eq!(failed.len(), 1, "{path:?}");
        assert!(
            failed[0].contains("template fuel exhausted"),
            "{}",
            failed[0]
        );
    }
    // A restart finds nothing left to fire: the timer was consumed with the failed record.
    let mut rt = Runtime::new(SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(rt.next_due().ok().flatten(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11, finding 10: 50 identical engagement posts stored 50 rows. A reaction that gives
/// `at` is keyed by its content (or by the caller's `idempotency_key`): recorded once, and
/// the waiting enrollment is woken once.
#[test]
fn hostile_fifty_identical_engagement_posts_store_one_row() {
    use relance_core::contact::EngagementKind;
    use relance_core::ports::ContactStore;
    use relance_core::wire::EngagementDetail;
    let yaml = "id: eng\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: t, text: y}\nsteps:\n  - {id: first, send: m, next: wait}\n  - id: wait\n    wait_for: {clicked: first, timeout: P1D}\n    on_event: again\n    on_timeout: done\n  - {id: again, send: n, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "eng".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let click = |key: Option<&str>, at: Option<DateTime<Utc>>| EngagementDetail {
        idempotency_key: key.map(str::to_string),
        contact: "a".into(),
        scenario: "eng".into(),
        step: "first".into(),
        kind: EngagementKind::Clicked,
        url: Some("https://example.com/x".into()),
        link_tags: Vec::new(),
        at,
    };
    let clicked_at = t0 + TimeDelta::minutes(5);
    for i in 0..50 {
        rt.engagement(
            click(None, Some(clicked_at)),
            t0 + TimeDelta::seconds(300 + i),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let rows = |rt: &mut Runtime<SqliteStore>| {
        rt.store()
            .history("a", "eng", relance_core::contact::HistoryNeeds::ALL)
            .unwrap_or_else(|e| panic!("{e}"))
            .engagement
            .len()
    };
    assert_eq!(rows(&mut rt), 1, "one row for 50 identical posts");
    let path = rt.path("eng", "a").unwrap_or_else(|e| panic!("{e}"));
    let resumed = path
        .iter()
        .filter(|r| r.kind == RecordKind::Resumed)
        .count();
    assert_eq!(resumed, 1, "woken once: {path:?}");
    let steps: Vec<String> = sends(&mut rt).into_iter().map(|(_, s, _, _)| s).collect();
    assert_eq!(steps, vec!["first", "again"]);
    // The caller's key dedups without `at`; without either, each post is its own.
    for _ in 0..3 {
        rt.engagement(click(Some("esp-event-1"), None), t0 + TimeDelta::minutes(9))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rows(&mut rt), 2);
    for i in 0..2 {
        rt.engagement(click(None, None), t0 + TimeDelta::minutes(10 + i))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rows(&mut rt), 4);
    // A bad key is refused, naming the field.
    let e = rt
        .engagement(click(Some(" "), None), t0 + TimeDelta::minutes(20))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("idempotency_key"), "{e}");
}

/// The same for activity: identical events with `at` are recorded once.
#[test]
fn hostile_identical_activity_posts_store_one_row() {
    use relance_core::ports::ContactStore;
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    let event = |key: Option<&str>, at: Option<DateTime<Utc>>| ActivityDetail {
        idempotency_key: key.map(str::to_string),
        contact: "a".into(),
        event: "purchase".into(),
        properties: serde_json::Map::from_iter([("total".to_string(), Value::from(12))]),
        at,
    };
    for _ in 0..50 {
        rt.activity(event(None, Some(t0)), t0 + TimeDelta::minutes(1))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let rows = |rt: &mut Runtime<SqliteStore>| {
        rt.store()
            .history("a", "none", relance_core::contact::HistoryNeeds::ALL)
            .unwrap_or_else(|e| panic!("{e}"))
            .events
            .len()
    };
    assert_eq!(rows(&mut rt), 1);
    for _ in 0..5 {
        rt.activity(event(Some("order-77"), None), t0 + TimeDelta::minutes(2))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rows(&mut rt), 2);
}

/// `c0`..`c59`, each with an email, as JSON lines.
fn sixty_contacts() -> String {
    (0..60)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@example.org\"}}\n"))
        .collect()
}

/// Plays a manual scenario for 60 contacts (`c0`..`c59`, each with an email) for `days` from
/// `start`, on the SQLite runtime and in `simulate`: the runtime, its records (every
/// contact's path) and simulate's.
fn played_both_ways(
    yaml: &str,
    start: DateTime<Utc>,
    days: i64,
) -> (Runtime<SqliteStore>, Vec<Record>, Vec<Record>) {
    played_both_ways_with(yaml, "", "", start, days)
}

/// [`played_both_ways`] after a past and with a script: the `past` events (JSON lines, all
/// before `start`) are recorded as history on both sides, as `simulate` records the past of
/// its events file; the `events` are played from `start`.
fn played_both_ways_with(
    yaml: &str,
    past: &str,
    events: &str,
    start: DateTime<Utc>,
    days: i64,
) -> (Runtime<SqliteStore>, Vec<Record>, Vec<Record>) {
    let contacts = sixty_contacts();
    let mut rt = runtime();
    import(&mut rt, &contacts, start - TimeDelta::days(1));
    let id = activate(&mut rt, yaml, start - TimeDelta::days(1));
    let past = script::events_from_json_lines(past).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(past.iter().all(|e| e.at() < start), "only past events");
    Script::new(past.clone())
        .record_past(&mut rt, &id, start)
        .unwrap_or_else(|e| panic!("{e}"));
    play(
        &mut rt,
        &id,
        events,
        start,
        start + TimeDelta::days(days),
        true,
    );
    let mut from_runtime = Vec::new();
    for i in 0..60 {
        from_runtime.extend(
            rt.path(&id, &format!("c{i}"))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }

    let (scenario, _) = validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(
        scenario,
        yaml,
        SourceFormat::Yaml,
        start,
        format!("P{days}D")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    sim.contacts = script::contacts_from_json_lines(&contacts).unwrap_or_else(|e| panic!("{e:?}"));
    let mut all_events = past;
    all_events.extend(script::events_from_json_lines(events).unwrap_or_else(|e| panic!("{e:?}")));
    sim.events = all_events;
    let mut from_simulate = Vec::new();
    sim.run(&mut |r: &Record| from_simulate.push(r.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    (rt, from_runtime, from_simulate)
}

/// DESIGN §3.1: the SQLite runtime places the same contacts on the same split paths and in
/// the same holdout as `simulate`, so a simulated experiment predicts the embedded one.
#[test]
fn runtime_and_simulate_assign_the_same_paths_and_holdout() {
    let yaml = "id: ab-test
launch: {type: manual}
audience: {all: true}
holdout: {percent: 15}
messages:
  a: {channel: email, subject: A, text: a}
  b: {channel: email, subject: B, text: b}
steps:
  - id: ab
    split:
      - {percent: 33.33, next: sa}
      - {percent: 66.67, next: sb}
  - {id: sa, send: a, next: done}
  - {id: sb, delay: {after: P1D}, send: b, next: done}
  - {id: done, end: success}
";
    let start = at("2026-12-01T09:00:00Z");
    // (contact, kind, branch) of every assignment and holdout, sorted.
    let placed = |records: Vec<Record>| {
        let mut out: Vec<(String, String, String)> = records
            .into_iter()
            .filter(|r| matches!(r.kind, RecordKind::Assigned | RecordKind::HeldOut))
            .map(|r| {
                (
                    r.contact,
                    format!("{:?}", r.kind),
                    r.branch.unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    };

    let (mut rt, from_runtime, from_simulate) = played_both_ways(yaml, start, 3);

    let got = placed(from_runtime);
    let want = placed(from_simulate);
    assert_eq!(got.len(), 60, "every contact is placed once: {got:?}");
    assert_eq!(got, want);
    // All three outcomes occur, so the comparison covers each.
    for (kind, branch) in [("HeldOut", ""), ("Assigned", "sa"), ("Assigned", "sb")] {
        assert!(
            got.iter().any(|(_, k, b)| k == kind && b == branch),
            "no {kind} {branch}: {got:?}"
        );
    }
    // And the sends follow the paths: the same in both.
    let mut sent = sends(&mut rt)
        .into_iter()
        .map(|(c, s, a, _)| (c, s, a))
        .collect::<Vec<_>>();
    let mut simulated_sends = simulated(yaml, &sixty_contacts(), "", start, "P3D", None);
    sent.sort();
    simulated_sends.sort();
    assert_eq!(sent, simulated_sends);
}

/// DESIGN §3.1: the SQLite runtime sends each contact the same message variant as
/// `simulate`, journaled `assigned` with that message just before the send.
#[test]
fn runtime_and_simulate_choose_the_same_variants() {
    let yaml = "id: subjects
launch: {type: manual}
audience: {all: true}
messages:
  a: {channel: email, subject: A, text: a}
  b: {channel: email, subject: B, text: b}
  c: {channel: email, subject: C, text: c}
steps:
  - id: first
    send: {variants: [{message: a, percent: 20}, {message: b, percent: 30.5}, {message: c, percent: 49.5}]}
    next: done
  - {id: done, end: success}
";
    let start = at("2026-12-01T09:00:00Z");
    // (contact, message) of every variant assignment, sorted.
    let chosen = |records: Vec<Record>| {
        let mut out: Vec<(String, String)> = records
            .into_iter()
            .filter(|r| r.kind == RecordKind::Assigned)
            .map(|r| (r.contact, r.message.unwrap_or_default()))
            .collect();
        out.sort();
        out
    };

    let (mut rt, from_runtime, from_simulate) = played_both_ways(yaml, start, 1);

    let got = chosen(from_runtime);
    let want = chosen(from_simulate);
    assert_eq!(got.len(), 60, "every contact is assigned once: {got:?}");
    assert_eq!(got, want);
    for m in ["a", "b", "c"] {
        assert!(got.iter().any(|(_, g)| g == m), "no variant {m}: {got:?}");
    }
    // The runtime sent each contact the subject of the message it was assigned (message a has
    // subject A, and so on).
    let mut sent: Vec<(String, String)> = sends(&mut rt)
        .into_iter()
        .map(|(c, _, _, subject)| (c, subject.to_lowercase()))
        .collect();
    sent.sort();
    assert_eq!(sent, got);
}

/// DESIGN §3.1: `at: best` picks the same hour on the SQLite runtime as in `simulate`, from
/// the same past opens and clicks (recorded before the start on both sides): the most
/// engaged hour in Paris, the earliest on a tie, `default_at` below three events in the 90
/// days before the step.
#[test]
fn runtime_and_simulate_pick_the_same_best_hour() {
    let yaml = r#"id: best-hour
timezone: Europe/Paris
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: M, text: m}
steps:
  - {id: first, send: m, next: later}
  - {id: later, delay: {after: P1D, at: best, default_at: "10:00"}, send: m, next: done}
  - {id: done, end: success}
"#;
    let start = at("2026-12-01T09:00:00Z");
    // Contact ci: i % 5 opens or clicks in the 90 days before, at hours that depend on i (two
    // of them at one hour, so most contacts have a clear best hour), and for every third
    // contact one more, 100 days before, that must not count.
    let mut past = String::new();
    for i in 0..60u32 {
        for k in 0..i % 5 {
            let hour = if k < 2 {
                (i * 7) % 24
            } else {
                (i + k * 5) % 24
            };
            let t = start - TimeDelta::days(i64::from(3 + k * 11 + i % 7))
                + TimeDelta::hours(i64::from(hour) - 9)
                + TimeDelta::minutes(i64::from((i * 13) % 60));
            let kind = if k % 2 == 0 { "opened" } else { "clicked" };
            past.push_str(&format!(
                "{{\"at\": \"{}\", \"contact\": \"c{i}\", \"{kind}\": \"first\"}}\n",
                t.to_rfc3339()
            ));
        }
        if i % 3 == 0 {
            let t = start - TimeDelta::days(100);
            past.push_str(&format!(
                "{{\"at\": \"{}\", \"contact\": \"c{i}\", \"opened\": \"first\"}}\n",
                t.to_rfc3339()
            ));
        }
    }
    // (contact, step, at) of every send, sorted.
    let sent = |records: Vec<Record>| {
        let mut out: Vec<(String, String, DateTime<Utc>)> = records
            .into_iter()
            .filter(|r| r.kind == RecordKind::Sent)
            .map(|r| (r.contact, r.step.unwrap_or_default(), r.at))
            .collect();
        out.sort();
        out
    };

    let (_, from_runtime, from_simulate) = played_both_ways_with(yaml, &past, "", start, 3);

    let got = sent(from_runtime);
    assert_eq!(got.len(), 120, "two sends per contact: {got:?}");
    assert_eq!(got, sent(from_simulate));
    // The later sends fall at many hours: the best hours vary, and the contacts with fewer
    // than three events get 10:00 in Paris (09:00Z).
    let hours: std::collections::BTreeSet<String> = got
        .iter()
        .filter(|(_, step, _)| step == "later")
        .map(|(_, _, t)| t.format("%H:%M").to_string())
        .collect();
    assert!(hours.contains("09:00"), "{hours:?}");
    assert!(hours.len() >= 5, "{hours:?}");
    assert!(hours.iter().all(|h| h.ends_with(":00")), "{hours:?}");
}

/// DESIGN §3.1: the winner rule and conversions play the same on the SQLite runtime (the
/// runner's clock fires the winner check as due work) as in `simulate`: the same winner at the
/// same instant, the same conversions with the same values.
#[test]
fn runtime_and_simulate_find_the_same_winner_and_conversions() {
    let yaml = "id: abc
launch: {type: manual}
audience: {all: true}
holdout: {percent: 20}
conversion: {event: purchase, within: P2D, value: amount}
messages:
  a: {channel: email, subject: A, text: a}
  b: {channel: email, subject: B, text: b}
steps:
  - id: mail
    send:
      variants: [{message: a, percent: 50}, {message: b, percent: 50}]
      winner: {metric: opened, after: PT6H, min_sends: 15, confidence: 0.95}
    next: done
  - {id: done, end: success}
";
    let start = at("2026-12-01T09:00:00Z");
    let mut events = String::new();
    for i in 0..60 {
        let c = format!("c{i}");
        // b's contacts open, a's do not; every third contact buys the next day.
        if relance_core::experiment::bucket("abc", "mail", &c) >= 5000 {
            events.push_str(&format!(
                "{{\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"{c}\", \"opened\": \"mail\"}}\n"
            ));
        }
        if i % 3 == 0 {
            events.push_str(&format!(
                "{{\"at\": \"2026-12-02T12:00:00Z\", \"contact\": \"{c}\", \"event\": \"purchase\", \"amount\": {i}}}\n"
            ));
        }
    }
    let (mut rt, _, from_simulate) = played_both_ways_with(yaml, "", &events, start, 3);
    let from_runtime = rt
        .store()
        .records("abc", None)
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = |records: &[Record]| {
        let mut out: Vec<String> = records
            .iter()
            .filter(|r| {
                matches!(
                    r.kind,
                    RecordKind::Winner | RecordKind::Converted | RecordKind::HeldOut
                )
            })
            .map(|r| {
                format!(
                    "{} {:?} {} {:?} {:?}",
                    r.at.to_rfc3339(),
                    r.kind,
                    r.contact,
                    r.message,
                    r.value.as_ref().map(ToString::to_string)
                )
            })
            .collect();
        out.sort();
        out
    };
    let simulated = outcome(&from_simulate);
    assert_eq!(outcome(&from_runtime), simulated);
    assert!(
        simulated
            .iter()
            .any(|l| l.starts_with("2026-12-01T15:00:00+00:00 Winner  Some(\"b\")")),
        "{simulated:#?}"
    );
    // Every third contact converted, held out or not.
    let converted = simulated.iter().filter(|l| l.contains("Converted")).count();
    assert_eq!(converted, 20, "{simulated:#?}");
}

/// DESIGN §3.1: the report of the SQLite runtime's journal is the report of simulate's
/// records, path for path and variant for variant, so a simulated experiment predicts the
/// embedded report.
#[test]
fn runtime_and_simulate_report_the_same() {
    let yaml = "id: measured
launch: {type: manual}
audience: {all: true}
holdout: {percent: 20}
messages:
  a: {channel: email, subject: A, text: a}
  b: {channel: email, subject: B, text: b}
  l: {channel: email, subject: L, text: l}
steps:
  - id: ab
    split:
      - {percent: 50, next: variants}
      - {percent: 50, next: long}
  - id: variants
    send: {variants: [{message: a, percent: 50}, {message: b, percent: 50}]}
    next: done
  - {id: long, delay: {after: P1D}, send: l, next: done}
  - {id: done, end: success}
";
    let start = at("2026-12-01T09:00:00Z");
    let (mut rt, _, from_simulate) = played_both_ways(yaml, start, 3);
    let (scenario, _) = validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let report = rt.report("measured").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report, Report::from_records(&scenario, &from_simulate));
    // Not an empty comparison: every entry, both paths, both variants, the holdout.
    assert_eq!(report.total.entries, 60);
    let Some(holdout) = &report.holdout else {
        panic!("no holdout comparison");
    };
    assert!(holdout.held_out.entries > 0 && holdout.treated.entries > 0);
    let paths = &report.steps[0].paths;
    assert!(paths.iter().all(|p| p.conversions.entries > 0), "{paths:?}");
    let variants = &report.steps[1].variants;
    assert!(variants.iter().all(|v| v.sent > 0), "{variants:?}");
    assert!(matches!(
        rt.report("nope"),
        Err(RuntimeError::UnknownScenario(id)) if id == "nope"
    ));
}

/// A contact opted out in its fields while its trail does not end on that opt-out (an earlier
/// entry whose change lost to a concurrent write, or a contact stored before the consent log):
/// an import row opting it back in is kept out, and the trail gets the opt-out written again,
/// so the state its trail leads to is the one the contact holds.
#[test]
fn hostile_a_kept_opt_in_restates_the_opt_out_its_trail_lacks() {
    use relance_core::consent::{ConsentState, source};
    use relance_core::ports::{ConsentStore, ContactStore};
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime();
    let stored = Contact::from_json(
        serde_json::json!({"id": "a", "email": "a@x.io", "subscriptions": {"news": false}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.store()
        .put_contact(&stored, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rt.consent_trail("a").unwrap_or_default().is_empty());
    for minutes in [1, 2] {
        import(
            &mut rt,
            "{\"id\": \"a\", \"subscriptions\": {\"news\": true}}\n",
            t0 + TimeDelta::minutes(minutes),
        );
    }
    let trail = rt.consent_trail("a").unwrap_or_default();
    let restated: Vec<_> = trail
        .iter()
        .filter(|e| e.source == source::RESTATED)
        .collect();
    assert_eq!(
        restated.len(),
        1,
        "written once, then the trail agrees: {trail:?}"
    );
    assert_eq!(restated[0].state, ConsentState::Unsubscribed);
    assert!(!restated[0].kept);
    assert_eq!(trail.iter().filter(|e| e.kept).count(), 2, "{trail:?}");
    let state = rt
        .store()
        .consent_state("a")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.subscriptions.get("news"), Some(&false));
}

/// A runtime over `store` with 300 contacts imported (`c000` to `c299`) and `yaml`'s scenario
/// active, at `now`.
fn three_hundred_contacts_and<S>(
    store: S,
    yaml: &str,
    now: DateTime<Utc>,
) -> relance_runtime::runtime::Runtime<S>
where
    S: relance_core::ports::Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let mut rt = relance_runtime::runtime::Runtime::new(store);
    let contacts: Vec<Contact> = (0..300)
        .map(|i| {
            let row = format!(
                "{{\"id\": \"c{i:03}\", \"email\": \"c{i}@x.io\", \"phone\": \"+3361{i:07}\", \"first_name\": \"Ana{i}\"}}\n"
            );
            script::contacts_from_json_lines(&row)
                .unwrap_or_else(|e| panic!("{e:?}"))
                .remove(0)
        })
        .collect();
    rt.import(&contacts, now, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt
}

/// The drip's launch over `store`: 300 contacts imported, ten launched first, then a launch
/// asking for every contact, some twice and one unknown. Returns that launch's report and
/// the scenario's journal.
fn launched_drip<S>(store: S, now: DateTime<Utc>) -> (String, Vec<Record>)
where
    S: relance_core::ports::Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let drip = include_str!("../../../../examples/reference-drip.yaml");
    let mut rt = three_hundred_contacts_and(store, drip, now);
    let launch = |rt: &mut relance_runtime::runtime::Runtime<S>, ids: Vec<String>| {
        rt.launch(
            LaunchDetail {
                scenario: "drip".into(),
                contacts: Some(ids),
            },
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    // Running already: five at the start, five in the middle of a write together.
    launch(
        &mut rt,
        (0..5).chain(150..155).map(|i| format!("c{i:03}")).collect(),
    );
    let mut ids: Vec<String> = (0..300).map(|i| format!("c{i:03}")).collect();
    ids.insert(40, "c030".into());
    ids.insert(200, "ghost".into());
    ids.insert(290, "c280".into());
    let before = rt
        .store()
        .records("drip", None)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .len();
    let report = launch(&mut rt, ids.clone());
    let records = rt
        .store()
        .records("drip", None)
        .unwrap_or_else(|e| panic!("{e:?}"));
    // Contact after contact, in the order asked (the unknown one journals nothing).
    let mut order: Vec<&str> = records[before..]
        .iter()
        .map(|r| r.contact.as_str())
        .collect();
    order.dedup();
    let asked: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| *id != "ghost")
        .collect();
    assert_eq!(order, asked, "the journal follows the launch's order");
    (format!("{report:?}"), records)
}

/// SQLite writes a launch's entries many contacts per statement; the memory store writes
/// them one contact after the other. Both end with the same report and the same journal, in
/// the same order: more contacts than one write together, some asked twice, some running
/// already, one unknown.
#[test]
fn a_launch_written_together_journals_as_one_contact_after_the_other() {
    let now = at("2026-12-01T09:00:00Z");
    let (sqlite_report, sqlite_journal) = launched_drip(
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        now,
    );
    let (memory_report, memory_journal) = launched_drip(relance_runtime::MemoryStore::new(), now);
    assert_eq!(sqlite_report, memory_report);
    assert!(
        sqlite_report.contains("entered: 290") && sqlite_report.contains("\"ghost\""),
        "{sqlite_report}"
    );
    assert_eq!(sqlite_journal.len(), memory_journal.len());
    assert_eq!(sqlite_journal, memory_journal);
    let skipped = sqlite_journal
        .iter()
        .filter(|r| r.kind == RecordKind::Skipped)
        .count();
    assert_eq!(skipped, 12, "ten running already and two asked twice");
}

/// A daily launch at 09:00 of a send, fired by the tick over `store` for 300 contacts, ten
/// of them running already (launched by hand before): the scenario's journal.
fn daily_launch<S>(store: S) -> Vec<Record>
where
    S: relance_core::ports::Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let t0 = at("2026-12-01T08:00:00Z");
    let yaml = "id: daily\nlaunch: {type: recurring, frequency: daily, time: \"09:00\"}\nmessages:\n  m: {channel: email, subject: \"Hi {{ contact.first_name }}\", text: x}\nsteps:\n  - {id: send, send: m, next: wait}\n  - {id: wait, delay: {after: P2D}, next: done}\n  - {id: done, end: success}\n";
    let mut rt = three_hundred_contacts_and(store, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "daily".into(),
            contacts: Some((140..150).map(|i| format!("c{i:03}")).collect()),
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ticked, committed) = rt.grouped(512, |rt| rt.tick(at("2026-12-01T09:00:30Z")));
    committed.unwrap_or_else(|e| panic!("{e}"));
    ticked.unwrap_or_else(|e| panic!("{e}"));
    rt.store()
        .records("daily", None)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// A recurring launch enters every contact as a launch asked for does: on SQLite, whose
/// entries are written together, the journal is the memory store's, written one contact
/// after the other (ten contacts already running in the middle of the list).
#[test]
fn a_recurring_launch_written_together_journals_as_one_contact_after_the_other() {
    let sqlite = daily_launch(SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")));
    let memory = daily_launch(relance_runtime::MemoryStore::new());
    assert_eq!(sqlite.len(), memory.len());
    assert_eq!(sqlite, memory);
    let entered = sqlite
        .iter()
        .filter(|r| r.kind == RecordKind::Entered)
        .count();
    assert_eq!(entered, 300, "ten by hand, 290 by the daily launch");
    assert_eq!(
        sqlite
            .iter()
            .filter(|r| r.kind == RecordKind::Skipped)
            .count(),
        10,
        "the ten running already"
    );
}
