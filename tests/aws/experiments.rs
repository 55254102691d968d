//! Experiments on AWS (issue 13, DESIGN §3.1), through the deployed functions' handlers on
//! DynamoDB and SQS in the emulator: conversions journaled once per entry (held-out entries
//! included, window ends included, after the enrollment ended) and each converting entry's
//! `watch#` item removed; a variant step's winner checked by the `tick` function at its first
//! send + `after`, re-armed a day later while the sends are short, then sent to every later
//! entry, a check due at the same instant as a launch counting that launch's sends; and the
//! policy's global control group skipped but for transactional messages. Who is held out,
//! which variant and who is in the control group are computed apart here with `sha2`, from
//! the written formula.

use std::collections::BTreeSet;
use std::time::Instant;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::handlers::{self, detail_type};
use relance_aws::sqs::SqsQueues;
use relance_core::contact::Contact;
use relance_core::inbound::decode_send;
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{JournalStore, SourceFormat, Status};
use relance_runtime::runtime::Runtime;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{at, create_queue, drain, emulator, sqs_event};

/// DESIGN §3.1's bucket, computed apart from relance-core: the first 8 bytes of SHA-256 of
/// `text`, big-endian, mod 10,000.
fn bucket(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 10_000
}

/// One deployment on fresh tables: the functions' runtime (flushing once per batch, as
/// deployed), the state table's name, the email and step queues.
struct Deployed {
    rt: Runtime<DynamoStore>,
    table: String,
    email: String,
    step: String,
    queues: SqsQueues,
}

impl Deployed {
    fn new(name: &str) -> Deployed {
        let emu = emulator();
        Deployed::on(name, emu.dynamo.clone(), emu.runtime.handle().clone())
    }

    /// A deployment whose store's DynamoDB requests are counted by the returned meter (the
    /// test's own reads of the table are not).
    fn metered(name: &str) -> (Deployed, crate::support::Metered) {
        let metered = crate::support::metered();
        let d = Deployed::on(
            name,
            metered.dynamo.clone(),
            metered.runtime.handle().clone(),
        );
        (d, metered)
    }

    fn on(
        name: &str,
        dynamo: aws_sdk_dynamodb::Client,
        handle: tokio::runtime::Handle,
    ) -> Deployed {
        let emu = emulator();
        let prefix = format!("x{}-{name}-", std::process::id());
        let mut config = AwsConfig::with_prefix(&prefix, 2);
        emu.runtime
            .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
            .unwrap_or_else(|e| panic!("{e}"));
        let email = create_queue(&format!("{prefix}email"));
        let step = create_queue(&format!("{prefix}step"));
        config.queues.email = Some(email.clone());
        let queues = SqsQueues::new(emu.sqs.clone(), Bridge::new(emu.runtime.handle().clone()));
        let mut store = DynamoStore::new(dynamo, config.clone(), Bridge::new(handle))
            .with_dispatch(AwsDispatch::new(queues.clone(), config.queues.clone()));
        store.set_auto_flush(false);
        Deployed {
            rt: Runtime::new(store),
            table: config.state_table.clone(),
            email,
            step,
            queues,
        }
    }

    /// Puts and activates a scenario, as `relance deploy` does.
    fn activate(&mut self, yaml: &str, now: DateTime<Utc>) -> String {
        let put = self
            .rt
            .put_scenario(yaml, SourceFormat::Yaml, now)
            .unwrap_or_else(|e| panic!("{e}"));
        self.rt
            .set_status(&put.id, Status::Active, now)
            .unwrap_or_else(|e| panic!("{e}"));
        self.rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
        put.id
    }

