//! Entry: whether a contact enters a scenario, and its first steps when it does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::run::Run;
use super::*;
use crate::condition::EvalContext;
use crate::contact::{Contact, History};
use crate::journal::{Record, RecordKind};

/// Why a contact did not enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Already inside a running enrollment of the scenario.
    AlreadyRunning,
    /// Entered within the once_per window.
    OncePer,
    /// Not in the audience.
    Audience,
    /// An exit_when condition already holds.
    ExitWhen,
}

impl SkipReason {
    /// The reason as journaled.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::AlreadyRunning => "already_running",
            SkipReason::OncePer => "once_per",
            SkipReason::Audience => "audience",
            SkipReason::ExitWhen => "exit_when",
        }
    }
}

/// The result of an entry attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The contact entered.
    Entered(Transition),
    /// It did not, for this reason (the record journals it).
    Skipped { reason: SkipReason, record: Record },
}

/// What the caller knows about a contact when it tries to enroll it.
#[derive(Debug, Clone, Copy)]
pub struct EntryRequest<'a> {
    /// The contact.
    pub contact: &'a Contact,
    /// Its history.
    pub history: &'a History,
    /// True when an enrollment of this scenario is running for the contact.
    pub running: bool,
    /// When the contact last entered this scenario.
    pub last_entered_at: Option<DateTime<Utc>>,
    /// The id for the new enrollment.
    pub enrollment_id: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
}

impl Engine {
    /// True when the contact belongs to the audience now.
    pub fn in_audience(&self, contact: &Contact, history: &History, now: DateTime<Utc>) -> bool {
        let a = &self.scenario.audience;
        let in_groups = a
            .groups
            .as_ref()
            .is_none_or(|gs| contact.names("groups").any(|g| gs.iter().any(|x| x == g)));
        in_groups
            && a.criteria.as_ref().is_none_or(|c| {
                let sent = BTreeMap::new();
                c.holds(&EvalContext {
                    contact,
                    history,
                    sent: &sent,
                    now,
                    since: None,
                    tz: self.zone_for(contact, None),
                })
            })
    }

    /// Tries to enroll a contact: already running, once_per, audience and exit_when, in that
    /// order, each skip with its reason; otherwise it enters and, unless the scenario holdout
    /// keeps it (entered, sent nothing, ended `held_out`), runs from the first step.
    pub fn enter(&self, req: EntryRequest<'_>) -> Entry {
        let EntryRequest {
            contact,
            history,
            running,
            last_entered_at,
            enrollment_id,
            now,
        } = req;
        let skip = |reason: SkipReason| Entry::Skipped {
            reason,
            record: Record::new(now, contact.id(), RecordKind::Skipped).reason(reason.as_str()),
        };
        if running {
            return skip(SkipReason::AlreadyRunning);
        }
        if let (Some(window), Some(last)) = (&self.scenario.once_per, last_entered_at)
            && now < window.add_to(last, self.zone_for(contact, None))
        {
            return skip(SkipReason::OncePer);
        }
        if !self.in_audience(contact, history, now) {
            return skip(SkipReason::Audience);
        }
        let enrollment = Enrollment {
            id: enrollment_id.to_string(),
            scenario: self.scenario.id.clone(),
            contact: contact.id().to_string(),
            version: 0,
            entered_at: now,
            state: EnrollmentState::Due {
                step: String::new(),
                at: now,
                hold: Hold::Delay,
            },
            sent: BTreeMap::new(),
        };
        let mut run = Run::new(self, enrollment, contact, history, now);
        if run.exit_holds() {
            return skip(SkipReason::ExitWhen);
        }
        run.record(RecordKind::Entered, None);
        if let Some(h) = self.scenario.holdout {
            let bucket = crate::experiment::bucket(
                &self.scenario.id,
                crate::experiment::HOLDOUT_STEP,
                contact.id(),
            );
            if u32::from(bucket) < h.basis_points {
                run.record(RecordKind::HeldOut, None);
                run.record(RecordKind::Ended, None).end =
                    Some(crate::experiment::HELD_OUT_END.into());
                run.end_with(Outcome::HeldOut);
                return Entry::Entered(run.finish());
            }
        }
        run.go(0, false);
        Entry::Entered(run.finish())
    }
}
