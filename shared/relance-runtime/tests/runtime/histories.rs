//! Scenario tests as scripted histories: a scenario file, a contacts list and an events
//! script are played on the virtual clock through the public API, and each test states the
//! sends, skips, branches and ends it expects.
//!
//! The helpers turn journal records into short lines, so that an expectation reads like the
//! journal itself: `"a first 2026-03-27T15:00:00Z"` is contact `a` sent by step `first`.

use chrono::{DateTime, SecondsFormat, Utc};
use relance_core::engine::{
    Effect, Engine, Enrollment, EnrollmentState, Entry, EntryRequest, Input, Outcome,
};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::SourceFormat;
use relance_core::script::ScriptedEvent;
use relance_core::{ActivityEvent, Contact, Engagement, EngagementKind, Format, History};
use relance_runtime::simulate::Simulation;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// What a played history left behind.
pub(crate) struct Played {
    pub(crate) records: Vec<Record>,
    enrollments: Vec<Enrollment>,
    contacts: Vec<Contact>,
}

impl Played {
    /// A contact as it is at the end of the run.
    fn contact(&self, id: &str) -> &Contact {
        self.contacts
            .iter()
            .find(|c| c.id() == id)
            .unwrap_or_else(|| panic!("no contact {id}"))
    }

    /// The records of one contact.
    fn of(&self, id: &str) -> Vec<&Record> {
        self.records.iter().filter(|r| r.contact == id).collect()
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn engine(yaml: &str) -> Engine {
    match relance_core::validate::parse(yaml, Format::Yaml) {
        Ok((scenario, _warnings)) => Engine::new(scenario),
        Err(problems) => panic!("the scenario does not validate: {problems:#?}"),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn contact(v: Value) -> Contact {
    Contact::from_json(v).unwrap_or_else(|e| panic!("bad contact: {e}"))
}

/// Plays `yaml` over the contacts and events (JSON lines) from `start` for `until`.
pub(crate) fn play(yaml: &str, contacts: &str, events: &str, start: &str, until: &str) -> Played {
    let scenario = engine(yaml).scenario().clone();
    let contacts = json_lines(contacts).into_iter().map(contact).collect();
    let events = json_lines(events)
        .into_iter()
        .map(|v| ScriptedEvent::from_json(v).unwrap_or_else(|e| panic!("bad event: {e}")))
        .collect();
    let until = until
        .parse()
        .unwrap_or_else(|e| panic!("until {until}: {e}"));
    let mut records = Vec::new();
    let mut sim = Simulation::new(scenario, yaml, SourceFormat::Yaml, utc(start), until);
    sim.contacts = contacts;
    sim.events = events;
    let mut done = sim
        .run(&mut |r: &Record| records.push(r.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = done.runtime.store();
    Played {
        records,
        enrollments: store.enrollments(),
        contacts: store.contacts(),
    }
}

fn kind(r: &Record) -> String {
    format!("{:?}", r.kind).to_lowercase()
}

fn step(r: &Record) -> &str {
    r.step.as_deref().unwrap_or("(entry)")
}

/// `contact step at` for every send.
fn sends(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Sent)
        .map(|r| format!("{} {} {}", r.contact, step(r), stamp(r.at)))
        .collect()
}

/// `contact step reason at` for every skip; an entry skip has the step `(entry)`.
fn skips(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Skipped)
        .map(|r| {
            let reason = r.reason.as_deref().unwrap_or("?");
            format!("{} {} {reason} {}", r.contact, step(r), stamp(r.at))
        })
        .collect()
}

/// `contact end at` for every end, `contact exited step at` for every exit.
fn ends(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r.kind {
            RecordKind::Ended => Some(format!(
                "{} {} {}",
                r.contact,
                r.end.as_deref().unwrap_or("?"),
                stamp(r.at)
            )),
            RecordKind::Exited => Some(format!("{} exited {} {}", r.contact, step(r), stamp(r.at))),
            _ => None,
        })
        .collect()
}

/// `contact step branch next` for every condition step.
fn branches(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Branched)
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.contact,
                step(r),
                r.branch.as_deref().unwrap_or("?"),
                r.next.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

/// `contact at` for every entry.
fn entries(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Entered)
        .map(|r| format!("{} {}", r.contact, stamp(r.at)))
        .collect()
}

/// `kind step reason at` for every record of kinds waiting and resumed (the holds).
fn holds(records: &[&Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Waiting | RecordKind::Resumed))
        .map(|r| {
            format!(
                "{} {} {} {}",
                kind(r),
                step(r),
                r.reason.as_deref().unwrap_or("?"),
                stamp(r.at)
            )
        })
        .collect()
}

/// One email message and a send → end scenario head, for the trigger and launch tests.
const ONE_SEND: &str = r#"
messages:
  m: {channel: email, subject: "Hello", text: "Hello"}
steps:
  - {id: hello, send: m, next: done}
  - {id: done, end: success}
"#;

// ---------------------------------------------------------------------------------------------
// 1. Delays at local times, across DST
// ---------------------------------------------------------------------------------------------

#[test]
fn after_two_days_at_nine_in_paris_lands_on_the_spring_forward_sunday() {
    let yaml = r#"
id: dst-paris
timezone: Europe/Paris
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: second}
  - {id: second, delay: {after: P2D, at: "09:00"}, send: m, next: done}
  - {id: done, end: success}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        "",
        "2026-03-27T15:00:00Z",
        "P5D",
    );
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-03-27T15:00:00Z",
            "a second 2026-03-29T07:00:00Z" // 09:00 CEST, the first day of summer time
        ]
    );
    assert_eq!(ends(&p.records), ["a success 2026-03-29T07:00:00Z"]);
}

#[test]
fn after_one_day_at_nine_in_new_york_across_the_fall_back_is_25_hours() {
    let yaml = r#"
id: dst-new-york
timezone: America/New_York
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: second}
  - {id: second, delay: {after: P1D, at: "09:00"}, send: m, next: third}
  - {id: third, delay: {after: P1D, at: "09:00"}, send: m, next: done}
  - {id: done, end: success}
"#;
    // 2026-10-31 09:00 EDT; on 2026-11-01 at 02:00 EDT clocks go back to 01:00 EST.
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        "",
        "2026-10-31T13:00:00Z",
        "P5D",
    );
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-10-31T13:00:00Z",
            "a second 2026-11-01T14:00:00Z", // 09:00 EST
            "a third 2026-11-02T14:00:00Z"
        ]
    );
}

#[test]
fn local_time_reads_at_in_each_contacts_own_zone_unless_the_delay_says_otherwise() {
    let yaml = r#"
id: local-time
timezone: Europe/Paris
local_time: true
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: morning}
  - {id: morning, delay: {after: P1D, at: "09:00"}, send: m, next: paris}
  - {id: paris, delay: {after: P1D, at: "09:00", local_time: false}, send: m, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "ny", "email": "ny@example.com", "timezone": "America/New_York"}
{"id": "tokyo", "email": "tokyo@example.com", "timezone": "Asia/Tokyo"}
{"id": "nozone", "email": "nozone@example.com"}
"#;
    let p = play(yaml, contacts, "", "2026-12-01T12:00:00Z", "P5D");
    let mut got = sends(&p.records);
    got.sort();
    assert_eq!(
        got,
        [
            "nozone first 2026-12-01T12:00:00Z",
            "nozone morning 2026-12-02T08:00:00Z", // no zone of its own: Paris
            "nozone paris 2026-12-03T08:00:00Z",
            "ny first 2026-12-01T12:00:00Z",
            "ny morning 2026-12-02T14:00:00Z", // 09:00 EST
            "ny paris 2026-12-03T08:00:00Z",   // 09:00 in Paris, the scenario's zone
            "tokyo first 2026-12-01T12:00:00Z",
            "tokyo morning 2026-12-02T00:00:00Z", // 21:00 JST + 1 day, at 09:00 JST
            "tokyo paris 2026-12-03T08:00:00Z",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 2–3. Entry rules: once_per, already running
// ---------------------------------------------------------------------------------------------

#[test]
fn once_per_skips_a_purchase_inside_the_window_and_enters_after_it() {
    let yaml = format!(
        "id: thanks\nlaunch: {{type: trigger, event: purchase}}\naudience: {{all: true}}\nonce_per: P7D\n{ONE_SEND}"
    );
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-03T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-08T12:00:00Z", "contact": "a", "event": "purchase"}
"#;
    let p = play(
        &yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        events,
        "2026-12-01T00:00:00Z",
        "P10D",
    );
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-12-01T10:00:00Z",
            "a hello 2026-12-08T12:00:00Z"
        ]
    );
    assert_eq!(
        skips(&p.records),
        ["a (entry) once_per 2026-12-03T10:00:00Z"]
    );
    assert_eq!(p.enrollments.len(), 2);
}

