//! The virtual-clock player behind `relance simulate`: it plays a scenario over a contacts
//! list and an events script, in time order, and reports each journal record to a sink.
//! Same instant, fixed order: events first, then launches, inactivity checks and timers, so
//! an event at a timeout's instant wins and an open at a check's instant counts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::contact::{ActivityEvent, Contact, Engagement, EngagementKind, History, SendMark};
use crate::duration::IsoDuration;
use crate::engine::{
    Effect, Engine, Enrollment, Entry, EntryRequest, Input, Transition, profile_changes,
};
use crate::journal::Record;
use crate::scenario::{ImportSubset, Launch};
use crate::schedule::inactivity_deadline;

/// One line of an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedEvent {
    /// The contact id.
    pub contact: String,
    /// What happened.
    pub what: Happening,
}

/// An activity event or an engagement.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// `{"event": "purchase", ...}`.
    Activity(ActivityEvent),
    /// `{"opened": "first"}`, `{"clicked": "first", "link": "..."}`, ...
    Engagement(Engagement),
}

impl ScriptedEvent {
    /// When it happens.
    pub fn at(&self) -> DateTime<Utc> {
        match &self.what {
            Happening::Activity(a) => a.at,
            Happening::Engagement(e) => e.at,
        }
    }

    /// Reads one events-file object: `at` (RFC 3339), `contact`, and either `event` (other
    /// keys become its properties) or one engagement key naming a send step.
    pub fn from_json(v: Value) -> Result<ScriptedEvent, String> {
        let Value::Object(mut map) = v else {
            return Err("an event must be a JSON object".into());
        };
        let at = match map.remove("at") {
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    format!("\"at\": \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })
                .and_then(|t| {
                    crate::instant::check(t).map_err(|_| {
                        format!("\"at\": \"{s}\" is outside {}", crate::instant::RANGE_TEXT)
                    })
                })?,
            Some(_) => return Err("\"at\" must be an RFC 3339 string".into()),
            None => return Err("missing \"at\"".into()),
        };
        let contact = match map.remove("contact") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("missing \"contact\" (the contact id)".into()),
        };
        let kinds: Vec<EngagementKind> = EngagementKind::ALL
            .into_iter()
            .filter(|k| map.contains_key(k.as_str()))
            .collect();
        match (map.remove("event"), kinds.as_slice()) {
            (Some(Value::String(name)), []) if !name.is_empty() => {
                Ok(ScriptedEvent { contact, what: Happening::Activity(ActivityEvent { at, name, properties: map }) })
            }
            (Some(_), []) => Err("\"event\" must be a non-empty name".into()),
            (None, [kind]) => {
                let kind = *kind;
                let step = match map.remove(kind.as_str()) {
                    Some(Value::String(s)) if !s.is_empty() => s,
                    _ => return Err(format!("\"{}\" must name the send step", kind.as_str())),
                };
                let url = ["link", "url"].iter().find_map(|k| map.get(*k).and_then(Value::as_str)).map(str::to_string);
                let link_tags = match map.get("link_attribute").or(map.get("link_tags")) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                    _ => Vec::new(),
                };
                Ok(ScriptedEvent { contact, what: Happening::Engagement(Engagement { at, step, kind, url, link_tags }) })
            }
            (None, []) => Err("an event needs \"event\" or one of delivered, opened, clicked, bounced, complained, unsubscribed".into()),
            _ => Err("an event line holds one event: \"event\" or a single engagement key".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Event(usize),
    Launch {
        zone: Option<usize>,
    },
    Inactivity {
        contact: usize,
        stamp: u64,
    },
    Wake {
        contact: usize,
        enrollment: usize,
        step: String,
    },
}

impl Task {
    fn class(&self) -> u8 {
        match self {
            Task::Event(_) => 0,
            Task::Launch { .. } => 1,
            Task::Inactivity { .. } => 2,
            Task::Wake { .. } => 3,
        }
    }
}

/// A queued task: (due, class, sequence, task); the class orders tasks of one instant.
type Queued = (DateTime<Utc>, u8, u64, Task);

/// A scenario played on a virtual clock.
#[derive(Debug)]
pub struct Simulation<'e> {
    engine: &'e Engine,
    contacts: Vec<Contact>,
    index: HashMap<String, usize>,
    histories: Vec<History>,
    /// Per contact: how many activity events so far (an inactivity check fires only if none came since).
    last_activity: Vec<u64>,
    current: Vec<Option<usize>>,
    last_entered: Vec<Option<DateTime<Utc>>>,
    enrollments: Vec<Enrollment>,
    events: Vec<ScriptedEvent>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    zones: Vec<Tz>,
}

impl<'e> Simulation<'e> {
    /// A simulation of `engine`'s scenario over these contacts and events.
    pub fn new(engine: &'e Engine, contacts: Vec<Contact>, mut events: Vec<ScriptedEvent>) -> Self {
        events.sort_by_key(ScriptedEvent::at);
        let mut sim = Simulation {
            engine,
            contacts: Vec::new(),
            index: HashMap::new(),
            histories: Vec::new(),
            last_activity: Vec::new(),
            current: Vec::new(),
            last_entered: Vec::new(),
            enrollments: Vec::new(),
            events,
            queue: BinaryHeap::new(),
            seq: 0,
            zones: Vec::new(),
        };
        for c in contacts {
            match sim.index.get(c.id()) {
                // A later line for the same id updates the contact.
                Some(&i) => sim.contacts[i].merge(c.fields()),
                None => {
                    sim.add_contact(c);
                }
            }
        }
        sim
    }

