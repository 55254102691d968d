//! `SqliteStore`: the embedded adapter for every port, on one SQLite file (WAL) with
//! versioned migrations. Each unit of work is one `BEGIN IMMEDIATE … COMMIT` transaction,
//! so a crash leaves either all of a transition's writes or none; `synchronous = FULL`
//! makes each commit durable before it returns, so nothing the outbox file shows (it is
//! written after the commit) can be rolled back by a power loss.
//!
//! Instants are INTEGER columns: microseconds since the Unix epoch, within
//! 1970-01-01..9999-12-31 ([`relance_core::instant`]). A due row that does not read (a
//! wrong type, an instant out of range) is returned as [`Due::Unreadable`] with its rowid
//! (the timer table, without rowid: its key).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use relance_core::consent::Derived;
use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, HistoryNeeds, SendMark,
};
use relance_core::engine::{Enrollment, Send, Wake};
use relance_core::instant;
use relance_core::journal::Record;
use relance_core::policy::Retained;
use relance_core::ports::{
    ContactChange, ContactStore, ConversionWatch, Due, EnrollmentStore, EntryMark, InactivityCheck,
    JournalStore, LaunchTime, ScenarioEntry, ScenarioSource, ScenarioStore, SourceFormat, Status,
    Store, TimerStore, UnreadableRow,
};
use relance_core::scenario::Action;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};

/// Every event runs it (its contact's pending inactivity checks go, but those it re-arms): by
/// the index on the contact (schema 14), not a scan of every contact's checks.
const CLEAR_INACTIVITY: &str = "DELETE FROM inactivity WHERE contact_id = ?1 AND scenario_id NOT IN (SELECT value FROM json_each(?2))";

/// A contact's journal rows in a scenario, in order: a range of the index by (scenario,
/// contact, seq), already in order.
const CONTACT_PATH: &str =
    "SELECT record FROM journal WHERE scenario_id = ?1 AND contact_id = ?2 ORDER BY seq";
/// A scenario's journal rows, in order.
const SCENARIO_JOURNAL: &str = "SELECT record FROM journal WHERE scenario_id = ?1 ORDER BY seq";
/// The migrations, in order; `PRAGMA user_version` says how many were applied.
const MIGRATIONS: [&str; 16] = [
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_dead_letter.sql"),
    include_str!("../migrations/0003_policy.sql"),
    include_str!("../migrations/0004_integer_instants.sql"),
    include_str!("../migrations/0005_outbox_delivery.sql"),
    include_str!("../migrations/0006_input_key.sql"),
    include_str!("../migrations/0007_consent.sql"),
    include_str!("../migrations/0008_conversion_watch.sql"),
    include_str!("../migrations/0009_webhook.sql"),
    include_str!("../migrations/0010_delivery.sql"),
    include_str!("../migrations/0011_journal_rows.sql"),
    include_str!("../migrations/0012_one_send_index.sql"),
    include_str!("../migrations/0013_timer_without_rowid.sql"),
    include_str!("../migrations/0014_no_autoincrement.sql"),
    include_str!("../migrations/0015_consent_applied.sql"),
    include_str!("../migrations/0016_journal_shared_fields.sql"),
];

/// The schema version this build writes (the number of migrations).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

mod deliveries;
mod entries;
mod webhooks;
pub use deliveries::{DeliveryCounts, DeliveryRow, DeliveryStatus, Settlement};
pub use webhooks::{Attempt, WebhookRow, WebhookStatus};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not read back (a bug or a hand-edited file).
    #[error("corrupt {what}: {why}")]
    Corrupt { what: &'static str, why: String },
    /// The enrollment changed since it was read: the input was stale or duplicated.
    #[error("enrollment {0} changed concurrently (version conflict)")]
    Conflict(String),
    /// The group commit this unit belonged to was lost (see [`Store::begin_group`]).
    #[error("the group commit was lost: {0}")]
    GroupLost(String),
    /// The database was written by a newer Relance.
    #[error("the database has schema version {found}, newer than this build knows ({known})")]
    TooNew { found: usize, known: usize },
    /// An instant to store is outside 1970-01-01..9999-12-31 (the inputs and the engine
    /// refuse such instants first; this keeps a row that would not read out of the file).
    #[error("{what}: {source}")]
    OutOfRange {
        what: &'static str,
        source: instant::OutOfRange,
    },
}

/// The storage form of an instant: microseconds since the Unix epoch, so SQL order is time
/// order. Only instants within range are written.
pub fn ts(what: &'static str, t: DateTime<Utc>) -> Result<i64, StoreError> {
    instant::check(t)
        .map(instant::to_micros)
        .map_err(|source| StoreError::OutOfRange { what, source })
}

/// The storage form of `now`-like instants the store takes itself (clamped: a clock can
/// only be out of range on a broken machine, and a bookkeeping time never decides anything).
fn stamp(t: DateTime<Utc>) -> i64 {
    instant::to_micros(t).clamp(instant::MIN_MICROS, instant::MAX_MICROS)
}

fn parse_ts(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    instant::from_micros(micros).ok_or_else(|| StoreError::Corrupt {
        what: "timestamp",
        why: format!("{micros} is outside {}", instant::RANGE_TEXT),
    })
}

/// One column of a due row, as stored (any SQLite type), for reading it by hand.
fn describe(v: &SqlValue) -> serde_json::Value {
    match v {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Integer(i) => serde_json::Value::from(*i),
        SqlValue::Real(f) => serde_json::Value::from(*f),
        SqlValue::Text(t) => serde_json::Value::from(t.as_str()),
        SqlValue::Blob(b) => serde_json::Value::from(format!("<{} bytes>", b.len())),
    }
}

/// One key column of an unreadable row, for its locator: the value with its SQLite type
/// (a real by its bits, a blob in hex), so that the delete binds exactly what is stored.
fn locator_part(v: &SqlValue) -> serde_json::Value {
    match v {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Integer(i) => serde_json::json!({ "integer": i }),
        SqlValue::Real(f) => serde_json::json!({ "real_bits": f.to_bits() }),
        SqlValue::Text(t) => serde_json::json!({ "text": t }),
        SqlValue::Blob(b) => serde_json::json!({ "blob": crate::auth::to_hex(b) }),
    }
}

/// The value a [`locator_part`] kept; `None` if it is not one.
fn locator_value(v: &serde_json::Value) -> Option<SqlValue> {
    if v.is_null() {
        return Some(SqlValue::Null);
    }
    let (tag, value) = v.as_object().filter(|o| o.len() == 1)?.iter().next()?;
    match tag.as_str() {
        "integer" => value.as_i64().map(SqlValue::Integer),
        "real_bits" => value.as_u64().map(|b| SqlValue::Real(f64::from_bits(b))),
        "text" => value.as_str().map(|t| SqlValue::Text(t.to_string())),
        "blob" => {
            let hex = value.as_str()?;
            if hex.len() % 2 != 0 {
                return None;
            }
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
                .map(SqlValue::Blob)
        }
        _ => None,
    }
}

/// How an unreadable due row is found again to delete it.
#[derive(Clone, Copy)]
enum RowKey {
    /// Column 0 of the query is the rowid (`inactivity`, `launch`).
    Rowid,
    /// These columns (of the row's own, in the order of `remove_unreadable`'s delete) are its
    /// primary key (`timer`, a table without rowid); each kept with its SQLite type, since a
    /// row that does not read may hold text or a blob where a number belongs.
    Columns(&'static [usize]),
}

/// A due row read column by column: every value must have its type and every instant its
/// range, or the row is [`Due::Unreadable`] (with its locator, to delete it) and the others
/// still come out.
struct RawRow {
    kind: &'static str,
    /// The rowid ([`RowKey::Rowid`]), or `None` and the row is found by `key` columns.
    rowid: Option<i64>,
    key: &'static [usize],
    columns: Vec<(&'static str, SqlValue)>,
}

impl RawRow {
    fn read(
        kind: &'static str,
        key: RowKey,
        names: &[&'static str],
        r: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<RawRow> {
        let (first, rowid, key) = match key {
            RowKey::Rowid => (1, Some(r.get(0)?), &[][..]),
            RowKey::Columns(key) => (0, None, key),
        };
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            columns.push((*name, r.get::<_, SqlValue>(i + first)?));
        }
        Ok(RawRow {
            kind,
            rowid,
            key,
            columns,
        })
    }

    /// How `remove_unreadable` finds the row again: the rowid as text, or the key's values
    /// as a JSON array of [`locator_part`]s. Built only for a row that does not read.
    fn locator(&self) -> String {
        match self.rowid {
            Some(rowid) => rowid.to_string(),
            None => {
                let parts: Vec<serde_json::Value> = self
                    .key
                    .iter()
                    .filter_map(|&i| self.columns.get(i))
                    .map(|(_, v)| locator_part(v))
                    .collect();
                serde_json::Value::from(parts).to_string()
            }
        }
    }

    fn text(&self, i: usize) -> Result<String, String> {
        match &self.columns[i] {
            (_, SqlValue::Text(t)) => Ok(t.clone()),
            (name, other) => Err(format!("{name}: not text ({:?})", other.data_type())),
        }
    }

    fn instant(&self, i: usize) -> Result<DateTime<Utc>, String> {
        match &self.columns[i] {
            (name, SqlValue::Integer(m)) => instant::from_micros(*m).ok_or_else(|| {
                format!(
                    "{name}: {m} microseconds is outside {}",
                    instant::RANGE_TEXT
                )
            }),
            (name, other) => Err(format!(
                "{name}: {} is not an instant (microseconds since 1970)",
                describe(other)
            )),
        }
    }

    fn due<T>(self, read: impl FnOnce(&RawRow) -> Result<T, String>) -> Due<T> {
        match read(&self) {
            Ok(item) => Due::Ready(item),
            Err(reason) => {
                let mut raw = serde_json::Map::new();
                raw.insert("table".into(), self.kind.into());
                if let Some(rowid) = self.rowid {
                    raw.insert("rowid".into(), rowid.into());
                }
                for (name, v) in &self.columns {
                    raw.insert((*name).into(), describe(v));
                }
                Due::Unreadable(UnreadableRow {
                    kind: self.kind.to_string(),
                    locator: self.locator(),
                    raw: serde_json::Value::Object(raw).to_string(),
                    reason,
                })
            }
        }
    }
}

/// The earliest value of a `due` column as the runner's wake-up time: a value that does not
/// read is due at once (the next tick moves its row to the dead letters).
fn due_value(v: SqlValue) -> Option<DateTime<Utc>> {
    match v {
        SqlValue::Null => None,
        SqlValue::Integer(m) => Some(instant::from_micros(m).unwrap_or_else(instant::min)),
        // A real compares as its number (a due query takes it once that time has come).
        SqlValue::Real(f) => Some(instant::from_micros(f as i64).unwrap_or_else(instant::min)),
        // Text and blobs sort after every number: the due queries take them at once.
        SqlValue::Text(_) | SqlValue::Blob(_) => Some(instant::min()),
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

/// Reads one `journal` row into `out` (see [`Record::row_json`]).
fn read_journal_row(text: &str, out: &mut Vec<Record>) -> Result<(), StoreError> {
    Record::read_row(text, out).map_err(|e| StoreError::Corrupt {
        what: "journal records",
        why: e.to_string(),
    })
}

/// An enrollment row as selected (id, scenario_id, contact_id, version, state,
/// scenario_version): the enrollment from its columns and its stored text
/// ([`Enrollment::stored_json`]), and its scenario version. A `state` that is not text or does
/// not read is a corrupt enrollment (a store error of its own); a column of another type than
/// the schema's fails the query, as any row would.
fn stored_enrollment(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<(Enrollment, u32), StoreError>> {
    // The writers store the version `as i64` (a `u64` past `i64::MAX` wraps): read back the
    // same way, it is the version written.
    let (version, scenario_version): (i64, u32) = (r.get(3)?, r.get(5)?);
    let corrupt = |why: String| StoreError::Corrupt {
        what: "enrollment",
        why,
    };
    let read = match r.get_ref(4)? {
        rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text)
            .map_err(|e| corrupt(e.to_string()))
            .and_then(|state| {
                Enrollment::from_stored_json(r.get(0)?, r.get(1)?, r.get(2)?, version as u64, state)
                    .map_err(|e| corrupt(e.to_string()))
            }),
        other => Err(corrupt(format!(
            "its state is {}, not text",
            other.data_type()
        ))),
    };
    Ok(read.map(|e| (e, scenario_version)))
}

/// A consent entry's stored state.
fn consent_state_of(text: String) -> Result<relance_core::consent::ConsentState, StoreError> {
    relance_core::consent::ConsentState::parse(&text).ok_or(StoreError::Corrupt {
        what: "consent state",
        why: text,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain types cannot fail; an empty object keeps the row readable if it ever did.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string())
}

/// How many prepared statements the store keeps (more than it has).
const STATEMENT_CACHE: usize = 256;

/// The sub-journal spill threshold this repository builds SQLite with (`LIBSQLITE3_FLAGS` in
/// `.cargo/config.toml`): a savepoint's undo pages stay in memory, in one allocation, up to it.
const SUBJOURNAL_SPILL_WANTED: i64 = 4 << 20;

/// The sub-journal spill threshold SQLite was built with (`SQLITE_STMTJRNL_SPILL`, 64 KiB
/// unless the build says otherwise).
fn stmt_journal_spill(conn: &Connection) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare("PRAGMA compile_options")?;
    let options = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for option in options {
        if let Some(v) = option?.strip_prefix("STMTJRNL_SPILL=") {
            return Ok(v.parse().unwrap_or(64 << 10));
        }
    }
    Ok(64 << 10)
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// The channels whose sends are delivered by a real backend (`relance run`'s settings):
    /// their sends get a `delivery` row beside the outbox row.
    live_channels: Vec<relance_core::scenario::Channel>,
    /// The group commit in progress ([`Store::begin_group`]), with what it has read.
    group: GroupState,
    /// A test's work run once right after the next contact read (see
    /// [`SqliteStore::after_next_contact_read`]).
    after_contact_read: Option<TestHook>,
    /// The last group's journal rows, emptied: the next group fills the same room instead of
    /// growing a vector from nothing (a launch round's 1,500 rows reallocated it ten times).
    spare_journal_rows: Vec<(String, String, String)>,
}

/// The most journal rows whose room a store keeps between groups (about 300 KB): a group
/// that wrote more gives its vector back to the allocator.
const SPARE_JOURNAL_ROWS: usize = 4096;

/// What an open group has read and may use again: the group holds the write lock from its
/// `BEGIN IMMEDIATE` to its commit, so only this connection can change these meanwhile. They
/// live in [`OpenGroup`] and end with the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupReads {
    /// `data_version`: no other connection commits inside the group, so it cannot move; read
    /// once per group instead of once per item read ahead.
    mark: Option<i64>,
    /// Scenario rows by id (`None`: there is none). Every engagement and event looked its
    /// scenarios up again, a tenth of an open's work. The store's own scenario writes and a
    /// failed unit (which may undo one) forget them, with `scenario_lists`.
    scenarios: std::collections::HashMap<String, Option<ScenarioEntry>>,
    /// The lists of those with a status (or of all), as [`ScenarioStore::scenarios`] returns
    /// them.
    scenario_lists: Vec<(Option<Status>, Vec<ScenarioEntry>)>,
}

impl GroupReads {
    fn forget_scenarios(&mut self) {
        self.scenarios.clear();
        self.scenario_lists.clear();
    }
}

/// An open group: what it has read, and the journal rows its units wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OpenGroup {
    reads: GroupReads,
    journal: PendingJournal,
}

/// The journal rows written by the open group's units (a delivery's or a webhook's settlement
/// is one), inserted together just before its commit, outside any unit. Each unit is a savepoint, and SQLite copies every page a savepoint
/// changes first: the journal's table and index pages were two of the fifteen or so a unit
/// copied, and each row was a statement of its own (BENCHMARKS.md, round twelve).
/// [`JournalStore::records`] and [`SqliteStore::recent_records`] see these rows after the
/// committed ones (a unit may read the journal: the winner rule does), in the order written,
/// which is the order they are given their `seq` in. A failed unit drops its rows with its
/// other writes; a group that does not commit, or whose rows cannot be inserted, drops them
/// all, with its units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PendingJournal {
    /// (scenario, contact, record JSON), in the order written.
    rows: Vec<(String, String, String)>,
    /// While a unit runs: how many rows there were when it began (a failed unit drops those
    /// after).
    unit_start: Option<usize>,
}

/// Why a group is lost when SQLite ended its transaction under it.
const TRANSACTION_ENDED: &str = "the transaction was rolled back by SQLite after an error";

/// A test's work, run by the store at a chosen point.
struct TestHook(Box<dyn FnOnce() + std::marker::Send>);

impl std::fmt::Debug for TestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestHook")
    }
}

