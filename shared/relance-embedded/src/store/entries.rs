//! Rows written many per statement: a launch's entries (entry marks, sends, timers, journal,
//! enrollments of many contacts, see `Store::commit_entries`), the steps of due timers
//! (`Store::commit_steps`) and a group's journal rows. Each
//! statement run has a fixed cost (the statement taken from the cache, its program started and
//! reset, its values bound and released) that a row of a few hundred bytes does not dwarf.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use relance_core::engine::{Effect, Enrollment, Transition, Wake};
use relance_core::instant;
use relance_core::ports::{self, JournalStore, StepWrite};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension};

use super::{SqliteStore, StoreError, ts};

/// Rows one statement inserts.
pub(super) const ROWS_PER_INSERT: usize = 32;

/// A statement over rows of one table: the statement for one row (numbered parameters, what
/// the store runs for a single row) and the same for [`ROWS_PER_INSERT`] rows, their
/// parameters one row after the other.
pub(super) struct Rows {
    pub(super) one: &'static str,
    many: LazyLock<String>,
}

/// [`Rows`] of an insert, from its parts: the head up to `VALUES`, a row's values with
/// anonymous parameters, the same with numbered ones, and what follows the rows.
macro_rules! insert {
    ($head:literal, $row:literal, $numbered:literal $(, $tail:literal)?) => {
        Rows {
            one: concat!($head, " ", $numbered $(, " ", $tail)?),
            many: LazyLock::new(|| {
                let rows = vec![$row; ROWS_PER_INSERT].join(", ");
                format!(concat!($head, " {}" $(, " ", $tail)?), rows)
            }),
        }
    };
}

pub(super) static ENTRY_MARK: Rows = insert!(
    "INSERT INTO entry (scenario_id, contact_id, last_entered_at, entries) VALUES",
    "(?, ?, ?, 1)",
    "(?1, ?2, ?3, 1)",
    "ON CONFLICT (scenario_id, contact_id) DO UPDATE SET last_entered_at = excluded.last_entered_at, entries = entries + 1"
);

pub(super) static OUTBOX_ROW: Rows = insert!(
    "INSERT OR IGNORE INTO outbox (idempotency_key, scenario_id, contact_id, kind, at, payload) VALUES",
    "(?, ?, ?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4, ?5, ?6)"
);

pub(super) static TIMER_ROW: Rows = insert!(
    "INSERT OR IGNORE INTO timer (due, enrollment_id, contact_id, step) VALUES",
    "(?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4)"
);

pub(super) static NEW_ENROLLMENT: Rows = insert!(
    "INSERT OR IGNORE INTO enrollment (id, scenario_id, scenario_version, contact_id, version, running, entered_at, state) VALUES",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);

pub(super) static JOURNAL_ROW: Rows = insert!(
    "INSERT INTO journal (scenario_id, contact_id, record) VALUES",
    "(?, ?, ?)",
    "(?1, ?2, ?3)"
);

/// A timer consumed (`cancel`'s statement). The timers of many steps are deleted one
/// statement run each, not in one statement: a row value `IN (VALUES ..)` is planned as a
/// scan of the table, and thirty-two `OR` terms (each a search of the primary key) cost 1%
/// more of the runner than as many runs of this one.
pub(super) const TIMER_GONE: &str =
    "DELETE FROM timer WHERE due = ?1 AND enrollment_id = ?2 AND step = ?3";

/// A step's enrollment saved on the version it was read at (`save_enrollment`'s
/// statement). Many are saved one statement run each: an `UPDATE .. FROM (VALUES ..)` of
/// thirty-two rows copies them into a table of its own first, and cost 0.6% more of the
/// runner.
pub(super) const ENROLLMENT_STEP: &str =
    "UPDATE enrollment SET version = ?2, running = ?3, state = ?4 WHERE id = ?1 AND version = ?5";

/// Runs the one-row statement `sql` for each of `rows`, in order, prepared once. Returns
/// how many rows were changed.
pub(super) fn run_each<const N: usize>(
    conn: &Connection,
    sql: &str,
    rows: &[[&dyn ToSql; N]],
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut changed = 0;
    for row in rows {
        changed += statement.execute(&row[..])?;
    }
    Ok(changed)
}

