//! Due timers' steps read ahead on a second connection (`StepReader`): the runner writes the
//! same sends and journal as it does computing every step itself; a timer whose contact an
//! earlier timer of the batch changed, or whose contact another connection changed after the
//! reader read it, is computed again from what is stored.

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::contact::EngagementKind;
use relance_core::journal::Record;
use relance_core::ports::{JournalStore, SourceFormat, Status};
use relance_core::script;
use relance_core::wire::{EngagementDetail, LaunchDetail};
use relance_embedded::runtime::{LaunchReport, Runtime, StepReader, StepsAhead};
use relance_embedded::store::SqliteStore;
use serde_json::Value;

use crate::common::{TempDir, t0};

const DRIP: &str = r#"
id: drip
launch: {type: manual}
messages:
  first: {channel: email, subject: "Hello {{ contact.first_name }}", text: "Welcome"}
  sms: {channel: sms, text: "Thanks, {{ contact.first_name }}"}
  again: {channel: email, subject: "Did you see it?", text: "Again"}
steps:
  - {id: first, send: first, next: check}
  - id: check
    delay: {after: PT1H}
    if: {opened: first}
    then: sms
    else: again
  - {id: sms, send: sms, next: done}
  - {id: again, send: again, next: done}
  - {id: done, end: success}
"#;

/// Sets `vip` an hour after entry.
const MARK: &str = "id: mark\nlaunch: {type: manual}\nsteps:\n  - {id: mark, delay: {after: PT1H}, action: {update_profile: {field: vip, value: true}}, next: done}\n  - {id: done, end: success}\n";

/// Two hours after entry, sends `vip` to a contact whose `vip` is true, `plain` otherwise.
const OFFER: &str = "id: offer\nlaunch: {type: manual}\nmessages:\n  vip: {channel: email, subject: vip, text: x}\n  plain: {channel: email, subject: plain, text: x}\nsteps:\n  - id: check\n    delay: {after: PT2H}\n    if: {field: vip, op: eq, value: true}\n    then: vip\n    else: plain\n  - {id: vip, send: vip, next: done}\n  - {id: plain, send: plain, next: done}\n  - {id: done, end: success}\n";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Whether and how a runtime reads ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// No reader: the runner computes every item.
    None,
    /// A reader the runner waits for: every item of a batch is the reader's.
    WaitedFor,
    /// A reader that stalls for a second on its first contact read, which the runner does
    /// not wait for (as the server runs it).
    Stalled,
}

/// A runtime on a database file in `dir`, with a reader (a reading connection to the same
/// file) computing due timers' steps and launches' entries ahead when asked.
fn runtime_in(dir: &TempDir, reader: Reader) -> Runtime<SqliteStore> {
    let db = dir.join("relance.db");
    let mut rt = Runtime::new(ok(SqliteStore::open(&db)));
    match reader {
        Reader::None => {}
        Reader::WaitedFor => rt.read_steps_ahead(
            ok(StepReader::start(ok(SqliteStore::open_reader(&db)))).waited_for(),
        ),
        Reader::Stalled => {
            let mut store = ok(SqliteStore::open_reader(&db));
            store.after_next_contact_read(|| std::thread::sleep(std::time::Duration::from_secs(1)));
            rt.read_steps_ahead(ok(StepReader::start(store)));
        }
    }
    rt
}

fn contacts(rt: &mut Runtime<SqliteStore>, n: usize, now: DateTime<Utc>) {
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"c{i:02}\", \"email\": \"c{i}@x.io\", \"phone\": \"+3361000{i:04}\", \"first_name\": \"Ana{i}\"}}\n"
            )
        })
        .collect();
    let list = script::contacts_from_json_lines(&lines).unwrap_or_else(|e| panic!("{e:?}"));
    ok(rt.import(&list, now, &mut |_| {}));
}

/// Activates the scenario and launches it for every contact, as the runner does (in a group
/// commit, where each contact's entry is read ahead when the runtime has a reader).
fn launch(rt: &mut Runtime<SqliteStore>, yaml: &str, now: DateTime<Utc>) -> LaunchReport {
    let id = activate(rt, yaml, now);
    launch_for(rt, &id, None, now)
}

fn activate(rt: &mut Runtime<SqliteStore>, yaml: &str, now: DateTime<Utc>) -> String {
    let put = ok(rt.put_scenario(yaml, SourceFormat::Yaml, now));
    ok(rt.set_status(&put.id, Status::Active, now));
    put.id
}

