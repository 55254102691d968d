//! Issue 11, finding 2 (one input stopped every timer) and finding 10's outbox parts, on the
//! real SQLite store: a due row that does not read is dead-lettered alone and the tick goes
//! on; instants are integers, and a database of the text format is migrated; a scenario with
//! a delay past a century does not validate; the outbox cursor lives in the database, so
//! rotating the file re-sends nothing; commits are durable (`synchronous = FULL`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use relance_core::ports::{SourceFormat, Status};
use relance_core::wire::{ActivityDetail, LaunchDetail};
use relance_embedded::outbox::OutboxFile;
use relance_embedded::runtime::{Runtime, RuntimeError};
use relance_embedded::store::SqliteStore;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// A fresh temporary directory named after the test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relance-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn open(db: &Path) -> Runtime<SqliteStore> {
    Runtime::new(SqliteStore::open(db).unwrap_or_else(|e| panic!("{e}")))
}

fn activate(rt: &mut Runtime<SqliteStore>, yaml: &str, now: DateTime<Utc>) -> String {
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    put.id
}

fn import(rt: &mut Runtime<SqliteStore>, ids: &[&str], now: DateTime<Utc>) {
    let text: String = ids
        .iter()
        .map(|id| format!("{{\"id\": \"{id}\", \"email\": \"{id}@x.io\"}}\n"))
        .collect();
    let list =
        relance_core::script::contacts_from_json_lines(&text).unwrap_or_else(|e| panic!("{e:?}"));
    rt.import(&list, now, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
}

fn launch(rt: &mut Runtime<SqliteStore>, scenario: &str, contacts: &[&str], now: DateTime<Utc>) {
    rt.launch(
        LaunchDetail {
            scenario: scenario.into(),
            contacts: Some(contacts.iter().map(|c| c.to_string()).collect()),
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The contacts sent to, in outbox order.
fn sent_to(rt: &mut Runtime<SqliteStore>) -> Vec<String> {
    rt.store()
        .outbox_after(0, 100_000)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|(_, kind, _)| kind == "send")
        .map(|(_, _, payload)| {
            let v: Value = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));
            v["send"]["contact"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn sql(db: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(statements)
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

const DELAYED: &str = "id: dl\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done, delay: {after: PT1H}}\n  - {id: done, end: success}\n";
const CART: &str = "id: cart\nlaunch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";
const DAILY: &str = "id: daily\nlaunch: {type: recurring, frequency: daily, time: \"09:00\"}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n";

/// A `cart.updated` activity of `contact` (the CART scenario's inactivity source).
fn cart_updated(contact: &str, at: Option<DateTime<Utc>>) -> ActivityDetail {
    ActivityDetail {
        contact: contact.into(),
        event: "cart.updated".into(),
        properties: Default::default(),
        at,
        idempotency_key: None,
    }
}

/// Rows that do not read, written behind the store's back into every due table (garbage
/// text, an integer past 9999-12-31, a negative one, a real, a blob, the old `+10000-…`
/// text that once sorted first): each is dead-lettered by itself, with its row and reason,
/// and every good timer, check and launch due with them still fires, in the same tick.
#[test]
fn hostile_unreadable_due_rows_are_dead_lettered_alone() {
    let dir = temp_dir("unreadable");
    let db = dir.join("r.db");
    let t0 = at("2026-12-01T09:00:00Z");
    {
        let mut rt = open(&db);
        import(&mut rt, &["a", "b", "c"], t0);
        activate(&mut rt, DELAYED, t0);
        activate(&mut rt, CART, t0);
        launch(&mut rt, "dl", &["a", "b"], t0);
        for c in ["a", "c"] {
            rt.activity(cart_updated(c, None), t0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // b's enrollment gets a second timer that does not read, and more of them besides.
    sql(
        &db,
        "INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT 'garbage', id, contact_id, 'x1' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT 9223372036854775807, id, contact_id, 'x2' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT -5, id, contact_id, 'x3' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT '+262143-12-31T23:59:59.999999Z', id, contact_id, 'x4' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT 1.5, id, contact_id, 'x5' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT x'00ff', id, contact_id, 'x6' FROM enrollment WHERE contact_id = 'b';
         INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT 1780000000000000, id, contact_id, x'0078' FROM enrollment WHERE contact_id = 'b';
         UPDATE inactivity SET due = '9999-12-31T23:30:00.000000Z+30min' WHERE contact_id = 'a';
         INSERT INTO launch (scenario_id, zone, next_at) VALUES ('cart', 'Nowhere/Zone', 'soon');",
    );
    let mut rt = open(&db);
    assert!(
        rt.next_due().ok().flatten().is_some_and(|t| t <= t0),
        "an unreadable row is due at once"
    );
    let report = rt
        .tick(t0 + TimeDelta::hours(2))
        .unwrap_or_else(|e| panic!("a bad row stopped the tick: {e}"));
    assert_eq!(report.timers, 2, "a's and b's good timers");
    assert_eq!(report.inactivity, 1, "c's check");
    let mut got = sent_to(&mut rt);
    got.sort();
    assert_eq!(got, vec!["a", "b", "c"]);
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = dead.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "timer").count(),
        7,
        "{dead:#?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "inactivity").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "launch").count(), 1);
    for (kind, payload, reason) in &dead {
        assert!(reason.starts_with("unreadable row: "), "{reason}");
        let raw: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw["table"], kind.as_str(), "{payload}");
        if kind == "timer" {
            // Without rowid: the row is kept with every column as stored, its key among them.
            assert!(
                raw["enrollment_id"].is_string() && raw["contact_id"] == "b",
                "the raw row is kept: {payload}"
            );
            let expected_due = match raw["step"].as_str() {
                Some("x1") => Value::from("garbage"),
                Some("x2") => Value::from(i64::MAX),
                Some("x3") => Value::from(-5),
                Some("x4") => Value::from("+262143-12-31T23:59:59.999999Z"),
                Some("x5") => Value::from(1.5),
                Some("x6") => Value::from("<2 bytes>"),
                _ => {
                    assert_eq!(raw["step"], "<2 bytes>", "{payload}");
                    Value::from(1_780_000_000_000_000_i64)
                }
            };
            assert_eq!(raw["due"], expected_due, "{payload}");
        } else {
            assert!(raw["rowid"].is_i64(), "the raw row is kept: {payload}");
        }
    }
    assert!(
        dead.iter()
            .any(|(_, p, r)| p.contains("garbage") && r.contains("due")),
        "{dead:#?}"
    );
    assert!(
        dead.iter()
            .any(|(_, p, r)| p.contains("9223372036854775807")
                && r.contains("outside 1970-01-01..9999-12-31")),
        "{dead:#?}"
    );
    assert_eq!(
        rt.next_due().ok().flatten(),
        None,
        "nothing left, nothing retried"
    );
    // And the next tick is clean.
    let again = rt
        .tick(t0 + TimeDelta::hours(3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.timers, again.inactivity, again.launches), (0, 0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The event of the issue: `"at": "9999-12-31T23:30:00Z"` on an inactivity trigger is
/// refused (its check would fall past 9999-12-31), stores nothing, and timers still fire.
#[test]
fn hostile_end_of_time_inactivity_event_is_refused() {
    let dir = temp_dir("end-of-time");
    let db = dir.join("r.db");
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = open(&db);
    import(&mut rt, &["a", "b"], t0);
    activate(&mut rt, CART, t0);
    activate(&mut rt, DELAYED, t0);
    launch(&mut rt, "dl", &["b"], t0);
    let r = rt.activity(cart_updated("a", Some(at("9999-12-31T23:30:00Z"))), t0);
    match r {
        Err(RuntimeError::BadInput { field, message }) => {
            assert_eq!(field, "at");
            assert!(message.contains("past 9999-12-31"), "{message}");
        }
        other => panic!("not refused: {other:?}"),
    }
    let report = rt
        .tick(t0 + TimeDelta::hours(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.timers, 1);
    assert_eq!(sent_to(&mut rt), vec!["b"]);
    assert!(
        rt.store()
            .dead_letters()
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `delay: {after: P8000Y}` (which `validate` used to accept) is a located validation error;
/// the scenario cannot be activated.
#[test]
fn hostile_eight_thousand_year_delay_fails_validation() {
    let yaml = "id: forever\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: first, send: m, next: later}\n  - {id: later, send: m, next: done, delay: {after: P8000Y}}\n  - {id: done, end: success}\n";
    let mut rt = Runtime::new(SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")));
    let t0 = at("2026-12-01T09:00:00Z");
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let errors: Vec<String> = put
        .problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("steps[1].delay.after")
            && e.contains("\"P8000Y\" is too long: at most 100 years")),
        "{errors:#?}"
    );
    assert!(matches!(
        rt.set_status("forever", Status::Active, t0),
        Err(RuntimeError::Invalid { .. })
    ));
}

/// The instant columns of every table, as schema versions 1 to 3 wrote them (RFC 3339 text).
const INSTANT_COLUMNS: [(&str, &str); 13] = [
    ("scenario", "updated_at"),
    ("scenario_version", "created_at"),
    ("contact", "updated_at"),
    ("activity", "at"),
    ("engagement", "at"),
    ("enrollment", "entered_at"),
    ("entry", "last_entered_at"),
    ("timer", "due"),
    ("inactivity", "due"),
    ("launch", "next_at"),
    ("outbox", "at"),
    ("dead_letter", "at"),
    ("setting", "updated_at"),
];

/// Writes a copy of `from` (this build's format) as a schema-3 database at `to`: the old DDL,
/// every row copied, every instant turned back into the RFC 3339 text of that format.
fn downgrade(from: &Path, to: &Path) {
    let old = rusqlite::Connection::open(to).unwrap_or_else(|e| panic!("{e}"));
    for ddl in [
        include_str!("../../migrations/0001_init.sql"),
        include_str!("../../migrations/0002_dead_letter.sql"),
        include_str!("../../migrations/0003_policy.sql"),
    ] {
        old.execute_batch(ddl).unwrap_or_else(|e| panic!("{e}"));
    }
    old.pragma_update(None, "user_version", 3)
        .unwrap_or_else(|e| panic!("{e}"));
    let new = rusqlite::Connection::open(from).unwrap_or_else(|e| panic!("{e}"));
    for table in [
        "scenario",
        "scenario_version",
        "contact",
        "activity",
        "engagement",
        "enrollment",
        "entry",
        "timer",
        "inactivity",
        "launch",
        "outbox",
        "journal",
        "dead_letter",
        "setting",
    ] {
        let mut stmt = new
            .prepare(&format!("SELECT * FROM {table}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows: Vec<Vec<SqlValue>> = stmt
            .query_map([], |r| {
                (0..names.len()).map(|i| r.get::<_, SqlValue>(i)).collect()
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        for row in rows {
            let values: Vec<SqlValue> = row
                .into_iter()
                .zip(&names)
                .map(|(v, name)| match v {
                    SqlValue::Integer(m) if INSTANT_COLUMNS.contains(&(table, name.as_str())) => {
                        let t = DateTime::from_timestamp_micros(m)
                            .unwrap_or_else(|| panic!("{table}.{name}: {m}"));
                        SqlValue::Text(t.to_rfc3339_opts(SecondsFormat::Micros, true))
                    }
                    other => other,
                })
                .collect();
            let marks = vec!["?"; names.len()].join(", ");
            old.execute(
                &format!(
                    "INSERT INTO {table} ({}) VALUES ({marks})",
                    names.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        }
    }
}

/// A database of schema version 3 (instants as text) with pending timers, an inactivity
/// check, a recurring launch, sends in its outbox and an unreadable timer row: opening it
/// migrates every instant to an integer, keeps the outbox numbering, and the tick fires the
/// converted items and dead-letters the bad row.
#[test]
fn hostile_text_instant_database_is_migrated_to_integers() {
    let dir = temp_dir("migrate");
    let (current, legacy) = (dir.join("current.db"), dir.join("legacy.db"));
    let t0 = at("2026-12-01T08:00:00Z");
    {
        let mut rt = open(&current);
        import(&mut rt, &["a", "b", "c"], t0);
        activate(&mut rt, DELAYED, t0);
        activate(&mut rt, CART, t0);
        activate(&mut rt, DAILY, t0);
        launch(&mut rt, "dl", &["a", "b"], t0);
        rt.activity(cart_updated("c", None), t0)
            .unwrap_or_else(|e| panic!("{e}"));
        // A send already made, so the outbox has rows and a high-water mark.
        activate(
            &mut rt,
            "id: now\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n",
            t0,
        );
        launch(&mut rt, "now", &["c"], t0);
        assert_eq!(sent_to(&mut rt), vec!["c"]);
    }
    downgrade(&current, &legacy);
    sql(
        &legacy,
        "INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT '+10000-01-01T00:00:00.000000Z', id, contact_id, 'x' FROM enrollment WHERE contact_id = 'a' AND scenario_id = 'dl';",
    );
    {
        let conn = rusqlite::Connection::open(&legacy).unwrap_or_else(|e| panic!("{e}"));
        let due: String = conn
            .query_row("SELECT MIN(due) FROM timer", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            due, "+10000-01-01T00:00:00.000000Z",
            "it sorted first as text"
        );
    }
    let mut rt = open(&legacy);
    assert_eq!(
        rt.store().schema_version().ok(),
        Some(relance_embedded::store::SCHEMA_VERSION),
        "migrated to the latest schema"
    );
    {
        let conn = rusqlite::Connection::open(&legacy).unwrap_or_else(|e| panic!("{e}"));
        for (table, column) in INSTANT_COLUMNS {
            let text: i64 = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE typeof({column}) <> 'integer'"),
                    [],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            let expected = i64::from(table == "timer");
            assert_eq!(text, expected, "{table}.{column} still has text");
        }
        let entered: i64 = conn
            .query_row(
                "SELECT entered_at FROM enrollment WHERE contact_id = 'a' AND scenario_id = 'dl'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entered, t0.timestamp_micros());
    }
    // The next outbox row continues the numbering.
    let before: Vec<i64> = rt
        .store()
        .outbox_after(0, 100)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|r| r.0)
        .collect();
    let report = rt
        .tick(at("2026-12-01T09:30:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.timers, 2, "a's and b's delays");
    assert_eq!(report.inactivity, 1, "c's check");
    assert_eq!(report.launches, 1, "the 09:00 launch");
    let rows = rt
        .store()
        .outbox_after(0, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rows.iter()
            .skip(before.len())
            .all(|r| r.0 > before.iter().copied().max().unwrap_or(0)),
        "{rows:?}"
    );
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0].1.contains("+10000-01-01"), "{dead:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends for `contacts` at once, in a runtime over `db`.
fn send_now(rt: &mut Runtime<SqliteStore>, contacts: &[&str], now: DateTime<Utc>) {
    import(rt, contacts, now);
    if rt
        .store()
        .scenarios(None)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty()
    {
        activate(
            rt,
            "id: now\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n",
            now,
        );
    }
    launch(rt, "now", contacts, now);
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn contacts_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["send"]["contact"].as_str().unwrap_or("").to_string())
        .collect()
}

use relance_core::ports::ScenarioStore;

/// Finding 10: moving the outbox file away (log rotation) and restarting re-sends nothing;
/// the next send starts the new file.
#[test]
fn hostile_outbox_rotation_resends_nothing() {
    let dir = temp_dir("rotate");
    let (db, path) = (dir.join("r.db"), dir.join("outbox.jsonl"));
    let t0 = at("2026-12-01T09:00:00Z");
    {
        let mut rt = open(&db);
        let mut outbox = OutboxFile::open(&path, rt.store()).unwrap_or_else(|e| panic!("{e}"));
        send_now(&mut rt, &["a", "b", "c"], t0);
        assert_eq!(outbox.deliver(rt.store()).ok(), Some(3));
    }
    std::fs::rename(&path, dir.join("outbox.jsonl.1")).unwrap_or_else(|e| panic!("{e}"));
    let mut rt = open(&db);
    let mut outbox = OutboxFile::open(&path, rt.store()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outbox.deliver(rt.store()).ok(), Some(0), "nothing re-sent");
    assert!(lines(&path).is_empty());
    send_now(&mut rt, &["d"], t0);
    assert_eq!(outbox.deliver(rt.store()).ok(), Some(1));
    let now = lines(&path);
    assert_eq!(contacts_of(&now), vec!["d"]);
    assert_eq!(now[0]["seq"], 4);
    assert_eq!(
        contacts_of(&lines(&dir.join("outbox.jsonl.1"))),
        vec!["a", "b", "c"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three sends delivered to the outbox file of a fresh database, the cursor then moved back
/// to `cursor` when given (a crash before it was written), and the file's last line torn (a
/// crash inside the write): (folder, database, outbox file).
fn three_delivered_then_torn(name: &str, cursor: Option<i64>) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let (db, path) = (dir.join("r.db"), dir.join("outbox.jsonl"));
    {
        let mut rt = open(&db);
        let mut outbox = OutboxFile::open(&path, rt.store()).unwrap_or_else(|e| panic!("{e}"));
        send_now(&mut rt, &["a", "b", "c"], at("2026-12-01T09:00:00Z"));
        assert_eq!(outbox.deliver(rt.store()).ok(), Some(3));
        if let Some(seq) = cursor {
            rt.store()
                .set_outbox_delivered(seq)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, &text[..text.len() - 10]).unwrap_or_else(|e| panic!("{e}"));
    (dir, db, path)
}

/// A crash after the append and before the cursor was written (simulated by moving the
/// cursor back): the lines the file already shows are not appended again; a torn last line is
/// cut and written again, once.
#[test]
fn hostile_outbox_crash_before_the_cursor_does_not_duplicate() {
    let (dir, db, path) = three_delivered_then_torn("cursor", Some(1));
    let mut rt = open(&db);
    let mut outbox = OutboxFile::open(&path, rt.store()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        outbox.deliver(rt.store()).ok(),
        Some(1),
        "only the torn line again"
    );
    let got = lines(&path);
    assert_eq!(contacts_of(&got), vec!["a", "b", "c"]);
    assert_eq!(
        got.iter().map(|l| l["seq"].as_i64()).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    assert_eq!(rt.store().outbox_delivered().ok(), Some(Some(3)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 10: a commit is durable before the outbox file can show it.
#[test]
fn hostile_database_commits_are_synchronous_full() {
    let dir = temp_dir("sync");
    let store = SqliteStore::open(&dir.join("r.db")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.synchronous().ok(),
        Some(2),
        "PRAGMA synchronous = FULL"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A torn last line whose delivery was already recorded (the file lost a synced write, as a
/// crash inside the write shows) is written again, once; lines before it are not.
#[test]
fn hostile_outbox_torn_recorded_line_is_written_again_once() {
    let (dir, db, path) = three_delivered_then_torn("torn-recorded", None);
    let mut rt = open(&db);
    assert_eq!(rt.store().outbox_delivered().ok(), Some(Some(3)));
    let mut outbox = OutboxFile::open(&path, rt.store()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outbox.deliver(rt.store()).ok(), Some(1));
    assert_eq!(contacts_of(&lines(&path)), vec!["a", "b", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Due timers in a group go many to a unit whose steps are written together. One whose step
/// fails (a step its scenario does not have) among them fails alone: that unit is rolled
/// back and its timers fired one by one, so the bad timer is dead-lettered by itself, every
/// good one sends once, and what the group commits is whole.
#[test]
fn hostile_a_failing_timer_among_many_in_a_unit_is_dead_lettered_alone() {
    let dir = temp_dir("unit-of-timers");
    let db = dir.join("r.db");
    let t0 = at("2026-12-01T09:00:00Z");
    let ids: Vec<String> = (0..100).map(|i| format!("c{i:02}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    {
        let mut rt = open(&db);
        import(&mut rt, &ids, t0);
        activate(&mut rt, DELAYED, t0);
        launch(&mut rt, "dl", &ids, t0);
    }
    // c40's enrollment gets a second timer, due with the others, for a step `dl` lacks.
    sql(
        &db,
        "INSERT INTO timer (due, enrollment_id, contact_id, step)
           SELECT due, enrollment_id, contact_id, 'ghost' FROM timer WHERE contact_id = 'c40';",
    );
    let mut rt = open(&db);
    let (ticked, committed) = rt.grouped(512, |rt| rt.tick(t0 + TimeDelta::hours(2)));
    committed.unwrap_or_else(|e| panic!("{e}"));
    let report = ticked.unwrap_or_else(|e| panic!("a bad timer stopped the tick: {e}"));
    assert_eq!(report.timers, 101, "every timer due, the bad one with them");
    let mut got = sent_to(&mut rt);
    got.sort();
    assert_eq!(got, ids, "every good timer sent once");
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let (kind, payload, reason) = &dead[0];
    assert_eq!(kind, "timer");
    assert!(
        payload.contains("ghost") && payload.contains("c40"),
        "{payload}"
    );
    assert!(reason.contains("ghost"), "{reason}");
    assert!(
        rt.next_due().unwrap_or_else(|e| panic!("{e}")).is_none(),
        "nothing left due"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
