//! `Runtime`: the engine run for real over a store. Each input (a contact change, an activity
//! event, an engagement, a launch, a due timer, launch or inactivity check) is one unit of
//! work: load through the ports, call the pure engine, write the effects back, commit.
//! A crash between two units loses nothing: the next tick finds the timer still there.
//!
//! The inputs are split by what they concern, one private module each: `scenarios`
//! (versions, lifecycle, settings), `contacts` (contact writes, activity, engagement,
//! consent), `launches` (launches, imports, entries), `ticks` (due launches, inactivity
//! checks, timers, dead letters, retention), `experiments` (conversion watches, winner
//! checks); `error` says why an input was refused. This
//! module holds the runtime, its units of work and the engine cache.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use relance_core::History;
use relance_core::consent::{self, source};
use relance_core::contact::Contact;
use relance_core::engine::{Engine, Transition};
use relance_core::journal::{JournalCounts, Record};
use relance_core::ports::{ScenarioEntry, Status, Store};
use relance_core::report::Report;
use relance_core::validate;

use crate::metrics::Pending;

mod ahead;
mod contacts;
mod error;
mod experiments;
mod launches;
mod scenarios;
mod ticks;

pub use ahead::{StepReader, StepsAhead};
pub use error::RuntimeError;
pub(crate) use error::store_err;
pub use launches::{ImportedContact, LaunchReport, next_launch};
use scenarios::Engines;
pub use scenarios::{POLICY_REFRESH, PutOutcome};
pub(crate) use ticks::TIMER_BATCH;
pub use ticks::{DUE_ITEM_ATTEMPTS, PURGE_BATCH, TickReport};

/// The engine over a store.
#[derive(Debug)]
pub struct Runtime<S> {
    store: S,
    engines: Engines,
    /// Who drives this runtime, for the consent log (`system`, `cli`, `api`, a token's name).
    actor: String,
    /// The journal records of committed units not yet taken, when they are reported (see
    /// [`Runtime::report_journal`]).
    reported: Option<Reported>,
    /// The metrics of the unit of work in progress, emitted when it commits.
    pending: Pending,
    /// The group commit in progress, when units are grouped ([`Runtime::grouped`]).
    group: Option<Group>,
    /// The thread that computes due timers' steps ahead, when one is set
    /// ([`Runtime::read_steps_ahead`]).
    steps_reader: Option<StepReader>,
    /// How the steps of due timers came to be written (see [`StepsAhead`]).
    steps_ahead: StepsAhead,
}

/// A group commit in progress: the units done since the group's last commit, whose metrics
/// and reported records wait for it.
#[derive(Debug)]
struct Group {
    /// Units per commit: the group commits and opens again when it holds this many.
    limit: usize,
    /// Units done since the last commit.
    units: usize,
    /// Where the reported records stood at the last commit. (The metrics need no mark: every
    /// count waiting in a group is the group's, since each commit emits them all.)
    reported_mark: usize,
    /// Why a commit of this group failed (its units are lost; the caller is told).
    failed: Option<String>,
}

/// Journal records reported and not yet taken, with their scenario (shared between the
/// records of one scenario, so reporting costs no allocation per record).
#[derive(Debug, Default)]
struct Reported {
    records: Vec<(Arc<str>, Record)>,
    /// The scenario of the last record, kept across drains.
    last: Option<Arc<str>>,
}

impl Reported {
    fn push(&mut self, scenario: &str, record: Record) {
        let scenario = match &self.last {
            Some(s) if **s == *scenario => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(scenario);
                self.last = Some(s.clone());
                s
            }
        };
        self.records.push((scenario, record));
    }
}

/// One unit of work in progress: the store (inside its transaction) and the engine cache.
struct Unit<'a, S> {
    store: &'a mut S,
    engines: &'a mut Engines,
    now: DateTime<Utc>,
    actor: &'a str,
    /// Where the unit's journal records go when they are reported (dropped with the unit
    /// if it fails).
    reported: Option<&'a mut Reported>,
    /// Where the unit's metrics wait for its commit, when they are gathered
    /// ([`crate::metrics::enable`]).
    pending: Option<&'a mut Pending>,
}

fn engine<S: Store>(
    store: &mut S,
    engines: &mut Engines,
    id: &str,
    version: u32,
) -> Result<Arc<Engine>, RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    if let Some(e) = engines.by_version.get(id).and_then(|v| v.get(&version)) {
        return Ok(e.clone());
    }
    let source = store
        .scenario_source(id, version)
        .map_err(store_err)?
        .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
    let (scenario, _) =
        validate::parse_stored(&source.text, source.format.into()).map_err(|problems| {
            RuntimeError::Invalid {
                id: id.to_string(),
                problems,
            }
        })?;
    let e = Arc::new(Engine::new(scenario).with_policy(engines.policy.clone()));
    engines
        .by_version
        .entry(id.to_string())
        .or_default()
        .insert(version, e.clone());
    Ok(e)
}

