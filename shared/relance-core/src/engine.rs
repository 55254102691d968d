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
//! | Ended    | anything                   | nothing                                         |

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::{Condition, EvalContext};
use crate::contact::{ActivityEvent, Contact, Engagement, EngagementKind, History, SendMark};
use crate::journal::{Record, RecordKind};
use crate::policy::Policy;
use crate::render::{Rendered, Templates};
use crate::scenario::{
    Action, Channel, Consent, EndKind, FrequencyCap, ListChange, Scenario, Step, StepKind,
};

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
    pub entered_at: DateTime<Utc>,
    /// Where it stands.
    pub state: EnrollmentState,
    /// Steps that sent in this enrollment, and when.
    pub sent: BTreeMap<String, DateTime<Utc>>,
}

/// Where an enrollment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnrollmentState {
    /// The step runs at `at` (a delay, or a send held by quiet hours).
    Due {
        step: String,
        at: DateTime<Utc>,
        hold: Hold,
    },
    /// A wait_for: resumes on its condition, or at `until`.
    Waiting {
        step: String,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Finished.
    Ended { outcome: Outcome, at: DateTime<Utc> },
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
}

impl Enrollment {
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

/// A validated scenario, ready to run: step index and compiled templates.
#[derive(Debug)]
pub struct Engine {
    scenario: Scenario,
    index: HashMap<String, usize>,
    templates: Templates,
    policy: Policy,
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
        Engine {
            scenario,
            index,
            templates,
            policy: Policy::default(),
        }
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

    /// True when callers must fill [`History::contact_sends`] (the policy caps sends
    /// across scenarios).
    pub fn needs_contact_sends(&self) -> bool {
        self.policy.frequency_cap.is_some()
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
    /// order, each skip with its reason; otherwise runs from the first step.
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
        run.go(0, false);
        Entry::Entered(run.finish())
    }

    /// Applies one input to a running enrollment.
    pub fn handle(
        &self,
        enrollment: &Enrollment,
        contact: &Contact,
        history: &History,
        input: Input<'_>,
        now: DateTime<Utc>,
    ) -> Transition {
        let unchanged = || Transition {
            enrollment: enrollment.clone(),
            contact: None,
            effects: Vec::new(),
        };
        if !enrollment.is_running() {
            return unchanged();
        }
        let mut run = Run::new(self, enrollment.clone(), contact, history, now);
        match (input, &enrollment.state) {
            (
                Input::Wake { step, at },
                EnrollmentState::Due {
                    step: due_step,
                    at: due,
                    hold,
                },
            ) if step == due_step && at == *due => {
                let Some(&i) = self.index.get(step) else {
                    return unchanged();
                };
                run.base = at;
                run.record(RecordKind::Resumed, Some(step)).reason = Some(hold.as_str().into());
                run.go(i, true);
            }
            (
                Input::Wake { step, at },
                EnrollmentState::Waiting {
                    step: wait_step,
                    until,
                    ..
                },
            ) if step == wait_step && at == *until => {
                let Some(StepKind::WaitFor { on_timeout, .. }) = self.step(step).map(|s| &s.kind)
                else {
                    return unchanged();
                };
                run.base = at;
                run.record(RecordKind::Resumed, Some(step)).reason = Some("timeout".into());
                run.go_to(on_timeout);
            }
            (Input::Wake { .. }, _) => return unchanged(),
            (_, state) => {
                if run.exit_holds() {
                    run.exit();
                } else if let EnrollmentState::Waiting { step, since, until } = state {
                    let Some(Step {
                        kind:
                            StepKind::WaitFor {
                                condition,
                                on_event,
                                ..
                            },
                        ..
                    }) = self.step(step)
                    else {
                        return unchanged();
                    };
                    if run.holds(condition, Some(*since)) {
                        run.effects.push(Effect::CancelWake(run.wake(step, *until)));
                        run.record(RecordKind::Resumed, Some(step)).reason = Some("event".into());
                        run.go_to(on_event);
                    }
                }
            }
        }
        run.finish()
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
        let Some(StepKind::Send { message, .. }) = self.step(&engagement.step).map(|s| &s.kind)
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

/// One transition in progress.
struct Run<'a> {
    engine: &'a Engine,
    en: Enrollment,
    contact: Cow<'a, Contact>,
    history: &'a History,
    now: DateTime<Utc>,
    /// The moment the previous step ran (a timer's due time when woken, so delays do not drift).
    base: DateTime<Utc>,
    effects: Vec<Effect>,
    sends_now: usize,
}

enum Flow {
    Next,
    Hold,
}

impl<'a> Run<'a> {
    fn new(
        engine: &'a Engine,
        en: Enrollment,
        contact: &'a Contact,
        history: &'a History,
        now: DateTime<Utc>,
    ) -> Self {
        Run {
            engine,
            en,
            contact: Cow::Borrowed(contact),
            history,
            now,
            base: now,
            effects: Vec::new(),
            sends_now: 0,
        }
    }

