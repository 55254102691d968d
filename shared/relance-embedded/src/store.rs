//! `SqliteStore`: the embedded adapter for every port, on one SQLite file (WAL) with
//! versioned migrations. Each unit of work is one `BEGIN IMMEDIATE … COMMIT` transaction,
//! so a crash leaves either all of a transition's writes or none.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, SendMark,
};
use relance_core::engine::{Enrollment, Send, Wake};
use relance_core::journal::Record;
use relance_core::ports::{
    ContactChange, ContactStore, EnrollmentStore, EntryMark, InactivityCheck, JournalStore,
    LaunchTime, ScenarioEntry, ScenarioSource, ScenarioStore, SourceFormat, Status, Store,
    TimerStore,
};
use relance_core::scenario::Action;
use rusqlite::{Connection, OptionalExtension, params};

/// The migrations, in order; `PRAGMA user_version` says how many were applied.
const MIGRATIONS: [&str; 3] = [
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_dead_letter.sql"),
    include_str!("../migrations/0003_policy.sql"),
];

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
    /// The database was written by a newer Relance.
    #[error("the database has schema version {found}, newer than this build knows ({known})")]
    TooNew { found: usize, known: usize },
}

/// Formats an instant for storage: fixed width, so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: "timestamp",
            why: e.to_string(),
        })
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain types cannot fail; an empty object keeps the row readable if it ever did.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string())
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) a database file, in WAL mode, and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::prepare(conn)
    }

    /// An in-memory database (tests, `relance test`).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = SqliteStore { conn };
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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

impl ScenarioStore for SqliteStore {
    type Error = StoreError;

    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status, latest_version, active_version FROM scenario WHERE ?1 IS NULL OR status = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![status.map(Status::as_str)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<u32>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, status, latest_version, active_version) = row?;
            let status = Status::parse(&status).ok_or(StoreError::Corrupt {
                what: "scenario status",
                why: status.clone(),
            })?;
            out.push(ScenarioEntry {
                id,
                status,
                latest_version,
                active_version,
            });
        }
        Ok(out)
    }

    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, StoreError> {
        Ok(self.scenarios(None)?.into_iter().find(|s| s.id == id))
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
        let format = match format {
            SourceFormat::Yaml => "yaml",
            SourceFormat::Json => "json",
        };
        self.conn.execute(
            "INSERT INTO scenario_version (scenario_id, version, format, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, version, format, text, ts(now)],
        )?;
        self.conn.execute(
            "INSERT INTO scenario (id, status, latest_version, active_version, updated_at) VALUES (?1, 'draft', ?2, NULL, ?3)
             ON CONFLICT (id) DO UPDATE SET latest_version = excluded.latest_version, updated_at = excluded.updated_at",
            params![id, version, ts(now)],
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
        self.conn.execute(
            "UPDATE scenario SET status = ?2, active_version = COALESCE(?3, active_version), updated_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), active_version, ts(now)],
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
            params![name, text, ts(now)],
        )?;
        Ok(())
    }
}

impl ContactStore for SqliteStore {
    type Error = StoreError;

