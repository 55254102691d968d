//! `MemoryStore`: every storage port in memory, the reference implementation of their
//! contracts. `relance simulate` plays scenarios on it; tests use it where the database does
//! not matter. Hash maps and ordered due indexes keep each call cheap; units of work keep an
//! undo log, so a unit that fails leaves no partial write.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use relance_core::consent::ConsentEvent;
use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, HistoryNeeds, SendMark,
};
use relance_core::engine::{Enrollment, Send, Wake};
use relance_core::instant;
use relance_core::journal::{Record, RecordKind};
use relance_core::policy::Retained;
use relance_core::ports::{
    ConsentStore, ContactChange, ContactStore, ConversionWatch, Due, EnrollmentStore, EntryMark,
    InactivityCheck, JournalStore, LaunchTime, ScenarioEntry, ScenarioSource, ScenarioStore,
    SourceFormat, Status, Store, TimerStore, UnreadableRow,
};
use relance_core::scenario::Action;

/// A multiply-and-rotate hash (as rustc-hash 2 does) for the store's maps: several times
/// faster than SipHash on short ids, and the ids are the store user's own, so flooding is no
/// concern here. The final rotation brings the well-mixed high bits down to the bucket index.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = self
            .0
            .wrapping_add(word)
            .wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

/// A hash map with the store's hash (the runtime's engine cache uses it too).
pub(crate) type Map<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;
type Set<K> = HashSet<K, BuildHasherDefault<Fx>>;

/// A storage failure of the memory store.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The enrollment changed since it was read, or a second one would run for the same
    /// scenario and contact: the input was stale or duplicated.
    #[error("enrollment {0} changed concurrently (version conflict)")]
    Conflict(String),
    /// An instant to store is outside 1970-01-01..9999-12-31 (the same rule as the other
    /// stores, so the memory store refuses what they refuse).
    #[error("{what}: {source}")]
    OutOfRange {
        /// What was written.
        what: &'static str,
        /// The instant's error.
        source: instant::OutOfRange,
    },
}

fn checked(what: &'static str, t: DateTime<Utc>) -> Result<DateTime<Utc>, MemoryError> {
    instant::check(t).map_err(|source| MemoryError::OutOfRange { what, source })
}

/// One queued outbox item: a send or an action, written once per idempotency key.
#[derive(Debug, Clone)]
enum Queued {
    Send {
        scenario: String,
        send: Box<Send>,
    },
    Action {
        scenario: String,
        enrollment: String,
        contact: String,
        step: String,
        action: Box<Action>,
    },
}

#[derive(Debug, Clone)]
struct OutboxRow {
    key: Arc<str>,
    at: DateTime<Utc>,
    /// The contact of a send (its history counts it until the row is purged).
    send_to: Option<String>,
    /// None in a streaming store: the key and instant are kept, the message is not.
    item: Option<Queued>,
}

impl OutboxRow {
    fn message(&self) -> Option<serde_json::Value> {
        Some(match self.item.as_ref()? {
            Queued::Send { scenario, send } => {
                relance_core::ports::send_message(scenario, send, self.at)
            }
            Queued::Action {
                scenario,
                enrollment,
                contact,
                step,
                action,
            } => {
                relance_core::ports::action_message(
                    scenario, enrollment, contact, step, action, self.at,
                )
                .1
            }
        })
    }
}

/// A send to a contact, as history reads it (its outbox row, for the retention purge).
#[derive(Debug, Clone)]
struct SendRow {
    scenario: Arc<str>,
    at: DateTime<Utc>,
    seq: u64,
}

/// Everything stored about one contact id (activity may come before the contact itself).
#[derive(Debug, Default)]
struct Person {
    /// The id, shared with the undo log and the contact order.
    id: Arc<str>,
    contact: Option<Contact>,
    /// In (at, append) order.
    activity: Vec<ActivityEvent>,
    /// (scenario, engagement) in (at, append) order.
    engagement: Vec<(Arc<str>, Engagement)>,
    /// In (at, append) order.
    sends: Vec<SendRow>,
    /// The consent log, in (at, append) order.
    consent: Vec<ConsentEvent>,
    /// Pending inactivity checks by scenario: (due, arm sequence).
    inactivity: Map<String, (DateTime<Utc>, u64)>,
    /// Conversion watches, in entry order.
    watches: Vec<ConversionWatch>,
}

/// The undo log capacity kept between units of work.
const UNDO_KEPT: usize = 4_096;

/// A kept dead letter: (kind, payload, reason, at).
type DeadLetter = (String, String, String, DateTime<Utc>);