    fn finish(mut self) -> Transition {
        if !self.effects.is_empty() {
            self.en.version += 1;
        }
        let contact = match self.contact {
            Cow::Owned(c) => Some(c),
            Cow::Borrowed(_) => None,
        };
        Transition {
            enrollment: self.en,
            contact,
            effects: self.effects,
        }
    }

    fn record(&mut self, kind: RecordKind, step: Option<&str>) -> &mut Record {
        let mut r = Record::new(self.now, &self.en.contact, kind);
        r.step = step.map(str::to_string);
        r.enrollment = Some(self.en.id.clone());
        self.effects.push(Effect::Record(r));
        match self.effects.last_mut() {
            Some(Effect::Record(r)) => r,
            _ => unreachable!("a record was just pushed"),
        }
    }

    fn wake(&self, step: &str, at: DateTime<Utc>) -> Wake {
        Wake {
            enrollment: self.en.id.clone(),
            contact: self.en.contact.clone(),
            step: step.to_string(),
            at,
        }
    }

    fn tz(&self, local_time: Option<bool>) -> Tz {
        self.engine.zone_for(&self.contact, local_time)
    }

    fn holds(&self, c: &Condition, since: Option<DateTime<Utc>>) -> bool {
        let cx = EvalContext {
            contact: &self.contact,
            history: self.history,
            sent: &self.en.sent,
            now: self.now,
            since,
            tz: self.tz(None),
        };
        c.holds(&cx)
    }

    fn exit_holds(&self) -> bool {
        self.engine
            .scenario
            .exit_when
            .iter()
            .any(|c| self.holds(c, None))
    }

    fn current_step(&self) -> Option<String> {
        self.en
            .pending_wake()
            .map(|(s, _)| s.to_string())
            .filter(|s| !s.is_empty())
    }

    fn exit(&mut self) {
        let step = self.current_step();
        if let Some((s, at)) = self.en.pending_wake().map(|(s, at)| (s.to_string(), at)) {
            self.effects.push(Effect::CancelWake(self.wake(&s, at)));
        }
        self.record(RecordKind::Exited, step.as_deref()).reason = Some("exit_when".into());
        self.end_with(Outcome::Exited);
    }

    fn end_with(&mut self, outcome: Outcome) {
        self.en.state = EnrollmentState::Ended {
            outcome: outcome.clone(),
            at: self.now,
        };
        self.effects.push(Effect::Ended {
            enrollment: self.en.id.clone(),
            contact: self.en.contact.clone(),
            outcome,
            at: self.now,
        });
    }

    fn go_to(&mut self, target: &str) {
        match self.engine.index.get(target) {
            Some(&i) => self.go(i, false),
            None => self.fail_end(&format!("unknown step \"{target}\"")),
        }
    }

    fn fail_end(&mut self, reason: &str) {
        self.record(RecordKind::Ended, None).end = Some("failure".into());
        if let Some(Effect::Record(r)) = self.effects.last_mut() {
            r.reason = Some(reason.to_string());
        }
        self.end_with(Outcome::End(EndKind::Failure));
    }