    fn add_contact(&mut self, c: Contact) -> usize {
        let i = self.contacts.len();
        self.index.insert(c.id().to_string(), i);
        self.contacts.push(c);
        self.histories.push(History::default());
        self.last_activity.push(0);
        self.current.push(None);
        self.last_entered.push(None);
        i
    }

    /// Every enrollment made so far, in the order they started.
    pub fn enrollments(&self) -> &[Enrollment] {
        &self.enrollments
    }

    /// The contacts as they are now (after profile updates and actions).
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    fn push(&mut self, at: DateTime<Utc>, task: Task) {
        self.seq += 1;
        self.queue.push(Reverse((at, task.class(), self.seq, task)));
    }

    /// Plays from `start` for `until`, reporting every record to `sink` in time order.
    /// Returns the instant the clock stopped at.
    pub fn run(
        &mut self,
        start: DateTime<Utc>,
        until: &IsoDuration,
        sink: &mut dyn FnMut(&Record),
    ) -> DateTime<Utc> {
        let scenario = self.engine.scenario();
        let end = until.add_to(start, scenario.timezone);
        // What happened before the start is history: it triggers nothing.
        for i in 0..self.events.len() {
            let at = self.events[i].at();
            if at < start {
                let c = self.contact_index(&self.events[i].contact.clone());
                self.record_happening(c, i);
            } else if at <= end {
                self.push(at, Task::Event(i));
            }
        }
        self.schedule_launches(start, end);
        while let Some(Reverse((at, _, _, task))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.process(at, task, end, sink);
        }
        end
    }

    fn schedule_launches(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) {
        let scenario = self.engine.scenario();
        // With local_time, each zone among the contacts has its own occurrences.
        let zones: Vec<Option<usize>> = if scenario.local_time
            && matches!(
                scenario.launch,
                Launch::Recurring(_) | Launch::FixedDates(_)
            ) {
            let mut zones: Vec<Tz> = self
                .contacts
                .iter()
                .map(|c| self.engine.zone_for(c, None))
                .collect();
            zones.sort_by_key(|z| z.name());
            zones.dedup();
            self.zones = zones;
            (0..self.zones.len()).map(Some).collect()
        } else {
            vec![None]
        };
        for zone in zones {
            let tz = zone.map_or(scenario.timezone, |z| self.zones[z]);
            let times = match &scenario.launch {
                Launch::Manual | Launch::AfterImport(_) => vec![start],
                Launch::Recurring(schedule) => schedule.occurrences(tz, start, end),
                Launch::FixedDates(dates) => {
                    let mut list: Vec<_> = dates
                        .iter()
                        .map(|d| d.resolve(tz))
                        .filter(|t| *t >= start && *t <= end)
                        .collect();
                    list.sort();
                    list.dedup();
                    list
                }
                // `event: manual` is launched when asked, like a manual launch.
                Launch::Trigger(t) if t.event == "manual" => vec![start],
                Launch::Trigger(_) => Vec::new(),
            };
            for t in times {
                self.push(t, Task::Launch { zone });
            }
        }
    }

    fn contact_index(&mut self, id: &str) -> usize {
        match self.index.get(id) {
            Some(&i) => i,
            // Events may name contacts the file does not list (a contact.created, say).
            None => self.add_contact(Contact::bare(id)),
        }
    }

    /// Adds an event's effect on the contact and its history; true when the profile changed.
    fn record_happening(&mut self, c: usize, i: usize) -> bool {
        match &self.events[i].what {
            Happening::Activity(a) => {
                let mut changed = false;
                if let Some(changes) = profile_changes(&a.name, &a.properties) {
                    // The same consent rule as the runtime: an opt-out in the profile stands.
                    let screened = crate::consent::screen(Some(&self.contacts[c]), changes);
                    self.contacts[c].merge(&screened.changes);
                    changed = true;
                }
                self.last_activity[c] += 1;
                self.histories[c].events.push(a.clone());
                changed
            }
            Happening::Engagement(e) => {
                for (change, _) in self.engine.consent_changes(&self.contacts[c], e) {
                    crate::consent::apply_change(&mut self.contacts[c], &change);
                }
                self.histories[c].engagement.push(e.clone());
                false
            }
        }
    }