#[test]
fn a_second_trigger_while_the_first_enrollment_waits_is_skipped_as_already_running() {
    let yaml = r#"
id: thanks-later
launch: {type: trigger, event: purchase}
audience: {all: true}
messages:
  m: {channel: email, subject: "Thanks", text: "Thanks"}
steps:
  - {id: thank, send: m, next: later}
  - {id: later, delay: {after: P3D}, send: m, next: done}
  - {id: done, end: success}
"#;
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-02T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-05T10:00:00Z", "contact": "a", "event": "purchase"}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        events,
        "2026-12-01T00:00:00Z",
        "P5D",
    );
    assert_eq!(
        skips(&p.records),
        ["a (entry) already_running 2026-12-02T10:00:00Z"]
    );
    // Once the first enrollment ended (12-04), a purchase enters again.
    assert_eq!(
        sends(&p.records),
        [
            "a thank 2026-12-01T10:00:00Z",
            "a later 2026-12-04T10:00:00Z",
            "a thank 2026-12-05T10:00:00Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Same-instant ordering: events before timers
// ---------------------------------------------------------------------------------------------

#[test]
fn an_open_at_the_timeout_instant_wins_over_the_timeout() {
    let yaml = r#"
id: race
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: wait}
  - id: wait
    wait_for: {opened: first, timeout: P1D}
    on_event: thanks
    on_timeout: reminder
  - {id: thanks, send: m, next: done}
  - {id: reminder, send: m, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
"#;
    let events = r#"{"at": "2026-12-02T09:00:00Z", "contact": "a", "opened": "first"}"#;
    let p = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P3D");
    assert_eq!(
        holds(&p.of("a")),
        [
            "waiting wait wait_for 2026-12-01T09:00:00Z",
            "resumed wait event 2026-12-02T09:00:00Z"
        ]
    );
    assert_eq!(
        holds(&p.of("b")),
        [
            "waiting wait wait_for 2026-12-01T09:00:00Z",
            "resumed wait timeout 2026-12-02T09:00:00Z"
        ]
    );
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-12-01T09:00:00Z",
            "b first 2026-12-01T09:00:00Z",
            "a thanks 2026-12-02T09:00:00Z",
            "b reminder 2026-12-02T09:00:00Z"
        ]
    );
}

#[test]
fn an_open_at_the_instant_of_a_delayed_check_counts() {
    let yaml = r#"
id: openers
launch: {type: manual}
audience: {all: true}
messages:
  hello: {channel: email, subject: "Hi", text: "Hello"}
  nudge: {channel: sms, text: "Thanks for reading"}
steps:
  - {id: first, send: hello, next: second}
  - id: second
    delay: {after: P2D}
    if: {opened: first}
    then: sms
    else: done
  - {id: sms, send: nudge, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com", "phone": "+33600000001"}
{"id": "b", "email": "b@example.com", "phone": "+33600000002"}
"#;
    let events = r#"
{"at": "2026-12-03T09:00:00Z", "contact": "a", "opened": "first"}
{"at": "2026-12-03T09:00:01Z", "contact": "b", "opened": "first"}
"#;
    let p = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P7D");
    assert_eq!(
        branches(&p.records),
        ["a second then sms", "b second else done"]
    );
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-12-01T09:00:00Z",
            "b first 2026-12-01T09:00:00Z",
            "a sms 2026-12-03T09:00:00Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. exit_when
// ---------------------------------------------------------------------------------------------

const EXIT_ON_PURCHASE: &str = r#"
id: until-they-buy
launch: {type: manual}
audience: {all: true}
exit_when:
  - event: purchase
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: later}
  - {id: later, delay: {after: P2D}, send: m, next: wait}
  - id: wait
    wait_for: {opened: later, timeout: P2D}
    on_event: done
    on_timeout: done
  - {id: done, end: success}
"#;

#[test]
fn a_purchase_during_a_delay_exits_and_nothing_is_sent_after() {
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
"#;
    let events = r#"{"at": "2026-12-02T09:00:00Z", "contact": "a", "event": "purchase"}"#;
    let p = play(
        EXIT_ON_PURCHASE,
        contacts,
        events,
        "2026-12-01T09:00:00Z",
        "P7D",
    );
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-12-01T09:00:00Z",
            "b first 2026-12-01T09:00:00Z",
            "b later 2026-12-03T09:00:00Z"
        ]
    );
    assert_eq!(
        ends(&p.records),
        [
            "a exited later 2026-12-02T09:00:00Z",
            "b success 2026-12-05T09:00:00Z"
        ]
    );
    let exited = p
        .records
        .iter()
        .find(|r| r.kind == RecordKind::Exited)
        .map(|r| r.reason.clone());
    assert_eq!(exited, Some(Some("exit_when".to_string())));
    assert!(matches!(
        p.enrollments[0].state,
        EnrollmentState::Ended {
            outcome: Outcome::Exited,
            ..
        }
    ));
    assert!(
        p.of("a")
            .iter()
            .all(|r| r.at <= utc("2026-12-02T09:00:00Z"))
    );
}

#[test]
fn a_purchase_during_a_wait_for_exits() {
    let events = r#"{"at": "2026-12-04T09:00:00Z", "contact": "a", "event": "purchase"}"#;
    let p = play(
        EXIT_ON_PURCHASE,
        r#"{"id": "a", "email": "a@example.com"}"#,
        events,
        "2026-12-01T09:00:00Z",
        "P7D",
    );
    assert_eq!(ends(&p.records), ["a exited wait 2026-12-04T09:00:00Z"]);
}

#[test]
fn a_purchase_at_the_instant_a_delayed_send_is_due_exits_before_the_send() {
    let events = r#"{"at": "2026-12-03T09:00:00Z", "contact": "a", "event": "purchase"}"#;
    let p = play(
        EXIT_ON_PURCHASE,
        r#"{"id": "a", "email": "a@example.com"}"#,
        events,
        "2026-12-01T09:00:00Z",
        "P7D",
    );
    assert_eq!(sends(&p.records), ["a first 2026-12-01T09:00:00Z"]);
    assert_eq!(ends(&p.records), ["a exited later 2026-12-03T09:00:00Z"]);
}

#[test]
fn a_contact_who_bought_before_the_start_is_skipped_at_entry() {
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
"#;
    let events = r#"{"at": "2026-11-20T09:00:00Z", "contact": "a", "event": "purchase"}"#;
    let p = play(
        EXIT_ON_PURCHASE,
        contacts,
        events,
        "2026-12-01T09:00:00Z",
        "P1D",
    );
    assert_eq!(
        skips(&p.records),
        ["a (entry) exit_when 2026-12-01T09:00:00Z"]
    );
    assert_eq!(entries(&p.records), ["b 2026-12-01T09:00:00Z"]);
    assert_eq!(sends(&p.records), ["b first 2026-12-01T09:00:00Z"]);
}

// ---------------------------------------------------------------------------------------------
// 6–7. Actions seen by later conditions; branches
// ---------------------------------------------------------------------------------------------