/// Six contacts and the drip active, not launched, on a runtime with a reader (in a directory
/// of the test's `name`).
fn drip_for_six(name: &str) -> (TempDir, Runtime<SqliteStore>) {
    let dir = TempDir::fresh("ahead", name);
    let mut rt = runtime_in(&dir, Reader::WaitedFor);
    contacts(&mut rt, 6, t0());
    activate(&mut rt, DRIP, t0());
    (dir, rt)
}

fn launch_for(
    rt: &mut Runtime<SqliteStore>,
    scenario: &str,
    contacts: Option<Vec<String>>,
    now: DateTime<Utc>,
) -> LaunchReport {
    let (report, committed) = rt.grouped(512, |rt| {
        rt.launch(
            LaunchDetail {
                scenario: scenario.to_string(),
                contacts,
            },
            now,
        )
    });
    ok(committed);
    ok(report)
}

/// Fires everything due at `now` as the runner does: bounded ticks in group commits (of four
/// units here, so that a group commits in the middle of a batch read ahead).
fn tick_as_the_runner(rt: &mut Runtime<SqliteStore>, now: DateTime<Utc>) -> usize {
    let mut fired = 0;
    loop {
        let (ticked, committed) = rt.grouped(4, |rt| rt.tick_bounded(now, 4096));
        ok(committed);
        match ok(ticked).timers {
            0 => return fired,
            n => fired += n,
        }
    }
}

/// Sends in the outbox, in order: (contact, step, subject or text).
fn sends(rt: &mut Runtime<SqliteStore>) -> Vec<(String, String, String)> {
    ok(rt.store().outbox_after(0, 100_000))
        .into_iter()
        .filter(|(_, kind, _)| kind == "send")
        .map(|(_, _, payload)| {
            let v: Value = ok(serde_json::from_str(&payload));
            let s = &v["send"];
            let part = s["content"]["subject"]
                .as_str()
                .or(s["content"]["text"].as_str())
                .unwrap_or("");
            (
                s["contact"].as_str().unwrap_or("").to_string(),
                s["step"].as_str().unwrap_or("").to_string(),
                part.to_string(),
            )
        })
        .collect()
}

fn journal(rt: &mut Runtime<SqliteStore>, scenario: &str) -> Vec<Record> {
    ok(rt.store().records(scenario, None))
}

/// The drip for 40 contacts, the evens opening the first email: what `fire_due` wrote (in a
/// directory of the test's `name`: tests run at once).
fn drip_run(
    name: &str,
    reader: Reader,
) -> (Vec<(String, String, String)>, Vec<Record>, StepsAhead) {
    let dir = TempDir::fresh("ahead", name);
    let mut rt = runtime_in(&dir, reader);
    contacts(&mut rt, 40, t0());
    launch(&mut rt, DRIP, t0());
    for i in (0..40).step_by(2) {
        ok(rt.engagement(
            EngagementDetail {
                idempotency_key: None,
                contact: format!("c{i:02}"),
                scenario: "drip".into(),
                step: "first".into(),
                kind: EngagementKind::Opened,
                url: None,
                link_tags: vec![],
                at: None,
            },
            t0() + TimeDelta::minutes(5),
        ));
    }
    assert_eq!(tick_as_the_runner(&mut rt, t0() + TimeDelta::hours(2)), 40);
    let sent = sends(&mut rt);
    let records = journal(&mut rt, "drip");
    (sent, records, rt.steps_ahead())
}

#[test]
fn timers_fired_from_steps_read_ahead_write_what_the_runner_alone_writes() {
    let (sent, records, ahead) = drip_run("drip-ahead", Reader::WaitedFor);
    let (sent_alone, records_alone, alone) = drip_run("drip", Reader::None);
    assert_eq!(sent.len(), 80, "email-1, then the SMS or email-2, to each");
    assert_eq!(sent, sent_alone);
    assert_eq!(records, records_alone);
    assert!(
        sent.iter()
            .any(|(c, step, part)| c == "c02" && step == "sms" && part == "Thanks, Ana2"),
        "{sent:?}"
    );
    assert!(ahead.batches >= 2, "the launch and the timers: {ahead:?}");
    assert_eq!(
        (ahead.offered, ahead.used),
        (80, 80),
        "40 entries and 40 checks: {ahead:?}"
    );
    assert_eq!(ahead.computed_by_runner, 0, "the runner waited: {ahead:?}");
    assert_eq!(
        alone,
        StepsAhead::default(),
        "without a reader nothing is read ahead"
    );
}

