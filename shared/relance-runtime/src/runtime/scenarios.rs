//! Scenarios and workspace settings: versions, the lifecycle, the policy and the shared
//! messages, and the engines cached per version.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Engine;
use relance_core::ports::{
    SETTING_MESSAGES, SETTING_POLICY, ScenarioEntry, SourceFormat, Status, Store,
};
use relance_core::scenario::Scenario;
use relance_core::validate;
use relance_core::{Policy, Problem, scenario};
use serde::Serialize;

use super::{Runtime, RuntimeError, engine, store_err};
use crate::memory::Map;

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

/// Engines by (scenario, version) under the workspace policy: versions are immutable, so an
/// engine goes stale only when the policy changes, and the cache is dropped then.
#[derive(Debug, Default)]
pub(super) struct Engines {
    /// By scenario id, then version (looked up without allocating a key, with the store's
    /// fast hash: every unit of work looks its engine up).
    pub(super) by_version: Map<String, Map<u32, Arc<Engine>>>,
    pub(super) policy: Policy,
    pub(super) policy_text: Option<String>,
    /// When the policy was last read: other processes (Lambda containers) may change it, so
    /// it is read again after [`POLICY_REFRESH`].
    pub(super) policy_read_at: Option<DateTime<Utc>>,
    /// (scenario, step) whose winner check is known to be armed (read back from the store).
    pub(super) armed_winners: std::collections::HashSet<(String, String)>,
    /// Moves each time the policy changes: a step computed ahead under another policy is not
    /// used (see `ahead`).
    pub(super) policy_generation: u64,
}

/// How long a runtime trusts the workspace policy it read.
pub const POLICY_REFRESH: TimeDelta = TimeDelta::seconds(60);

impl Engines {
    pub(super) fn refresh_policy<S: Store>(
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
        self.adopt_policy(store, text)
    }

    /// Runs under the policy `text` from now on (none: the default), if it is not the one in
    /// force: the engines compiled under the other are dropped.
    pub(super) fn adopt_policy<S: Store>(
        &mut self,
        store: &mut S,
        text: Option<String>,
    ) -> Result<(), RuntimeError>
    where
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        if text == self.policy_text {
            return Ok(());
        }
        self.policy = match &text {
            Some(t) => parse_policy(t)?,
            None => Policy::default(),
        };
        self.policy_text = text;
        self.policy_generation += 1;
        self.by_version.clear();
        store.set_retention(&self.policy.retention);
        Ok(())
    }
}

/// A stored policy: YAML (a superset of JSON).
pub(super) fn parse_policy(text: &str) -> Result<Policy, RuntimeError> {
    Policy::parse(text, relance_core::Format::Yaml).map_err(|problems| RuntimeError::Invalid {
        id: "policy".into(),
        problems,
    })
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

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
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
        if let Some(scenario) = &report.scenario {
            let unsupported = self.store.unsupported(scenario);
            if !unsupported.is_empty() {
                return Err(RuntimeError::Invalid {
                    id,
                    problems: unsupported,
                });
            }
        }
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
            .entry(id)
            .or_default()
            .insert(version, Arc::new(engine));
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
}
