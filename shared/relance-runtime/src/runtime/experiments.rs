//! Experiments at run time (DESIGN §3.1): each entry's conversion watch, armed at entry and
//! consumed by the activity event that converts it; the winner checks of variant steps,
//! armed at a step's first send and run on schedule as scenario due slots (beside the
//! launches, in every store); and the winners found, handed to the engine through history.

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::contact::{ActivityEvent, History};
use relance_core::engine::{Effect, Engine, Enrollment};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{ConversionWatch, Store};
use relance_core::{instant, winner};

use super::{RuntimeError, Unit, store_err};

/// Fills the winners found so far for a scenario whose engine has winner rules.
pub(super) fn fill_winners<S: Store>(
    store: &mut S,
    engine: &Engine,
    scenario: &str,
    history: &mut History,
) -> Result<(), RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    for (step, _, _) in engine.winner_steps() {
        if let Some(message) = store
            .setting(&winner::winner_setting(scenario, step))
            .map_err(store_err)?
        {
            history.winners.insert(step.to_string(), message);
        }
    }
    Ok(())
}

impl<S> Unit<'_, S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Arms the conversion watch of an entry (held out or not) when its scenario measures
    /// conversions.
    pub(super) fn watch_entry(
        &mut self,
        engine: &Engine,
        version: u32,
        enrollment: &Enrollment,
    ) -> Result<(), RuntimeError> {
        let Some(conversion) = &engine.scenario().conversion else {
            return Ok(());
        };
        let until = conversion.until(enrollment.entered_at, engine.scenario().timezone);
        // A window reaching past 9999-12-31 ends there.
        let until = instant::check(until).unwrap_or_else(|_| instant::max());
        let watch = ConversionWatch {
            scenario: enrollment.scenario.clone(),
            version,
            contact: enrollment.contact.clone(),
            enrollment: enrollment.id.clone(),
            entered_at: enrollment.entered_at,
            until,
        };
        self.store.watch_conversion(&watch).map_err(store_err)
    }

    /// Journals the conversions an activity event makes: each of the contact's entries
    /// whose window holds the event's instant (both ends included) and whose scenario's
    /// `conversion` it matches converts, once (its watch is consumed). Watches whose window
    /// ended before now are dropped on the way.
    pub(super) fn convert(
        &mut self,
        contact: &str,
        event: &ActivityEvent,
    ) -> Result<(), RuntimeError> {
        for watch in self.store.conversion_watches(contact).map_err(store_err)? {
            if watch.until < self.now && watch.until < event.at {
                self.store.end_conversion_watch(&watch).map_err(store_err)?;
                continue;
            }
            if event.at < watch.entered_at || event.at > watch.until {
                continue;
            }
            let engine = match self.engine(&watch.scenario, watch.version) {
                Ok(e) => e,
                // The scenario is gone: its watches go with it.
                Err(RuntimeError::UnknownScenario(_)) => {
                    self.store.end_conversion_watch(&watch).map_err(store_err)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(conversion) = &engine.scenario().conversion else {
                continue;
            };
            if !conversion.matches(event, engine.scenario().timezone) {
                continue;
            }
            let mut record = Record::new(event.at, contact, RecordKind::Converted);
            record.enrollment = Some(watch.enrollment.clone());
            record.value = conversion.value_of(event);
            self.store.end_conversion_watch(&watch).map_err(store_err)?;
            self.record(&watch.scenario, record)?;
            if let Some(p) = self.pending.as_deref_mut() {
                // The contact's experiment arm, by the buckets the engine drew it with (no
                // read of its path).
                let held_out = engine.scenario().holdout.is_some_and(|h| {
                    let bucket = relance_core::experiment::bucket(
                        &watch.scenario,
                        relance_core::experiment::HOLDOUT_STEP,
                        contact,
                    );
                    u32::from(bucket) < h.basis_points
                });
                let control =
                    (self.engines.policy.holdout.as_ref()).is_some_and(|g| g.holds(contact));
                p.conversion(
                    &watch.scenario,
                    crate::metrics::conversion_path(held_out, control),
                );
            }
        }
        Ok(())
    }

    /// Arms the winner check of each step with a winner rule that a transition sent, at its
    /// first send: the check runs `after` later, then daily until a winner is found.
    pub(super) fn arm_winner_checks(
        &mut self,
        scenario: &str,
        engine: &Engine,
        effects: &[Effect],
    ) -> Result<(), RuntimeError> {
        for effect in effects {
            let Effect::Send(send) = effect else {
                continue;
            };
            let Some((step, _, rule)) = engine.winner_steps().find(|(s, ..)| *s == send.step)
            else {
                continue;
            };
            let key = (scenario.to_string(), step.to_string());
            if self.engines.armed_winners.contains(&key) {
                continue;
            }
            let armed = winner::armed_setting(scenario, step);
            if self.store.setting(&armed).map_err(store_err)?.is_some() {
                // Remembered only once read back: a unit that fails leaves nothing behind.
                self.engines.armed_winners.insert(key);
                continue;
            }
            self.store
                .put_setting(&armed, &self.now.to_rfc3339(), self.now)
                .map_err(store_err)?;
            let first = rule.after.add_to(self.now, engine.scenario().timezone);
            match instant::check(first) {
                Ok(first) => self
                    .store
                    .set_launch(scenario, &winner::slot(step), Some(first))
                    .map_err(store_err)?,
                Err(_) => {
                    tracing::warn!(
                        scenario,
                        step,
                        "the winner check would fall past 9999-12-31; it never runs"
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs a step's winner check due at `at`: the tallies come from the journal; a winner
    /// is kept (a setting the engine reads through history) and journaled `winner`; without
    /// one the check runs again a day later.
    pub(super) fn check_winner(
        &mut self,
        scenario: &str,
        step: &str,
        at: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let slot = winner::slot(step);
        self.store
            .set_launch(scenario, &slot, None)
            .map_err(store_err)?;
        let Some(entry) = self.store.scenario(scenario).map_err(store_err)? else {
            return Ok(());
        };
        let Some(version) = entry.active_version else {
            return Ok(());
        };
        let engine = self.engine(scenario, version)?;
        let Some((_, variants, rule)) = engine.winner_steps().find(|(s, ..)| *s == step) else {
            // The active version no longer tests this step.
            return Ok(());
        };
        let setting = winner::winner_setting(scenario, step);
        if self.store.setting(&setting).map_err(store_err)?.is_some() {
            return Ok(());
        }
        let records = self.store.records(scenario, None).map_err(store_err)?;
        let tallies = winner::tally(step, variants, &rule.metric, &records);
        match winner::decide(rule, &tallies) {
            Some(i) => {
                let message = tallies[i].message.clone();
                self.store
                    .put_setting(&setting, &message, self.now)
                    .map_err(store_err)?;
                let mut record = Record::new(at, "", RecordKind::Winner).step(step);
                record.message = Some(message);
                self.record(scenario, record)?;
            }
            None => {
                if let Some(next) = at
                    .checked_add_signed(TimeDelta::days(1))
                    .and_then(|t| instant::check(t).ok())
                {
                    self.store
                        .set_launch(scenario, &slot, Some(next))
                        .map_err(store_err)?;
                }
            }
        }
        Ok(())
    }
}
