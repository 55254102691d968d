//! Due work: ticks fire launches, inactivity checks and timers, each in its own unit; a due
//! item that keeps failing becomes a dead letter; the retention purge.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use relance_core::contact::Contact;
use relance_core::engine::{Input, Wake};
use relance_core::policy::Retained;
use relance_core::ports::{Due, StepWrite, Store, UnreadableRow};
use serde::Serialize;

use super::{LaunchReport, Runtime, RuntimeError, Unit, history_for, store_err};

/// How many rows of history one retention unit of work deletes.
pub const PURGE_BATCH: usize = 5_000;

/// How many due timers one tick takes before looking at the rest again.
pub(crate) const TIMER_BATCH: usize = 500;

/// How many times in a row a due item's work may fail on a store error before the item is
/// kept as a dead letter (as many as the AWS queues' receives before their dead-letter queue).
pub const DUE_ITEM_ATTEMPTS: u32 = 5;

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Timers fired.
    pub timers: usize,
    /// Recurring or fixed-date launches fired.
    pub launches: usize,
    /// Inactivity checks fired.
    pub inactivity: usize,
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Fires everything due at `now`: recurring and fixed-date launches, inactivity checks,
    /// then timers (oldest first). Each is its own unit of work.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, RuntimeError> {
        self.tick_bounded(now, usize::MAX)
    }

    /// Like [`Runtime::tick`], firing at most about `max_timers` timers (whole batches of
    /// the due query, oldest first); the others stay due for the next call. A runner that
    /// also answers requests calls this, so a herd of due timers delays a request by one
    /// bounded round, not by the whole herd.
    pub fn tick_bounded(
        &mut self,
        now: DateTime<Utc>,
        max_timers: usize,
    ) -> Result<TickReport, RuntimeError> {
        let mut report = self.tick_schedules(now)?;
        while report.timers < max_timers {
            let due = self.due_timers_up_to(now, TIMER_BATCH.min(max_timers - report.timers))?;
            if due.is_empty() {
                break;
            }
            self.fire_due(&due, now)?;
            report.timers += due.len();
        }
        Ok(report)
    }

    /// Fires the launches and inactivity checks due at `now` (the part of a tick that is not
    /// timers).
    pub fn tick_schedules(&mut self, now: DateTime<Utc>) -> Result<TickReport, RuntimeError> {
        let now = now.trunc_subsecs(6);
        let mut report = TickReport::default();
        for launch in self.store.due_launches(now).map_err(store_err)? {
            let launch = match launch {
                Due::Ready(launch) => launch,
                Due::Unreadable(row) => {
                    self.bury(now, &row)?;
                    continue;
                }
            };
            // A step's winner check shares the scenario's due slots with its launches.
            if let Some(step) = relance_core::winner::slot_step(&launch.zone) {
                self.settle(
                    now,
                    "winner_check",
                    &launch,
                    |u| u.check_winner(&launch.scenario, step, launch.at),
                    |u| {
                        u.store
                            .set_launch(&launch.scenario, &launch.zone, None)
                            .map_err(store_err)
                    },
                )?;
                continue;
            }
            self.settle(
                now,
                "launch",
                &launch,
                |u| u.fire_launch(&launch.scenario, &launch.zone, launch.at),
                |u| {
                    u.store
                        .set_launch(&launch.scenario, &launch.zone, None)
                        .map_err(store_err)
                },
            )?;
            report.launches += 1;
        }
        for check in self
            .store
            .due_inactivity(now, TIMER_BATCH)
            .map_err(store_err)?
        {
            let check = match check {
                Due::Ready(check) => check,
                Due::Unreadable(row) => {
                    self.bury(now, &row)?;
                    continue;
                }
            };
            let fire = |u: &mut Unit<'_, S>| {
                u.store.remove_inactivity(&check).map_err(store_err)?;
                let Some(entry) = u.store.scenario(&check.scenario).map_err(store_err)? else {
                    return Ok(());
                };
                let (Some(version), Some(contact)) = (
                    entry.active_version,
                    u.store.contact(&check.contact).map_err(store_err)?,
                ) else {
                    return Ok(());
                };
                u.try_enter(&entry.id, version, &contact, &mut LaunchReport::default())
            };
            self.settle(now, "inactivity", &check, fire, |u| {
                u.store.remove_inactivity(&check).map_err(store_err)
            })?;
            report.inactivity += 1;
        }
        Ok(report)
    }

    /// Timers due at or before `until`, oldest first (a batch; ask again for more). The AWS
    /// tick hands them to the step queue; the embedded tick fires them itself.
    pub fn due_timers(&mut self, until: DateTime<Utc>) -> Result<Vec<Wake>, RuntimeError> {
        self.due_timers_up_to(until, TIMER_BATCH)
    }

    /// Like [`Runtime::due_timers`], with the batch size chosen by the caller (the AWS tick
    /// hands a whole herd of timers due at one second to the step queue at once).
    pub fn due_timers_up_to(
        &mut self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Wake>, RuntimeError> {
        let until = until.trunc_subsecs(6);
        loop {
            let batch = self.store.due_timers(until, limit).map_err(store_err)?;
            let full = batch.len() >= limit;
            let mut ready = Vec::with_capacity(batch.len());
            for due in batch {
                match due {
                    Due::Ready(wake) => ready.push(wake),
                    Due::Unreadable(row) => self.bury(until, &row)?,
                }
            }
            // A full batch of nothing but unreadable rows (now gone) hides what follows.
            if !ready.is_empty() || !full {
                return Ok(ready);
            }
        }
    }

    /// Removes a due row that does not read and keeps it as a dead letter (the raw row and
    /// why), in one unit of its own: the items before and after it still fire, and a later
    /// tick does not meet it again. Only the store failing to do so is an error (the row then
    /// stays for the next tick).
    fn bury(&mut self, now: DateTime<Utc>, row: &UnreadableRow) -> Result<(), RuntimeError> {
        tracing::error!(kind = %row.kind, reason = %row.reason, "a stored due row does not read; kept as a dead letter");
        let reason = format!("unreadable row: {}", row.reason);
        self.unit(now, |u| {
            u.store.remove_unreadable(row).map_err(store_err)?;
            u.store
                .dead_letter(&row.kind, &row.raw, &reason, now)
                .map_err(store_err)
        })?;
        crate::metrics::dead_letter(&row.kind);
        Ok(())
    }

    /// Fires one timer (the step executor's unit of work). A duplicated or stale timer
    /// changes nothing; one whose work keeps failing is kept as a dead letter; one whose unit
    /// could not commit is an error, and the timer stays for the next try.
    pub fn fire(&mut self, wake: &Wake, now: DateTime<Utc>) -> Result<(), RuntimeError> {
        self.fire_from(wake, now, None).map(drop)
    }

    /// Fires a batch of due timers, in order, as [`Runtime::fire`] each; with a
    /// [`crate::runtime::StepReader`] set, their steps are read and computed ahead on its thread while
    /// this one writes (see [`Runtime::read_steps_ahead`]). Stops at the first error `fire`
    /// would return (the timers from there on stay due).
    ///
    /// Inside a group ([`Runtime::grouped`]), the timers go 64 at a time into one unit of
    /// work, whose steps are written together ([`Store::commit_steps`]: on SQLite, the
    /// inserts many rows per statement, and one savepoint, not one each). When such a unit
    /// fails, it is rolled back and its timers are fired again one by one, each in its own
    /// unit as `fire` does, so a timer that fails still fails alone (and is kept as a dead
    /// letter alone).
    pub fn fire_due(&mut self, due: &[Wake], now: DateTime<Utc>) -> Result<(), RuntimeError> {
        let mut ahead = self.read_ahead(due, now);
        let mut outcome = Ok(());
        for timers in due.chunks(TIMERS_PER_UNIT) {
            if let Err(e) = self.fire_together(timers, now, &mut ahead) {
                outcome = Err(e);
                break;
            }
        }
        self.end_ahead(ahead);
        outcome
    }

    /// Fires `timers` in one unit whose steps are written together; if the unit fails, fires
    /// them one by one (see [`Runtime::fire_due`]).
    fn fire_together(
        &mut self,
        timers: &[Wake],
        now: DateTime<Utc>,
        ahead: &mut Option<super::ahead::Ahead>,
    ) -> Result<(), RuntimeError> {
        // One unit runs at one instant: a timer a queue delivered early runs at its due
        // time, in a unit of its own. And only inside a group, whose transaction holds the
        // write lock from one unit to the next anyway: outside one, another connection may
        // write between two timers' units, and a unit of many timers would hold it off
        // while the runner waits for the reader's steps.
        let unit_at = now.trunc_subsecs(6);
        if self.group.is_none()
            || timers.len() < 2
            || timers.iter().any(|w| unit_now(w, now) != unit_at)
        {
            return self.fire_each(timers, now, ahead);
        }
        let mut taken = Taken::default();
        let together = self.try_unit(unit_at, |u| {
            let mut steps = Steps::default();
            for wake in timers {
                u.fire_in_turn(wake, now, ahead, &mut steps, &mut taken)?;
            }
            u.write_steps(&mut steps)
        })?;
        match together {
            Ok(()) => {
                self.steps_ahead.offered += taken.offered;
                self.steps_ahead.used += taken.used;
                // The group's limit counts timers, as when each was a unit.
                self.count_more_units(timers.len() - 1);
                Ok(())
            }
            // Rolled back: each timer in its own unit, computed afresh.
            Err(_) => {
                if let Some(ahead) = ahead.as_mut() {
                    ahead.stop();
                }
                self.fire_each(timers, now, &mut None)
            }
        }
    }

    /// Fires `timers` one by one, each in its own unit, as [`Runtime::fire`].
    fn fire_each(
        &mut self,
        timers: &[Wake],
        now: DateTime<Utc>,
        ahead: &mut Option<super::ahead::Ahead>,
    ) -> Result<(), RuntimeError> {
        for wake in timers {
            let step = ahead.as_mut().and_then(|a| a.take(wake));
            let fired = self.fire_from(wake, now, step)?;
            // Its unit wrote a contact the batch does not track.
            if fired.foreign_contact
                && let Some(ahead) = ahead.as_mut()
            {
                ahead.stop();
            }
        }
        Ok(())
    }

    fn fire_from(
        &mut self,
        wake: &Wake,
        now: DateTime<Utc>,
        mut ahead: Option<super::ahead::AheadStep>,
    ) -> Result<Fired, RuntimeError> {
        let now = now.trunc_subsecs(6);
        // How late it fires, in seconds (whole microseconds: stored instants keep no more).
        let lateness = now
            .signed_duration_since(wake.at)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6;
        // A queue may deliver a little early: the step never runs before it is due. A retry
        // computes the step afresh.
        let handed = ahead.is_some();
        let mut fired = Fired::default();
        self.settle(
            unit_now(wake, now),
            "timer",
            wake,
            |u| u.fire_timer(wake, lateness, ahead.take(), &mut fired),
            |u| u.store.cancel(wake).map_err(store_err),
        )?;
        self.steps_ahead.offered += u64::from(handed);
        self.steps_ahead.used += u64::from(fired.used_ahead);
        Ok(fired)
    }

    /// Runs a due item's unit, `fire`. When the store fails to begin or commit it, the error
    /// is returned and the item stays for the next tick or delivery: that says nothing of the
    /// item, and its work may even be committed (a retry then finds it done). When the work
    /// itself fails on a store error (transient: a busy database, a lost or throttled
    /// request), it is run again at once, up to [`DUE_ITEM_ATTEMPTS`] times. When it keeps
    /// failing, or fails otherwise (a bug, a scenario that no longer reads, a row that does
    /// not), the item is removed with `drop` and kept as a dead letter with its reason, in
    /// one unit, so it neither blocks the items after it nor is lost. If even that fails (the
    /// database is gone), the error is returned and the item stays for the next tick.
    fn settle<T: serde::Serialize>(
        &mut self,
        now: DateTime<Utc>,
        kind: &str,
        item: &T,
        mut fire: impl FnMut(&mut Unit<'_, S>) -> Result<(), RuntimeError>,
        drop: impl FnOnce(&mut Unit<'_, S>) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let mut attempt = 1;
        let reason = loop {
            match self.try_unit(now, &mut fire)? {
                Ok(()) => return Ok(()),
                Err(e @ RuntimeError::Store(_)) if attempt < DUE_ITEM_ATTEMPTS => {
                    tracing::warn!(kind, attempt, error = %e, "due item failed; trying it again");
                    attempt += 1;
                }
                Err(e) => break e.to_string(),
            }
        };
        tracing::error!(kind, attempt, reason = %reason, "due item failed; kept as a dead letter");
        let payload = serde_json::to_string(item).unwrap_or_default();
        self.unit(now, |u| {
            drop(u)?;
            u.store
                .dead_letter(kind, &payload, &reason, now)
                .map_err(store_err)
        })?;
        crate::metrics::dead_letter(kind);
        Ok(())
    }

    /// Deletes the history the policy's `retention` no longer keeps (each kind in units of
    /// [`PURGE_BATCH`] rows, so the runner is never held long); returns what was deleted.
    /// The consent log is never purged.
    pub fn purge_history(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<&'static str, u64>, RuntimeError> {
        let now = now.trunc_subsecs(6);
        self.engines.refresh_policy(&mut self.store, now)?;
        let retention = self.engines.policy.retention.clone();
        let mut report = BTreeMap::new();
        for kind in Retained::ALL {
            let Some(cutoff) = retention.cutoff(kind, now) else {
                continue;
            };
            let mut total = 0;
            loop {
                let deleted = self.unit(now, |u| {
                    u.store.purge(kind, cutoff, PURGE_BATCH).map_err(store_err)
                })?;
                total += deleted;
                if deleted < PURGE_BATCH as u64 {
                    break;
                }
            }
            if total > 0 {
                tracing::info!(kind = kind.as_str(), deleted = total, before = %cutoff, "retention");
            }
            report.insert(kind.as_str(), total);
        }
        Ok(report)
    }

    /// The earliest instant something is due.
    pub fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        self.store.next_due().map_err(store_err)
    }
}

/// Due timers fired in one unit of work, their steps written together.
pub(super) const TIMERS_PER_UNIT: usize = 64;

/// How the steps of a unit of several timers were had.
#[derive(Debug, Default)]
struct Taken {
    /// Steps computed ahead and handed to the unit.
    offered: u64,
    /// Of those, the ones that still held and were written.
    used: u64,
}

/// The steps of a unit of several timers waiting to be written together: the timers
/// consumed and the transitions, of distinct enrollments and contacts.
#[derive(Debug, Default)]
struct Steps {
    consumed: Vec<Wake>,
    /// The steps of the timers consumed whose step had something to write (each of its
    /// timer's contact, see `Unit::fire_in_turn`).
    steps: Vec<TimerStep>,
}

impl Steps {
    /// Whether what waits concerns `wake`'s contact or enrollment: then it is written
    /// before `wake`'s step is read. A look at each timer consumed: at most
    /// [`TIMERS_PER_UNIT`] wait.
    fn touches(&self, wake: &Wake) -> bool {
        self.consumed
            .iter()
            .any(|w| w.contact == wake.contact || w.enrollment == wake.enrollment)
    }
}

/// How a timer's unit had its step.
#[derive(Debug, Clone, Copy, Default)]
struct Fired {
    /// The step computed ahead was the one written.
    used_ahead: bool,
    /// The enrollment's contact is not the timer's (a row written inconsistently): the unit
    /// wrote a contact the batch's reader does not track.
    foreign_contact: bool,
}

/// A due timer's step: its enrollment's scenario, version and contact, and the engine's
/// transition (computed by the unit itself, or ahead by a [`crate::runtime::StepReader`]).
#[derive(Debug)]
pub(super) struct TimerStep {
    pub(super) scenario: String,
    pub(super) version: u32,
    /// The enrollment's version the transition was computed from.
    pub(super) expected: u64,
    pub(super) contact: String,
    pub(super) transition: relance_core::engine::Transition,
}

/// The instant a timer's unit runs at: `now`, or its due time when a queue delivered it a
/// little early (the step never runs before it is due), in whole microseconds.
pub(super) fn unit_now(wake: &Wake, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(wake.at).trunc_subsecs(6)
}

/// Reads what a due timer's step needs (its enrollment, contact and history) and runs the
/// engine at `now`: `None` when the enrollment is gone. Reads only.
pub(super) fn timer_step<S: Store>(
    store: &mut S,
    engines: &mut super::scenarios::Engines,
    wake: &Wake,
    now: DateTime<Utc>,
) -> Result<Option<TimerStep>, RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let Some((enrollment, version)) = store.enrollment(&wake.enrollment).map_err(store_err)? else {
        return Ok(None);
    };
    let engine = super::engine(store, engines, &enrollment.scenario, version)?;
    let contact = store
        .contact(&enrollment.contact)
        .map_err(store_err)?
        .unwrap_or_else(|| Contact::bare(&enrollment.contact));
    let history = history_for(store, &engine, contact.id(), &enrollment.scenario)?;
    // A wake naming a step the scenario version does not have cannot run: an error, so
    // `fire` keeps it as a dead letter with its reason (a stale timer is no error).
    let transition = engine
        .try_handle(
            &enrollment,
            &contact,
            &history,
            Input::Wake {
                step: &wake.step,
                at: wake.at,
            },
            now,
        )
        .map_err(|e| RuntimeError::BadInput {
            field: "step".into(),
            message: e.to_string(),
        })?;
    Ok(Some(TimerStep {
        expected: enrollment.version,
        contact: enrollment.contact,
        scenario: enrollment.scenario,
        version,
        transition,
    }))
}

