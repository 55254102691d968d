//! The runtime over DynamoDB on a local AWS emulator (`./scripts/test` starts one and sets
//! `AWS_ENDPOINT_URL`): the same sends as `simulate`, entry rules under concurrent triggers,
//! duplicated timers, a crash between the commit point and the effects, dead letters.

mod support;

use chrono::{DateTime, TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dynamodb::DynamoStore;
use relance_core::contact::EngagementKind;
use relance_core::engine::Engine;
use relance_core::journal::RecordKind;
use relance_core::ports::{SourceFormat, Status};
use relance_core::simulation::{self, Simulation};
use relance_core::wire::{ActivityDetail, EngagementDetail, LaunchDetail};
use relance_core::{Contact, Format, IsoDuration, validate};
use relance_runtime::runtime::Runtime;
use support::{at, emulator};

/// A store on fresh tables named after the test.
fn store(name: &str) -> DynamoStore {
    let emu = emulator();
    let config = AwsConfig::with_prefix(&format!("t{}-{name}-", std::process::id()), 3);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    DynamoStore::new(
        emu.dynamo.clone(),
        config,
        Bridge::new(emu.runtime.handle().clone()),
    )
}

fn sends(store: &DynamoStore) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = store
        .outbox()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|v| v["kind"] == "send")
        .map(|v| {
            let at = v["at"]
                .as_str()
                .map(|s| at(s).to_rfc3339())
                .unwrap_or_default();
            (
                v["send"]["contact"].as_str().unwrap_or("").into(),
                v["send"]["step"].as_str().unwrap_or("").into(),
                at,
            )
        })
        .collect();
    out.sort();
    out
}