    /// Runs from step `i` until the enrollment holds (delay, wait, quiet hours) or ends.
    fn go(&mut self, mut i: usize, mut delay_done: bool) {
        let engine = self.engine;
        for _ in 0..MAX_STEPS_PER_TRANSITION {
            let Some(step) = engine.scenario.steps.get(i) else {
                // Only an unvalidated scenario without steps gets here.
                return self.fail_end("the scenario has no step");
            };
            if self.exit_holds() {
                self.en.state = EnrollmentState::Due {
                    step: step.id.clone(),
                    at: self.now,
                    hold: Hold::Delay,
                };
                self.record(RecordKind::Exited, Some(&step.id)).reason = Some("exit_when".into());
                self.end_with(Outcome::Exited);
                return;
            }
            if !delay_done && let Some(delay) = &step.delay {
                let due = delay.due(self.base, self.tz(delay.local_time));
                if due > self.now {
                    self.hold(step, due, Hold::Delay, true);
                    return;
                }
            }
            let arrival = !delay_done;
            delay_done = false;
            let next = match &step.kind {
                StepKind::Send { message, next } => match self.send(step, message, arrival) {
                    Flow::Next => next,
                    Flow::Hold => return,
                },
                StepKind::WaitFor { timeout, .. } => {
                    let until = timeout.add_to(self.now, self.tz(None));
                    if self.past_range(step, until) {
                        return;
                    }
                    self.en.state = EnrollmentState::Waiting {
                        step: step.id.clone(),
                        since: self.now,
                        until,
                    };
                    self.effects
                        .push(Effect::ScheduleWake(self.wake(&step.id, until)));
                    let r = self.record(RecordKind::Waiting, Some(&step.id));
                    r.until = Some(until);
                    r.reason = Some("wait_for".into());
                    r.arrival = arrival;
                    return;
                }
                StepKind::If {
                    condition,
                    then,
                    otherwise,
                } => {
                    let yes = self.holds(condition, None);
                    let next = if yes { then } else { otherwise };
                    let r = self.record(RecordKind::Branched, Some(&step.id));
                    r.branch = Some(if yes { "then" } else { "else" }.into());
                    r.next = Some(next.clone());
                    r.arrival = arrival;
                    next
                }
                StepKind::Branches {
                    branches,
                    otherwise,
                } => {
                    let chosen = branches.iter().position(|b| self.holds(&b.when, None));
                    let next = chosen.map_or(otherwise, |k| &branches[k].next);
                    let r = self.record(RecordKind::Branched, Some(&step.id));
                    r.branch =
                        Some(chosen.map_or_else(|| "otherwise".to_string(), |k| k.to_string()));
                    r.next = Some(next.clone());
                    r.arrival = arrival;
                    next
                }
                StepKind::Action { action, next } => {
                    self.action(step, action, arrival);
                    next
                }
                StepKind::End { end } => {
                    let r = self.record(RecordKind::Ended, Some(&step.id));
                    r.end = Some(end.as_str().to_string());
                    r.arrival = arrival;
                    self.end_with(Outcome::End(end.clone()));
                    return;
                }
                StepKind::Pass { next } => next,
            };
            self.base = self.now;
            match engine.index.get(next.as_str()) {
                Some(&j) => i = j,
                None => return self.fail_end(&format!("unknown step \"{next}\"")),
            }
        }
        self.fail_end("too many steps without a wait: a loop without a delay");
    }

    /// True (and the enrollment ended in failure, with the reason) when a wake at `at` would
    /// fall past 9999-12-31: no store can keep it, and a saturated instant once sorted before
    /// every other timer and stopped them all.
    fn past_range(&mut self, step: &Step, at: DateTime<Utc>) -> bool {
        if crate::instant::in_range(at) {
            return false;
        }
        self.fail_end(&format!(
            "step \"{}\" would be due past 9999-12-31",
            step.id
        ));
        true
    }