/// The inverse of one write, replayed backwards when a unit of work fails.
#[derive(Debug)]
enum Undo {
    Scenario(String, Option<ScenarioEntry>),
    VersionPushed(String),
    Setting(String, Option<String>),
    Contact(Arc<str>, Option<Contact>),
    ContactOrderPushed,
    ActivityInserted(Arc<str>, usize),
    ActivityRemoved(Arc<str>, usize, ActivityEvent),
    EngagementInserted(Arc<str>, usize),
    EngagementRemoved(Arc<str>, usize, (Arc<str>, Engagement)),
    SendInserted(Arc<str>, usize),
    SendRemoved(Arc<str>, usize, SendRow),
    ConsentInserted(Arc<str>, usize),
    InputKey(String),
    /// An enrollment first saved (its id).
    EnrollmentAdded(String),
    /// An enrollment saved again: the row it replaced (its id is the enrollment's own).
    EnrollmentReplaced((Enrollment, u32, u64)),
    Running(Arc<str>, Arc<str>, Option<String>),
    EntryMark(Arc<str>, Arc<str>, Option<EntryMark>),
    /// A contact's conversion watches before a change.
    Watches(Arc<str>, Vec<ConversionWatch>),
    TimerAdded(DateTime<Utc>, u64),
    TimerRemoved(u64, Wake),
    Inactivity(String, String, Option<(DateTime<Utc>, u64)>),
    Launch(String, String, Option<DateTime<Utc>>),
    OutboxAdded(u64),
    OutboxKey(Arc<str>),
    OutboxRemoved(u64, OutboxRow),
    JournalPushed(String),
    JournalRemoved(String, usize, Record),
    DeadLetterPushed,
    DeadLetterRemoved(usize, DeadLetter),
}

/// Every port in memory (see the module doc).
///
/// Ties are broken by arrival: contact ids come back in the order the contacts were first
/// written, and due items of one instant in the order they were armed (launches of one
/// instant by scenario and zone), which is the order `relance simulate` has always reported.
#[derive(Debug, Default)]
pub struct MemoryStore {
    scenarios: BTreeMap<String, ScenarioEntry>,
    versions: Map<String, Vec<ScenarioSource>>,
    settings: Map<String, String>,
    people: Map<Arc<str>, Person>,
    /// Contact ids in the order they were first written.
    order: Vec<Arc<str>>,
    /// Scenario ids shared by the rows that name them (sends, engagement).
    names: Set<Arc<str>>,
    inputs: Set<String>,
    /// id → (enrollment, its scenario version, when it started in the store's sequence).
    enrollments: Map<String, (Enrollment, u32, u64)>,
    /// scenario → contact → the running enrollment's id (the contact ids are the people's
    /// own, shared).
    running: Map<String, Map<Arc<str>, String>>,
    /// scenario → contact → the once_per mark.
    marks: Map<String, Map<Arc<str>, EntryMark>>,
    /// The timers in due order: (due, arm sequence). The ordered index holds only these small
    /// keys (its nodes stay small, and moving entries within them is cheap); the timers
    /// themselves are in `wakes`.
    timers: BTreeSet<(DateTime<Utc>, u64)>,
    /// arm sequence → the timer.
    wakes: Map<u64, Wake>,
    /// hash of (enrollment, step, due) → the arm sequences of the timers with that hash, so
    /// arming twice keeps one: the index owns no copy of the ids (no allocation per timer),
    /// and a hit is confirmed against the timer itself.
    timer_keys: Map<u64, Seqs>,
    /// (due, arm sequence) → (scenario, contact).
    inactivity: BTreeMap<(DateTime<Utc>, u64), (String, String)>,
    /// (scenario, zone) → next launch.
    launches: BTreeMap<(String, String), DateTime<Utc>>,
    outbox: BTreeMap<u64, OutboxRow>,
    outbox_keys: Map<Arc<str>, u64>,
    /// Outbox rows up to this sequence were handed on (the retention purge only takes those).
    delivered: u64,
    journal: Map<String, Vec<Record>>,
    dead_letters: Vec<DeadLetter>,
    seq: u64,
    /// Depth of nested units of work, and the undo log of the outermost one.
    depth: usize,
    undo: Vec<Undo>,
    /// Whether journal records and outbox messages are kept (see [`MemoryStore::streaming`]).
    keep: bool,
    /// Journal records of these kinds are kept even when streaming (see
    /// [`MemoryStore::keep_journal_of`]).
    kept_kinds: Vec<RecordKind>,
}

impl MemoryStore {
    /// An empty store that keeps everything it is given.
    pub fn new() -> MemoryStore {
        MemoryStore {
            keep: true,
            ..MemoryStore::default()
        }
    }

    /// An empty store for long plays whose journal is reported as it is written: it does not keep journal records (so
    /// [`JournalStore::records`] answers none) nor outbox messages (the idempotency keys and
    /// the send instants history needs are kept), so memory grows with contacts and
    /// enrollments only.
    pub fn streaming() -> MemoryStore {
        MemoryStore::default()
    }

    /// Keeps the journal records of these kinds even when streaming: what the winner rule
    /// reads back (sends, opens, clicks, conversions) when a scenario tests variants.
    pub fn keep_journal_of(&mut self, kinds: &[RecordKind]) {
        self.kept_kinds = kinds.to_vec();
    }

    /// Outbox messages after sequence `after`, at most `limit`, as (sequence, kind, message).
    pub fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Vec<(u64, &'static str, serde_json::Value)> {
        self.outbox
            .range(after + 1..)
            .filter_map(|(seq, row)| {
                let kind = match row.item.as_ref()? {
                    Queued::Send { .. } => "send",
                    Queued::Action { .. } => "action",
                };
                Some((*seq, kind, row.message()?))
            })
            .take(limit)
            .collect()
    }

    /// Marks the outbox handed on up to `seq` (the retention purge only deletes such rows).
    pub fn set_outbox_delivered(&mut self, seq: u64) {
        self.delivered = self.delivered.max(seq);
    }