/// The contact's past for one scenario, the parts its engine reads
/// ([`relance_core::Engine::history_needs`]), with every
/// scenario's sends when the engine's policy caps them, the winners found when the scenario
/// tests variants with a winner rule, and every scenario's opens and clicks when a delay runs
/// `at: best`.
fn history_for<S: Store>(
    store: &mut S,
    engine: &Engine,
    contact: &str,
    scenario: &str,
) -> Result<History, RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let mut history = store
        .history(contact, scenario, engine.history_needs())
        .map_err(store_err)?;
    if engine.needs_contact_sends() {
        history.contact_sends = store.contact_sends(contact).map_err(store_err)?;
    }
    experiments::fill_winners(store, engine, scenario, &mut history)?;
    if engine.needs_contact_engagement() {
        history.contact_engagement = store.contact_engagement(contact).map_err(store_err)?;
    }
    Ok(history)
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// A runtime over `store`.
    pub fn new(store: S) -> Self {
        Runtime {
            store,
            engines: Engines::default(),
            actor: "system".into(),
            reported: None,
            pending: Pending::default(),
            group: None,
            steps_reader: None,
            steps_ahead: StepsAhead::default(),
        }
    }

    /// Counts `more` units of work toward the open group's limit (a unit that did the work
    /// of several), committing the group when it reaches it. Nothing outside a group.
    fn count_more_units(&mut self, more: usize) {
        if let Some(group) = self.group.as_mut() {
            group.units += more;
            if group.units >= group.limit {
                self.commit_group(true);
            }
        }
    }

    /// Runs `work` with its units of work grouped: each unit stays all-or-nothing (one that
    /// fails rolls back alone), and they are made durable together, `limit` units per commit
    /// of the store (a group commit, [`Store::begin_group`]), the last when `work` returns.
    /// One commit for many units is what makes a busy runner fast: on SQLite the commit, not
    /// the units' work, was most of a small unit's cost.
    ///
    /// Returns `work`'s result with whether every commit of the group succeeded. When one
    /// fails, the units since the previous commit are lost whole (their metrics and reported
    /// records dropped with them) and no unit runs after it in this group (each is refused
    /// with a store error), so whatever `work` did after the last good commit did not happen;
    /// the inputs that made those units are still there to run again (a timer stays due).
    /// What `work` learnt from its units must not be told anyone before this returns, and is
    /// not true when the commit failed: callers reply after it, from the second value.
    /// Inside a group already, `work` simply joins it (and the outer group answers).
    pub fn grouped<T>(
        &mut self,
        limit: usize,
        work: impl FnOnce(&mut Self) -> T,
    ) -> (T, Result<(), RuntimeError>) {
        if self.group.is_some() {
            return (work(self), Ok(()));
        }
        if let Err(e) = self.store.begin_group() {
            // No group: the units run one commit each, as outside a group.
            tracing::warn!(error = %e, "cannot open a group commit; committing unit by unit");
            return (work(self), Ok(()));
        }
        self.group = Some(Group {
            limit: limit.max(1),
            units: 0,
            reported_mark: self.reported.as_ref().map_or(0, |r| r.records.len()),
            failed: None,
        });
        let out = work(self);
        self.commit_group(false);
        match self.group.take().and_then(|g| g.failed) {
            None => (out, Ok(())),
            Some(why) => (out, Err(RuntimeError::Store(why.into()))),
        }
    }

    /// Commits the open group, and opens the next when `reopen` and it committed: emits the
    /// metrics of its units if it committed, drops them and their reported records if not.
    fn commit_group(&mut self, reopen: bool) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        if group.failed.is_some() {
            return;
        }
        match self.store.commit_group() {
            Ok(()) => {
                self.pending.emit();
                if reopen && let Err(e) = self.store.begin_group() {
                    group.failed = Some(e.to_string());
                }
            }
            Err(e) => {
                if let Some(r) = self.reported.as_mut() {
                    r.records.truncate(group.reported_mark);
                }
                self.pending.truncate(0);
                tracing::error!(error = %e, units = group.units, "group commit failed: its units are lost and run again later");
                group.failed = Some(e.to_string());
            }
        }
        group.units = 0;
        group.reported_mark = self.reported.as_ref().map_or(0, |r| r.records.len());
    }

    /// Keeps the journal records of every unit of work that commits from now on, in the
    /// order written, for [`Runtime::drain_journal`]: a play reports them as they happen
    /// without reading the journal back.
    pub fn report_journal(&mut self) {
        self.reported.get_or_insert_with(Reported::default);
    }

    /// Hands the journal records reported since the last call to `each`, as (scenario,
    /// record), in the order written.
    pub fn drain_journal(&mut self, mut each: impl FnMut(&str, &Record)) {
        if let Some(r) = self.reported.as_mut() {
            for (scenario, record) in r.records.drain(..) {
                each(&scenario, &record);
            }
        }
    }

    /// Names who drives the runtime from now on (`cli`, `api`, an API token's name): the
    /// actor of the consent events that contact writes, imports and explicit calls append.
    pub fn set_actor(&mut self, actor: &str) {
        self.actor = actor.to_string();
    }

    /// Who drives the runtime (see [`Runtime::set_actor`]).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The store, for reads the runtime does not wrap.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    fn unit<T>(
        &mut self,
        now: DateTime<Utc>,
        work: impl FnOnce(&mut Unit<'_, S>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        self.try_unit(now, work)?
    }

    /// A unit of work that tells the store's failure to begin or commit it (the outer error:
    /// nothing is known of the work, which may even be committed) from the work's own (inner).
    fn try_unit<T>(
        &mut self,
        now: DateTime<Utc>,
        work: impl FnOnce(&mut Unit<'_, S>) -> Result<T, RuntimeError>,
    ) -> Result<Result<T, RuntimeError>, RuntimeError> {
        // Stored instants keep microseconds: an instant with more precision would not match
        // itself once read back (a timer's due time against the enrollment's).
        let now = now.trunc_subsecs(6);
        // After a failed group commit nothing more runs in the group (see `grouped`).
        if let Some(why) = self.group.as_ref().and_then(|g| g.failed.as_ref()) {
            return Err(RuntimeError::Store(
                format!("not run: the group commit failed: {why}").into(),
            ));
        }
        self.engines.refresh_policy(&mut self.store, now)?;
        let engines = &mut self.engines;
        let actor = self.actor.as_str();
        let mark = self.reported.as_ref().map_or(0, |r| r.records.len());
        let reported = self.reported.as_mut();
        let metered = crate::metrics::enabled();
        let pending_mark = self.pending.len();
        let pending = metered.then_some(&mut self.pending);
        let result = self
            .store
            .atomically(|store| {
                work(&mut Unit {
                    store,
                    engines,
                    now,
                    actor,
                    reported,
                    pending,
                })
            })
            .map_err(store_err);
        // The records of a unit that did not commit were never written, nor counted. In a
        // group, a unit's counts wait for the group's commit.
        if matches!(result, Ok(Ok(_))) {
            match self.group.as_mut() {
                None => self.pending.emit(),
                Some(group) => {
                    group.units += 1;
                    if group.units >= group.limit {
                        self.commit_group(true);
                    }
                }
            }
        } else {
            if let Some(r) = self.reported.as_mut() {
                r.records.truncate(mark);
            }
            self.pending.truncate(pending_mark);
            // The store failed the unit itself (not its work): in a group, that may have
            // ended the group's transaction, so the group is committed (or found lost) now.
            if result.is_err() && self.group.is_some() {
                self.commit_group(true);
            }
        }
        result
    }

    /// The journal counts of a scenario.
    pub fn journal(&mut self, id: &str) -> Result<JournalCounts, RuntimeError> {
        if self.store.scenario(id).map_err(store_err)?.is_none() {
            return Err(RuntimeError::UnknownScenario(id.to_string()));
        }
        let mut counts = JournalCounts::default();
        for r in self.store.records(id, None).map_err(store_err)? {
            counts.add(&r);
        }
        Ok(counts)
    }

    /// The experiment report of a scenario (DESIGN §3.1), from its journal records; the
    /// active version (else the latest) gives the steps' order, paths and variants.
    pub fn report(&mut self, id: &str) -> Result<Report, RuntimeError> {
        let entry = self
            .store
            .scenario(id)
            .map_err(store_err)?
            .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
        let version = entry.active_version.unwrap_or(entry.latest_version);
        let engine = self.engine(id, version)?;
        let records = self.store.records(id, None).map_err(store_err)?;
        // The workspace's global control group, as the policy stands now.
        let policy = self
            .store
            .setting(relance_core::ports::SETTING_POLICY)
            .map_err(store_err)?
            .and_then(|t| scenarios::parse_policy(&t).ok());
        Ok(Report::from_records_with(
            engine.scenario(),
            &records,
            policy.as_ref().and_then(|p| p.holdout.as_ref()),
        ))
    }

    /// One contact's path through a scenario, with timestamps.
    pub fn path(&mut self, id: &str, contact: &str) -> Result<Vec<Record>, RuntimeError> {
        if self.store.scenario(id).map_err(store_err)?.is_none() {
            return Err(RuntimeError::UnknownScenario(id.to_string()));
        }
        self.store.records(id, Some(contact)).map_err(store_err)
    }
}