fn import(rt: &mut Runtime<DynamoStore>, contacts: &str, now: DateTime<Utc>) {
    let list: Vec<Contact> =
        simulation::contacts_from_json_lines(contacts).unwrap_or_else(|e| panic!("{e:?}"));
    rt.import(&list, now, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
}

fn activate(rt: &mut Runtime<DynamoStore>, yaml: &str, now: DateTime<Utc>) -> String {
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    put.id
}

/// Plays events in time order on the runtime, ticking at each of `instants` and every `step`
/// (the test drives the clock; on AWS the step queue's DelaySeconds lands each timer on time).
fn play(
    rt: &mut Runtime<DynamoStore>,
    scenario: &str,
    events: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    instants: &[DateTime<Utc>],
) {
    let mut script = simulation::events_from_json_lines(events).unwrap_or_else(|e| panic!("{e:?}"));
    script.sort_by_key(|e| std::cmp::Reverse(e.at()));
    let mut now = start;
    let mut launched = false;
    let step = TimeDelta::hours(6);
    while now <= end {
        while script.last().is_some_and(|e| e.at() <= now) {
            let Some(e) = script.pop() else { break };
            let result = rt.scripted(scenario, e, now);
            result.unwrap_or_else(|e| panic!("{e}"));
        }
        if !launched {
            rt.launch(
                LaunchDetail {
                    scenario: scenario.into(),
                    contacts: None,
                },
                now,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            launched = true;
        }
        rt.tick(now).unwrap_or_else(|e| panic!("{e}"));
        // The AWS tick has no "next due": step the clock, stopping at every event.
        let next = script
            .last()
            .map(|e| e.at())
            .into_iter()
            .chain(instants.iter().copied())
            .filter(|t| *t > now)
            .min();
        now = next.filter(|t| *t < now + step).unwrap_or(now + step);
    }
}

#[test]
fn the_aws_path_sends_what_simulate_sends() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let read = |f: &str| {
        std::fs::read_to_string(format!("{root}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let (yaml, contacts, events) = (
        read("openers-sms.yaml"),
        read("contacts.jsonl"),
        read("events.jsonl"),
    );
    let start = at("2026-12-01T09:00:00Z");
    let until: IsoDuration = "P4D".parse().unwrap_or_else(|e| panic!("{e}"));
    let end = until.add_to(start, chrono_tz::UTC);

    let (scenario, _) = validate::parse(&yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let engine = Engine::new(scenario);
    let mut sim = Simulation::new(
        &engine,
        simulation::contacts_from_json_lines(&contacts).unwrap_or_else(|e| panic!("{e:?}")),
        simulation::events_from_json_lines(&events).unwrap_or_else(|e| panic!("{e:?}")),
    );
    let mut want = Vec::new();
    let mut instants = Vec::new();
    sim.run(start, &until, &mut |r| {
        instants.push(r.at);
        if r.kind == RecordKind::Sent {
            want.push((
                r.contact.clone(),
                r.step.clone().unwrap_or_default(),
                r.at.to_rfc3339(),
            ));
        }
    });
    want.sort();

    let mut rt = Runtime::new(store("parity"));
    import(&mut rt, &contacts, start - TimeDelta::days(1));
    let id = activate(&mut rt, &yaml, start - TimeDelta::days(1));
    play(&mut rt, &id, &events, (start, end), &instants);
    assert!(!want.is_empty());
    assert_eq!(sends(rt.store()), want);
}

const TRIGGERED: &str = "id: on-purchase\nlaunch: {type: trigger, event: purchase}\nonce_per: P7D\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: thanks, send: m, next: wait}\n  - {id: wait, delay: {after: P1D}, next: done}\n  - {id: done, end: success}\n";

#[test]
fn concurrent_triggers_enter_once_and_the_rest_are_skipped() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("concurrent"));
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, TRIGGERED, t0);
    let base = rt.store().clone();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = base.clone();
                scope.spawn(move || {
                    let mut rt = Runtime::new(store);
                    // A conflict means another trigger won: the queue redelivers, and the retry sees it.
                    let first = rt.activity(
                        ActivityDetail {
                            idempotency_key: None,
                            contact: "a".into(),
                            event: "purchase".into(),
                            properties: Default::default(),
                            at: Some(t0),
                        },
                        t0,
                    );
                    first.or_else(|_| {
                        rt.activity(
                            ActivityDetail {
                                idempotency_key: None,
                                contact: "a".into(),
                                event: "purchase".into(),
                                properties: Default::default(),
                                at: Some(t0),
                            },
                            t0,
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("thread")))
            .collect()
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sends(rt.store()).len(), 1, "one entry, one send");
    let skipped: Vec<_> = rt
        .path("on-purchase", "a")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|r| r.kind == RecordKind::Skipped)
        .collect();
    // A loser that retries after the winner's entry is written sees it running; one that retries
    // between the claim and the write sees the fresh entry mark: either way it does not enter.
    assert!(
        skipped
            .iter()
            .all(|r| matches!(r.reason.as_deref(), Some("already_running" | "once_per"))),
        "{skipped:?}"
    );
    assert!(!skipped.is_empty());
    // After the end, within once_per: skipped for once_per; after it: enters again.
    rt.tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let again = t0 + TimeDelta::days(2);
    rt.activity(
        ActivityDetail {
            idempotency_key: None,
            contact: "a".into(),
            event: "purchase".into(),
            properties: Default::default(),
            at: Some(again),
        },
        again,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let later = t0 + TimeDelta::days(8);
    rt.activity(
        ActivityDetail {
            idempotency_key: None,
            contact: "a".into(),
            event: "purchase".into(),
            properties: Default::default(),
            at: Some(later),
        },
        later,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reasons: Vec<String> = rt
        .path("on-purchase", "a")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|r| (r.kind == RecordKind::Skipped).then(|| r.reason.unwrap_or_default()))
        .collect();
    assert!(reasons.contains(&"once_per".to_string()), "{reasons:?}");
    assert_eq!(sends(rt.store()).len(), 2);
}

#[test]
fn a_duplicated_timer_and_a_replayed_engagement_change_nothing() {
    let yaml = "id: twice\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  t: {channel: email, subject: t, text: x}\nsteps:\n  - {id: first, send: m, next: wait}\n  - id: wait\n    wait_for: {opened: first, timeout: P2D}\n    on_event: thanks\n    on_timeout: done\n  - {id: thanks, send: t, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("dup"));
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "twice".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let opened = EngagementDetail {
        idempotency_key: None,
        contact: "a".into(),
        scenario: "twice".into(),
        step: "first".into(),
        kind: EngagementKind::Opened,
        url: None,
        link_tags: vec![],
        at: Some(t0 + TimeDelta::hours(1)),
    };
    rt.engagement(opened.clone(), t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.engagement(opened, t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    // b's timeout fires; the same tick again (a duplicated delivery) finds nothing to do.
    let due = t0 + TimeDelta::days(2);
    let first = rt.tick(due).unwrap_or_else(|e| panic!("{e}"));
    let second = rt.tick(due).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.timers, second.timers), (1, 0));
    let got: Vec<(String, String)> = sends(rt.store())
        .into_iter()
        .map(|(c, s, _)| (c, s))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), "first".into()),
            ("a".into(), "thanks".into()),
            ("b".into(), "first".into())
        ]
    );
}