    fn contact(&mut self, id: &str) -> Result<Option<Contact>, StoreError> {
        let fields: Option<String> = self
            .conn
            .prepare_cached("SELECT fields FROM contact WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
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
        .execute(params![contact.id(), to_json(contact), ts(now)])?;
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
                ts(event.at),
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
            .execute(params![contact, scenario, e.step, e.kind.as_str(), ts(e.at), e.url, to_json(&e.link_tags)])?;
        Ok(())
    }

    fn history(&mut self, contact: &str, scenario: &str) -> Result<History, StoreError> {
        let mut h = History::default();
        {
            let mut stmt = self.conn.prepare_cached("SELECT at, name, properties FROM activity WHERE contact_id = ?1 ORDER BY at, rowid")?;
            let rows = stmt.query_map(params![contact], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (at, name, properties) = row?;
                h.events.push(ActivityEvent {
                    at: parse_ts(&at)?,
                    name,
                    properties: json("activity properties", &properties)?,
                });
            }
        }
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT at, step, kind, url, link_tags FROM engagement WHERE contact_id = ?1 AND scenario_id = ?2 ORDER BY at, rowid",
            )?;
            let rows = stmt.query_map(params![contact, scenario], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            for row in rows {
                let (at, step, kind, url, tags) = row?;
                let kind = EngagementKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .ok_or(StoreError::Corrupt {
                        what: "engagement kind",
                        why: kind.clone(),
                    })?;
                h.engagement.push(Engagement {
                    at: parse_ts(&at)?,
                    step,
                    kind,
                    url,
                    link_tags: json("link tags", &tags)?,
                });
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT at FROM outbox WHERE contact_id = ?1 AND scenario_id = ?2 AND kind = 'send' ORDER BY at")?;
            let rows = stmt.query_map(params![contact, scenario], |r| r.get::<_, String>(0))?;
            for row in rows {
                h.sends.push(SendMark {
                    at: parse_ts(&row?)?,
                });
            }
        }
        Ok(h)
    }

    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at FROM outbox WHERE contact_id = ?1 AND kind = 'send' ORDER BY at",
        )?;
        let rows = stmt.query_map(params![contact], |r| r.get::<_, String>(0))?;
        rows.map(|row| {
            Ok(SendMark {
                at: parse_ts(&row?)?,
            })
        })
        .collect()
    }
}

