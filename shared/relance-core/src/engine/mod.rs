//! The transition function: `(enrollment, contact, history, input, now) -> (enrollment', effects)`.
//! It never reads a clock or does I/O; adapters apply the effects it returns.
//!
//! Transition table of an enrollment (terminal states ignore every late or duplicated input):
//!
//! | state    | input                      | result                                          |
//! |----------|----------------------------|-------------------------------------------------|
//! | (none)   | entry                      | runs from the first step, or a skip with reason |
//! | Due      | Wake matching (step, at)   | runs the step, then on until it holds or ends   |
//! | Waiting  | Wake matching the timeout  | resumes on `on_timeout`                         |
//! | Waiting  | event/engagement/change    | resumes on `on_event` if the wait condition holds |
//! | Due/Waiting | event/engagement/change | exits if an `exit_when` condition holds         |
//! | any      | a Wake that does not match | nothing (a stale or duplicated timer)           |
//! | Due/Waiting | a Wake naming a step the scenario lacks, or an input reaching a wait on one | an [`UnknownStep`] error from [`Engine::try_handle`] (the runtime dead-letters it) |
//! | Ended    | anything                   | nothing                                         |
//!
//! # Layout
//! - this module: enrollments, inputs, effects and the prepared [`Engine`].
//! - `enter`: entry into a scenario (already running, once_per, audience, exit_when).
//! - `handle`: one input applied to a running enrollment; stale timers and unknown steps.
//! - `run`: a transition in progress, walking steps until it holds or ends.
//! - `send`: [`decide_send`], the pure decision of a send step.

mod enter;
mod handle;
mod run;
mod send;

pub use enter::{Entry, EntryRequest, SkipReason};
pub use handle::UnknownStep;
pub use send::{SendDecision, SendFacts, decide_send};

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::contact::{ActivityEvent, Contact, Engagement, EngagementKind, HistoryNeeds};
use crate::journal::Record;
use crate::json_text::Object;
use crate::policy::Policy;
use crate::render::{Rendered, Templates};
use crate::scenario::{Action, Channel, EndKind, Scenario, Step, StepKind};

/// More steps than this in one transition without holding means a loop the validator could
/// not see (it rejects loops without a delay); the enrollment ends in failure.
pub const MAX_STEPS_PER_TRANSITION: usize = 1000;

/// One contact's journey through one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Unique id, chosen by the caller.
    pub id: String,
    /// The scenario id.
    pub scenario: String,
    /// The contact id.
    pub contact: String,
    /// Increases with every change: adapters write conditionally on it.
    pub version: u64,
    /// When the contact entered.
    #[serde(
        serialize_with = "crate::instant::rfc3339::serialize",
        deserialize_with = "crate::instant::rfc3339::deserialize"
    )]
    pub entered_at: DateTime<Utc>,
    /// Where it stands.
    pub state: EnrollmentState,
    /// Steps that sent in this enrollment, and when.
    #[serde(
        serialize_with = "crate::instant::rfc3339::map",
        deserialize_with = "crate::instant::rfc3339::deserialize_map"
    )]
    pub sent: BTreeMap<String, DateTime<Utc>>,
}

/// An enrollment's fields after its id, scenario, contact and version, as
/// [`Enrollment::stored_json`] writes them.
#[derive(Deserialize)]
struct StoredRest {
    #[serde(deserialize_with = "crate::instant::rfc3339::deserialize")]
    entered_at: DateTime<Utc>,
    state: EnrollmentState,
    #[serde(deserialize_with = "crate::instant::rfc3339::deserialize_map")]
    sent: BTreeMap<String, DateTime<Utc>>,
}