#[test]
fn a_crash_after_the_commit_point_is_repaired_when_the_enrollment_is_read() {
    let yaml = "id: crash\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("crash"));
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, yaml, t0);
    rt.store().crash_after_next_commit();
    assert!(
        rt.launch(
            LaunchDetail {
                scenario: "crash".into(),
                contacts: None
            },
            t0
        )
        .is_err()
    );
    assert!(
        sends(rt.store()).is_empty(),
        "the crash came before the effects"
    );
    // Any later read of the enrollment (here: a launch that finds it running) applies them once.
    let report = rt
        .launch(
            LaunchDetail {
                scenario: "crash".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.skipped.get("already_running"), Some(&1));
    assert_eq!(sends(rt.store()).len(), 1);
    rt.tick(t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<String> = sends(rt.store()).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(got, vec!["first", "second"]);
    let counts = rt.journal("crash").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.ends.get("success"), Some(&1));
}

#[test]
fn timers_spread_over_shards_fire_in_due_order_and_inactivity_triggers_work() {
    let yaml = "id: cart\nlaunch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("cart"));
    let contacts: String = (0..12)
        .map(|i| format!("{{\"id\": \"c{i:02}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    for i in 0..12 {
        let when = t0 + TimeDelta::minutes(i);
        rt.activity(
            ActivityDetail {
                idempotency_key: None,
                contact: format!("c{i:02}"),
                event: "cart.updated".into(),
                properties: Default::default(),
                at: Some(when),
            },
            when,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // c05 buys: its pending check is cancelled.
    let buy = t0 + TimeDelta::minutes(20);
    rt.activity(
        ActivityDetail {
            idempotency_key: None,
            contact: "c05".into(),
            event: "purchase".into(),
            properties: Default::default(),
            at: Some(buy),
        },
        buy,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.tick(t0 + TimeDelta::minutes(35))
        .unwrap_or_else(|e| panic!("{e}"));
    let first: Vec<String> = sends(rt.store()).into_iter().map(|(c, _, _)| c).collect();
    assert_eq!(
        first,
        ["c00", "c01", "c02", "c03", "c04"],
        "c05 bought; c06 is due at 09:36"
    );
    rt.tick(t0 + TimeDelta::minutes(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(rt.store()).len(), 11);
}

/// Issue 11, finding 10: identical engagement and activity with `at` (or the same caller
/// key) are recorded once on DynamoDB too (a conditional put of the key).
#[test]
fn hostile_identical_inputs_are_recorded_once() {
    use relance_core::ports::ContactStore;
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("dedup"));
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    let yaml = "id: eng\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: first, send: m, next: done}\n  - {id: done, end: success}\n";
    activate(&mut rt, yaml, t0);
    let click = |key: Option<&str>, at: Option<DateTime<Utc>>| EngagementDetail {
        idempotency_key: key.map(str::to_string),
        contact: "a".into(),
        scenario: "eng".into(),
        step: "first".into(),
        kind: EngagementKind::Opened,
        url: None,
        link_tags: Vec::new(),
        at,
    };
    for i in 0..5 {
        rt.engagement(
            click(None, Some(t0 + TimeDelta::minutes(1))),
            t0 + TimeDelta::seconds(90 + i),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.engagement(click(Some("esp-1"), None), t0 + TimeDelta::seconds(200 + i))
            .unwrap_or_else(|e| panic!("{e}"));
        rt.activity(
            ActivityDetail {
                idempotency_key: None,
                contact: "a".into(),
                event: "purchase".into(),
                properties: Default::default(),
                at: Some(t0),
            },
            t0 + TimeDelta::seconds(300 + i),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let h = rt
        .store()
        .history("a", "eng")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.engagement.len(), 2, "{:?}", h.engagement);
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
}
