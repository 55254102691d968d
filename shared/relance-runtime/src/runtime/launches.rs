//! Entries: launches (asked for, recurring or fixed-date), imports and their after_import
//! launches, and the entry of one contact.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::consent::source;
use relance_core::contact::Contact;
use relance_core::engine::{Engine, Entry, EntryRequest, Transition};
use relance_core::ports::{ContactChange, Status, Store};
use relance_core::scenario::{ImportSubset, Launch, Scenario};
use relance_core::wire::LaunchDetail;
use serde::Serialize;

use super::ahead::EntriesAhead;
use super::contacts::Origin;
use super::{Runtime, RuntimeError, Unit, history_for, store_err};

/// What a launch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaunchReport {
    /// Contacts that entered.
    pub entered: u64,
    /// Contacts that did not, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Ids asked for that are not stored contacts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

/// The result of writing one contact during an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedContact {
    /// The contact id.
    pub id: String,
    /// How it changed.
    pub change: ContactChange,
    /// Consent values of the row that were ignored because an opt-out or a suppression
    /// stands (each is a `kept` entry in the consent log).
    pub consent_kept: usize,
}

/// How many entries a launch keeps before writing them together: two statements of 32 rows
/// a table on SQLite. With 256, a drip of 100,000 contacts spent 0.83–0.93 s in its launches
/// against 0.80 s (three alternating runs): the reader, slower at an entry than the runner
/// at writing one, has less to make up after each write.
const ENTRIES_PER_WRITE: usize = 64;

/// A launch's entries waiting to be written together ([`Store::commit_entries`]): on SQLite,
/// many contacts' rows per statement instead of a statement per row. Only a run of plain
/// entries waits, each of a contact not already waiting: an entry that changes the contact,
/// or one into a scenario that watches conversions or picks winners, is written by
/// [`Unit::enter_as`] after the ones before it. What the launch reads in between concerns
/// other contacts (the next one's row, running enrollment, entry mark and history), which
/// the waiting entries do not touch.
struct Entering {
    /// Whether the scenario's entries may wait: the store writes them together, and nothing
    /// is written with each beside its transition (a conversion watch, a winner check).
    allowed: bool,
    transitions: Vec<Transition>,
}

impl Entering {
    /// For a launch of `engine`'s scenario into a store that writes entries `together` or
    /// not ([`Store::writes_entries_together`]).
    fn for_engine(engine: &Engine, together: bool) -> Entering {
        Entering {
            allowed: together
                && engine.scenario().conversion.is_none()
                && engine.winner_steps().next().is_none(),
            transitions: Vec::new(),
        }
    }

    /// Whether `contact`'s entry is waiting (at most [`ENTRIES_PER_WRITE`] are).
    fn holds(&self, contact: &str) -> bool {
        self.transitions
            .iter()
            .any(|t| t.enrollment.contact == contact)
    }

    /// Whether `t` may wait: a plain entry (the contact unchanged) of a contact not waiting.
    fn takes(&self, t: &Transition) -> bool {
        self.allowed && t.contact.is_none() && !t.is_noop() && !self.holds(&t.enrollment.contact)
    }
}