    /// The dead letters, oldest first: (kind, payload, reason).
    pub fn dead_letters(&self) -> Vec<(String, String, String)> {
        self.dead_letters
            .iter()
            .map(|(k, p, r, _)| (k.clone(), p.clone(), r.clone()))
            .collect()
    }

    /// Every enrollment, in the order they started.
    pub fn enrollments(&self) -> Vec<Enrollment> {
        let mut all: Vec<&(Enrollment, u32, u64)> = self.enrollments.values().collect();
        all.sort_by_key(|(_, _, started)| *started);
        all.into_iter().map(|(e, _, _)| e.clone()).collect()
    }

    /// Every contact, in the order they were first written.
    pub fn contacts(&self) -> Vec<Contact> {
        self.order
            .iter()
            .filter_map(|id| self.people.get(id)?.contact.clone())
            .collect()
    }

    /// Counts of enrollments: (running, ended).
    pub fn enrollment_counts(&self, scenario: Option<&str>) -> (u64, u64) {
        let (mut running, mut ended) = (0, 0);
        for (e, _, _) in self.enrollments.values() {
            if scenario.is_some_and(|s| s != e.scenario) {
                continue;
            }
            if e.is_running() {
                running += 1;
            } else {
                ended += 1;
            }
        }
        (running, ended)
    }