#[test]
fn items_the_reader_has_not_handed_over_are_computed_by_the_runner_alike() {
    // The reader stalls on the launch's first contact: the runner, which does not wait for
    // it, enters those contacts itself (the reader then skips them), and writes what it
    // writes alone.
    let (sent, records, ahead) = drip_run("drip-stalled", Reader::Stalled);
    let (sent_alone, records_alone, _) = drip_run("drip-stalled-alone", Reader::None);
    assert_eq!(sent.len(), 80);
    assert_eq!(sent, sent_alone);
    assert_eq!(records, records_alone);
    assert!(ahead.computed_by_runner > 0, "{ahead:?}");
    assert_eq!(ahead.waited_micros, 0, "the runner never waited: {ahead:?}");
    assert!(ahead.used <= ahead.offered, "{ahead:?}");
}

/// Fires, in one group as the runner does, the twelve timers due at `at` (two scenarios'
/// timers for six contacts), as one batch.
fn fire_twelve_due(rt: &mut Runtime<SqliteStore>, at: DateTime<Utc>) {
    let (fired, committed) = rt.grouped(512, |rt| {
        let due = ok(rt.due_timers(at));
        assert_eq!(due.len(), 12);
        rt.fire_due(&due, at)
    });
    ok(fired);
    ok(committed);
}

/// Runs `update` on one timer row of the database in `dir`, from another connection: a row
/// written inconsistently.
fn rewrite_one_timer(dir: &TempDir, update: &str) {
    let conn = ok(rusqlite::Connection::open(dir.join("relance.db")));
    ok(conn.busy_timeout(std::time::Duration::from_secs(10)));
    assert_eq!(ok(conn.execute(update, [])), 1);
}

#[test]
fn a_timer_after_another_of_its_contact_in_the_batch_reads_what_that_one_wrote() {
    let dir = TempDir::fresh("ahead", "same-contact");
    let mut rt = runtime_in(&dir, Reader::WaitedFor);
    contacts(&mut rt, 6, t0());
    launch(&mut rt, MARK, t0());
    launch(&mut rt, OFFER, t0());
    // One batch: the six `mark` timers (due at +1 h), then the six `offer` checks (+2 h),
    // all read ahead before `mark` set `vip`.
    fire_twelve_due(&mut rt, t0() + TimeDelta::hours(3));
    let sent = sends(&mut rt);
    assert_eq!(sent.len(), 6);
    assert!(
        sent.iter().all(|(_, step, _)| step == "vip"),
        "each check saw the vip its contact's earlier timer set: {sent:?}"
    );
    let ahead = rt.steps_ahead();
    assert_eq!(
        (ahead.offered, ahead.used),
        (18, 18),
        "two launches of six, then only the first timer of each contact taken from the reader: {ahead:?}"
    );
}

#[test]
fn a_timer_whose_enrollment_is_another_contacts_stops_the_reader_for_the_rest_of_the_batch() {
    let dir = TempDir::fresh("ahead", "foreign-contact");
    let mut rt = runtime_in(&dir, Reader::WaitedFor);
    contacts(&mut rt, 6, t0());
    launch(&mut rt, MARK, t0());
    launch(&mut rt, OFFER, t0());
    // c03's `mark` timer row names c00: firing it sets `vip` on c03, a contact the reader
    // does not know that timer touches. c03's check, later in the batch, was read ahead
    // before; it must be computed again, after the write.
    rewrite_one_timer(
        &dir,
        "UPDATE timer SET contact_id = 'c00' WHERE contact_id = 'c03' AND step = 'mark'",
    );
    fire_twelve_due(&mut rt, t0() + TimeDelta::hours(3));
    let sent = sends(&mut rt);
    assert_eq!(sent.len(), 6);
    assert!(
        sent.iter().all(|(_, step, _)| step == "vip"),
        "c03's check saw the vip its mark set under another contact's name: {sent:?}"
    );
}

/// A frequency cap of one send a day, and two scenarios that each send an hour after entry.
const CAP: &str = "frequency_cap: {max: 1, per: P1D}\n";
const SEND_A: &str = "id: a\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: a, text: x}\nsteps:\n  - {id: wait, delay: {after: PT1H}, next: send}\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
const SEND_B: &str = "id: b\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: b, text: x}\nsteps:\n  - {id: wait, delay: {after: PT1H}, next: send}\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";