#[test]
fn update_profile_and_tag_are_seen_by_later_conditions_in_the_same_run() {
    let yaml = r#"
id: profile
launch: {type: manual}
audience: {all: true}
steps:
  - {id: gold, action: {update_profile: {field: plan, value: gold}}, next: count}
  - {id: count, action: {update_profile: {field: visits, expression: "contact.visits + 1"}}, next: check}
  - id: check
    if: {all: [{field: plan, op: eq, value: gold}, {field: visits, op: eq, value: 3}]}
    then: tag
    else: missed
  - {id: tag, action: {tag: {add: [vip]}}, next: vip}
  - id: vip
    if: {tag: vip}
    then: won
    else: missed
  - {id: won, end: success}
  - {id: missed, end: failure}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "visits": 2}"#,
        "",
        "2026-12-01T09:00:00Z",
        "P1D",
    );
    assert_eq!(branches(&p.records), ["a check then tag", "a vip then won"]);
    assert_eq!(ends(&p.records), ["a success 2026-12-01T09:00:00Z"]);
    let a = p.contact("a");
    assert_eq!(a.field("plan"), Some(&json!("gold")));
    assert_eq!(a.field("visits"), Some(&json!(3)));
    assert_eq!(a.field("tags"), Some(&json!(["vip"])));
}

#[test]
fn an_expression_on_a_missing_field_fails_the_action_and_the_enrollment_goes_on() {
    let yaml = r#"
id: count
launch: {type: manual}
audience: {all: true}
steps:
  - {id: count, action: {update_profile: {field: visits, expression: "contact.visits + 1"}}, next: check}
  - id: check
    if: {field: visits, op: exists}
    then: counted
    else: not-counted
  - {id: counted, end: success}
  - {id: not-counted, end: neutral}
"#;
    let p = play(yaml, r#"{"id": "a"}"#, "", "2026-12-01T09:00:00Z", "P1D");
    let failed: Vec<_> = p
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Failed)
        .map(|r| (step(r).to_string(), r.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "count");
    assert!(failed[0].1.contains("visits"), "{}", failed[0].1);
    assert_eq!(ends(&p.records), ["a neutral 2026-12-01T09:00:00Z"]);
}

#[test]
fn branches_take_the_first_true_branch_else_otherwise() {
    let yaml = r#"
id: split
launch: {type: manual}
audience: {all: true}
steps:
  - id: split
    branches:
      - {when: {field: city, op: eq, value: Paris}, next: paris}
      - {when: {tag: vip}, next: vip}
    otherwise: rest
  - {id: paris, end: success}
  - {id: vip, end: neutral}
  - {id: rest, end: abandon}
"#;
    let contacts = r#"
{"id": "a", "city": "Paris", "tags": ["vip"]}
{"id": "b", "city": "Lyon", "tags": ["vip"]}
{"id": "c", "city": "Lyon"}
{"id": "d"}
"#;
    let p = play(yaml, contacts, "", "2026-12-01T09:00:00Z", "P1D");
    assert_eq!(
        branches(&p.records),
        [
            "a split 0 paris",
            "b split 1 vip",
            "c split otherwise rest",
            "d split otherwise rest"
        ]
    );
    assert_eq!(
        ends(&p.records),
        [
            "a success 2026-12-01T09:00:00Z",
            "b neutral 2026-12-01T09:00:00Z",
            "c abandon 2026-12-01T09:00:00Z",
            "d abandon 2026-12-01T09:00:00Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 8–9. Activity triggers: inactivity, pages
// ---------------------------------------------------------------------------------------------

const SHOPPERS: &str = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
{"id": "c", "email": "c@example.com"}
{"id": "d", "email": "d@example.com"}
"#;

#[test]
fn cart_abandoned_fires_30_minutes_after_the_last_cart_update_unless_anything_happens() {
    let yaml = format!(
        "id: cart\nlaunch: {{type: trigger, event: cart.abandoned, inactivity_minutes: 30}}\naudience: {{all: true}}\n{ONE_SEND}"
    );
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "cart.updated"}
{"at": "2026-12-01T10:10:00Z", "contact": "a", "event": "cart.updated"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "event": "cart.updated"}
{"at": "2026-12-01T10:20:00Z", "contact": "b", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "c", "event": "cart.updated"}
{"at": "2026-12-01T10:29:00Z", "contact": "c", "event": "page.visited", "url": "https://x.io/faq"}
{"at": "2026-12-01T10:00:00Z", "contact": "d", "event": "cart.updated"}
"#;
    let p = play(&yaml, SHOPPERS, events, "2026-12-01T00:00:00Z", "P1D");
    assert_eq!(
        entries(&p.records),
        ["d 2026-12-01T10:30:00Z", "a 2026-12-01T10:40:00Z"]
    );
    assert_eq!(
        sends(&p.records),
        [
            "d hello 2026-12-01T10:30:00Z",
            "a hello 2026-12-01T10:40:00Z"
        ]
    );
    assert!(p.of("b").is_empty() && p.of("c").is_empty());
}

#[test]
fn product_viewed_fires_once_after_the_last_view_and_is_cancelled_by_other_activity() {
    let yaml = format!(
        "id: viewed\nlaunch: {{type: trigger, event: product.viewed, inactivity_minutes: 10}}\naudience: {{all: true}}\n{ONE_SEND}"
    );
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "product.viewed", "product": "p1"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "event": "product.viewed", "product": "p1"}
{"at": "2026-12-01T10:05:00Z", "contact": "b", "event": "product.viewed", "product": "p2"}
{"at": "2026-12-01T10:00:00Z", "contact": "c", "event": "product.viewed", "product": "p1"}
{"at": "2026-12-01T10:05:00Z", "contact": "c", "event": "cart.updated"}
{"at": "2026-12-01T10:00:00Z", "contact": "d", "event": "product.viewed", "product": "p1"}
{"at": "2026-12-01T10:09:00Z", "contact": "d", "event": "purchase"}
"#;
    let p = play(&yaml, SHOPPERS, events, "2026-12-01T00:00:00Z", "P1D");
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-12-01T10:10:00Z",
            "b hello 2026-12-01T10:15:00Z"
        ]
    );
    assert!(p.of("c").is_empty() && p.of("d").is_empty());
}

#[test]
fn page_visited_matches_the_pattern_on_the_urls_path() {
    let yaml = format!(
        "id: pricing\nlaunch: {{type: trigger, event: page.visited, pages: [\"/pricing*\"]}}\naudience: {{all: true}}\n{ONE_SEND}"
    );
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "page.visited", "url": "https://x.io/pricing?p=1"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "event": "page.visited", "url": "https://x.io/about"}
{"at": "2026-12-01T11:00:00Z", "contact": "c", "event": "page.visited", "url": "https://x.io/pricing/teams"}
"#;
    let p = play(&yaml, SHOPPERS, events, "2026-12-01T00:00:00Z", "P1D");
    assert_eq!(
        entries(&p.records),
        ["a 2026-12-01T10:00:00Z", "c 2026-12-01T11:00:00Z"]
    );
    assert!(p.of("b").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. Scheduled launches
// ---------------------------------------------------------------------------------------------

#[test]
fn weekly_launch_runs_on_its_days_at_local_time_with_the_audience_of_each_occurrence() {
    let yaml = format!(
        r#"
id: weekly
timezone: Europe/Paris
launch: {{type: recurring, frequency: weekly, days: [mon, thu], time: "09:00"}}
audience:
  criteria: {{field: plan, op: eq, value: pro}}
{ONE_SEND}"#
    );
    let contacts = r#"
{"id": "a", "email": "a@example.com", "plan": "pro"}
{"id": "b", "email": "b@example.com", "plan": "free"}
"#;
    // b upgrades on Saturday.
    let events = r#"{"at": "2026-12-05T12:00:00Z", "contact": "b", "event": "contact.updated", "profile": {"plan": "pro"}}"#;
    // 2026-12-01 is a Tuesday.
    let p = play(&yaml, contacts, events, "2026-12-01T00:00:00Z", "P7D");
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-12-03T08:00:00Z",
            "a hello 2026-12-07T08:00:00Z",
            "b hello 2026-12-07T08:00:00Z"
        ]
    );
    assert_eq!(
        skips(&p.records),
        ["b (entry) audience 2026-12-03T08:00:00Z"]
    );
}

