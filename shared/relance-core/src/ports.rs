//! The ports: what a runtime needs from storage, as narrow traits whose docs state their
//! contract. The embedded SQLite store implements them; the DynamoDB adapters implement the
//! same contracts. The engine itself never sees them: runtimes load through the ports, call
//! the pure transition function, and write its effects back through the ports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::consent::{ConsentEvent, Derived};
use crate::contact::{ActivityEvent, Contact, Engagement, History, HistoryNeeds, SendMark};
use crate::engine::{Effect, Enrollment, Send, Transition, Wake};
use crate::journal::Record;
use crate::json_text::Object;
use crate::policy::{Retained, Retention};
use crate::scenario::{Action, Format};

/// A scenario's lifecycle: draft → active → paused → archived (paused can go back to active).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being written: no entries, no timers.
    Draft,
    /// Running: entries and timers.
    Active,
    /// Held: no entries, timers wait until it is active again.
    Paused,
    /// Retired for good: no entries, no timers.
    Archived,
}

impl Status {
    /// The name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Archived => "archived",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "draft" => Some(Status::Draft),
            "active" => Some(Status::Active),
            "paused" => Some(Status::Paused),
            "archived" => Some(Status::Archived),
            _ => None,
        }
    }
}

/// A stored scenario: its status and versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioEntry {
    /// The scenario id.
    pub id: String,
    /// Its lifecycle status.
    pub status: Status,
    /// The newest version.
    pub latest_version: u32,
    /// The version new entries use (set on activation).
    pub active_version: Option<u32>,
}

/// One stored version of a scenario: the file as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioSource {
    /// The scenario id.
    pub id: String,
    /// The version.
    pub version: u32,
    /// YAML or JSON.
    pub format: SourceFormat,
    /// The text.
    pub text: String,
}

/// The syntax of a stored scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

impl From<SourceFormat> for Format {
    fn from(f: SourceFormat) -> Format {
        match f {
            SourceFormat::Yaml => Format::Yaml,
            SourceFormat::Json => Format::Json,
        }
    }
}

/// How a contact write changed the stored contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChange {
    /// It was new.
    Added,
    /// Some field changed.
    Modified,
    /// Nothing changed.
    Unchanged,
}

/// When a contact last entered a scenario (the once_per window) and how many times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMark {
    /// The last entry.
    pub last_entered_at: DateTime<Utc>,
    /// Entries so far (the next enrollment id is derived from it).
    pub entries: u32,
}

/// A pending inactivity trigger (product.viewed, cart.abandoned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InactivityCheck {
    /// The scenario.
    pub scenario: String,
    /// The contact.
    pub contact: String,
    /// When it fires.
    pub due: DateTime<Utc>,
}

/// An entry's conversion watch (DESIGN §3.1): written at entry when the scenario has a
/// `conversion`, read on each of the contact's activity events (one lookup by contact, no
/// scan), removed by the event that converts the entry or once its window has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionWatch {
    /// The scenario.
    pub scenario: String,
    /// The scenario version entered (its `conversion` applies).
    pub version: u32,
    /// The contact id.
    pub contact: String,
    /// The entry's enrollment.
    pub enrollment: String,
    /// When it entered: the window's start, included.
    pub entered_at: DateTime<Utc>,
    /// The window's end, included.
    pub until: DateTime<Utc>,
}

/// A pending recurring or fixed-date launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTime {
    /// The scenario.
    pub scenario: String,
    /// The zone the occurrence is read in (`""`: the scenario's own).
    pub zone: String,
    /// The occurrence.
    pub at: DateTime<Utc>,
}

/// The outbox message of a send, the same in every store and on every channel queue.
pub fn send_message(scenario: &str, send: &Send, at: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({"kind": "send", "at": at, "scenario": scenario, "send": send})
}