/// Whether units of work share a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupState {
    /// Each unit is its own `BEGIN IMMEDIATE … COMMIT`.
    None,
    /// A transaction is open; each unit is a savepoint in it.
    Open(OpenGroup),
    /// The group's transaction ended under it (SQLite rolls a transaction back by itself on
    /// some errors: a full disk, an I/O error): its units are lost, and no unit runs until the
    /// group is committed (which reports the loss).
    Broken(String),
}

/// WAL pages between two checkpoints for the runner (SQLite's default is 1,000): a page that
/// many commits change is copied into the database once per checkpoint, so fewer checkpoints
/// write less; the WAL grows to about 40 MB between them.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// The runner's own checkpoint threshold once a [`crate::durable::Checkpointer`] does the
/// checkpoints: only a guard, for when the log could not restart (see there). Beside steady
/// writes the log restarts only once it passes about 240 MB, when no reader holds an older
/// snapshot: after each commit past it, the runner copies what the checkpoint thread has not
/// yet copied (up to its interval's writes) and syncs the database file before the commit
/// returns. An enrolment of 100,000 contacts and their checks write about 170 MB of WAL: at
/// 30,000 pages (120 MB) the guard fired during the enrolment and made it 0.15–0.25 s longer
/// (BENCHMARKS.md, round fifteen).
const WAL_CHECKPOINT_GUARD_PAGES: i64 = 60_000;

impl SqliteStore {
    /// Opens (or creates) a database file, in WAL mode, and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before it returns. The outbox file is written after the
        // commit, so what it shows can no longer be rolled back by a power loss (NORMAL in
        // WAL mode may lose the last commits).
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::prepare(conn)
    }

    /// A second connection to the database at `path` that only reads (`query_only`), for a
    /// thread that reads beside the runner (the steps of due timers computed ahead, see
    /// [`relance_runtime::runtime::StepReader`]). The database must already be at this build's schema:
    /// a reader migrates nothing.
    pub fn open_reader(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "query_only", true)?;
        let store = Self::configured(conn)?;
        let found = store.schema_version()?;
        if found != MIGRATIONS.len() {
            return Err(StoreError::Corrupt {
                what: "reading connection",
                why: format!(
                    "the database is at schema {found}, this build reads {}",
                    MIGRATIONS.len()
                ),
            });
        }
        Ok(store)
    }

    /// Runs `hook` once, right after this store's next contact read returns its row: a test's
    /// other writer, landing between a read and what was computed from it.
    #[doc(hidden)]
    pub fn after_next_contact_read(&mut self, hook: impl FnOnce() + std::marker::Send + 'static) {
        self.after_contact_read = Some(TestHook(Box::new(hook)));
    }

    /// An in-memory database (tests, `relance test`).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    /// The store over `conn`, set up as every connection of the store is (reading or writing).
    fn configured(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every statement of the store stays prepared: the default cache (16) is smaller than
        // the statements one timer's unit of work runs, so they were prepared again and again.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The same plan whatever the values bound: without it, SQLite (built with STAT4)
        // compiles a statement again whenever a value its plan looked at changes, as the
        // current time in every query for due timers does (7% of the runner's time).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(SqliteStore {
            conn,
            live_channels: Vec::new(),
            group: GroupState::None,
            after_contact_read: None,
            spare_journal_rows: Vec::new(),
        })
    }

    fn prepare(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A unit of work in a group commit is a savepoint, whose undo pages SQLite keeps in a
        // temporary file (the sub-journal). They hold one unit's pages at a time, and nothing
        // of them needs to survive a crash (the WAL does that), so they stay in memory: up to
        // the build's spill threshold in one allocation (this repository builds SQLite with 4
        // MiB, `.cargo/config.toml`), or, with SQLite's default of 64 KiB (which a unit's pages
        // pass, and spilling to a file is slower), wholly in memory by `temp_store`, in 1 KiB
        // pieces (about 6% of a drip's time went to those pieces).
        if stmt_journal_spill(&conn)? < SUBJOURNAL_SPILL_WANTED {
            conn.pragma_update(None, "temp_store", "MEMORY")?;
        }
        let mut store = Self::configured(conn)?;
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let applied: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
            as usize;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: applied,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize)
    }

    /// Outbox rows after `seq`, in order: (seq, kind, payload JSON).
    pub fn outbox_after(
        &mut self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.outbox_between(seq, i64::MAX, limit)
    }

    /// Outbox rows after `seq` and up to `upto`, in order: (seq, kind, payload JSON).
    pub fn outbox_between(
        &mut self,
        seq: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        outbox_rows(&self.conn, seq, upto, limit)
    }

    /// The highest outbox `seq` committed (0 when the outbox is empty).
    pub fn outbox_last_seq(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM outbox")?
            .query_row([], |r| r.get(0))?)
    }

    /// Rows inserted, updated or deleted on this connection since it opened: whether a round
    /// wrote anything, so has anything to sync.
    pub fn changes_so_far(&self) -> u64 {
        self.conn.total_changes()
    }

    /// Hands the fsync of commits to the caller (the runner's [`crate::durable::CommitSyncer`]):
    /// commits no longer wait for the disk (`synchronous = NORMAL`), and the caller syncs the
    /// returned WAL file before it tells anyone what a commit did. `None` for an in-memory
    /// database, which has nothing to sync.
    pub fn defer_sync(&mut self) -> Result<Option<crate::durable::WalFile>, StoreError> {
        let Some(path) = self.file_path() else {
            return Ok(None);
        };
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        Ok(Some(crate::durable::WalFile::of(&path)))
    }

    /// The database file, `None` for an in-memory database.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.conn
            .path()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// Hands the checkpoints to a [`crate::durable::Checkpointer`] on its own thread and
    /// connection, poked every `every` at most; this connection's automatic checkpoint
    /// stays as a guard, at a higher threshold. `None` for an in-memory database, or when
    /// the second connection could not be opened (logged; checkpoints stay here).
    pub fn checkpoint_elsewhere(
        &mut self,
        every: std::time::Duration,
    ) -> Result<Option<crate::durable::Checkpointer>, StoreError> {
        let Some(path) = self.file_path() else {
            return Ok(None);
        };
        match crate::durable::Checkpointer::start(&path, every) {
            Ok(checkpointer) => {
                self.conn
                    .pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_GUARD_PAGES)?;
                Ok(Some(checkpointer))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the runner checkpoints");
                Ok(None)
            }
        }
    }

    /// The highest outbox `seq` the outbox file holds, as last recorded (`None` for a
    /// database from before the cursor was kept, until the first delivery sets it).
    pub fn outbox_delivered(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq FROM outbox_delivery WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?)
    }

    /// Records that the outbox file holds every row up to `seq` (after the append is synced).
    pub fn set_outbox_delivered(&mut self, seq: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox_delivery (id, seq) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![seq])?;
        Ok(())
    }

    /// The `synchronous` setting in force (2 = FULL for a file, as `open` sets it).
    pub fn synchronous(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?)
    }

    /// The dead letters: (kind, payload, reason), oldest first.
    pub fn dead_letters(&mut self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, payload, reason FROM dead_letter ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts of enrollments: (running, ended).
    pub fn enrollment_counts(&mut self, scenario: Option<&str>) -> Result<(u64, u64), StoreError> {
        let (running, total): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(running), 0), COUNT(*) FROM enrollment WHERE ?1 IS NULL OR scenario_id = ?1",
            params![scenario],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((running as u64, (total - running) as u64))
    }
}

type ScenarioRow = (String, String, u32, Option<u32>);

fn scenario_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScenarioRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn scenario_entry(
    (id, status, latest_version, active_version): ScenarioRow,
) -> Result<ScenarioEntry, StoreError> {
    let status = Status::parse(&status).ok_or(StoreError::Corrupt {
        what: "scenario status",
        why: status.clone(),
    })?;
    Ok(ScenarioEntry {
        id,
        status,
        latest_version,
        active_version,
    })
}

impl ScenarioStore for SqliteStore {
    type Error = StoreError;

    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, StoreError> {
        if let Some((_, list)) = self
            .group_reads()
            .and_then(|r| r.scenario_lists.iter().find(|(s, _)| *s == status))
        {
            return Ok(list.clone());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status, latest_version, active_version FROM scenario WHERE ?1 IS NULL OR status = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![status.map(Status::as_str)], scenario_row)?;
        let list = rows
            .map(|row| scenario_entry(row?))
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        if let Some(reads) = self.group_reads() {
            reads.scenario_lists.push((status, list.clone()));
        }
        Ok(list)
    }

    /// One row by its key: every engagement and launch looks its scenario up, and listing
    /// them all to find one made that cost grow with the number of scenarios.
    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, StoreError> {
        if let Some(entry) = self.group_reads().and_then(|r| r.scenarios.get(id)) {
            return Ok(entry.clone());
        }
        let entry = self
            .conn
            .prepare_cached(
                "SELECT id, status, latest_version, active_version FROM scenario WHERE id = ?1",
            )?
            .query_row(params![id], scenario_row)
            .optional()?
            .map(scenario_entry)
            .transpose()?;
        if let Some(reads) = self.group_reads() {
            reads.scenarios.insert(id.to_string(), entry.clone());
        }
        Ok(entry)
    }

    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT format, source FROM scenario_version WHERE scenario_id = ?1 AND version = ?2")?
            .query_row(params![id, version], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .optional()?;
        Ok(row.map(|(format, text)| ScenarioSource {
            id: id.to_string(),
            version,
            format: if format == "json" {
                SourceFormat::Json
            } else {
                SourceFormat::Yaml
            },
            text,
        }))
    }

    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let latest: Option<u32> = self
            .conn
            .query_row(
                "SELECT latest_version FROM scenario WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let version = latest.unwrap_or(0) + 1;
        self.forget_scenarios_read();
        let format = match format {
            SourceFormat::Yaml => "yaml",
            SourceFormat::Json => "json",
        };
        self.conn.execute(
            "INSERT INTO scenario_version (scenario_id, version, format, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, version, format, text, stamp(now)],
        )?;
        self.conn.execute(
            "INSERT INTO scenario (id, status, latest_version, active_version, updated_at) VALUES (?1, 'draft', ?2, NULL, ?3)
             ON CONFLICT (id) DO UPDATE SET latest_version = excluded.latest_version, updated_at = excluded.updated_at",
            params![id, version, stamp(now)],
        )?;
        Ok(version)
    }

    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.forget_scenarios_read();
        self.conn.execute(
            "UPDATE scenario SET status = ?2, active_version = COALESCE(?3, active_version), updated_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), active_version, stamp(now)],
        )?;
        Ok(())
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM setting WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))
            .optional()?)
    }

    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO setting (name, value, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![name, text, stamp(now)],
        )?;
        Ok(())
    }
}

