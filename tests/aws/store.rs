//! The runtime over DynamoDB on a local AWS emulator (`./scripts/test` starts one and sets
//! `AWS_ENDPOINT_URL`): the same sends as `simulate`, entry rules under concurrent triggers,
//! duplicated timers, a crash between the commit point and the effects, dead letters.

use crate::support::{at, emulator, fresh_store};
use chrono::{DateTime, TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dynamodb::DynamoStore;
use relance_core::contact::EngagementKind;
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{SourceFormat, Status};
use relance_core::script;
use relance_core::wire::{ActivityDetail, EngagementDetail, LaunchDetail};
use relance_core::{Contact, Format, IsoDuration, validate};
use relance_runtime::player::{Pace, Play, Script, Strict};
use relance_runtime::runtime::Runtime;
use relance_runtime::simulate::Simulation;

/// A state-table item as stored (read from the emulator, strongly consistent).
fn stored_item(
    table: &str,
    pk: String,
    sk: String,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let emu = emulator();
    emu.runtime
        .block_on(
            emu.dynamo
                .get_item()
                .table_name(table)
                .key(relance_aws::keys::PK, AttributeValue::S(pk))
                .key(relance_aws::keys::SK, AttributeValue::S(sk))
                .consistent_read(true)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .item
}

/// Every item of a timer table.
fn timer_table(
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let emu = emulator();
    emu.runtime
        .block_on(emu.dynamo.scan().table_name(table).send())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .items
        .unwrap_or_default()
}

/// An item's `kind` (`timer`: a timer's own item; `timers`: a batch's timer part).
fn kind_of(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Option<&str> {
    item.get("kind")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A scenario's journal items as stored: (the batches' parts, the transitions' own items).
fn journal_items(table: &str, scenario: &str) -> (usize, usize) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let emu = emulator();
    let items = emu
        .runtime
        .block_on(
            emu.dynamo
                .scan()
                .table_name(table)
                .filter_expression("begins_with(pk, :j)")
                .expression_attribute_values(
                    ":j",
                    AttributeValue::S(format!("journal#{scenario}#")),
                )
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .items
        .unwrap_or_default();
    (
        items.iter().filter(|i| i.contains_key("entries")).count(),
        items.iter().filter(|i| i.contains_key("records")).count(),
    )
}

/// A store of a handler's batch: it flushes when told (see `DynamoStore::flush`).
fn batching(mut store: DynamoStore) -> DynamoStore {
    store.set_auto_flush(false);
    store
}

/// A `purchase` by `contact` at `when`.
fn purchase_by(rt: &mut Runtime<DynamoStore>, contact: &str, when: DateTime<Utc>) {
    rt.activity(
        ActivityDetail {
            idempotency_key: None,
            contact: contact.into(),
            event: "purchase".into(),
            properties: Default::default(),
            at: Some(when),
        },
        when,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A store on fresh tables named after the test.
fn store(name: &str) -> DynamoStore {
    fresh_store("t", name, 3)
}

/// A store whose stored layouts follow the units' simulated `now`, not the real clock (the
/// tests of the layouts' delay and heartbeat).
fn unit_timed(name: &str) -> DynamoStore {
    let mut store = store(name);
    store.layouts_on_unit_time();
    store
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
        script::contacts_from_json_lines(contacts).unwrap_or_else(|e| panic!("{e:?}"));
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

/// The contact as stored now (a copy of the store: nothing of a unit's cache).
fn stored_contact(rt: &mut Runtime<DynamoStore>, id: &str) -> Contact {
    use relance_core::ports::ContactStore;
    rt.store()
        .clone()
        .contact(id)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no contact {id}"))
}

/// An explicit consent call re-subscribing `contact` to `kind` (source `form`).
fn resubscribe(rt: &mut Runtime<DynamoStore>, contact: &str, kind: &str, now: DateTime<Utc>) {
    let request = serde_json::from_value(
        serde_json::json!({"contact": contact, "subscriptions": {kind: true}, "source": "form"}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.consent(&request, now).unwrap_or_else(|e| panic!("{e}"));
}

/// Another writer, through a copy of the store, changes contact `id` with `change` just
/// before the next put of a profile (between a unit's read and its put).
fn change_before_next_put(
    rt: &mut Runtime<DynamoStore>,
    id: &'static str,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut DynamoStore, &mut Contact) -> Result<(), relance_aws::error::StoreError>
    + Send
    + 'static,
) {
    change_contact_at(rt, Injected::ProfilePut, id, now, change);
}

/// Where a test's other writer lands.
enum Injected {
    /// Just before the unit's next put of a profile.
    ProfilePut,
    /// Just before the unit appends a restatement of what a contact holds.
    RestatedAppend,
}

/// Another writer changes contact `id` (and may write more with the store) at `point`.
fn change_contact_at(
    rt: &mut Runtime<DynamoStore>,
    point: Injected,
    id: &'static str,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut DynamoStore, &mut Contact) -> Result<(), relance_aws::error::StoreError>
    + Send
    + 'static,
) {
    use relance_core::ports::{ContactStore, Store};
    let mut other = rt.store().clone();
    let work = move || {
        other
            .atomically(|s| {
                let mut c = s.contact(id)?.unwrap_or_else(|| panic!("no contact {id}"));
                change(s, &mut c)?;
                s.put_contact(&c, now)
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    match point {
        Injected::ProfilePut => rt.store().before_next_profile_put(work),
        Injected::RestatedAppend => rt.store().before_next_restated_append(work),
    }
}

/// An EventBridge event of `detail_type` as the trigger function receives it.
fn bus_event(
    detail_type: &str,
    detail: serde_json::Value,
) -> aws_lambda_events::event::eventbridge::EventBridgeEvent<serde_json::Value> {
    serde_json::from_value(
        serde_json::json!({"detail-type": detail_type, "source": "shop",
        "time": "2026-12-01T09:00:00Z", "detail": detail}),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A contact stored as it is, without consent events (as before the consent log).
fn put_without_log(rt: &mut Runtime<DynamoStore>, fields: serde_json::Value, now: DateTime<Utc>) {
    use relance_core::ports::ContactStore;
    let contact = Contact::from_json(fields).unwrap_or_else(|e| panic!("{e}"));
    rt.store()
        .put_contact(&contact, now)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The test's clock on the AWS path. The store has no "next due" (the AWS tick runs on a
/// schedule; on AWS the step queue's DelaySeconds lands each timer on time), so time moves
/// to the next event or the next of `instants`, at most `STEP` ahead, and never jumps.
struct Stepping<'a> {
    now: DateTime<Utc>,
    instants: &'a [DateTime<Utc>],
}

impl Stepping<'_> {
    const STEP: TimeDelta = TimeDelta::hours(6);
}

impl Pace for Stepping<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.now
    }

    fn wait(&mut self, next: DateTime<Utc>) {
        let instant = self
            .instants
            .iter()
            .copied()
            .filter(|t| *t > self.now)
            .min();
        let next = instant.map_or(next, |i| i.min(next));
        self.now = next.min(self.now + Self::STEP);
    }

    fn jumps(&self) -> bool {
        false
    }
}

/// Plays events in time order on the runtime through the scripted player, launching the
/// scenario for everyone at `start` (the example has no event at that instant) and ticking
/// at each of `instants` and at least every [`Stepping::STEP`].
fn play(
    rt: &mut Runtime<DynamoStore>,
    scenario: &str,
    events: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    instants: &[DateTime<Utc>],
) {
    let script =
        Script::new(script::events_from_json_lines(events).unwrap_or_else(|e| panic!("{e:?}")));
    rt.launch(
        LaunchDetail {
            scenario: scenario.into(),
            contacts: None,
        },
        start,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Not `launching_at_start`: that ends a scaled play once nothing is due, and this store
    // never says what is due.
    Play::new(scenario, start, end)
        .run(
            rt,
            script,
            &mut Stepping {
                now: start,
                instants,
            },
            &mut Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_aws_path_sends_what_simulate_sends() {
    if crate::support::offline() {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
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
    let mut sim = Simulation::new(scenario, &yaml, SourceFormat::Yaml, start, until);
    sim.contacts = script::contacts_from_json_lines(&contacts).unwrap_or_else(|e| panic!("{e:?}"));
    sim.events = script::events_from_json_lines(&events).unwrap_or_else(|e| panic!("{e:?}"));
    let mut want = Vec::new();
    let mut instants = Vec::new();
    sim.run(&mut |r: &Record| {
        instants.push(r.at);
        if r.kind == RecordKind::Sent {
            want.push((
                r.contact.clone(),
                r.step.clone().unwrap_or_default(),
                r.at.to_rfc3339(),
            ));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    want.sort();

    let mut rt = Runtime::new(store("parity"));
    import(&mut rt, &contacts, start - TimeDelta::days(1));
    let id = activate(&mut rt, &yaml, start - TimeDelta::days(1));
    play(&mut rt, &id, &events, (start, end), &instants);
    assert!(!want.is_empty());
    assert_eq!(sends(rt.store()), want);
}

/// `at: best` on DynamoDB: the example's follow-ups go at the hours `simulate` picks, from
/// the opens and clicks recorded before the start (read with one Query per contact).
#[test]
fn the_aws_path_picks_the_best_hour_simulate_picks() {
    if crate::support::offline() {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let read = |f: &str| {
        std::fs::read_to_string(format!("{root}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let (yaml, contacts, events) = (
        read("best-time.yaml"),
        read("contacts.jsonl"),
        read("best-time-events.jsonl"),
    );
    let start = at("2026-12-01T09:00:00Z");
    // Every follow-up is sent by 2026-12-02T18:00Z (each tick reads the minutes since the
    // last one: a shorter play is a faster test).
    let until: IsoDuration = "PT34H".parse().unwrap_or_else(|e| panic!("{e}"));
    let end = until.add_to(start, chrono_tz::UTC);
    let events = script::events_from_json_lines(&events).unwrap_or_else(|e| panic!("{e:?}"));

    let (scenario, _) = validate::parse(&yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(scenario, &yaml, SourceFormat::Yaml, start, until);
    sim.contacts = script::contacts_from_json_lines(&contacts).unwrap_or_else(|e| panic!("{e:?}"));
    sim.events = events.clone();
    let mut want = Vec::new();
    let mut instants = Vec::new();
    sim.run(&mut |r: &Record| {
        instants.push(r.at);
        if r.kind == RecordKind::Sent {
            want.push((
                r.contact.clone(),
                r.step.clone().unwrap_or_default(),
                r.at.to_rfc3339(),
            ));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    want.sort();
    // The follow-ups fall at three different hours: the best ones and default_at.
    let hours: std::collections::BTreeSet<&str> = want
        .iter()
        .filter(|(_, step, _)| step == "follow-up")
        .map(|(_, _, t)| &t[11..16])
        .collect();
    assert_eq!(hours.len(), 3, "{want:?}");

    let mut rt = Runtime::new(store("best-hour"));
    import(&mut rt, &contacts, start - TimeDelta::days(1));
    let id = activate(&mut rt, &yaml, start - TimeDelta::days(1));
    let mut script = Script::new(events);
    script
        .record_past(&mut rt, &id, start)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.launch(
        LaunchDetail {
            scenario: id.clone(),
            contacts: None,
        },
        start,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Play::new(&id, start, end)
        .run(
            &mut rt,
            script,
            &mut Stepping {
                now: start,
                instants: &instants,
            },
            &mut Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(rt.store()), want);
}

const TRIGGERED: &str = "id: on-purchase\nlaunch: {type: trigger, event: purchase}\nonce_per: P7D\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: thanks, send: m, next: wait}\n  - {id: wait, delay: {after: P1D}, next: done}\n  - {id: done, end: success}\n";

#[test]
fn concurrent_triggers_enter_once_and_the_rest_are_skipped() {
    if crate::support::offline() {
        return;
    }
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
    // The four posts are the same event (same contact, name and instant): a loser that reads
    // after the winner's input key is written is a duplicate and journals nothing, one that
    // reads before is skipped. Which happens is timing; never more than the three losers.
    assert!(skipped.len() <= 3, "{skipped:?}");
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

/// A contact's latest enrollment in a scenario is kept in its entry item (one put enters it
/// and writes its first transition); a later entry moves the earlier enrollment to its own
/// item first. Both read back whole, by id and as the running one.
#[test]
fn the_latest_enrollment_lives_in_its_entry_item_and_an_earlier_one_in_its_own() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    use relance_core::ports::EnrollmentStore;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("entryitem"));
    let table = rt.store().config().state_table.clone();
    import(&mut rt, "{\"id\": \"a:1\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, TRIGGERED, t0);
    let purchase = |rt: &mut Runtime<DynamoStore>, when| purchase_by(rt, "a:1", when);
    let item = |pk: String, sk: String| stored_item(&table, pk, sk);
    let first = keys::enrollment_id("on-purchase", "a:1", 1);
    let second = keys::enrollment_id("on-purchase", "a:1", 2);
    let entry_item = || item(keys::contact("a:1"), keys::entry("on-purchase"));
    let own_item = |id: &str| item(keys::enrollment(id), keys::ENROLLMENT_STATE.into());
    let running = |entry: &Option<_>| {
        entry
            .as_ref()
            .and_then(|i: &std::collections::HashMap<String, AttributeValue>| i.get("running"))
            .and_then(|v| v.as_s().ok())
            .cloned()
    };

    purchase(&mut rt, t0);
    let entry = entry_item();
    assert_eq!(running(&entry).as_deref(), Some(first.as_str()));
    assert!(entry.as_ref().is_some_and(|i| i.contains_key("doc")));
    assert!(own_item(&first).is_none(), "no item of its own yet");
    // Its timer fires: the transition goes to the entry item too.
    rt.tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(own_item(&first).is_none());
    let mut store = rt.store().clone();
    let (ended, _) = store
        .enrollment(&first)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no {first}"));
    assert!(!ended.is_running());

    // Entered again after once_per: the first enrollment moves to its own item, whole.
    purchase(&mut rt, t0 + TimeDelta::days(8));
    assert_eq!(running(&entry_item()).as_deref(), Some(second.as_str()));
    assert!(own_item(&first).is_some_and(|i| i.contains_key("doc")));
    assert!(own_item(&second).is_none());
    let mut store = rt.store().clone();
    let (moved, _) = store
        .enrollment(&first)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no {first}"));
    assert_eq!(moved, ended, "moved as it was");
    let (latest, _) = store
        .running_enrollment("on-purchase", "a:1")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not running"));
    assert_eq!(latest.id, second);
    let mark = store
        .entry_mark("on-purchase", "a:1")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no mark"));
    assert_eq!(mark.entries, 2);
    assert_eq!(sends(rt.store()).len(), 2);
    let counts = rt.journal("on-purchase").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.entered, 2);
}

/// A contact's entry items hold at most `MAX_ENTRY_ENROLLMENTS` enrollments (its partition is
/// read at every step): the next scenario it enters keeps its enrollment in its own item, and
/// a re-entry reuses its scenario's entry item.
#[test]
fn a_contacts_entry_items_hold_a_bounded_number_of_enrollments() {
    use relance_aws::dynamodb::MAX_ENTRY_ENROLLMENTS;
    use relance_aws::keys;
    use relance_core::ports::EnrollmentStore;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("entrybound"));
    let table = rt.store().config().state_table.clone();
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    let scenarios: Vec<String> = (1..=MAX_ENTRY_ENROLLMENTS + 1)
        .map(|i| format!("s{i}"))
        .collect();
    for id in &scenarios {
        let yaml = format!(
            "id: {id}\nlaunch: {{type: manual}}\nmessages:\n  m: {{channel: email, subject: s, text: x}}\nsteps:\n  - {{id: first, send: m, next: done}}\n  - {{id: done, end: success}}\n"
        );
        activate(&mut rt, &yaml, t0);
        rt.launch(
            LaunchDetail {
                scenario: id.clone(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let item = |pk: String, sk: String| stored_item(&table, pk, sk);
    let mut store = rt.store().clone();
    for (i, id) in scenarios.iter().enumerate() {
        let in_entry = item(keys::contact("a"), keys::entry(id))
            .unwrap_or_else(|| panic!("no entry of {id}"))
            .contains_key("doc");
        let enrollment = keys::enrollment_id(id, "a", 1);
        let own = item(keys::enrollment(&enrollment), keys::ENROLLMENT_STATE.into()).is_some();
        let held = i < MAX_ENTRY_ENROLLMENTS;
        assert_eq!((in_entry, own), (held, !held), "{id}");
        let (e, _) = store
            .enrollment(&enrollment)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no {enrollment}"));
        assert!(!e.is_running(), "{enrollment} ended");
    }
    // Entering the first scenario again reuses its entry item (the one before moves out).
    rt.launch(
        LaunchDetail {
            scenario: "s1".into(),
            contacts: None,
        },
        t0 + TimeDelta::days(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let entry = item(keys::contact("a"), keys::entry("s1")).unwrap_or_else(|| panic!("no entry"));
    assert!(entry.contains_key("doc"));
    assert_eq!(
        entry.get("running").and_then(|v| v.as_s().ok()).cloned(),
        Some(keys::enrollment_id("s1", "a", 2))
    );
    assert!(
        item(
            keys::enrollment(&keys::enrollment_id("s1", "a", 1)),
            keys::ENROLLMENT_STATE.into()
        )
        .is_some()
    );
    assert_eq!(sends(rt.store()).len(), MAX_ENTRY_ENROLLMENTS + 2);
}

/// While the layout's delay runs (a table this build did not create, for an hour after its
/// first entry: earlier builds may still run beside it), entries keep their enrollment in
/// its own item, as earlier builds did; after it, new entries keep it in the entry item, and
/// an enrollment already in its own item stays there.
#[test]
fn while_the_layout_delay_runs_enrollments_keep_their_own_item() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    use relance_core::ports::EnrollmentStore;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let first_store = store("layoutdelay");
    let table = first_store.config().state_table.clone();
    // As an upgraded table: the delay starts at this build's first entry, at t0.
    emu.runtime
        .block_on(
            emu.dynamo
                .delete_item()
                .table_name(&table)
                .key(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                .key(keys::SK, AttributeValue::S(keys::ENTRY_ENROLLMENTS.into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    // A store that has not read the setting yet (the same tables).
    let mut rt = Runtime::new(unit_timed("layoutdelay"));
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    activate(&mut rt, TRIGGERED, t0);
    let purchase = |rt: &mut Runtime<DynamoStore>, when| purchase_by(rt, "a", when);
    let item = |pk: String, sk: String| stored_item(&table, pk, sk);
    let first = keys::enrollment_id("on-purchase", "a", 1);
    let second = keys::enrollment_id("on-purchase", "a", 2);
    purchase(&mut rt, t0);
    let from = item(keys::SETTINGS.into(), keys::ENTRY_ENROLLMENTS.into())
        .and_then(|i| i.get("from").and_then(|v| v.as_n().ok()).cloned())
        .and_then(|n| n.parse::<i64>().ok());
    assert_eq!(from, Some((t0 + TimeDelta::hours(1)).timestamp()));
    let entry = item(keys::contact("a"), keys::entry("on-purchase"))
        .unwrap_or_else(|| panic!("no entry mark"));
    assert!(!entry.contains_key("doc"), "a bare mark during the delay");
    assert!(item(keys::enrollment(&first), keys::ENROLLMENT_STATE.into()).is_some());
    // Its transition after the delay stays in its own item.
    rt.tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut store = rt.store().clone();
    let (ended, _) = store
        .enrollment(&first)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no {first}"));
    assert!(!ended.is_running());
    // The next entry, after the delay, keeps its enrollment in the entry item.
    purchase(&mut rt, t0 + TimeDelta::days(8));
    let entry =
        item(keys::contact("a"), keys::entry("on-purchase")).unwrap_or_else(|| panic!("no entry"));
    assert!(entry.contains_key("doc"));
    assert!(item(keys::enrollment(&second), keys::ENROLLMENT_STATE.into()).is_none());
    let mut store = rt.store().clone();
    let (running, _) = store
        .running_enrollment("on-purchase", "a")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not running"));
    assert_eq!(running.id, second);
    let (still, _) = store
        .enrollment(&first)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no {first}"));
    assert_eq!(still, ended);
    assert_eq!(sends(rt.store()).len(), 2);
}

/// An entry whose first transition changes the contact's consent (an `update_profile` opting
/// it out) writes its entry before it appends to the consent log, so a concurrent entry that
/// wins makes it fail before the append; its enrollment still goes to the entry item.
#[test]
fn an_entry_that_changes_consent_writes_its_mark_before_the_log() {
    use relance_aws::keys;
    use relance_core::ports::EnrollmentStore;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let yaml = "id: optout\nlaunch: {type: manual}\nsteps:\n  - {id: out, action: {update_profile: {field: subscriptions.offers, value: false}}, next: done}\n  - {id: done, end: success}\n";
    let mut rt = Runtime::new(store("consententry"));
    let table = rt.store().config().state_table.clone();
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\", \"subscriptions\": {\"offers\": true}}\n",
        t0,
    );
    activate(&mut rt, yaml, t0);
    let report = rt
        .launch(
            LaunchDetail {
                scenario: "optout".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.entered, 1);
    let entry = stored_item(&table, keys::contact("a"), keys::entry("optout"))
        .unwrap_or_else(|| panic!("no entry item"));
    assert!(entry.contains_key("doc"), "{entry:?}");
    let mut store = rt.store().clone();
    let (e, _) = store
        .enrollment(&keys::enrollment_id("optout", "a", 1))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no enrollment"));
    assert!(!e.is_running());
    let trail = rt.consent_trail("a").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        trail
            .iter()
            .filter(|c| c.subject == "offers" && c.source == "scenario")
            .count(),
        1,
        "{trail:?}"
    );
}

#[test]
fn a_duplicated_timer_and_a_replayed_engagement_change_nothing() {
    if crate::support::offline() {
        return;
    }
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
    if crate::support::offline() {
        return;
    }
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

/// A contact is never overwritten by a write computed from an older read of it: a unit's put
/// is conditional on what it read (a concurrent opt-out makes it fail, to be redone from a
/// fresh read), and a transition's contact changes are replayed onto the contact as it is
/// when they are applied (here after a crash at the commit point, with an opt-out and a
/// profile update written in between): its fields land, the other writer's stay, and its
/// stale copy of the subscriptions does not undo the opt-out.
#[test]
fn hostile_a_contact_is_never_overwritten_from_an_older_read() {
    use relance_core::ports::{ContactStore, EnrollmentStore, Store};
    use relance_core::wire::ContactDetail;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("stalecontact"));
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\", \"name\": \"A\", \"tags\": [\"vip\"], \"subscriptions\": {\"offers\": true, \"news\": true}}\n",
        t0,
    );
    let profile = |rt: &mut Runtime<DynamoStore>| stored_contact(rt, "a");
    let update = |fields: serde_json::Value| ContactDetail {
        action: None,
        contact: serde_json::from_value(fields).unwrap_or_else(|e| panic!("{e}")),
        at: None,
    };

    // A unit read the contact; an opt-out was written since: its put is refused, and so is
    // it again after the unit read the contact anew (what it computed came from the first).
    let mut stale = rt.store().clone();
    let (refused, again) = stale
        .atomically(|s| {
            let mut c = s.contact("a")?.unwrap_or_else(|| panic!("no contact"));
            rt.upsert_contact(
                update(serde_json::json!({"id": "a", "subscriptions": {"news": false}})),
                t0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            c.set_field("name", "From an older read".into());
            let refused = s.put_contact(&c, t0);
            let reread = s.contact("a")?.unwrap_or_else(|| panic!("no contact"));
            assert_eq!(reread.subscription("news"), Some(false));
            Ok::<_, relance_aws::error::StoreError>((refused, s.put_contact(&c, t0)))
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    for put in [&refused, &again] {
        assert!(
            matches!(put, Err(relance_aws::error::StoreError::Conflict(_))),
            "{put:?}"
        );
    }
    let now = profile(&mut rt);
    assert_eq!(now.subscription("news"), Some(false));
    assert_eq!(now.fields()["name"], "A");
    // Redone from a fresh read, it lands on the opt-out.
    stale
        .atomically(|s| {
            let mut c = s.contact("a")?.unwrap_or_else(|| panic!("no contact"));
            c.set_field("name", "From a fresh read".into());
            s.put_contact(&c, t0)
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let now = profile(&mut rt);
    assert_eq!(
        (now.subscription("news"), &now.fields()["name"]),
        (Some(false), &serde_json::json!("From a fresh read"))
    );

    // A transition that sets the plan and opts out of offers stops at its commit point; the
    // contact opts out of news again (it had been re-subscribed) and is renamed before its
    // effects are applied.
    resubscribe(&mut rt, "a", "news", t0);
    assert_eq!(profile(&mut rt).subscription("news"), Some(true));
    let yaml = "id: plan\nlaunch: {type: manual}\nsteps:\n  - {id: tag, action: {tag: {add: [upgraded]}}, next: set}\n  - {id: set, action: {update_profile: {field: plan, value: pro}}, next: out}\n  - {id: out, action: {update_profile: {field: subscriptions.offers, value: false}}, next: later}\n  - {id: later, delay: {after: P1D}, action: {tag: {add: [later]}}, next: done}\n  - {id: done, end: success}\n";
    activate(&mut rt, yaml, t0);
    let launch = || LaunchDetail {
        scenario: "plan".into(),
        contacts: None,
    };
    rt.store().crash_after_next_commit();
    assert!(rt.launch(launch(), t0).is_err());
    rt.upsert_contact(
        update(
            serde_json::json!({"id": "a", "name": "B", "tags": ["vip", "beta"], "subscriptions": {"news": false}}),
        ),
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The next read of the enrollment (here in the profile update's own unit, after its put)
    // applied its effects.
    let report = rt.launch(launch(), t0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.skipped.get("already_running"), Some(&1));
    let now = profile(&mut rt);
    assert_eq!(now.fields()["plan"], "pro", "{now:?}");
    assert_eq!(now.fields()["name"], "B", "{now:?}");
    assert_eq!(now.subscription("offers"), Some(false), "{now:?}");
    assert_eq!(now.subscription("news"), Some(false), "{now:?}");
    assert_eq!(
        now.fields()["tags"],
        serde_json::json!(["vip", "beta", "upgraded"]),
        "the step's tag added to the list as it is now"
    );

    // A unit that read a contact, then read an enrollment whose transition a crash left
    // pending (its repair writes the contact): the contact the unit computed from its read is
    // refused (the repair's fields would be lost), and the unit run again keeps both.
    import(
        &mut rt,
        "{\"id\": \"b\", \"email\": \"b@x.io\", \"subscriptions\": {\"offers\": true}}\n",
        t0,
    );
    rt.store().crash_after_next_commit();
    assert!(
        rt.launch(
            LaunchDetail {
                scenario: "plan".into(),
                contacts: Some(vec!["b".into()])
            },
            t0
        )
        .is_err()
    );
    let mut store = rt.store().clone();
    let rename = |s: &mut DynamoStore| {
        let mut c = s.contact("b")?.unwrap_or_else(|| panic!("no contact"));
        s.enrollment(&relance_aws::keys::enrollment_id("plan", "b", 1))?;
        c.set_field("name", "Bea".into());
        s.put_contact(&c, t0)
    };
    let first = store.atomically(rename).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(first, Err(relance_aws::error::StoreError::Conflict(_))),
        "{first:?}"
    );
    store
        .atomically(rename)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = store
        .contact("b")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no contact"));
    assert_eq!(
        (
            &b.fields()["plan"],
            &b.fields()["name"],
            b.subscription("offers")
        ),
        (
            &serde_json::json!("pro"),
            &serde_json::json!("Bea"),
            Some(false)
        ),
        "{b:?}"
    );
}

/// A contact changed by another writer between a unit's read and its put (an opt-out written
/// at that very moment): the put is refused and the work is done again from a fresh read, in
/// the trigger function (the whole event again), in an import (the row again, inside the
/// file's unit) and in a transition (its changes replayed again): every change lands.
#[test]
fn hostile_a_contact_changed_between_a_read_and_its_put_is_merged_again() {
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("racedcontact"));
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\", \"subscriptions\": {\"news\": true, \"offers\": true}}\n",
        t0,
    );
    // The other writer: opts `a` out of `kind`, through a copy of the store.
    let opt_out_then = |rt: &mut Runtime<DynamoStore>, kind: &'static str| {
        change_before_next_put(rt, "a", t0, move |_, c| {
            c.set_field(&format!("subscriptions.{kind}"), false.into());
            Ok(())
        });
    };
    let profile = |rt: &mut Runtime<DynamoStore>| stored_contact(rt, "a");

    // The trigger function: a profile update.
    opt_out_then(&mut rt, "news");
    let event = bus_event(
        "relance.contact",
        serde_json::json!({"contact": {"id": "a", "city": "Lyon"}}),
    );
    relance_aws::handlers::trigger(&mut rt, None, &event, t0).unwrap_or_else(|e| panic!("{e}"));
    let a = profile(&mut rt);
    assert_eq!(
        (&a.fields()["city"], a.subscription("news")),
        (&serde_json::json!("Lyon"), Some(false)),
        "{a:?}"
    );

    // An import: the row of `a` merged again; `b`, added, enters the after_import scenario.
    activate(
        &mut rt,
        "id: imported\nlaunch: {type: after_import, contacts: added}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n",
        t0,
    );
    opt_out_then(&mut rt, "offers");
    import(
        &mut rt,
        "{\"id\": \"a\", \"plan\": \"pro\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    let a = profile(&mut rt);
    assert_eq!(
        (
            &a.fields()["plan"],
            &a.fields()["city"],
            a.subscription("offers")
        ),
        (
            &serde_json::json!("pro"),
            &serde_json::json!("Lyon"),
            Some(false)
        ),
        "{a:?}"
    );
    let entered = rt
        .journal("imported")
        .unwrap_or_else(|e| panic!("{e}"))
        .entered;
    assert_eq!(entered, 1, "b, added, entered once");

    // A transition: a tag step, its changes replayed onto the contact the other writer changed.
    resubscribe(&mut rt, "a", "news", t0);
    activate(
        &mut rt,
        "id: tagged\nlaunch: {type: manual}\nsteps:\n  - {id: tag, action: {tag: {add: [tagged]}}, next: done}\n  - {id: done, end: success}\n",
        t0,
    );
    opt_out_then(&mut rt, "news");
    let report = rt
        .launch(
            LaunchDetail {
                scenario: "tagged".into(),
                contacts: Some(vec!["a".into()]),
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.entered, 1);
    let a = profile(&mut rt);
    assert_eq!(
        (
            &a.fields()["tags"],
            a.subscription("news"),
            &a.fields()["plan"]
        ),
        (
            &serde_json::json!(["tagged"]),
            Some(false),
            &serde_json::json!("pro")
        ),
        "{a:?}"
    );

    // One event moves three enrollments of the contact in one unit: two steps tag it, a third
    // sends it a `news` email; the other writer renames it and opts it out of news during the
    // first one's put. The first merges onto that; the next ones start from the contact as
    // stored after the merge (their changes taken from the contact they were computed from):
    // the rename stays, and the email is not sent to the contact who opted out.
    resubscribe(&mut rt, "a", "news", t0);
    activate(
        &mut rt,
        "id: w3\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, type: news, subject: s, text: x}\nsteps:\n  - id: wait\n    wait_for: {event: purchase, timeout: P1D}\n    on_event: mail\n    on_timeout: done\n  - {id: mail, send: m, next: done}\n  - {id: done, end: success}\n",
        t0,
    );
    rt.launch(
        LaunchDetail {
            scenario: "w3".into(),
            contacts: Some(vec!["a".into()]),
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for id in ["w1", "w2"] {
        activate(
            &mut rt,
            &format!(
                "id: {id}\nlaunch: {{type: manual}}\nsteps:\n  - id: wait\n    wait_for: {{event: purchase, timeout: P1D}}\n    on_event: tag\n    on_timeout: done\n  - {{id: tag, action: {{tag: {{add: [{id}]}}}}, next: done}}\n  - {{id: done, end: success}}\n"
            ),
            t0,
        );
        rt.launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: Some(vec!["a".into()]),
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    change_before_next_put(&mut rt, "a", t0, |_, c| {
        c.set_field("name", "Renamed".into());
        c.set_field("subscriptions.news", false.into());
        Ok(())
    });
    let purchase = bus_event(
        "relance.activity",
        serde_json::json!({"contact": "a", "event": "purchase", "at": "2026-12-01T09:01:00Z"}),
    );
    relance_aws::handlers::trigger(&mut rt, None, &purchase, t0 + TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let a = profile(&mut rt);
    assert_eq!(
        (&a.fields()["tags"], &a.fields()["name"]),
        (
            &serde_json::json!(["tagged", "w1", "w2"]),
            &serde_json::json!("Renamed")
        ),
        "{a:?}"
    );
    for id in ["w1", "w2", "w3"] {
        let counts = rt.journal(id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(counts.ends.get("success"), Some(&1), "{id}: {counts:?}");
    }
    assert!(
        sends(rt.store()).iter().all(|(_, step, _)| step != "mail"),
        "{:?}",
        sends(rt.store())
    );
}

/// Contact `a` stored opted out of `news` before the log, a re-subscription by another writer
/// at `point`, then an import row opting `a` in: whatever the interleaving, no opt-out is
/// restated over the re-subscription and the trail ends on what the contact holds. Returns the
/// runtime (its store named `name`) and the instant it started at; none without the emulator.
fn resubscribed_at(name: &str, point: Injected) -> Option<(Runtime<DynamoStore>, DateTime<Utc>)> {
    use relance_core::consent::source;
    use relance_core::ports::ConsentStore;
    if crate::support::offline() {
        return None;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store(name));
    put_without_log(
        &mut rt,
        serde_json::json!({"id": "a", "email": "a@x.io", "subscriptions": {"news": false}}),
        t0,
    );
    change_contact_at(&mut rt, point, "a", t0, |s, c| {
        let event: relance_core::consent::ConsentEvent = serde_json::from_value(
            serde_json::json!({"contact": "a", "subject": "news", "state": "subscribed",
                "source": "form", "actor": "api", "at": "2026-12-01T09:00:30Z"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        s.append_consent(&event)?;
        c.set_field("subscriptions.news", true.into());
        Ok(())
    });
    import(
        &mut rt,
        "{\"id\": \"a\", \"subscriptions\": {\"news\": true}}\n",
        t0 + TimeDelta::minutes(1),
    );
    let trail = rt.consent_trail("a").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        trail.iter().all(|e| e.source != source::RESTATED),
        "no restated opt-out over the re-subscription: {trail:?}"
    );
    let state = rt
        .store()
        .consent_state("a")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.subscriptions.get("news"), Some(&true), "{trail:?}");
    assert_eq!(
        stored_contact(&mut rt, "a").subscription("news"),
        Some(true)
    );
    Some((rt, t0))
}

/// A contact opted out in its fields whose trail lacks the opt-out (stored before the log):
/// an import row opting it in is kept out and the opt-out restated, but only once the contact
/// is confirmed as read. Here an explicit re-subscription lands first: the confirmation is
/// refused, the row merged again finds the contact subscribed, and nothing is restated; the
/// trail ends on the re-subscription the contact holds.
#[test]
fn hostile_a_restated_opt_out_is_confirmed_against_the_contact_first() {
    use relance_core::consent::{ConsentState, source};
    let Some((mut rt, t0)) = resubscribed_at("restated", Injected::ProfilePut) else {
        return;
    };

    // With no one writing meanwhile, the next kept opt-in restates nothing either (the trail
    // agrees); a second legacy contact gets its opt-out restated once.
    put_without_log(
        &mut rt,
        serde_json::json!({"id": "b", "email": "b@x.io", "subscriptions": {"news": false}}),
        t0,
    );
    for minutes in [2, 3] {
        import(
            &mut rt,
            "{\"id\": \"b\", \"subscriptions\": {\"news\": true}}\n",
            t0 + TimeDelta::minutes(minutes),
        );
    }
    let trail = rt.consent_trail("b").unwrap_or_else(|e| panic!("{e}"));
    let restated: Vec<_> = trail
        .iter()
        .filter(|e| e.source == source::RESTATED)
        .collect();
    assert_eq!(restated.len(), 1, "{trail:?}");
    assert_eq!(restated[0].state, ConsentState::Unsubscribed);
}

/// A restatement of an opt-out is written only while the contact still holds it: a
/// re-subscription landing after the unit confirmed the contact and before the restatement is
/// appended cancels the append (one conditional TransactWriteItems), the import row is merged
/// again from the contact as it now is, and the trail ends on what the contact holds.
#[test]
fn hostile_a_restatement_lands_only_while_the_contact_holds_it() {
    resubscribed_at("restated-race", Injected::RestatedAppend);
}

/// A new version of a scenario moves only its latest version and keeps the status and the
/// active version (the update names no other attribute, so a pause made between the version
/// number's read and the update also stays; that interleaving itself is not injected here).
#[test]
fn a_new_scenario_version_moves_only_the_latest_version() {
    use relance_core::ports::ScenarioStore;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut store = store("versions");
    let text = "id: v\nlaunch: {type: manual}\nsteps:\n  - {id: done, end: success}\n";
    let put = |store: &mut DynamoStore| {
        store
            .put_version("v", SourceFormat::Yaml, text, t0)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(put(&mut store), 1);
    let entry = |store: &mut DynamoStore| {
        let e = store
            .scenario("v")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no scenario"));
        (e.status, e.latest_version, e.active_version)
    };
    assert_eq!(entry(&mut store), (Status::Draft, 1, None));
    store
        .set_status("v", Status::Paused, Some(1), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put(&mut store), 2);
    assert_eq!(entry(&mut store), (Status::Paused, 2, Some(1)));
}

#[test]
fn timers_spread_over_shards_fire_in_due_order_and_inactivity_triggers_work() {
    if crate::support::offline() {
        return;
    }
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

/// Issue 11, finding 5 on DynamoDB: after a one-click unsubscribe, neither a contact event nor
/// an import row re-subscribes; an update clearing `suppressed` leaves a complaint in place;
/// the explicit consent call (an EventBridge `relance.consent` event) re-subscribes with a
/// source and lifts a suppression only with a reason; the trail reads back in order.
#[test]
fn hostile_opt_outs_stand_on_dynamodb() {
    if crate::support::offline() {
        return;
    }
    use relance_core::consent::ConsentState;
    use relance_core::unsubscribe::UnsubscribeClaim;
    use relance_core::wire::ContactDetail;
    let newsletter = |id: &str| {
        format!(
            "id: {id}\ntimezone: UTC\nlaunch: {{type: manual}}\nmessages:\n  m: {{channel: email, type: newsletter, subject: News, text: x}}\nsteps:\n  - {{id: first, send: m, next: done}}\n  - {{id: done, end: success}}\n"
        )
    };
    let t0 = at("2026-03-02T10:00:00Z");
    let mut rt = Runtime::new(store("consent"));
    import(&mut rt, r#"{"id": "ana", "email": "ana@example.org"}"#, t0);
    let sent_to_ana = |rt: &mut Runtime<DynamoStore>, id: &str, now| {
        let id = activate(rt, &newsletter(id), now);
        let detail = LaunchDetail {
            scenario: id.clone(),
            contacts: Some(vec!["ana".into()]),
        };
        rt.launch(detail, now).unwrap_or_else(|e| panic!("{e}"));
        sends(rt.store())
            .iter()
            .filter(|(c, _, _)| c == "ana")
            .count()
    };
    assert_eq!(sent_to_ana(&mut rt, "n1", t0), 1);
    let claim = UnsubscribeClaim {
        contact: "ana".into(),
        communication_type: "newsletter".into(),
        scenario: "n1".into(),
        step: "first".into(),
    };
    rt.unsubscribe(&claim, t0 + TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));

    // A contact event and an import row saying subscribed: kept.
    let mut contact = serde_json::Map::new();
    contact.insert("id".into(), "ana".into());
    contact.insert(
        "subscriptions".into(),
        serde_json::json!({"newsletter": true}),
    );
    rt.upsert_contact(
        ContactDetail {
            contact,
            action: None,
            at: None,
        },
        t0 + TimeDelta::minutes(2),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let row: Vec<Contact> = script::contacts_from_json_lines(
        r#"{"id": "ana", "subscriptions": {"newsletter": "subscribed"}}"#,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let imported = rt
        .import(&row, t0 + TimeDelta::minutes(3), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(imported[0].consent_kept, 1);
    assert_eq!(sent_to_ana(&mut rt, "n2", t0 + TimeDelta::minutes(4)), 1);

    // A complaint suppresses the address; an update clearing the list does not lift it.
    let complaint = EngagementDetail {
        contact: "ana".into(),
        scenario: "n1".into(),
        step: "first".into(),
        kind: EngagementKind::Complained,
        url: None,
        link_tags: Vec::new(),
        at: None,
        idempotency_key: None,
    };
    rt.engagement(complaint, t0 + TimeDelta::minutes(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let cleared: Vec<Contact> =
        script::contacts_from_json_lines(r#"{"id": "ana", "suppressed": []}"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
    rt.import(&cleared, t0 + TimeDelta::minutes(6), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    use relance_core::ports::ContactStore;
    let ana = rt
        .store()
        .contact("ana")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no ana"));
    assert!(ana.is_suppressed("ana@example.org"));

    // The explicit call, as the trigger function receives it: without a reason it is bad
    // input and changes nothing; with one it lifts the suppression and re-subscribes.
    let event = |detail: serde_json::Value| -> aws_lambda_events::event::eventbridge::EventBridgeEvent<serde_json::Value> {
        serde_json::from_value(serde_json::json!({"detail-type": "relance.consent", "source": "crm", "time": t0, "detail": detail}))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let no_reason = event(
        serde_json::json!({"contact": "ana", "unsuppress": ["ana@example.org"],
        "subscriptions": {"newsletter": true}, "source": "support"}),
    );
    let refused =
        relance_aws::handlers::trigger(&mut rt, None, &no_reason, t0 + TimeDelta::minutes(7));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("reason")),
        "{refused:?}"
    );
    assert_eq!(sent_to_ana(&mut rt, "n3", t0 + TimeDelta::minutes(8)), 1);
    let with_reason = event(
        serde_json::json!({"contact": "ana", "unsuppress": ["ana@example.org"],
        "subscriptions": {"newsletter": true}, "source": "support", "reason": "ticket 42"}),
    );
    relance_aws::handlers::trigger(&mut rt, None, &with_reason, t0 + TimeDelta::minutes(9))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent_to_ana(&mut rt, "n4", t0 + TimeDelta::minutes(10)), 2);

    let trail = rt.consent_trail("ana").unwrap_or_else(|e| panic!("{e}"));
    let mut summary: Vec<(ConsentState, &str, &str, bool)> = trail
        .iter()
        .map(|e| (e.state, e.source.as_str(), e.actor.as_str(), e.kept))
        .collect();
    // Events of one instant come back in key order, not in the order they were appended.
    if summary.len() == 7 && summary[5].0 == ConsentState::Lifted {
        summary.swap(5, 6);
    }
    assert_eq!(
        summary,
        vec![
            (
                ConsentState::Unsubscribed,
                "unsubscribe_link",
                "contact",
                false
            ),
            (ConsentState::Subscribed, "api", "system", true),
            (ConsentState::Subscribed, "import", "system", true),
            (ConsentState::Suppressed, "complaint", "provider", false),
            (ConsentState::Lifted, "import", "system", true),
            (
                ConsentState::Subscribed,
                "support",
                "eventbridge:crm",
                false
            ),
            (ConsentState::Lifted, "support", "eventbridge:crm", false),
        ],
        "{trail:#?}"
    );
    assert!(
        trail[5..]
            .iter()
            .all(|e| e.reason.as_deref() == Some("ticket 42"))
    );
}

/// Issue 11, finding 4: a store that cannot hand a send to its channel refuses the transition
/// before its commit point, naming the queue variable; nothing is journaled `sent`.
#[test]
fn hostile_a_store_without_its_channel_queue_never_journals_sent() {
    if crate::support::offline() {
        return;
    }
    use relance_core::ports::JournalStore;
    const TWO_CHANNELS: &str = "id: two-channels\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  t: {channel: sms, text: x}\nsteps:\n  - {id: mail, send: m, next: text}\n  - {id: text, send: t, next: done}\n  - {id: done, end: success}\n";
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let launch = |rt: &mut Runtime<DynamoStore>| {
        rt.launch(
            LaunchDetail {
                scenario: "two-channels".into(),
                contacts: Some(vec!["ana".into()]),
            },
            t0,
        )
    };
    let contacts = r#"{"id": "ana", "email": "ana@example.com", "phone": "+33612345678"}"#;

    // No queues at all (what `relance launch --aws` built before).
    let config = AwsConfig::with_prefix(&format!("t{}-noqueue-", std::process::id()), 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let mut rt = Runtime::new(DynamoStore::new(
        emu.dynamo.clone(),
        config.clone(),
        bridge.clone(),
    ));
    import(&mut rt, contacts, t0);
    activate(&mut rt, TWO_CHANNELS, t0);
    let error = launch(&mut rt)
        .err()
        .unwrap_or_else(|| panic!("a send with no queue was committed"))
        .to_string();
    assert!(error.contains("RELANCE_EMAIL_QUEUE_URL"), "{error}");
    let records = rt
        .store()
        .records("two-channels", None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        records.iter().all(|r| r.kind != RecordKind::Sent),
        "{records:?}"
    );

    // The email queue but not the SMS one: the email goes, the SMS step is refused.
    let mut config = AwsConfig::with_prefix(&format!("t{}-nosms-", std::process::id()), 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let email_queue = crate::support::create_queue(&format!("t{}-nosms-email", std::process::id()));
    config.queues.email = Some(email_queue.clone());
    let queues = relance_aws::sqs::SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let mut rt = Runtime::new(
        DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge).with_dispatch(
            relance_aws::dispatch::AwsDispatch::new(queues, config.queues),
        ),
    );
    import(&mut rt, contacts, t0);
    activate(&mut rt, TWO_CHANNELS, t0);
    let error = launch(&mut rt)
        .err()
        .unwrap_or_else(|| panic!("an SMS with no queue was committed"))
        .to_string();
    assert!(error.contains("RELANCE_SMS_QUEUE_URL"), "{error}");
    let queued = crate::support::drain(&email_queue);
    let sent: Vec<_> = rt
        .store()
        .records("two-channels", None)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|r| r.kind == RecordKind::Sent)
        .collect();
    // Every `sent` in the journal is a message on a queue.
    assert_eq!(sent.len(), queued.len(), "{sent:?} vs {queued:?}");
    assert!(
        sent.iter()
            .all(|r| r.channel.map(|c| c.as_str()) == Some("email"))
    );
}

/// Issue 11, finding 2, on DynamoDB: timer items that do not read (the `+262143-…` text
/// that once sorted first and failed to parse, a number past 9999-12-31, a missing step) and
/// a launch whose `next_at` is garbage are dead-lettered one by one, while the good timers
/// due with them fire in the same tick; a timer written by an earlier build (RFC 3339 sort
/// key and `due`) still fires.
#[test]
fn hostile_unreadable_timer_items_are_dead_lettered_alone() {
    if crate::support::offline() {
        return;
    }
    use aws_sdk_dynamodb::types::AttributeValue;
    let yaml = "id: dl\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("hostile"));
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
    let emu = emulator();
    let config = rt.store().config().clone();
    let put = |table: &str, item: Vec<(&str, AttributeValue)>| {
        let mut req = emu.dynamo.put_item().table_name(table);
        for (k, v) in item {
            req = req.item(k, v);
        }
        emu.runtime
            .block_on(req.send())
            .unwrap_or_else(|e| panic!("{e:?}"));
    };
    let s = |v: &str| AttributeValue::S(v.to_string());
    let enrollment = |contact: &str| format!("dl:{contact}:1");
    // b's timer as an earlier build wrote it, replacing this build's item.
    let items = emu
        .runtime
        .block_on(emu.dynamo.scan().table_name(&config.timers_table).send())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .items
        .unwrap_or_default();
    let b_item = items
        .iter()
        .find(|i| i.get("contact") == Some(&s("b")))
        .unwrap_or_else(|| panic!("no timer for b: {items:#?}"));
    let (b_pk, b_sk) = (b_item["pk"].clone(), b_item["sk"].clone());
    emu.runtime
        .block_on(
            emu.dynamo
                .delete_item()
                .table_name(&config.timers_table)
                .key("pk", b_pk.clone())
                .key("sk", b_sk)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let b_enrollment = b_item["enrollment"]
        .as_s()
        .map(String::as_str)
        .unwrap_or("");
    put(
        &config.timers_table,
        vec![
            ("pk", b_pk.clone()),
            (
                "sk",
                s(&format!("2026-12-01T10:00:00.000000Z#{b_enrollment}#send")),
            ),
            ("kind", s("timer")),
            ("enrollment", s(b_enrollment)),
            ("contact", s("b")),
            ("step", s("send")),
            ("due", s("2026-12-01T10:00:00.000000Z")),
        ],
    );
    let bad = [
        (
            "+262143-12-31T23:59:59.999999Z#x#send",
            s("+262143-12-31T23:59:59.999999Z"),
        ),
        (
            "999999999999999999#x#send",
            AttributeValue::N("99999999999999999999".into()),
        ),
        ("garbage", s("garbage")),
    ];
    for (sk, due) in bad {
        put(
            &config.timers_table,
            vec![
                ("pk", b_pk.clone()),
                ("sk", s(sk)),
                ("kind", s("timer")),
                ("enrollment", s(&enrollment("a"))),
                ("contact", s("a")),
                ("step", s("send")),
                ("due", due),
            ],
        );
    }
    put(
        &config.state_table,
        vec![
            ("pk", s("launch")),
            ("sk", s("dl#Nowhere")),
            ("scenario", s("dl")),
            ("zone", s("Nowhere")),
            ("next_at", s("soon")),
        ],
    );
    rt.tick(t0 + TimeDelta::hours(2))
        .unwrap_or_else(|e| panic!("a bad item stopped the tick: {e}"));
    let sent: Vec<String> = sends(rt.store()).into_iter().map(|(c, _, _)| c).collect();
    assert_eq!(sent, ["a", "b"], "both good timers fired");
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dead.iter().filter(|(k, _, _)| k == "timer").count(),
        3,
        "{dead:#?}"
    );
    assert_eq!(dead.iter().filter(|(k, _, _)| k == "launch").count(), 1);
    assert!(
        dead.iter()
            .all(|(_, _, r)| r.starts_with("unreadable row: ")),
        "{dead:#?}"
    );
    // Gone: the next tick meets none of them again.
    rt.tick(t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rt.store().dead_letters().map(|d| d.len()).ok(), Some(4));
}

/// Issue 11, finding 10: identical engagement and activity with `at` (or the same caller
/// key) are recorded once on DynamoDB too (a conditional put of the key).
#[test]
fn hostile_identical_inputs_are_recorded_once() {
    if crate::support::offline() {
        return;
    }
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
        .history("a", "eng", relance_core::contact::HistoryNeeds::ALL)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.engagement.len(), 2, "{:?}", h.engagement);
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
}

/// A consent log written partly by an earlier build (the hash in the key, no place) reads
/// back in the order appended: the earlier build's event first, then this build's at the
/// same instant, so the later one decides; a redone append of either changes nothing.
#[test]
fn consent_log_keeps_append_order_across_the_old_and_new_key_shapes() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    use relance_core::consent::{ConsentEvent, ConsentState};
    use relance_core::instant;
    use relance_core::ports::ConsentStore;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let mut store = store("consentkeys");
    let t = at("2026-12-01T09:00:00Z");
    let event = |state: ConsentState, source: &str| ConsentEvent {
        contact: "ana".into(),
        subject: "newsletter".into(),
        state,
        source: source.into(),
        actor: "test".into(),
        at: t,
        reason: None,
        kept: false,
    };
    // The earlier build's item: its hash, whatever it is, ends its key.
    let old = event(ConsentState::Unsubscribed, "api");
    let old_hash = keys::hash(&["newsletter", "unsubscribed", "api", "test", "", ""]);
    let item = [
        (keys::PK, AttributeValue::S(keys::contact("ana"))),
        (
            keys::SK,
            AttributeValue::S(format!("{}{old_hash}", keys::consent_instant(t))),
        ),
        ("subject", AttributeValue::S("newsletter".into())),
        ("state", AttributeValue::S("unsubscribed".into())),
        ("source", AttributeValue::S("api".into())),
        ("actor", AttributeValue::S("test".into())),
        ("at", AttributeValue::N(instant::to_micros(t).to_string())),
        ("kept", AttributeValue::Bool(false)),
    ];
    emu.runtime
        .block_on(
            emu.dynamo
                .put_item()
                .table_name(&store.config().state_table)
                .set_item(Some(
                    item.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                ))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let new = event(ConsentState::Subscribed, "form");
    for e in [&new, &old, &new] {
        store.append_consent(e).unwrap_or_else(|e| panic!("{e}"));
    }
    let trail = store.consent_trail("ana").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trail, vec![old, new]);
    let derived = store.consent_state("ana").unwrap_or_else(|e| panic!("{e}"));
    // The later event decides.
    assert_eq!(derived.subscriptions.get("newsletter"), Some(&true));
}

#[test]
fn a_batch_journal_items_land_together_at_the_flush_and_stand_for_their_transitions() {
    if crate::support::offline() {
        return;
    }
    // The enrollments stay running (waiting for the second email), so a repeat launch skips
    // them.
    let yaml = "id: batched\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: P1D}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut deferred = store("batched");
    deferred.set_auto_flush(false);
    let mut rt = Runtime::new(deferred);
    // 60 contacts: more than one BatchWriteItem request (25, 25, 10 items).
    let contacts: String = (0..60)
        .map(|i| format!("{{\"id\": \"c{i:02}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    let report = rt
        .launch(
            LaunchDetail {
                scenario: "batched".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.entered, 60);
    // Another store on the same tables (another function) sees no journal item yet; this one
    // reads its own.
    let emu = emulator();
    let mut other = Runtime::new(DynamoStore::new(
        emu.dynamo.clone(),
        rt.store().config().clone(),
        Bridge::new(emu.runtime.handle().clone()),
    ));
    let counts = |rt: &mut Runtime<DynamoStore>| {
        let j = rt.journal("batched").unwrap_or_else(|e| panic!("{e}"));
        (j.entered, j.steps.get("first").map_or(0, |s| s.sent))
    };
    assert_eq!(counts(&mut other), (0, 0));
    assert_eq!(counts(&mut rt), (60, 60));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts(&mut other), (60, 60));
    // A repeat launch finds every enrollment whole: nothing entered, nothing journaled twice.
    let again = rt
        .launch(
            LaunchDetail {
                scenario: "batched".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.entered, 0);
    assert_eq!(again.skipped.get("already_running"), Some(&60));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts(&mut other), (60, 60));
    assert_eq!(sends(other.store()).len(), 60);
}

/// The journal is split over the scenario's shards (an enrollment's records in one), and
/// every reader still reads what an earlier build wrote in the unsplit partition: its records
/// come back in sort-key order among the new ones, and its transition item still says that
/// transition's effects were applied (the pending-effects check does not apply them again).
#[test]
fn the_journal_reads_its_shards_and_the_partition_earlier_builds_wrote() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    use relance_core::ports::JournalStore;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let yaml = "id: split\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("split"));
    let table = rt.store().config().state_table.clone();
    let contacts: String = (0..40)
        .map(|i| format!("{{\"id\": \"c{i:02}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    // An earlier build's journal, unsplit: a transition item (records listed) and a single
    // record, a minute before this build's.
    let before = t0 - TimeDelta::minutes(1);
    let old_enrollment = "split:old:1";
    let old_records = vec![
        Record::new(before, "old", RecordKind::Entered).step("first"),
        Record::new(before, "old", RecordKind::Sent).step("first"),
    ];
    let old_record = Record::new(before, "old", RecordKind::Opened).step("first");
    let put = |pk: String, sk: String, attr: (&str, String)| {
        emu.runtime
            .block_on(
                emu.dynamo
                    .put_item()
                    .table_name(&table)
                    .item(keys::PK, AttributeValue::S(pk))
                    .item(keys::SK, AttributeValue::S(sk))
                    .item("contact", AttributeValue::S("old".into()))
                    .item(attr.0, AttributeValue::S(attr.1))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
    };
    let records_json = serde_json::to_string(&old_records).unwrap_or_else(|e| panic!("{e}"));
    let record_json = serde_json::to_string(&old_record).unwrap_or_else(|e| panic!("{e}"));
    put(
        keys::legacy_journal("split"),
        keys::journal_transition(before, old_enrollment, 1),
        ("records", records_json),
    );
    put(
        keys::legacy_journal("split"),
        keys::journal_record(before, None, &record_json),
        ("record", record_json.clone()),
    );
    rt.launch(
        LaunchDetail {
            scenario: "split".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // This build's items: in the shards, spread (40 enrollments over 16 shards), none in the
    // unsplit partition but the two written above.
    let items = |pk: &str| {
        emu.runtime
            .block_on(
                emu.dynamo
                    .query()
                    .table_name(&table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .count
    };
    let shards = keys::journal_partitions("split");
    let (split, legacy) = shards.split_at(keys::SHARDS as usize);
    let per_shard: Vec<i32> = split.iter().map(|pk| items(pk)).collect();
    assert_eq!(per_shard.iter().sum::<i32>(), 40, "{per_shard:?}");
    assert!(
        per_shard.iter().filter(|n| **n > 0).count() > 4,
        "{per_shard:?}"
    );
    assert_eq!(items(&legacy[0]), 2);
    let records = rt
        .store()
        .records("split", None)
        .unwrap_or_else(|e| panic!("{e}"));
    // The earlier build's records first (a minute earlier), then this build's, merged.
    // Each of this build's 40 enrollments: entered, sent, waiting.
    assert_eq!(records.len(), 3 + 40 * 3);
    let mut first_three = records[..3].to_vec();
    first_three.sort_by_key(|r| r.kind.as_str());
    let mut want = vec![old_records[0].clone(), old_records[1].clone(), old_record];
    want.sort_by_key(|r| r.kind.as_str());
    assert_eq!(first_three, want);
    assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
    let old_only = rt
        .store()
        .records("split", Some("old"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old_only.len(), 3);
    let counts = rt.journal("split").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.entered, 41);

    // An enrollment whose effects an earlier build applied, its journal item unsplit: read
    // again, its effects are not applied twice.
    let mut crashing = Runtime::new(store("splitpending"));
    let table = crashing.store().config().state_table.clone();
    import(
        &mut crashing,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n",
        t0,
    );
    activate(&mut crashing, yaml, t0);
    crashing.store().crash_after_next_commit();
    let launch = |rt: &mut Runtime<DynamoStore>| {
        rt.launch(
            LaunchDetail {
                scenario: "split".into(),
                contacts: None,
            },
            t0,
        )
    };
    assert!(launch(&mut crashing).is_err());
    assert!(sends(crashing.store()).is_empty());
    let enrollment = keys::enrollment_id("split", "a", 1);
    // The contact's latest enrollment is in its entry item.
    let version = emu
        .runtime
        .block_on(
            emu.dynamo
                .get_item()
                .table_name(&table)
                .key(keys::PK, AttributeValue::S(keys::contact("a")))
                .key(keys::SK, AttributeValue::S(keys::entry("split")))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .item
        .and_then(|i| i.get("version").and_then(|v| v.as_n().ok()).cloned())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no enrollment version"));
    emu.runtime
        .block_on(
            emu.dynamo
                .put_item()
                .table_name(&table)
                .item(keys::PK, AttributeValue::S(keys::legacy_journal("split")))
                .item(
                    keys::SK,
                    AttributeValue::S(keys::journal_transition(t0, &enrollment, version)),
                )
                .item("contact", AttributeValue::S("a".into()))
                .item("records", AttributeValue::S("[]".into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let report = launch(&mut crashing).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.skipped.get("already_running"), Some(&1));
    assert!(
        sends(crashing.store()).is_empty(),
        "the earlier build's journal item says the effects were applied"
    );
}

/// A handler's batch (a store that flushes once per batch) leaves its wake timers, its
/// journal records and its input keys to the flush: none is in the table before it, the
/// batch still sees its own (a repeated input within the batch is seen, its records are
/// read), and after it another function's tick fires the timers, and a third delivery of
/// the input is seen there.
#[test]
fn a_batch_writes_its_timers_records_and_input_keys_at_the_flush() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    use relance_core::ports::JournalStore;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let yaml = "id: later\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut deferred = store("deferbatch");
    deferred.set_auto_flush(false);
    let mut rt = Runtime::new(deferred);
    let config = rt.store().config().clone();
    let contacts: String = (0..5)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    let count = |table: &str| {
        emu.runtime
            .block_on(emu.dynamo.scan().table_name(table).send())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .count
    };
    let input_recorded = |key: &str| {
        emu.runtime
            .block_on(
                emu.dynamo
                    .get_item()
                    .table_name(&config.state_table)
                    .key(keys::PK, AttributeValue::S(keys::input(key)))
                    .key(keys::SK, AttributeValue::S(keys::INPUT.into()))
                    .consistent_read(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .item
            .is_some()
    };
    rt.launch(
        LaunchDetail {
            scenario: "later".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let opened = EngagementDetail {
        idempotency_key: Some("esp-open-c0".into()),
        contact: "c0".into(),
        scenario: "later".into(),
        step: "first".into(),
        kind: EngagementKind::Opened,
        url: None,
        link_tags: Vec::new(),
        at: Some(t0 + TimeDelta::minutes(5)),
    };
    let input_key = opened
        .dedup_key()
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("an engagement with a key is recorded under it"));
    // Delivered twice within the batch: the second is seen though nothing is written yet.
    for _ in 0..2 {
        rt.engagement(opened.clone(), t0 + TimeDelta::minutes(6))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(count(&config.timers_table), 0, "no timer before the flush");
    assert!(!input_recorded(&input_key));
    let opens = |rt: &mut Runtime<DynamoStore>| {
        rt.store()
            .records("later", Some("c0"))
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|r| r.kind == RecordKind::Opened)
            .count()
    };
    assert_eq!(opens(&mut rt), 1, "the batch reads its own records");
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        count(&config.timers_table),
        1,
        "the batch's five timers in one part"
    );
    assert!(input_recorded(&input_key));

    // Another function: the input is seen, the timers fire once.
    let mut other = Runtime::new(
        DynamoStore::new(
            emu.dynamo.clone(),
            config.clone(),
            Bridge::new(emu.runtime.handle().clone()),
        )
        .recording_sends(),
    );
    other
        .engagement(opened, t0 + TimeDelta::minutes(7))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opens(&mut other), 1);
    other
        .tick(t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(other.store()).len(), 10);
    assert_eq!(count(&config.timers_table), 0, "each timer consumed");
    let counts = other.journal("later").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.ends.get("success"), Some(&5));
}

/// A handler's batch writes the records of its transitions in a few journal parts, not an
/// item per transition. A part proves its transitions applied: another function reading
/// them does not apply their effects again. A unit of the batch that failed after its commit
/// point is not in the part its batch wrote, so its effects are applied when its enrollment is
/// next read, once, with its records in an item of its own; the journal has every record once.
#[test]
fn a_batch_keeps_its_records_in_parts_that_prove_its_transitions_applied() {
    use relance_aws::keys;
    use relance_core::ports::JournalStore;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let yaml = "id: parts\nlaunch: {type: trigger, event: signed.up}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(batching(store("parts")));
    let config = rt.store().config().clone();
    let contacts: String = (0..5)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, yaml, t0);
    let signed_up = |contact: &str| ActivityDetail {
        idempotency_key: None,
        contact: contact.into(),
        event: "signed.up".into(),
        properties: Default::default(),
        at: Some(t0),
    };
    for i in 0..5 {
        if i == 2 {
            // This unit fails right after its commit point; the batch goes on.
            rt.store().crash_after_next_commit();
            assert!(rt.activity(signed_up("c2"), t0).is_err());
        } else {
            rt.activity(signed_up(&format!("c{i}")), t0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    // The scenario's journal items: (parts, transitions' own items).
    let journal_items = || journal_items(&config.state_table, "parts");
    assert_eq!(
        journal_items(),
        (1, 0),
        "one part for the batch's four transitions"
    );

    // Another function: the four applied transitions stay applied (one send each so far);
    // c2's is applied when its enrollment is read (its event delivered again), once.
    let mut other = Runtime::new(
        DynamoStore::new(
            emu.dynamo.clone(),
            config.clone(),
            Bridge::new(emu.runtime.handle().clone()),
        )
        .recording_sends(),
    );
    let sent_to = |rt: &mut Runtime<DynamoStore>| -> Vec<String> {
        sends(rt.store()).into_iter().map(|(c, _, _)| c).collect()
    };
    assert_eq!(sent_to(&mut other), vec!["c0", "c1", "c3", "c4"]);
    for i in 0..5 {
        other
            .activity(signed_up(&format!("c{i}")), t0 + TimeDelta::minutes(1))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut got = sent_to(&mut other);
    got.sort();
    assert_eq!(got, vec!["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(
        journal_items(),
        (1, 1),
        "the re-applied transition has its own item"
    );
    let own = stored_item(
        &config.state_table,
        keys::journal("parts", &keys::enrollment_id("parts", "c2", 1)),
        keys::journal_transition(t0, &keys::enrollment_id("parts", "c2", 1), 1),
    );
    assert!(own.is_some(), "the own item is c2's");
    other
        .activity(signed_up("c2"), t0 + TimeDelta::minutes(2))
        .unwrap_or_else(|e| panic!("{e}"));
    other
        .tick(t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(other.store()).len(), 10);
    let records = other
        .store()
        .records("parts", None)
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        let contact = format!("c{i}");
        let kinds: Vec<&str> = records
            .iter()
            .filter(|r| r.contact == contact)
            .map(|r| r.kind.as_str())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "entered").count(),
            1,
            "{contact}: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "sent").count(),
            2,
            "{contact}: {kinds:?}"
        );
    }
    let counts = other.journal("parts").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.entered, 5);
    assert_eq!(counts.ends.get("success"), Some(&5));
}

/// A flush that fails where it writes the batch's journal parts (after its messages and
/// timers) leaves nothing for the next flush: no input key is written without the records of
/// its unit. The batch delivered again re-applies its transitions (each send once) and
/// records everything once.
#[test]
fn a_flush_that_fails_at_its_parts_leaves_nothing_behind_and_the_batch_is_redone() {
    use relance_aws::keys;
    use relance_core::ports::JournalStore;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(batching(store("partsfail")));
    let config = rt.store().config().clone();
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, TRIGGERED, t0);
    let purchase = |contact: &str| ActivityDetail {
        idempotency_key: Some(format!("order-{contact}")),
        contact: contact.into(),
        event: "purchase".into(),
        properties: Default::default(),
        at: Some(t0),
    };
    let input_recorded = |detail: &ActivityDetail| {
        let key = detail
            .dedup_key()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("an activity with a key is recorded under it"));
        stored_item(&config.state_table, keys::input(&key), keys::INPUT.into()).is_some()
    };
    let batch = |rt: &mut Runtime<DynamoStore>| {
        for contact in ["a", "b"] {
            rt.activity(purchase(contact), t0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    batch(&mut rt);
    rt.store().fail_next_journal_parts();
    assert!(rt.store().flush().is_err());
    // The next flush has nothing of it to write.
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert!(!input_recorded(&purchase("a")));
    let none = rt
        .store()
        .records("on-purchase", None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(
        sends(rt.store()).len(),
        2,
        "the sends went before the failure"
    );
    // Delivered again (to the same function): not seen, the transitions re-applied, once.
    batch(&mut rt);
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert!(input_recorded(&purchase("a")) && input_recorded(&purchase("b")));
    assert_eq!(sends(rt.store()).len(), 2);
    let records = rt
        .store()
        .records("on-purchase", None)
        .unwrap_or_else(|e| panic!("{e}"));
    for contact in ["a", "b"] {
        let kinds: Vec<&str> = records
            .iter()
            .filter(|r| r.contact == contact)
            .map(|r| r.kind.as_str())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "entered").count(),
            1,
            "{contact}: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "sent").count(),
            1,
            "{contact}: {kinds:?}"
        );
    }
    assert_eq!(
        journal_items(&config.state_table, "on-purchase").1,
        2,
        "each re-applied transition in an item of its own"
    );
}

/// The tick's heartbeat keeps this build's layouts written; when it has been silent longer
/// than its gap (the stack rolled back to an earlier build, whose tick does not beat), they
/// lapse, and the heartbeat that comes back moves their instant a delay ahead again, so the
/// earlier build's functions are gone before they are written again (no step by hand). A
/// setting an earlier build of a layout wrote without a heartbeat gets the delay too.
#[test]
fn the_tick_heartbeat_keeps_the_layouts_and_a_silence_restarts_their_delay() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let beat = |when: DateTime<Utc>| {
        unit_timed("heartbeat")
            .heartbeat(when)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut rt = Runtime::new(unit_timed("heartbeat"));
    let table = rt.store().config().state_table.clone();
    let contacts: String = ["a", "b", "c", "d"]
        .iter()
        .map(|c| format!("{{\"id\": \"{c}\", \"email\": \"{c}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    activate(&mut rt, TRIGGERED, t0);
    let field = |setting: &str, name: &str| {
        stored_item(&table, keys::SETTINGS.into(), setting.into())
            .and_then(|i| i.get(name).and_then(|v| v.as_n().ok()).cloned())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let entries = |name: &str| field(keys::ENTRY_ENROLLMENTS, name);
    let parts = |name: &str| field(keys::JOURNAL_PARTS, name);
    // Each entry by a store that has not read the settings yet.
    let folded = |contact: &str, when: DateTime<Utc>| {
        let mut rt = Runtime::new(unit_timed("heartbeat"));
        purchase_by(&mut rt, contact, when);
        stored_item(&table, keys::contact(contact), keys::entry("on-purchase"))
            .unwrap_or_else(|| panic!("no entry for {contact}"))
            .contains_key("doc")
    };
    // The journal parts' setting as an earlier build of that layout left it: an instant
    // passed, no heartbeat.
    emu.runtime
        .block_on(
            emu.dynamo
                .put_item()
                .table_name(&table)
                .item(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                .item(keys::SK, AttributeValue::S(keys::JOURNAL_PARTS.into()))
                .item("from", AttributeValue::N("5".into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    // A table this build created: written from the start, the first beat only records itself.
    // The earlier build's setting: its instant moves a delay ahead (a rollback may have gone
    // back past that build).
    beat(t0);
    assert_eq!(
        (entries("from"), entries("alive")),
        (Some(0), Some(t0.timestamp()))
    );
    let hour_after = |t: DateTime<Utc>| Some((t + TimeDelta::hours(1)).timestamp());
    assert_eq!(
        (parts("from"), parts("alive")),
        (hour_after(t0), Some(t0.timestamp()))
    );
    assert!(folded("a", t0));
    // A beat within the same minute writes nothing; the next tick's, the heartbeat.
    beat(t0 + TimeDelta::seconds(20));
    assert_eq!(entries("alive"), Some(t0.timestamp()));
    let t1 = t0 + TimeDelta::minutes(1);
    beat(t1);
    assert_eq!(entries("alive"), Some(t1.timestamp()));
    // Silent past the gap (four minutes): the layout lapses.
    assert!(!folded("b", t1 + TimeDelta::minutes(5)), "a bare mark");
    // The heartbeat back: the layout waits a delay again.
    let t2 = t0 + TimeDelta::hours(5);
    beat(t2);
    assert_eq!(
        (entries("from"), entries("alive")),
        (hour_after(t2), Some(t2.timestamp()))
    );
    assert!(!folded("c", t2 + TimeDelta::minutes(5)));
    // Beating on (every three minutes here; the tick beats every minute), it comes back an
    // hour after that heartbeat.
    let t3 = t2 + TimeDelta::hours(1);
    let mut when = t2;
    while when < t3 {
        when += TimeDelta::minutes(3);
        beat(when);
    }
    assert_eq!(
        entries("from"),
        Some(t3.timestamp()),
        "no silence: the instant stays"
    );
    assert!(folded("d", when + TimeDelta::minutes(1)));
    // The journal parts' setting beats alongside, its instant moved by the same silence.
    assert_eq!(parts("alive"), Some(when.timestamp()));
    assert_eq!(parts("from"), Some(t3.timestamp()));
}

/// A deployment that does not listen to Relance's informational events mutes them
/// (`RELANCE_MUTED_EVENTS`): an enrollment reaching a goal publishes neither
/// `relance.enrollment.ended` nor `relance.goal.reached` (EventBridge bills each event
/// published); the events that carry work still go out, and so does a scenario's own event,
/// even one named like a muted one.
#[test]
fn muted_events_are_not_published_and_the_others_are() {
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let mut config = store("muted").config().clone();
    config.muted_events =
        relance_aws::config::parse_muted_events("relance.enrollment.ended,relance.goal.reached")
            .unwrap_or_default();
    let recording = crate::support::Recording::default();
    let muted = DynamoStore::new(
        emu.dynamo.clone(),
        config,
        Bridge::new(emu.runtime.handle().clone()),
    )
    .recording_sends()
    .with_dispatch(recording.clone());
    let mut rt = Runtime::new(muted);
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    // A scenario's own event goes out whatever its name, a muted one's included.
    let yaml = "id: muted\nlaunch: {type: manual}\ngoals: [{id: won, kind: success}]\nsteps:\n  - {id: task, action: {task: {title: Call them, assignee: sales}}, next: own}\n  - {id: own, action: {event: {name: relance.goal.reached}}, next: done}\n  - {id: done, end: won}\n";
    activate(&mut rt, yaml, t0);
    rt.launch(
        LaunchDetail {
            scenario: "muted".into(),
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seen = recording.handed().published.clone();
    assert_eq!(
        seen,
        vec!["relance.task", "relance.goal.reached"],
        "{seen:?}"
    );
    let counts = rt.journal("muted").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        counts.ends.get("won"),
        Some(&1),
        "the journal keeps the end"
    );
}

/// A handler's batch keeps the timers it arms in a few timer parts (one per scenario and
/// minute): each timer the tick lists from a part is queued, marked as from a part, and
/// leaves the part (rewritten in place with the rest, or deleted); the step executor fires
/// them without a timer-table request; a paused scenario's part stays until it resumes; a
/// timer armed after a tick for a time within that tick's horizon is queued by the next one;
/// a listing cut by its limit, or a part due over a minute, leaves the rest in the part.
#[test]
fn a_batch_keeps_its_timers_in_parts_and_each_queued_timer_leaves_its_part() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    use relance_aws::handlers;
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let recording = crate::support::Recording::default();
    let mut rt = Runtime::new(batching(
        unit_timed("timerparts")
            .recording_sends()
            .with_dispatch(recording.clone()),
    ));
    let table = rt.store().config().timers_table.clone();
    let contacts: String = (0..6)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    let yaml = |id: &str| {
        format!(
            "id: {id}\nlaunch: {{type: manual}}\nmessages:\n  m: {{channel: email, subject: s, text: x}}\n  n: {{channel: email, subject: n, text: x}}\nsteps:\n  - {{id: first, send: m, next: second}}\n  - {{id: second, send: n, next: done, delay: {{after: PT1H}}}}\n  - {{id: done, end: success}}\n"
        )
    };
    let launch = |rt: &mut Runtime<DynamoStore>, id: &str, at: DateTime<Utc>| {
        activate(rt, &yaml(id), t0);
        rt.launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: None,
            },
            at,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    let timer_items = || {
        let items = timer_table(&table);
        let kind = |k: &str| items.iter().filter(|i| kind_of(i) == Some(k)).count();
        (kind("timers"), kind("timer"))
    };
    launch(&mut rt, "parted", t0);
    launch(&mut rt, "held", t0);
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        timer_items(),
        (2, 0),
        "one part per scenario, no timer item"
    );
    rt.set_status("held", Status::Paused, t0)
        .unwrap_or_else(|e| panic!("{e}"));

    // The tick: parted's six timers queued, marked, its part deleted; held's part stays.
    let tick_limited = |rt: &mut Runtime<DynamoStore>, now: DateTime<Utc>, limit: usize| {
        let before = recording.handed().step.len();
        handlers::tick_limited(rt, &recording, now, limit).unwrap_or_else(|e| panic!("{e}"));
        recording.handed().step[before..].to_vec()
    };
    let tick = |rt: &mut Runtime<DynamoStore>, now: DateTime<Utc>| tick_limited(rt, now, 1000);
    // The timers a part holds now (its `due`, the earliest, and how many).
    let part_timers = || {
        timer_table(&table)
            .iter()
            .filter(|i| kind_of(i) == Some("timers"))
            .map(|i| {
                let wakes = relance_aws::dynamodb::document_text(i, "wakes")
                    .and_then(Result::ok)
                    .and_then(|text| serde_json::from_str::<Vec<serde_json::Value>>(&text).ok())
                    .map_or(0, |w| w.len());
                let due = i
                    .get("due")
                    .and_then(|v| v.as_n().ok())
                    .cloned()
                    .unwrap_or_default();
                (due, wakes)
            })
            .collect::<Vec<_>>()
    };
    let queued = tick(
        &mut rt,
        t0 + TimeDelta::minutes(59) + TimeDelta::seconds(30),
    );
    assert_eq!(queued.len(), 6);
    assert!(
        queued
            .iter()
            .all(|m| m.body.contains("\"stored\":\"part\"")),
        "{queued:?}"
    );
    assert_eq!(timer_items(), (1, 0));

    // Armed after that tick, due within its horizon (10:00:30): the next tick queues it.
    launch(&mut rt, "late", t0 + TimeDelta::seconds(10));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timer_items(), (2, 0));
    let late = tick(&mut rt, t0 + TimeDelta::hours(1) + TimeDelta::seconds(30));
    assert_eq!(late.len(), 6, "{late:?}");
    assert_eq!(timer_items(), (1, 0));

    // The step executor (another function) fires them: no timer-table write.
    let metered = crate::support::metered();
    let mut executor = Runtime::new(batching(
        DynamoStore::new(
            metered.dynamo.clone(),
            rt.store().config().clone(),
            Bridge::new(metered.runtime.handle().clone()),
        )
        .recording_sends(),
    ));
    let event = |messages: &[relance_aws::sqs::Outgoing]| {
        let mut e = SqsEvent::default();
        e.records = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut r = SqsMessage::default();
                r.message_id = Some(format!("m{i}"));
                r.body = Some(m.body.clone());
                r
            })
            .collect();
        e
    };
    let all: Vec<_> = queued.iter().chain(&late).cloned().collect();
    let done = handlers::step_executor(&mut executor, &event(&all), t0 + TimeDelta::hours(2));
    assert!(done.batch_item_failures.is_empty(), "{done:?}");
    let on_timers: Vec<String> = metered
        .meter
        .requests()
        .into_iter()
        .filter(|(_, body)| body.contains(&format!("\"{table}\"")))
        .map(|(op, _)| op)
        .collect();
    assert!(on_timers.is_empty(), "{on_timers:?}");
    // Delivered again: stale, nothing changes.
    let again = handlers::step_executor(&mut executor, &event(&all), t0 + TimeDelta::hours(2));
    assert!(again.batch_item_failures.is_empty());
    for id in ["parted", "late"] {
        let counts = executor.journal(id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(counts.ends.get("success"), Some(&6), "{id}");
    }
    assert_eq!(timer_items(), (1, 0), "held's part only");

    // Resumed, held's part is queued whole and goes.
    rt.set_status("held", Status::Active, t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    let held = tick(&mut rt, t0 + TimeDelta::hours(3));
    assert_eq!(held.len(), 6);
    assert_eq!(timer_items(), (0, 0));

    // A part due over a minute: the tick queues what is due within its horizon, the rest
    // stays in a part of its own for the next tick.
    activate(&mut rt, &yaml("spread"), t0);
    for (contact, second) in [("c0", 10), ("c1", 50)] {
        rt.launch(
            LaunchDetail {
                scenario: "spread".into(),
                contacts: Some(vec![contact.into()]),
            },
            t0 + TimeDelta::hours(4) + TimeDelta::seconds(second),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timer_items(), (1, 0), "one part of two timers");
    let first = tick(&mut rt, t0 + TimeDelta::hours(5) - TimeDelta::seconds(40));
    assert_eq!(first.len(), 1);
    assert!(first[0].body.contains("\"contact\":\"c0\""), "{first:?}");
    assert_eq!(
        part_timers(),
        [(
            relance_core::instant::to_micros(t0 + TimeDelta::hours(5) + TimeDelta::seconds(50))
                .to_string(),
            1
        )],
        "c1's timer left in the part, read from its own due time"
    );
    let second = tick(&mut rt, t0 + TimeDelta::hours(5) + TimeDelta::seconds(20));
    assert_eq!(second.len(), 1);
    assert!(second[0].body.contains("\"contact\":\"c1\""), "{second:?}");
    assert_eq!(timer_items(), (0, 0));

    // A listing cut by its limit (a herd larger than a tick lists): what it listed leaves
    // the part, the next tick takes the rest.
    launch(&mut rt, "herd", t0 + TimeDelta::hours(6));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    let due = t0 + TimeDelta::hours(7);
    assert_eq!(tick_limited(&mut rt, due, 4).len(), 4);
    assert_eq!(part_timers().iter().map(|p| p.1).collect::<Vec<_>>(), [2]);
    assert_eq!(
        tick_limited(&mut rt, due + TimeDelta::minutes(1), 4).len(),
        2
    );
    assert_eq!(timer_items(), (0, 0));
}

/// A runtime firing timers in process on this store (tests, the CLI) takes the timers it
/// fires out of their parts, at once (a batching store too: its loop reads the table again
/// before any flush), so its loop ends: a part due over a minute, a part cut by the firing
/// limit.
#[test]
fn an_in_process_tick_takes_fired_timers_out_of_their_parts() {
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(batching(unit_timed("partsinproc").recording_sends()));
    let table = rt.store().config().timers_table.clone();
    let contacts: String = (0..6)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@x.io\"}}\n"))
        .collect();
    import(&mut rt, &contacts, t0);
    let yaml = "id: inproc\nlaunch: {type: manual}\nsteps:\n  - {id: wait, delay: {after: PT1H}, end: success}\n";
    activate(&mut rt, yaml, t0);
    // Four contacts at 09:00:00, two at 09:00:40: one part of six timers.
    for (contacts, at) in [
        (vec!["c0", "c1", "c2", "c3"], t0),
        (vec!["c4", "c5"], t0 + TimeDelta::seconds(40)),
    ] {
        rt.launch(
            LaunchDetail {
                scenario: "inproc".into(),
                contacts: Some(contacts.into_iter().map(String::from).collect()),
            },
            at,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    let items = || timer_table(&table).len();
    assert_eq!(items(), 1);
    // A batching store: the part is rewritten with the two not due; the loop ends.
    let fired = rt
        .tick(t0 + TimeDelta::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fired.timers, 4);
    assert_eq!(items(), 1, "the two not due, left in the part");
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    // Writing as it goes, two at a time: the limit cuts the part, the rest stays.
    rt.store().set_auto_flush(true);
    let later = t0 + TimeDelta::hours(1) + TimeDelta::minutes(1);
    let bounded = rt.tick_bounded(later, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bounded.timers, 1);
    assert_eq!(items(), 1, "one timer left, in a part");
    let rest = rt.tick(later).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.timers, 1);
    assert_eq!(items(), 0);
    let counts = rt.journal("inproc").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.ends.get("success"), Some(&6));
}

/// The tick's requests to the step queue go several at once; after each round the timers of
/// the requests that went leave their parts. A request that fails fails the tick once the
/// others of its round are handed on: the next tick queues only what did not go. A tick whose
/// time runs out starts no more requests; its horizon ends just before the first timer it
/// left, so the next tick queues exactly the timers it left (timers with items of their own,
/// which the tick does not delete). A listing cut by its limit is followed by another while
/// the tick has rounds left, which queues no timer twice. A failed request still writes how far
/// the rounds before it went.
#[test]
fn a_tick_hands_on_the_requests_that_went_and_leaves_the_rest_to_the_next() {
    use relance_aws::handlers::{self, TickLimits};
    use relance_core::ports::ScenarioStore;
    use std::time::{Duration, Instant};
    if crate::support::offline() {
        return;
    }
    let t0 = at("2026-12-01T09:00:00Z");
    // A runtime on fresh tables named `name` (a batching store, or one writing as it goes)
    // handing its step messages to a recording port, with `n` contacts.
    let recorded = |name: &str, batch: bool, n: usize| {
        let recording = crate::support::Recording::default();
        let store = unit_timed(name)
            .recording_sends()
            .with_dispatch(recording.clone());
        let mut rt = Runtime::new(if batch { batching(store) } else { store });
        let contacts: String = (0..n)
            .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@x.io\"}}\n"))
            .collect();
        import(&mut rt, &contacts, t0);
        (recording, rt)
    };
    let horizon = |rt: &mut Runtime<DynamoStore>| {
        rt.store()
            .setting(handlers::TICK_HORIZON)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let yaml = |id: &str| {
        format!(
            "id: {id}\nlaunch: {{type: manual}}\nsteps:\n  - {{id: wait, delay: {{after: PT1H}}, end: success}}\n"
        )
    };
    let launch = |rt: &mut Runtime<DynamoStore>, id: &str, at: DateTime<Utc>| {
        rt.launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: None,
            },
            at,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    // Contact i enters `id` at t0 + i seconds, alone: timers a second apart.
    let launch_one_a_second = |rt: &mut Runtime<DynamoStore>, id: &str, n: i64| {
        for i in 0..n {
            rt.launch(
                LaunchDetail {
                    scenario: id.into(),
                    contacts: Some(vec![format!("c{i}")]),
                },
                t0 + TimeDelta::seconds(i),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    // The timers of a launch, by their due time (each scenario's launch has its own).
    let due_at = |messages: &[relance_aws::sqs::Outgoing], time: &str| {
        messages
            .iter()
            .filter(|m| m.body.contains(&format!("\"at\":\"2026-12-01T{time}")))
            .count()
    };

    // Three scenarios' parts of ten timers, due a minute apart; two requests in flight.
    let (recording, mut rt) = recorded("tickrounds", true, 10);
    let table = rt.store().config().timers_table.clone();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        activate(&mut rt, &yaml(id), t0);
        launch(&mut rt, id, t0 + TimeDelta::minutes(i as i64));
    }
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timer_table(&table).len(), 3, "a part per scenario");
    recording.fail_step_request(1);
    let two_at_once = TickLimits {
        in_flight: 2,
        ..TickLimits::default()
    };
    let now = t0 + TimeDelta::hours(1) + TimeDelta::seconds(90);
    let failed = handlers::tick_with(&mut rt, &recording, now, two_at_once);
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused")),
        "{failed:?}"
    );
    let went = recording.handed().step.clone();
    assert_eq!(
        (
            due_at(&went, "10:00:00"),
            due_at(&went, "10:01:00"),
            went.len()
        ),
        (10, 0, 10),
        "a's request went, b's failed, c's round never started"
    );
    assert_eq!(
        timer_table(&table).len(),
        2,
        "a's part left, b's and c's stay"
    );
    let next = handlers::tick_with(&mut rt, &recording, now, two_at_once)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((next.queued, next.left), (20, 0));
    let all = recording.handed().step.clone();
    assert_eq!(
        ["10:00:00", "10:01:00", "10:02:00"].map(|time| due_at(&all, time)),
        [10, 10, 10],
        "each timer queued once"
    );
    assert_eq!(timer_table(&table).len(), 0);

    // A listing cut by its limit is followed by another in the same tick (the queued timers
    // left their part), up to the tick's rounds.
    activate(&mut rt, &yaml("g"), t0);
    launch(&mut rt, "g", t0 + TimeDelta::minutes(10));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    let now = t0 + TimeDelta::hours(1) + TimeDelta::minutes(10);
    let four_twice = TickLimits {
        timers: 4,
        rounds: 2,
        ..TickLimits::default()
    };
    let two_rounds =
        handlers::tick_with(&mut rt, &recording, now, four_twice).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((two_rounds.queued, two_rounds.left), (8, 0));
    assert_eq!(timer_table(&table).len(), 1, "two timers left in the part");
    let rest =
        handlers::tick_with(&mut rt, &recording, now, four_twice).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.queued, 2);
    assert_eq!(due_at(&recording.handed().step, "10:10:00"), 10);
    assert_eq!(timer_table(&table).len(), 0);

    // Timers with items of their own (a store writing as it goes): the first request takes
    // longer than the tick's time, so one request of ten goes and twenty are left.
    let (recording, mut rt) = recorded("tickuntil", false, 10);
    let table = rt.store().config().timers_table.clone();
    for (i, id) in ["d", "e", "f"].into_iter().enumerate() {
        activate(&mut rt, &yaml(id), t0);
        launch(&mut rt, id, t0 + TimeDelta::seconds(20 * i as i64));
    }
    assert_eq!(timer_table(&table).len(), 30, "an item per timer");
    // The tick's time is out once its first request is done, however long the listing
    // before it took (under 8 s).
    recording.slow_step_request(0, Duration::from_millis(8500));
    let one_at_a_time = TickLimits {
        in_flight: 1,
        until: Some(Instant::now() + Duration::from_secs(8)),
        ..TickLimits::default()
    };
    let now = t0 + TimeDelta::hours(1);
    let cut = handlers::tick_with(&mut rt, &recording, now, one_at_a_time)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cut.queued, cut.left), (10, 20));
    assert_eq!(due_at(&recording.handed().step, "10:00:00"), 10);
    assert_eq!(
        horizon(&mut rt).as_deref(),
        Some("2026-12-01T10:00:19.999+00:00"),
        "just before e's timers, the first left"
    );
    // The next minute's tick: e's and f's, not d's again (unfired, still in the table).
    let next = handlers::tick(&mut rt, &recording, now + TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((next.queued, next.left), (20, 0));
    let all = recording.handed().step.clone();
    assert_eq!(
        ["10:00:00", "10:00:20", "10:00:40"].map(|time| due_at(&all, time)),
        [10, 10, 10]
    );

    // Items of their own stay in the table once queued: a second listing in the same tick
    // finds the same first timers and queues none of them again; the next tick goes on from
    // its horizon. Ten timers a second apart, four listed at a time.
    let (recording, mut rt) = recorded("tickagain", false, 10);
    activate(&mut rt, &yaml("h"), t0);
    launch_one_a_second(&mut rt, "h", 10);
    let four_at_a_time = TickLimits {
        timers: 4,
        ..TickLimits::default()
    };
    let first = handlers::tick_with(&mut rt, &recording, now, four_at_a_time)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.queued, 4, "not again in a later listing of the tick");
    let next = handlers::tick_with(
        &mut rt,
        &recording,
        now + TimeDelta::minutes(1),
        TickLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.queued, 6);
    let all = recording.handed().step.clone();
    assert_eq!(
        (0..10)
            .map(|i| due_at(&all, &format!("10:00:{i:02}")))
            .collect::<Vec<_>>(),
        [1; 10],
        "each timer queued once"
    );

    // A failed request still writes how far the rounds before it went: twenty items of
    // their own a second apart, one request at a time, the second refused; the next tick
    // queues the ten that did not go, not the ten that did.
    let (recording, mut rt) = recorded("tickfail", false, 20);
    activate(&mut rt, &yaml("k"), t0);
    launch_one_a_second(&mut rt, "k", 20);
    recording.fail_step_request(1);
    let one_at_a_time = TickLimits {
        in_flight: 1,
        ..TickLimits::default()
    };
    let failed = handlers::tick_with(&mut rt, &recording, now, one_at_a_time);
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        horizon(&mut rt).as_deref(),
        Some("2026-12-01T10:00:09.999+00:00"),
        "just before the first timer of the refused request"
    );
    let next = handlers::tick(&mut rt, &recording, now + TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.queued, 10);
    let all = recording.handed().step.clone();
    assert_eq!(
        (0..20)
            .map(|i| due_at(&all, &format!("10:00:{i:02}")))
            .collect::<Vec<_>>(),
        [1; 20],
        "each timer queued once"
    );
}

/// On a table this build did not create, a batch's timers keep an item each for the layout's
/// delay (an earlier build's tick reads no part), counted from this build's first batch there,
/// and after it only while the tick's heartbeat says a tick that reads parts runs.
#[test]
fn while_the_layout_delay_runs_a_batch_writes_an_item_per_timer() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(batching(unit_timed("timerdelay").recording_sends()));
    let (state, timers) = {
        let c = rt.store().config();
        (c.state_table.clone(), c.timers_table.clone())
    };
    // As an upgraded table.
    emu.runtime
        .block_on(
            emu.dynamo
                .delete_item()
                .table_name(&state)
                .key(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                .key(keys::SK, AttributeValue::S(keys::TIMER_PARTS.into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    let yaml = |id: &str| {
        format!(
            "id: {id}\nlaunch: {{type: manual}}\nsteps:\n  - {{id: wait, delay: {{after: P1D}}, end: success}}\n"
        )
    };
    let kinds = || {
        let items = timer_table(&timers);
        let mut kinds: Vec<String> = items
            .iter()
            .filter_map(|i| kind_of(i).map(str::to_string))
            .collect();
        kinds.sort();
        kinds
    };
    let launches = [
        ("during", t0),
        ("unbeaten", t0 + TimeDelta::hours(2)),
        ("beaten", t0 + TimeDelta::minutes(124)),
    ];
    for (id, when) in launches {
        if id == "beaten" {
            // The tick's first beat on this setting moves its instant an hour on: the beats
            // of an hour, one every three minutes, then the layout is written.
            for m in (0..=63).step_by(3) {
                rt.store()
                    .heartbeat(t0 + TimeDelta::minutes(60 + m))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        activate(&mut rt, &yaml(id), when);
        rt.launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: None,
            },
            when,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        kinds(),
        ["timer", "timer", "timer", "timer", "timers"],
        "an item per timer during the delay and without the tick's heartbeat, a part after"
    );
}

/// The informational events nothing on the bus could receive are left out while the tick's
/// finding is fresh: a consumer's rule brings them back from the next check, a stale finding
/// (the tick stopped) publishes everything, and `always` ignores the finding.
#[test]
fn unheard_informational_events_are_left_out_until_a_rule_could_receive_them() {
    use relance_aws::config::Informational;
    use relance_aws::eventbridge::EventBus;
    use relance_aws::listeners;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let bus_name = format!("heard{}-bus", std::process::id());
    emu.runtime
        .block_on(emu.eb.create_event_bus().name(&bus_name).send())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let bus = EventBus::new(emu.eb.clone(), bus_name.clone(), bridge.clone());
    // The deployment's own rule (other sources) and an archive of tasks only: neither could
    // receive an end or a goal.
    crate::support::listen_on_bus(
        &bus_name,
        r#"{"source":[{"anything-but":"relance"}],"detail-type":["relance.contact","relance.activity"]}"#,
    );
    crate::support::archive_bus(
        &bus_name,
        &format!("heard{}-tasks", std::process::id()),
        Some(r#"{"detail-type":["relance.task"]}"#),
    );
    let recording = crate::support::Recording::default();
    let base = store("heard");
    let mut rt = Runtime::new(
        DynamoStore::new(emu.dynamo.clone(), base.config().clone(), bridge.clone())
            .recording_sends()
            .with_dispatch(recording.clone()),
    );
    import(&mut rt, "{\"id\": \"a\", \"email\": \"a@x.io\"}\n", t0);
    let run = |rt: &mut Runtime<DynamoStore>, id: &str| {
        let yaml = format!(
            "id: {id}\nlaunch: {{type: manual}}\ngoals: [{{id: won, kind: success}}]\nsteps:\n  - {{id: task, action: {{task: {{title: Call them}}}}, next: done}}\n  - {{id: done, end: won}}\n"
        );
        activate(rt, &yaml, t0);
        let before = recording.handed().published.len();
        rt.launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        recording.handed().published[before..].to_vec()
    };
    let both = vec!["relance.enrollment.ended", "relance.goal.reached"];
    // Before any check: everything goes out.
    assert_eq!(
        run(&mut rt, "heard0"),
        [
            "relance.task",
            "relance.enrollment.ended",
            "relance.goal.reached"
        ]
    );
    let found = listeners::check(rt.store(), &bus, Utc::now()).map_err(|e| e.to_string());
    assert_eq!(found, Ok(both.clone()));
    assert_eq!(run(&mut rt, "heard1"), ["relance.task"]);
    // A consumer of the ends: heard from the next check; goals still unheard.
    crate::support::listen_on_bus(
        &bus_name,
        r#"{"source":["relance"],"detail-type":[{"prefix":"relance.enrollment."}]}"#,
    );
    let found = listeners::check(rt.store(), &bus, Utc::now()).map_err(|e| e.to_string());
    assert_eq!(found, Ok(vec!["relance.goal.reached"]));
    assert_eq!(
        run(&mut rt, "heard2"),
        ["relance.task", "relance.enrollment.ended"]
    );
    // A finding older than `HEARD_FRESH` (the tick stopped) is not followed; a check cannot
    // write an older finding over a newer one, so it is put in place here.
    {
        use aws_sdk_dynamodb::types::AttributeValue;
        use relance_aws::keys;
        emu.runtime
            .block_on(
                emu.dynamo
                    .put_item()
                    .table_name(&base.config().state_table)
                    .item(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                    .item(keys::SK, AttributeValue::S(keys::HEARD_EVENTS.into()))
                    .item(
                        "checked",
                        AttributeValue::N(
                            (Utc::now() - TimeDelta::minutes(10))
                                .timestamp()
                                .to_string(),
                        ),
                    )
                    .item(
                        "unheard",
                        AttributeValue::L(
                            both.iter()
                                .map(|u| AttributeValue::S(u.to_string()))
                                .collect(),
                        ),
                    )
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
    // Read again by a store of its own (this one keeps what it wrote for a minute).
    let mut rt = Runtime::new(
        DynamoStore::new(emu.dynamo.clone(), base.config().clone(), bridge.clone())
            .recording_sends()
            .with_dispatch(recording.clone()),
    );
    assert_eq!(
        run(&mut rt, "heard3"),
        [
            "relance.task",
            "relance.enrollment.ended",
            "relance.goal.reached"
        ]
    );
    // `always`: a fresh finding is not followed either, and the check writes none.
    rt.store()
        .record_unheard(&both, Utc::now())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut config = base.config().clone();
    config.informational = Informational::Always;
    let always = DynamoStore::new(emu.dynamo.clone(), config, bridge)
        .recording_sends()
        .with_dispatch(recording.clone());
    let stored = || {
        stored_item(
            &base.config().state_table,
            relance_aws::keys::SETTINGS.into(),
            relance_aws::keys::HEARD_EVENTS.into(),
        )
    };
    let before = stored();
    assert_eq!(
        listeners::check(&always, &bus, Utc::now() + TimeDelta::seconds(5))
            .map_err(|e| e.to_string()),
        Ok(vec![])
    );
    assert_eq!(stored(), before, "always: no check, nothing written");
    let mut rt = Runtime::new(always);
    assert_eq!(
        run(&mut rt, "heard4"),
        [
            "relance.task",
            "relance.enrollment.ended",
            "relance.goal.reached"
        ]
    );
}

/// On a table this build did not create, batches keep writing an item per transition for
/// the layout's delay (an earlier build, still running during a deployment, reads no part),
/// counted from this build's first batch there; then they write parts.
#[test]
fn while_the_layout_delay_runs_a_batch_writes_an_item_per_transition() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let t0 = at("2026-12-01T09:00:00Z");
    let table = store("partsdelay").config().state_table.clone();
    // As an upgraded table.
    emu.runtime
        .block_on(
            emu.dynamo
                .delete_item()
                .table_name(&table)
                .key(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                .key(keys::SK, AttributeValue::S(keys::JOURNAL_PARTS.into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut rt = Runtime::new(batching(unit_timed("partsdelay")));
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, TRIGGERED, t0);
    let journal_items = || journal_items(&table, "on-purchase");
    purchase_by(&mut rt, "a", t0);
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        journal_items(),
        (0, 1),
        "an item per transition during the delay"
    );
    let from = stored_item(&table, keys::SETTINGS.into(), keys::JOURNAL_PARTS.into())
        .and_then(|i| i.get("from").and_then(|v| v.as_n().ok()).cloned())
        .and_then(|n| n.parse::<i64>().ok());
    assert_eq!(from, Some((t0 + TimeDelta::hours(1)).timestamp()));
    purchase_by(&mut rt, "b", t0 + TimeDelta::hours(2));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(journal_items(), (1, 1), "a part after it");
    let counts = rt.journal("on-purchase").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.entered, 2);
}

/// Effects an earlier build committed and did not apply (it crashed after the commit point)
/// are re-applied when the enrollment is read, except a send that build's sender already
/// claimed under the old `sent` partition: it went out, and is not handed on again (this
/// build's senders read that partition only for a while after the upgrade).
#[test]
fn an_earlier_builds_unfinished_send_it_already_claimed_is_not_sent_again() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    if crate::support::offline() {
        return;
    }
    fn idempotency_key(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(m) => m
                .get("idempotency_key")
                .and_then(|k| k.as_str().map(str::to_string))
                .or_else(|| m.values().find_map(idempotency_key)),
            serde_json::Value::Array(a) => a.iter().find_map(idempotency_key),
            _ => None,
        }
    }
    let emu = emulator();
    let yaml = "id: upgrade\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\n  n: {channel: email, subject: n, text: x}\nsteps:\n  - {id: first, send: m, next: second}\n  - {id: second, send: n, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = Runtime::new(store("upgrade"));
    let table = rt.store().config().state_table.clone();
    import(
        &mut rt,
        "{\"id\": \"a\", \"email\": \"a@x.io\"}\n{\"id\": \"b\", \"email\": \"b@x.io\"}\n",
        t0,
    );
    activate(&mut rt, yaml, t0);
    let launch = |rt: &mut Runtime<DynamoStore>| {
        rt.launch(
            LaunchDetail {
                scenario: "upgrade".into(),
                contacts: None,
            },
            t0,
        )
    };
    rt.store().crash_after_next_commit();
    assert!(launch(&mut rt).is_err());
    assert!(sends(rt.store()).is_empty());
    // Which contact's transition crashed: its enrollment carries the pending effects (in its
    // entry item, where this build keeps a contact's latest enrollment).
    let pending_of = |contact: &str| {
        stored_item(&table, keys::contact(contact), keys::entry("upgrade"))
            .filter(|i| i.contains_key("pending"))
    };
    let (crashed, other, entry) = match (pending_of("a"), pending_of("b")) {
        (Some(item), _) => ("a", "b", item),
        (None, Some(item)) => ("b", "a", item),
        (None, None) => panic!("no enrollment carries pending effects"),
    };
    // The earlier build's sender had claimed the send under the old partition (the pending
    // effects' shape is the same in both builds).
    let text = relance_aws::dynamodb::document_text(&entry, "pending")
        .unwrap_or_else(|| panic!("no pending effects"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pending: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    // As the earlier build wrote them: the enrollment in its own item, its pending effects as
    // text (this build packs them, and reads both), and the entry item a bare mark.
    let id = keys::enrollment_id("upgrade", crashed, 1);
    let mut own = std::collections::HashMap::from([
        (
            keys::PK.to_string(),
            AttributeValue::S(keys::enrollment(&id)),
        ),
        (
            keys::SK.to_string(),
            AttributeValue::S(keys::ENROLLMENT_STATE.into()),
        ),
        ("pending".to_string(), AttributeValue::S(text)),
    ]);
    let mut mark = std::collections::HashMap::new();
    for (name, value) in entry {
        match name.as_str() {
            "doc" | "version" | "scenario_version" => own.insert(name, value),
            "pending" => None,
            _ => mark.insert(name, value),
        };
    }
    for item in [own, mark] {
        emu.runtime
            .block_on(
                emu.dynamo
                    .put_item()
                    .table_name(&table)
                    .set_item(Some(item))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
    let key = idempotency_key(&pending).unwrap_or_else(|| panic!("no send in {pending}"));
    emu.runtime
        .block_on(
            emu.dynamo
                .put_item()
                .table_name(&table)
                .item(keys::PK, AttributeValue::S(keys::LEGACY_SENT.into()))
                .item(keys::SK, AttributeValue::S(key))
                .item("status", AttributeValue::S("sending".into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    // The next launch reads the crashed enrollment (repaired, its send not handed on again)
    // and enters the other contact if it was not yet.
    launch(&mut rt).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<String> = sends(rt.store()).into_iter().map(|(c, _, _)| c).collect();
    assert_eq!(
        got,
        vec![other.to_string()],
        "{crashed}'s send went out before"
    );
    // Repaired: the journal holds its transition, and reading it again changes nothing.
    let counts = rt.journal("upgrade").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.entered, 2);
    launch(&mut rt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sends(rt.store()).len(), 1);
}