impl<S> Unit<'_, S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Fires `wake` inside a unit of several timers: as [`Unit::fire_timer`], with its
    /// timer consumed and its step kept in `steps` to be written with the others when it
    /// can be (a plain step: no contact change, no winner rule to arm), else written now,
    /// after what waits.
    fn fire_in_turn(
        &mut self,
        wake: &Wake,
        now: DateTime<Utc>,
        ahead: &mut Option<super::ahead::Ahead>,
        steps: &mut Steps,
        taken: &mut Taken,
    ) -> Result<(), RuntimeError> {
        // A step that reads what waits (the same contact or enrollment) reads it written.
        if steps.touches(wake) {
            self.write_steps(steps)?;
        }
        let lateness = now
            .signed_duration_since(wake.at)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6;
        let handed = ahead.as_mut().and_then(|a| a.take(wake));
        taken.offered += u64::from(handed.is_some());
        let step = match handed.and_then(|a| a.still_holds(self)) {
            Some(step) => {
                taken.used += 1;
                step
            }
            None => timer_step(self.store, self.engines, wake, self.now)?,
        };
        steps.consumed.push(wake.clone());
        let Some(step) = step else {
            return Ok(());
        };
        if step.contact != wake.contact {
            // An enrollment whose contact is not its timer's. What waits may concern that
            // contact (which `touches` could not tell from the timer): written first, and
            // the step computed again after it. The batch's reader stops at once (it does
            // not track that contact: a later timer of it in this unit is computed here,
            // after this write).
            if let Some(ahead) = ahead.as_mut() {
                ahead.stop();
            }
            self.write_steps(steps)?;
            return match timer_step(self.store, self.engines, wake, self.now)? {
                Some(step) => self.write_step(wake, lateness, step),
                None => Ok(()),
            };
        }
        if step.transition.is_noop() {
            // Nothing to write but the warning.
            return self.write_step(wake, lateness, step);
        }
        let plain = step.transition.contact.is_none()
            && self
                .engine(&step.scenario, step.version)?
                .winner_steps()
                .next()
                .is_none();
        if !plain {
            self.write_steps(steps)?;
            return self.write_step(wake, lateness, step);
        }
        if let Some(p) = self.pending.as_deref_mut() {
            p.lateness(lateness);
        }
        steps.steps.push(step);
        Ok(())
    }

    /// Writes `step` now (its timer is already consumed): a stale one is only warned about,
    /// another counts its lateness.
    fn write_step(
        &mut self,
        wake: &Wake,
        lateness: f64,
        step: TimerStep,
    ) -> Result<(), RuntimeError> {
        if step.transition.is_noop() {
            tracing::warn!(enrollment = %wake.enrollment, step = %wake.step, due = %wake.at, "stale timer dropped");
        } else if let Some(p) = self.pending.as_deref_mut() {
            p.lateness(lateness);
        }
        self.apply(
            &step.scenario,
            step.version,
            Some(step.expected),
            step.transition,
        )?;
        Ok(())
    }

    /// Writes what `steps` holds, together, and empties it.
    fn write_steps(&mut self, steps: &mut Steps) -> Result<(), RuntimeError> {
        if steps.consumed.is_empty() && steps.steps.is_empty() {
            return Ok(());
        }
        let writes: Vec<StepWrite<'_>> = steps
            .steps
            .iter()
            .map(|s| StepWrite {
                scenario: &s.scenario,
                scenario_version: s.version,
                expected: s.expected,
                transition: &s.transition,
            })
            .collect();
        self.store
            .commit_steps(&steps.consumed, &writes, self.now)
            .map_err(store_err)?;
        for mut s in steps.steps.drain(..) {
            self.count_committed(&s.scenario, s.version, &mut s.transition);
        }
        steps.consumed.clear();
        Ok(())
    }

    /// Fires `wake`, `lateness` seconds after its due time (counted when the timer moves its
    /// enrollment: a duplicated or stale one is not a firing): from the step computed ahead
    /// when it still holds, else from what the unit reads.
    /// `fired` tells how the step was had (of the last attempt).
    fn fire_timer(
        &mut self,
        wake: &Wake,
        lateness: f64,
        ahead: Option<super::ahead::AheadStep>,
        fired: &mut Fired,
    ) -> Result<(), RuntimeError> {
        // The timer is consumed in the same unit as the transition it causes.
        self.store.cancel(wake).map_err(store_err)?;
        *fired = Fired::default();
        let step = match ahead.and_then(|a| a.still_holds(self)) {
            Some(step) => {
                fired.used_ahead = true;
                step
            }
            None => timer_step(self.store, self.engines, wake, self.now)?,
        };
        let Some(step) = step else {
            return Ok(());
        };
        fired.foreign_contact = step.contact != wake.contact;
        self.write_step(wake, lateness, step)
    }
}