#[test]
fn daily_launch_at_two_times_follows_local_time_across_dst() {
    let yaml = format!(
        r#"
id: daily
timezone: Europe/Paris
launch: {{type: recurring, frequency: daily, times: ["09:00", "18:00"]}}
audience: {{all: true}}
{ONE_SEND}"#
    );
    let p = play(
        &yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        "",
        "2026-03-28T00:00:00Z",
        "P2D",
    );
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-03-28T08:00:00Z",
            "a hello 2026-03-28T17:00:00Z",
            "a hello 2026-03-29T07:00:00Z",
            "a hello 2026-03-29T16:00:00Z"
        ]
    );
}

#[test]
fn fixed_dates_are_local_times_in_the_scenario_zone_and_reevaluate_the_audience() {
    let yaml = format!(
        r#"
id: fixed
timezone: America/New_York
launch: {{type: fixed_dates, dates: ["2026-12-01T09:00", "2026-12-10T09:00:00Z", "2026-12-24T18:30"]}}
audience:
  criteria: {{not: {{field: churned, op: exists}}}}
{ONE_SEND}"#
    );
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
"#;
    let events = r#"{"at": "2026-12-15T12:00:00Z", "contact": "b", "event": "contact.updated", "profile": {"churned": true}}"#;
    let p = play(&yaml, contacts, events, "2026-11-30T00:00:00Z", "P30D");
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-12-01T14:00:00Z", // 09:00 EST
            "b hello 2026-12-01T14:00:00Z",
            "a hello 2026-12-10T09:00:00Z", // written with an offset: as is
            "b hello 2026-12-10T09:00:00Z",
            "a hello 2026-12-24T23:30:00Z" // 18:30 EST
        ]
    );
    assert_eq!(
        skips(&p.records),
        ["b (entry) audience 2026-12-24T23:30:00Z"]
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Clicks
// ---------------------------------------------------------------------------------------------

#[test]
fn clicked_with_link_ignore_query_and_link_attribute_inside_if_steps() {
    let yaml = r#"
id: clicks
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Offer", html: "<a href='https://x.io/offer'>Go</a>"}
steps:
  - {id: first, send: m, next: by-link}
  - id: by-link
    delay: {after: P1D}
    if: {clicked: first, link: "https://x.io/offer", ignore_query: true}
    then: exact-link
    else: exact-link
  - id: exact-link
    if: {clicked: first, link: "https://x.io/offer"}
    then: by-attribute
    else: by-attribute
  - id: by-attribute
    if: {clicked: first, link_attribute: cta}
    then: done
    else: done
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
{"id": "c", "email": "c@example.com"}
"#;
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "clicked": "first", "link": "https://x.io/offer?utm_source=mail", "link_attribute": "cta"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "clicked": "first", "link": "https://x.io/offer", "link_tags": ["footer"]}
{"at": "2026-12-01T10:00:00Z", "contact": "c", "clicked": "first", "link": "https://x.io/other", "link_attribute": "cta"}
"#;
    let p = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P2D");
    assert_eq!(
        branches(&p.records),
        [
            "a by-link then exact-link",
            "a exact-link else by-attribute",
            "a by-attribute then done",
            "b by-link then exact-link",
            "b exact-link then by-attribute",
            "b by-attribute else done",
            "c by-link else exact-link",
            "c exact-link else by-attribute",
            "c by-attribute then done",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 12–14. Sends: consent, addresses, quiet hours, caps, templates
// ---------------------------------------------------------------------------------------------

#[test]
fn sends_are_skipped_without_an_address_or_consent_and_after_an_unsubscribe() {
    let yaml = r#"
id: news
launch: {type: manual}
audience: {all: true}
messages:
  issue-1: {channel: email, type: newsletter, subject: "Issue 1", text: "..."}
  issue-2: {channel: email, type: newsletter, subject: "Issue 2", text: "..."}
steps:
  - {id: first, send: issue-1, next: second}
  - {id: second, delay: {after: P1D}, send: issue-2, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "phone": "+33600000002"}
{"id": "c", "email": "c@example.com", "subscriptions": {"newsletter": false}}
"#;
    let events = r#"{"at": "2026-12-01T11:00:00Z", "contact": "a", "unsubscribed": "first"}"#;
    let p = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P3D");
    assert_eq!(sends(&p.records), ["a first 2026-12-01T09:00:00Z"]);
    assert_eq!(
        skips(&p.records),
        [
            "b first no_email 2026-12-01T09:00:00Z",
            "c first unsubscribed 2026-12-01T09:00:00Z",
            "a second unsubscribed 2026-12-02T09:00:00Z",
            "b second no_email 2026-12-02T09:00:00Z",
            "c second unsubscribed 2026-12-02T09:00:00Z"
        ]
    );
    assert_eq!(
        p.contact("a").subscription("newsletter"),
        Some(false),
        "the unsubscribe is recorded on the contact"
    );
    // A skipped send does not stop the journey.
    assert_eq!(ends(&p.records).len(), 3);
}

#[test]
fn quiet_hours_hold_a_send_due_at_22_until_08() {
    let yaml = r#"
id: quiet
launch: {type: manual}
audience: {all: true}
quiet_hours: {from: "21:00", to: "08:00"}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: evening}
  - {id: evening, delay: {after: PT10H}, send: m, next: done}
  - {id: done, end: success}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        "",
        "2026-12-01T12:00:00Z",
        "P2D",
    );
    assert_eq!(
        holds(&p.of("a")),
        [
            "waiting evening delay 2026-12-01T12:00:00Z",
            "resumed evening delay 2026-12-01T22:00:00Z",
            "waiting evening quiet_hours 2026-12-01T22:00:00Z",
            "resumed evening quiet_hours 2026-12-02T08:00:00Z"
        ]
    );
    let held = p
        .records
        .iter()
        .find(|r| r.reason.as_deref() == Some("quiet_hours"))
        .and_then(|r| r.until);
    assert_eq!(held, Some(utc("2026-12-02T08:00:00Z")));
    assert_eq!(
        sends(&p.records),
        [
            "a first 2026-12-01T12:00:00Z",
            "a evening 2026-12-02T08:00:00Z"
        ]
    );
}

#[test]
fn frequency_cap_skips_a_second_send_inside_the_window_only() {
    let yaml = r#"
id: capped
launch: {type: manual}
audience: {all: true}
frequency_cap: {max: 1, per: P1D}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: one, send: m, next: two}
  - {id: two, send: m, next: three}
  - {id: three, delay: {after: P1D}, send: m, next: done}
  - {id: done, end: success}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@example.com"}"#,
        "",
        "2026-12-01T09:00:00Z",
        "P3D",
    );
    assert_eq!(
        sends(&p.records),
        ["a one 2026-12-01T09:00:00Z", "a three 2026-12-02T09:00:00Z"]
    );
    assert_eq!(
        skips(&p.records),
        ["a two frequency_cap 2026-12-01T09:00:00Z"]
    );
}