#[test]
fn a_timer_named_for_another_contact_reads_what_its_enrollments_contact_has_waiting() {
    // In one unit of timers, c00's send in `a` waits to be written with the others; then
    // c00's timer in `b`, the first of `b`, whose row names a contact of no other timer, is
    // fired. Its step must see the send of `a` (the cap holds it), as it would were each
    // timer its own unit.
    let dir = TempDir::fresh("ahead", "foreign-after-waiting");
    let mut rt = runtime_in(&dir, Reader::None);
    ok(rt.set_policy(CAP, t0()));
    contacts(&mut rt, 6, t0());
    launch(&mut rt, SEND_A, t0());
    launch(&mut rt, SEND_B, t0());
    rewrite_one_timer(
        &dir,
        "UPDATE timer SET contact_id = 'nobody' WHERE contact_id = 'c00' AND enrollment_id LIKE 'b:%'",
    );
    fire_twelve_due(&mut rt, t0() + TimeDelta::hours(2));
    let sent = sends(&mut rt);
    assert!(
        sent.iter().all(|(_, _, subject)| subject == "a"),
        "the cap held every send of b: {sent:?}"
    );
    assert_eq!(sent.len(), 6, "{sent:?}");
}

#[test]
fn a_contact_asked_for_twice_in_a_launch_enters_once() {
    let (_dir, mut rt) = drip_for_six("launch-twice");
    let ids = ["c00", "c01", "c02", "c00", "c03", "ghost", "c01"]
        .map(String::from)
        .to_vec();
    let report = launch_for(&mut rt, "drip", Some(ids), t0());
    // The second c00 and c01 were read ahead before the first entered: computed again, they
    // find the enrollment running.
    assert_eq!(report.entered, 4, "{report:?}");
    assert_eq!(report.skipped.values().sum::<u64>(), 2, "{report:?}");
    assert_eq!(report.not_found, vec!["ghost".to_string()]);
    assert_eq!(sends(&mut rt).len(), 4, "one email-1 each");
    let ahead = rt.steps_ahead();
    assert_eq!((ahead.offered, ahead.used), (5, 5), "{ahead:?}");
}

#[test]
fn a_step_read_before_another_connection_changed_its_contact_is_computed_again() {
    let dir = TempDir::fresh("ahead", "outside-write");
    let db = dir.join("relance.db");
    let mut rt = Runtime::new(ok(SqliteStore::open(&db)));
    contacts(&mut rt, 6, t0());
    // Launched without a reader: the hook below is for the timers' batch.
    launch(&mut rt, OFFER, t0());
    // Another process sets c00's `vip` right after the reader read c00, before the runner
    // writes c00's step.
    let mut reader = ok(SqliteStore::open_reader(&db));
    let other = db.clone();
    reader.after_next_contact_read(move || {
        let conn = ok(rusqlite::Connection::open(&other));
        ok(conn.busy_timeout(std::time::Duration::from_secs(10)));
        ok(conn.execute(
            "UPDATE contact SET fields = json_set(fields, '$.vip', json('true')) WHERE id = 'c00'",
            [],
        ));
    });
    rt.read_steps_ahead(ok(StepReader::start(reader)).waited_for());
    let due = ok(rt.due_timers(t0() + TimeDelta::hours(3)));
    assert_eq!(due.first().map(|w| w.contact.as_str()), Some("c00"));
    // Unit by unit (no group holds the write lock between them, as for a runner between
    // rounds): the other process's write lands between the read and the unit.
    ok(rt.fire_due(&due, t0() + TimeDelta::hours(3)));
    let sent = sends(&mut rt);
    assert_eq!(sent.len(), 6);
    for (contact, step, _) in &sent {
        let expected = if contact == "c00" { "vip" } else { "plain" };
        assert_eq!(step, expected, "{sent:?}");
    }
    let ahead = rt.steps_ahead();
    assert_eq!(ahead.offered, 6, "{ahead:?}");
    assert_eq!(
        ahead.used, 0,
        "the other connection's commit moved data_version: every step of the batch computed again"
    );
}

#[test]
fn a_launch_after_other_units_of_its_group_enters_what_they_wrote() {
    let (_dir, mut rt) = drip_for_six("launch-after-units");
    // One round of the runner: a new contact written, then a launch for everyone. The reader
    // sees the new contact only once the group's first unit is committed.
    let (report, committed) = rt.grouped(512, |rt| {
        ok(rt.upsert_contact(
            crate::common::contact_detail(
                serde_json::json!({"id": "late", "email": "late@x.io", "first_name": "Late"}),
            ),
            t0(),
        ));
        rt.launch(
            LaunchDetail {
                scenario: "drip".into(),
                contacts: None,
            },
            t0(),
        )
    });
    ok(committed);
    let report = ok(report);
    assert_eq!(report.entered, 7, "{report:?}");
    assert!(report.not_found.is_empty(), "{report:?}");
    assert!(
        sends(&mut rt)
            .iter()
            .any(|(c, _, part)| c == "late" && part == "Hello Late"),
        "the new contact got its email"
    );
    let ahead = rt.steps_ahead();
    assert_eq!((ahead.offered, ahead.used), (7, 7), "{ahead:?}");
}