/// [`send_message`] as JSON text, written straight from the send: the same bytes as
/// `send_message(..).to_string()` (tested) without building the value first, which was a
/// tenth of the work of storing a send. Writing it fails only for a map whose keys are not
/// strings, which a send does not hold; the error is still handed back, not a panic.
pub fn send_message_text(
    scenario: &str,
    send: &Send,
    at: DateTime<Utc>,
) -> Result<String, serde_json::Error> {
    // Written by hand, as the journal's records and enrollments are
    // (`crate::journal::Record::write_json`): every send writes one. The bytes are those of
    // serde_json serializing `SendMessage` (see the tests); the parts that are JSON values
    // already (push data, template data, push and web push recipients) go through serde_json.
    use crate::engine::Recipient;
    let mut out = String::with_capacity(512);
    let mut o = Object::open(&mut out);
    o.plain("kind", "send");
    o.instant("at", &at);
    o.str("scenario", scenario);
    let mut s = o.object("send");
    s.str("enrollment", &send.enrollment);
    s.str("contact", &send.contact);
    s.str("step", &send.step);
    s.str("message", &send.message);
    s.plain("channel", send.channel.as_str());
    s.str("communication_type", &send.communication_type);
    match &send.to {
        Recipient::Email(address) => {
            let mut to = s.object("to");
            to.str("email", address);
            to.end();
        }
        Recipient::Phone(number) => {
            let mut to = s.object("to");
            to.str("phone", number);
            to.end();
        }
        other => s.raw("to", &serde_json::to_string(other)?),
    }
    let content = &send.content;
    let mut c = s.object("content");
    c.opt_str("subject", content.subject.as_deref());
    c.opt_str("html", content.html.as_deref());
    c.opt_str("text", content.text.as_deref());
    c.opt_str("title", content.title.as_deref());
    c.opt_str("body", content.body.as_deref());
    if let Some(data) = &content.data {
        c.raw("data", &serde_json::to_string(data)?);
    }
    c.opt_str("url", content.url.as_deref());
    c.opt_str("from", content.from.as_deref());
    c.opt_str("reply_to", content.reply_to.as_deref());
    c.opt_str("template", content.template.as_deref());
    if let Some(data) = &content.template_data {
        c.raw("template_data", &serde_json::to_string(data)?);
    }
    c.opt_str("sms_type", content.sms_type.as_deref());
    if content.no_tracking {
        c.raw("no_tracking", "true");
    }
    c.end();
    s.str("idempotency_key", &send.idempotency_key);
    s.end();
    o.end();
    Ok(out)
}

/// The idempotency key of an action step's effect in an enrollment.
pub fn action_key(enrollment: &str, step: &str) -> String {
    format!("{enrollment}:{step}:action")
}

/// The outbox message of an action for the outside world, with its idempotency key.
pub fn action_message(
    scenario: &str,
    enrollment: &str,
    contact: &str,
    step: &str,
    action: &Action,
    at: DateTime<Utc>,
) -> (String, serde_json::Value) {
    let key = action_key(enrollment, step);
    let message = serde_json::json!({"kind": "action", "at": at, "scenario": scenario, "enrollment": enrollment,
        "contact": contact, "step": step, "action": action, "idempotency_key": key});
    (key, message)
}

/// The workspace policy (quiet hours, a cap across scenarios), a [`crate::Policy`] file.
pub const SETTING_POLICY: &str = "policy";
/// The shared message store: a mapping from message id to message, which scenarios use
/// when they do not define the message themselves.
pub const SETTING_MESSAGES: &str = "messages";

/// Scenario storage.
///
/// # Contract
/// Versions are immutable once written; `put_version` returns the new version number,
/// one more than the latest. Status changes are plain writes.
pub trait ScenarioStore {
    /// Storage failure.
    type Error;
    /// Every scenario, or those with this status.
    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, Self::Error>;
    /// One scenario.
    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, Self::Error>;
    /// One version's text.
    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, Self::Error>;
    /// Stores a new version (a new scenario starts as a draft); returns its number.
    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, Self::Error>;
    /// Sets the status and the version new entries use.
    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
    /// A workspace setting's text (YAML or JSON): [`SETTING_POLICY`], [`SETTING_MESSAGES`].
    fn setting(&mut self, name: &str) -> Result<Option<String>, Self::Error>;
    /// Replaces a workspace setting.
    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
}