impl EnrollmentStore for SqliteStore {
    type Error = StoreError;

    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let row: Option<(String, u32)> = self
            .conn
            .prepare_cached("SELECT state, scenario_version FROM enrollment WHERE scenario_id = ?1 AND contact_id = ?2 AND running = 1")?
            .query_row(params![scenario, contact], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(s, v)| Ok((json("enrollment", &s)?, v)))
            .transpose()
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let row: Option<(String, u32)> = self
            .conn
            .prepare_cached("SELECT state, scenario_version FROM enrollment WHERE id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(s, v)| Ok((json("enrollment", &s)?, v)))
            .transpose()
    }

    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
    ) -> Result<(), StoreError> {
        let state = to_json(e);
        let written = match expected {
            None => self
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO enrollment (id, scenario_id, scenario_version, contact_id, version, running, entered_at, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![e.id, e.scenario, scenario_version, e.contact, e.version as i64, e.is_running(), ts(e.entered_at), state]),
            Some(v) => self
                .conn
                .prepare_cached("UPDATE enrollment SET version = ?2, running = ?3, state = ?4 WHERE id = ?1 AND version = ?5")?
                .execute(params![e.id, e.version as i64, e.is_running(), state, v as i64]),
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
        let row: Option<(String, u32)> = self
            .conn
            .prepare_cached("SELECT last_entered_at, entries FROM entry WHERE scenario_id = ?1 AND contact_id = ?2")?
            .query_row(params![scenario, contact], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(at, entries)| {
            Ok(EntryMark {
                last_entered_at: parse_ts(&at)?,
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
            .prepare_cached(
                "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (scenario_id, contact_id) DO UPDATE SET last_entered_at = excluded.last_entered_at, entries = entries + 1",
            )?
            .execute(params![scenario, contact, ts(at)])?;
        Ok(())
    }
}

impl TimerStore for SqliteStore {
    type Error = StoreError;

    fn schedule(&mut self, w: &Wake) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO timer (due, enrollment_id, contact_id, step) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![ts(w.at), w.enrollment, w.contact, w.step])?;
        Ok(())
    }

    fn cancel(&mut self, w: &Wake) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM timer WHERE enrollment_id = ?1 AND step = ?2 AND due = ?3",
            )?
            .execute(params![w.enrollment, w.step, ts(w.at)])?;
        Ok(())
    }

    fn due_timers(&mut self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Wake>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.due, t.enrollment_id, t.contact_id, t.step FROM timer t
               JOIN enrollment e ON e.id = t.enrollment_id
               JOIN scenario s ON s.id = e.scenario_id
             WHERE t.due <= ?1 AND s.status = 'active'
             ORDER BY t.due, t.enrollment_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![ts(now), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (due, enrollment, contact, step) = row?;
            out.push(Wake {
                enrollment,
                contact,
                step,
                at: parse_ts(&due)?,
            });
        }
        Ok(out)
    }

    fn set_inactivity(&mut self, c: &InactivityCheck) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO inactivity (scenario_id, contact_id, due) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scenario_id, contact_id) DO UPDATE SET due = excluded.due",
            )?
            .execute(params![c.scenario, c.contact, ts(c.due)])?;
        Ok(())
    }

    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), StoreError> {
        let keep_json = to_json(&keep);
        self.conn
            .prepare_cached("DELETE FROM inactivity WHERE contact_id = ?1 AND scenario_id NOT IN (SELECT value FROM json_each(?2))")?
            .execute(params![contact, keep_json])?;
        Ok(())
    }

    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<InactivityCheck>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.scenario_id, i.contact_id, i.due FROM inactivity i JOIN scenario s ON s.id = i.scenario_id
             WHERE i.due <= ?1 AND s.status = 'active' ORDER BY i.due, i.contact_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![ts(now), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (scenario, contact, due) = row?;
            out.push(InactivityCheck {
                scenario,
                contact,
                due: parse_ts(&due)?,
            });
        }
        Ok(out)
    }

    fn remove_inactivity(&mut self, c: &InactivityCheck) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM inactivity WHERE scenario_id = ?1 AND contact_id = ?2 AND due = ?3",
            )?
            .execute(params![c.scenario, c.contact, ts(c.due)])?;
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
                .execute(params![scenario, zone, ts(at)])?,
            None => self
                .conn
                .prepare_cached("DELETE FROM launch WHERE scenario_id = ?1 AND zone = ?2")?
                .execute(params![scenario, zone])?,
        };
        Ok(())
    }

    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<LaunchTime>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.scenario_id, l.zone, l.next_at FROM launch l JOIN scenario s ON s.id = l.scenario_id
             WHERE l.next_at <= ?1 AND s.status = 'active' ORDER BY l.next_at, l.scenario_id, l.zone",
        )?;
        let rows = stmt.query_map(params![ts(now)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (scenario, zone, at) = row?;
            out.push(LaunchTime {
                scenario,
                zone,
                at: parse_ts(&at)?,
            });
        }
        Ok(out)
    }

    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<String> = self.conn.query_row(
            "SELECT MIN(d) FROM (
               SELECT MIN(t.due) AS d FROM timer t JOIN enrollment e ON e.id = t.enrollment_id
                 JOIN scenario s ON s.id = e.scenario_id WHERE s.status = 'active'
               UNION ALL SELECT MIN(i.due) FROM inactivity i JOIN scenario s ON s.id = i.scenario_id WHERE s.status = 'active'
               UNION ALL SELECT MIN(l.next_at) FROM launch l JOIN scenario s ON s.id = l.scenario_id WHERE s.status = 'active')",
            [],
            |r| r.get(0),
        )?;
        next.map(|s| parse_ts(&s)).transpose()
    }
}

impl SqliteStore {
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
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (idempotency_key, scenario_id, contact_id, kind, at, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![key, scenario, contact, kind, ts(at), payload.to_string()])?;
        Ok(())
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
            .execute(params![kind, payload, reason, ts(at)])?;
        Ok(())
    }

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO journal (scenario_id, contact_id, record) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![scenario, record.contact, to_json(record)])?;
        Ok(())
    }

    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = relance_core::ports::send_message(scenario, send, at);
        self.outbox_row(
            &send.idempotency_key,
            scenario,
            &send.contact,
            "send",
            at,
            &payload,
        )
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
        self.outbox_row(&key, scenario, contact, "action", at, &payload)
    }

    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM journal WHERE scenario_id = ?1 AND (?2 IS NULL OR contact_id = ?2) ORDER BY seq")?;
        let rows = stmt.query_map(params![scenario, contact], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(json("journal record", &row?)?);
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    type Fault = StoreError;

    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        // IMMEDIATE takes the write lock up front, so another process waits instead of failing mid-way.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match work(self) {
            Ok(v) => match self.conn.execute_batch("COMMIT") {
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
}