impl ContactStore for SqliteStore {
    type Error = StoreError;

    fn contact_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM contact WHERE id = ?1")?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn contact(&mut self, id: &str) -> Result<Option<Contact>, StoreError> {
        let fields: Option<String> = self
            .conn
            .prepare_cached("SELECT fields FROM contact WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        if let Some(TestHook(hook)) = self.after_contact_read.take() {
            hook();
        }
        fields
            .map(|f| {
                let v: serde_json::Value = json("contact", &f)?;
                Contact::from_stored(v).map_err(|e| StoreError::Corrupt {
                    what: "contact",
                    why: e.to_string(),
                })
            })
            .transpose()
    }

    fn put_contact(
        &mut self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, StoreError> {
        let before = self.contact(contact.id())?;
        let change = match &before {
            None => ContactChange::Added,
            Some(b) if b == contact => return Ok(ContactChange::Unchanged),
            Some(_) => ContactChange::Modified,
        };
        self.conn.prepare_cached(
            "INSERT INTO contact (id, fields, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
        )?
        .execute(params![contact.id(), to_json(contact), stamp(now)])?;
        Ok(change)
    }

    fn contact_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM contact ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO activity (contact_id, at, name, properties) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                contact,
                ts("activity at", event.at)?,
                event.name,
                to_json(&event.properties)
            ])?;
        Ok(())
    }

    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        e: &Engagement,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO engagement (contact_id, scenario_id, step, kind, at, url, link_tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![contact, scenario, e.step, e.kind.as_str(), ts("engagement at", e.at)?, e.url, to_json(&e.link_tags)])?;
        Ok(())
    }

    fn input_seen(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM input_key WHERE key = ?1")?
            .exists(params![key])?)
    }

    fn record_input(&mut self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        // The primary key records each key once, whatever the caller repeats.
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO input_key (key, at) VALUES (?1, ?2)")?
            .execute(params![key, stamp(now)])?;
        Ok(())
    }

    fn history(
        &mut self,
        contact: &str,
        scenario: &str,
        needs: HistoryNeeds,
    ) -> Result<History, StoreError> {
        let mut h = History::default();
        if needs.events {
            let mut stmt = self.conn.prepare_cached("SELECT at, name, properties FROM activity WHERE contact_id = ?1 ORDER BY at, rowid")?;
            let rows = stmt.query_map(params![contact], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (at, name, properties) = row?;
                h.events.push(ActivityEvent {
                    at: parse_ts(at)?,
                    name,
                    properties: json("activity properties", &properties)?,
                });
            }
        }
        if needs.engagement {
            let mut stmt = self.conn.prepare_cached(
                "SELECT at, step, kind, url, link_tags FROM engagement WHERE contact_id = ?1 AND scenario_id = ?2 ORDER BY at, rowid",
            )?;
            let rows = stmt.query_map(params![contact, scenario], engagement_row)?;
            for row in rows {
                h.engagement.push(engagement_from(row?)?);
            }
        }
        if needs.sends {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT at FROM outbox WHERE contact_id = ?1 AND scenario_id = ?2 AND kind = 'send' ORDER BY at")?;
            let rows = stmt.query_map(params![contact, scenario], |r| r.get::<_, i64>(0))?;
            for row in rows {
                h.sends.push(SendMark {
                    at: parse_ts(row?)?,
                });
            }
        }
        Ok(h)
    }

    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at FROM outbox WHERE contact_id = ?1 AND kind = 'send' ORDER BY at",
        )?;
        let rows = stmt.query_map(params![contact], |r| r.get::<_, i64>(0))?;
        rows.map(|row| {
            Ok(SendMark {
                at: parse_ts(row?)?,
            })
        })
        .collect()
    }

    fn contact_engagement(&mut self, contact: &str) -> Result<Vec<Engagement>, StoreError> {
        // The index on (contact_id, scenario_id, at) serves the contact; the rows come back
        // sorted here.
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, step, kind, url, link_tags FROM engagement WHERE contact_id = ?1 AND kind IN ('opened', 'clicked') ORDER BY at, rowid",
        )?;
        let rows = stmt.query_map(params![contact], engagement_row)?;
        rows.map(|row| engagement_from(row?)).collect()
    }
}

/// An engagement row as selected: at, step, kind, url, link_tags.
type EngagementRow = (i64, String, String, Option<String>, String);

fn engagement_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EngagementRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn engagement_from((at, step, kind, url, tags): EngagementRow) -> Result<Engagement, StoreError> {
    let kind = EngagementKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or(StoreError::Corrupt {
            what: "engagement kind",
            why: kind.clone(),
        })?;
    Ok(Engagement {
        at: parse_ts(at)?,
        step,
        kind,
        url,
        link_tags: json("link tags", &tags)?,
    })
}

impl EnrollmentStore for SqliteStore {
    type Error = StoreError;

    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, scenario_id, contact_id, version, state, scenario_version FROM enrollment WHERE scenario_id = ?1 AND contact_id = ?2 AND running = 1")?
            .query_row(params![scenario, contact], stored_enrollment)
            .optional()?
            .transpose()
    }

    fn running_enrollment_id(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(String, u32, Option<Enrollment>)>, StoreError> {
        // The id and the version, not the state: an open of most scenarios needs no more.
        Ok(self
            .conn
            .prepare_cached("SELECT id, scenario_version FROM enrollment WHERE scenario_id = ?1 AND contact_id = ?2 AND running = 1")?
            .query_row(params![scenario, contact], |r| Ok((r.get(0)?, r.get(1)?, None)))
            .optional()?)
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, scenario_id, contact_id, version, state, scenario_version FROM enrollment WHERE id = ?1")?
            .query_row(params![id], stored_enrollment)
            .optional()?
            .transpose()
    }

    /// One statement: the running enrollment's index and the entry mark's row, each searched
    /// once.
    fn entry_state(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<(bool, Option<EntryMark>), StoreError> {
        let (running, at, entries): (bool, Option<i64>, Option<u32>) = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM enrollment WHERE scenario_id = ?1 AND contact_id = ?2 AND running = 1),
                        e.last_entered_at, e.entries
                 FROM (SELECT 1) LEFT JOIN entry e ON e.scenario_id = ?1 AND e.contact_id = ?2",
            )?
            .query_row(params![scenario, contact], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let mark = match (at, entries) {
            (Some(at), Some(entries)) => Some(EntryMark {
                last_entered_at: parse_ts(at)?,
                entries,
            }),
            _ => None,
        };
        Ok((running, mark))
    }

    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
    ) -> Result<(), StoreError> {
        // The same values as a launch's or a unit's enrollments written together.
        let saved = entries::Saved::of(e);
        let written = match expected {
            None => self
                .conn
                .prepare_cached(entries::NEW_ENROLLMENT.one)?
                .execute(params![
                    e.id,
                    e.scenario,
                    scenario_version,
                    e.contact,
                    saved.version,
                    saved.running,
                    ts("entered_at", e.entered_at)?,
                    saved.state
                ]),
            Some(v) => self
                .conn
                .prepare_cached(entries::ENROLLMENT_STEP)?
                .execute(params![
                    e.id,
                    saved.version,
                    saved.running,
                    saved.state,
                    v as i64
                ]),
        };
        match written {
            Ok(1) => Ok(()),
            Ok(_) => Err(StoreError::Conflict(e.id.clone())),
            // The unique running index refuses a second running enrollment.
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(e.id.clone()))
            }
            Err(other) => Err(other.into()),
        }
    }

    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, StoreError> {
        let row: Option<(i64, u32)> = self
            .conn
            .prepare_cached("SELECT last_entered_at, entries FROM entry WHERE scenario_id = ?1 AND contact_id = ?2")?
            .query_row(params![scenario, contact], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(at, entries)| {
            Ok(EntryMark {
                last_entered_at: parse_ts(at)?,
                entries,
            })
        })
        .transpose()
    }

    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(entries::ENTRY_MARK.one)?
            .execute(params![scenario, contact, ts("last_entered_at", at)?])?;
        Ok(())
    }

    fn watch_conversion(&mut self, w: &ConversionWatch) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO conversion_watch (enrollment_id, contact_id, scenario_id, version, entered_at, until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                w.enrollment,
                w.contact,
                w.scenario,
                w.version,
                ts("entered_at", w.entered_at)?,
                ts("conversion until", w.until)?
            ])?;
        Ok(())
    }

    fn conversion_watches(&mut self, contact: &str) -> Result<Vec<ConversionWatch>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT enrollment_id, scenario_id, version, entered_at, until FROM conversion_watch
             WHERE contact_id = ?1 ORDER BY entered_at, enrollment_id",
        )?;
        let rows = stmt.query_map(params![contact], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (enrollment, scenario, version, entered_at, until) = row?;
            out.push(ConversionWatch {
                scenario,
                version,
                contact: contact.to_string(),
                enrollment,
                entered_at: parse_ts(entered_at)?,
                until: parse_ts(until)?,
            });
        }
        Ok(out)
    }

    fn end_conversion_watch(&mut self, w: &ConversionWatch) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM conversion_watch WHERE enrollment_id = ?1")?
            .execute(params![w.enrollment])?;
        Ok(())
    }
}

impl TimerStore for SqliteStore {
    type Error = StoreError;