impl<S> Unit<'_, S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// A stored scenario, or `UnknownScenario`.
    fn entry(&mut self, id: &str) -> Result<ScenarioEntry, RuntimeError> {
        self.store
            .scenario(id)
            .map_err(store_err)?
            .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))
    }

    fn engine(&mut self, id: &str, version: u32) -> Result<Arc<Engine>, RuntimeError> {
        engine(self.store, self.engines, id, version)
    }

    /// Journals a record the runtime writes itself (engagement, conversions, winners), and
    /// reports it like a transition's.
    fn record(&mut self, scenario: &str, record: Record) -> Result<(), RuntimeError> {
        self.store.journal(scenario, &record).map_err(store_err)?;
        if let Some(p) = self.pending.as_deref_mut() {
            p.record(scenario, &record, |_| None);
        }
        if let Some(r) = self.reported.as_deref_mut() {
            r.push(scenario, record);
        }
        Ok(())
    }

    fn active(&mut self) -> Result<Vec<(String, u32, Arc<Engine>)>, RuntimeError> {
        let mut out = Vec::new();
        for entry in self
            .store
            .scenarios(Some(Status::Active))
            .map_err(store_err)?
        {
            if let Some(v) = entry.active_version {
                let e = self.engine(&entry.id, v)?;
                out.push((entry.id, v, e));
            }
        }
        Ok(out)
    }

    /// Writes a transition's effects and the enrollment (conditionally on its version);
    /// returns the contact when the transition changed it.
    fn apply(
        &mut self,
        scenario: &str,
        version: u32,
        expected: Option<u64>,
        mut t: Transition,
    ) -> Result<Option<Contact>, RuntimeError> {
        if t.is_noop() {
            return Ok(None);
        }
        // A scenario's update_profile may opt the contact out (the engine refuses opt-ins over
        // an opt-out): the trail records it before the contact is written. What changed is
        // told from the contact the transition was computed from (not from a later read).
        // A contact that is not stored (a timer's enrollment whose contact is gone: the engine
        // ran on a bare one) logs nothing; the store does not write it either.
        let stored;
        let read = match (&t.contact_read, &t.contact) {
            (Some(read), Some(after)) => self
                .store
                .contact_exists(after.id())
                .map_err(store_err)?
                .then_some(read),
            (None, Some(after)) => {
                stored = self.store.contact(after.id()).map_err(store_err)?;
                stored.as_ref()
            }
            _ => None,
        };
        if let Some(after) = &t.contact
            && let Some(before) = read
        {
            let actor = format!("scenario:{scenario}");
            for c in consent::diff(before, after) {
                let event = c.event(after.id(), source::SCENARIO, &actor, self.now);
                self.store.append_consent(&event).map_err(store_err)?;
            }
        }
        self.store
            .commit_transition(scenario, version, expected, &t, self.now)
            .map_err(store_err)?;
        if t.effects
            .iter()
            .any(|e| matches!(e, relance_core::engine::Effect::Send(_)))
        {
            let engine = self.engine(scenario, version)?;
            if engine.winner_steps().next().is_some() {
                self.arm_winner_checks(scenario, &engine, &t.effects)?;
            }
        }
        self.count_committed(scenario, version, &mut t);
        Ok(t.contact)
    }

    /// Gives the records of `t`, just committed, to the unit's metrics and report (both kept
    /// until the unit commits, and dropped with it).
    fn count_committed(&mut self, scenario: &str, version: u32, t: &mut Transition) {
        if let Some(p) = self.pending.as_deref_mut() {
            for record in t.records() {
                // A send the engine failed names no channel: its step's message does (the
                // engine is looked up only then, from the cache).
                let channel_of = |step: &str| {
                    let engine = engine(self.store, self.engines, scenario, version).ok()?;
                    crate::metrics::channel_of(engine.scenario(), step)
                };
                p.record(scenario, record, channel_of);
            }
        }
        if let Some(r) = self.reported.as_deref_mut() {
            // The records are taken out in place: moving every effect out of the list (a send
            // is large) would copy far more than the records.
            for effect in &mut t.effects {
                if let relance_core::engine::Effect::Record(record) = effect {
                    let empty = Record::new(record.at, "", record.kind);
                    r.push(scenario, std::mem::replace(record, empty));
                }
            }
        }
    }
}
