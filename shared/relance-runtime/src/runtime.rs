//! `Runtime`: the engine run for real over a store. Each input (a contact change, an activity
//! event, an engagement, a launch, a due timer, launch or inactivity check) is one unit of
//! work: load through the ports, call the pure engine, write the effects back, commit.
//! A crash between two units loses nothing: the next tick finds the timer still there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use relance_core::consent::{self, ConsentEvent, ConsentRequest, source};
use relance_core::contact::{ActivityEvent, Contact, Engagement, EngagementKind};
use relance_core::engine::{Engine, Entry, EntryRequest, Input, Transition, Wake, profile_changes};
use relance_core::journal::{JournalCounts, Record};
use relance_core::policy::Retained;
use relance_core::ports::{
    ContactChange, Due, InactivityCheck, SETTING_MESSAGES, SETTING_POLICY, ScenarioEntry,
    SourceFormat, Status, Store, UnreadableRow,
};
use relance_core::scenario::{ImportSubset, Launch, Scenario};
use relance_core::schedule::inactivity_deadline;
use relance_core::script::{Happening, ScriptedEvent};
use relance_core::unsubscribe::UnsubscribeClaim;
use relance_core::validate;
use relance_core::wire::{ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use relance_core::{History, Policy, Problem, scenario};
use serde::Serialize;

/// How many rows of history one retention unit of work deletes.
pub const PURGE_BATCH: usize = 5_000;

/// How many due timers one tick takes before looking at the rest again.
pub(crate) const TIMER_BATCH: usize = 500;

/// How many times in a row a due item's work may fail on a store error before the item is
/// kept as a dead letter (as many as the AWS queues' receives before their dead-letter queue).
pub const DUE_ITEM_ATTEMPTS: u32 = 5;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed.
    #[error("store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// No scenario with this id.
    #[error("scenario \"{0}\" not found")]
    UnknownScenario(String),
    /// The scenario has errors (activation refused, or the file does not read).
    #[error("scenario {}: {} error(s): {}", if id.is_empty() { "file" } else { id.as_str() }, problems.iter().filter(|p| p.is_error()).count(),
        problems.iter().filter(|p| p.is_error()).map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The scenario id, when known.
        id: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The lifecycle does not allow this.
    #[error("scenario \"{id}\" is {from}: it cannot become {to}")]
    Lifecycle {
        /// The scenario id.
        id: String,
        /// Its status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// The scenario is not active, so it takes no entries.
    #[error("scenario \"{id}\" is {status}: activate it first")]
    NotActive {
        /// The scenario id.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// A field of the input is wrong.
    #[error("{field}: {message}")]
    BadInput {
        /// Where.
        field: String,
        /// What.
        message: String,
    },
}

/// A bad `idempotency_key`, as the caller's error.
fn bad_key(e: relance_core::wire::WireError) -> RuntimeError {
    RuntimeError::BadInput {
        field: e.field,
        message: e.message,
    }
}

/// Refuses a profile update whose `email` or `phone` a contact write would refuse.
fn check_profile_addresses(
    changes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), RuntimeError> {
    relance_core::contact::check_addresses(&mut changes.clone()).map_err(|e| {
        RuntimeError::BadInput {
            field: match &e {
                relance_core::contact::ContactError::Reserved { key, .. } => {
                    format!("properties.{key}")
                }
                _ => "properties".into(),
            },
            message: e.to_string(),
        }
    })
}

pub(crate) fn store_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> RuntimeError {
    RuntimeError::Store(Box::new(e))
}

/// The instant of an input (`at`, default `now`), refused outside 1970-01-01..9999-12-31.
/// The wire decoders refuse such an `at` already; this keeps callers that build details in
/// code to the same rule, since a stored instant out of range would not read back.
fn input_at(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<DateTime<Utc>, RuntimeError> {
    relance_core::instant::check(at.unwrap_or(now)).map_err(|e| RuntimeError::BadInput {
        field: "at".into(),
        message: e.to_string(),
    })
}

/// What `put_scenario` did.
#[derive(Debug, Clone, Serialize)]
pub struct PutOutcome {
    /// The scenario id.
    pub id: String,
    /// The version now latest.
    pub version: u32,
    /// False when the text was the same as the latest version (no new version).
    pub changed: bool,
    /// The status.
    pub status: Status,
    /// The version new entries use.
    pub active_version: Option<u32>,
    /// Problems found (errors keep the new version from running).
    pub problems: Vec<Problem>,
}

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

/// Who and how a contact write came: the consent log's source and actor for its changes.
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    source: &'a str,
    actor: &'a str,
}

/// Engines by (scenario, version) under the workspace policy: versions are immutable, so an
/// engine goes stale only when the policy changes, and the cache is dropped then.
#[derive(Debug, Default)]
struct Engines {
    by_version: HashMap<(String, u32), Arc<Engine>>,
    policy: Policy,
    policy_text: Option<String>,
    /// When the policy was last read: other processes (Lambda containers) may change it, so
    /// it is read again after [`POLICY_REFRESH`].
    policy_read_at: Option<DateTime<Utc>>,
}

/// How long a runtime trusts the workspace policy it read.
pub const POLICY_REFRESH: TimeDelta = TimeDelta::seconds(60);

impl Engines {
    fn refresh_policy<S: Store>(
        &mut self,
        store: &mut S,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError>
    where
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        if self
            .policy_read_at
            .is_some_and(|at| now >= at && now - at < POLICY_REFRESH)
        {
            return Ok(());
        }
        let text = store.setting(SETTING_POLICY).map_err(store_err)?;
        self.policy_read_at = Some(now);
        if text == self.policy_text {
            return Ok(());
        }
        self.policy = match &text {
            Some(t) => parse_policy(t)?,
            None => Policy::default(),
        };
        self.policy_text = text;
        self.by_version.clear();
        store.set_retention(&self.policy.retention);
        Ok(())
    }
}

/// A stored policy: YAML (a superset of JSON).
fn parse_policy(text: &str) -> Result<Policy, RuntimeError> {
    Policy::parse(text, relance_core::Format::Yaml).map_err(|problems| RuntimeError::Invalid {
        id: "policy".into(),
        problems,
    })
}

/// The engine over a store.
#[derive(Debug)]
pub struct Runtime<S> {
    store: S,
    engines: Engines,
    /// Who drives this runtime, for the consent log (`system`, `cli`, `api`, a token's name).
    actor: String,
    /// The journal records of committed units not yet taken, when they are reported (see
    /// [`Runtime::report_journal`]).
    reported: Option<Vec<(String, Record)>>,
}

/// One unit of work in progress: the store (inside its transaction) and the engine cache.
struct Unit<'a, S> {
    store: &'a mut S,
    engines: &'a mut Engines,
    now: DateTime<Utc>,
    actor: &'a str,
    /// Where the unit's journal records go when they are reported (dropped with the unit
    /// if it fails).
    reported: Option<&'a mut Vec<(String, Record)>>,
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
        }
    }

    /// Keeps the journal records of every unit of work that commits from now on, in the
    /// order written, for [`Runtime::take_journal`]: a play reports them as they happen
    /// without reading the journal back.
    pub fn report_journal(&mut self) {
        self.reported.get_or_insert_with(Vec::new);
    }

    /// The journal records reported since the last call, as (scenario, record).
    pub fn take_journal(&mut self) -> Vec<(String, Record)> {
        self.reported
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
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

    /// Replaces the workspace policy (quiet hours, a frequency cap across scenarios); the
    /// text is checked first, and every engine applies it from the next input on.
    pub fn set_policy(&mut self, text: &str, now: DateTime<Utc>) -> Result<Policy, RuntimeError> {
        let policy = parse_policy(text)?;
        self.unit(now, |u| {
            u.store
                .put_setting(SETTING_POLICY, text, now)
                .map_err(store_err)
        })?;
        self.engines.policy_read_at = None;
        self.engines.refresh_policy(&mut self.store, now)?;
        Ok(policy)
    }

    /// The workspace policy's text, if one was set.
    pub fn policy_text(&mut self) -> Result<Option<String>, RuntimeError> {
        self.store.setting(SETTING_POLICY).map_err(store_err)
    }

    /// Replaces the shared message store (a mapping from message id to message, as in a
    /// scenario's `messages`); every message is checked first, its problems located. Scenarios
    /// stored from now on take the shared messages they use but do not define.
    pub fn set_messages(&mut self, text: &str, now: DateTime<Utc>) -> Result<usize, RuntimeError> {
        let messages =
            scenario::parse_shared_messages(text).map_err(|problems| RuntimeError::Invalid {
                id: "messages".into(),
                problems,
            })?;
        self.unit(now, |u| {
            u.store
                .put_setting(SETTING_MESSAGES, text, now)
                .map_err(store_err)
        })?;
        Ok(messages.len())
    }

    /// The shared message store's text, if one was set.
    pub fn messages_text(&mut self) -> Result<Option<String>, RuntimeError> {
        self.store.setting(SETTING_MESSAGES).map_err(store_err)
    }

    /// The scenario text with the shared messages it uses but does not define copied in, so
    /// the stored version holds everything it sends and never changes with the shared store.
    fn with_shared_messages(
        &mut self,
        text: &str,
        format: SourceFormat,
    ) -> Result<(String, SourceFormat), RuntimeError> {
        let Some(shared) = self.store.setting(SETTING_MESSAGES).map_err(store_err)? else {
            return Ok((text.to_string(), format));
        };
        let Ok(mut doc) = scenario::parse_document(text, format.into()) else {
            return Ok((text.to_string(), format));
        };
        let shared =
            scenario::parse_shared_messages(&shared).map_err(|problems| RuntimeError::Invalid {
                id: "messages".into(),
                problems,
            })?;
        if scenario::merge_shared_messages(&mut doc, &shared).is_empty() {
            return Ok((text.to_string(), format));
        }
        let merged = serde_json::to_string_pretty(&doc).map_err(|e| RuntimeError::BadInput {
            field: "messages".into(),
            message: e.to_string(),
        })?;
        Ok((merged, SourceFormat::Json))
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
        self.engines.refresh_policy(&mut self.store, now)?;
        let engines = &mut self.engines;
        let actor = self.actor.as_str();
        let mark = self.reported.as_ref().map_or(0, Vec::len);
        let reported = self.reported.as_mut();
        let result = self
            .store
            .atomically(|store| {
                work(&mut Unit {
                    store,
                    engines,
                    now,
                    actor,
                    reported,
                })
            })
            .map_err(store_err);
        // The records of a unit that did not commit were never written.
        if !matches!(result, Ok(Ok(_)))
            && let Some(r) = self.reported.as_mut()
        {
            r.truncate(mark);
        }
        result
    }

    /// Stores a scenario file as a new version (unless identical to the latest). A new
    /// scenario is a draft; for an active one the new version takes new entries when it
    /// validates, while running enrollments stay on the version they entered with.
    pub fn put_scenario(
        &mut self,
        text: &str,
        format: SourceFormat,
        now: DateTime<Utc>,
    ) -> Result<PutOutcome, RuntimeError> {
        let (merged, format) = self.with_shared_messages(text, format)?;
        let text = merged.as_str();
        let report = validate::check_text(text, format.into());
        let id = match &report.scenario {
            Some(s) => s.id.clone(),
            None => scenario_id_of(text, format).ok_or_else(|| RuntimeError::Invalid {
                id: String::new(),
                problems: report.problems.clone(),
            })?,
        };
        let clean = report.scenario.is_some() && report.problems.is_empty();
        self.unit(now, |u| {
            let existing = u.store.scenario(&id).map_err(store_err)?;
            let same = match &existing {
                Some(e) => u
                    .store
                    .scenario_source(&id, e.latest_version)
                    .map_err(store_err)?
                    .is_some_and(|s| s.text == text),
                None => false,
            };
            let version = match (&existing, same) {
                (Some(e), true) => e.latest_version,
                _ => u
                    .store
                    .put_version(&id, format, text, now)
                    .map_err(store_err)?,
            };
            let mut entry = u.entry(&id)?;
            if entry.status == Status::Active && clean && entry.active_version != Some(version) {
                u.store
                    .set_status(&id, Status::Active, Some(version), now)
                    .map_err(store_err)?;
                entry.active_version = Some(version);
                u.schedule_launches(&id, version)?;
            }
            Ok(PutOutcome {
                id: id.clone(),
                version,
                changed: !same,
                status: entry.status,
                active_version: entry.active_version,
                problems: report.problems.clone(),
            })
        })
    }

    /// Stores a scenario its caller already checked as a new version (a new scenario is a
    /// draft), with `scenario` as that version's engine: a play (`relance simulate`) runs
    /// files with warnings, which [`Runtime::set_status`] refuses to activate, so it uses
    /// [`Runtime::activate_checked`] next. The shared messages are copied in as for
    /// [`Runtime::put_scenario`].
    pub fn put_checked(
        &mut self,
        scenario: Scenario,
        text: &str,
        format: SourceFormat,
        now: DateTime<Utc>,
    ) -> Result<u32, RuntimeError> {
        let (merged, format) = self.with_shared_messages(text, format)?;
        let id = scenario.id.clone();
        let version = self.unit(now, |u| {
            u.store
                .put_version(&id, format, &merged, now)
                .map_err(store_err)
        })?;
        let engine = Engine::new(scenario).with_policy(self.engines.policy.clone());
        self.engines
            .by_version
            .insert((id, version), Arc::new(engine));
        Ok(version)
    }

    /// Makes the latest version of a scenario active without validating it again (see
    /// [`Runtime::put_checked`]), arming its recurring or fixed-date launches.
    pub fn activate_checked(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ScenarioEntry, RuntimeError> {
        self.unit(now, |u| {
            let version = u.entry(id)?.latest_version;
            u.store
                .set_status(id, Status::Active, Some(version), now)
                .map_err(store_err)?;
            u.schedule_launches(id, version)?;
            u.entry(id)
        })
    }

    /// Moves a scenario through its lifecycle: draft → active ⇄ paused, and any → archived.
    /// Activation takes the latest version and requires it to validate without error.
    pub fn set_status(
        &mut self,
        id: &str,
        to: Status,
        now: DateTime<Utc>,
    ) -> Result<ScenarioEntry, RuntimeError> {
        self.unit(now, |u| {
            let entry = u.entry(id)?;
            let allowed = matches!(
                (entry.status, to),
                (
                    Status::Draft | Status::Paused | Status::Active,
                    Status::Active
                ) | (Status::Active | Status::Paused, Status::Paused)
                    | (
                        Status::Draft | Status::Active | Status::Paused | Status::Archived,
                        Status::Archived
                    )
            );
            if !allowed {
                return Err(RuntimeError::Lifecycle {
                    id: id.to_string(),
                    from: entry.status.as_str(),
                    to: to.as_str(),
                });
            }
            let mut active_version = None;
            if to == Status::Active {
                let source = u
                    .store
                    .scenario_source(id, entry.latest_version)
                    .map_err(store_err)?
                    .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
                let report = validate::check_text(&source.text, source.format.into());
                // DESIGN: a scenario is activated only when validation reports no problem.
                if !report.problems.is_empty() {
                    return Err(RuntimeError::Invalid {
                        id: id.to_string(),
                        problems: report.problems,
                    });
                }
                active_version = Some(entry.latest_version);
            }
            u.store
                .set_status(id, to, active_version, now)
                .map_err(store_err)?;
            if let Some(v) = active_version {
                u.schedule_launches(id, v)?;
            }
            u.entry(id)
        })
    }

    /// Every stored scenario.
    pub fn scenarios(&mut self) -> Result<Vec<ScenarioEntry>, RuntimeError> {
        self.store.scenarios(None).map_err(store_err)
    }

    /// The engine of a scenario's version (cached).
    pub fn engine(&mut self, id: &str, version: u32) -> Result<Arc<Engine>, RuntimeError> {
        engine(&mut self.store, &mut self.engines, id, version)
    }

    /// Creates or updates a contact (fields are merged), then runs the matching contact
    /// event (`contact.created`, `contact.updated`, or the action given) through the scenarios.
    pub fn upsert_contact(
        &mut self,
        detail: ContactDetail,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, RuntimeError> {
        let at = input_at(detail.at, now)?;
        let incoming = Contact::from_json(serde_json::Value::Object(detail.contact.clone()))
            .map_err(|e| RuntimeError::BadInput {
                field: "contact".into(),
                message: e.to_string(),
            })?;
        self.unit(now, |u| {
            let origin = Origin {
                source: source::API,
                actor: u.actor,
            };
            let (contact, change, _) = u.merge_contact(&incoming, origin)?;
            let name = match (detail.action, change) {
                (Some(action), _) => action.event_name(),
                (None, ContactChange::Added) => "contact.created",
                (None, ContactChange::Modified) => "contact.updated",
                (None, ContactChange::Unchanged) => return Ok(change),
            };
            let event = ActivityEvent {
                at,
                name: name.to_string(),
                properties: serde_json::Map::new(),
            };
            u.activity(contact, event)?;
            Ok(change)
        })
    }

    /// Records an activity event and runs it through the scenarios: exits, waits, triggers
    /// and inactivity clocks.
    pub fn activity(
        &mut self,
        detail: ActivityDetail,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        if detail.event.trim().is_empty() {
            return Err(RuntimeError::BadInput {
                field: "event".into(),
                message: "must name the event".into(),
            });
        }
        if detail.contact.trim().is_empty() {
            return Err(RuntimeError::BadInput {
                field: "contact".into(),
                message: "must be a contact id".into(),
            });
        }
        // A profile update an event carries is a contact write: its addresses are checked.
        if let Some(changes) = profile_changes(&detail.event, &detail.properties) {
            check_profile_addresses(changes)?;
        }
        let key = detail.dedup_key().map_err(bad_key)?;
        self.unit(now, |u| {
            // A repeat of a recorded event changes nothing: no second row, no second wake.
            if let Some(k) = &key
                && u.store.input_seen(k).map_err(store_err)?
            {
                return Ok(());
            }
            let contact = match u.store.contact(&detail.contact).map_err(store_err)? {
                Some(c) => c,
                // An event may come before the contact: it is created bare.
                None => {
                    let c = Contact::bare(&detail.contact);
                    u.store.put_contact(&c, now).map_err(store_err)?;
                    c
                }
            };
            let event = ActivityEvent {
                at: input_at(detail.at, now)?,
                name: detail.event.clone(),
                properties: detail.properties.clone(),
            };
            u.activity(contact, event)?;
            // Recorded last: an input that failed half-way is retried in full (DynamoDB has
            // no transaction around the unit; SQLite makes it all one).
            if let Some(k) = &key {
                u.store.record_input(k, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// A one-click unsubscribe whose token was verified: the contact is unsubscribed from the
    /// token's communication type, and the `unsubscribed` engagement is recorded against the
    /// send (waking an enrollment that waits for it). Repeating it changes nothing more.
    pub fn unsubscribe(
        &mut self,
        claim: &UnsubscribeClaim,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let already = self
            .store
            .contact(&claim.contact)
            .map_err(store_err)?
            .ok_or_else(|| RuntimeError::BadInput {
                field: "token".into(),
                message: format!("no contact \"{}\"", claim.contact),
            })?
            .subscription(&claim.communication_type)
            == Some(false);
        if already {
            return Ok(());
        }
        let detail = EngagementDetail {
            idempotency_key: None,
            contact: claim.contact.clone(),
            scenario: claim.scenario.clone(),
            step: claim.step.clone(),
            kind: EngagementKind::Unsubscribed,
            url: None,
            link_tags: Vec::new(),
            at: Some(now),
        };
        let link = Origin {
            source: source::UNSUBSCRIBE_LINK,
            actor: "contact",
        };
        match self.engagement_from(detail, Some(link), now) {
            // The scenario may have been deleted since: the consent still changes.
            Ok(()) | Err(RuntimeError::UnknownScenario(_)) => {}
            Err(e) => return Err(e),
        }
        self.unit(now, |u| {
            let Some(mut contact) = u.store.contact(&claim.contact).map_err(store_err)? else {
                return Ok(());
            };
            if contact.subscription(&claim.communication_type) != Some(false) {
                let change = consent::Change {
                    subject: claim.communication_type.clone(),
                    state: consent::ConsentState::Unsubscribed,
                };
                let event = change.event(contact.id(), source::UNSUBSCRIBE_LINK, "contact", u.now);
                u.store.append_consent(&event).map_err(store_err)?;
                consent::apply_change(&mut contact, &change);
                u.store.put_contact(&contact, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// An explicit consent call: the only way to re-subscribe a contact after an opt-out
    /// (with a source) and to lift a suppression (with a reason). Answers the events appended
    /// (none when the contact already was in the state asked for).
    pub fn consent(
        &mut self,
        request: &ConsentRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConsentEvent>, RuntimeError> {
        request.check().map_err(|e| RuntimeError::BadInput {
            field: e.field.into(),
            message: e.message,
        })?;
        self.unit(now, |u| {
            let mut contact = u
                .store
                .contact(&request.contact)
                .map_err(store_err)?
                .ok_or_else(|| RuntimeError::BadInput {
                    field: "contact".into(),
                    message: format!("no contact \"{}\"", request.contact),
                })?;
            let (changes, applied) =
                request
                    .apply_to(&contact)
                    .map_err(|e| RuntimeError::BadInput {
                        field: e.field.into(),
                        message: e.message,
                    })?;
            let mut events = Vec::with_capacity(applied.len());
            for c in &applied {
                let mut event = c.event(contact.id(), &request.source, u.actor, u.now);
                event.reason = request.reason.clone();
                u.store.append_consent(&event).map_err(store_err)?;
                events.push(event);
            }
            if !applied.is_empty() {
                contact.merge(&changes);
                u.store.put_contact(&contact, u.now).map_err(store_err)?;
            }
            Ok(events)
        })
    }

    /// A contact's consent trail, oldest first (`relance consent show`).
    pub fn consent_trail(&mut self, contact: &str) -> Result<Vec<ConsentEvent>, RuntimeError> {
        self.store.consent_trail(contact).map_err(store_err)
    }

    /// Records engagement with a send and wakes the enrollment waiting on it; the consent
    /// changes it implies (unsubscribe, complaint, hard bounce, SMS opt-out) go to the log.
    pub fn engagement(
        &mut self,
        detail: EngagementDetail,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        self.engagement_from(detail, None, now)
    }

    /// [`Runtime::engagement`], with the consent source and actor forced (the one-click link).
    fn engagement_from(
        &mut self,
        detail: EngagementDetail,
        origin: Option<Origin<'_>>,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let key = detail.dedup_key().map_err(bad_key)?;
        self.unit(now, |u| {
            // A repeat of a recorded reaction changes nothing: no second row, no second wake.
            if let Some(k) = &key
                && u.store.input_seen(k).map_err(store_err)?
            {
                return Ok(());
            }
            let entry = u.entry(&detail.scenario)?;
            let mut contact = u
                .store
                .contact(&detail.contact)
                .map_err(store_err)?
                .ok_or_else(|| RuntimeError::BadInput {
                    field: "contact".into(),
                    message: format!("no contact \"{}\"", detail.contact),
                })?;
            let engagement = Engagement {
                at: input_at(detail.at, now)?,
                step: detail.step.clone(),
                kind: detail.kind,
                url: detail.url.clone(),
                link_tags: detail.link_tags.clone(),
            };
            u.store
                .append_engagement(contact.id(), &entry.id, &engagement)
                .map_err(store_err)?;
            let running = u
                .store
                .running_enrollment(&entry.id, contact.id())
                .map_err(store_err)?;
            let version = running
                .as_ref()
                .map(|(_, v)| *v)
                .or(entry.active_version)
                .unwrap_or(entry.latest_version);
            let engine = engine(u.store, u.engines, &entry.id, version)?;
            let changes = engine.consent_changes(&contact, &engagement);
            for (change, from) in &changes {
                let (from, actor) = match origin {
                    Some(o) => (o.source, o.actor),
                    None => (*from, "provider"),
                };
                let event = change.event(contact.id(), from, actor, u.now);
                u.store.append_consent(&event).map_err(store_err)?;
                consent::apply_change(&mut contact, change);
            }
            if !changes.is_empty() {
                u.store.put_contact(&contact, now).map_err(store_err)?;
            }
            // Held (paused) and retired (archived) scenarios record the reaction but do not move.
            if let (Some((enrollment, version)), Status::Active) = (running, entry.status) {
                let history = history_for(u.store, &engine, contact.id(), &entry.id)?;
                let t = engine.handle(
                    &enrollment,
                    &contact,
                    &history,
                    Input::Engagement(&engagement),
                    now,
                );
                u.apply(&entry.id, version, Some(enrollment.version), t)?;
            }
            if let Some(k) = &key {
                u.store.record_input(k, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// Applies one line of an events file at `now`: an activity event, or engagement with a
    /// send of `scenario` (test mode and the parity tests drive the runtime with them).
    pub fn scripted(
        &mut self,
        scenario: &str,
        event: ScriptedEvent,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        match event.what {
            Happening::Activity(a) => self.activity(
                ActivityDetail {
                    idempotency_key: None,
                    contact: event.contact,
                    event: a.name,
                    properties: a.properties,
                    at: Some(a.at),
                },
                now,
            ),
            Happening::Engagement(g) => self.engagement(
                EngagementDetail {
                    idempotency_key: None,
                    contact: event.contact,
                    scenario: scenario.to_string(),
                    step: g.step,
                    kind: g.kind,
                    url: g.url,
                    link_tags: g.link_tags,
                    at: Some(g.at),
                },
                now,
            ),
        }
    }

    /// Records an event from before a play's start as history only: the contact's profile
    /// and consent change and conditions see the event later, but nothing is triggered,
    /// woken or entered (`relance simulate` reads the past of its events file so). An
    /// engagement counts against `scenario`'s sends; an unknown contact is created bare.
    pub fn record_past(
        &mut self,
        scenario: &str,
        event: ScriptedEvent,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        self.unit(now, |u| {
            let mut contact = match u.store.contact(&event.contact).map_err(store_err)? {
                Some(c) => c,
                None => {
                    let c = Contact::bare(&event.contact);
                    u.store.put_contact(&c, u.now).map_err(store_err)?;
                    c
                }
            };
            match event.what {
                Happening::Activity(a) => {
                    if let Some(changes) = profile_changes(&a.name, &a.properties) {
                        let screened = consent::screen(Some(&contact), changes);
                        let origin = Origin {
                            source: source::PROFILE_UPDATE,
                            actor: u.actor,
                        };
                        u.log_screened(contact.id(), &screened, origin)?;
                        contact.merge(&screened.changes);
                        u.store.put_contact(&contact, u.now).map_err(store_err)?;
                    }
                    u.store
                        .append_activity(contact.id(), &a)
                        .map_err(store_err)?;
                }
                Happening::Engagement(g) => {
                    let version = u.entry(scenario)?.latest_version;
                    let engine = u.engine(scenario, version)?;
                    let changes = engine.consent_changes(&contact, &g);
                    for (change, from) in &changes {
                        let event = change.event(contact.id(), from, "provider", u.now);
                        u.store.append_consent(&event).map_err(store_err)?;
                        consent::apply_change(&mut contact, change);
                    }
                    if !changes.is_empty() {
                        u.store.put_contact(&contact, u.now).map_err(store_err)?;
                    }
                    u.store
                        .append_engagement(contact.id(), scenario, &g)
                        .map_err(store_err)?;
                }
            }
            Ok(())
        })
    }

    /// Launches an active scenario for some contacts, or for its audience.
    pub fn launch(
        &mut self,
        detail: LaunchDetail,
        now: DateTime<Utc>,
    ) -> Result<LaunchReport, RuntimeError> {
        self.unit(now, |u| {
            let entry = u.entry(&detail.scenario)?;
            let version = match (entry.status, entry.active_version) {
                (Status::Active, Some(v)) => v,
                (status, _) => {
                    return Err(RuntimeError::NotActive {
                        id: entry.id.clone(),
                        status: status.as_str(),
                    });
                }
            };
            let ids = match &detail.contacts {
                Some(ids) => ids.clone(),
                None => u.store.contact_ids().map_err(store_err)?,
            };
            let mut report = LaunchReport::default();
            for id in ids {
                match u.store.contact(&id).map_err(store_err)? {
                    Some(c) => u.try_enter(&entry.id, version, &c, &mut report)?,
                    None => report.not_found.push(id),
                }
            }
            Ok(report)
        })
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
                    let (_, change, consent_kept) = u.merge_contact(c, origin)?;
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

    /// Fires everything due at `now`: recurring and fixed-date launches, inactivity checks,
    /// then timers (oldest first). Each is its own unit of work.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, RuntimeError> {
        let mut report = self.tick_schedules(now)?;
        loop {
            let due = self.due_timers(now)?;
            if due.is_empty() {
                return Ok(report);
            }
            for wake in due {
                self.fire(&wake, now)?;
                report.timers += 1;
            }
        }
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
        })
    }

    /// Fires one timer (the step executor's unit of work). A duplicated or stale timer
    /// changes nothing; one whose work keeps failing is kept as a dead letter; one whose unit
    /// could not commit is an error, and the timer stays for the next try.
    pub fn fire(&mut self, wake: &Wake, now: DateTime<Utc>) -> Result<(), RuntimeError> {
        // A queue may deliver a little early: the step never runs before it is due.
        let now = now.trunc_subsecs(6).max(wake.at);
        self.settle(
            now,
            "timer",
            wake,
            |u| u.fire_timer(wake),
            |u| u.store.cancel(wake).map_err(store_err),
        )
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
        })
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

    /// One contact's path through a scenario, with timestamps.
    pub fn path(&mut self, id: &str, contact: &str) -> Result<Vec<Record>, RuntimeError> {
        if self.store.scenario(id).map_err(store_err)?.is_none() {
            return Err(RuntimeError::UnknownScenario(id.to_string()));
        }
        self.store.records(id, Some(contact)).map_err(store_err)
    }
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
    if let Some(e) = engines.by_version.get(&(id.to_string(), version)) {
        return Ok(e.clone());
    }
    let source = store
        .scenario_source(id, version)
        .map_err(store_err)?
        .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
    let (scenario, _) =
        validate::parse(&source.text, source.format.into()).map_err(|problems| {
            RuntimeError::Invalid {
                id: id.to_string(),
                problems,
            }
        })?;
    let e = Arc::new(Engine::new(scenario).with_policy(engines.policy.clone()));
    engines
        .by_version
        .insert((id.to_string(), version), e.clone());
    Ok(e)
}

/// The contact's past for one scenario, with every scenario's sends when the engine's policy
/// caps them.
fn history_for<S: Store>(
    store: &mut S,
    engine: &Engine,
    contact: &str,
    scenario: &str,
) -> Result<History, RuntimeError>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let mut history = store.history(contact, scenario).map_err(store_err)?;
    if engine.needs_contact_sends() {
        history.contact_sends = store.contact_sends(contact).map_err(store_err)?;
    }
    Ok(history)
}

/// The id written in a scenario file that does not validate (so it can be stored as a draft).
fn scenario_id_of(text: &str, format: SourceFormat) -> Option<String> {
    let doc = scenario::parse_document(text, format.into()).ok()?;
    let id = doc.get("id")?.as_str()?;
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    .then(|| id.to_string())
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

    /// Merges an incoming contact into the stored one through the consent rule; answers the
    /// contact, how it changed, and how many consent values were kept from changing.
    fn merge_contact(
        &mut self,
        incoming: &Contact,
        origin: Origin<'_>,
    ) -> Result<(Contact, ContactChange, usize), RuntimeError> {
        let existing = self.store.contact(incoming.id()).map_err(store_err)?;
        let screened = consent::screen(existing.as_ref(), incoming.fields());
        let kept = screened.kept.len();
        self.log_screened(incoming.id(), &screened, origin)?;
        let merged = match existing {
            Some(mut existing) => {
                existing.merge(&screened.changes);
                existing
            }
            None => {
                let mut c = Contact::bare(incoming.id());
                c.merge(&screened.changes);
                c
            }
        };
        let change = self
            .store
            .put_contact(&merged, self.now)
            .map_err(store_err)?;
        Ok((merged, change, kept))
    }

    /// Appends the consent events of a screened update: the changes that apply, and a
    /// `kept` entry for each one refused.
    fn log_screened(
        &mut self,
        contact: &str,
        screened: &consent::Screened,
        origin: Origin<'_>,
    ) -> Result<(), RuntimeError> {
        for c in &screened.applied {
            let event = c.event(contact, origin.source, origin.actor, self.now);
            self.store.append_consent(&event).map_err(store_err)?;
        }
        for c in &screened.kept {
            tracing::info!(contact, subject = %c.subject, source = origin.source, "consent_kept");
            let event = c.kept(contact, origin.source, origin.actor, self.now);
            self.store.append_consent(&event).map_err(store_err)?;
        }
        Ok(())
    }

    /// The activity flow shared by events and contact changes; the same order as the
    /// simulator: history, inactivity clocks, running enrollments, then triggers.
    fn activity(&mut self, mut contact: Contact, event: ActivityEvent) -> Result<(), RuntimeError> {
        if let Some(changes) = profile_changes(&event.name, &event.properties) {
            let screened = consent::screen(Some(&contact), changes);
            let origin = Origin {
                source: source::PROFILE_UPDATE,
                actor: self.actor,
            };
            self.log_screened(contact.id(), &screened, origin)?;
            contact.merge(&screened.changes);
            self.store
                .put_contact(&contact, self.now)
                .map_err(store_err)?;
        }
        self.store
            .append_activity(contact.id(), &event)
            .map_err(store_err)?;
        let active = self.active()?;
        let mut keep = Vec::new();
        for (id, _, engine) in &active {
            if let Launch::Trigger(t) = &engine.scenario().launch
                && let (Some(source), Some(minutes)) = (t.inactivity_source(), t.inactivity_minutes)
                && source == event.name
            {
                let due = inactivity_deadline(event.at, minutes).ok_or_else(|| {
                    RuntimeError::BadInput {
                        field: "at".into(),
                        message: format!(
                            "{}: the inactivity check of scenario \"{id}\" ({minutes} minutes later) would fall past 9999-12-31",
                            event.at.to_rfc3339()
                        ),
                    }
                })?;
                self.store
                    .set_inactivity(&InactivityCheck {
                        scenario: id.clone(),
                        contact: contact.id().to_string(),
                        due,
                    })
                    .map_err(store_err)?;
                keep.push(id.clone());
            }
        }
        // Any other event of the contact cancels its pending inactivity triggers.
        self.store
            .clear_inactivity(contact.id(), &keep)
            .map_err(store_err)?;
        for (id, _, _) in &active {
            if let Some((enrollment, version)) = self
                .store
                .running_enrollment(id, contact.id())
                .map_err(store_err)?
            {
                let engine = self.engine(id, version)?;
                let history = history_for(self.store, &engine, contact.id(), id)?;
                let t = engine.handle(
                    &enrollment,
                    &contact,
                    &history,
                    Input::Event(&event),
                    self.now,
                );
                if let Some(c) = self.apply(id, version, Some(enrollment.version), t)? {
                    contact = c;
                }
            }
        }
        for (id, version, engine) in &active {
            if let Launch::Trigger(t) = &engine.scenario().launch
                && t.fires_on(&event.name, &event.properties)
            {
                self.try_enter(id, *version, &contact, &mut LaunchReport::default())?;
            }
        }
        Ok(())
    }

    fn try_enter(
        &mut self,
        scenario: &str,
        version: u32,
        contact: &Contact,
        report: &mut LaunchReport,
    ) -> Result<(), RuntimeError> {
        let engine = self.engine(scenario, version)?;
        let running = self
            .store
            .running_enrollment(scenario, contact.id())
            .map_err(store_err)?
            .is_some();
        let mark = self
            .store
            .entry_mark(scenario, contact.id())
            .map_err(store_err)?;
        let history = history_for(self.store, &engine, contact.id(), scenario)?;
        let id = format!(
            "{scenario}:{}:{}",
            contact.id(),
            mark.map_or(1, |m| m.entries + 1)
        );
        let request = EntryRequest {
            contact,
            history: &history,
            running,
            last_entered_at: mark.map(|m| m.last_entered_at),
            enrollment_id: &id,
            now: self.now,
        };
        match engine.enter(request) {
            Entry::Entered(t) => {
                report.entered += 1;
                self.store
                    .mark_entry(scenario, contact.id(), self.now)
                    .map_err(store_err)?;
                self.apply(scenario, version, None, t)?;
            }
            Entry::Skipped { reason, record } => {
                *report
                    .skipped
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
                self.store.journal(scenario, &record).map_err(store_err)?;
                if let Some(r) = self.reported.as_deref_mut() {
                    r.push((scenario.to_string(), record));
                }
            }
        }
        Ok(())
    }

    fn fire_timer(&mut self, wake: &relance_core::engine::Wake) -> Result<(), RuntimeError> {
        // The timer is consumed in the same unit as the transition it causes.
        self.store.cancel(wake).map_err(store_err)?;
        let Some((enrollment, version)) =
            self.store.enrollment(&wake.enrollment).map_err(store_err)?
        else {
            return Ok(());
        };
        let engine = self.engine(&enrollment.scenario, version)?;
        let contact = self
            .store
            .contact(&enrollment.contact)
            .map_err(store_err)?
            .unwrap_or_else(|| Contact::bare(&enrollment.contact));
        let history = history_for(self.store, &engine, contact.id(), &enrollment.scenario)?;
        let t = engine.handle(
            &enrollment,
            &contact,
            &history,
            Input::Wake {
                step: &wake.step,
                at: wake.at,
            },
            self.now,
        );
        if t.is_noop() {
            tracing::warn!(enrollment = %wake.enrollment, step = %wake.step, due = %wake.at, "stale timer dropped");
        }
        let scenario = enrollment.scenario.clone();
        self.apply(&scenario, version, Some(enrollment.version), t)?;
        Ok(())
    }

    fn fire_launch(
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
        for id in self.store.contact_ids().map_err(store_err)? {
            let Some(contact) = self.store.contact(&id).map_err(store_err)? else {
                continue;
            };
            if !zone.is_empty() && engine.zone_for(&contact, None).name() != zone {
                continue;
            }
            self.try_enter(scenario, version, &contact, &mut report)?;
        }
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
    fn schedule_launches(&mut self, scenario: &str, version: u32) -> Result<(), RuntimeError> {
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

    /// Writes a transition's effects and the enrollment (conditionally on its version);
    /// returns the contact when the transition changed it.
    fn apply(
        &mut self,
        scenario: &str,
        version: u32,
        expected: Option<u64>,
        t: Transition,
    ) -> Result<Option<Contact>, RuntimeError> {
        if t.is_noop() {
            return Ok(None);
        }
        // A scenario's update_profile may opt the contact out (the engine refuses opt-ins over
        // an opt-out): the trail records it before the contact is written.
        if let Some(after) = &t.contact
            && let Some(before) = self.store.contact(after.id()).map_err(store_err)?
        {
            let actor = format!("scenario:{scenario}");
            for c in consent::diff(&before, after) {
                let event = c.event(after.id(), source::SCENARIO, &actor, self.now);
                self.store.append_consent(&event).map_err(store_err)?;
            }
        }
        self.store
            .commit_transition(scenario, version, expected, &t, self.now)
            .map_err(store_err)?;
        if let Some(r) = self.reported.as_deref_mut() {
            for effect in &t.effects {
                if let relance_core::engine::Effect::Record(record) = effect {
                    r.push((scenario.to_string(), record.clone()));
                }
            }
        }
        Ok(t.contact)
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
