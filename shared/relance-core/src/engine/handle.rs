//! One input applied to a running enrollment. A wake that does not match where the
//! enrollment stands is a stale timer (it moved on: nothing happens); a wake or a waiting
//! state naming a step the scenario version does not have is an [`UnknownStep`] error, for
//! the runtime to dead-letter.

use chrono::{DateTime, Utc};

use super::run::Run;
use super::{Effect, Engine, Enrollment, EnrollmentState, Input, Transition};
use crate::contact::{Contact, History};
use crate::journal::RecordKind;
use crate::scenario::{Step, StepKind};

/// A wake or an enrollment names a step its scenario version does not have: not a stale
/// timer (those name a step that exists), but a timer or an enrollment that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scenario \"{scenario}\" has no step \"{step}\"")]
pub struct UnknownStep {
    /// The scenario id.
    pub scenario: String,
    /// The step named.
    pub step: String,
}

impl Engine {
    /// False when no enrollment of this scenario can react to anything but its timers: the
    /// scenario has no `exit_when` and no `wait_for` step, so [`Engine::may_react`] is false
    /// whatever the enrollment's state (callers then need not read it).
    pub fn may_ever_react(&self) -> bool {
        // Found once, with the scenario (`Engine::new`): every open asks.
        self.may_ever_react
    }

    /// Whether an event, an engagement or a profile change can move `enrollment`
    /// ([`Engine::try_handle`] with anything but a wake): only while it runs, and then only
    /// through `exit_when` or the `wait_for` it waits on. When this is false, handling such an
    /// input changes nothing (tested), so a runtime skips it, and the history it would read.
    pub fn may_react(&self, enrollment: &Enrollment) -> bool {
        enrollment.is_running()
            && (!self.scenario.exit_when.is_empty()
                || matches!(enrollment.state, EnrollmentState::Waiting { .. }))
    }

    /// Applies one input to a running enrollment, treating an unknown step like a stale
    /// timer (no change). Runtimes use [`Engine::try_handle`], which tells them apart.
    pub fn handle(
        &self,
        enrollment: &Enrollment,
        contact: &Contact,
        history: &History,
        input: Input<'_>,
        now: DateTime<Utc>,
    ) -> Transition {
        self.try_handle(enrollment, contact, history, input, now)
            .unwrap_or_else(|_| unchanged(enrollment))
    }

    /// Applies one input to a running enrollment. An ended enrollment and a stale or
    /// duplicated timer (one that no longer matches where the enrollment stands) change
    /// nothing; a wake naming a step the scenario does not have, or an event reaching an
    /// enrollment that waits on such a step, is an [`UnknownStep`] error.
    pub fn try_handle(
        &self,
        enrollment: &Enrollment,
        contact: &Contact,
        history: &History,
        input: Input<'_>,
        now: DateTime<Utc>,
    ) -> Result<Transition, UnknownStep> {
        if !enrollment.is_running() {
            return Ok(unchanged(enrollment));
        }
        let unknown = |step: &str| UnknownStep {
            scenario: self.scenario.id.clone(),
            step: step.to_string(),
        };
        if let Input::Wake { step, .. } = input
            && self.step(step).is_none()
        {
            return Err(unknown(step));
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
                    return Err(unknown(step));
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
                // A step that is not a wait_for cannot be waited on: nothing to resume.
                let Some(StepKind::WaitFor { on_timeout, .. }) = self.step(step).map(|s| &s.kind)
                else {
                    return Ok(unchanged(enrollment));
                };
                run.base = at;
                run.record(RecordKind::Resumed, Some(step)).reason = Some("timeout".into());
                run.go_to(on_timeout);
            }
            // A timer for a state the enrollment has left: stale or duplicated.
            (Input::Wake { .. }, _) => return Ok(unchanged(enrollment)),
            (_, state) => {
                if run.exit_holds() {
                    run.exit();
                } else if let EnrollmentState::Waiting { step, since, until } = state {
                    let Some(wait) = self.step(step) else {
                        return Err(unknown(step));
                    };
                    let Step {
                        kind:
                            StepKind::WaitFor {
                                condition,
                                on_event,
                                ..
                            },
                        ..
                    } = wait
                    else {
                        return Ok(unchanged(enrollment));
                    };
                    if run.holds(condition, Some(*since)) {
                        run.effects.push(Effect::CancelWake(run.wake(step, *until)));
                        run.record(RecordKind::Resumed, Some(step)).reason = Some("event".into());
                        run.go_to(on_event);
                    }
                }
            }
        }
        Ok(run.finish())
    }
}