/// Where an enrollment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnrollmentState {
    /// The step runs at `at` (a delay, or a send held by quiet hours).
    Due {
        step: String,
        #[serde(serialize_with = "crate::instant::rfc3339::serialize")]
        at: DateTime<Utc>,
        hold: Hold,
    },
    /// A wait_for: resumes on its condition, or at `until`.
    Waiting {
        step: String,
        #[serde(serialize_with = "crate::instant::rfc3339::serialize")]
        since: DateTime<Utc>,
        #[serde(serialize_with = "crate::instant::rfc3339::serialize")]
        until: DateTime<Utc>,
    },
    /// Finished.
    Ended {
        outcome: Outcome,
        #[serde(serialize_with = "crate::instant::rfc3339::serialize")]
        at: DateTime<Utc>,
    },
}

/// Read as the derived internally tagged enum reads it (`{"status": "due", "step": ..}`),
/// in one pass: serde buffers an internally tagged object whole before it looks at the tag,
/// which was a third of the work of reading an enrollment. Every state's fields are read
/// into one struct, then the tag says which it needs; a field of another state is ignored,
/// as the derived enum ignores it.
impl<'de> Deserialize<'de> for EnrollmentState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnrollmentState, D::Error> {
        use serde::de::Error;

        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Status {
            Due,
            Waiting,
            Ended,
        }

        /// An instant written by `instant::rfc3339`.
        struct At(DateTime<Utc>);

        impl<'de> Deserialize<'de> for At {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<At, D::Error> {
                crate::instant::rfc3339::deserialize(d).map(At)
            }
        }

        #[derive(Deserialize)]
        struct Fields {
            status: Status,
            step: Option<String>,
            at: Option<At>,
            hold: Option<Hold>,
            since: Option<At>,
            until: Option<At>,
            outcome: Option<Outcome>,
        }

        fn needed<T, E: Error>(field: Option<T>, name: &'static str) -> Result<T, E> {
            field.ok_or_else(|| E::missing_field(name))
        }

        let f = Fields::deserialize(d)?;
        Ok(match f.status {
            Status::Due => EnrollmentState::Due {
                step: needed(f.step, "step")?,
                at: needed(f.at, "at")?.0,
                hold: needed(f.hold, "hold")?,
            },
            Status::Waiting => EnrollmentState::Waiting {
                step: needed(f.step, "step")?,
                since: needed(f.since, "since")?.0,
                until: needed(f.until, "until")?.0,
            },
            Status::Ended => EnrollmentState::Ended {
                outcome: needed(f.outcome, "outcome")?,
                at: needed(f.at, "at")?.0,
            },
        })
    }
}

/// Why a step is due later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// The step's delay.
    Delay,
    /// Quiet hours hold a send.
    QuietHours,
}

impl Hold {
    fn as_str(self) -> &'static str {
        match self {
            Hold::Delay => "delay",
            Hold::QuietHours => "quiet_hours",
        }
    }
}

/// How an enrollment finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reached an end step.
    End(EndKind),
    /// Left through exit_when.
    Exited,
    /// Kept by the scenario holdout at entry (DESIGN §3.1).
    HeldOut,
}

impl Enrollment {
    /// What a store that keeps the id, the scenario, the contact and the version in columns
    /// of their own writes beside them: `{"entered_at":..,"state":..,"sent":..}`, the rest of
    /// the enrollment's whole JSON (`serde_json::to_string`), written without a serializer
    /// with the same bytes, as [`crate::journal::Record::write_json`] (a property test compares
    /// the two). Those four were a quarter of the text, written at every step and read at
    /// every timer. [`Enrollment::from_stored_json`] reads it back.
    pub fn stored_json(&self) -> String {
        let mut out = String::with_capacity(192);
        let mut o = Object::open(&mut out);
        o.instant("entered_at", &self.entered_at);
        let mut state = o.object("state");
        match &self.state {
            EnrollmentState::Due { step, at, hold } => {
                state.plain("status", "due");
                state.str("step", step);
                state.instant("at", at);
                state.plain("hold", hold.as_str());
            }
            EnrollmentState::Waiting { step, since, until } => {
                state.plain("status", "waiting");
                state.str("step", step);
                state.instant("since", since);
                state.instant("until", until);
            }
            EnrollmentState::Ended { outcome, at } => {
                state.plain("status", "ended");
                match outcome {
                    Outcome::End(end) => {
                        let mut outcome = state.object("outcome");
                        outcome.str("end", end.as_str());
                        outcome.end();
                    }
                    Outcome::Exited => state.plain("outcome", "exited"),
                    Outcome::HeldOut => state.plain("outcome", "held_out"),
                }
                state.instant("at", at);
            }
        }
        state.end();
        let mut sent = o.object("sent");
        for (step, at) in &self.sent {
            sent.instant_at_key(step, at);
        }
        sent.end();
        o.end();
        out
    }