    fn schedule(&mut self, w: &Wake) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(entries::TIMER_ROW.one)?
            .execute(params![
                ts("timer due", w.at)?,
                w.enrollment,
                w.contact,
                w.step
            ])?;
        Ok(())
    }

    fn cancel(&mut self, w: &Wake) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(entries::TIMER_GONE)?
            .execute(params![instant::to_micros(w.at), w.enrollment, w.step])?;
        Ok(())
    }

    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, StoreError> {
        self.due_rows(
            [
                "SELECT t.due, t.enrollment_id, t.contact_id, t.step FROM timer t
                   JOIN enrollment e ON e.id = t.enrollment_id
                   JOIN scenario s ON s.id = e.scenario_id
                 WHERE t.due <= ?1 AND s.status = 'active'
                 ORDER BY t.due, t.enrollment_id LIMIT ?2",
                "SELECT t.due, t.enrollment_id, t.contact_id, t.step FROM timer t
                   JOIN enrollment e ON e.id = t.enrollment_id
                   JOIN scenario s ON s.id = e.scenario_id
                 WHERE t.due > ?1 AND s.status = 'active'
                 ORDER BY t.due, t.enrollment_id LIMIT ?2",
            ],
            now,
            limit,
            ("timer", RowKey::Columns(&[0, 1, 3])),
            &["due", "enrollment_id", "contact_id", "step"],
            |r| {
                Ok(Wake {
                    at: r.instant(0)?,
                    enrollment: r.text(1)?,
                    contact: r.text(2)?,
                    step: r.text(3)?,
                })
            },
        )
    }

    fn set_inactivity(&mut self, c: &InactivityCheck) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO inactivity (scenario_id, contact_id, due) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scenario_id, contact_id) DO UPDATE SET due = excluded.due",
            )?
            .execute(params![c.scenario, c.contact, ts("inactivity due", c.due)?])?;
        Ok(())
    }

    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), StoreError> {
        let keep_json = to_json(&keep);
        self.conn
            .prepare_cached(CLEAR_INACTIVITY)?
            .execute(params![contact, keep_json])?;
        Ok(())
    }

    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, StoreError> {
        self.due_rows(
            [
                "SELECT i.rowid, i.scenario_id, i.contact_id, i.due FROM inactivity i JOIN scenario s ON s.id = i.scenario_id
                 WHERE i.due <= ?1 AND s.status = 'active' ORDER BY i.due, i.contact_id LIMIT ?2",
                "SELECT i.rowid, i.scenario_id, i.contact_id, i.due FROM inactivity i JOIN scenario s ON s.id = i.scenario_id
                 WHERE i.due > ?1 AND s.status = 'active' ORDER BY i.due, i.contact_id LIMIT ?2",
            ],
            now,
            limit,
            ("inactivity", RowKey::Rowid),
            &["scenario_id", "contact_id", "due"],
            |r| {
                Ok(InactivityCheck {
                    scenario: r.text(0)?,
                    contact: r.text(1)?,
                    due: r.instant(2)?,
                })
            },
        )
    }

    fn remove_inactivity(&mut self, c: &InactivityCheck) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM inactivity WHERE scenario_id = ?1 AND contact_id = ?2 AND due = ?3",
            )?
            .execute(params![c.scenario, c.contact, instant::to_micros(c.due)])?;
        Ok(())
    }

    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        match at {
            Some(at) => self
                .conn
                .prepare_cached(
                    "INSERT INTO launch (scenario_id, zone, next_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (scenario_id, zone) DO UPDATE SET next_at = excluded.next_at",
                )?
                .execute(params![scenario, zone, ts("launch next_at", at)?])?,
            None => self
                .conn
                .prepare_cached("DELETE FROM launch WHERE scenario_id = ?1 AND zone = ?2")?
                .execute(params![scenario, zone])?,
        };
        Ok(())
    }

    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.rowid, l.scenario_id, l.zone, l.next_at FROM launch l JOIN scenario s ON s.id = l.scenario_id
             WHERE (l.next_at <= ?1 OR l.next_at > ?2) AND s.status = 'active' ORDER BY l.next_at, l.scenario_id, l.zone",
        )?;
        let rows = stmt.query_map(params![instant::to_micros(now), instant::MAX_MICROS], |r| {
            RawRow::read(
                "launch",
                RowKey::Rowid,
                &["scenario_id", "zone", "next_at"],
                r,
            )
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.due(|r| {
                Ok(LaunchTime {
                    scenario: r.text(0)?,
                    zone: r.text(1)?,
                    at: r.instant(2)?,
                })
            }));
        }
        Ok(out)
    }

    fn remove_unreadable(&mut self, row: &UnreadableRow) -> Result<(), StoreError> {
        let bad_locator = || StoreError::Corrupt {
            what: "unreadable row locator",
            why: row.locator.clone(),
        };
        let table = match row.kind.as_str() {
            // Without rowid: found by its key, as `RawRow` kept it (`IS` matches any type).
            "timer" => {
                let parts: Vec<serde_json::Value> =
                    serde_json::from_str(&row.locator).map_err(|_| bad_locator())?;
                let key = parts
                    .iter()
                    .map(locator_value)
                    .collect::<Option<Vec<SqlValue>>>()
                    .filter(|k| k.len() == 3)
                    .ok_or_else(bad_locator)?;
                self.conn
                    .prepare_cached(
                        "DELETE FROM timer WHERE due IS ?1 AND enrollment_id IS ?2 AND step IS ?3",
                    )?
                    .execute(rusqlite::params_from_iter(key))?;
                return Ok(());
            }
            "inactivity" => "inactivity",
            "launch" => "launch",
            other => {
                return Err(StoreError::Corrupt {
                    what: "unreadable row kind",
                    why: other.to_string(),
                });
            }
        };
        let rowid: i64 = row.locator.parse().map_err(|_| bad_locator())?;
        self.conn
            .prepare_cached(&format!("DELETE FROM {table} WHERE rowid = ?1"))?
            .execute(params![rowid])?;
        Ok(())
    }

    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: SqlValue = self.conn.prepare_cached(
            "SELECT MIN(d) FROM (
               SELECT MIN(t.due) AS d FROM timer t JOIN enrollment e ON e.id = t.enrollment_id
                 JOIN scenario s ON s.id = e.scenario_id WHERE s.status = 'active'
               UNION ALL SELECT MIN(i.due) FROM inactivity i JOIN scenario s ON s.id = i.scenario_id WHERE s.status = 'active'
               UNION ALL SELECT MIN(l.next_at) FROM launch l JOIN scenario s ON s.id = l.scenario_id WHERE s.status = 'active')",
        )?
        .query_row([], |r| r.get(0))?;
        Ok(due_value(next))
    }
}

impl SqliteStore {
    /// The due rows of a table, up to `limit`: those due by `now`, then those past the last
    /// instant (`due > MAX`), which do not read (an integer past 9999-12-31, text or blobs,
    /// which SQLite orders after every number). `queries` are the two range reads, `?1` the
    /// bound and `?2` the room left; the second runs only when the first left room. One
    /// `due <= now OR due > MAX` made SQLite walk every pending row whenever fewer than
    /// `limit` were due. `now` is bound no later than MAX (a scaled clock may pass
    /// 9999-12-31), so the two sets never share a row and every `due <= now` sorts before
    /// every `due > MAX`: the order is the one query's.
    fn due_rows<T>(
        &mut self,
        queries: [&str; 2],
        now: DateTime<Utc>,
        limit: usize,
        (kind, key): (&'static str, RowKey),
        names: &[&'static str],
        read: impl Fn(&RawRow) -> Result<T, String>,
    ) -> Result<Vec<Due<T>>, StoreError> {
        let bounds = [
            instant::to_micros(now).min(instant::MAX_MICROS),
            instant::MAX_MICROS,
        ];
        let mut out = Vec::new();
        for (sql, bound) in queries.into_iter().zip(bounds) {
            let room = limit.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params![bound, room as i64], |r| {
                RawRow::read(kind, key, names, r)
            })?;
            for row in rows {
                out.push(row?.due(&read));
            }
        }
        Ok(out)
    }

    /// One outbox row, once per idempotency key (a repeat is ignored).
    fn outbox_row(
        &mut self,
        key: &str,
        scenario: &str,
        contact: &str,
        kind: &str,
        at: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.outbox_row_inserted(key, scenario, contact, kind, at, &payload.to_string())
            .map(drop)
    }

    /// [`SqliteStore::outbox_row`], returning the new row's `seq` (none for a repeated key).
    fn outbox_row_inserted(
        &mut self,
        key: &str,
        scenario: &str,
        contact: &str,
        kind: &str,
        at: DateTime<Utc>,
        payload: &str,
    ) -> Result<Option<i64>, StoreError> {
        let inserted = self
            .conn
            .prepare_cached(entries::OUTBOX_ROW.one)?
            .execute(params![
                key,
                scenario,
                contact,
                kind,
                ts("outbox at", at)?,
                payload
            ])?;
        Ok((inserted > 0).then(|| self.conn.last_insert_rowid()))
    }
}

impl JournalStore for SqliteStore {
    type Error = StoreError;

    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO dead_letter (kind, payload, reason, at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![kind, payload, reason, stamp(at)])?;
        Ok(())
    }

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), StoreError> {
        let mut text = String::with_capacity(160);
        record.write_json(&mut text);
        self.journal_row(scenario, &record.contact, text)
    }

    /// One row per run of records of one contact (a transition's are all its enrollment's
    /// contact's), several written as [`Record::row_json`] writes them. A step writes three
    /// to nine records, and a row each was the biggest part of its cost.
    fn journal_transition(
        &mut self,
        scenario: &str,
        records: &[&Record],
    ) -> Result<(), StoreError> {
        for run in records.chunk_by(|a, b| a.contact == b.contact) {
            match run {
                [] => {}
                [one] => self.journal(scenario, one)?,
                many => self.journal_row(scenario, &many[0].contact, Record::row_json(many))?,
            }
        }
        Ok(())
    }

    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = relance_core::ports::send_message_text(scenario, send, at).map_err(|e| {
            StoreError::Corrupt {
                what: "send message",
                why: e.to_string(),
            }
        })?;
        let seq = self.outbox_row_inserted(
            &send.idempotency_key,
            scenario,
            &send.contact,
            "send",
            at,
            &payload,
        )?;
        // A channel with a real backend queues the send for delivery in this transaction.
        if let Some(seq) = seq
            && self.live_channels.contains(&send.channel)
        {
            self.queue_delivery(seq, scenario, send, at)?;
        }
        Ok(())
    }

    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (key, payload) =
            relance_core::ports::action_message(scenario, enrollment, contact, step, action, at);
        self.outbox_row(&key, scenario, contact, "action", at, &payload)?;
        // The outbox line records that the call was queued; the webhook table drives it.
        if let Action::Webhook(call) = action {
            self.queue_webhook(scenario, enrollment, contact, step, call, at)?;
        }
        Ok(())
    }

    fn purge(
        &mut self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let before = instant::to_micros(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deleted = match kind {
            Retained::Activity => self.conn.prepare_cached(
                "DELETE FROM activity WHERE rowid IN (SELECT rowid FROM activity WHERE at < ?1 LIMIT ?2)",
            )?.execute(params![before, limit])?,
            Retained::Engagement => self.conn.prepare_cached(
                "DELETE FROM engagement WHERE rowid IN (SELECT rowid FROM engagement WHERE at < ?1 LIMIT ?2)",
            )?.execute(params![before, limit])?,
            Retained::DeadLetters => self.conn.prepare_cached(
                "DELETE FROM dead_letter WHERE seq IN (SELECT seq FROM dead_letter WHERE at < ?1 LIMIT ?2)",
            )?.execute(params![before, limit])?,
            // Only rows the file already has: an undelivered send is never dropped.
            Retained::Outbox => {
                let mut rows = self.conn.prepare_cached(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE at < ?1 AND seq <= (SELECT seq FROM outbox_delivery WHERE id = 1) AND seq < (SELECT max(seq) FROM outbox) AND seq NOT IN (SELECT seq FROM delivery WHERE state IN ('pending', 'sending')) LIMIT ?2)",
                )?.execute(params![before, limit])?;
                // The newest row is not deleted but emptied into a `high_water` mark: its
                // send's data goes, its number stays, so the next row is numbered after it
                // (schema 14: a number at or below the cursor would never reach the file).
                if i64::try_from(rows).unwrap_or(i64::MAX) < limit {
                    rows += self.conn.prepare_cached(
                        "UPDATE outbox SET kind = 'high_water', idempotency_key = 'relance:outbox-high-water:' || seq, scenario_id = '', contact_id = '', at = 0, payload = '{\"kind\":\"high_water\"}'
                         WHERE seq = (SELECT max(seq) FROM outbox) AND kind <> 'high_water' AND at < ?1 AND seq <= (SELECT seq FROM outbox_delivery WHERE id = 1) AND seq NOT IN (SELECT seq FROM delivery WHERE state IN ('pending', 'sending'))",
                    )?.execute(params![before])?;
                }
                // Settled deliveries go with their sends.
                self.conn.prepare_cached(
                    "DELETE FROM delivery WHERE state NOT IN ('pending', 'sending') AND seq NOT IN (SELECT seq FROM outbox WHERE kind <> 'high_water')",
                )?.execute([])?;
                // Settled webhook calls go with the outbox; a pending one is never dropped.
                let left = limit.saturating_sub(i64::try_from(rows).unwrap_or(i64::MAX));
                rows + if left > 0 { self.purge_webhooks(before, left)? } else { 0 }
            }
            // Records keep their instant in the JSON; RFC 3339 in UTC sorts as text.
            Retained::Journal => {
                let cutoff = instant::from_micros(before)
                    .unwrap_or_else(instant::min)
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
                self.conn.prepare_cached(
                    "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal WHERE COALESCE(json_extract(record, '$.at'), json_extract(record, '$[#-1].at')) < ?1 LIMIT ?2)",
                )?.execute(params![cutoff, limit])?
            }
        };
        Ok(deleted as u64)
    }

    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        // Two statements: behind `?2 IS NULL OR contact_id = ?2`, a path used only the index's
        // scenario part and sorted the scenario's whole journal.
        let mut stmt = self.conn.prepare_cached(match contact {
            Some(_) => CONTACT_PATH,
            None => SCENARIO_JOURNAL,
        })?;
        let mut rows = match contact {
            Some(contact) => stmt.query(params![scenario, contact])?,
            None => stmt.query(params![scenario])?,
        };
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            read_journal_row(&row.get::<_, String>(0)?, &mut out)?;
        }
        // Then the open group's rows, which come after every committed one.
        for (_, _, text) in self
            .pending_journal_rows()
            .iter()
            .filter(|(s, c, _)| s == scenario && contact.is_none_or(|contact| c == contact))
        {
            read_journal_row(text, &mut out)?;
        }
        Ok(out)
    }
}

impl SqliteStore {
    fn journal_row(
        &mut self,
        scenario: &str,
        contact: &str,
        text: String,
    ) -> Result<(), StoreError> {
        // Inside a group, kept for its commit.
        if let Some(pending) = self.pending_journal() {
            pending
                .rows
                .push((scenario.to_string(), contact.to_string(), text));
            return Ok(());
        }
        self.conn
            .prepare_cached(entries::JOURNAL_ROW.one)?
            .execute(params![scenario, contact, text])?;
        Ok(())
    }

    /// The newest journal records (of one scenario, or of all), newest first, at most
    /// `limit`, each with its scenario: the console's journal page. Reads the end of the
    /// journal by its sequence, never the whole table.
    pub fn recent_records(
        &mut self,
        scenario: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let wanted = limit;
        let mut out = Vec::new();
        let mut records = Vec::new();
        // The open group's rows first: they are the newest.
        for (row_scenario, _, text) in self.pending_journal_rows().iter().rev() {
            if scenario.is_some_and(|s| s != row_scenario) {
                continue;
            }
            read_journal_row(text, &mut records)?;
            out.extend(records.drain(..).rev().map(|r| (row_scenario.clone(), r)));
            if out.len() >= wanted {
                out.truncate(wanted);
                return Ok(out);
            }
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT scenario_id, record FROM journal WHERE (?1 IS NULL OR scenario_id = ?1) ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![scenario, limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (scenario, text) = row?;
            read_journal_row(&text, &mut records)?;
            // Newest first: a row's records from its last.
            out.extend(records.drain(..).rev().map(|r| (scenario.clone(), r)));
            if out.len() >= wanted {
                break;
            }
        }
        out.truncate(wanted);
        Ok(out)
    }
}

impl relance_core::ports::ConsentStore for SqliteStore {
    type Error = StoreError;