/// The transition that changes nothing.
fn unchanged(enrollment: &Enrollment) -> Transition {
    Transition {
        enrollment: enrollment.clone(),
        contact: None,
        contact_read: None,
        effects: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::contact::ActivityEvent;
    use crate::engine::{Entry, EntryRequest};

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 9, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn engine() -> Engine {
        let yaml = "id: t\nlaunch: {type: manual}\nsteps:\n  - {id: first, delay: {after: P1D}, next: last}\n  - {id: last, end: success}\n";
        match crate::validate::parse(yaml, crate::Format::Yaml) {
            Ok((scenario, _)) => Engine::new(scenario),
            Err(p) => panic!("{p:?}"),
        }
    }

    /// An enrollment of `engine`, due at `first` on day 2.
    fn entered(engine: &Engine, contact: &Contact) -> Enrollment {
        let entry = engine.enter(EntryRequest {
            contact,
            history: &History::default(),
            running: false,
            last_entered_at: None,
            enrollment_id: "e",
            now: at(1),
        });
        let Entry::Entered(t) = entry else {
            panic!("did not enter: {entry:?}")
        };
        assert_eq!(t.enrollment.pending_wake(), Some(("first", at(2))));
        t.enrollment
    }

    #[test]
    fn an_input_an_enrollment_cannot_react_to_changes_nothing() {
        let contact = Contact::bare("c");
        let event = ActivityEvent {
            at: at(2),
            name: "purchase".into(),
            properties: Default::default(),
        };
        let open = crate::contact::Engagement {
            at: at(2),
            step: "first".into(),
            kind: crate::contact::EngagementKind::Opened,
            url: None,
            link_tags: Vec::new(),
        };
        // Everything in the history, so that any condition could hold.
        let history = History {
            events: vec![event.clone()],
            engagement: vec![open.clone()],
            ..History::default()
        };
        let plain = engine();
        let yaml = "id: t\nlaunch: {type: manual}\nexit_when:\n  - {event: purchase}\nsteps:\n  - {id: first, delay: {after: P1D}, next: last}\n  - {id: last, end: success}\n";
        let exits = match crate::validate::parse(yaml, crate::Format::Yaml) {
            Ok((scenario, _)) => Engine::new(scenario),
            Err(p) => panic!("{p:?}"),
        };
        let inputs = [
            Input::Event(&event),
            Input::Engagement(&open),
            Input::ContactChanged,
        ];
        // A delay without exit_when: nothing can move it, and nothing does.
        let en = entered(&plain, &contact);
        assert!(!plain.may_react(&en));
        // Nor any enrollment of it: without exit_when and wait_for, no state it reaches reacts.
        assert!(!plain.may_ever_react());
        assert!(exits.may_ever_react());
        let waits = "id: t\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: t}\nsteps:\n  - {id: first, send: m, next: wait}\n  - {id: wait, wait_for: {opened: first, timeout: P1D}, on_event: last, on_timeout: last}\n  - {id: last, end: success}\n";
        match crate::validate::parse(waits, crate::Format::Yaml) {
            Ok((scenario, _)) => assert!(Engine::new(scenario).may_ever_react()),
            Err(p) => panic!("{p:?}"),
        }
        for input in inputs {
            let t = plain.try_handle(&en, &contact, &history, input, at(2));
            assert_eq!(
                t.map(|t| t.is_noop() && t.enrollment == en && t.contact.is_none()),
                Ok(true),
                "{input:?}"
            );
        }
        // With exit_when, or waiting on a wait_for, it may.
        assert!(exits.may_react(&entered(&exits, &contact)));
        let mut waiting = en.clone();
        waiting.state = EnrollmentState::Waiting {
            step: "first".into(),
            since: at(1),
            until: at(3),
        };
        assert!(plain.may_react(&waiting));
        let t = exits.handle(
            &entered(&exits, &contact),
            &contact,
            &history,
            inputs[0],
            at(2),
        );
        assert!(!t.is_noop(), "the exit_when event ends it");
    }

    #[test]
    fn only_the_kinds_that_may_change_consent_change_it() {
        // The runtime does not read the contact for the other kinds: this is why it may not.
        let yaml = "id: t\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: s, text: t}\nsteps:\n  - {id: first, send: m, next: last}\n  - {id: last, end: success}\n";
        let engine = match crate::validate::parse(yaml, crate::Format::Yaml) {
            Ok((scenario, _)) => Engine::new(scenario),
            Err(p) => panic!("{p:?}"),
        };
        let contact = Contact::from_json(serde_json::json!({"id": "c", "email": "c@x.io"}))
            .unwrap_or_else(|e| panic!("{e}"));
        for kind in crate::contact::EngagementKind::ALL {
            let engagement = crate::contact::Engagement {
                at: at(2),
                step: "first".into(),
                kind,
                url: None,
                link_tags: Vec::new(),
            };
            let changes = engine.consent_changes(&contact, &engagement);
            assert_eq!(
                !changes.is_empty(),
                kind.may_change_consent(),
                "{kind:?}: {changes:?}"
            );
        }
    }

    #[test]
    fn a_stale_timer_changes_nothing_and_an_unknown_step_is_an_error() {
        let engine = engine();
        let contact = Contact::bare("c");
        let history = History::default();
        let en = entered(&engine, &contact);
        let wake = |step, day| Input::Wake { step, at: at(day) };

        // Stale: a step the scenario has, but not where the enrollment stands.
        for input in [wake("first", 3), wake("last", 2)] {
            let t = engine.try_handle(&en, &contact, &history, input, at(3));
            assert_eq!(t.map(|t| t.is_noop()), Ok(true), "{input:?}");
        }
        // Unknown: a step the scenario version does not have.
        let unknown = UnknownStep {
            scenario: "t".into(),
            step: "ghost".into(),
        };
        let t = engine.try_handle(&en, &contact, &history, wake("ghost", 2), at(2));
        assert_eq!(t, Err(unknown.clone()));
        assert_eq!(unknown.to_string(), "scenario \"t\" has no step \"ghost\"");
        // The lenient entry point keeps treating it as no change.
        assert!(
            engine
                .handle(&en, &contact, &history, wake("ghost", 2), at(2))
                .is_noop()
        );

        // An enrollment waiting on a step the version does not have: an event reaching it
        // is an error too.
        let mut waiting = en.clone();
        waiting.state = EnrollmentState::Waiting {
            step: "ghost".into(),
            since: at(1),
            until: at(3),
        };
        let event = ActivityEvent {
            at: at(2),
            name: "purchase".into(),
            properties: Default::default(),
        };
        let t = engine.try_handle(&waiting, &contact, &history, Input::Event(&event), at(2));
        assert_eq!(t, Err(unknown));

        // An ended enrollment ignores everything, an unknown step included.
        let t = engine.try_handle(&en, &contact, &history, wake("first", 2), at(2));
        let ended = t.map(|t| t.enrollment).unwrap_or_else(|e| panic!("{e}"));
        assert!(!ended.is_running());
        let t = engine.try_handle(&ended, &contact, &history, wake("ghost", 2), at(2));
        assert_eq!(t.map(|t| t.is_noop()), Ok(true));
    }
}