/// Contacts and what they did.
///
/// # Contract
/// `history` returns the contact's activity, its engagement with `scenario`'s sends and
/// `scenario`'s sends to it, oldest first. Within one instant the order is unspecified (a
/// store may keep key order, DynamoDB does): the engine only asks whether a matching event or
/// engagement exists in a window, and counts sends in one. An event equal to one already
/// stored at the same instant may be kept once (DynamoDB keys it by its hash).
///
/// `contact_engagement` returns the contact's opens and clicks with every scenario's sends
/// (no other kind), oldest first: `at: best` counts them per hour of day.
///
/// The sends are those committed with the contact's enrollments (`Store::commit_transition`,
/// after an entry recorded by `mark_entry`), one per idempotency key. A store may read them
/// from the enrollments' `sent` maps rather than from its outbox (DynamoDB, which reads the
/// latest five enrollments of a scenario: frequency caps look back over short windows), so a
/// send queued with no enrollment behind it need not count.
pub trait ContactStore {
    /// Storage failure.
    type Error;
    /// One contact.
    fn contact(&mut self, id: &str) -> Result<Option<Contact>, Self::Error>;
    /// Whether the contact is stored, for a caller that does not read its fields (a store may
    /// answer without parsing them).
    fn contact_exists(&mut self, id: &str) -> Result<bool, Self::Error> {
        Ok(self.contact(id)?.is_some())
    }
    /// Writes a contact whole; says how it changed.
    fn put_contact(
        &mut self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, Self::Error>;
    /// Every contact id, in order.
    fn contact_ids(&mut self) -> Result<Vec<String>, Self::Error>;
    /// Appends an activity event.
    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), Self::Error>;
    /// Appends an engagement record.
    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        engagement: &Engagement,
    ) -> Result<(), Self::Error>;
    /// True when an input (activity or engagement) with this idempotency key was recorded.
    fn input_seen(&mut self, key: &str) -> Result<bool, Self::Error>;
    /// Records an input's idempotency key; recording it again changes nothing.
    fn record_input(&mut self, key: &str, now: DateTime<Utc>) -> Result<(), Self::Error>;
    /// What the engine needs to know of the contact's past for one scenario: the parts
    /// `needs` asks for (an engine's [`crate::Engine::history_needs`]); the others are empty.
    fn history(
        &mut self,
        contact: &str,
        scenario: &str,
        needs: HistoryNeeds,
    ) -> Result<History, Self::Error>;
    /// Every scenario's sends to the contact, oldest first (for the policy's cap).
    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, Self::Error>;
    /// Every scenario's opens and clicks of the contact, oldest first (for `at: best` delays).
    fn contact_engagement(&mut self, contact: &str) -> Result<Vec<Engagement>, Self::Error>;
}

/// Enrollments, entry marks and the already-running lock.
///
/// # Contract
/// `save_enrollment` writes only if the stored version equals `expected` (None: no such
/// enrollment yet) and fails with a conflict otherwise, so a duplicated or stale input never
/// advances an enrollment twice.
///
/// At most one running enrollment per (scenario, contact), for entries made as the runtime
/// makes them: in one unit of work, read `running_enrollment` (one runs: no entry) and
/// `entry_mark`, then `mark_entry` and save the new enrollment (numbered after the mark).
/// `mark_entry` records the entry on the mark this unit read: if another entry was recorded
/// since, it fails with a conflict (DynamoDB: a conditional claim on the count, which also
/// holds the running lock), so of two concurrent entries one enters and the other, retried,
/// sees it running. A transactional store also refuses the save of a second running
/// enrollment (memory, SQLite).
pub trait EnrollmentStore {
    /// Storage failure (including a version conflict).
    type Error;
    /// The running enrollment of a contact in a scenario.
    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, Self::Error>;
    /// The id of the running enrollment of a contact in a scenario and the scenario version
    /// it runs on, with the enrollment itself when the store has it at hand. For an input
    /// that is mostly only recorded against the enrollment (an open): a store whose read of
    /// the id alone is cheaper (SQLite: no JSON parsed) leaves the enrollment out, and the
    /// caller reads it by id when it needs it. By default, the enrollment read whole.
    #[allow(clippy::type_complexity)]
    fn running_enrollment_id(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(String, u32, Option<Enrollment>)>, Self::Error> {
        Ok(self
            .running_enrollment(scenario, contact)?
            .map(|(enrollment, version)| (enrollment.id.clone(), version, Some(enrollment))))
    }
    /// One enrollment and the scenario version it runs on.
    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, Self::Error>;
    /// Conditional write on the version.
    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        enrollment: &Enrollment,
    ) -> Result<(), Self::Error>;
    /// The once_per mark (read first in the unit that may record an entry).
    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, Self::Error>;
    /// What an entry reads of `contact` in `scenario`: whether an enrollment of it runs
    /// (`running_enrollment_id`), and its entry mark (`entry_mark`, so a later `mark_entry`
    /// is on this read). By default those two reads; a store that can answers in one.
    fn entry_state(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<(bool, Option<EntryMark>), Self::Error> {
        let running = self.running_enrollment_id(scenario, contact)?.is_some();
        Ok((running, self.entry_mark(scenario, contact)?))
    }
    /// Records an entry on the mark read by `entry_mark` in this unit of work; a conflict when
    /// another entry was recorded since.
    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
    /// Arms an entry's conversion watch (a second write of the same watch changes nothing).
    fn watch_conversion(&mut self, watch: &ConversionWatch) -> Result<(), Self::Error>;
    /// The contact's conversion watches, every scenario, in entry order.
    fn conversion_watches(&mut self, contact: &str) -> Result<Vec<ConversionWatch>, Self::Error>;
    /// Removes a conversion watch (converted, or past its window). Idempotent.
    fn end_conversion_watch(&mut self, watch: &ConversionWatch) -> Result<(), Self::Error>;
}

/// A due item as the store read it: ready to fire, or a row that does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due<T> {
    /// The item.
    Ready(T),
    /// A row whose values do not read (hand-edited, written by a buggy build, an instant out
    /// of range): the runtime removes it and keeps it as a dead letter, alone, so it never
    /// stops the items after it.
    Unreadable(UnreadableRow),
}