    /// The shared copy of a scenario id.
    fn name(&mut self, id: &str) -> Arc<str> {
        if let Some(n) = self.names.get(id) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(id);
        self.names.insert(n.clone());
        n
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn log(&mut self, undo: Undo) {
        if self.depth > 0 {
            self.undo.push(undo);
        }
    }

    fn person(&mut self, id: &str) -> &mut Person {
        if !self.people.contains_key(id) {
            let id: Arc<str> = Arc::from(id);
            let person = Person {
                id: id.clone(),
                ..Person::default()
            };
            self.people.insert(id, person);
        }
        self.people.get_mut(id).expect("inserted above")
    }

    fn active(&self, scenario: &str) -> bool {
        self.scenarios
            .get(scenario)
            .is_some_and(|s| s.status == Status::Active)
    }

    /// Whether a timer's enrollment belongs to an active scenario (a timer of an unknown
    /// enrollment never fires, as in the database stores' join).
    fn timer_live(&self, w: &Wake) -> bool {
        self.enrollments
            .get(&w.enrollment)
            .is_some_and(|(e, _, _)| self.active(&e.scenario))
    }

    /// The arm sequence of a timer, if armed.
    fn timer_seq(&self, w: &Wake) -> Option<u64> {
        let seqs = self.timer_keys.get(&timer_hash(w))?;
        seqs.iter().find(|seq| {
            self.wakes
                .get(seq)
                .is_some_and(|t| t.at == w.at && t.enrollment == w.enrollment && t.step == w.step)
        })
    }

    fn index_timer(&mut self, w: &Wake, seq: u64) {
        let h = timer_hash(w);
        match self.timer_keys.get_mut(&h) {
            Some(seqs) => seqs.push(seq),
            None => {
                self.timer_keys.insert(h, Seqs::One(seq));
            }
        }
    }

    fn unindex_timer(&mut self, w: &Wake, seq: u64) {
        let h = timer_hash(w);
        if let Some(seqs) = self.timer_keys.get_mut(&h)
            && seqs.remove(seq)
        {
            self.timer_keys.remove(&h);
        }
    }

    /// The shared copy of a contact id: the person's own when there is one (no allocation).
    fn contact_key(&self, contact: &str) -> Arc<str> {
        self.people
            .get_key_value(contact)
            .map_or_else(|| Arc::from(contact), |(id, _)| id.clone())
    }

    fn set_running(&mut self, scenario: &str, contact: &str, id: Option<String>) {
        let key = self.contact_key(contact);
        let map = nested(&mut self.running, scenario);
        let before = match id {
            Some(id) => map.insert(key.clone(), id),
            None => map.remove(contact),
        };
        let scenario = self.name(scenario);
        self.log(Undo::Running(scenario, key, before));
    }

    fn put_inactivity(
        &mut self,
        scenario: &str,
        contact: &str,
        value: Option<(DateTime<Utc>, u64)>,
    ) {
        let person = self.person(contact);
        let before = match value {
            Some(v) => person.inactivity.insert(scenario.to_string(), v),
            None => person.inactivity.remove(scenario),
        };
        if let Some(b) = before {
            self.inactivity.remove(&b);
        }
        if let Some(v) = value {
            self.inactivity
                .insert(v, (scenario.to_string(), contact.to_string()));
        }
        self.log(Undo::Inactivity(
            scenario.to_string(),
            contact.to_string(),
            before,
        ));
    }

    fn remove_outbox(&mut self, seq: u64) {
        let Some(row) = self.outbox.remove(&seq) else {
            return;
        };
        self.outbox_keys.remove(&row.key);
        if let Some(contact) = &row.send_to {
            self.remove_send_row(contact, seq);
        }
        self.log(Undo::OutboxRemoved(seq, row));
    }

    fn remove_send_row(&mut self, contact: &str, seq: u64) {
        let Some(person) = self.people.get_mut(contact) else {
            return;
        };
        if let Some(i) = person.sends.iter().position(|s| s.seq == seq) {
            let row = person.sends.remove(i);
            let id = person.id.clone();
            self.log(Undo::SendRemoved(id, i, row));
        }
    }

    fn rollback(&mut self, to: usize) {
        while self.undo.len() > to {
            let Some(u) = self.undo.pop() else { break };
            self.revert(u);
        }
    }

    fn revert(&mut self, u: Undo) {
        match u {
            Undo::Scenario(id, before) => match before {
                Some(e) => {
                    self.scenarios.insert(id, e);
                }
                None => {
                    self.scenarios.remove(&id);
                }
            },
            Undo::VersionPushed(id) => {
                if let Some(v) = self.versions.get_mut(&id) {
                    v.pop();
                }
            }
            Undo::Setting(name, before) => match before {
                Some(t) => {
                    self.settings.insert(name, t);
                }
                None => {
                    self.settings.remove(&name);
                }
            },
            Undo::Contact(id, before) => self.person(&id).contact = before,
            Undo::ContactOrderPushed => {
                self.order.pop();
            }
            Undo::ActivityInserted(c, i) => {
                self.person(&c).activity.remove(i);
            }
            Undo::ActivityRemoved(c, i, e) => self.person(&c).activity.insert(i, e),
            Undo::EngagementInserted(c, i) => {
                self.person(&c).engagement.remove(i);
            }
            Undo::EngagementRemoved(c, i, e) => self.person(&c).engagement.insert(i, e),
            Undo::SendInserted(c, i) => {
                self.person(&c).sends.remove(i);
            }
            Undo::SendRemoved(c, i, s) => self.person(&c).sends.insert(i, s),
            Undo::ConsentInserted(c, i) => {
                self.person(&c).consent.remove(i);
            }
            Undo::InputKey(k) => {
                self.inputs.remove(&k);
            }
            Undo::EnrollmentAdded(id) => {
                self.enrollments.remove(&id);
            }
            Undo::EnrollmentReplaced(before) => match self.enrollments.get_mut(&before.0.id) {
                Some(stored) => *stored = before,
                None => {
                    self.enrollments.insert(before.0.id.clone(), before);
                }
            },
            Undo::Running(s, c, before) => {
                let map = nested(&mut self.running, &s);
                match before {
                    Some(id) => {
                        map.insert(c, id);
                    }
                    None => {
                        map.remove(&c);
                    }
                }
            }
            Undo::EntryMark(s, c, before) => {
                let map = nested(&mut self.marks, &s);
                match before {
                    Some(m) => {
                        map.insert(c, m);
                    }
                    None => {
                        map.remove(&c);
                    }
                }
            }
            Undo::Watches(c, before) => self.person(&c).watches = before,
            Undo::TimerAdded(at, seq) => {
                self.timers.remove(&(at, seq));
                if let Some(w) = self.wakes.remove(&seq) {
                    self.unindex_timer(&w, seq);
                }
            }
            Undo::TimerRemoved(seq, w) => {
                self.index_timer(&w, seq);
                self.timers.insert((w.at, seq));
                self.wakes.insert(seq, w);
            }
            Undo::Inactivity(s, c, before) => {
                let person = self.person(&c);
                let now = match before {
                    Some(b) => person.inactivity.insert(s.clone(), b),
                    None => person.inactivity.remove(&s),
                };
                if let Some(n) = now {
                    self.inactivity.remove(&n);
                }
                if let Some(b) = before {
                    self.inactivity.insert(b, (s, c));
                }
            }
            Undo::Launch(s, z, before) => match before {
                Some(at) => {
                    self.launches.insert((s, z), at);
                }
                None => {
                    self.launches.remove(&(s, z));
                }
            },
            Undo::OutboxAdded(seq) => {
                self.outbox.remove(&seq);
            }
            Undo::OutboxKey(key) => {
                self.outbox_keys.remove(&key);
            }
            Undo::OutboxRemoved(seq, row) => {
                self.outbox_keys.insert(row.key.clone(), seq);
                self.outbox.insert(seq, row);
            }
            Undo::JournalPushed(s) => {
                if let Some(v) = self.journal.get_mut(&s) {
                    v.pop();
                }
            }
            Undo::JournalRemoved(s, i, r) => self.journal.entry(s).or_default().insert(i, r),
            Undo::DeadLetterPushed => {
                self.dead_letters.pop();
            }
            Undo::DeadLetterRemoved(i, d) => self.dead_letters.insert(i, d),
        }
    }
}

/// The index key of a timer: its identity (enrollment, step, due).
fn timer_hash(w: &Wake) -> u64 {
    let mut h = Fx::default();
    (&w.enrollment, &w.step, w.at).hash(&mut h);
    h.finish()
}

/// The arm sequences of the timers that share an index hash: nearly always one, kept
/// without an allocation.
#[derive(Debug)]
enum Seqs {
    One(u64),
    Many(Vec<u64>),
}

impl Seqs {
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Seqs::One(seq) => (Some(*seq), &[][..]),
            Seqs::Many(seqs) => (None, &seqs[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn push(&mut self, seq: u64) {
        match self {
            Seqs::One(first) => *self = Seqs::Many(vec![*first, seq]),
            Seqs::Many(seqs) => seqs.push(seq),
        }
    }

    /// Removes `seq`; true when none is left.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Seqs::One(first) => *first == seq,
            Seqs::Many(seqs) => {
                seqs.retain(|s| *s != seq);
                seqs.is_empty()
            }
        }
    }
}

/// The inner map of `key`, made if missing (without allocating a key when it is there).
fn nested<'m, V>(
    map: &'m mut Map<String, Map<Arc<str>, V>>,
    key: &str,
) -> &'m mut Map<Arc<str>, V> {
    if !map.contains_key(key) {
        map.insert(key.to_string(), Map::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Where an item stamped `at` goes in a list kept in (at, append) order.
fn slot<T>(list: &[T], at: DateTime<Utc>, at_of: impl Fn(&T) -> DateTime<Utc>) -> usize {
    list.partition_point(|x| at_of(x) <= at)
}

impl ScenarioStore for MemoryStore {
    type Error = MemoryError;

    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, MemoryError> {
        Ok(self
            .scenarios
            .values()
            .filter(|s| status.is_none_or(|st| s.status == st))
            .cloned()
            .collect())
    }

    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, MemoryError> {
        Ok(self.scenarios.get(id).cloned())
    }

    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, MemoryError> {
        Ok(self
            .versions
            .get(id)
            .and_then(|v| v.get((version as usize).checked_sub(1)?))
            .cloned())
    }

    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        _now: DateTime<Utc>,
    ) -> Result<u32, MemoryError> {
        let before = self.scenarios.get(id).cloned();
        let version = before.as_ref().map_or(0, |e| e.latest_version) + 1;
        self.versions
            .entry(id.to_string())
            .or_default()
            .push(ScenarioSource {
                id: id.to_string(),
                version,
                format,
                text: text.to_string(),
            });
        self.log(Undo::VersionPushed(id.to_string()));
        let entry = match &before {
            Some(e) => ScenarioEntry {
                latest_version: version,
                ..e.clone()
            },
            None => ScenarioEntry {
                id: id.to_string(),
                status: Status::Draft,
                latest_version: version,
                active_version: None,
            },
        };
        self.scenarios.insert(id.to_string(), entry);
        self.log(Undo::Scenario(id.to_string(), before));
        Ok(version)
    }

    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        _now: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        let Some(entry) = self.scenarios.get_mut(id) else {
            return Ok(());
        };
        let before = entry.clone();
        entry.status = status;
        if active_version.is_some() {
            entry.active_version = active_version;
        }
        self.log(Undo::Scenario(id.to_string(), Some(before)));
        Ok(())
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>, MemoryError> {
        Ok(self.settings.get(name).cloned())
    }

    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        _now: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        let before = self.settings.insert(name.to_string(), text.to_string());
        self.log(Undo::Setting(name.to_string(), before));
        Ok(())
    }
}

