//! The scripted player: plays an events script through a [`Runtime`] in time order, ticking
//! at each next due instant up to an end, and reports the journal records to a [`Sink`] as
//! their units of work commit. `relance simulate` plays on a [`VirtualClock`] (time jumps to
//! the next due instant) over a [`crate::MemoryStore`]; `relance test` plays on a scaled
//! clock (real sleeps) over SQLite; tests play scripts the same way.
//!
//! Same instant, fixed order: the events first (in file order), then the launch at the start,
//! the recurring and fixed-date launches, the inactivity checks and the timers. So an event at
//! a timeout's instant wins, and an open at a check's instant counts.

use chrono::{DateTime, Utc};
use relance_core::contact::Contact;
use relance_core::journal::Record;
use relance_core::ports::Store;
use relance_core::script::{Happening, ScriptedEvent};
use relance_core::wire::LaunchDetail;

use crate::runtime::{Runtime, RuntimeError, TIMER_BATCH, store_err};

/// How a play's time passes.
pub trait Pace {
    /// The instant now.
    fn now(&self) -> DateTime<Utc>;
    /// Moves toward `next`, which is later than [`Pace::now`]: a virtual clock jumps there, a
    /// scaled clock sleeps a little real time and is asked again.
    fn wait(&mut self, next: DateTime<Utc>);
    /// True when time jumps: the play then ends as soon as nothing more is due.
    fn jumps(&self) -> bool;
}

/// Virtual time: it stands still while the runtime works and jumps to the next due instant.
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock(DateTime<Utc>);

impl VirtualClock {
    /// Stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> VirtualClock {
        VirtualClock(start)
    }
}

impl Pace for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }

    fn wait(&mut self, next: DateTime<Utc>) {
        self.0 = next;
    }

    fn jumps(&self) -> bool {
        true
    }
}

/// What a play reports.
pub trait Sink {
    /// A journal record of `scenario`, once its unit of work committed.
    fn record(&mut self, scenario: &str, record: &Record);

    /// An event the runtime refused (a profile update with a bad address, an engagement of a
    /// contact it does not know): the play goes on when this returns `Ok`, and stops with the
    /// error otherwise (the default).
    fn refused(&mut self, error: RuntimeError) -> Result<(), RuntimeError> {
        Err(error)
    }
}

impl<F: FnMut(&Record)> Sink for F {
    fn record(&mut self, _scenario: &str, record: &Record) {
        self(record)
    }
}

/// A sink that keeps nothing and stops the play at the first refused event (tests that read
/// the store afterwards).
#[derive(Debug, Clone, Copy, Default)]
pub struct Strict;

impl Sink for Strict {
    fn record(&mut self, _scenario: &str, _record: &Record) {}
}

/// An events script, in time order (file order within an instant), played from its front.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Reversed: the next event is the last.
    events: Vec<ScriptedEvent>,
}

impl Script {
    /// The script of these events.
    pub fn new(mut events: Vec<ScriptedEvent>) -> Script {
        events.sort_by_key(ScriptedEvent::at);
        events.reverse();
        Script { events }
    }

    /// Records the events before `start` as history only (see [`Runtime::record_past`]):
    /// conditions see them, nothing is triggered (`relance simulate`; a play without it
    /// plays them as inputs at its start).
    pub fn record_past<S>(
        &mut self,
        rt: &mut Runtime<S>,
        scenario: &str,
        start: DateTime<Utc>,
    ) -> Result<(), RuntimeError>
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        while self.events.last().is_some_and(|e| e.at() < start) {
            let Some(e) = self.events.pop() else { break };
            rt.record_past(scenario, e, start)?;
        }
        Ok(())
    }

    fn next_at(&self) -> Option<DateTime<Utc>> {
        self.events.last().map(ScriptedEvent::at)
    }

    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<ScriptedEvent> {
        if self.next_at()? <= now {
            self.events.pop()
        } else {
            None
        }
    }
}