/// A stored due row that does not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableRow {
    /// What it was: `timer`, `inactivity` or `launch`.
    pub kind: String,
    /// How the store finds it again to delete it (SQLite: the rowid, or the typed key of the
    /// timer table, which has none; DynamoDB: its key).
    pub locator: String,
    /// The row as stored, as JSON text, kept in the dead letter.
    pub raw: String,
    /// Why it does not read.
    pub reason: String,
}

/// Durable timers, launches and inactivity checks.
///
/// # Contract
/// Due items come out in (due time, id) order; a timer removed with `cancel` or consumed by
/// the unit of work that handled it never fires again.
/// Instants are stored as integers (microseconds since the epoch, or fixed-width digits of
/// them) within 1970-01-01..9999-12-31; a due row that does not read is returned as
/// [`Due::Unreadable`], never as an error for the whole batch.
pub trait TimerStore {
    /// Storage failure.
    type Error;
    /// Arms a timer (idempotent).
    fn schedule(&mut self, wake: &Wake) -> Result<(), Self::Error>;
    /// Disarms a timer (idempotent).
    fn cancel(&mut self, wake: &Wake) -> Result<(), Self::Error>;
    /// Timers due at or before `now` for active scenarios, oldest first, at most `limit`;
    /// a row that does not read (an instant out of range, a wrong type) comes back as
    /// [`Due::Unreadable`] in the same batch instead of failing it.
    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, Self::Error>;
    /// Sets a contact's pending inactivity check for a scenario (replacing any).
    fn set_inactivity(&mut self, check: &InactivityCheck) -> Result<(), Self::Error>;
    /// Drops every pending inactivity check of a contact but those for `keep` scenarios.
    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), Self::Error>;
    /// Inactivity checks due at or before `now` (unreadable rows as [`Due::Unreadable`]).
    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, Self::Error>;
    /// Removes an inactivity check once handled.
    fn remove_inactivity(&mut self, check: &InactivityCheck) -> Result<(), Self::Error>;
    /// Sets the next launch of a scenario in a zone (None removes it).
    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), Self::Error>;
    /// Launches due at or before `now` for active scenarios (unreadable rows as
    /// [`Due::Unreadable`]).
    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, Self::Error>;
    /// Deletes a row that did not read (the runtime keeps it as a dead letter in the same
    /// unit of work). Idempotent.
    fn remove_unreadable(&mut self, row: &UnreadableRow) -> Result<(), Self::Error>;
    /// When the runner may next find something due, for its sleep. `Some(t)`: a timer,
    /// inactivity check or launch of an active scenario is pending and none is due before `t`
    /// (an unreadable row counts as due now, so the next tick moves it to the dead letters).
    /// `None`: nothing is pending, or the store cannot tell (DynamoDB: the AWS tick runs on a
    /// schedule); the callers of such a store tick on a schedule instead of sleeping until a
    /// time. A store that tells (memory, SQLite) gives the earliest pending item's due time,
    /// which the embedded runner and `relance simulate` need.
    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, Self::Error>;
}