    /// An enrollment from its columns and the text [`Enrollment::stored_json`] wrote, or the
    /// whole JSON an older store wrote (`serde_json::to_string`, which then gives every field).
    pub fn from_stored_json(
        id: String,
        scenario: String,
        contact: String,
        version: u64,
        text: &str,
    ) -> Result<Enrollment, serde_json::Error> {
        if text.starts_with("{\"id\":") {
            return serde_json::from_str(text);
        }
        let rest: StoredRest = serde_json::from_str(text)?;
        Ok(Enrollment {
            id,
            scenario,
            contact,
            version,
            entered_at: rest.entered_at,
            state: rest.state,
            sent: rest.sent,
        })
    }

    /// True until the enrollment ends.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, EnrollmentState::Ended { .. })
    }

    /// The pending timer, if any: (step, due).
    pub fn pending_wake(&self) -> Option<(&str, DateTime<Utc>)> {
        match &self.state {
            EnrollmentState::Due { step, at, .. } => Some((step, *at)),
            EnrollmentState::Waiting { step, until, .. } => Some((step, *until)),
            EnrollmentState::Ended { .. } => None,
        }
    }
}

/// What reaches a running enrollment.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A timer fired for (step, due).
    Wake { step: &'a str, at: DateTime<Utc> },
    /// An activity or contact event (already in the history).
    Event(&'a ActivityEvent),
    /// Engagement with a send (already in the history).
    Engagement(&'a Engagement),
    /// The contact's profile changed.
    ContactChanged,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// An email address.
    Email(String),
    /// An E.164 phone number.
    Phone(String),
    /// SNS platform endpoints: (platform, endpoint ARN).
    Push(Vec<(String, String)>),
    /// Web push subscriptions.
    WebPush(Vec<Value>),
}

/// A message to deliver, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// The enrollment.
    pub enrollment: String,
    /// The contact id.
    pub contact: String,
    /// The send step.
    pub step: String,
    /// The message id.
    pub message: String,
    /// Its channel.
    pub channel: Channel,
    /// The communication type consent was checked against.
    pub communication_type: String,
    /// Where it goes.
    pub to: Recipient,
    /// The rendered parts.
    pub content: Rendered,
    /// `enrollment:step`: deliver at most once per key.
    pub idempotency_key: String,
}

/// A durable timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    /// The enrollment.
    pub enrollment: String,
    /// The contact id.
    pub contact: String,
    /// The step it concerns.
    pub step: String,
    /// When it is due.
    pub at: DateTime<Utc>,
}

/// What an adapter must do after a transition. Plain data, applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
// A transition holds a handful of effects and applies them at once: boxing the send (the
// largest variant) would save little memory for an allocation per send.
#[allow(clippy::large_enum_variant)]
pub enum Effect {
    /// Append to the journal.
    Record(Record),
    /// Deliver a message (once per idempotency key).
    Send(Send),
    /// Arm a timer.
    ScheduleWake(Wake),
    /// Disarm a timer (a stale timer is ignored anyway; this saves the work).
    CancelWake(Wake),
    /// Set a contact field (dots reach into objects).
    SetField {
        contact: String,
        field: String,
        value: Value,
    },
    /// An action for the outside world (export, task, lead, event).
    Action {
        enrollment: String,
        contact: String,
        step: String,
        action: Action,
    },
    /// The enrollment finished.
    Ended {
        enrollment: String,
        contact: String,
        outcome: Outcome,
        at: DateTime<Utc>,
    },
}