    fn hold(&mut self, step: &Step, at: DateTime<Utc>, hold: Hold, arrival: bool) {
        if self.past_range(step, at) {
            return;
        }
        self.en.state = EnrollmentState::Due {
            step: step.id.clone(),
            at,
            hold,
        };
        self.effects
            .push(Effect::ScheduleWake(self.wake(&step.id, at)));
        let r = self.record(RecordKind::Waiting, Some(&step.id));
        r.until = Some(at);
        r.reason = Some(hold.as_str().into());
        r.arrival = arrival;
    }

    fn skip_send(&mut self, step: &Step, reason: &str, arrival: bool) -> Flow {
        let r = self.record(RecordKind::Skipped, Some(&step.id));
        r.reason = Some(reason.to_string());
        r.arrival = arrival;
        Flow::Next
    }

    /// True when `cap` is reached: the earlier sends in its window (read in `tz`) and those
    /// of this transition.
    fn capped(&self, cap: &FrequencyCap, earlier: &[SendMark], tz: Tz) -> bool {
        let from = cap.per.sub_from(self.now, tz);
        let before = earlier
            .iter()
            .filter(|s| s.at > from && s.at <= self.now)
            .count();
        before + self.sends_now >= cap.max as usize
    }

    fn send(&mut self, step: &Step, message_id: &str, arrival: bool) -> Flow {
        let engine = self.engine;
        let scenario = &engine.scenario;
        if self.en.sent.contains_key(&step.id) {
            return self.skip_send(step, "already_sent", arrival);
        }
        let Some(message) = scenario.messages.get(message_id) else {
            let r = self.record(RecordKind::Failed, Some(&step.id));
            r.reason = Some(format!("unknown message \"{message_id}\""));
            r.arrival = arrival;
            return Flow::Next;
        };
        let kind = message.communication_type();
        let policy = &engine.policy;
        let exempt = policy.exempts(kind);
        // The scenario's own quiet hours replace the policy's; both are the recipient's
        // night, read in its own zone when it has one.
        let quiet = match (&scenario.quiet_hours, &policy.quiet_hours) {
            (Some(own), _) => Some((own, scenario.timezone)),
            (None, Some(global)) if !exempt => Some((global, policy.timezone)),
            _ => None,
        };
        if let Some((quiet, default_tz)) = quiet {
            let tz = self.contact.timezone().unwrap_or(default_tz);
            if let Some(end) = quiet.ends_after(self.now, tz) {
                self.hold(step, end, Hold::QuietHours, arrival);
                return Flow::Hold;
            }
        }
        if let Some(cap) = &scenario.frequency_cap
            && self.capped(cap, &self.history.sends, scenario.timezone)
        {
            return self.skip_send(step, "frequency_cap", arrival);
        }
        if let Some(cap) = policy.frequency_cap.as_ref().filter(|_| !exempt) {
            let tz = self.contact.timezone().unwrap_or(policy.timezone);
            if self.capped(cap, &self.history.contact_sends, tz) {
                return self.skip_send(step, "policy_frequency_cap", arrival);
            }
        }
        let to = match message.channel {
            Channel::Email => self
                .contact
                .email()
                .map(|e| Recipient::Email(e.to_string())),
            Channel::Sms => self
                .contact
                .phone()
                .map(|p| Recipient::Phone(p.to_string())),
            Channel::Push => {
                let endpoints = self.contact.push_endpoints();
                (!endpoints.is_empty()).then(|| {
                    Recipient::Push(
                        endpoints
                            .into_iter()
                            .map(|(p, e)| (p.to_string(), e.to_string()))
                            .collect(),
                    )
                })
            }
            Channel::WebPush => {
                let subs = self.contact.web_push_subscriptions();
                (!subs.is_empty()).then(|| Recipient::WebPush(subs.into_iter().cloned().collect()))
            }
        };
        let suppressed = match &to {
            Some(Recipient::Email(a) | Recipient::Phone(a)) => self.contact.is_suppressed(a),
            _ => false,
        };
        if suppressed {
            return self.skip_send(step, "suppressed", arrival);
        }
        let Some(to) = to else {
            let reason = match message.channel {
                Channel::Email => "no_email",
                Channel::Sms => "no_phone",
                Channel::Push => "no_push_endpoint",
                Channel::WebPush => "no_web_push_subscription",
            };
            return self.skip_send(step, reason, arrival);
        };
        match (self.contact.subscription(kind), scenario.consent) {
            (Some(false), _) => return self.skip_send(step, "unsubscribed", arrival),
            (None, Consent::Explicit) => return self.skip_send(step, "no_opt_in", arrival),
            _ => {}
        }
        let content =
            match engine
                .templates
                .render(message_id, message, &self.contact, &scenario.id)
            {
                Ok(c) => c,
                Err(e) => {
                    let r = self.record(RecordKind::Failed, Some(&step.id));
                    r.reason = Some(format!("render: {e}"));
                    r.arrival = arrival;
                    return Flow::Next;
                }
            };
        self.effects.push(Effect::Send(Send {
            enrollment: self.en.id.clone(),
            contact: self.en.contact.clone(),
            step: step.id.clone(),
            message: message_id.to_string(),
            channel: message.channel,
            communication_type: kind.to_string(),
            to,
            content,
            idempotency_key: format!("{}:{}", self.en.id, step.id),
        }));
        self.en.sent.insert(step.id.clone(), self.now);
        self.sends_now += 1;
        let r = self.record(RecordKind::Sent, Some(&step.id));
        r.channel = Some(message.channel);
        r.message = Some(message_id.to_string());
        r.arrival = arrival;
        Flow::Next
    }