#[test]
fn a_template_with_a_missing_field_fails_the_send_and_the_enrollment_goes_on() {
    let yaml = r#"
id: greet
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi {{ contact.first_name }}", text: "Hello"}
steps:
  - {id: hello, send: m, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com", "first_name": "Ana"}
{"id": "b", "email": "b@example.com"}
"#;
    let p = play(yaml, contacts, "", "2026-12-01T09:00:00Z", "P1D");
    assert_eq!(sends(&p.records), ["a hello 2026-12-01T09:00:00Z"]);
    let failed: Vec<_> = p
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].contact.as_str(), step(failed[0])),
        ("b", "hello")
    );
    let reason = failed[0].reason.as_deref().unwrap_or("");
    assert!(reason.contains("render"), "{reason}");
    assert_eq!(
        ends(&p.records),
        [
            "a success 2026-12-01T09:00:00Z",
            "b success 2026-12-01T09:00:00Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 15. The transition function on stale, duplicated and late inputs
// ---------------------------------------------------------------------------------------------

const THREE_DAYS: &str = r#"
id: three-days
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: second}
  - {id: second, delay: {after: P1D}, send: m, next: third}
  - {id: third, delay: {after: P1D}, send: m, next: done}
  - {id: done, end: success}
"#;

fn send_count(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Send(_)))
        .count()
}

#[test]
fn stale_and_duplicated_wakes_change_nothing_and_an_ended_enrollment_ignores_everything() {
    let engine = engine(THREE_DAYS);
    let a = contact(json!({"id": "a", "email": "a@example.com"}));
    let history = History::default();
    let start = utc("2026-12-01T09:00:00Z");
    let entry = engine.enter(EntryRequest {
        contact: &a,
        history: &history,
        running: false,
        last_entered_at: None,
        enrollment_id: "e1",
        now: start,
    });
    let Entry::Entered(t) = entry else {
        panic!("a did not enter: {entry:?}")
    };
    assert_eq!(send_count(&t.effects), 1);
    let day2 = utc("2026-12-02T09:00:00Z");
    let en = t.enrollment;
    assert_eq!(en.pending_wake(), Some(("second", day2)));

    // A wake for another instant or another step is stale: nothing happens.
    for (step, at) in [
        ("second", utc("2026-12-02T08:59:00Z")),
        ("third", day2),
        ("first", start),
    ] {
        let t = engine.handle(&en, &a, &history, Input::Wake { step, at }, at);
        assert!(t.is_noop(), "wake ({step}, {at}) acted: {:?}", t.effects);
        assert_eq!(t.enrollment, en);
    }

    // The matching wake sends once; the same wake again, on the advanced enrollment, does not.
    let wake = Input::Wake {
        step: "second",
        at: day2,
    };
    let t = engine.handle(&en, &a, &history, wake, day2);
    assert_eq!(send_count(&t.effects), 1);
    assert!(t.enrollment.version > en.version);
    let advanced = t.enrollment;
    let again = engine.handle(&advanced, &a, &history, wake, day2);
    assert!(again.is_noop(), "{:?}", again.effects);
    assert_eq!(send_count(&again.effects), 0);
    assert_eq!(again.enrollment, advanced);

    // The last wake ends the enrollment; after that, every input is ignored.
    let day3 = utc("2026-12-03T09:00:00Z");
    let t = engine.handle(
        &advanced,
        &a,
        &history,
        Input::Wake {
            step: "third",
            at: day3,
        },
        day3,
    );
    assert_eq!(send_count(&t.effects), 1);
    let ended = t.enrollment;
    assert!(!ended.is_running());
    let later = utc("2026-12-04T09:00:00Z");
    let purchase = ActivityEvent {
        at: later,
        name: "purchase".into(),
        properties: serde_json::Map::new(),
    };
    let opened = Engagement {
        at: later,
        step: "third".into(),
        kind: EngagementKind::Opened,
        url: None,
        link_tags: Vec::new(),
    };
    for input in [
        Input::Wake {
            step: "third",
            at: day3,
        },
        Input::Event(&purchase),
        Input::Engagement(&opened),
        Input::ContactChanged,
    ] {
        let t = engine.handle(&ended, &a, &history, input, later);
        assert!(t.is_noop(), "{input:?} acted on an ended enrollment");
        assert_eq!(t.enrollment, ended);
    }
}

// ---- Regressions from review: calendar days, strict "after the wait began", contact
// events carrying fields, same-instant inactivity cancels, and `event: manual` triggers.

#[test]
fn once_per_two_days_counts_calendar_days_across_spring_forward() {
    let yaml = r#"
id: daily
timezone: Europe/Paris
launch: {type: recurring, frequency: daily, time: "09:00"}
audience: {all: true}
once_per: P2D
messages:
  m: {channel: email, subject: s, text: x}
steps:
  - {id: send, send: m, next: done}
  - {id: done, end: success}
"#;
    let played = play(
        yaml,
        r#"{"id": "a", "email": "a@x.io"}"#,
        "",
        "2026-03-28T00:00:00Z",
        "P5D",
    );
    // 28 (CET), then 30 and 1 April (CEST): two calendar days apart, 47 hours across the change.
    assert_eq!(
        entries(&played.records),
        [
            "a 2026-03-28T08:00:00Z",
            "a 2026-03-30T07:00:00Z",
            "a 2026-04-01T07:00:00Z"
        ]
    );
}

#[test]
fn after_one_day_keeps_the_wall_clock_time_across_dst() {
    let yaml = r#"
id: next-day
timezone: Europe/Paris
launch: {type: manual}
messages:
  m: {channel: email, subject: s, text: x}
steps:
  - {id: later, send: m, next: done, delay: {after: P1D}}
  - {id: done, end: success}
"#;
    let played = play(
        yaml,
        r#"{"id": "a", "email": "a@x.io"}"#,
        "",
        "2026-03-28T08:00:00Z",
        "P3D",
    );
    assert_eq!(sends(&played.records), ["a later 2026-03-29T07:00:00Z"]);
}

#[test]
fn the_event_that_triggers_a_scenario_does_not_satisfy_its_first_wait() {
    let yaml = r#"
id: rebuy
launch: {type: trigger, event: purchase}
messages:
  thanks: {channel: email, subject: s, text: x}
  again: {channel: email, subject: again, text: x}
steps:
  - id: wait
    wait_for: {event: purchase, timeout: P3D}
    on_event: again
    on_timeout: done
  - {id: again, send: again, next: done}
  - {id: done, end: neutral}
"#;
    let events = r#"{"at": "2026-12-01T09:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-02T09:00:00Z", "contact": "a", "event": "page.visited", "url": "/x"}"#;
    let played = play(
        yaml,
        r#"{"id": "a", "email": "a@x.io"}"#,
        events,
        "2026-12-01T00:00:00Z",
        "P5D",
    );
    assert!(
        sends(&played.records).is_empty(),
        "{:?}",
        sends(&played.records)
    );
    assert_eq!(ends(&played.records), ["a neutral 2026-12-04T09:00:00Z"]);
}

#[test]
fn a_contact_created_event_carries_the_contacts_fields() {
    let yaml = r#"
id: welcome
launch: {type: trigger, event: contact.created}
audience: {criteria: {field: city, op: eq, value: Atlanta}}
messages:
  hi: {channel: email, subject: "Hi {{ contact.first_name }}", text: x}
steps:
  - {id: hi, send: hi, next: done}
  - {id: done, end: success}
"#;
    let events = r#"{"at": "2026-12-01T09:00:00Z", "contact": "z", "event": "contact.created", "email": "z@x.io", "city": "Atlanta", "first_name": "Zoe"}
{"at": "2026-12-01T10:00:00Z", "contact": "y", "event": "contact.created", "email": "y@x.io", "city": "Paris"}"#;
    let played = play(yaml, "", events, "2026-12-01T00:00:00Z", "P1D");
    assert_eq!(sends(&played.records), ["z hi 2026-12-01T09:00:00Z"]);
    assert_eq!(
        skips(&played.records),
        ["y (entry) audience 2026-12-01T10:00:00Z"]
    );
    assert_eq!(played.contact("z").email(), Some("z@x.io"));
}

#[test]
fn a_purchase_at_the_same_instant_as_the_cart_update_cancels_cart_abandoned() {
    let yaml = r#"
id: cart
launch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}
messages:
  m: {channel: email, subject: s, text: x}