/// The result of a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The enrollment after the transition (its version increased if anything changed).
    pub enrollment: Enrollment,
    /// The contact, if the transition changed it (the same changes are in `SetField` effects).
    pub contact: Option<Contact>,
    /// The contact the transition was computed from, when it changed it: its changes are
    /// exactly what differs from this one (a store without transactions replays them onto
    /// the contact as stored when it writes them; the consent log records them).
    pub contact_read: Option<Contact>,
    /// What to do.
    pub effects: Vec<Effect>,
}

impl Transition {
    /// True when the input changed nothing (a stale timer, an unrelated event, an ended enrollment).
    pub fn is_noop(&self) -> bool {
        self.effects.is_empty()
    }

    /// The journal records among the effects.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.effects.iter().filter_map(|e| {
            if let Effect::Record(r) = e {
                Some(r)
            } else {
                None
            }
        })
    }
}

/// A validated scenario, ready to run: step index and compiled templates.
#[derive(Debug)]
pub struct Engine {
    scenario: Scenario,
    index: HashMap<String, usize>,
    templates: Templates,
    policy: Policy,
    history_needs: HistoryNeeds,
    /// See [`Engine::may_ever_react`].
    may_ever_react: bool,
}

impl Engine {
    /// Prepares a scenario that validated without error.
    pub fn new(scenario: Scenario) -> Engine {
        let index = scenario
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let (templates, _) = Templates::compile(&scenario.messages);
        let history_needs = history_needs(&scenario);
        let may_ever_react = !scenario.exit_when.is_empty()
            || scenario
                .steps
                .iter()
                .any(|step| matches!(step.kind, StepKind::WaitFor { .. }));
        Engine {
            scenario,
            index,
            templates,
            policy: Policy::default(),
            history_needs,
            may_ever_react,
        }
    }

    /// The parts of a contact's [`History`](crate::contact::History) this engine reads:
    /// callers may leave the others empty.
    pub fn history_needs(&self) -> HistoryNeeds {
        self.history_needs
    }

    /// The message a send step sends `contact`: its message, or with variants the one the
    /// contact's bucket of `"{scenario}:{step}:{contact}"` picks (DESIGN §3.1); `None` for
    /// another kind of step, or variants whose shares miss the bucket (unvalidated).
    pub fn message_for<'a>(&'a self, step: &'a Step, contact: &str) -> Option<&'a str> {
        let StepKind::Send {
            message, variants, ..
        } = &step.kind
        else {
            return None;
        };
        if variants.is_empty() {
            return Some(message);
        }
        let bucket = crate::experiment::bucket(&self.scenario.id, &step.id, contact);
        crate::experiment::pick(variants.iter().map(|v| v.basis_points), bucket)
            .map(|k| variants[k].message.as_str())
    }

    /// The same engine under a workspace policy (quiet hours, a cap across scenarios).
    pub fn with_policy(mut self, policy: Policy) -> Engine {
        self.policy = policy;
        self
    }

    /// The workspace policy it applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// True when callers must fill [`History::contact_sends`](crate::contact::History::contact_sends) (the policy caps sends
    /// across scenarios).
    pub fn needs_contact_sends(&self) -> bool {
        self.policy.frequency_cap.is_some()
    }

    /// The variant send steps with a winner rule (see [`Scenario::winner_steps`]): callers
    /// fill [`History::winners`](crate::contact::History::winners) for them.
    pub fn winner_steps(
        &self,
    ) -> impl Iterator<Item = (&str, &[crate::scenario::Variant], &crate::scenario::Winner)> {
        self.scenario.winner_steps()
    }