impl ContactStore for MemoryStore {
    type Error = MemoryError;

    fn contact(&mut self, id: &str) -> Result<Option<Contact>, MemoryError> {
        Ok(self.people.get(id).and_then(|p| p.contact.clone()))
    }

    fn put_contact(
        &mut self,
        contact: &Contact,
        _now: DateTime<Utc>,
    ) -> Result<ContactChange, MemoryError> {
        let person = self.person(contact.id());
        let change = match &person.contact {
            None => ContactChange::Added,
            Some(b) if b == contact => return Ok(ContactChange::Unchanged),
            Some(_) => ContactChange::Modified,
        };
        let before = person.contact.replace(contact.clone());
        let id = person.id.clone();
        self.log(Undo::Contact(id.clone(), before));
        if change == ContactChange::Added {
            self.order.push(id);
            self.log(Undo::ContactOrderPushed);
        }
        Ok(change)
    }

    /// Every contact id, in the order the contacts were first written.
    fn contact_ids(&mut self) -> Result<Vec<String>, MemoryError> {
        Ok(self.order.iter().map(|id| id.to_string()).collect())
    }

    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), MemoryError> {
        checked("activity at", event.at)?;
        let person = self.person(contact);
        let i = slot(&person.activity, event.at, |e| e.at);
        person.activity.insert(i, event.clone());
        let id = person.id.clone();
        self.log(Undo::ActivityInserted(id, i));
        Ok(())
    }

    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        engagement: &Engagement,
    ) -> Result<(), MemoryError> {
        checked("engagement at", engagement.at)?;
        let scenario = self.name(scenario);
        let person = self.person(contact);
        let i = slot(&person.engagement, engagement.at, |(_, e)| e.at);
        person.engagement.insert(i, (scenario, engagement.clone()));
        let id = person.id.clone();
        self.log(Undo::EngagementInserted(id, i));
        Ok(())
    }

    fn input_seen(&mut self, key: &str) -> Result<bool, MemoryError> {
        Ok(self.inputs.contains(key))
    }

    fn record_input(&mut self, key: &str, _now: DateTime<Utc>) -> Result<(), MemoryError> {
        if self.inputs.insert(key.to_string()) {
            self.log(Undo::InputKey(key.to_string()));
        }
        Ok(())
    }

    fn history(
        &mut self,
        contact: &str,
        scenario: &str,
        needs: HistoryNeeds,
    ) -> Result<History, MemoryError> {
        let Some(p) = self.people.get(contact) else {
            return Ok(History::default());
        };
        Ok(History {
            events: if needs.events {
                p.activity.clone()
            } else {
                Vec::new()
            },
            engagement: p
                .engagement
                .iter()
                .filter(|(s, _)| needs.engagement && **s == *scenario)
                .map(|(_, e)| e.clone())
                .collect(),
            sends: p
                .sends
                .iter()
                .filter(|s| needs.sends && *s.scenario == *scenario)
                .map(|s| SendMark { at: s.at })
                .collect(),
            contact_sends: Vec::new(),
            winners: Default::default(),
            contact_engagement: Vec::new(),
        })
    }

    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, MemoryError> {
        Ok(self.people.get(contact).map_or_else(Vec::new, |p| {
            p.sends.iter().map(|s| SendMark { at: s.at }).collect()
        }))
    }

    fn contact_engagement(&mut self, contact: &str) -> Result<Vec<Engagement>, MemoryError> {
        Ok(self.people.get(contact).map_or_else(Vec::new, |p| {
            p.engagement
                .iter()
                .filter(|(_, e)| matches!(e.kind, EngagementKind::Opened | EngagementKind::Clicked))
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }
}

impl EnrollmentStore for MemoryStore {
    type Error = MemoryError;

    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, MemoryError> {
        Ok(self
            .running
            .get(scenario)
            .and_then(|m| m.get(contact))
            .and_then(|id| self.enrollments.get(id))
            .map(|(e, v, _)| (e.clone(), *v)))
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, MemoryError> {
        Ok(self.enrollments.get(id).map(|(e, v, _)| (e.clone(), *v)))
    }

    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
    ) -> Result<(), MemoryError> {
        let conflict = || MemoryError::Conflict(e.id.clone());
        // At most one running enrollment per (scenario, contact).
        let holder = self
            .running
            .get(e.scenario.as_str())
            .and_then(|m| m.get(e.contact.as_str()));
        let holds = holder.is_some_and(|h| *h == e.id);
        let held_by_another = e.is_running() && holder.is_some() && !holds;
        // One lookup: the row is checked and replaced in place.
        let undo = match (self.enrollments.get_mut(&e.id), expected) {
            (Some(stored), Some(v)) if stored.0.version == v => {
                if held_by_another {
                    return Err(conflict());
                }
                let before = std::mem::replace(&mut stored.0, e.clone());
                Undo::EnrollmentReplaced((before, stored.1, stored.2))
            }
            (None, None) => {
                if held_by_another {
                    return Err(conflict());
                }
                let started = self.next_seq();
                self.enrollments
                    .insert(e.id.clone(), (e.clone(), scenario_version, started));
                Undo::EnrollmentAdded(e.id.clone())
            }
            _ => return Err(conflict()),
        };
        self.log(undo);
        if e.is_running() && !holds {
            self.set_running(&e.scenario, &e.contact, Some(e.id.clone()));
        } else if !e.is_running() && holds {
            self.set_running(&e.scenario, &e.contact, None);
        }
        Ok(())
    }

    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, MemoryError> {
        Ok(self
            .marks
            .get(scenario)
            .and_then(|m| m.get(contact))
            .copied())
    }

    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        checked("last_entered_at", at)?;
        let key = self.contact_key(contact);
        let map = nested(&mut self.marks, scenario);
        let before = map.get(contact).copied();
        let mark = EntryMark {
            last_entered_at: at,
            entries: before.map_or(1, |m| m.entries + 1),
        };
        match map.get_mut(contact) {
            Some(m) => *m = mark,
            None => {
                map.insert(key.clone(), mark);
            }
        }
        let scenario = self.name(scenario);
        self.log(Undo::EntryMark(scenario, key, before));
        Ok(())
    }

    fn watch_conversion(&mut self, watch: &ConversionWatch) -> Result<(), MemoryError> {
        checked("conversion until", watch.until)?;
        let key = self.contact_key(&watch.contact);
        let person = self.person(&key);
        if person.watches.contains(watch) {
            return Ok(());
        }
        let before = person.watches.clone();
        // Kept in entry order (entries arrive in order but a store may be written out of it).
        let at = person.watches.partition_point(|w| {
            (w.entered_at, &w.enrollment) <= (watch.entered_at, &watch.enrollment)
        });
        person.watches.insert(at, watch.clone());
        self.log(Undo::Watches(key, before));
        Ok(())
    }

    fn conversion_watches(&mut self, contact: &str) -> Result<Vec<ConversionWatch>, MemoryError> {
        Ok(self
            .people
            .get(contact)
            .map_or_else(Vec::new, |p| p.watches.clone()))
    }

    fn end_conversion_watch(&mut self, watch: &ConversionWatch) -> Result<(), MemoryError> {
        let Some(person) = self.people.get_mut(watch.contact.as_str()) else {
            return Ok(());
        };
        let Some(i) = person.watches.iter().position(|w| w == watch) else {
            return Ok(());
        };
        let before = person.watches.clone();
        person.watches.remove(i);
        let key = person.id.clone();
        self.log(Undo::Watches(key, before));
        Ok(())
    }
}

impl TimerStore for MemoryStore {
    type Error = MemoryError;

    fn schedule(&mut self, wake: &Wake) -> Result<(), MemoryError> {
        checked("timer due", wake.at)?;
        if self.timer_seq(wake).is_some() {
            return Ok(());
        }
        let seq = self.next_seq();
        self.index_timer(wake, seq);
        self.timers.insert((wake.at, seq));
        self.wakes.insert(seq, wake.clone());
        self.log(Undo::TimerAdded(wake.at, seq));
        Ok(())
    }

    fn cancel(&mut self, wake: &Wake) -> Result<(), MemoryError> {
        let Some(seq) = self.timer_seq(wake) else {
            return Ok(());
        };
        self.timers.remove(&(wake.at, seq));
        if let Some(w) = self.wakes.remove(&seq) {
            self.unindex_timer(&w, seq);
            self.log(Undo::TimerRemoved(seq, w));
        }
        Ok(())
    }

    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, MemoryError> {
        Ok(self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, seq)| self.wakes.get(seq))
            .filter(|w| self.timer_live(w))
            .take(limit)
            .map(|w| Due::Ready(w.clone()))
            .collect())
    }

    fn set_inactivity(&mut self, check: &InactivityCheck) -> Result<(), MemoryError> {
        checked("inactivity due", check.due)?;
        let seq = self.next_seq();
        self.put_inactivity(&check.scenario, &check.contact, Some((check.due, seq)));
        Ok(())
    }

    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), MemoryError> {
        let Some(p) = self.people.get(contact) else {
            return Ok(());
        };
        let drop: Vec<String> = p
            .inactivity
            .keys()
            .filter(|s| !keep.contains(s))
            .cloned()
            .collect();
        for s in drop {
            self.put_inactivity(&s, contact, None);
        }
        Ok(())
    }

    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, MemoryError> {
        Ok(self
            .inactivity
            .iter()
            .take_while(|((due, _), _)| *due <= now)
            .filter(|(_, (s, _))| self.active(s))
            .take(limit)
            .map(|((due, _), (s, c))| {
                Due::Ready(InactivityCheck {
                    scenario: s.clone(),
                    contact: c.clone(),
                    due: *due,
                })
            })
            .collect())
    }

    fn remove_inactivity(&mut self, check: &InactivityCheck) -> Result<(), MemoryError> {
        let pending = self
            .people
            .get(check.contact.as_str())
            .and_then(|p| p.inactivity.get(&check.scenario));
        if pending.is_some_and(|(due, _)| *due == check.due) {
            self.put_inactivity(&check.scenario, &check.contact, None);
        }
        Ok(())
    }

    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), MemoryError> {
        let key = (scenario.to_string(), zone.to_string());
        let before = match at {
            Some(at) => self.launches.insert(key, checked("launch next_at", at)?),
            None => self.launches.remove(&key),
        };
        self.log(Undo::Launch(scenario.to_string(), zone.to_string(), before));
        Ok(())
    }

    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, MemoryError> {
        let mut due: Vec<LaunchTime> = self
            .launches
            .iter()
            .filter(|((s, _), at)| **at <= now && self.active(s))
            .map(|((s, z), at)| LaunchTime {
                scenario: s.clone(),
                zone: z.clone(),
                at: *at,
            })
            .collect();
        // The map is in (scenario, zone) order; a stable sort on the instant keeps it per instant.
        due.sort_by_key(|l| l.at);
        Ok(due.into_iter().map(Due::Ready).collect())
    }

    /// Every row of this store reads (it keeps values, not text), so there is never one
    /// to remove: deleting is idempotent, and nothing is there.
    fn remove_unreadable(&mut self, _row: &UnreadableRow) -> Result<(), MemoryError> {
        Ok(())
    }

    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, MemoryError> {
        let timer = self
            .timers
            .iter()
            .filter_map(|(_, seq)| self.wakes.get(seq))
            .find(|w| self.timer_live(w))
            .map(|w| w.at);
        let check = self
            .inactivity
            .iter()
            .find(|(_, (s, _))| self.active(s))
            .map(|((due, _), _)| *due);
        let launch = self
            .launches
            .iter()
            .filter(|((s, _), _)| self.active(s))
            .map(|(_, at)| *at)
            .min();
        Ok([timer, check, launch].into_iter().flatten().min())
    }
}