    /// The trigger function given one EventBridge event at its `time`.
    fn trigger(&mut self, kind: &str, time: DateTime<Utc>, detail: Value) {
        let event: EventBridgeEvent<Value> = serde_json::from_value(json!({
            "version": "0", "id": format!("{kind}-{time}"), "detail-type": kind,
            "source": "com.example.shop", "account": "000000000000", "time": time,
            "region": "us-east-1", "resources": [], "detail": detail,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        handlers::trigger(&mut self.rt, None, &event, time)
            .unwrap_or_else(|e| panic!("trigger {kind} {detail}: {e}", detail = event.detail));
    }

    /// An activity event of `contact` at `time` through the trigger function.
    fn activity(&mut self, contact: &str, name: &str, properties: Value, time: DateTime<Utc>) {
        self.trigger(
            detail_type::ACTIVITY,
            time,
            json!({"contact": contact, "event": name, "properties": properties, "at": time}),
        );
    }

    /// SES open events (through SNS into SQS) for `contacts`, ten per engagement invocation.
    fn opens(&mut self, scenario: &str, step: &str, contacts: &[String], time: DateTime<Utc>) {
        let bodies: Vec<(String, String)> = contacts
            .iter()
            .map(|c| (format!("open-{c}"), ses_open(c, scenario, step, time)))
            .collect();
        for batch in bodies.chunks(10) {
            let failed =
                handlers::engagement(&mut self.rt, &sqs_event(batch), time).batch_item_failures;
            assert!(failed.is_empty(), "engagement failed: {failed:?}");
        }
    }

    /// The tick function at `now`.
    fn tick(&mut self, now: DateTime<Utc>) -> handlers::TickSummary {
        let dispatch = crate::support::dispatch(&self.queues, Some(&self.step), None);
        handlers::tick(&mut self.rt, &dispatch, now).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (contact, step, message) of each send now on the email queue, consumed.
    fn sends(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = drain(&self.email)
            .iter()
            .map(|(_, body)| {
                let (_, send) = decode_send(body).unwrap_or_else(|e| panic!("{e}: {body}"));
                (send.contact, send.step, send.message)
            })
            .collect();
        out.sort();
        out
    }

    fn records(&mut self, scenario: &str) -> Vec<Record> {
        self.rt
            .store()
            .records(scenario, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn path(&mut self, scenario: &str, contact: &str) -> Vec<Record> {
        self.rt
            .path(scenario, contact)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The sort keys of a contact's conversion watches, read from the table itself: a Query
    /// on the contact's partition.
    fn watches(&self, contact: &str) -> Vec<String> {
        let emu = emulator();
        emu.runtime
            .block_on(
                emu.dynamo
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :w)")
                    .expression_attribute_values(
                        ":pk",
                        AttributeValue::S(format!("contact#{contact}")),
                    )
                    .expression_attribute_values(":w", AttributeValue::S("watch#".into()))
                    .consistent_read(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
            .collect()
    }

    /// When a scenario's due slot (`launch` item `{scenario}#{zone}`) is next due, read from
    /// the table itself.
    fn slot_due(&self, scenario: &str, zone: &str) -> Option<DateTime<Utc>> {
        let emu = emulator();
        let item = emu
            .runtime
            .block_on(
                emu.dynamo
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S("launch".into()))
                    .key("sk", AttributeValue::S(format!("{scenario}#{zone}")))
                    .consistent_read(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .item?;
        let micros: i64 = item
            .get("next_at")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("launch item without next_at: {item:?}"));
        DateTime::from_timestamp_micros(micros)
    }
}

/// SES's open event for a send of `scenario`'s `step` to `contact`, as SNS delivers it to the
/// engagement queue (the shape of `events/engagement.ses-open.sqs.json`).
fn ses_open(contact: &str, scenario: &str, step: &str, time: DateTime<Utc>) -> String {
    let t = time.to_rfc3339_opts(SecondsFormat::Millis, true);
    let ses = json!({
        "eventType": "Open",
        "mail": {
            "timestamp": t, "source": "news@example.com", "sendingAccountId": "000000000000",
            "messageId": format!("ses-{scenario}-{contact}"),
            "destination": [format!("{contact}@example.org")],
            "tags": {"relance_contact": [contact], "relance_scenario": [scenario],
                     "relance_step": [step], "ses:configuration-set": ["relance"]},
        },
        "open": {"timestamp": t, "userAgent": "Mozilla/5.0", "ipAddress": "192.0.2.1"},
    });
    json!({
        "Type": "Notification", "MessageId": format!("sns-{scenario}-{contact}"),
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:relance-ses-events",
        "Message": ses.to_string(), "Timestamp": t,
    })
    .to_string()
}

fn of_kind(records: &[Record], kind: RecordKind) -> Vec<&Record> {
    records.iter().filter(|r| r.kind == kind).collect()
}

const CONVERSION: &str = r#"
id: awsconv
timezone: UTC
launch: {type: trigger, event: signup}
holdout: {percent: 50}
conversion:
  event: purchase
  where: {field: amount, op: ge, value: 20}
  within: P2D
  value: amount
messages:
  hello: {channel: email, subject: Hi, text: Hi}
steps:
  - {id: hello, send: hello, next: done}
  - {id: done, end: success}
"#;

#[test]
fn conversions_are_journaled_once_per_entry_and_their_watches_removed() {
    if crate::support::offline() {
        return;
    }
    let started = Instant::now();
    let (mut d, metered) = Deployed::metered("conv");
    let t0 = at("2026-12-01T09:00:00Z");
    let id = d.activate(CONVERSION, t0 - TimeDelta::hours(1));
    let ids: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let held = |c: &str| bucket(&format!("awsconv:holdout:{c}")) < 5000;
    // Converting: k0 and k1 sent the message, k3 held out.
    assert!(
        !held("k0") && !held("k1") && held("k3"),
        "the fixture's holdout"
    );
    for c in &ids {
        d.trigger(
            detail_type::CONTACT,
            t0 - TimeDelta::minutes(30),
            json!({"contact": {"id": c, "email": format!("{c}@example.org")}}),
        );
    }
    for c in &ids {
        d.activity(c, "signup", json!({}), t0);
    }
    assert_eq!(ids.iter().map(|c| d.watches(c).len()).sum::<usize>(), 8);
    // k0 converts at +1h with 30, then buys again (its entry converted already); k1 buys
    // for 10 (below the `where`), then for "25" a day later; k2 buys after the window; k3
    // (held out) exactly at its end; k4 visits. k0 enters again on day 2 and that entry
    // converts on its own. k5..k7 do nothing.
    let h = |s: &str| at(s);
    let events: [(&str, &str, Value, DateTime<Utc>); 9] = [
        (
            "k0",
            "purchase",
            json!({"amount": 30}),
            h("2026-12-01T10:00:00Z"),
        ),
        (
            "k4",
            "visit",
            json!({"amount": 40}),
            h("2026-12-01T10:00:00Z"),
        ),
        (
            "k0",
            "purchase",
            json!({"amount": 99}),
            h("2026-12-01T11:00:00Z"),
        ),
        (
            "k1",
            "purchase",
            json!({"amount": 10}),
            h("2026-12-01T12:00:00Z"),
        ),
        (
            "k1",
            "purchase",
            json!({"amount": "25"}),
            h("2026-12-02T09:00:00Z"),
        ),
        ("k0", "signup", json!({}), h("2026-12-02T10:00:00Z")),
        (
            "k0",
            "purchase",
            json!({"amount": 50}),
            h("2026-12-02T11:00:00Z"),
        ),
        (
            "k3",
            "purchase",
            json!({"amount": 40}),
            h("2026-12-03T09:00:00Z"),
        ),
        (
            "k2",
            "purchase",
            json!({"amount": 50}),
            h("2026-12-04T09:00:00Z"),
        ),
    ];
    metered.meter.reset();
    for (c, name, properties, time) in events {
        d.activity(c, name, properties, time);
    }
    // Each event read its contact's watches with a Query on the contact's partition: the
    // functions never scan for conversions.
    let dynamo = |ops: &[&str]| metered.meter.total("DynamoDB", ops);
    assert_eq!(dynamo(&["Scan"]), 0, "{:?}", metered.meter.counts());
    assert!(dynamo(&["Query"]) >= 9, "{:?}", metered.meter.counts());

    let records = d.records(&id);
    let mut converted: Vec<(String, String, String, String)> =
        of_kind(&records, RecordKind::Converted)
            .iter()
            .map(|r| {
                (
                    r.contact.clone(),
                    r.enrollment.clone().unwrap_or_default(),
                    r.at.to_rfc3339(),
                    r.value
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )
            })
            .collect();
    converted.sort();
    let row = |c: &str, e: &str, t: &str, v: &str| (c.into(), e.into(), t.into(), v.into());
    assert_eq!(
        converted,
        vec![
            row("k0", "awsconv:k0:1", "2026-12-01T10:00:00+00:00", "30"),
            row("k0", "awsconv:k0:2", "2026-12-02T11:00:00+00:00", "50"),
            row("k1", "awsconv:k1:1", "2026-12-02T09:00:00+00:00", "25.0"),
            row("k3", "awsconv:k3:1", "2026-12-03T09:00:00+00:00", "40"),
        ]
    );
    // Each conversion is in its contact's path, after its entry ended (held out or not).
    for c in ["k0", "k1", "k3"] {
        let path = d.path(&id, c);
        for conv in of_kind(&path, RecordKind::Converted) {
            let ended = path
                .iter()
                .find(|r| r.kind == RecordKind::Ended && r.enrollment == conv.enrollment)
                .unwrap_or_else(|| panic!("{c}: no end for {:?}: {path:?}", conv.enrollment));
            assert!(ended.at < conv.at, "{c}: converted before its entry ended");
        }
        let held_out = path.iter().any(|r| r.kind == RecordKind::HeldOut);
        let sent = path.iter().any(|r| r.kind == RecordKind::Sent);
        assert_eq!((held_out, sent), (held(c), !held(c)), "{c}: {path:?}");
    }
    // The converting entries' watches are gone, and so is k2's, whose window had passed
    // when it bought; the others' are still there.
    for c in ["k0", "k1", "k2", "k3"] {
        assert_eq!(d.watches(c), Vec::<String>::new(), "{c}");
    }
    for c in ["k4", "k5", "k6", "k7"] {
        assert_eq!(d.watches(c), [format!("watch#awsconv:{c}:1")], "{c}");
    }
    // The entries not held out were sent the message: k0 once per entry.
    let mut expected: Vec<(String, String, String)> = ids
        .iter()
        .filter(|c| !held(c))
        .map(|c| (c.clone(), "hello".to_string(), "hello".to_string()))
        .collect();
    expected.push(("k0".into(), "hello".into(), "hello".into()));
    expected.sort();
    assert_eq!(d.sends(), expected);
    eprintln!(
        "experiments: conversions on the emulator in {:.2?}",
        started.elapsed()
    );
}

const WINNER: &str = r#"
id: awswin
timezone: UTC
launch: {type: trigger, event: signup}
messages:
  a: {channel: email, subject: A, text: "Start at https://example.org/a"}
  b: {channel: email, subject: B, text: "Start at https://example.org/b"}
steps:
  - id: mail
    send:
      variants:
        - {message: a, percent: 50}
        - {message: b, percent: 50}
      winner: {metric: opened, after: PT6H, min_sends: 50, confidence: 0.95}
    next: done
  - {id: done, end: success}
"#;

/// The signups of `contacts` at `time`, through the trigger function.
fn signups(d: &mut Deployed, contacts: &[String], time: DateTime<Utc>) {
    for c in contacts {
        d.activity(c, "signup", json!({}), time);
    }
}

/// Who opens: every 10th of `a`'s contacts, 2 in 5 of `b`'s.
fn openers(a: &[String], b: &[String]) -> Vec<String> {
    let a = a.iter().enumerate().filter(|(i, _)| i % 10 == 0);
    let b = b.iter().enumerate().filter(|(i, _)| i % 5 < 2);
    a.chain(b).map(|(_, c)| c.clone()).collect()
}

#[test]
fn the_tick_finds_the_winner_once_the_sends_suffice_and_later_entries_get_it() {
    if crate::support::offline() {
        return;
    }
    let started = Instant::now();
    let mut d = Deployed::new("win");
    let day1 = at("2026-12-01T10:00:00Z");
    let day2 = day1 + TimeDelta::days(1);
    let id = d.activate(WINNER, day1 - TimeDelta::days(1));
    // Contacts by variant, from the formula: 20 of each on day 1, 40 more of each on day 2
    // (60 each, min_sends 50), and one more of `a`'s bucket who signs up after the winner.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for c in (0..1000).map(|i| format!("w{i:03}")) {
        let side = if bucket(&format!("awswin:mail:{c}")) < 5000 {
            &mut a
        } else {
            &mut b
        };
        if side.len() < 61 {
            side.push(c);
        }
        if a.len() == 61 && b.len() == 60 {
            break;
        }
    }
    assert_eq!((a.len(), b.len()), (61, 60), "enough ids of each variant");
    let late = a.pop().unwrap_or_default();
    let contacts: Vec<Contact> = a
        .iter()
        .chain(&b)
        .chain([&late])
        .map(|c| {
            Contact::from_json(json!({"id": c, "email": format!("{c}@example.org")}))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    d.rt.import(&contacts, day1 - TimeDelta::days(1), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    d.rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    let variant_sends = |sends: &[(String, String, String)], m: &str| {
        sends
            .iter()
            .filter(|(_, s, msg)| s == "mail" && msg == m)
            .count()
    };

    // Day 1: 20 + 20 sends, each contact its bucket's variant; the check is armed at the
    // first send + 6h.
    signups(&mut d, &[&a[..20], &b[..20]].concat(), day1);
    let sent = d.sends();
    assert_eq!(
        (variant_sends(&sent, "a"), variant_sends(&sent, "b")),
        (20, 20)
    );
    let check = day1 + TimeDelta::hours(6);
    assert_eq!(d.slot_due(&id, "winner#mail"), Some(check));
    d.opens(
        &id,
        "mail",
        &openers(&a[..20], &b[..20]),
        day1 + TimeDelta::hours(1),
    );
    // Not due a minute before; due at +6h, where 20 sends a variant are short of min_sends:
    // no winner, and the check is re-armed a day later.
    d.tick(check - TimeDelta::minutes(1));
    assert_eq!(d.slot_due(&id, "winner#mail"), Some(check));
    d.tick(check);
    assert!(of_kind(&d.records(&id), RecordKind::Winner).is_empty());
    assert_eq!(
        d.slot_due(&id, "winner#mail"),
        Some(check + TimeDelta::days(1))
    );

    // Day 2: 40 + 40 more sends, still by bucket; opens: a 6 of 60, b 24 of 60.
    signups(&mut d, &[&a[20..], &b[20..]].concat(), day2);
    let sent = d.sends();
    assert_eq!(
        (variant_sends(&sent, "a"), variant_sends(&sent, "b")),
        (40, 40)
    );
    d.opens(
        &id,
        "mail",
        &openers(&a[20..], &b[20..]),
        day2 + TimeDelta::hours(1),
    );
    d.tick(check + TimeDelta::days(1));
    let records = d.records(&id);
    let winners = of_kind(&records, RecordKind::Winner);
    assert_eq!(winners.len(), 1, "{winners:?}");
    let w = winners[0];
    assert_eq!(w.at, check + TimeDelta::days(1));
    assert_eq!(
        (w.step.as_deref(), w.message.as_deref()),
        (Some("mail"), Some("b"))
    );
    assert_eq!(
        serde_json::to_value(w).unwrap_or_default()["contact"],
        Value::Null
    );
    assert_eq!(of_kind(&records, RecordKind::Opened).len(), 2 + 8 + 4 + 16);
    assert_eq!(
        d.slot_due(&id, "winner#mail"),
        None,
        "no check after the winner"
    );

    // A later entry whose bucket is `a` is sent the winner, journaled `assigned`.
    assert!(bucket(&format!("awswin:mail:{late}")) < 5000);
    d.activity(&late, "signup", json!({}), day2 + TimeDelta::hours(7));
    assert_eq!(d.sends(), [(late.clone(), "mail".into(), "b".into())]);
    let path = d.path(&id, &late);
    let message = |kind| {
        of_kind(&path, kind)
            .iter()
            .map(|r| r.message.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(message(RecordKind::Assigned), ["b"]);
    assert_eq!(message(RecordKind::Sent), ["b"]);
    // A tick the next day finds nothing more to decide.
    d.tick(check + TimeDelta::days(2));
    assert_eq!(of_kind(&d.records(&id), RecordKind::Winner).len(), 1);
    eprintln!(
        "experiments: the winner on the emulator in {:.2?}",
        started.elapsed()
    );
}

const NEWS: &str = r#"
id: awsgcg
timezone: UTC
launch: {type: trigger, event: signup}
messages:
  news: {channel: email, subject: News, text: News}
  receipt: {channel: email, type: transactional, subject: Receipt, text: Thanks}
steps:
  - {id: news, send: news, next: receipt}
  - {id: receipt, send: receipt, next: done}
  - {id: done, end: success}
"#;

#[test]
fn the_global_control_group_is_sent_only_transactional_messages() {
    if crate::support::offline() {
        return;
    }
    let started = Instant::now();
    let mut d = Deployed::new("gcg");
    let t0 = at("2026-12-01T09:00:00Z");
    d.rt.set_policy(
        "holdout: {percent: 30, seed: \"2026\"}\n",
        t0 - TimeDelta::hours(2),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
    let id = d.activate(NEWS, t0 - TimeDelta::hours(1));
    let ids: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
    let member = |c: &str| bucket(&format!("holdout:2026:{c}")) < 3000;
    assert!(
        ids.iter().any(|c| member(c)) && ids.iter().any(|c| !member(c)),
        "the fixture has members and non-members"
    );
    for c in &ids {
        d.trigger(
            detail_type::CONTACT,
            t0 - TimeDelta::minutes(30),
            json!({"contact": {"id": c, "email": format!("{c}@example.org")}}),
        );
    }
    for c in &ids {
        d.activity(c, "signup", json!({}), t0);
    }
    let mut expected = Vec::new();
    for c in &ids {
        let path = d.path(&id, c);
        let steps = |kind| -> BTreeSet<String> {
            of_kind(&path, kind)
                .iter()
                .filter_map(|r| r.step.clone())
                .collect()
        };
        let skipped: Vec<(Option<&str>, Option<&str>)> = of_kind(&path, RecordKind::Skipped)
            .iter()
            .map(|r| (r.step.as_deref(), r.reason.as_deref()))
            .collect();
        if member(c) {
            assert_eq!(skipped, [(Some("news"), Some("global_holdout"))], "{c}");
            assert_eq!(
                steps(RecordKind::Sent),
                BTreeSet::from(["receipt".into()]),
                "{c}"
            );
        } else {
            assert!(skipped.is_empty(), "{c}: {skipped:?}");
            assert_eq!(
                steps(RecordKind::Sent),
                BTreeSet::from(["news".into(), "receipt".into()]),
                "{c}"
            );
            expected.push((c.clone(), "news".to_string(), "news".to_string()));
        }
        expected.push((c.clone(), "receipt".to_string(), "receipt".to_string()));
    }
    expected.sort();
    assert_eq!(d.sends(), expected, "what reached the email queue");
    eprintln!(
        "experiments: the global control group on the emulator in {:.2?}",
        started.elapsed()
    );
}

const DAILY: &str = r#"
id: awsdaily
timezone: UTC
launch: {type: recurring, frequency: daily, time: "10:00"}
messages:
  a: {channel: email, subject: A, text: A}
  b: {channel: email, subject: B, text: B}
steps:
  - id: mail
    send:
      variants:
        - {message: a, percent: 50}
        - {message: b, percent: 50}
      winner: {metric: opened, after: P1D, min_sends: 50, confidence: 0.95}
    next: done
  - {id: done, end: success}
"#;

#[test]
fn a_winner_check_due_with_a_launch_counts_that_launchs_sends() {
    if crate::support::offline() {
        return;
    }
    let started = Instant::now();
    let mut d = Deployed::new("daily");
    let day1 = at("2026-12-01T10:00:00Z");
    let day2 = day1 + TimeDelta::days(1);
    // 30 contacts of each variant: 30 sends each on day 1 (short of min_sends), 60 with the
    // launch of day 2, due at the same instant as the check.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for c in (0..1000).map(|i| format!("d{i:03}")) {
        let side = if bucket(&format!("awsdaily:mail:{c}")) < 5000 {
            &mut a
        } else {
            &mut b
        };
        if side.len() < 30 {
            side.push(c);
        }
    }
    assert_eq!((a.len(), b.len()), (30, 30), "enough ids of each variant");
    let contacts: Vec<Contact> = a
        .iter()
        .chain(&b)
        .map(|c| {
            Contact::from_json(json!({"id": c, "email": format!("{c}@example.org")}))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    d.rt.import(&contacts, day1 - TimeDelta::days(1), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let id = d.activate(DAILY, day1 - TimeDelta::hours(1));
    d.tick(day1);
    assert_eq!(d.sends().len(), 60);
    assert_eq!(d.slot_due(&id, "winner#mail"), Some(day2));
    d.opens(&id, "mail", &openers(&a, &b), day1 + TimeDelta::hours(1));
    // Day 2 at 10:00: the launch, then the check (same instant), which counts its 60 sends.
    d.tick(day2);
    assert_eq!(d.sends().len(), 60);
    let records = d.records(&id);
    let winners: Vec<(DateTime<Utc>, Option<&str>)> = of_kind(&records, RecordKind::Winner)
        .iter()
        .map(|r| (r.at, r.message.as_deref()))
        .collect();
    assert_eq!(winners, [(day2, Some("b"))]);
    eprintln!(
        "experiments: a check due with a launch on the emulator in {:.2?}",
        started.elapsed()
    );
}
