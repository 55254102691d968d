//! `relance simulate`: a scenario played over a contacts list and an events script by the
//! runtime itself, on a [`MemoryStore`] and a [`VirtualClock`], its journal reported to a
//! sink as it is written. The contacts file is the import: every contact is there from the
//! start (a later line for the same id updates it); the events before the start are history.

use chrono::{DateTime, Utc};
use relance_core::IsoDuration;
use relance_core::contact::Contact;
use relance_core::journal::RecordKind;
use relance_core::ports::{ContactStore, SourceFormat};
use relance_core::scenario::{ImportSubset, Launch, Scenario};
use relance_core::script::ScriptedEvent;

use crate::memory::MemoryStore;
use crate::player::{Play, Script, Sink, VirtualClock};
use crate::runtime::{Runtime, RuntimeError, store_err};

/// What a simulation plays.
#[derive(Debug, Clone)]
pub struct Simulation<'a> {
    /// The scenario, already checked (warnings do not stop a simulation).
    pub scenario: Scenario,
    /// Its file's text and syntax (stored as its version).
    pub text: &'a str,
    /// The syntax of `text`.
    pub format: SourceFormat,
    /// The workspace policy's text (quiet hours, a frequency cap), if any.
    pub policy: Option<&'a str>,
    /// The shared message store's text, if any.
    pub messages: Option<&'a str>,
    /// The contacts, in file order.
    pub contacts: Vec<Contact>,
    /// The events script.
    pub events: Vec<ScriptedEvent>,
    /// When the play starts.
    pub start: DateTime<Utc>,
    /// How long it plays (on the scenario's calendar).
    pub until: IsoDuration,
}

/// What a simulation leaves behind.
#[derive(Debug)]
pub struct Simulated {
    /// The instant the clock stopped at.
    pub end: DateTime<Utc>,
    /// The runtime, its store holding the contacts and enrollments as they ended.
    pub runtime: Runtime<MemoryStore>,
}

impl Simulation<'_> {
    /// A simulation of a scenario file with no policy, no shared messages, no contacts and no
    /// events yet.
    pub fn new<'a>(
        scenario: Scenario,
        text: &'a str,
        format: SourceFormat,
        start: DateTime<Utc>,
        until: IsoDuration,
    ) -> Simulation<'a> {
        Simulation {
            scenario,
            text,
            format,
            policy: None,
            messages: None,
            contacts: Vec::new(),
            events: Vec::new(),
            start,
            until,
        }
    }

    /// Plays it, reporting every journal record to `sink` as its unit of work commits.
    pub fn run(self, sink: &mut dyn Sink) -> Result<Simulated, RuntimeError> {
        let start = self.start;
        let mut store = MemoryStore::streaming();
        // The winner rule counts from the journal: the records it reads are kept.
        if self.scenario.winner_steps().next().is_some() {
            store.keep_journal_of(&[
                RecordKind::Sent,
                RecordKind::Opened,
                RecordKind::Clicked,
                RecordKind::Converted,
            ]);
        }
        let mut rt = Runtime::new(store);
        if let Some(policy) = self.policy {
            rt.set_policy(policy, start)?;
        }
        if let Some(messages) = self.messages {
            rt.set_messages(messages, start)?;
        }
        let store = rt.store();
        for c in self.contacts {
            match store.contact(c.id()).map_err(store_err)? {
                // A later line for the same id updates the contact.
                Some(mut stored) => {
                    stored.merge(c.fields());
                    store.put_contact(&stored, start).map_err(store_err)?;
                }
                None => {
                    store.put_contact(&c, start).map_err(store_err)?;
                }
            }
        }
        let id = self.scenario.id.clone();
        let end = self.until.add_to(start, self.scenario.timezone);
        // Every contact of the file is new, so an import launch takes all but `modified`.
        let launch_at_start = match &self.scenario.launch {
            Launch::Manual => true,
            Launch::AfterImport(subset) => *subset != ImportSubset::Modified,
            // `event: manual` is launched when asked, like a manual launch.
            Launch::Trigger(t) => t.event == "manual",
            Launch::Recurring(_) | Launch::FixedDates(_) => false,
        };
        rt.put_checked(self.scenario, self.text, self.format, start)?;
        let mut script = Script::new(self.events);
        script.record_past(&mut rt, &id, start)?;
        // Activated after the history, so the launch zones see every contact.
        rt.activate_checked(&id, start)?;
        Play::new(&id, start, end)
            .launching_at_start(launch_at_start)
            .simulating()
            .run(&mut rt, script, &mut VirtualClock::new(start), sink)?;
        Ok(Simulated { end, runtime: rt })
    }
}