    fn append_consent(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO consent (contact_id, subject, state, source, actor, at, reason, kept) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.contact,
                e.subject,
                e.state.as_str(),
                e.source,
                e.actor,
                ts("consent at", e.at)?,
                e.reason,
                e.kept
            ])?;
        Ok(())
    }

    fn consent_trail(
        &mut self,
        contact: &str,
    ) -> Result<Vec<relance_core::consent::ConsentEvent>, StoreError> {
        use relance_core::consent::ConsentEvent;
        let mut stmt = self.conn.prepare_cached(
            "SELECT subject, state, source, actor, at, reason, kept FROM consent WHERE contact_id = ?1 ORDER BY at, seq",
        )?;
        let rows = stmt.query_map(params![contact], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, bool>(6)?,
            ))
        })?;
        let mut trail = Vec::new();
        for row in rows {
            let (subject, state, source, actor, at, reason, kept) = row?;
            let state = consent_state_of(state)?;
            let at = parse_ts(at)?;
            trail.push(ConsentEvent {
                contact: contact.to_string(),
                subject,
                state,
                source,
                actor,
                at,
                reason,
                kept,
            });
        }
        Ok(trail)
    }

    /// The entries that applied only (`consent_applied`, a partial index): the kept ones,
    /// which grow by one each time an import re-sends what an opt-out keeps out, are not read.
    fn consent_state(&mut self, contact: &str) -> Result<Derived, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT subject, state FROM consent INDEXED BY consent_applied WHERE contact_id = ?1 AND kept = 0 ORDER BY at, seq",
        )?;
        let mut rows = stmt.query(params![contact])?;
        let mut derived = Derived::default();
        while let Some(row) = rows.next()? {
            let subject: String = row.get(0)?;
            derived.apply(&subject, consent_state_of(row.get(1)?)?);
        }
        Ok(derived)
    }
}

impl Store for SqliteStore {
    type Fault = StoreError;

    fn writes_entries_together(&self) -> bool {
        true
    }

    /// Many contacts' rows per statement (see `entries`).
    fn commit_entries(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        entering: &[relance_core::engine::Transition],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.commit_entries_together(scenario, scenario_version, entering, now)
    }

    /// Many timers' rows per statement (see `entries`).
    fn commit_steps(
        &mut self,
        consumed: &[Wake],
        steps: &[relance_core::ports::StepWrite<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.commit_steps_together(consumed, steps, now)
    }

    /// One deferred read transaction around `work` (a reading connection's reads: each
    /// statement would otherwise begin and end a transaction of its own). A transaction left
    /// open before (a failed end) is rolled back first: its view is an old one. `None` when no
    /// fresh transaction could be begun.
    fn read_together<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        // BEGIN and COMMIT stay prepared: a reader opens a view for each item it reads ahead,
        // and parsing the two statements each time was a tenth of its work.
        if !self.conn.is_autocommit() || self.run_cached("BEGIN").is_err() {
            return None;
        }
        let out = work(self);
        if !self.conn.is_autocommit() && self.run_cached("COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        Some(out)
    }

    /// SQLite's `data_version`: it moves when another connection (another process) commits,
    /// as seen when this connection's transaction began. Read outside a transaction, it may be the
    /// value of the connection's last one: an older mark, which can only make an item read ahead
    /// computed again, never make a stale one pass.
    fn outside_writes_mark(&mut self) -> Result<Option<i64>, StoreError> {
        if let Some(mark) = self.group_reads().and_then(|r| r.mark) {
            return Ok(Some(mark));
        }
        let mark = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if let Some(reads) = self.group_reads() {
            reads.mark = Some(mark);
        }
        Ok(Some(mark))
    }

    /// `relance run` has no Lambda to invoke (DESIGN §9): a webhook is the embedded call.
    fn unsupported(
        &self,
        scenario: &relance_core::scenario::Scenario,
    ) -> Vec<relance_core::problem::Problem> {
        relance_core::invoke::embedded_refusals(scenario)
    }

    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        match &self.group {
            GroupState::None => {}
            GroupState::Open(_) => return self.unit_in_group(work),
            GroupState::Broken(why) => {
                return Err(StoreError::GroupLost(why.clone()));
            }
        }
        // IMMEDIATE takes the write lock up front, so another process waits instead of failing mid-way.
        self.run_cached("BEGIN IMMEDIATE")?;
        match work(self) {
            Ok(v) => match self.run_cached("COMMIT") {
                Ok(()) => Ok(Ok(v)),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                self.conn.execute_batch("ROLLBACK")?;
                Ok(Err(e))
            }
        }
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        if self.group != GroupState::None {
            return Ok(());
        }
        // The write lock for the whole group: held for as long as its units take (the runner
        // keeps a group to a few milliseconds' work), so another process waits, then writes.
        self.run_cached("BEGIN IMMEDIATE")?;
        let mut open = OpenGroup::default();
        open.journal.rows = std::mem::take(&mut self.spare_journal_rows);
        self.group = GroupState::Open(open);
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        let outcome = match std::mem::replace(&mut self.group, GroupState::None) {
            GroupState::None => return Ok(()),
            GroupState::Broken(why) => Err(StoreError::GroupLost(why)),
            // SQLite rolled the group's transaction back after an error outside any unit (a
            // lease of deliveries, say): its rows must not be inserted, each in a transaction
            // of its own, for units that are lost.
            GroupState::Open(_) if self.conn.is_autocommit() => {
                Err(StoreError::GroupLost(TRANSACTION_ENDED.to_string()))
            }
            GroupState::Open(open) => {
                let committed = self
                    .insert_journal_rows(&open.journal.rows)
                    .and_then(|()| self.run_cached("COMMIT"))
                    .map_err(StoreError::from);
                let mut rows = open.journal.rows;
                if rows.capacity() <= SPARE_JOURNAL_ROWS {
                    rows.clear();
                    self.spare_journal_rows = rows;
                }
                committed
            }
        };
        // A group that did not commit leaves no transaction open behind it.
        if outcome.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        outcome
    }

    fn rollback_group(&mut self) -> Result<(), StoreError> {
        self.group = GroupState::None;
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Runs one statement that returns no rows, kept prepared in the connection's cache.
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// One unit of work inside the open group: a savepoint, released when `work` succeeds,
    /// rolled back to (the group's earlier units kept) when it fails.
    fn unit_in_group<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        // A statement run in the group outside any unit (a lease of deliveries, say) may have
        // ended its transaction the same way: a savepoint now would start a transaction of its
        // own, which its release would commit alone, without the write lock held in between.
        if self.conn.is_autocommit() {
            return Err(self.group_lost());
        }
        self.run_cached("SAVEPOINT unit")?;
        // Units may nest (a unit's work calling `atomically`): each keeps its own start.
        let outer_unit = self.pending_journal().map(|pending| {
            let outer = pending.unit_start;
            pending.unit_start = Some(pending.rows.len());
            outer
        });
        let out = work(self);
        if let Some(pending) = self.pending_journal() {
            let start = pending.unit_start.unwrap_or(pending.rows.len());
            if out.is_err() {
                pending.rows.truncate(start);
            }
            pending.unit_start = outer_unit.flatten();
        }
        // SQLite may have rolled the whole transaction back on an error (SQLITE_FULL,
        // SQLITE_IOERR, ...): the savepoint is gone, and with it the group's earlier units.
        if self.conn.is_autocommit() {
            return Err(self.group_lost());
        }
        let end = match out {
            Ok(_) => self.run_cached("RELEASE unit"),
            Err(_) => {
                // What the unit read of the scenarios may be what it wrote and undoes now.
                self.forget_scenarios_read();
                self.conn.execute_batch("ROLLBACK TO unit; RELEASE unit")
            }
        };
        if let Err(e) = end {
            self.group = GroupState::Broken(e.to_string());
            return Err(e.into());
        }
        Ok(out)
    }

    /// The open group, while its transaction still holds the write lock (SQLite ends it by
    /// itself after some errors); `None` outside a group.
    fn open_group(&self) -> Option<&OpenGroup> {
        match &self.group {
            GroupState::Open(open) if !self.conn.is_autocommit() => Some(open),
            _ => None,
        }
    }

    /// [`SqliteStore::open_group`], to change.
    fn open_group_mut(&mut self) -> Option<&mut OpenGroup> {
        match &mut self.group {
            GroupState::Open(open) if !self.conn.is_autocommit() => Some(open),
            _ => None,
        }
    }

    /// The open group's journal rows.
    fn pending_journal(&mut self) -> Option<&mut PendingJournal> {
        self.open_group_mut().map(|open| &mut open.journal)
    }

    /// The open group's journal rows, in the order written (none outside a group).
    fn pending_journal_rows(&self) -> &[(String, String, String)] {
        self.open_group().map_or(&[], |open| &open.journal.rows)
    }

    /// Inserts a group's journal rows, in order, many per statement.
    fn insert_journal_rows(&self, rows: &[(String, String, String)]) -> rusqlite::Result<()> {
        let rows: Vec<[&dyn rusqlite::ToSql; 3]> = rows
            .iter()
            .map(|(scenario, contact, text)| [scenario as &dyn rusqlite::ToSql, contact, text])
            .collect();
        entries::run_rows(&self.conn, &entries::JOURNAL_ROW, &rows).map(drop)
    }

    /// The group's transaction was rolled back by SQLite after an error: the group is lost.
    fn group_lost(&mut self) -> StoreError {
        let why = TRANSACTION_ENDED.to_string();
        self.group = GroupState::Broken(why.clone());
        StoreError::GroupLost(why)
    }

    /// What the open group has read.
    fn group_reads(&mut self) -> Option<&mut GroupReads> {
        self.open_group_mut().map(|open| &mut open.reads)
    }

    /// Forgets the scenario rows the open group has read: this connection wrote one, or a
    /// unit that may have is undone.
    fn forget_scenarios_read(&mut self) {
        if let GroupState::Open(open) = &mut self.group {
            open.reads.forget_scenarios();
        }
    }
}