impl MemoryStore {
    /// Queues an outbox row once per key; `send` names the (scenario, contact) of a send,
    /// which history counts, and `item` makes the message (only kept when the store keeps
    /// messages).
    fn outbox_row(
        &mut self,
        key: &str,
        at: DateTime<Utc>,
        send: Option<(&str, &str)>,
        item: impl FnOnce() -> Queued,
    ) -> Result<(), MemoryError> {
        checked("outbox at", at)?;
        if self.outbox_keys.contains_key(key) {
            return Ok(());
        }
        let seq = self.next_seq();
        if let Some((scenario, contact)) = send {
            let row = SendRow {
                scenario: self.name(scenario),
                at,
                seq,
            };
            let person = self.person(contact);
            let i = slot(&person.sends, at, |s| s.at);
            person.sends.insert(i, row);
            let id = person.id.clone();
            self.log(Undo::SendInserted(id, i));
        }
        let key: Arc<str> = Arc::from(key);
        self.outbox_keys.insert(key.clone(), seq);
        self.log(Undo::OutboxKey(key.clone()));
        // A streaming store keeps the key (once per key) and the send's instant (history),
        // not the row: nothing delivers or purges its outbox.
        if !self.keep {
            return Ok(());
        }
        let item = Some(item());
        self.outbox.insert(
            seq,
            OutboxRow {
                key,
                at,
                send_to: send.map(|(_, contact)| contact.to_string()),
                item,
            },
        );
        self.log(Undo::OutboxAdded(seq));
        Ok(())
    }
}