/// The first recurring or fixed-date occurrence strictly after `after`, in zone `tz`.
pub fn next_launch(s: &Scenario, tz: chrono_tz::Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match &s.launch {
        Launch::Recurring(schedule) => schedule.next_after(tz, after),
        Launch::FixedDates(dates) => dates
            .iter()
            .map(|d| d.resolve(tz))
            .filter(|t| *t > after)
            .min(),
        _ => None,
    }
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Launches an active scenario for some contacts, or for its audience.
    pub fn launch(
        &mut self,
        detail: LaunchDetail,
        now: DateTime<Utc>,
    ) -> Result<LaunchReport, RuntimeError> {
        let LaunchDetail { scenario, contacts } = detail;
        // Each contact's entry computed on the reader's thread while this one writes, when the
        // launch runs in a group (see `ahead`).
        let (contacts, mut ahead) = self.read_entries_ahead(&scenario, contacts, now);
        let (mut offered, mut used) = (0, 0);
        let launched = self.unit(now, |u| {
            let entry = u.entry(&scenario)?;
            let version = match (entry.status, entry.active_version) {
                (Status::Active, Some(v)) => v,
                (status, _) => {
                    return Err(RuntimeError::NotActive {
                        id: entry.id.clone(),
                        status: status.as_str(),
                    });
                }
            };
            // The ids asked for are taken, not copied (a play launches a million in chunks).
            let ids: Arc<[String]> = match contacts {
                Some(ids) => ids,
                None => Arc::from(u.store.contact_ids().map_err(store_err)?),
            };
            let mut report = LaunchReport::default();
            let together = u.store.writes_entries_together();
            let mut entering = Entering::for_engine(&*u.engine(&entry.id, version)?, together);
            for id in ids.iter() {
                // A contact listed again reads what its first entry wrote.
                if entering.holds(id) {
                    u.write_entering(&entry.id, version, &mut entering)?;
                }
                let computed = ahead
                    .as_mut()
                    .and_then(|ahead| ahead.take(id, version))
                    .and_then(|computed| {
                        offered += 1;
                        computed.still_holds(u)
                    });
                used += u64::from(computed.is_some());
                let decided = match computed {
                    Some(Some(computed)) => Some(computed),
                    Some(None) => None,
                    None => match u.store.contact(id).map_err(store_err)? {
                        Some(c) => {
                            Some(entry_of(u.store, u.engines, &entry.id, version, &c, u.now)?)
                        }
                        None => None,
                    },
                };
                match decided {
                    Some(decided) => u.enter_in_turn(
                        &entry.id,
                        version,
                        id,
                        decided,
                        &mut report,
                        &mut entering,
                    )?,
                    None => report.not_found.push(id.clone()),
                }
            }
            u.write_entering(&entry.id, version, &mut entering)?;
            Ok(report)
        });
        // Counted for a launch that committed (one that failed wrote nothing).
        if launched.is_ok() {
            self.steps_ahead.offered += offered;
            self.steps_ahead.used += used;
        }
        self.end_ahead(ahead.map(EntriesAhead::into_ahead));
        launched
    }

    /// Writes imported contacts (merged into stored ones) and launches the active
    /// `after_import` scenarios for the subset each asks for. `progress` is told how many
    /// rows are done.
    pub fn import(
        &mut self,
        contacts: &[Contact],
        now: DateTime<Utc>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<ImportedContact>, RuntimeError> {
        // The after_import scenarios to launch, read once.
        let mut targets = Vec::new();
        for entry in self
            .store
            .scenarios(Some(Status::Active))
            .map_err(store_err)?
        {
            let Some(version) = entry.active_version else {
                continue;
            };
            if let Launch::AfterImport(subset) = self.engine(&entry.id, version)?.scenario().launch
            {
                targets.push((entry.id, version, subset));
            }
        }
        // One unit of work for the whole file: a crash or a failure leaves no half import and
        // no imported contact that missed its after_import launch.
        let results = self.unit(now, |u| {
            let mut results: Vec<ImportedContact> = Vec::with_capacity(contacts.len());
            let mut entered = std::collections::HashSet::new();
            for chunk in contacts.chunks(1000) {
                for c in chunk {
                    let origin = Origin {
                        source: source::IMPORT,
                        actor: u.actor,
                    };
                    let (_, change, consent_kept) =
                        u.merge_contact_redone_on_conflict(c, origin)?;
                    results.push(ImportedContact {
                        id: c.id().to_string(),
                        change,
                        consent_kept,
                    });
                }
                progress(results.len());
            }
            for (scenario, version, subset) in &targets {
                for r in &results {
                    let wanted = match subset {
                        ImportSubset::All => true,
                        ImportSubset::Added => r.change == ContactChange::Added,
                        ImportSubset::Modified => r.change == ContactChange::Modified,
                    };
                    // A contact listed twice in one file enters once.
                    if !wanted || !entered.insert((scenario.clone(), r.id.clone())) {
                        continue;
                    }
                    if let Some(c) = u.store.contact(&r.id).map_err(store_err)? {
                        u.try_enter(scenario, *version, &c, &mut LaunchReport::default())?;
                    }
                }
            }
            Ok(results)
        })?;
        Ok(results)
    }
}

impl<S> Unit<'_, S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    pub(super) fn try_enter(
        &mut self,
        scenario: &str,
        version: u32,
        contact: &Contact,
        report: &mut LaunchReport,
    ) -> Result<(), RuntimeError> {
        let entry = entry_of(
            self.store,
            self.engines,
            scenario,
            version,
            contact,
            self.now,
        )?;
        self.enter_as(scenario, version, contact.id(), entry, report)
    }

    /// Writes `entry`, what the engine decided for `contact` (see [`entry_of`]), or keeps it
    /// in `entering` to be written with the next contacts' (see [`Entering`]).
    fn enter_in_turn(
        &mut self,
        scenario: &str,
        version: u32,
        contact: &str,
        entry: Entry,
        report: &mut LaunchReport,
        entering: &mut Entering,
    ) -> Result<(), RuntimeError> {
        match entry {
            Entry::Entered(t) if entering.takes(&t) => {
                report.entered += 1;
                entering.transitions.push(t);
                if entering.transitions.len() >= ENTRIES_PER_WRITE {
                    self.write_entering(scenario, version, entering)?;
                }
                Ok(())
            }
            other => {
                // Whatever else the unit writes comes after the entries before it.
                self.write_entering(scenario, version, entering)?;
                self.enter_as(scenario, version, contact, other, report)
            }
        }
    }

    /// Writes the entries `entering` holds, together, and empties it.
    fn write_entering(
        &mut self,
        scenario: &str,
        version: u32,
        entering: &mut Entering,
    ) -> Result<(), RuntimeError> {
        if entering.transitions.is_empty() {
            return Ok(());
        }
        self.store
            .commit_entries(scenario, version, &entering.transitions, self.now)
            .map_err(store_err)?;
        for mut t in entering.transitions.drain(..) {
            self.count_committed(scenario, version, &mut t);
        }
        Ok(())
    }

    /// Writes `entry`, what the engine decided for `contact` (see [`entry_of`]).
    pub(super) fn enter_as(
        &mut self,
        scenario: &str,
        version: u32,
        contact: &str,
        entry: Entry,
        report: &mut LaunchReport,
    ) -> Result<(), RuntimeError> {
        match entry {
            Entry::Entered(t) => {
                report.entered += 1;
                self.store
                    .mark_entry(scenario, contact, self.now)
                    .map_err(store_err)?;
                let engine = self.engine(scenario, version)?;
                let entered =
                    (engine.scenario().conversion.is_some()).then(|| t.enrollment.clone());
                self.apply(scenario, version, None, t)?;
                if let Some(enrollment) = entered {
                    self.watch_entry(&engine, version, &enrollment)?;
                }
            }
            Entry::Skipped { reason, record } => {
                *report
                    .skipped
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
                self.record(scenario, record)?;
            }
        }
        Ok(())
    }

    pub(super) fn fire_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let Some(entry) = self.store.scenario(scenario).map_err(store_err)? else {
            return Ok(());
        };
        let Some(version) = entry.active_version else {
            return Ok(());
        };
        let engine = self.engine(scenario, version)?;
        let mut report = LaunchReport::default();
        let mut entering = Entering::for_engine(&engine, self.store.writes_entries_together());
        for id in self.store.contact_ids().map_err(store_err)? {
            let Some(contact) = self.store.contact(&id).map_err(store_err)? else {
                continue;
            };
            if !zone.is_empty() && engine.zone_for(&contact, None).name() != zone {
                continue;
            }
            // Contact ids are distinct: no entry waiting concerns this one.
            let entry = entry_of(
                self.store,
                self.engines,
                scenario,
                version,
                &contact,
                self.now,
            )?;
            self.enter_in_turn(scenario, version, &id, entry, &mut report, &mut entering)?;
        }
        self.write_entering(scenario, version, &mut entering)?;
        let tz = if zone.is_empty() {
            engine.scenario().timezone
        } else {
            zone.parse().unwrap_or(engine.scenario().timezone)
        };
        let next = next_launch(engine.scenario(), tz, self.now.max(at));
        self.store
            .set_launch(scenario, zone, next)
            .map_err(store_err)?;
        Ok(())
    }

    /// Arms the next recurring or fixed-date launch of a version just activated.
    pub(super) fn schedule_launches(
        &mut self,
        scenario: &str,
        version: u32,
    ) -> Result<(), RuntimeError> {
        let engine = self.engine(scenario, version)?;
        let s = engine.scenario();
        let mut zones = vec![String::new()];
        if s.local_time && matches!(s.launch, Launch::Recurring(_) | Launch::FixedDates(_)) {
            // One launch per zone among the contacts, so each gets its local occurrence.
            zones.clear();
            for id in self.store.contact_ids().map_err(store_err)? {
                if let Some(c) = self.store.contact(&id).map_err(store_err)? {
                    let z = engine.zone_for(&c, None).name().to_string();
                    if !zones.contains(&z) {
                        zones.push(z);
                    }
                }
            }
        }
        for zone in zones {
            let tz = if zone.is_empty() {
                s.timezone
            } else {
                zone.parse().unwrap_or(s.timezone)
            };
            let next = next_launch(s, tz, self.now - TimeDelta::microseconds(1));
            self.store
                .set_launch(scenario, &zone, next)
                .map_err(store_err)?;
        }
        Ok(())
    }
}

/// What the engine decides for `contact` entering `scenario` (its `version`) at `now`: reads
/// whether it runs already, its last entry and its history. Reads only.
pub(super) fn entry_of<S: Store>(
    store: &mut S,
    engines: &mut super::scenarios::Engines,
    scenario: &str,
    version: u32,
    contact: &Contact,
    now: DateTime<Utc>,
) -> Result<Entry, RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let engine = super::engine(store, engines, scenario, version)?;
    let (running, mark) = store
        .entry_state(scenario, contact.id())
        .map_err(store_err)?;
    let history = history_for(store, &engine, contact.id(), scenario)?;
    let mut number = itoa::Buffer::new();
    let id = [
        scenario,
        ":",
        contact.id(),
        ":",
        number.format(mark.map_or(1, |m| m.entries + 1)),
    ]
    .concat();
    Ok(engine.enter(EntryRequest {
        contact,
        history: &history,
        running,
        last_entered_at: mark.map(|m| m.last_entered_at),
        enrollment_id: &id,
        now,
    }))
}