    /// True when callers must fill
    /// [`History::contact_engagement`](crate::contact::History::contact_engagement) (a step's
    /// delay runs `at: best`).
    pub fn needs_contact_engagement(&self) -> bool {
        self.scenario
            .steps
            .iter()
            .any(|s| s.delay.as_ref().is_some_and(|d| d.is_best()))
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The zone local times are read in for this contact: its own with `local_time`, else the scenario's.
    pub fn zone_for(&self, contact: &Contact, local_time: Option<bool>) -> Tz {
        if local_time.unwrap_or(self.scenario.local_time) {
            contact.timezone().unwrap_or(self.scenario.timezone)
        } else {
            self.scenario.timezone
        }
    }
    /// Consent changes that engagement implies, with their source: an unsubscribe or a
    /// complaint about a send unsubscribes the contact from that message's communication type;
    /// a hard bounce or a complaint suppresses the address. Apply them with
    /// [`crate::consent::apply_change`] and append their events to the consent log.
    pub fn consent_changes(
        &self,
        contact: &Contact,
        engagement: &Engagement,
    ) -> Vec<(crate::consent::Change, &'static str)> {
        use crate::consent::{Change, ConsentState, source};
        let mut changes = Vec::new();
        // With variants, the message this contact was sent (its bucket picks it again).
        let Some(message) = self
            .step(&engagement.step)
            .and_then(|s| self.message_for(s, contact.id()))
        else {
            return changes;
        };
        let Some(message) = self.scenario.messages.get(message) else {
            return changes;
        };
        let kind = message.communication_type().to_string();
        let origin = match (engagement.kind, message.channel) {
            (EngagementKind::Complained, _) => source::COMPLAINT,
            (EngagementKind::Unsubscribed, Channel::Sms) => source::SMS_STOP,
            (EngagementKind::Unsubscribed, _) => source::UNSUBSCRIBE,
            _ => source::BOUNCE,
        };
        if matches!(
            engagement.kind,
            EngagementKind::Unsubscribed | EngagementKind::Complained
        ) && contact.subscription(&kind) != Some(false)
        {
            changes.push((
                Change {
                    subject: kind,
                    state: ConsentState::Unsubscribed,
                },
                origin,
            ));
        }
        let soft_bounce = engagement.link_tags.iter().any(|t| t == SOFT_BOUNCE);
        let suppress = match engagement.kind {
            EngagementKind::Bounced => !soft_bounce,
            EngagementKind::Complained => true,
            _ => false,
        };
        let address = match message.channel {
            Channel::Email => contact.email(),
            Channel::Sms => contact.phone(),
            Channel::Push | Channel::WebPush => None,
        };
        if let (true, Some(address)) = (suppress, address)
            && !contact.is_suppressed(address)
        {
            changes.push((
                Change {
                    subject: address.to_string(),
                    state: ConsentState::Suppressed,
                },
                origin,
            ));
        }
        changes
    }

    fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.scenario.steps[i])
    }
}

/// The link tag an engagement source puts on a soft (transient) bounce: it is recorded, and
/// the address is not suppressed.
pub const SOFT_BOUNCE: &str = "bounce:transient";

/// The profile changes an event carries: a `profile` (or `changes`, `fields`) object, or, for
/// a `contact.*` event, its properties themselves.
pub fn profile_changes<'a>(
    name: &str,
    properties: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    let nested = ["profile", "changes", "fields"]
        .iter()
        .find_map(|k| properties.get(*k).and_then(Value::as_object));
    // A contact event's own properties are the contact's fields.
    nested
        .or_else(|| (name.starts_with("contact.") && !properties.is_empty()).then_some(properties))
}