steps:
  - {id: send, send: m, next: done}
  - {id: done, end: success}
"#;
    let events = r#"{"at": "2026-12-01T09:00:00Z", "contact": "a", "event": "cart.updated"}
{"at": "2026-12-01T09:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-01T09:00:00Z", "contact": "b", "event": "cart.updated"}"#;
    let contacts = r#"{"id": "a", "email": "a@x.io"}
{"id": "b", "email": "b@x.io"}"#;
    let played = play(yaml, contacts, events, "2026-12-01T00:00:00Z", "P1D");
    assert_eq!(sends(&played.records), ["b send 2026-12-01T09:30:00Z"]);
}

#[test]
fn a_trigger_on_manual_is_launched_at_the_start() {
    let yaml = r#"
id: by-hand
launch: {type: trigger, event: manual}
messages:
  m: {channel: email, subject: s, text: x}
steps:
  - {id: send, send: m, next: done}
  - {id: done, end: success}
"#;
    let played = play(
        yaml,
        r#"{"id": "a", "email": "a@x.io"}"#,
        "",
        "2026-12-01T09:00:00Z",
        "P1D",
    );
    assert_eq!(sends(&played.records), ["a send 2026-12-01T09:00:00Z"]);
}

// ---------------------------------------------------------------------------------------------
// Consent: suppressed addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hard_bounce_suppresses_the_address_and_a_soft_one_does_not() {
    let yaml = r#"
id: bounce
launch: {type: manual}
audience: {all: true}
messages:
  m1: {channel: email, subject: one, text: x}
  m2: {channel: email, subject: two, text: x}
  s1: {channel: sms, text: x}
steps:
  - {id: first, send: m1, next: second}
  - {id: second, delay: {after: P1D}, send: m2, next: text}
  - {id: text, send: s1, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"{"id": "hard", "email": "h@x.io", "phone": "+33600000001"}
{"id": "soft", "email": "s@x.io", "phone": "+33600000002"}
{"id": "listed", "email": "l@x.io", "phone": "+33600000003", "suppressed": ["+33600000003"]}"#;
    let events = r#"{"at": "2026-12-01T10:00:00Z", "contact": "hard", "bounced": "first"}
{"at": "2026-12-01T10:00:00Z", "contact": "soft", "bounced": "first", "link_tags": ["bounce:transient"]}"#;
    let played = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P3D");
    assert_eq!(
        skips(&played.records),
        [
            "hard second suppressed 2026-12-02T09:00:00Z",
            "listed text suppressed 2026-12-02T09:00:00Z"
        ]
    );
    assert_eq!(
        played.contact("hard").field("suppressed"),
        Some(&json!(["h@x.io"]))
    );
    assert_eq!(played.contact("soft").field("suppressed"), None);
    assert!(
        sends(&played.records).contains(&"soft second 2026-12-02T09:00:00Z".to_string()),
        "{:?}",
        sends(&played.records)
    );
}

/// Issue 11, finding 5: a scenario's update_profile cannot undo an opt-out or lift a
/// suppression (the action fails with `consent_kept`, the next send is skipped), while an
/// opt-out through it applies.
#[test]
fn hostile_update_profile_cannot_resubscribe_or_unsuppress() {
    let yaml = r#"
id: resubscribe
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, type: newsletter, subject: News, text: x}
steps:
  - {id: back, action: {update_profile: {field: subscriptions.newsletter, value: true}}, next: clear}
  - {id: clear, action: {update_profile: {field: suppressed, value: []}}, next: out}
  - {id: out, action: {update_profile: {field: subscriptions.offers, value: false}}, next: send}
  - {id: send, send: m, next: done}
  - {id: done, end: success}
