//! One transition in progress: walks the steps from where the enrollment stands until it
//! holds (a delay, a wait, quiet hours) or ends, collecting effects and records.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::*;
use crate::condition::{Condition, EvalContext};
use crate::contact::{Contact, History};
use crate::journal::{Record, RecordKind};
use crate::scenario::{Action, EndKind, ListChange, Step, StepKind};

/// One transition in progress.
pub(super) struct Run<'a> {
    pub(super) engine: &'a Engine,
    pub(super) en: Enrollment,
    pub(super) contact: Cow<'a, Contact>,
    /// The contact as given, before any step of this run changed it.
    pub(super) read: &'a Contact,
    pub(super) history: &'a History,
    pub(super) now: DateTime<Utc>,
    /// The moment the previous step ran (a timer's due time when woken, so delays do not drift).
    pub(super) base: DateTime<Utc>,
    pub(super) effects: Vec<Effect>,
    pub(super) sends_now: usize,
}

/// The effects a run makes room for at once (see [`Run::new`]).
const EFFECTS_AT_HAND: usize = 8;

pub(super) enum Flow {
    Next,
    Hold,
}

impl<'a> Run<'a> {
    pub(super) fn new(
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
            read: contact,
            history,
            now,
            base: now,
            // A step's run makes a handful of effects (an entry into a drip: three records, a
            // send and a timer), each 576 bytes (a send's size): grown from empty, the vector
            // took room for four, then reallocated and copied those four for the fifth, a
            // tenth of computing an entry. A run that ends up changing nothing (a stale timer,
            // an event no step waits for) pays one allocation for it; made room for at the
            // first effect instead, the reader did 1% more instructions (BENCHMARKS.md).
            effects: Vec::with_capacity(EFFECTS_AT_HAND),
            sends_now: 0,
        }
    }

    pub(super) fn finish(mut self) -> Transition {
        if !self.effects.is_empty() {
            self.en.version += 1;
        }
        let contact = match self.contact {
            Cow::Owned(c) => Some(c),
            Cow::Borrowed(_) => None,
        };
        Transition {
            enrollment: self.en,
            contact_read: contact.as_ref().map(|_| self.read.clone()),
            contact,
            effects: self.effects,
        }
    }

    pub(super) fn record(&mut self, kind: RecordKind, step: Option<&str>) -> &mut Record {
        let mut r = Record::new(self.now, &self.en.contact, kind);
        r.step = step.map(str::to_string);
        r.enrollment = Some(self.en.id.clone());
        self.effects.push(Effect::Record(r));
        match self.effects.last_mut() {
            Some(Effect::Record(r)) => r,
            _ => unreachable!("a record was just pushed"),
        }
    }

    pub(super) fn wake(&self, step: &str, at: DateTime<Utc>) -> Wake {
        Wake {
            enrollment: self.en.id.clone(),
            contact: self.en.contact.clone(),
            step: step.to_string(),
            at,
        }
    }

    pub(super) fn tz(&self, local_time: Option<bool>) -> Tz {
        self.engine.zone_for(&self.contact, local_time)
    }

    pub(super) fn holds(&self, c: &Condition, since: Option<DateTime<Utc>>) -> bool {
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

    pub(super) fn exit_holds(&self) -> bool {
        self.engine
            .scenario
            .exit_when
            .iter()
            .any(|c| self.holds(c, None))
    }

    pub(super) fn current_step(&self) -> Option<String> {
        self.en
            .pending_wake()
            .map(|(s, _)| s.to_string())
            .filter(|s| !s.is_empty())
    }

    pub(super) fn exit(&mut self) {
        let step = self.current_step();
        if let Some((s, at)) = self.en.pending_wake().map(|(s, at)| (s.to_string(), at)) {
            self.effects.push(Effect::CancelWake(self.wake(&s, at)));
        }
        self.record(RecordKind::Exited, step.as_deref()).reason = Some("exit_when".into());
        self.end_with(Outcome::Exited);
    }

    pub(super) fn end_with(&mut self, outcome: Outcome) {
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

    pub(super) fn go_to(&mut self, target: &str) {
        match self.engine.index.get(target) {
            Some(&i) => self.go(i, false),
            None => self.fail_end(&format!("unknown step \"{target}\"")),
        }
    }

    pub(super) fn fail_end(&mut self, reason: &str) {
        self.record(RecordKind::Ended, None).end = Some("failure".into());
        if let Some(Effect::Record(r)) = self.effects.last_mut() {
            r.reason = Some(reason.to_string());
        }
        self.end_with(Outcome::End(EndKind::Failure));
    }

    /// Runs from step `i` until the enrollment holds (delay, wait, quiet hours) or ends.
    pub(super) fn go(&mut self, mut i: usize, mut delay_done: bool) {
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
                let tz = self.tz(delay.local_time);
                // `at: best` picks its hour from the engagement up to the moment the step is
                // reached (`base`), then runs as that `at` would.
                let delay = crate::best_time::resolve(
                    delay,
                    &self.history.contact_engagement,
                    self.base,
                    tz,
                );
                let due = delay.due(self.base, tz);
                if due > self.now {
                    self.hold(step, due, Hold::Delay, true);
                    return;
                }
            }
            let arrival = !delay_done;
            delay_done = false;
            let next = match &step.kind {
                StepKind::Send { next, variants, .. } => {
                    // Once the step has a winner, every send of it uses the winner.
                    let winner = self
                        .history
                        .winners
                        .get(&step.id)
                        .map(String::as_str)
                        .filter(|m| variants.iter().any(|v| v.message == *m));
                    let Some(chosen) =
                        winner.or_else(|| engine.message_for(step, &self.en.contact))
                    else {
                        // Only an unvalidated scenario (percents short of 100) gets here.
                        return self.fail_end(&format!(
                            "send \"{}\" has no variant for its bucket",
                            step.id
                        ));
                    };
                    match self.send(step, chosen, !variants.is_empty(), arrival) {
                        Flow::Next => next,
                        Flow::Hold => return,
                    }
                }
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
                StepKind::Split { paths } => {
                    let bucket =
                        crate::experiment::bucket(&engine.scenario.id, &step.id, &self.en.contact);
                    let Some(k) =
                        crate::experiment::pick(paths.iter().map(|p| p.basis_points), bucket)
                    else {
                        // Only an unvalidated scenario (percents short of 100) gets here.
                        return self.fail_end(&format!(
                            "split \"{}\" has no path for bucket {bucket}",
                            step.id
                        ));
                    };
                    let next = &paths[k].next;
                    let r = self.record(RecordKind::Assigned, Some(&step.id));
                    r.branch = Some(next.clone());
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
    pub(super) fn past_range(&mut self, step: &Step, at: DateTime<Utc>) -> bool {
        if crate::instant::in_range(at) {
            return false;
        }
        self.fail_end(&format!(
            "step \"{}\" would be due past 9999-12-31",
            step.id
        ));
        true
    }

    pub(super) fn hold(&mut self, step: &Step, at: DateTime<Utc>, hold: Hold, arrival: bool) {
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

    pub(super) fn set_field(&mut self, field: &str, value: Value) {
        self.contact.to_mut().set_field(field, value.clone());
        self.effects.push(Effect::SetField {
            contact: self.en.contact.clone(),
            field: field.to_string(),
            value,
        });
    }

    pub(super) fn change_list(&mut self, key: &str, change: &ListChange) {
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

    pub(super) fn action(&mut self, step: &Step, action: &Action, arrival: bool) {
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
            // The call is queued with its body rendered for this contact now (the contact as
            // the step saw it); the step does not wait for the answer.
            Action::Webhook(w) => {
                let body = match &w.body {
                    Some(t) => self
                        .engine
                        .templates
                        .render_text(t, &self.contact, &self.engine.scenario.id)
                        .map(Some),
                    None => Ok(None),
                };
                match body {
                    Ok(body) => {
                        self.effects.push(Effect::Action {
                            enrollment: self.en.id.clone(),
                            contact: self.en.contact.clone(),
                            step: step.id.clone(),
                            action: Action::Webhook(crate::webhook::Webhook { body, ..w.clone() }),
                        });
                        None
                    }
                    Err(e) => Some(format!("webhook body: {e}")),
                }
            }
            // The event carries the contact as the step saw it.
            Action::Invoke(i) => {
                self.effects.push(Effect::Action {
                    enrollment: self.en.id.clone(),
                    contact: self.en.contact.clone(),
                    step: step.id.clone(),
                    action: Action::Invoke(crate::invoke::Invoke {
                        function: i.function.clone(),
                        contact: Some(self.contact.fields().clone()),
                    }),
                });
                None
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
