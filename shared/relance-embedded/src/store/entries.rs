//! Rows written many per statement: a launch's entries (entry marks, sends, timers, journal,
//! enrollments of many contacts, see `Store::commit_entries`) and a group's journal rows. Each
//! statement run has a fixed cost (the statement taken from the cache, its program started and
//! reset, its values bound and released) that a row of a few hundred bytes does not dwarf.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use relance_core::engine::{Effect, Transition};
use relance_core::ports::{self, JournalStore};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension};

use super::{SqliteStore, StoreError, ts};

/// Rows one statement inserts.
pub(super) const ROWS_PER_INSERT: usize = 32;

/// An insert into one table: the statement for one row (numbered parameters, what the store
/// runs for a single row) and the same for [`ROWS_PER_INSERT`] rows.
pub(super) struct Insert {
    pub(super) one: &'static str,
    many: LazyLock<String>,
}

/// An [`Insert`] from its parts: the head up to `VALUES`, a row's values with anonymous
/// parameters, the same with numbered ones, and what follows the rows.
macro_rules! insert {
    ($head:literal, $row:literal, $numbered:literal $(, $tail:literal)?) => {
        Insert {
            one: concat!($head, " ", $numbered $(, " ", $tail)?),
            many: LazyLock::new(|| {
                let rows = vec![$row; ROWS_PER_INSERT].join(", ");
                format!(concat!($head, " {}" $(, " ", $tail)?), rows)
            }),
        }
    };
}

pub(super) static ENTRY_MARK: Insert = insert!(
    "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES",
    "(?, ?, ?, 1)",
    "(?1, ?2, ?3, 1)",
    "ON CONFLICT (scenario_id, contact_id) DO UPDATE SET last_entered_at = excluded.last_entered_at, entries = entries + 1"
);

pub(super) static OUTBOX_ROW: Insert = insert!(
    "INSERT OR IGNORE INTO outbox (idempotency_key, scenario_id, contact_id, kind, at, payload) VALUES",
    "(?, ?, ?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4, ?5, ?6)"
);

pub(super) static TIMER_ROW: Insert = insert!(
    "INSERT OR IGNORE INTO timer (due, enrollment_id, contact_id, step) VALUES",
    "(?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4)"
);

pub(super) static NEW_ENROLLMENT: Insert = insert!(
    "INSERT OR IGNORE INTO enrollment (id, scenario_id, scenario_version, contact_id, version, running, entered_at, state) VALUES",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);

pub(super) static JOURNAL_ROW: Insert = insert!(
    "INSERT INTO journal (scenario_id, contact_id, record) VALUES",
    "(?, ?, ?)",
    "(?1, ?2, ?3)"
);

/// Inserts `rows` in order with `insert`: [`ROWS_PER_INSERT`] per statement, the rest one
/// by one. Returns how many rows were written (an `OR IGNORE` insert may skip some).
pub(super) fn insert_rows<const N: usize>(
    conn: &Connection,
    insert: &Insert,
    rows: &[[&dyn ToSql; N]],
) -> rusqlite::Result<usize> {
    let mut written = 0;
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut many = conn.prepare_cached(&insert.many)?;
        for chunk in &mut chunks {
            written += many.execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut one = conn.prepare_cached(insert.one)?;
        for row in rest {
            written += one.execute(&row[..])?;
        }
    }
    Ok(written)
}