impl JournalStore for MemoryStore {
    type Error = MemoryError;

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), MemoryError> {
        if self.keep || self.kept_kinds.contains(&record.kind) {
            self.journal
                .entry(scenario.to_string())
                .or_default()
                .push(record.clone());
            self.log(Undo::JournalPushed(scenario.to_string()));
        }
        Ok(())
    }

    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        let item = || Queued::Send {
            scenario: scenario.to_string(),
            send: Box::new(send.clone()),
        };
        self.outbox_row(
            &send.idempotency_key,
            at,
            Some((scenario, &send.contact)),
            item,
        )
    }

    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        let key = relance_core::ports::action_key(enrollment, step);
        let item = || Queued::Action {
            scenario: scenario.to_string(),
            enrollment: enrollment.to_string(),
            contact: contact.to_string(),
            step: step.to_string(),
            action: Box::new(action.clone()),
        };
        self.outbox_row(&key, at, None, item)
    }

    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        self.dead_letters.push((
            kind.to_string(),
            payload.to_string(),
            reason.to_string(),
            at,
        ));
        self.log(Undo::DeadLetterPushed);
        Ok(())
    }

    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, MemoryError> {
        Ok(self.journal.get(scenario).map_or_else(Vec::new, |list| {
            list.iter()
                .filter(|r| contact.is_none_or(|c| r.contact == c))
                .cloned()
                .collect()
        }))
    }

    fn purge(
        &mut self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, MemoryError> {
        let mut deleted = 0usize;
        match kind {
            Retained::Activity | Retained::Engagement => {
                let mut ids: Vec<Arc<str>> = self.people.keys().cloned().collect();
                ids.sort();
                for id in ids {
                    while deleted < limit {
                        let Some(p) = self.people.get_mut(&id) else {
                            break;
                        };
                        // Lists are in time order: the old items are at the front.
                        let undo = if kind == Retained::Activity {
                            if p.activity.first().is_none_or(|e| e.at >= before) {
                                break;
                            }
                            Undo::ActivityRemoved(id.clone(), 0, p.activity.remove(0))
                        } else {
                            let Some(i) = p.engagement.iter().position(|(_, e)| e.at < before)
                            else {
                                break;
                            };
                            Undo::EngagementRemoved(id.clone(), i, p.engagement.remove(i))
                        };
                        self.log(undo);
                        deleted += 1;
                    }
                }
            }
            Retained::DeadLetters => {
                while deleted < limit {
                    let Some(i) = self.dead_letters.iter().position(|d| d.3 < before) else {
                        break;
                    };
                    let d = self.dead_letters.remove(i);
                    self.log(Undo::DeadLetterRemoved(i, d));
                    deleted += 1;
                }
            }
            // Only rows handed on: an undelivered send is never dropped.
            Retained::Outbox => {
                let old: Vec<u64> = self
                    .outbox
                    .range(..=self.delivered)
                    .filter(|(_, r)| r.at < before)
                    .map(|(seq, _)| *seq)
                    .take(limit)
                    .collect();
                for seq in old {
                    self.remove_outbox(seq);
                    deleted += 1;
                }
            }
            Retained::Journal => {
                let mut scenarios: Vec<String> = self.journal.keys().cloned().collect();
                scenarios.sort();
                for s in scenarios {
                    while deleted < limit {
                        let Some(list) = self.journal.get_mut(&s) else {
                            break;
                        };
                        let Some(i) = list.iter().position(|r| r.at < before) else {
                            break;
                        };
                        let r = list.remove(i);
                        self.log(Undo::JournalRemoved(s.clone(), i, r));
                        deleted += 1;
                    }
                }
            }
        }
        Ok(deleted as u64)
    }
}

impl ConsentStore for MemoryStore {
    type Error = MemoryError;

    fn append_consent(&mut self, event: &ConsentEvent) -> Result<(), MemoryError> {
        checked("consent at", event.at)?;
        let person = self.person(&event.contact);
        let i = slot(&person.consent, event.at, |e| e.at);
        person.consent.insert(i, event.clone());
        let id = person.id.clone();
        self.log(Undo::ConsentInserted(id, i));
        Ok(())
    }

    fn consent_trail(&mut self, contact: &str) -> Result<Vec<ConsentEvent>, MemoryError> {
        Ok(self
            .people
            .get(contact)
            .map_or_else(Vec::new, |p| p.consent.clone()))
    }
}

impl Store for MemoryStore {
    type Fault = MemoryError;

    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, MemoryError> {
        let mark = self.undo.len();
        self.depth += 1;
        let result = work(self);
        self.depth -= 1;
        if result.is_err() {
            self.rollback(mark);
        }
        if self.depth == 0 {
            self.undo.clear();
            // A big unit (an import) does not keep its undo log's memory for the small ones.
            self.undo.shrink_to(UNDO_KEPT);
        }
        Ok(result)
    }
}