    fn process(
        &mut self,
        now: DateTime<Utc>,
        task: Task,
        end: DateTime<Utc>,
        sink: &mut dyn FnMut(&Record),
    ) {
        let engine = self.engine;
        match task {
            Task::Event(i) => {
                let c = self.contact_index(&self.events[i].contact.clone());
                self.record_happening(c, i);
                if let Some(e) = self.current[c] {
                    let input = match &self.events[i].what {
                        Happening::Activity(a) => Input::Event(a),
                        Happening::Engagement(g) => Input::Engagement(g),
                    };
                    let t = engine.handle(
                        &self.enrollments[e],
                        &self.contacts[c],
                        &self.histories[c],
                        input,
                        now,
                    );
                    self.apply(c, e, t, now, end, sink);
                }
                if let (Launch::Trigger(trigger), Happening::Activity(a)) =
                    (&engine.scenario().launch, &self.events[i].what)
                {
                    if trigger.fires_on(&a.name, &a.properties) {
                        self.try_enter(c, now, end, sink);
                    } else if let (Some(source), Some(minutes)) =
                        (trigger.inactivity_source(), trigger.inactivity_minutes)
                        && a.name == source
                        // A deadline past 9999-12-31 is never reached (the events file
                        // refuses instants out of range; this guards the arithmetic).
                        && let Some(due) = inactivity_deadline(a.at, minutes)
                    {
                        self.push(
                            due,
                            Task::Inactivity {
                                contact: c,
                                stamp: self.last_activity[c],
                            },
                        );
                    }
                }
            }
            Task::Launch { zone } => {
                // In a simulation the contacts file is the import: every contact is new.
                if matches!(
                    engine.scenario().launch,
                    Launch::AfterImport(ImportSubset::Modified)
                ) {
                    return;
                }
                for c in 0..self.contacts.len() {
                    if let Some(z) = zone
                        && engine.zone_for(&self.contacts[c], None) != self.zones[z]
                    {
                        continue;
                    }
                    self.try_enter(c, now, end, sink);
                }
            }
            Task::Inactivity { contact, stamp } => {
                // Any later event of the contact (another view, a purchase) cancels it.
                if self.last_activity[contact] == stamp {
                    self.try_enter(contact, now, end, sink);
                }
            }
            Task::Wake {
                contact,
                enrollment,
                step,
            } => {
                if self.current[contact] == Some(enrollment) {
                    let t = engine.handle(
                        &self.enrollments[enrollment],
                        &self.contacts[contact],
                        &self.histories[contact],
                        Input::Wake {
                            step: &step,
                            at: now,
                        },
                        now,
                    );
                    self.apply(contact, enrollment, t, now, end, sink);
                }
            }
        }
    }

    fn try_enter(
        &mut self,
        c: usize,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
        sink: &mut dyn FnMut(&Record),
    ) {
        let running = self.current[c].is_some_and(|e| self.enrollments[e].is_running());
        let id = format!(
            "{}:{}:{}",
            self.engine.scenario().id,
            self.contacts[c].id(),
            self.enrollments.len() + 1
        );
        let request = EntryRequest {
            contact: &self.contacts[c],
            history: &self.histories[c],
            running,
            last_entered_at: self.last_entered[c],
            enrollment_id: &id,
            now,
        };
        match self.engine.enter(request) {
            Entry::Entered(t) => {
                let e = self.enrollments.len();
                self.enrollments.push(t.enrollment.clone());
                self.current[c] = Some(e);
                self.last_entered[c] = Some(now);
                self.apply(c, e, t, now, end, sink);
            }
            Entry::Skipped { record, .. } => sink(&record),
        }
    }

    fn apply(
        &mut self,
        c: usize,
        e: usize,
        t: Transition,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
        sink: &mut dyn FnMut(&Record),
    ) {
        for effect in &t.effects {
            match effect {
                Effect::Record(r) => sink(r),
                Effect::Send(_) => {
                    // One scenario is played: its sends are all the contact's sends.
                    self.histories[c].sends.push(SendMark { at: now });
                    self.histories[c].contact_sends.push(SendMark { at: now });
                }
                Effect::ScheduleWake(w) => {
                    if w.at <= end {
                        self.push(
                            w.at,
                            Task::Wake {
                                contact: c,
                                enrollment: e,
                                step: w.step.clone(),
                            },
                        );
                    }
                }
                Effect::CancelWake(_)
                | Effect::SetField { .. }
                | Effect::Action { .. }
                | Effect::Ended { .. } => {}
            }
        }
        if let Some(contact) = t.contact {
            self.contacts[c] = contact;
        }
        self.enrollments[e] = t.enrollment;
    }
}

/// Reads a contacts file's lines (JSON lines), collecting every bad line with its number.
pub fn contacts_from_json_lines(text: &str) -> Result<Vec<Contact>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => match Contact::from_json(v) {
                Ok(c) => out.push(c),
                Err(e) => errors.push(format!("line {}: {e}", n + 1)),
            },
            Err(e) => errors.push(format!("line {}: not JSON: {e}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Reads an events file's lines (JSON lines), collecting every bad line with its number.
pub fn events_from_json_lines(text: &str) -> Result<Vec<ScriptedEvent>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(ScriptedEvent::from_json)
        {
            Ok(e) => out.push(e),
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