impl SqliteStore {
    /// `Store::commit_entries`: the rows of all the entries, table by table, many per
    /// statement, each table's in the order of the entries (the outbox's and the journal's
    /// sequence numbers as one entry after the other would give them). Entries with effects
    /// other than records, sends to the outbox file and timers, or with a contact change, are
    /// written one by one, as `commit_transition` writes them.
    pub(super) fn commit_entries_together(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        entering: &[Transition],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !entering.iter().all(|t| self.writes_together(t)) {
            return ports::commit_entries_one_by_one(
                self,
                scenario,
                scenario_version,
                entering,
                now,
            );
        }
        let entered_at = ts("last_entered_at", now)?;
        let marks: Vec<[&dyn ToSql; 3]> = entering
            .iter()
            .map(|t| [&scenario as &dyn ToSql, &t.enrollment.contact, &entered_at])
            .collect();
        insert_rows(&self.conn, &ENTRY_MARK, &marks)?;

        // The sends, then the timers, each in the order of the effects.
        let outbox_at = ts("outbox at", now)?;
        let mut sends = Vec::new();
        let mut wakes = Vec::new();
        for t in entering {
            for effect in &t.effects {
                match effect {
                    Effect::Send(send) => {
                        let payload =
                            ports::send_message_text(scenario, send, now).map_err(|e| {
                                StoreError::Corrupt {
                                    what: "send message",
                                    why: e.to_string(),
                                }
                            })?;
                        sends.push((send, payload));
                    }
                    Effect::ScheduleWake(w) => wakes.push((w, ts("timer due", w.at)?)),
                    _ => {}
                }
            }
        }
        let outbox_rows: Vec<[&dyn ToSql; 6]> = sends
            .iter()
            .map(|(send, payload)| {
                [
                    &send.idempotency_key as &dyn ToSql,
                    &scenario,
                    &send.contact,
                    &"send",
                    &outbox_at,
                    payload,
                ]
            })
            .collect();
        insert_rows(&self.conn, &OUTBOX_ROW, &outbox_rows)?;
        let timer_rows: Vec<[&dyn ToSql; 4]> = wakes
            .iter()
            .map(|(w, due)| [due as &dyn ToSql, &w.enrollment, &w.contact, &w.step])
            .collect();
        insert_rows(&self.conn, &TIMER_ROW, &timer_rows)?;

        for t in entering {
            let records: Vec<_> = t.records().collect();
            self.journal_transition(scenario, &records)?;
        }

        let mut enrollments = Vec::with_capacity(entering.len());
        for t in entering {
            let e = &t.enrollment;
            enrollments.push((
                e,
                e.version as i64,
                e.is_running(),
                ts("entered_at", e.entered_at)?,
                e.to_json(),
            ));
        }
        let enrollment_rows: Vec<[&dyn ToSql; 8]> = enrollments
            .iter()
            .map(|(e, version, running, entered_at, state)| {
                [
                    &e.id as &dyn ToSql,
                    &e.scenario,
                    &scenario_version,
                    &e.contact,
                    version,
                    running,
                    entered_at,
                    state,
                ]
            })
            .collect();
        match insert_rows(&self.conn, &NEW_ENROLLMENT, &enrollment_rows) {
            Ok(written) if written == enrollments.len() => Ok(()),
            // A row left out or refused: the first enrollment not stored as written is the
            // one in conflict (an id taken, or another enrollment running for its contact).
            Ok(_) => Err(self.first_conflict(&enrollments)),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(self.first_conflict(&enrollments))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Whether `commit_entries_together` writes `t` with the others: a transition that
    /// changes no contact and whose effects are records, timers armed and sends to the
    /// outbox file (a send on a channel with a real backend is queued with its row's `seq`,
    /// which `outbox_send` reads).
    fn writes_together(&self, t: &Transition) -> bool {
        t.contact.is_none()
            && t.effects.iter().all(|effect| match effect {
                Effect::Record(_)
                | Effect::ScheduleWake(_)
                | Effect::SetField { .. }
                | Effect::Ended { .. } => true,
                Effect::Send(send) => !self.live_channels.contains(&send.channel),
                Effect::CancelWake(_) | Effect::Action { .. } => false,
            })
    }

    /// The conflict of the first enrollment among `written` whose row is not the one written
    /// (the first one when all are, which a count that came short rules out).
    fn first_conflict(
        &self,
        written: &[(&relance_core::engine::Enrollment, i64, bool, i64, String)],
    ) -> StoreError {
        let stored = |id: &str| -> rusqlite::Result<Option<String>> {
            self.conn
                .prepare_cached("SELECT state FROM enrollment WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()
        };
        let conflict = written
            .iter()
            .find(|(e, .., state)| stored(&e.id).ok().flatten().as_ref() != Some(state))
            .or(written.first());
        StoreError::Conflict(conflict.map_or_else(String::new, |(e, ..)| e.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_of_many_rows_repeats_the_row_between_head_and_tail() {
        assert_eq!(
            ENTRY_MARK.one,
            "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES (?1, ?2, ?3, 1) ON CONFLICT (scenario_id, contact_id) DO UPDATE SET last_entered_at = excluded.last_entered_at, entries = entries + 1"
        );
        let many = ENTRY_MARK.many.as_str();
        assert!(many.starts_with(
            "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES (?, ?, ?, 1), (?, ?, ?, 1),"
        ));
        assert!(many.ends_with("(?, ?, ?, 1) ON CONFLICT (scenario_id, contact_id) DO UPDATE SET last_entered_at = excluded.last_entered_at, entries = entries + 1"));
        assert_eq!(many.matches("(?, ?, ?, 1)").count(), ROWS_PER_INSERT);
        assert_eq!(
            TIMER_ROW.many.matches('?').count(),
            4 * ROWS_PER_INSERT,
            "four values a row"
        );
        assert!(TIMER_ROW.one.ends_with("VALUES (?1, ?2, ?3, ?4)"));
    }
}