/// What [`Engine::history_needs`] answers, from every condition evaluated against a
/// contact's history: the audience's criteria, `exit_when`, and the steps' `if`,
/// `wait_for` and `branches` (a trigger's `where` and a conversion's `where` read an
/// event's properties, never the history). A new place holding a condition must be added
/// here, or its conditions would see an empty history.
fn history_needs(scenario: &Scenario) -> HistoryNeeds {
    let mut needs = HistoryNeeds {
        sends: scenario.frequency_cap.is_some(),
        ..HistoryNeeds::default()
    };
    let steps = scenario.steps.iter().flat_map(|s| s.kind.conditions());
    let conditions = scenario
        .audience
        .criteria
        .iter()
        .chain(&scenario.exit_when)
        .chain(steps.map(|(_, c)| c));
    for condition in conditions {
        condition.walk(&mut |c| match c {
            Condition::Event { .. } => needs.events = true,
            Condition::Engagement(_) => needs.engagement = true,
            _ => {}
        });
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    mod enrollment_json {
        use proptest::prelude::*;

        use super::*;
        use crate::json_text::strategies::{instant, text};

        fn state() -> impl Strategy<Value = EnrollmentState> {
            let end = prop_oneof![
                Just(EndKind::Success),
                Just(EndKind::Failure),
                Just(EndKind::Abandon),
                Just(EndKind::Neutral),
                text().prop_map(EndKind::Goal),
            ];
            let outcome = prop_oneof![
                end.prop_map(Outcome::End),
                Just(Outcome::Exited),
                Just(Outcome::HeldOut),
            ];
            prop_oneof![
                (
                    text(),
                    instant(),
                    prop_oneof![Just(Hold::Delay), Just(Hold::QuietHours)]
                )
                    .prop_map(|(step, at, hold)| EnrollmentState::Due {
                        step,
                        at,
                        hold
                    }),
                (text(), instant(), instant()).prop_map(|(step, since, until)| {
                    EnrollmentState::Waiting { step, since, until }
                }),
                (outcome, instant())
                    .prop_map(|(outcome, at)| EnrollmentState::Ended { outcome, at }),
            ]
        }

        proptest! {
            #[test]
            fn an_enrollment_is_written_as_serde_json_writes_it(
                (id, scenario, contact) in (text(), text(), text()),
                version in any::<u64>(),
                entered_at in instant(),
                state in state(),
                sent in proptest::collection::btree_map(text(), instant(), 0..4),
            ) {
                let enrollment = Enrollment { id, scenario, contact, version, entered_at, state, sent };
                let whole = serde_json::to_string(&enrollment).unwrap_or_default();
                // The stored form reads back with the columns; the whole form as before.
                let stored = enrollment.stored_json();
                let (id, scenario, contact) = (enrollment.id.clone(), enrollment.scenario.clone(), enrollment.contact.clone());
                let read = Enrollment::from_stored_json(id.clone(), scenario.clone(), contact.clone(), version, &stored).ok();
                prop_assert_eq!(read.as_ref(), Some(&enrollment));
                let read = Enrollment::from_stored_json(id, scenario, contact, version, &whole).ok();
                prop_assert_eq!(read.as_ref(), Some(&enrollment));
                prop_assert!(whole.ends_with(&stored[1..]), "{} {}", whole, stored);
            }

            /// The state reads back as written, and as the derived internally tagged enum
            /// reads it, with or without a field of another state beside.
            #[test]
            fn a_state_reads_as_the_derived_enum_reads_it(state in state(), extra in text()) {
                let text = serde_json::to_string(&state).unwrap_or_default();
                let read: EnrollmentState = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
                prop_assert_eq!(&read, &state);
                let derived: Derived = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
                prop_assert_eq!(serde_json::to_string(&derived).unwrap_or_default(), text.clone());
                let mut value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                value["hold2"] = serde_json::json!(extra);
                value["outcome_x"] = serde_json::json!(1);
                let read: EnrollmentState = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
                prop_assert_eq!(read, state);
            }
        }

        /// The derived enum this crate used to read states with: the reference.
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "status", rename_all = "snake_case")]
        enum Derived {
            Due {
                step: String,
                #[serde(with = "crate::instant::rfc3339")]
                at: DateTime<Utc>,
                hold: Hold,
            },
            Waiting {
                step: String,
                #[serde(with = "crate::instant::rfc3339")]
                since: DateTime<Utc>,
                #[serde(with = "crate::instant::rfc3339")]
                until: DateTime<Utc>,
            },
            Ended {
                outcome: Outcome,
                #[serde(with = "crate::instant::rfc3339")]
                at: DateTime<Utc>,
            },
        }

        /// What a state that does not read says: the field missing, or the status unknown.
        #[test]
        fn a_state_missing_a_field_or_of_no_known_status_does_not_read() {
            for (text, says) in [
                (
                    r#"{"status":"due","step":"s","hold":"delay"}"#,
                    "missing field `at`",
                ),
                (
                    r#"{"status":"waiting","step":"s","since":"2026-12-01T00:00:00Z"}"#,
                    "missing field `until`",
                ),
                (
                    r#"{"status":"ended","at":"2026-12-01T00:00:00Z"}"#,
                    "missing field `outcome`",
                ),
                (r#"{"step":"s"}"#, "missing field `status`"),
                (r#"{"status":"paused"}"#, "unknown variant `paused`"),
                (
                    r#"{"status":"due","step":"s","at":"yesterday","hold":"delay"}"#,
                    "",
                ),
            ] {
                let read = serde_json::from_str::<EnrollmentState>(text);
                let derived = serde_json::from_str::<Derived>(text);
                assert!(derived.is_err(), "{text}");
                match read {
                    Ok(state) => panic!("{text} read as {state:?}"),
                    Err(e) => assert!(e.to_string().contains(says), "{text}: {e}"),
                }
            }
        }
    }

    /// A scenario with one send (`first`), then `middle` (the step under test), then an end.
    fn needs(top: &str, middle: &str) -> HistoryNeeds {
        let yaml = format!(
            "id: t\nlaunch: {{type: manual}}\n{top}messages:\n  m: {{channel: email, subject: s, text: t}}\nsteps:\n  - {{id: first, send: m, next: mid}}\n  - {{id: mid, {middle}}}\n  - {{id: last, end: success}}\n  - {{id: other, end: failure}}\n"
        );
        let doc = crate::scenario::parse_document(&yaml, crate::Format::Yaml)
            .unwrap_or_else(|p| panic!("{yaml}\n{p:?}"));
        match crate::scenario::from_value(&doc) {
            Ok(loaded) => Engine::new(loaded.scenario).history_needs(),
            Err(p) => panic!("{yaml}\n{p}"),
        }
    }

    const NONE: HistoryNeeds = HistoryNeeds {
        events: false,
        engagement: false,
        sends: false,
    };
    const EVENTS: HistoryNeeds = HistoryNeeds {
        events: true,
        ..NONE
    };
    const ENGAGEMENT: HistoryNeeds = HistoryNeeds {
        engagement: true,
        ..NONE
    };

    #[test]
    fn history_needs_follow_every_condition_of_the_scenario() {
        let delay = "delay: {after: P1D}, next: last";
        let cases = [
            ("", delay, NONE),
            (
                "",
                "if: {field: plan, op: eq, value: pro}, then: last, else: other",
                NONE,
            ),
            (
                "",
                "if: {opened: first}, then: last, else: other",
                ENGAGEMENT,
            ),
            (
                "",
                "if: {not: {clicked: first}}, then: last, else: other",
                ENGAGEMENT,
            ),
            ("", "if: {event: purchase}, then: last, else: other", EVENTS),
            (
                "",
                "wait_for: {opened: first, timeout: P1D}, on_event: last, on_timeout: other",
                ENGAGEMENT,
            ),
            (
                "",
                "wait_for: {event: purchase, timeout: P1D}, on_event: last, on_timeout: other",
                EVENTS,
            ),
            (
                "",
                "branches: [{when: {any: [{field: a, op: exists}, {event: demo}]}, next: last}], otherwise: other",
                EVENTS,
            ),
            (
                "exit_when:\n  - {event: purchase, within: P1D}\n",
                delay,
                EVENTS,
            ),
            ("exit_when:\n  - {opened: first}\n", delay, ENGAGEMENT),
            (
                "audience:\n  criteria: {event: signup, within: P7D}\n",
                delay,
                EVENTS,
            ),
            (
                "frequency_cap: {max: 1, per: P1D}\n",
                delay,
                HistoryNeeds {
                    sends: true,
                    ..NONE
                },
            ),
        ];
        for (top, middle, want) in cases {
            assert_eq!(needs(top, middle), want, "{top}{middle}");
        }
    }
}