/// Outbox rows after `after` and up to `upto`, in order: (seq, kind, payload JSON), on any
/// connection to the database (the runner's, or the outbox writer's own). A `high_water`
/// mark (schema 14) is no row to deliver: it is at or below the cursor, and skipped if not.
pub(crate) fn outbox_rows(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, payload FROM outbox WHERE seq > ?1 AND seq <= ?2 AND kind <> 'high_water' ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after, upto, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use relance_core::consent::{Change, ConsentState};
    use relance_core::ports::ConsentStore;

    use super::*;

    fn contact(id: &str) -> Contact {
        Contact::from_json(serde_json::json!({"id": id, "email": format!("{id}@example.org")}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_112_000, 0).unwrap_or_default()
    }

    /// A fresh database file and a second connection on it (another process's view).
    fn two_views(name: &str) -> (SqliteStore, SqliteStore, std::path::PathBuf) {
        let (dir, db) = fresh_file(&format!("group-{name}"));
        let writer = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let reader = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        (writer, reader, dir)
    }

    /// An empty directory of its own and the path of a database file in it.
    fn fresh_file(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("relance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let db = dir.join("db.sqlite");
        (dir, db)
    }

    /// A connection on a new database file of schema 13 (what the build before schema 14
    /// wrote), to fill by hand before a store opens and migrates it.
    fn schema_13_file(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Connection) {
        let (dir, db) = fresh_file(name);
        let old = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..13] {
            old.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        old.pragma_update(None, "user_version", 13)
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, db, old)
    }

    /// A reading connection reads what the writer committed, refuses to write, reads one view
    /// inside `read_together`, and sees another connection's commit move the writer's
    /// `data_version` (the writer's own commits do not).
    #[test]
    fn a_reading_connection_reads_commits_only_and_never_writes() {
        let (dir, db) = fresh_file("reader");
        let mut writer = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let mut reader = SqliteStore::open_reader(&db).unwrap_or_else(|e| panic!("{e}"));
        let ana = Contact::from_json(serde_json::json!({"id": "ana", "email": "a@x.io"}))
            .unwrap_or_else(|e| panic!("{e}"));
        // Read inside a unit, as the runtime does: SQLite updates it when a transaction begins.
        let mark = |s: &mut SqliteStore| {
            s.atomically(|s| s.outside_writes_mark())
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("SQLite tells"))
        };
        let before = mark(&mut writer);
        writer
            .atomically(|s| s.put_contact(&ana, now()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mark(&mut writer), before, "its own commit does not move it");
        assert_eq!(reader.read_together(|r| has(r, "ana")), Some(true));
        // Uncommitted work is not seen.
        writer.begin_group().unwrap_or_else(|e| panic!("{e}"));
        let bob = Contact::from_json(serde_json::json!({"id": "bob", "email": "b@x.io"}))
            .unwrap_or_else(|e| panic!("{e}"));
        writer
            .atomically(|s| s.put_contact(&bob, now()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.read_together(|r| has(r, "bob")), Some(false));
        writer.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.read_together(|r| has(r, "bob")), Some(true));
        // The reader never writes.
        assert!(
            reader
                .atomically(|s| s.put_contact(&ana, now()))
                .map(|r| r.is_err())
                .unwrap_or(true),
            "a query_only connection refuses a write"
        );
        // Another connection's commit moves the writer's mark.
        let other = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        other
            .execute(
                "UPDATE contact SET fields = json_set(fields, '$.seen', 1) WHERE id = 'ana'",
                [],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(mark(&mut writer), before, "another connection committed");
        drop((dir, other));
    }

    /// Inside a group the mark is read once (nobody else can commit while the group holds the
    /// write lock); the next group reads it again, and sees another connection's commit.
    #[test]
    fn the_mark_is_read_once_per_group_and_moves_between_groups() {
        let (dir, db) = fresh_file("group-mark");
        let mut writer = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let mark_in_unit = |s: &mut SqliteStore| {
            s.atomically(|s| s.outside_writes_mark())
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("SQLite tells"))
        };
        writer.begin_group().unwrap_or_else(|e| panic!("{e}"));
        let first = mark_in_unit(&mut writer);
        let kept_mark = |s: &mut SqliteStore| s.group_reads().and_then(|r| r.mark);
        assert_eq!(kept_mark(&mut writer), Some(first), "kept for the group");
        // What the cache rests on: nobody else commits while the group holds the write lock.
        let blocked = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        blocked
            .busy_timeout(std::time::Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = blocked.execute_batch("CREATE TABLE meanwhile (x INTEGER)");
        assert!(
            matches!(&refused, Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy),
            "{refused:?}"
        );
        // The kept value is the one returned (a planted one shows it).
        let plant = |s: &mut SqliteStore, mark| {
            if let Some(reads) = s.group_reads() {
                reads.mark = Some(mark);
            }
        };
        plant(&mut writer, first + 1000);
        assert_eq!(mark_in_unit(&mut writer), first + 1000);
        plant(&mut writer, first);
        writer.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept_mark(&mut writer),
            None,
            "forgotten when the group ends"
        );
        let other = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        other
            .execute_batch("CREATE TABLE outside (x INTEGER); INSERT INTO outside VALUES (1);")
            .unwrap_or_else(|e| panic!("{e}"));
        writer.begin_group().unwrap_or_else(|e| panic!("{e}"));
        let second = mark_in_unit(&mut writer);
        assert_ne!(
            second, first,
            "another connection committed between the groups"
        );
        writer.rollback_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept_mark(&mut writer),
            None,
            "forgotten when the group is rolled back"
        );
        drop((dir, other));
    }

    /// Inside a group the scenario rows are read once, and what the group itself writes (or
    /// undoes) is seen at once: a status set, a version added, a failed unit's change gone.
    #[test]
    fn a_group_sees_its_own_scenario_writes_and_undoes() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let status_of = |s: &mut SqliteStore| {
            s.atomically(|s| {
                let one = s.scenario("s")?.map(|e| (e.status, e.latest_version));
                let listed = s
                    .scenarios(Some(Status::Active))?
                    .iter()
                    .any(|e| e.id == "s");
                Ok::<_, StoreError>((one, listed))
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status_of(&mut store), (None, false));
        store
            .atomically(|s| s.put_version("s", SourceFormat::Yaml, "id: s", now()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status_of(&mut store), (Some((Status::Draft, 1)), false));
        store
            .atomically(|s| s.set_status("s", Status::Active, Some(1), now()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status_of(&mut store), (Some((Status::Active, 1)), true));
        // A unit that pauses it and then fails leaves it active.
        let failed = store
            .atomically(|s| {
                s.set_status("s", Status::Paused, None, now())?;
                assert_eq!(s.scenario("s")?.map(|e| e.status), Some(Status::Paused));
                Err::<(), _>(StoreError::Corrupt {
                    what: "test",
                    why: "the unit fails".into(),
                })
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(failed.is_err());
        assert_eq!(status_of(&mut store), (Some((Status::Active, 1)), true));
        store.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status_of(&mut store), (Some((Status::Active, 1)), true));
    }

    /// A group whose transaction ended outside any unit (SQLite rolls it back by itself after
    /// some errors) runs no further unit and keeps nothing it read: the next unit reports the
    /// group lost instead of committing alone, and so does the group's commit.
    #[test]
    fn a_group_whose_transaction_ended_runs_no_more_units() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        store
            .atomically(|s| {
                s.scenario("s")?;
                s.outside_writes_mark()
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .group_reads()
                .is_some_and(|r| r.mark.is_some() && !r.scenarios.is_empty())
        );
        // As SQLite does after SQLITE_FULL or SQLITE_IOERR in a statement outside a unit.
        store
            .conn
            .execute_batch("ROLLBACK")
            .unwrap_or_else(|e| panic!("{e}"));
        let ana = Contact::from_json(serde_json::json!({"id": "ana", "email": "a@x.io"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let next = store.atomically(|s| s.put_contact(&ana, now()));
        assert!(matches!(next, Err(StoreError::GroupLost(_))), "{next:?}");
        assert!(store.group_reads().is_none());
        assert!(matches!(
            store.commit_group(),
            Err(StoreError::GroupLost(_))
        ));
        let written = store
            .atomically(|s| s.contact("ana"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(written.is_none(), "the unit after the loss wrote nothing");
    }

    /// A group's journal rows are written at its commit, in the order its units wrote them:
    /// a failed unit's (a nested one's alone) are dropped, the group's reads see the rest
    /// after the committed rows, the next group starts with none of them, and a group that
    /// does not commit writes none.
    #[test]
    fn a_groups_journal_rows_are_written_at_its_commit_in_order() {
        use relance_core::journal::RecordKind::{self, Ended, Entered, Sent, Waiting};
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let record = |contact: &str, kind| Record::new(now(), contact, kind);
        // A unit writes two rows: one record, then a transition's two records as one row.
        let unit = |s: &mut SqliteStore, contact: &str, fail: bool| {
            s.atomically(|s| {
                s.journal("s", &record(contact, Entered))?;
                s.journal_transition("s", &[&record(contact, Sent), &record(contact, Waiting)])?;
                if fail {
                    return Err(StoreError::Corrupt {
                        what: "test",
                        why: "the unit fails".into(),
                    });
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let table_rows = |s: &SqliteStore| {
            seq_rows(s, "SELECT seq, contact_id FROM journal ORDER BY seq")
                .into_iter()
                .map(|(_, contact)| contact)
                .collect::<Vec<_>>()
        };
        let records = |s: &mut SqliteStore, contact: Option<&str>| {
            s.records("s", contact)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|r| (r.contact, r.kind))
                .collect::<Vec<_>>()
        };
        let mut rows = Vec::new();
        let mut written = Vec::new();
        let mut wrote = |contact: &str, kinds: &[RecordKind], row_count: usize| {
            rows.extend(std::iter::repeat_n(contact.to_string(), row_count));
            written.extend(kinds.iter().map(|k| (contact.to_string(), *k)));
        };
        // One unit committed before the group.
        assert!(unit(&mut store, "before", false).is_ok());
        wrote("before", &[Entered, Sent, Waiting], 2);
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        // Past one statement's worth of rows, so that both statements write some.
        for i in 0..(entries::ROWS_PER_INSERT + 3) {
            let contact = format!("c{i}");
            let failing = i % 5 == 1;
            assert_eq!(unit(&mut store, &contact, failing).is_err(), failing);
            if !failing {
                wrote(&contact, &[Entered, Sent, Waiting], 2);
            }
        }
        // A unit whose nested unit fails keeps its own rows, not the nested one's.
        let outer = store
            .atomically(|s| {
                s.journal("s", &record("outer", Entered))?;
                assert!(unit(s, "nested", true).is_err());
                s.journal("s", &record("outer", Ended))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(outer.is_ok());
        wrote("outer", &[Entered, Ended], 2);
        // Inside the group: only the committed rows are in the table, and reads see them all.
        assert_eq!(table_rows(&store), ["before", "before"]);
        assert_eq!(records(&mut store, None), written);
        assert_eq!(
            records(&mut store, Some("c0")),
            [
                ("c0".to_string(), Entered),
                ("c0".to_string(), Sent),
                ("c0".to_string(), Waiting)
            ]
        );
        let newest = store
            .recent_records(Some("s"), 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let last = format!("c{}", entries::ROWS_PER_INSERT + 2);
        assert_eq!(
            newest
                .iter()
                .map(|(_, r)| (r.contact.as_str(), r.kind))
                .collect::<Vec<_>>(),
            [
                ("outer", Ended),
                ("outer", Entered),
                (last.as_str(), Waiting)
            ]
        );
        store.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table_rows(&store), rows);
        assert_eq!(records(&mut store, None), written);
        // The next group reuses the room of the last one's rows, none of the rows themselves.
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert!(store.pending_journal_rows().is_empty());
        assert!(unit(&mut store, "next", false).is_ok());
        rows.extend(["next".to_string(), "next".to_string()]);
        written.extend([Entered, Sent, Waiting].map(|k| ("next".to_string(), k)));
        assert_eq!(records(&mut store, None), written);
        store.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table_rows(&store), rows);
        // A group rolled back writes none of its rows.
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert!(unit(&mut store, "lost", false).is_ok());
        assert_eq!(records(&mut store, Some("lost")).len(), 3);
        store.rollback_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table_rows(&store), rows);
        assert!(records(&mut store, Some("lost")).is_empty());
    }

    /// A group whose transaction SQLite ended outside any unit inserts none of its journal
    /// rows at its commit (each would be a transaction of its own, for units that are lost),
    /// and reports the loss.
    #[test]
    fn a_lost_groups_journal_rows_are_not_written() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        store
            .atomically(|s| {
                s.journal(
                    "s",
                    &Record::new(now(), "c1", relance_core::journal::RecordKind::Entered),
                )
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        // As SQLite does after SQLITE_FULL or SQLITE_IOERR in a statement outside a unit.
        store
            .conn
            .execute_batch("ROLLBACK")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            store.commit_group(),
            Err(StoreError::GroupLost(_))
        ));
        assert!(seq_rows(&store, "SELECT seq, contact_id FROM journal").is_empty());
    }

    /// A settlement run in a group between its units journals in its place: its record comes
    /// after the units before it and before those after it.
    #[test]
    fn a_settlement_in_a_group_journals_in_the_order_written() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let unit = |s: &mut SqliteStore, contact: &str| {
            s.atomically(|s| {
                s.journal(
                    "s",
                    &Record::new(now(), contact, relance_core::journal::RecordKind::Sent),
                )
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        };
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        unit(&mut store, "first");
        let failed = Record::new(now(), "settled", relance_core::journal::RecordKind::Failed);
        let settle_failed = |s: &mut SqliteStore| {
            s.settle_delivery(
                1,
                &Settlement::Failed {
                    reason: "bounced".into(),
                },
                Some(("s", &failed)),
                now(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        };
        settle_failed(&mut store);
        let called = Record::new(now(), "called", relance_core::journal::RecordKind::Action);
        store
            .settle_webhook("k", &Attempt::Done, Some(("s", &called)), now())
            .unwrap_or_else(|e| panic!("{e}"));
        unit(&mut store, "last");
        // The group's reads see the settlements' records in their place.
        let read: Vec<String> = store
            .records("s", None)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|r| r.contact)
            .collect();
        assert_eq!(read, ["first", "settled", "called", "last"]);
        store.commit_group().unwrap_or_else(|e| panic!("{e}"));
        let contacts: Vec<String> =
            seq_rows(&store, "SELECT seq, contact_id FROM journal ORDER BY seq")
                .into_iter()
                .map(|(_, c)| c)
                .collect();
        assert_eq!(contacts, ["first", "settled", "called", "last"]);
        // A group rolled back drops a settlement's record with the rest.
        store.begin_group().unwrap_or_else(|e| panic!("{e}"));
        store
            .settle_webhook("k", &Attempt::Done, Some(("s", &called)), now())
            .unwrap_or_else(|e| panic!("{e}"));
        store.rollback_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            seq_rows(&store, "SELECT seq, contact_id FROM journal").len(),
            4
        );
        // Outside a group, it is written at once.
        settle_failed(&mut store);
        assert_eq!(
            seq_rows(&store, "SELECT seq, contact_id FROM journal").len(),
            5
        );
    }

    /// A reading connection is refused on a database at another schema (it migrates nothing).
    #[test]
    fn a_reading_connection_needs_this_builds_schema() {
        let (_dir, db, _old) = schema_13_file("reader-old");
        let refused = SqliteStore::open_reader(&db).map(drop);
        assert!(
            matches!(&refused, Err(StoreError::Corrupt { why, .. }) if why.contains("schema 13")),
            "{refused:?}"
        );
    }

    /// Every (seq, text) row a query gives, in order.
    fn seq_rows(store: &SqliteStore, sql: &str) -> Vec<(i64, String)> {
        let mut stmt = store.conn.prepare(sql).unwrap_or_else(|e| panic!("{e}"));
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap_or_else(|e| panic!("{e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn has(store: &mut SqliteStore, id: &str) -> bool {
        store
            .contact(id)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some()
    }

    fn put(store: &mut SqliteStore, id: &str) -> Result<Result<(), &'static str>, StoreError> {
        store.atomically(|s| {
            s.put_contact(&contact(id), now())
                .map_err(|_| "put failed")?;
            Ok(())
        })
    }

    /// A key column of an unreadable row comes back from its locator as the same SQLite
    /// value, of every type, so the delete binds what is stored; anything else is refused.
    #[test]
    fn a_locator_part_reads_back_as_the_value_it_kept() {
        let values = [
            SqlValue::Null,
            SqlValue::Integer(i64::MIN),
            SqlValue::Integer(1_780_000_000_000_000),
            SqlValue::Real(1.5),
            SqlValue::Real(-0.0),
            SqlValue::Real(f64::MAX),
            SqlValue::Text(String::new()),
            SqlValue::Text("garbage \"é\"".into()),
            SqlValue::Blob(vec![]),
            SqlValue::Blob(vec![0x00, 0x78, 0xff]),
        ];
        for v in values {
            let back = locator_value(&locator_part(&v));
            match (&v, &back) {
                (SqlValue::Real(a), Some(SqlValue::Real(b))) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                _ => assert_eq!(back.as_ref(), Some(&v)),
            }
        }
        for bad in [
            serde_json::json!({"blob": "0"}),
            serde_json::json!({"blob": "zz"}),
            serde_json::json!({"integer": "1"}),
            serde_json::json!({"text": 1, "integer": 1}),
            serde_json::json!(12),
        ] {
            assert_eq!(locator_value(&bad), None, "{bad}");
        }
    }

    /// This repository's build keeps a savepoint's undo pages in memory in one piece
    /// (`.cargo/config.toml`); without it the store falls back to `temp_store = MEMORY`.
    #[test]
    fn the_sub_journal_stays_in_memory() {
        let s = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let spill = stmt_journal_spill(&s.conn).unwrap_or_else(|e| panic!("{e}"));
        let temp_store: i64 = s
            .conn
            .pragma_query_value(None, "temp_store", |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            spill, SUBJOURNAL_SPILL_WANTED,
            "built with .cargo/config.toml's flags"
        );
        assert_eq!(
            temp_store, 0,
            "the default: the sub-journal in memory up to the spill"
        );
    }

    /// The due timers come out as the one `due <= now OR due > MAX` query gave them: those due
    /// by `now` in order, then the rows past the last instant (which do not read), each once,
    /// within the limit, and none of a paused scenario; with `now` itself past 9999-12-31 (a
    /// scaled clock saturates there) a row past MAX still comes out once.
    #[test]
    fn due_timers_are_the_due_rows_then_the_unreadable_ones_each_once() {
        let mut s = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let at = |m: i64| m.to_string();
        s.conn
            .execute_batch(&format!(
                "INSERT INTO scenario (id, status, latest_version, updated_at) VALUES ('on', 'active', 1, 0), ('off', 'paused', 1, 0);
                 INSERT INTO enrollment (id, scenario_id, scenario_version, contact_id, version, running, entered_at, state)
                   VALUES ('e1', 'on', 1, 'c1', 1, 1, 0, '{{}}'), ('e2', 'on', 1, 'c2', 1, 1, 0, '{{}}'), ('e3', 'off', 1, 'c3', 1, 1, 0, '{{}}');
                 INSERT INTO timer (due, enrollment_id, contact_id, step) VALUES
                   ({t1}, 'e2', 'c2', 'a'), ({t1}, 'e1', 'c1', 'b'), ({t2}, 'e1', 'c1', 'c'), ({later}, 'e2', 'c2', 'd'),
                   ({past_max}, 'e1', 'c1', 'x'), ('garbage', 'e2', 'c2', 'y'), (-5, 'e1', 'c1', 'z'), ({t1}, 'e3', 'c3', 'paused');",
                t1 = at(1_800_000_000_000_000),
                t2 = at(1_800_000_000_000_001),
                later = at(1_900_000_000_000_000),
                past_max = instant::MAX_MICROS + 1,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let steps = |due: Vec<Due<Wake>>| -> Vec<String> {
            due.into_iter()
                .map(|d| match d {
                    Due::Ready(w) => w.step,
                    Due::Unreadable(row) => {
                        let raw: serde_json::Value =
                            serde_json::from_str(&row.raw).unwrap_or_else(|e| panic!("{e}"));
                        format!("unreadable {}", raw["step"].as_str().unwrap_or_default())
                    }
                })
                .collect()
        };
        let now = instant::from_micros(1_800_000_000_000_001).unwrap_or_else(|| panic!("now"));
        let got = steps(s.due_timers(now, 100).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            got,
            [
                "unreadable z",
                "b",
                "a",
                "c",
                "unreadable x",
                "unreadable y"
            ],
            "due in (due, enrollment) order, then past the last instant"
        );
        let got = steps(s.due_timers(now, 3).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            got,
            ["unreadable z", "b", "a"],
            "the limit counts both reads"
        );
        let got = steps(s.due_timers(now, 4).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(got, ["unreadable z", "b", "a", "c"]);
        assert!(
            s.due_timers(now, 0)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        let got = steps(
            s.due_timers(DateTime::<Utc>::MAX_UTC, 100)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            got,
            [
                "unreadable z",
                "b",
                "a",
                "c",
                "d",
                "unreadable x",
                "unreadable y"
            ],
            "a clock past 9999-12-31: each row once"
        );
        // Removing an unreadable row by its locator leaves the others.
        let bad: Vec<UnreadableRow> = s
            .due_timers(now, 100)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter_map(|d| match d {
                Due::Unreadable(row) => Some(row),
                Due::Ready(_) => None,
            })
            .collect();
        assert_eq!(bad.len(), 3);
        for row in &bad {
            s.remove_unreadable(row).unwrap_or_else(|e| panic!("{e}"));
        }
        let got = steps(s.due_timers(now, 100).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(got, ["b", "a", "c"]);
    }

    /// In a group, each unit stays all-or-nothing (a failing one rolls back alone, the units
    /// around it kept) and nothing is visible to another connection, nor durable, before the
    /// group commits; then all of it is.
    #[test]
    fn a_group_commits_its_units_together_and_a_failing_unit_alone_rolls_back() {
        let (mut w, mut r, dir) = two_views("commit");
        w.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(put(&mut w, "a").ok(), Some(Ok(())));
        let failed = w
            .atomically(|s| -> Result<(), &'static str> {
                s.put_contact(&contact("b"), now())
                    .map_err(|_| "put failed")?;
                Err("the unit's work failed after its write")
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(failed.is_err());
        assert_eq!(put(&mut w, "c").ok(), Some(Ok(())));
        // The writer sees its group; the other connection sees nothing yet.
        assert!(has(&mut w, "a") && !has(&mut w, "b") && has(&mut w, "c"));
        assert!(!has(&mut r, "a") && !has(&mut r, "c"));
        w.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert!(has(&mut r, "a") && !has(&mut r, "b") && has(&mut r, "c"));
        // Out of a group again, a unit commits on its own.
        assert_eq!(put(&mut w, "d").ok(), Some(Ok(())));
        assert!(has(&mut r, "d"));
        drop((w, r));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A group given up loses every unit since its last commit, and only those.
    #[test]
    fn a_group_rolled_back_loses_its_units_whole() {
        let (mut w, mut r, dir) = two_views("rollback");
        assert_eq!(put(&mut w, "before").ok(), Some(Ok(())));
        w.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(put(&mut w, "a").ok(), Some(Ok(())));
        assert_eq!(put(&mut w, "b").ok(), Some(Ok(())));
        w.rollback_group().unwrap_or_else(|e| panic!("{e}"));
        for view in [&mut w, &mut r] {
            assert!(has(view, "before") && !has(view, "a") && !has(view, "b"));
        }
        // The delivery worker's own savepoints work inside and outside a group.
        w.begin_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            w.lease_deliveries(now(), 10).map(|rows| rows.len()).ok(),
            Some(0)
        );
        w.commit_group().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            w.lease_deliveries(now(), 10).map(|rows| rows.len()).ok(),
            Some(0)
        );
        drop((w, r));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A transition's records share one row (their instant, contact and enrollment written
    /// once), rows of one record (every row before migration 11) and arrays (before migration
    /// 16) still read, all in the order written: the paths, the console's newest first, and
    /// the purge, which dates a row of several by its last record.
    #[test]
    fn a_transitions_journal_records_share_one_row_and_read_back_in_order() {
        use relance_core::journal::RecordKind;
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let at = |m: i64| now() + chrono::TimeDelta::minutes(m);
        let old = Record::new(at(0), "c1", RecordKind::Entered);
        store.journal("s", &old).unwrap_or_else(|e| panic!("{e}"));
        let step = [
            Record::new(at(1), "c1", RecordKind::Sent).step("first"),
            Record::new(at(1), "c1", RecordKind::Waiting).step("check"),
            Record::new(at(2), "c2", RecordKind::Entered),
        ];
        store
            .journal_transition("s", &step.iter().collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: i64 = store
            .conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, 3, "one row for c1's two records, one for c2's");
        let all = store.records("s", None).unwrap_or_else(|e| panic!("{e}"));
        let kinds = |rs: &[Record]| {
            rs.iter()
                .map(|r| (r.contact.clone(), r.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&all),
            vec![
                ("c1".into(), RecordKind::Entered),
                ("c1".into(), RecordKind::Sent),
                ("c1".into(), RecordKind::Waiting),
                ("c2".into(), RecordKind::Entered),
            ]
        );
        assert_eq!(
            store.records("s", Some("c1")).map(|r| r.len()).ok(),
            Some(3)
        );
        let newest = store
            .recent_records(Some("s"), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            newest
                .iter()
                .map(|(_, r)| (r.contact.clone(), r.kind))
                .collect::<Vec<_>>(),
            vec![
                ("c2".into(), RecordKind::Entered),
                ("c1".into(), RecordKind::Waiting)
            ]
        );
        // Before at(2): the old row goes; c1's row (last record at 1 min) goes too.
        let purged = store
            .purge(
                Retained::Journal,
                at(1) + chrono::TimeDelta::seconds(30),
                100,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(purged, 2);
        assert_eq!(
            kinds(&store.records("s", None).unwrap_or_default()),
            vec![("c2".into(), RecordKind::Entered)]
        );
    }

    /// A row of several records is dated by its last one, whether an older build wrote it as an
    /// array or this one with the fields they share written once: the purge keeps it until
    /// its newest record is old enough.
    #[test]
    fn a_row_of_several_records_is_purged_by_its_last_one_in_either_form() {
        use relance_core::journal::RecordKind;
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let at = |m: i64| now() + chrono::TimeDelta::minutes(m);
        let spread = |contact: &str| {
            [
                Record::new(at(0), contact, RecordKind::Resumed),
                Record::new(at(5), contact, RecordKind::Ended),
            ]
        };
        let older = serde_json::to_string(&spread("old")).unwrap_or_default();
        store
            .conn
            .execute(
                "INSERT INTO journal (scenario_id, contact_id, record) VALUES ('s', 'old', ?1)",
                params![older],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let newer = spread("new");
        store
            .journal_transition("s", &newer.iter().collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"));
        let read = store.records("s", None).unwrap_or_else(|e| panic!("{e}"));
        let mut expected = spread("old").to_vec();
        expected.extend(newer.iter().cloned());
        assert_eq!(read, expected);
        let purge = |store: &mut SqliteStore, before| {
            store
                .purge(Retained::Journal, before, 100)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            purge(&mut store, at(3)),
            0,
            "both rows hold a record at 5 min"
        );
        assert_eq!(purge(&mut store, at(6)), 2);
        assert!(store.records("s", None).is_ok_and(|r| r.is_empty()));
    }

    /// Schema 14 on a schema-13 file: the journal keeps its rows and their order (a purged
    /// top included: the next row still sorts last), without AUTOINCREMENT; the entry marks
    /// are kept and counted on, in a table without a rowid.
    #[test]
    fn schema_14_keeps_the_journal_order_and_the_entry_marks() {
        use relance_core::journal::RecordKind;
        let (dir, db, old) = schema_13_file("v14");
        let record = |m: i64, contact: &str| {
            to_json(&Record::new(
                now() + chrono::TimeDelta::minutes(m),
                contact,
                RecordKind::Entered,
            ))
        };
        {
            for (m, contact) in [(0, "a"), (1, "b"), (2, "c"), (3, "d")] {
                old.execute(
                    "INSERT INTO journal (scenario_id, contact_id, record) VALUES ('s', ?1, ?2)",
                    params![contact, record(m, contact)],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
            // The newest row purged: AUTOINCREMENT remembered seq 4.
            old.execute("DELETE FROM journal WHERE contact_id IN ('b', 'd')", [])
                .unwrap_or_else(|e| panic!("{e}"));
            old.execute(
                "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES ('s', 'a', ?1, 2)",
                params![stamp(now())],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            drop(old);
        }
        let mut store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.schema_version().ok(), Some(SCHEMA_VERSION));
        let ddl = |name: &str| -> String {
            store
                .conn
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(
            !ddl("journal").contains("AUTOINCREMENT"),
            "{}",
            ddl("journal")
        );
        assert!(ddl("entry").contains("WITHOUT ROWID"), "{}", ddl("entry"));
        assert_eq!(
            seq_rows(&store, "SELECT seq, contact_id FROM journal ORDER BY seq"),
            vec![(1, "a".into()), (3, "c".into())]
        );
        let e = Record::new(
            now() + chrono::TimeDelta::minutes(4),
            "e",
            RecordKind::Entered,
        );
        store.journal("s", &e).unwrap_or_else(|e| panic!("{e}"));
        let contacts = |store: &mut SqliteStore| -> Vec<String> {
            store
                .records("s", None)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|r| r.contact)
                .collect()
        };
        assert_eq!(contacts(&mut store), vec!["a", "c", "e"]);
        // Everything purged, then a new row: it is the only one, and the order goes on.
        let purged = store
            .purge(Retained::Journal, now() + chrono::TimeDelta::hours(1), 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(purged, 3);
        for contact in ["f", "g"] {
            let r = Record::new(
                now() + chrono::TimeDelta::hours(2),
                contact,
                RecordKind::Entered,
            );
            store.journal("s", &r).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(contacts(&mut store), vec!["f", "g"]);
        let mark = store.entry_mark("s", "a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            mark.map(|m| (m.entries, m.last_entered_at)),
            Some((2, now()))
        );
        store
            .mark_entry("s", "a", now() + chrono::TimeDelta::days(1))
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .mark_entry("s", "b", now())
            .unwrap_or_else(|e| panic!("{e}"));
        let mark = store.entry_mark("s", "a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            mark.map(|m| (m.entries, m.last_entered_at)),
            Some((3, now() + chrono::TimeDelta::days(1)))
        );
        assert_eq!(
            store.entry_mark("s", "b").ok().flatten().map(|m| m.entries),
            Some(1)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Schema 14's outbox numbers a row one past the largest kept, so no number at or below
    /// the delivery cursor is handed out again: a file whose newest sends were purged gets a
    /// `high_water` mark at its cursor (not at `sqlite_sequence`, which an ignored repeat can
    /// have moved past it), the next send comes after it, the purge empties the newest row into
    /// such a mark instead of deleting it, and no mark is ever a row to deliver or a send.
    #[test]
    fn schema_14_never_numbers_an_outbox_row_twice() {
        let (dir, db, old) = schema_13_file("v14-outbox");
        {
            for n in 1..=5 {
                old.execute(
                    "INSERT INTO outbox (idempotency_key, scenario_id, contact_id, kind, at, payload) VALUES (?1, 's', 'c', 'send', ?2, '{\"kind\":\"send\"}')",
                    params![format!("k{n}"), stamp(now())],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
            // All five in the file, then the newest three purged (the purge of schema 13), and
            // ignored repeats that used numbers up to 7 without a row.
            old.execute("UPDATE outbox_delivery SET seq = 5", [])
                .unwrap_or_else(|e| panic!("{e}"));
            old.execute("DELETE FROM outbox WHERE seq >= 3", [])
                .unwrap_or_else(|e| panic!("{e}"));
            old.execute(
                "UPDATE sqlite_sequence SET seq = 7 WHERE name = 'outbox'",
                [],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            drop(old);
        }
        let mut store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let kinds =
            |store: &SqliteStore| seq_rows(store, "SELECT seq, kind FROM outbox ORDER BY seq");
        assert_eq!(store.outbox_delivered().ok(), Some(Some(5)));
        assert_eq!(
            kinds(&store),
            vec![
                (1, "send".into()),
                (2, "send".into()),
                (5, "high_water".into())
            ]
        );
        assert_eq!(store.contact_sends("c").map(|s| s.len()).ok(), Some(2));
        let next = store
            .outbox_row_inserted("k6", "s", "c", "send", now(), "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next, Some(6), "numbered after the cursor");
        let to_deliver = |store: &mut SqliteStore| -> Vec<i64> {
            store
                .outbox_between(0, i64::MAX, 100)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|(seq, _, _)| seq)
                .collect()
        };
        assert_eq!(
            to_deliver(&mut store),
            vec![1, 2, 6],
            "a mark is never delivered"
        );
        // Everything old and in the file: all go but the newest, which is emptied into a mark.
        store
            .set_outbox_delivered(6)
            .unwrap_or_else(|e| panic!("{e}"));
        let later = now() + chrono::TimeDelta::days(400);
        let purged = store
            .purge(Retained::Outbox, later, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(purged, 4, "three deleted, the newest emptied");
        assert_eq!(kinds(&store), vec![(6, "high_water".into())]);
        let payload: String = store
            .conn
            .query_row(
                "SELECT payload || contact_id || scenario_id FROM outbox",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            payload, "{\"kind\":\"high_water\"}",
            "the send's data is gone"
        );
        assert_eq!(store.contact_sends("c").map(|s| s.len()).ok(), Some(0));
        assert_eq!(
            store.purge(Retained::Outbox, later, 100).ok(),
            Some(0),
            "a mark is not purged again while it is the newest"
        );
        let next = store
            .outbox_row_inserted("k7", "s", "c", "send", later, "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next, Some(7));
        assert_eq!(to_deliver(&mut store), vec![7]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SQLite's plan for `sql` with `args` on a fresh store: one line per step (`SEARCH ..`,
    /// `SCAN ..`).
    fn query_plan(sql: &str, args: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut stmt| stmt.query_map(args, |r| r.get::<_, String>(3))?.collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An event clears its contact's pending inactivity checks through the index on the
    /// contact: with a million contacts waiting, a scan of them all ran for every event.
    #[test]
    fn clearing_a_contacts_inactivity_reads_by_its_index() {
        let plan = query_plan(CLEAR_INACTIVITY, params!["c", "[]"]);
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX inactivity_by_contact")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p == "SCAN inactivity"), "{plan:?}");
    }

    /// Schema 16 on a schema-15 file: the contacts are kept (in a table without rowid), an
    /// enrollment stored whole reads and is saved without what its columns hold, the journal
    /// rows written before (one record, an array) read as they did, and the rows written
    /// after share their fields in the same journal.
    #[test]
    fn schema_16_reads_the_journal_written_before_it() {
        use relance_core::journal::RecordKind;
        let (dir, db) = fresh_file("v16");
        let old = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..15] {
            old.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        old.pragma_update(None, "user_version", 15)
            .unwrap_or_else(|e| panic!("{e}"));
        let at = |m: i64| now() + chrono::TimeDelta::minutes(m);
        let entered = Record::new(at(0), "a", RecordKind::Entered);
        let step = [
            Record::new(at(1), "a", RecordKind::Sent).step("first"),
            Record::new(at(1), "a", RecordKind::Ended),
        ];
        for (contact, text) in [
            ("a", to_json(&entered)),
            ("b", to_json(&Record::new(at(0), "b", RecordKind::Entered))),
            ("a", serde_json::to_string(&step).unwrap_or_default()),
        ] {
            old.execute(
                "INSERT INTO journal (scenario_id, contact_id, record) VALUES ('s', ?1, ?2)",
                params![contact, text],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        old.execute(
            "INSERT INTO contact (id, fields, updated_at) VALUES ('a', '{\"id\":\"a\",\"email\":\"a@x.io\"}', 1)",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // An enrollment as schema 15 stored it: its whole JSON.
        let before = Enrollment {
            id: "s:a:1".into(),
            scenario: "s".into(),
            contact: "a".into(),
            version: 3,
            entered_at: at(0),
            state: relance_core::engine::EnrollmentState::Ended {
                outcome: relance_core::engine::Outcome::Exited,
                at: at(1),
            },
            sent: [("first".to_string(), at(0))].into_iter().collect(),
        };
        old.execute(
            "INSERT INTO enrollment (id, scenario_id, scenario_version, contact_id, version, running, entered_at, state) VALUES ('s:a:1', 's', 2, 'a', 3, 0, 0, ?1)",
            params![serde_json::to_string(&before).unwrap_or_default()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        drop(old);
        let mut store = SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.schema_version().ok(), Some(16));
        // The contact table, copied into a table without rowid, still holds its contact.
        let a = store.contact("a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.as_ref().and_then(|c| c.email()), Some("a@x.io"));
        assert_eq!(store.contact_ids().ok(), Some(vec!["a".to_string()]));
        // The enrollment stored whole still reads; saved again, it keeps only what its
        // columns do not hold, and reads the same.
        assert_eq!(
            store.enrollment("s:a:1").ok(),
            Some(Some((before.clone(), 2)))
        );
        let mut after = before.clone();
        after.version = 4;
        store
            .save_enrollment(Some(3), 2, &after)
            .unwrap_or_else(|e| panic!("{e}"));
        let text: String = store
            .conn
            .query_row("SELECT state FROM enrollment WHERE id = 's:a:1'", [], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, after.stored_json());
        assert!(text.starts_with(r#"{"entered_at":"#), "{text}");
        assert_eq!(store.enrollment("s:a:1").ok(), Some(Some((after, 2))));
        let later = [
            Record::new(at(2), "a", RecordKind::Entered),
            Record::new(at(2), "a", RecordKind::Waiting),
        ];
        store
            .journal_transition("s", &later.iter().collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut path = vec![entered];
        path.extend(step);
        path.extend(later);
        assert_eq!(store.records("s", Some("a")).ok(), Some(path));
        assert_eq!(store.records("s", None).map(|r| r.len()).ok(), Some(6));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An enrollment reads back from its columns and its stored text, a version past
    /// `i64::MAX` included (stored wrapped, read back the same); a `state` that is not text or
    /// not JSON is a corrupt enrollment, named, not a panic.
    #[test]
    fn an_enrollment_reads_from_its_columns_and_a_bad_state_is_corrupt() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let e = Enrollment {
            id: "s:c:1".into(),
            scenario: "s".into(),
            contact: "c".into(),
            version: u64::MAX - 1,
            entered_at: now(),
            state: relance_core::engine::EnrollmentState::Ended {
                outcome: relance_core::engine::Outcome::HeldOut,
                at: now(),
            },
            sent: Default::default(),
        };
        store
            .save_enrollment(None, 7, &e)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(store.enrollment("s:c:1").ok(), Some(Some((e, 7))));
        for bad in ["x'00ff'", "'not json'", "'{\"entered_at\":1}'"] {
            store
                .conn
                .execute(&format!("UPDATE enrollment SET state = {bad}"), [])
                .unwrap_or_else(|err| panic!("{err}"));
            match store.enrollment("s:c:1") {
                Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "enrollment", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// A contact's path reads its own rows, a range of the index by (scenario, contact, seq),
    /// in order without a sort. Before, its query (`?2 IS NULL OR contact_id = ?2`) used the
    /// index's scenario part alone and sorted the scenario's whole journal.
    #[test]
    fn a_path_reads_its_contacts_rows_only() {
        let path = query_plan(CONTACT_PATH, params!["s", "c"]);
        assert_eq!(
            path,
            vec![
                "SEARCH journal USING INDEX journal_by_contact (scenario_id=? AND contact_id=?)"
                    .to_string()
            ]
        );
    }

    /// What a contact holds comes from the entries that applied, read through their own
    /// partial index: the kept entries (one more each time an import re-sends an opt-in an
    /// opt-out keeps out) are not in it, and the state is the one the whole trail leads to.
    #[test]
    fn the_consent_state_reads_the_applied_entries_alone() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let at = |m: i64| now() + chrono::TimeDelta::minutes(m);
        let change = |subject: &str, state| Change {
            subject: subject.into(),
            state,
        };
        let mut append = |event| {
            store
                .append_consent(&event)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        append(change("newsletter", ConsentState::Subscribed).event("ana", "form", "api", at(0)));
        append(change("newsletter", ConsentState::Unsubscribed).event(
            "ana",
            "unsubscribe_link",
            "contact",
            at(1),
        ));
        for i in 0..300 {
            append(change("newsletter", ConsentState::Subscribed).kept(
                "ana",
                "import",
                "cli",
                at(2 + i),
            ));
        }
        append(change("Ana@Example.org", ConsentState::Suppressed).event(
            "ana",
            "bounce",
            "provider",
            at(400),
        ));
        append(change("ana@example.org", ConsentState::Lifted).event("ana", "api", "api", at(401)));
        append(change("newsletter", ConsentState::Subscribed).event("bob", "form", "api", at(402)));
        let trail = store.consent_trail("ana").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(trail.len(), 304);
        let state = store.consent_state("ana").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state, Derived::from_trail(&trail));
        assert_eq!(state.subscriptions.get("newsletter"), Some(&false));
        assert_eq!(state.suppressed.get("ana@example.org"), Some(&false));
        let ddl: String = store
            .conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'consent_applied'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ddl.ends_with("WHERE kept = 0"), "{ddl}");
        let indexed: i64 = store
            .conn
            .query_row("SELECT count(*) FROM consent INDEXED BY consent_applied WHERE contact_id = 'ana' AND kept = 0", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(indexed, 4, "only the entries that applied");
    }

    /// The consent log is append-only in the database itself, not only by convention: an
    /// UPDATE or a DELETE (a hand edit, a bug) is refused and the trail is unchanged.
    #[test]
    fn hostile_consent_rows_cannot_be_rewritten_or_removed() {
        let mut store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let at = DateTime::from_timestamp(1_770_000_000, 0).unwrap_or_default();
        let out = Change {
            subject: "newsletter".into(),
            state: ConsentState::Unsubscribed,
        };
        store
            .append_consent(&out.event("ana", "unsubscribe_link", "contact", at))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .conn
                .execute("UPDATE consent SET state = 'subscribed'", [])
                .is_err()
        );
        assert!(store.conn.execute("DELETE FROM consent", []).is_err());
        let trail = store.consent_trail("ana").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].state, ConsentState::Unsubscribed);
        assert_eq!(trail[0].at, at);
        assert_eq!(
            store
                .consent_state("ana")
                .unwrap_or_else(|e| panic!("{e}"))
                .subscriptions
                .get("newsletter"),
            Some(&false)
        );
    }
}