/// The journal and the outbox.
///
/// # Contract
/// A send goes out at most once per idempotency key: a second `outbox_send` with the same key
/// (a unit of work redone after a crash, a step sent again) changes nothing. A store keeps the
/// first (memory, SQLite, DynamoDB recording sends), or hands each on to its channel queue,
/// where the sender's claim on the key keeps the first (DynamoDB in operation).
pub trait JournalStore {
    /// Storage failure.
    type Error;
    /// Appends a journal record.
    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), Self::Error>;
    /// Appends one transition's records, in order. A store may keep them together (the
    /// SQLite store writes them as one row); by default each is appended alone.
    fn journal_transition(
        &mut self,
        scenario: &str,
        records: &[&Record],
    ) -> Result<(), Self::Error> {
        for record in records {
            self.journal(scenario, record)?;
        }
        Ok(())
    }
    /// Queues a send.
    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
    /// Queues an action for the outside world (export, task, lead, event).
    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
    /// Keeps work that failed (a timer, a launch, an inactivity check) with its reason, so it
    /// is neither lost nor retried forever ahead of everything else.
    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;
    /// Every record of a scenario, in order (one contact's only, when given).
    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, Self::Error>;
    /// Deletes at most `limit` items of `kind` older than `before` (the policy's retention;
    /// outbox rows only once delivered) and says how many. A store whose items expire by
    /// themselves (DynamoDB's TTL, see [`Store::set_retention`]) deletes nothing here.
    fn purge(
        &mut self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, Self::Error>;
}

/// The consent log (DESIGN §4): append-only, per contact.
///
/// # Contract
/// Events are never changed or removed; `consent_trail` returns a contact's events oldest
/// first (in `at` order, then in the order they were appended). The runtime writes the events
/// of a change before the contact fields derived from them, in the same unit of work.
pub trait ConsentStore {
    /// Storage failure.
    type Error;
    /// Appends one event.
    fn append_consent(&mut self, event: &ConsentEvent) -> Result<(), Self::Error>;
    /// A contact's trail, oldest first.
    fn consent_trail(&mut self, contact: &str) -> Result<Vec<ConsentEvent>, Self::Error>;
    /// The state the trail leads to.
    fn consent_state(&mut self, contact: &str) -> Result<Derived, Self::Error> {
        Ok(Derived::from_trail(&self.consent_trail(contact)?))
    }
}