/// One play of a script through a runtime.
#[derive(Debug, Clone)]
pub struct Play<'a> {
    /// The scenario the script's engagement refers to (and the launch at the start launches).
    pub scenario: &'a str,
    /// When the play starts.
    pub start: DateTime<Utc>,
    /// When it stops: nothing after it is played.
    pub end: DateTime<Utc>,
    /// Launches the scenario for every stored contact at the start, after the events of that
    /// instant (manual launches). A scaled play with it ends early once nothing is due and
    /// the script is done, since no later entry can come.
    pub launch_at_start: bool,
    /// An engagement of a contact that is not stored creates it bare first (a simulation's
    /// events file may name contacts its contacts file does not list), instead of being
    /// refused.
    pub bare_contacts: bool,
}

impl<'a> Play<'a> {
    /// A play of `scenario` from `start` to `end`: no launch at the start, engagement of
    /// unknown contacts refused.
    pub fn new(scenario: &'a str, start: DateTime<Utc>, end: DateTime<Utc>) -> Play<'a> {
        Play {
            scenario,
            start,
            end,
            launch_at_start: false,
            bare_contacts: false,
        }
    }

    /// Launches the scenario for everyone at the start.
    pub fn launching_at_start(mut self, yes: bool) -> Play<'a> {
        self.launch_at_start = yes;
        self
    }

    /// Creates the contacts that engagement names (see [`Play::bare_contacts`]).
    pub fn simulating(mut self) -> Play<'a> {
        self.bare_contacts = true;
        self
    }

    /// Plays `script` through `rt` on `clock`, reporting to `sink`. Stops at the first error
    /// of the runtime (or of `sink`, for a refused event).
    pub fn run<S>(
        &self,
        rt: &mut Runtime<S>,
        mut script: Script,
        clock: &mut impl Pace,
        sink: &mut dyn Sink,
    ) -> Result<(), RuntimeError>
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        rt.report_journal();
        if self.launch_at_start {
            // The events of the start instant come first, then the launch, at the start even
            // on a scaled clock that moved on while the store was set up.
            while let Some(e) = script.pop_due(self.start) {
                self.feed(rt, e, self.start, sink)?;
            }
            let detail = LaunchDetail {
                scenario: self.scenario.to_string(),
                contacts: None,
            };
            rt.launch(detail, self.start)?;
            report(rt, sink);
        }
        loop {
            let now = clock.now().min(self.end);
            while let Some(e) = script.pop_due(now) {
                self.feed(rt, e, now, sink)?;
            }
            tick(rt, now, sink)?;
            if now >= self.end {
                return Ok(());
            }
            let due = rt.next_due()?;
            let next = due.into_iter().chain(script.next_at()).min();
            if clock.jumps() {
                // Everything due at or before `now` was handled, so `next` is later.
                match next {
                    Some(t) if t <= self.end && t > now => clock.wait(t),
                    _ => return Ok(()),
                }
            } else if next.is_none() && self.launch_at_start {
                return Ok(());
            } else {
                clock.wait(next.unwrap_or(self.end).min(self.end));
            }
        }
    }

    fn feed<S>(
        &self,
        rt: &mut Runtime<S>,
        event: ScriptedEvent,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
    ) -> Result<(), RuntimeError>
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        if self.bare_contacts && matches!(event.what, Happening::Engagement(_)) {
            let store = rt.store();
            if store.contact(&event.contact).map_err(store_err)?.is_none() {
                store
                    .put_contact(&Contact::bare(&event.contact), now)
                    .map_err(store_err)?;
            }
        }
        let result = rt.scripted(self.scenario, event, now);
        report(rt, sink);
        match result {
            Ok(()) => Ok(()),
            Err(e) => sink.refused(e),
        }
    }
}

/// Hands the records of the units committed so far to the sink.
fn report<S>(rt: &mut Runtime<S>, sink: &mut dyn Sink)
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    for (scenario, record) in rt.take_journal() {
        sink.record(&scenario, &record);
    }
}

/// Fires everything due at `now`: every launch and inactivity check (in batches), then the
/// timers, those armed meanwhile for `now` included.
fn tick<S>(rt: &mut Runtime<S>, now: DateTime<Utc>, sink: &mut dyn Sink) -> Result<(), RuntimeError>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    loop {
        let done = rt.tick_schedules(now)?;
        report(rt, sink);
        if done.inactivity < TIMER_BATCH {
            break;
        }
    }
    loop {
        let due = rt.due_timers(now)?;
        if due.is_empty() {
            return Ok(());
        }
        for wake in due {
            rt.fire(&wake, now)?;
            report(rt, sink);
        }
    }
}