    fn set_field(&mut self, field: &str, value: Value) {
        self.contact.to_mut().set_field(field, value.clone());
        self.effects.push(Effect::SetField {
            contact: self.en.contact.clone(),
            field: field.to_string(),
            value,
        });
    }

    fn change_list(&mut self, key: &str, change: &ListChange) {
        let mut names: Vec<String> = self.contact.names(key).map(str::to_string).collect();
        names.retain(|n| !change.remove.contains(n));
        for add in &change.add {
            if !names.contains(add) {
                names.push(add.clone());
            }
        }
        self.set_field(
            key,
            Value::Array(names.into_iter().map(Value::String).collect()),
        );
    }

    fn action(&mut self, step: &Step, action: &Action, arrival: bool) {
        let failed = match action {
            Action::Tag(change) => {
                self.change_list("tags", change);
                None
            }
            Action::Group(change) => {
                self.change_list("groups", change);
                None
            }
            Action::UpdateProfile(u) => {
                let value = match (&u.value, &u.expression) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(expr)) => {
                        self.engine.templates.eval_expression(expr, &self.contact)
                    }
                    (None, None) => Err("no value".to_string()),
                };
                match value {
                    // Consent fields go through the consent rule: a scenario may opt a contact
                    // out, never back in, and never lifts a suppression.
                    Ok(v) if crate::consent::is_consent_field(&u.field) => {
                        let mut changes = Map::new();
                        changes.insert(u.field.clone(), v);
                        let screened = crate::consent::screen(Some(&self.contact), &changes);
                        for (k, v) in screened.changes {
                            if self.contact.fields().get(&k) != Some(&v) {
                                self.set_field(&k, v);
                            }
                        }
                        (!screened.kept.is_empty()).then(|| {
                            let subjects: Vec<&str> =
                                screened.kept.iter().map(|k| k.subject.as_str()).collect();
                            format!("consent_kept: update_profile {} would undo the opt-out or suppression of {}", u.field, subjects.join(", "))
                        })
                    }
                    Ok(v) => {
                        self.set_field(&u.field, v);
                        None
                    }
                    Err(e) => Some(format!("update_profile {}: {e}", u.field)),
                }
            }
            _ => {
                self.effects.push(Effect::Action {
                    enrollment: self.en.id.clone(),
                    contact: self.en.contact.clone(),
                    step: step.id.clone(),
                    action: action.clone(),
                });
                None
            }
        };
        let r = self.record(
            if failed.is_some() {
                RecordKind::Failed
            } else {
                RecordKind::Action
            },
            Some(&step.id),
        );
        r.action = Some(action.name().into());
        r.reason = failed;
        r.arrival = arrival;
    }
}

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