"#;
    let p = play(
        yaml,
        r#"{"id": "a", "email": "a@x.io", "subscriptions": {"newsletter": false}}
{"id": "b", "email": "b@x.io", "suppressed": ["b@x.io"]}"#,
        "",
        "2026-12-01T09:00:00Z",
        "P1D",
    );
    let failed: Vec<_> = p
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Failed)
        .map(|r| {
            (
                r.contact.clone(),
                step(r).to_string(),
                r.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!((failed[0].0.as_str(), failed[0].1.as_str()), ("a", "back"));
    assert_eq!((failed[1].0.as_str(), failed[1].1.as_str()), ("b", "clear"));
    assert!(
        failed.iter().all(|f| f.2.starts_with("consent_kept")),
        "{failed:?}"
    );
    let skips: Vec<_> = p
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Skipped)
        .map(|r| (r.contact.as_str(), r.reason.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(skips, [("a", "unsubscribed"), ("b", "suppressed")]);
    assert!(!p.records.iter().any(|r| r.kind == RecordKind::Sent));
    assert_eq!(p.contact("a").subscription("newsletter"), Some(false));
    assert_eq!(p.contact("a").subscription("offers"), Some(false));
    assert!(p.contact("b").is_suppressed("b@x.io"));
}

// ---------------------------------------------------------------------------------------------
// 16. Experiments (DESIGN §3.1): split and holdout
// ---------------------------------------------------------------------------------------------

/// `contact step branch` for every split assignment.
fn assignments(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Assigned)
        .map(|r| {
            format!(
                "{} {} {}",
                r.contact,
                step(r),
                r.branch.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn a_split_assigns_by_bucket_and_a_returning_contact_takes_the_same_path() {
    // Buckets of "exp:ab:{contact}", computed apart with Python (sha256, first 8 bytes big
    // endian, mod 10000): a 6519, b 9043, d 229, e 161. The first 25% (0..2500) is `short`.
    let yaml = r#"
id: exp
launch: {type: trigger, event: purchase}
audience: {all: true}
messages:
  s: {channel: email, subject: "Short", text: "Short"}
  l: {channel: email, subject: "Long", text: "Long"}
steps:
  - id: ab
    split:
      - {percent: 25, next: short}
      - {percent: 75, next: long}
  - {id: short, send: s, next: done}
  - {id: long, send: l, next: done}
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
{"id": "d", "email": "d@example.com"}
{"id": "e", "email": "e@example.com"}
"#;
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "d", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "e", "event": "purchase"}
{"at": "2026-12-02T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-02T10:00:00Z", "contact": "d", "event": "purchase"}
"#;
    let p = play(yaml, contacts, events, "2026-12-01T00:00:00Z", "P3D");
    assert_eq!(
        assignments(&p.records),
        [
            "a ab long",
            "b ab long",
            "d ab short",
            "e ab short",
            "a ab long",
            "d ab short"
        ]
    );
    assert_eq!(
        sends(&p.records),
        [
            "a long 2026-12-01T10:00:00Z",
            "b long 2026-12-01T10:00:00Z",
            "d short 2026-12-01T10:00:00Z",
            "e short 2026-12-01T10:00:00Z",
            "a long 2026-12-02T10:00:00Z",
            "d short 2026-12-02T10:00:00Z"
        ]
    );
    // The assignment is the step's arrival, counted per path.
    let mut counts = relance_core::journal::JournalCounts::default();
    p.records.iter().for_each(|r| counts.add(r));
    let ab = &counts.steps["ab"];
    assert_eq!(ab.entered, 6);
    assert_eq!(
        ab.assigned
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("long", 3), ("short", 3)]
    );
    assert!(!p.records.iter().any(|r| r.kind == RecordKind::Branched));
}

#[test]
fn the_holdout_enters_journals_and_ends_held_out_without_a_send() {
    // Buckets of "hold:holdout:{contact}", computed apart with Python: a 9653, b 884,
    // c 1725, d 2173. A 20% holdout keeps those below 2000: b and c.
    let yaml = format!(
        "id: hold\nlaunch: {{type: manual}}\naudience: {{all: true}}\nholdout: {{percent: 20}}\n{ONE_SEND}"
    );
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
{"id": "c", "email": "c@example.com"}
{"id": "d", "email": "d@example.com"}
"#;
    let p = play(&yaml, contacts, "", "2026-12-01T09:00:00Z", "P1D");
    assert_eq!(
        entries(&p.records),
        [
            "a 2026-12-01T09:00:00Z",
            "b 2026-12-01T09:00:00Z",
            "c 2026-12-01T09:00:00Z",
            "d 2026-12-01T09:00:00Z"
        ]
    );
    assert_eq!(
        sends(&p.records),
        [
            "a hello 2026-12-01T09:00:00Z",
            "d hello 2026-12-01T09:00:00Z"
        ]
    );
    assert_eq!(
        ends(&p.records),
        [
            "a success 2026-12-01T09:00:00Z",
            "b held_out 2026-12-01T09:00:00Z",
            "c held_out 2026-12-01T09:00:00Z",
            "d success 2026-12-01T09:00:00Z"
        ]
    );
    let kinds: Vec<String> = p.of("b").iter().map(|r| kind(r)).collect();
    assert_eq!(kinds, ["entered", "heldout", "ended"]);
    for e in p
        .enrollments
        .iter()
        .filter(|e| ["b", "c"].contains(&e.contact.as_str()))
    {
        assert!(
            matches!(
                e.state,
                EnrollmentState::Ended {
                    outcome: Outcome::HeldOut,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    let mut counts = relance_core::journal::JournalCounts::default();
    p.records.iter().for_each(|r| counts.add(r));
    assert_eq!(counts.entered, 4);
    assert_eq!(counts.ends.get("held_out"), Some(&2));
    assert_eq!(counts.ends.get("success"), Some(&2));
}

/// `contact step message` for every variant assignment (records with a `message`).
fn variant_assignments(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Assigned && r.message.is_some())
        .map(|r| {
            format!(
                "{} {} {}",
                r.contact,
                step(r),
                r.message.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn variants_send_the_bucket_s_message_after_an_assigned_record_and_again_on_return() {
    // Buckets of "var:ab:{contact}", computed apart with Python (sha256, first 8 bytes big
    // endian, mod 10000): a 2256, b 833, c 8498, d 4690, e 1555. subject-a owns 0..3000.
    let yaml = r#"
id: var
launch: {type: trigger, event: purchase}
audience: {all: true}
messages:
  subject-a: {channel: email, subject: "Subject A", text: "Hello"}
  subject-b: {channel: email, subject: "Subject B", text: "Hello"}
steps:
  - id: ab
    send: {variants: [{message: subject-a, percent: 30}, {message: subject-b, percent: 70}]}
    next: done
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "b", "email": "b@example.com"}
{"id": "c", "email": "c@example.com"}
{"id": "d", "email": "d@example.com"}
{"id": "e", "email": "e@example.com"}
"#;
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "b", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "c", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "d", "event": "purchase"}
{"at": "2026-12-01T10:00:00Z", "contact": "e", "event": "purchase"}
{"at": "2026-12-02T10:00:00Z", "contact": "a", "event": "purchase"}
{"at": "2026-12-02T10:00:00Z", "contact": "c", "event": "purchase"}
"#;
    let p = play(yaml, contacts, events, "2026-12-01T00:00:00Z", "P3D");
    assert_eq!(
        variant_assignments(&p.records),
        [
            "a ab subject-a",
            "b ab subject-a",
            "c ab subject-b",
            "d ab subject-b",
            "e ab subject-a",
            "a ab subject-a",
            "c ab subject-b"
        ]
    );
    // The message sent is the one assigned, and its record comes just before the send's.
    let sent: Vec<String> = p
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Sent)
        .map(|r| format!("{} {}", r.contact, r.message.as_deref().unwrap_or("?")))
        .collect();
    assert_eq!(
        sent,
        [
            "a subject-a",
            "b subject-a",
            "c subject-b",
            "d subject-b",
            "e subject-a",
            "a subject-a",
            "c subject-b"
        ]
    );
    for c in ["a", "b", "c", "d", "e"] {
        let kinds: Vec<String> = p.of(c).iter().map(|r| kind(r)).collect();
        let first_sent = kinds.iter().position(|k| k == "sent");
        assert!(
            first_sent.is_some_and(|i| i > 0 && kinds[i - 1] == "assigned"),
            "{c}: {kinds:?}"
        );
    }
    // Counted per variant; the assignment is not a second arrival at the step.
    let mut counts = relance_core::journal::JournalCounts::default();
    p.records.iter().for_each(|r| counts.add(r));
    let ab = &counts.steps["ab"];
    assert_eq!(ab.entered, 7);
    assert_eq!(ab.sent, 7);
    assert_eq!(
        ab.assigned
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("subject-a", 4), ("subject-b", 3)]
    );
}

#[test]
fn an_unsubscribe_after_a_variant_send_applies_to_the_variant_sent() {
    // Buckets of "var:ab:{contact}" (see above): a 2256 takes subject-a, c 8498 subject-b.
    // The variants differ in communication type, so the unsubscribe shows which one counted.
    let yaml = r#"
id: var
launch: {type: manual}
audience: {all: true}
messages:
  subject-a: {channel: email, type: news, subject: "Subject A", text: "Hello"}
  subject-b: {channel: email, type: offers, subject: "Subject B", text: "Hello"}
steps:
  - id: ab
    send: {variants: [{message: subject-a, percent: 30}, {message: subject-b, percent: 70}]}
    next: done
  - {id: done, end: success}
"#;
    let contacts = r#"
{"id": "a", "email": "a@example.com"}
{"id": "c", "email": "c@example.com"}
"#;
    let events = r#"
{"at": "2026-12-01T11:00:00Z", "contact": "a", "unsubscribed": "ab"}
{"at": "2026-12-01T11:00:00Z", "contact": "c", "unsubscribed": "ab"}
"#;
    let p = play(yaml, contacts, events, "2026-12-01T09:00:00Z", "P1D");
    assert_eq!(
        variant_assignments(&p.records),
        ["a ab subject-a", "c ab subject-b"]
    );
    assert_eq!(p.contact("a").subscription("news"), Some(false));
    assert_eq!(p.contact("a").subscription("offers"), None);
    assert_eq!(p.contact("c").subscription("offers"), Some(false));
    assert_eq!(p.contact("c").subscription("news"), None);
}

// ---------------------------------------------------------------------------------------------
// 17. Send-time optimisation (DESIGN §3.1): `delay … at: best`
// ---------------------------------------------------------------------------------------------

const BEST_TIME: &str = r#"
id: best
timezone: Europe/Paris
launch: {type: manual}
audience: {all: true}
messages:
  m: {channel: email, subject: "Hi", text: "Hello"}
steps:
  - {id: first, send: m, next: later}
  - {id: later, delay: {after: P1D, at: best, default_at: "10:00"}, send: m, next: local}
  - {id: local, delay: {after: P1D, at: best, default_at: "10:00", local_time: true}, send: m, next: done}
  - {id: done, end: success}
"#;

/// Opens and clicks with other scenarios' sends pick the hour: a contact that opens at 18:xx
/// (Paris) gets its step at 18:00 Paris time, the day after as `at: "18:00"` would; one with
/// only two opens gets `default_at`; with `local_time` the hour is read in the contact's zone.
#[test]
fn at_best_runs_at_the_hour_the_contact_engages_most_in_every_scenario() {
    use relance_core::ports::{SourceFormat, Status};
    use relance_core::wire::EngagementDetail;
    use relance_runtime::memory::MemoryStore;
    use relance_runtime::player::{Play, Script, VirtualClock};
    use relance_runtime::runtime::Runtime;

    let mut rt = Runtime::new(MemoryStore::new());
    let before = utc("2026-11-01T00:00:00Z");
    for other in ["news", "promo"] {
        let yaml = format!(
            "id: {other}\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n  m: {{channel: email, subject: Hi, text: Hello}}\nsteps:\n  - {{id: s, send: m, next: done}}\n  - {{id: done, end: success}}\n"
        );
        let put = rt
            .put_scenario(&yaml, SourceFormat::Yaml, before)
            .unwrap_or_else(|e| panic!("{e}"));
        rt.set_status(&put.id, Status::Active, before)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let contacts: Vec<Contact> = [
        json!({"id": "evening", "email": "evening@example.com"}),
        json!({"id": "sparse", "email": "sparse@example.com"}),
        json!({"id": "ny", "email": "ny@example.com", "timezone": "America/New_York"}),
    ]
    .into_iter()
    .map(contact)
    .collect();
    rt.import(&contacts, before, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    // (contact, scenario, kind, at): Paris is UTC+1 in November, New York UTC−5.
    let engagement = [
        // 18:xx in Paris, three times in two scenarios; one 09:xx click and a delivery,
        // which is not an open or a click.
        (
            "evening",
            "news",
            EngagementKind::Opened,
            "2026-11-10T17:05:00Z",
        ),
        (
            "evening",
            "promo",
            EngagementKind::Clicked,
            "2026-11-12T17:40:00Z",
        ),
        (
            "evening",
            "news",
            EngagementKind::Opened,
            "2026-11-20T17:59:00Z",
        ),
        (
            "evening",
            "promo",
            EngagementKind::Clicked,
            "2026-11-21T08:30:00Z",
        ),
        (
            "evening",
            "news",
            EngagementKind::Delivered,
            "2026-11-22T08:10:00Z",
        ),
        (
            "evening",
            "news",
            EngagementKind::Delivered,
            "2026-11-23T08:10:00Z",
        ),
        // Two opens are fewer than three: default_at.
        (
            "sparse",
            "news",
            EngagementKind::Opened,
            "2026-11-10T17:05:00Z",
        ),
        (
            "sparse",
            "promo",
            EngagementKind::Opened,
            "2026-11-11T17:05:00Z",
        ),
        // 23:xx UTC: 00:xx in Paris (the scenario's zone), 18:xx in New York (its own).
        ("ny", "news", EngagementKind::Opened, "2026-11-10T23:10:00Z"),
        ("ny", "news", EngagementKind::Opened, "2026-11-11T23:20:00Z"),
        (
            "ny",
            "promo",
            EngagementKind::Clicked,
            "2026-11-12T23:30:00Z",
        ),
    ];
    for (who, scenario, kind, at) in engagement {
        let at = utc(at);
        let detail = EngagementDetail {
            contact: who.into(),
            scenario: scenario.into(),
            step: "s".into(),
            kind,
            url: None,
            link_tags: Vec::new(),
            at: Some(at),
            idempotency_key: None,
        };
        rt.engagement(detail, at).unwrap_or_else(|e| panic!("{e}"));
    }
    let start = utc("2026-12-01T12:00:00Z");
    let put = rt
        .put_scenario(BEST_TIME, SourceFormat::Yaml, start)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, start)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut records = Vec::new();
    Play::new("best", start, utc("2026-12-05T00:00:00Z"))
        .launching_at_start(true)
        .run(
            &mut rt,
            Script::new(Vec::new()),
            &mut VirtualClock::new(start),
            &mut |r: &Record| records.push(r.clone()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = sends(&records);
    got.sort();
    assert_eq!(
        got,
        [
            "evening first 2026-12-01T12:00:00Z",
            "evening later 2026-12-02T17:00:00Z", // 18:00 in Paris
            "evening local 2026-12-03T17:00:00Z", // no zone of its own: Paris
            "ny first 2026-12-01T12:00:00Z",
            // 00:00 in Paris: the local date of the first send plus one day, at 00:00.
            "ny later 2026-12-01T23:00:00Z",
            // 18:00 in New York, on the day after 2026-12-01T18:00 there.
            "ny local 2026-12-02T23:00:00Z",
            "sparse first 2026-12-01T12:00:00Z",
            "sparse later 2026-12-02T09:00:00Z", // default_at: 10:00 in Paris
            "sparse local 2026-12-03T09:00:00Z",
        ]
    );
}

/// In `simulate`, engagement in the events file before `--start` is history: it counts for
/// `at: best`, within the 90 days before the step is reached.
#[test]
fn at_best_in_simulate_counts_the_opens_recorded_before_the_start() {
    let contacts = r#"
{"id": "evening", "email": "evening@example.com"}
{"id": "stale", "email": "stale@example.com"}
{"id": "none", "email": "none@example.com"}
"#;
    // Paris: UTC+2 until 2026-10-25, UTC+1 after.
    let events = r#"
{"at": "2026-11-20T17:05:00Z", "contact": "evening", "opened": "first"}
{"at": "2026-11-25T17:45:00Z", "contact": "evening", "clicked": "first", "url": "https://example.com"}
{"at": "2026-11-28T17:30:00Z", "contact": "evening", "opened": "first"}
{"at": "2026-11-29T06:30:00Z", "contact": "evening", "opened": "first"}
{"at": "2026-09-01T16:00:00Z", "contact": "stale", "opened": "first"}
{"at": "2026-11-20T17:00:00Z", "contact": "stale", "opened": "first"}
{"at": "2026-11-21T17:00:00Z", "contact": "stale", "opened": "first"}
"#;
    let p = play(BEST_TIME, contacts, events, "2026-12-01T12:00:00Z", "P4D");
    let mut got: Vec<String> = sends(&p.records)
        .into_iter()
        .filter(|s| s.contains(" later "))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "evening later 2026-12-02T17:00:00Z", // three opens and clicks at 18:xx Paris
            "none later 2026-12-02T09:00:00Z",    // default_at
            // The 1 September open is more than 90 days before: two events are left.
            "stale later 2026-12-02T09:00:00Z",
        ]
    );
}

/// Engagement of a contact that is not stored is refused with the field named, whichever its
/// kind (an open is checked without reading the contact's fields, a bounce reads them), and
/// records nothing; a stored contact's open and bounce are recorded.
#[test]
fn engagement_of_an_unknown_contact_is_refused_and_records_nothing() {
    use relance_core::ports::{ContactStore, JournalStore, Status};
    use relance_core::wire::EngagementDetail;
    use relance_runtime::memory::MemoryStore;
    use relance_runtime::runtime::{Runtime, RuntimeError};

    let mut rt = Runtime::new(MemoryStore::new());
    let now = utc("2026-11-01T00:00:00Z");
    let yaml = "id: news\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: Hi, text: Hello}\nsteps:\n  - {id: s, send: m, next: done}\n  - {id: done, end: success}\n";
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.import(
        &[contact(json!({"id": "ada", "email": "ada@example.com"}))],
        now,
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let detail = |who: &str, kind| EngagementDetail {
        contact: who.into(),
        scenario: "news".into(),
        step: "s".into(),
        kind,
        url: None,
        link_tags: Vec::new(),
        at: Some(now),
        idempotency_key: None,
    };
    for kind in [EngagementKind::Opened, EngagementKind::Bounced] {
        match rt.engagement(detail("ghost", kind), now) {
            Err(RuntimeError::BadInput { field, message }) => {
                assert_eq!(field, "contact", "{kind:?}");
                assert!(message.contains("ghost"), "{message}");
            }
            other => panic!("{kind:?}: {other:?}"),
        }
        rt.engagement(detail("ada", kind), now)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    let records = rt
        .store()
        .records("news", None)
        .unwrap_or_else(|e| panic!("{e}"));
    let contacts: Vec<&str> = records.iter().map(|r| r.contact.as_str()).collect();
    assert_eq!(contacts, ["ada", "ada"], "{records:#?}");
    // The hard bounce suppressed ada's address: read from the contact when it mattered.
    let ada = rt
        .store()
        .contact("ada")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("ada"));
    assert!(ada.is_suppressed("ada@example.com"), "{ada:?}");
}