/// Everything a runtime needs, with units of work.
pub trait Store:
    ScenarioStore<Error = <Self as Store>::Fault>
    + ContactStore<Error = <Self as Store>::Fault>
    + EnrollmentStore<Error = <Self as Store>::Fault>
    + TimerStore<Error = <Self as Store>::Fault>
    + JournalStore<Error = <Self as Store>::Fault>
    + ConsentStore<Error = <Self as Store>::Fault>
{
    /// The storage failure type shared by every port.
    type Fault;

    /// What this store's mode cannot run in `scenario` (an invoke step has no Lambda to call
    /// in embedded mode), as located problems; a scenario with any is refused when put. None
    /// by default.
    fn unsupported(&self, scenario: &crate::scenario::Scenario) -> Vec<crate::problem::Problem> {
        let _ = scenario;
        Vec::new()
    }

    /// Whether `fault` is a conditional write refused because a concurrent writer changed
    /// what the unit read (the same work, redone from a fresh read, may succeed). A store whose
    /// units are transactions run one at a time never refuses so.
    fn is_conflict(fault: &Self::Fault) -> bool {
        let _ = fault;
        false
    }

    /// Before a change of consent that restates what the unit read (see
    /// `consent::restatements`) is logged: fails when the contact changed since the unit read
    /// it (a store without transactions; a conditional write of the contact as read), so the
    /// unit runs again instead of logging a state the contact no longer holds. Nothing for a
    /// store whose units are transactions.
    fn confirm_contact_read(&mut self, contact: &str) -> Result<(), Self::Fault> {
        let _ = contact;
        Ok(())
    }

    /// Appends `event`, a restatement of what the contact holds (see `consent::restatements`),
    /// only while the contact is as the unit read it: a store without transactions writes it
    /// together with a check of the contact (one conditional request) and fails when the
    /// contact changed since the read, so the unit runs again. Just `append_consent` for a
    /// store whose units are transactions.
    fn append_consent_as_read(
        &mut self,
        event: &crate::consent::ConsentEvent,
    ) -> Result<(), Self::Fault> {
        self.append_consent(event)
    }

    /// Forgets what the current unit read of `contact`, so that work redone in the unit after
    /// a conflict reads it afresh (and its put is conditional on that read). Nothing for a
    /// store without conflicts.
    fn reread_contact(&mut self, contact: &str) {
        let _ = contact;
    }

    /// Runs `work`'s reads against one view of the store (one SQLite read transaction, not one
    /// per statement), outside any unit of work: for a thread that only reads. `None` when no
    /// fresh view could be had (`work` did not run). Just `work` by default.
    fn read_together<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> Option<T>
    where
        Self: Sized,
    {
        Some(work(self))
    }

    /// A mark that moves whenever another connection commits to this store (SQLite's
    /// `data_version`), read inside a unit: a step computed ahead from what was committed when
    /// the mark was taken still holds if nobody else wrote since. `None` when the store cannot
    /// tell (then nothing is computed ahead).
    fn outside_writes_mark(&mut self) -> Result<Option<i64>, Self::Fault> {
        Ok(None)
    }

    /// Tells the store the policy's retention, for stores that stamp an expiry on the items
    /// they write (DynamoDB's TTL) rather than purging them; others ignore it.
    fn set_retention(&mut self, retention: &Retention) {
        let _ = retention;
    }

    /// Applies one effect through the ports (the contact changes of `SetField` come whole
    /// with the transition; `Ended` is the enrollment's own state).
    fn apply_effect(
        &mut self,
        scenario: &str,
        effect: &Effect,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Fault> {
        match effect {
            Effect::Record(r) => self.journal(scenario, r),
            Effect::Send(s) => self.outbox_send(scenario, s, now),
            Effect::ScheduleWake(w) => self.schedule(w),
            Effect::CancelWake(w) => self.cancel(w),
            Effect::Action {
                enrollment,
                contact,
                step,
                action,
            } => self.outbox_action(scenario, enrollment, contact, step, action, now),
            Effect::SetField { .. } | Effect::Ended { .. } => Ok(()),
        }
    }

    /// Writes one transition: its effects (journal, outbox, timers, contact) and the
    /// enrollment, conditionally on the stored version being `expected`.
    ///
    /// # Contract
    /// Either the enrollment and all its effects are written, or nothing is (a version conflict
    /// fails the call). This default does it inside the caller's unit of work, so it suits a
    /// transactional store; a store without transactions overrides it to write the enrollment
    /// first, with the effects kept on it, and apply them after, idempotently, so that a crash
    /// in between is repaired when the enrollment is next read.
    fn commit_transition(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        expected: Option<u64>,
        t: &Transition,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Fault> {
        // The records go together, after the other effects (all inside the caller's unit).
        let mut records = Vec::new();
        for effect in &t.effects {
            match effect {
                Effect::Record(r) => records.push(r),
                other => self.apply_effect(scenario, other, now)?,
            }
        }
        self.journal_transition(scenario, &records)?;
        self.save_enrollment(expected, scenario_version, &t.enrollment)?;
        if let Some(c) = &t.contact {
            self.put_contact(c, now)?;
        }
        Ok(())
    }

    /// Whether [`Store::commit_entries`] writes many entries for less than as many single
    /// ones (SQLite): only then does a launch keep its entries back to write them together.
    /// False by default: a store that writes them one by one gains nothing by the wait, and
    /// one without transactions (DynamoDB) would hold its entry claims longer.
    fn writes_entries_together(&self) -> bool {
        false
    }

    /// Writes the entries of several contacts into `scenario` (its `scenario_version`) at
    /// `now`, as many calls of `mark_entry` then `commit_transition` (a new enrollment: no
    /// version expected) would, one contact after the other, inside the caller's unit of
    /// work: the same rows, the outbox's and the journal's in this order. `entering` holds
    /// each contact at most once, and each entry mark was read in this unit.
    ///
    /// # Contract
    /// Either every contact's entry is written or the call fails (inside a unit, which then
    /// rolls back). This default makes the calls one by one; a store whose cost is per
    /// statement (SQLite) writes the rows of many contacts per statement.
    fn commit_entries(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        entering: &[Transition],
        now: DateTime<Utc>,
    ) -> Result<(), Self::Fault> {
        commit_entries_one_by_one(self, scenario, scenario_version, entering, now)
    }

    /// Writes what several due timers did, as many calls of `cancel` (each timer of
    /// `consumed`) then `commit_transition` (each of `steps`, on its enrollment's expected
    /// version) would, inside the caller's unit of work: the same rows, the outbox's and the
    /// journal's in the order of `steps`. The timers and steps concern distinct enrollments of
    /// distinct contacts.
    ///
    /// # Contract
    /// Either everything is written or the call fails (a version conflict names its
    /// enrollment; inside a unit, which then rolls back). This default makes the calls one by
    /// one; a store whose cost is per statement (SQLite) writes many rows per statement.
    fn commit_steps(
        &mut self,
        consumed: &[Wake],
        steps: &[StepWrite<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), Self::Fault> {
        commit_steps_one_by_one(self, consumed, steps, now)
    }
    /// Runs `work` as one unit: all of its writes happen, or none. The unit commits when
    /// `work` returns `Ok` and is rolled back when it returns `Err` (that error is handed back
    /// inside `Ok`); the outer `Err` is a failure to begin or commit.
    ///
    /// A store without transactions (DynamoDB) runs `work` as is and guarantees less: every
    /// write is idempotent (a deterministic key) or conditional (an enrollment on its version,
    /// an entry on the mark read in the unit), and `commit_transition` makes each transition
    /// whole; a unit that fails midway leaves the writes before the failure, which the input's
    /// redelivery redoes without doubling.
    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, Self::Fault>;

    /// Opens a group commit: the units of work that follow, until [`Store::commit_group`],
    /// each stay all-or-nothing (a failing unit rolls back alone) but become durable together,
    /// when the group commits; a failed group commit loses every unit of the group, none
    /// partly. A store whose units are already cheap to commit, or that has no transactions,
    /// keeps the default: no group, each unit durable on its own.
    fn begin_group(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }

    /// Commits the open group (see [`Store::begin_group`]); nothing when none is open.
    fn commit_group(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }

    /// Gives up the open group: every unit since its last commit is rolled back. A store
    /// without groups has nothing to give up (each unit committed on its own).
    fn rollback_group(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }
}

/// [`Store::commit_entries`] made of its calls, one contact after the other: the default, and
/// what a store that writes many contacts per statement falls back to for the entries it
/// cannot.
pub fn commit_entries_one_by_one<S: Store + ?Sized>(
    store: &mut S,
    scenario: &str,
    scenario_version: u32,
    entering: &[Transition],
    now: DateTime<Utc>,
) -> Result<(), S::Fault> {
    for t in entering {
        store.mark_entry(scenario, &t.enrollment.contact, now)?;
        store.commit_transition(scenario, scenario_version, None, t, now)?;
    }
    Ok(())
}

/// A due timer's step, for [`Store::commit_steps`]: the transition the engine computed from
/// its enrollment at version `expected`, in `scenario` at `scenario_version`.
#[derive(Debug, Clone, Copy)]
pub struct StepWrite<'a> {
    /// The enrollment's scenario.
    pub scenario: &'a str,
    /// The scenario version the enrollment runs.
    pub scenario_version: u32,
    /// The enrollment's version the transition was computed from.
    pub expected: u64,
    /// What the step does.
    pub transition: &'a Transition,
}

/// [`Store::commit_steps`] made of its calls, one after the other: the default, and what a
/// store that writes many rows per statement falls back to for steps it cannot.
pub fn commit_steps_one_by_one<S: Store + ?Sized>(
    store: &mut S,
    consumed: &[Wake],
    steps: &[StepWrite<'_>],
    now: DateTime<Utc>,
) -> Result<(), S::Fault> {
    for w in consumed {
        store.cancel(w)?;
    }
    for s in steps {
        store.commit_transition(
            s.scenario,
            s.scenario_version,
            Some(s.expected),
            s.transition,
            now,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_message_as_text_is_the_value_written_out() {
        let at = DateTime::from_timestamp(1_796_112_000, 123_456_789).unwrap_or_default();
        let sends = [
            serde_json::json!({"enrollment": "s:c:1", "contact": "c", "step": "first", "message": "m",
                "channel": "email", "communication_type": "marketing", "to": {"email": "c@x.io"},
                "content": {"subject": "Hé \"you\"\n", "html": "<p>é</p>", "text": "t",
                    "data": {"z": 1.5, "a": [1, null, true], "m": {"k": "v"}},
                    "template_data": {"contact": {"n": 12345678901234567890u64}}, "no_tracking": true},
                "idempotency_key": "s:c:1:first"}),
            serde_json::json!({"enrollment": "e", "contact": "c", "step": "p", "message": "m",
                "channel": "push", "communication_type": "", "to": {"push": [["APNS", "arn:x"]]},
                "content": {"title": "t", "body": "b"}, "idempotency_key": "e:p"}),
        ];
        for value in sends {
            let send: Send = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                send_message_text("s", &send, at).ok(),
                Some(send_message("s", &send, at).to_string())
            );
        }
    }

    mod written_by_hand {
        use proptest::prelude::*;

        use super::*;
        use crate::engine::Recipient;
        use crate::json_text::strategies::text;
        use crate::render::Rendered;
        use crate::scenario::Channel;

        fn value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)),
                text().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3)
                        .prop_map(serde_json::Value::from),
                    proptest::collection::vec((text(), inner), 0..3)
                        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn recipient() -> impl Strategy<Value = Recipient> {
            prop_oneof![
                text().prop_map(Recipient::Email),
                text().prop_map(Recipient::Phone),
                proptest::collection::vec((text(), text()), 0..3).prop_map(Recipient::Push),
                proptest::collection::vec(value(), 0..2).prop_map(Recipient::WebPush),
            ]
        }

        fn rendered() -> impl Strategy<Value = Rendered> {
            let t = || proptest::option::of(text());
            let map = proptest::option::of(
                proptest::collection::vec((text(), value()), 0..3)
                    .prop_map(|kv| kv.into_iter().collect()),
            );
            (
                (t(), t(), t(), t(), t()),
                (map, t(), t(), t(), t()),
                (proptest::option::of(value()), t(), any::<bool>()),
            )
                .prop_map(
                    |(
                        (subject, html, text, title, body),
                        (data, url, from, reply_to, template),
                        (template_data, sms_type, no_tracking),
                    )| Rendered {
                        subject,
                        html,
                        text,
                        title,
                        body,
                        data,
                        url,
                        from,
                        reply_to,
                        template,
                        template_data,
                        sms_type,
                        no_tracking,
                    },
                )
        }

        fn send() -> impl Strategy<Value = Send> {
            (
                (text(), text(), text(), text()),
                proptest::sample::select(vec![
                    Channel::Email,
                    Channel::Sms,
                    Channel::Push,
                    Channel::WebPush,
                ]),
                (text(), recipient(), rendered(), text()),
            )
                .prop_map(
                    |(
                        (enrollment, contact, step, message),
                        channel,
                        (communication_type, to, content, idempotency_key),
                    )| Send {
                        enrollment,
                        contact,
                        step,
                        message,
                        channel,
                        communication_type,
                        to,
                        content,
                        idempotency_key,
                    },
                )
        }

        /// What the message was before it was written by hand: serde_json serializing it.
        #[derive(Serialize)]
        struct SendMessage<'a> {
            kind: &'static str,
            #[serde(serialize_with = "crate::instant::rfc3339::serialize")]
            at: DateTime<Utc>,
            scenario: &'a str,
            send: &'a Send,
        }

        proptest! {
            #[test]
            fn a_send_message_is_written_as_serde_json_writes_it(
                scenario in text(),
                send in send(),
                at in (0i64..4_102_444_800, 0u32..1_000_000_000),
            ) {
                let at = DateTime::from_timestamp(at.0, at.1).unwrap_or_default();
                let by_serde = serde_json::to_string(&SendMessage { kind: "send", at, scenario: &scenario, send: &send });
                prop_assert_eq!(send_message_text(&scenario, &send, at).ok(), by_serde.ok());
            }
        }
    }
}