/// Runs `statement` over `rows`, in order: [`ROWS_PER_INSERT`] per run, the rest one by one.
/// Returns how many rows were written (an `OR IGNORE` insert may skip some).
pub(super) fn run_rows<const N: usize>(
    conn: &Connection,
    statement: &Rows,
    rows: &[[&dyn ToSql; N]],
) -> rusqlite::Result<usize> {
    let mut written = 0;
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut many = conn.prepare_cached(&statement.many)?;
        for chunk in &mut chunks {
            written += many.execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut one = conn.prepare_cached(statement.one)?;
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
        run_rows(&self.conn, &ENTRY_MARK, &marks)?;
        let effects: Vec<(&str, &Transition)> = entering.iter().map(|t| (scenario, t)).collect();
        self.write_effects_together(&effects, now)?;

        let enrollments: Vec<Saved<'_>> =
            entering.iter().map(|t| Saved::of(&t.enrollment)).collect();
        let entered: Vec<i64> = entering
            .iter()
            .map(|t| ts("entered_at", t.enrollment.entered_at))
            .collect::<Result<_, _>>()?;
        let rows: Vec<[&dyn ToSql; 8]> = enrollments
            .iter()
            .zip(&entered)
            .map(|(s, entered_at)| {
                [
                    &s.enrollment.id as &dyn ToSql,
                    &s.enrollment.scenario,
                    &scenario_version,
                    &s.enrollment.contact,
                    &s.version,
                    &s.running,
                    entered_at,
                    &s.state,
                ]
            })
            .collect();
        let written = run_rows(&self.conn, &NEW_ENROLLMENT, &rows);
        self.all_saved(written, &enrollments)
    }

    /// `Store::commit_steps`: the timers consumed, then the steps' rows table by table (the
    /// inserts many per statement), in the order of the steps; each enrollment saved on the
    /// version its step was computed from. Steps with effects other than records, sends to
    /// the outbox file and timers, or with a contact change, are written one by one, as
    /// `commit_transition` writes them.
    pub(super) fn commit_steps_together(
        &mut self,
        consumed: &[Wake],
        steps: &[StepWrite<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !steps.iter().all(|s| self.writes_together(s.transition)) {
            return ports::commit_steps_one_by_one(self, consumed, steps, now);
        }
        let dues: Vec<i64> = consumed.iter().map(|w| instant::to_micros(w.at)).collect();
        let gone: Vec<[&dyn ToSql; 3]> = consumed
            .iter()
            .zip(&dues)
            .map(|(w, due)| [due as &dyn ToSql, &w.enrollment, &w.step])
            .collect();
        run_each(&self.conn, TIMER_GONE, &gone)?;
        let effects: Vec<(&str, &Transition)> =
            steps.iter().map(|s| (s.scenario, s.transition)).collect();
        self.write_effects_together(&effects, now)?;

        let enrollments: Vec<Saved<'_>> = steps
            .iter()
            .map(|s| Saved::of(&s.transition.enrollment))
            .collect();
        let expected: Vec<i64> = steps.iter().map(|s| s.expected as i64).collect();
        let rows: Vec<[&dyn ToSql; 5]> = enrollments
            .iter()
            .zip(&expected)
            .map(|(s, expected)| {
                [
                    &s.enrollment.id as &dyn ToSql,
                    &s.version,
                    &s.running,
                    &s.state,
                    expected,
                ]
            })
            .collect();
        let written = run_each(&self.conn, ENROLLMENT_STEP, &rows);
        self.all_saved(written, &enrollments)
    }

    /// The outbox rows, timers armed and journal rows of `transitions` (each with its
    /// scenario), table by table, each in the order of the transitions and their effects.
    fn write_effects_together(
        &mut self,
        transitions: &[(&str, &Transition)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outbox_at = ts("outbox at", now)?;
        let mut sends = Vec::new();
        let mut wakes = Vec::new();
        for (scenario, t) in transitions {
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
                        sends.push((*scenario, send, payload));
                    }
                    Effect::ScheduleWake(w) => wakes.push((w, ts("timer due", w.at)?)),
                    _ => {}
                }
            }
        }
        let outbox_rows: Vec<[&dyn ToSql; 6]> = sends
            .iter()
            .map(|(scenario, send, payload)| {
                [
                    &send.idempotency_key as &dyn ToSql,
                    scenario,
                    &send.contact,
                    &"send",
                    &outbox_at,
                    payload,
                ]
            })
            .collect();
        run_rows(&self.conn, &OUTBOX_ROW, &outbox_rows)?;
        let timer_rows: Vec<[&dyn ToSql; 4]> = wakes
            .iter()
            .map(|(w, due)| [due as &dyn ToSql, &w.enrollment, &w.contact, &w.step])
            .collect();
        run_rows(&self.conn, &TIMER_ROW, &timer_rows)?;
        for (scenario, t) in transitions {
            let records: Vec<_> = t.records().collect();
            self.journal_transition(scenario, &records)?;
        }
        Ok(())
    }

    /// Whether `t` is written with the others: a transition that changes no contact and
    /// whose effects are records, timers armed and sends to the outbox file (a send on a
    /// channel with a real backend is queued with its row's `seq`, which `outbox_send`
    /// reads).
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

    /// Whether `written` rows are every one of `saved`: when fewer were (an id taken, a
    /// version that moved, another enrollment running for the contact), the conflict of the
    /// first enrollment not stored as saved.
    fn all_saved(
        &self,
        written: rusqlite::Result<usize>,
        saved: &[Saved<'_>],
    ) -> Result<(), StoreError> {
        match written {
            Ok(n) if n == saved.len() => Ok(()),
            Ok(_) => Err(self.first_conflict(saved)),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(self.first_conflict(saved))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The conflict of the first enrollment among `saved` whose row is not the one saved (the
    /// first one when all are, which a count that came short rules out).
    fn first_conflict(&self, saved: &[Saved<'_>]) -> StoreError {
        let stored = |id: &str| -> rusqlite::Result<Option<(i64, String)>> {
            self.conn
                .prepare_cached("SELECT version, state FROM enrollment WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        };
        let conflict = saved
            .iter()
            .find(|s| stored(&s.enrollment.id).ok().flatten() != Some((s.version, s.state.clone())))
            .or(saved.first());
        StoreError::Conflict(conflict.map_or_else(String::new, |s| s.enrollment.id.clone()))
    }
}

/// An enrollment as written: the values of its row that a conflict is told by, and that
/// every save binds.
pub(super) struct Saved<'a> {
    pub(super) enrollment: &'a Enrollment,
    pub(super) version: i64,
    pub(super) running: bool,
    pub(super) state: String,
}

impl<'a> Saved<'a> {
    pub(super) fn of(enrollment: &'a Enrollment) -> Saved<'a> {
        Saved {
            enrollment,
            version: enrollment.version as i64,
            running: enrollment.is_running(),
            state: enrollment.stored_json(),
        }
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
