//! Fault injection on the at-least-once path, in process: a five-send scenario run for many
//! contacts through a simulated queue that duplicates 10% of the messages (launches,
//! engagement, timer firings), delivers copies and retries out of order, and redelivers
//! every message whose handling failed, over a store that fails 5% of the units of work:
//! in the middle (a port call errs), before the commit (the work is rolled back) or after
//! it (the work is committed but the caller is told it failed, the hard case).
//!
//! Every expected send must be in the outbox exactly once, every enrollment ended, no dead
//! letter, no timer left and the journal consistent.
//!
//! Size: `RELANCE_FAULT_CONTACTS` (default 1,000, a few seconds in debug); the documented
//! larger run is `RELANCE_FAULT_CONTACTS=10000 cargo test --release -p relance-embedded
//! --test embedded faults:: -- --nocapture`. `RELANCE_FAULT_SEED` changes the random choices.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, SendMark,
};
use relance_core::engine::{Enrollment, Send, Wake};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{
    ContactChange, ContactStore, ConversionWatch, Due, EnrollmentStore, EntryMark, InactivityCheck,
    JournalStore, LaunchTime, ScenarioEntry, ScenarioSource, ScenarioStore, SourceFormat, Status,
    Store, TimerStore, UnreadableRow,
};
use relance_core::scenario::Action;
use relance_core::wire::{EngagementDetail, LaunchDetail};
use relance_embedded::runtime::{Runtime, RuntimeError};
use relance_embedded::store::SqliteStore;
use serde_json::Value;

const SCENARIO_ID: &str = "faults";

/// Five sends per enrollment whatever the path: the welcome email; an SMS to those who open
/// it within a day, else a reminder email; a day later a push to openers, else an email;
/// then two emails two and three days apart.
const SCENARIO: &str = r#"id: faults
timezone: UTC
launch: {type: manual}
audience: {all: true}
once_per: P1Y
messages:
  welcome: {channel: email, subject: "Welcome {{ contact.first_name }}", text: "Glad to have you."}
  thanks: {channel: sms, text: "Thanks for reading, {{ contact.first_name }}!"}
  reminder: {channel: email, subject: "Did you see this?", text: "Our welcome offer is waiting."}
  tip-push: {channel: push, title: "A tip", body: "Open the app for your tip."}
  tip-mail: {channel: email, subject: "A tip", text: "Here is a tip."}
  digest: {channel: email, subject: "Your digest", text: "What happened this week."}
  last: {channel: email, subject: "Last one", text: "See you soon."}
steps:
  - {id: welcome, send: welcome, next: reaction}
  - id: reaction
    wait_for: {opened: welcome, timeout: P1D}
    on_event: thanks
    on_timeout: reminder
  - {id: thanks, send: thanks, next: tip}
  - {id: reminder, send: reminder, next: tip}
  - id: tip
    delay: {after: P1D}
    if: {opened: welcome}
    then: tip-push
    else: tip-mail
  - {id: tip-push, send: tip-push, next: digest}
  - {id: tip-mail, send: tip-mail, next: digest}
  - {id: digest, send: digest, delay: {after: P2D}, next: last}
  - {id: last, send: last, delay: {after: P3D}, next: done}
  - {id: done, end: success}
"#;

/// Contacts per launch message (a page, like the AWS launch queue's).
const LAUNCH_PAGE: usize = 20;

// --- A tiny deterministic RNG (xorshift64*), no dependency. ---

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// --- The flaky store. ---

/// Where an injected failure hit a unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Injection {
    /// A port call inside the unit failed (the unit is rolled back).
    MidUnit,
    /// The work was done, the commit failed (rolled back).
    BeforeCommit,
    /// The commit happened, then the caller was told it failed.
    AfterCommit,
    /// A group commit failed: every unit since the group's last commit rolled back.
    GroupBeforeCommit,
    /// A group commit happened, then the runtime was told it failed.
    GroupAfterCommit,
}

/// The flaky store's failure: the inner store's, or an injected one.
#[derive(Debug)]
enum Fault<F> {
    Store(F),
    Injected(Injection),
}

impl<F: std::fmt::Display> std::fmt::Display for Fault<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Store(e) => write!(f, "{e}"),
            Fault::Injected(i) => write!(f, "injected transient failure ({i:?})"),
        }
    }
}

impl<F: std::error::Error> std::error::Error for Fault<F> {}

/// Why the inner unit was rolled back.
enum Abort<E> {
    Work(E),
    Injected,
}

/// What was injected.
#[derive(Debug, Default)]
struct FaultCounts {
    units: u64,
    injected: BTreeMap<Injection, u64>,
}

impl FaultCounts {
    fn failed(&self) -> u64 {
        self.injected.values().sum()
    }
}

/// A store that delegates every port to `inner` and fails `percent`% of the units of work,
/// like a database or network error would: mid-unit, before or after the commit.
///
/// `spare` is a second store of the same type, only held while a unit runs: the inner
/// store's `atomically` hands its work a `&mut S`, while the work needs a `&mut FlakyStore`;
/// the two are swapped for the duration of the work (no unsafe, no change to the ports).
#[derive(Debug)]
struct FlakyStore<S> {
    inner: S,
    spare: Option<S>,
    rng: Rng,
    percent: u64,
    armed: bool,
    /// In a unit planned to fail mid-way: the port calls left before the failing one.
    fail_in: Option<usize>,
    counts: FaultCounts,
}

impl<S: Store> FlakyStore<S> {
    fn new(inner: S, spare: S, seed: u64, percent: u64) -> FlakyStore<S> {
        FlakyStore {
            inner,
            spare: Some(spare),
            rng: Rng::new(seed),
            percent,
            armed: false,
            fail_in: None,
            counts: FaultCounts::default(),
        }
    }

    fn inner(&mut self) -> &mut S {
        &mut self.inner
    }

    /// One port call: fails when the unit's planned mid-unit failure is due.
    fn pass<T>(
        &mut self,
        call: impl FnOnce(&mut S) -> Result<T, S::Fault>,
    ) -> Result<T, Fault<S::Fault>> {
        match self.fail_in {
            Some(0) => {
                self.fail_in = None;
                *self.counts.injected.entry(Injection::MidUnit).or_default() += 1;
                return Err(Fault::Injected(Injection::MidUnit));
            }
            Some(n) => self.fail_in = Some(n - 1),
            None => {}
        }
        call(&mut self.inner).map_err(Fault::Store)
    }
}

impl<S> Store for FlakyStore<S>
where
    S: Store,
{
    type Fault = Fault<S::Fault>;

    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, Self::Fault> {
        self.counts.units += 1;
        let plan = if self.armed && self.rng.percent(self.percent) {
            match self.rng.below(3) {
                0 => Some(Injection::MidUnit),
                1 => Some(Injection::BeforeCommit),
                _ => Some(Injection::AfterCommit),
            }
        } else {
            None
        };
        self.fail_in = (plan == Some(Injection::MidUnit)).then(|| self.rng.below(8));
        let spare = self.spare.take().expect("one unit of work at a time");
        let mut real = std::mem::replace(&mut self.inner, spare);
        let outcome = real.atomically(|s| {
            std::mem::swap(s, &mut self.inner);
            let result = work(self);
            std::mem::swap(s, &mut self.inner);
            // A unit planned to fail mid-way that made too few port calls fails at its end.
            let unspent = self.fail_in.take().is_some();
            match result {
                Ok(_) if plan == Some(Injection::BeforeCommit) || unspent => Err(Abort::Injected),
                Ok(v) => Ok(v),
                Err(e) => Err(Abort::Work(e)),
            }
        });
        self.spare = Some(std::mem::replace(&mut self.inner, real));
        match outcome {
            Err(f) => Err(Fault::Store(f)),
            Ok(Err(Abort::Work(e))) => Ok(Err(e)),
            Ok(Err(Abort::Injected)) => {
                *self
                    .counts
                    .injected
                    .entry(Injection::BeforeCommit)
                    .or_default() += 1;
                Err(Fault::Injected(Injection::BeforeCommit))
            }
            Ok(Ok(_)) if plan == Some(Injection::AfterCommit) => {
                *self
                    .counts
                    .injected
                    .entry(Injection::AfterCommit)
                    .or_default() += 1;
                Err(Fault::Injected(Injection::AfterCommit))
            }
            Ok(Ok(v)) => Ok(Ok(v)),
        }
    }

    fn begin_group(&mut self) -> Result<(), Self::Fault> {
        self.inner.begin_group().map_err(Fault::Store)
    }

    fn commit_group(&mut self) -> Result<(), Self::Fault> {
        let injection = if self.armed && self.rng.percent(self.percent) {
            if self.rng.percent(50) {
                Injection::GroupBeforeCommit
            } else {
                Injection::GroupAfterCommit
            }
        } else {
            return self.inner.commit_group().map_err(Fault::Store);
        };
        *self.counts.injected.entry(injection).or_default() += 1;
        match injection {
            Injection::GroupBeforeCommit => self.inner.rollback_group().map_err(Fault::Store)?,
            _ => self.inner.commit_group().map_err(Fault::Store)?,
        }
        Err(Fault::Injected(injection))
    }
}

impl<S: Store> ScenarioStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, Self::Error> {
        self.pass(|s| s.scenarios(status))
    }
    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, Self::Error> {
        self.pass(|s| s.scenario(id))
    }
    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, Self::Error> {
        self.pass(|s| s.scenario_source(id, version))
    }
    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, Self::Error> {
        self.pass(|s| s.put_version(id, format, text, now))
    }
    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.set_status(id, status, active_version, now))
    }
    fn setting(&mut self, name: &str) -> Result<Option<String>, Self::Error> {
        self.pass(|s| s.setting(name))
    }
    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.put_setting(name, text, now))
    }
}

impl<S: Store> ContactStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn contact(&mut self, id: &str) -> Result<Option<Contact>, Self::Error> {
        self.pass(|s| s.contact(id))
    }
    fn put_contact(
        &mut self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, Self::Error> {
        self.pass(|s| s.put_contact(contact, now))
    }
    fn contact_ids(&mut self) -> Result<Vec<String>, Self::Error> {
        self.pass(|s| s.contact_ids())
    }
    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), Self::Error> {
        self.pass(|s| s.append_activity(contact, event))
    }
    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        engagement: &Engagement,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.append_engagement(contact, scenario, engagement))
    }
    fn input_seen(&mut self, key: &str) -> Result<bool, Self::Error> {
        self.pass(|s| s.input_seen(key))
    }
    fn record_input(&mut self, key: &str, now: DateTime<Utc>) -> Result<(), Self::Error> {
        self.pass(|s| s.record_input(key, now))
    }
    fn history(
        &mut self,
        contact: &str,
        scenario: &str,
        needs: relance_core::contact::HistoryNeeds,
    ) -> Result<History, Self::Error> {
        self.pass(|s| s.history(contact, scenario, needs))
    }
    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, Self::Error> {
        self.pass(|s| s.contact_sends(contact))
    }

    fn contact_engagement(&mut self, contact: &str) -> Result<Vec<Engagement>, Self::Error> {
        self.pass(|s| s.contact_engagement(contact))
    }
}

impl<S: Store> EnrollmentStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, Self::Error> {
        self.pass(|s| s.running_enrollment(scenario, contact))
    }
    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, Self::Error> {
        self.pass(|s| s.enrollment(id))
    }
    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        enrollment: &Enrollment,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.save_enrollment(expected, scenario_version, enrollment))
    }
    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, Self::Error> {
        self.pass(|s| s.entry_mark(scenario, contact))
    }
    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.mark_entry(scenario, contact, at))
    }
    fn watch_conversion(&mut self, watch: &ConversionWatch) -> Result<(), Self::Error> {
        self.pass(|s| s.watch_conversion(watch))
    }
    fn conversion_watches(&mut self, contact: &str) -> Result<Vec<ConversionWatch>, Self::Error> {
        self.pass(|s| s.conversion_watches(contact))
    }
    fn end_conversion_watch(&mut self, watch: &ConversionWatch) -> Result<(), Self::Error> {
        self.pass(|s| s.end_conversion_watch(watch))
    }
}

impl<S: Store> TimerStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn schedule(&mut self, wake: &Wake) -> Result<(), Self::Error> {
        self.pass(|s| s.schedule(wake))
    }
    fn cancel(&mut self, wake: &Wake) -> Result<(), Self::Error> {
        self.pass(|s| s.cancel(wake))
    }
    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, Self::Error> {
        self.pass(|s| s.due_timers(now, limit))
    }
    fn set_inactivity(&mut self, check: &InactivityCheck) -> Result<(), Self::Error> {
        self.pass(|s| s.set_inactivity(check))
    }
    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), Self::Error> {
        self.pass(|s| s.clear_inactivity(contact, keep))
    }
    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, Self::Error> {
        self.pass(|s| s.due_inactivity(now, limit))
    }
    fn remove_inactivity(&mut self, check: &InactivityCheck) -> Result<(), Self::Error> {
        self.pass(|s| s.remove_inactivity(check))
    }
    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.set_launch(scenario, zone, at))
    }
    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, Self::Error> {
        self.pass(|s| s.due_launches(now))
    }
    fn remove_unreadable(&mut self, row: &UnreadableRow) -> Result<(), Self::Error> {
        self.pass(|s| s.remove_unreadable(row))
    }
    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, Self::Error> {
        self.pass(|s| s.next_due())
    }
}

impl<S: Store> relance_core::ports::ConsentStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn append_consent(
        &mut self,
        event: &relance_core::consent::ConsentEvent,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.append_consent(event))
    }
    fn consent_trail(
        &mut self,
        contact: &str,
    ) -> Result<Vec<relance_core::consent::ConsentEvent>, Self::Error> {
        self.pass(|s| s.consent_trail(contact))
    }
}

impl<S: Store> JournalStore for FlakyStore<S> {
    type Error = Fault<S::Fault>;
    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), Self::Error> {
        self.pass(|s| s.journal(scenario, record))
    }
    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.outbox_send(scenario, send, at))
    }
    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.outbox_action(scenario, enrollment, contact, step, action, at))
    }
    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.pass(|s| s.dead_letter(kind, payload, reason, at))
    }
    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, Self::Error> {
        self.pass(|s| s.records(scenario, contact))
    }
    fn purge(
        &mut self,
        kind: relance_core::policy::Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, Self::Error> {
        self.pass(|s| s.purge(kind, before, limit))
    }
}

// --- The at-least-once queue. ---

/// A message on the simulated queue.
#[derive(Debug, Clone)]
enum Message {
    /// A launch for a page of contacts.
    Launch(Vec<String>),
    /// The welcome email was opened.
    Open(String),
    /// A due timer (what the AWS tick puts on the step queue).
    Fire(Wake),
}

/// What the queue did.
#[derive(Debug, Default)]
struct QueueCounts {
    delivered: u64,
    duplicated: u64,
    failed: u64,
    tick_failures: u64,
    ticks: u64,
    group_failures: u64,
}

fn contact_id(i: usize) -> String {
    format!("c{i:05}")
}

/// Contacts who open the welcome email.
fn opens(i: usize) -> bool {
    i.is_multiple_of(3)
}

fn expected_keys(n: usize) -> BTreeSet<String> {
    (0..n)
        .flat_map(|i| {
            let c = contact_id(i);
            let path: [&str; 5] = if opens(i) {
                ["welcome", "thanks", "tip-push", "digest", "last"]
            } else {
                ["welcome", "reminder", "tip-mail", "digest", "last"]
            };
            path.map(|s| format!("{SCENARIO_ID}:{c}:1:{s}"))
        })
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

type Rt = Runtime<FlakyStore<SqliteStore>>;

/// Retries an operation until it succeeds (the caller of a failing API call would).
fn retry<T, E: std::fmt::Display>(what: &str, mut op: impl FnMut() -> Result<T, E>) -> T {
    for _ in 0..100 {
        match op() {
            Ok(v) => return v,
            Err(e) => assert!(e.to_string().contains("injected"), "{what}: {e}"),
        }
    }
    panic!("{what}: failed 100 times in a row");
}

/// Handles one message from the queue.
fn handle(rt: &mut Rt, message: &Message, now: DateTime<Utc>) -> Result<(), RuntimeError> {
    match message {
        Message::Launch(page) => rt
            .launch(
                LaunchDetail {
                    scenario: SCENARIO_ID.into(),
                    contacts: Some(page.clone()),
                },
                now,
            )
            .map(drop),
        Message::Open(contact) => rt.engagement(
            EngagementDetail {
                idempotency_key: None,
                contact: contact.clone(),
                scenario: SCENARIO_ID.into(),
                step: "welcome".into(),
                kind: EngagementKind::Opened,
                url: None,
                link_tags: Vec::new(),
                at: None,
            },
            now,
        ),
        Message::Fire(wake) => rt.fire(wake, now),
    }
}

/// How the consumer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commits {
    /// One message at a time, each unit of work its own commit (the AWS handlers, the
    /// runner before group commit).
    UnitByUnit,
    /// Rounds of 1 to 8 messages in one group commit of 1 to 4 units per commit, as the
    /// runner of `relance run` does: when a group commit fails (or is said to), every
    /// message of the round is delivered again, also those whose units an earlier commit of
    /// the round kept.
    Grouped,
}

#[test]
fn duplicated_and_failing_deliveries_send_everything_exactly_once() {
    exactly_once_under_faults(Commits::UnitByUnit);
}

#[test]
fn group_commits_failing_and_duplicated_send_everything_exactly_once() {
    exactly_once_under_faults(Commits::Grouped);
}

fn exactly_once_under_faults(commits: Commits) {
    let n = env_number("RELANCE_FAULT_CONTACTS", 1000) as usize;
    let seed = env_number("RELANCE_FAULT_SEED", 0x5eed_f00d);
    let fail_percent = env_number("RELANCE_FAULT_FAIL_PERCENT", 5);
    let dup_percent = env_number("RELANCE_FAULT_DUP_PERCENT", 10);
    let started = Instant::now();
    let store = |what| SqliteStore::in_memory().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut rt: Rt = Runtime::new(FlakyStore::new(
        store("store"),
        store("spare"),
        seed,
        fail_percent,
    ));
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let t0 = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{e}"));
    // Faults from the start: the setup's calls are retried like any client's.
    rt.store().armed = true;
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            let id = contact_id(i);
            Contact::from_json(serde_json::json!({
                "id": id, "email": format!("{id}@example.org"), "phone": format!("+336{i:08}"),
                "first_name": "Zoé", "push": {"android": format!("arn:aws:sns:eu-west-1:000000000000:endpoint/GCM/relance/{id}")}
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    retry("import", || rt.import(&contacts, t0, &mut |_| {}));
    retry("put", || rt.put_scenario(SCENARIO, SourceFormat::Yaml, t0));
    retry("activate", || {
        rt.set_status(SCENARIO_ID, Status::Active, t0)
    });

    let mut queue: VecDeque<Message> = (0..n)
        .step_by(LAUNCH_PAGE)
        .map(|start| {
            Message::Launch(
                (start..n.min(start + LAUNCH_PAGE))
                    .map(contact_id)
                    .collect(),
            )
        })
        .collect();
    let mut q = QueueCounts::default();
    let mut now = t0;
    let mut last_seq = 0i64;
    let mut sent: BTreeMap<String, u32> = BTreeMap::new();
    // Messages that reach the queue later: opens of the welcome email an hour after it was
    // sent, late copies.
    let mut later: BTreeMap<DateTime<Utc>, Vec<Message>> = BTreeMap::new();
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 100 * n as u64 + 10_000, "no progress: {q:?}");
        // The provider: new sends out of the outbox; openers open the welcome email.
        let rows = rt
            .store()
            .inner()
            .outbox_after(last_seq, 100_000)
            .unwrap_or_else(|e| panic!("{e}"));
        for (seq, kind, payload) in rows {
            last_seq = seq;
            assert_eq!(kind, "send");
            let v: Value = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));
            let key = v["send"]["idempotency_key"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let contact = v["send"]["contact"].as_str().unwrap_or("").to_string();
            let i: usize = contact[1..].parse().unwrap_or(usize::MAX);
            if v["send"]["step"] == "welcome" && opens(i) {
                let at = v["at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| panic!("no send time: {payload}"));
                later
                    .entry(at + TimeDelta::hours(1))
                    .or_default()
                    .push(Message::Open(contact));
            }
            *sent.entry(key).or_default() += 1;
        }
        // The opens that happened by now and the late copies reach the queue.
        while let Some(entry) = later.first_entry() {
            if *entry.key() > now {
                break;
            }
            for m in entry.remove() {
                let at = rng.below(queue.len() + 1);
                queue.insert(at, m);
            }
        }
        if !queue.is_empty() {
            let take = match commits {
                Commits::UnitByUnit => 1,
                Commits::Grouped => 1 + rng.below(8),
            };
            let round: Vec<Message> = (0..take).map_while(|_| queue.pop_front()).collect();
            for message in &round {
                q.delivered += 1;
                // At least once: 10% of the deliveries leave a copy behind, delivered later:
                // half of them soon, among the messages queued now, half up to ten days later
                // (after the timers that follow, or after the enrollment ended).
                if rng.percent(dup_percent) {
                    q.duplicated += 1;
                    if rng.percent(50) {
                        let at = rng.below(queue.len() + 1);
                        queue.insert(at, message.clone());
                    } else {
                        let delay = TimeDelta::minutes(1 + rng.below(10 * 24 * 60) as i64);
                        later.entry(now + delay).or_default().push(message.clone());
                    }
                }
            }
            let (results, committed) = match commits {
                Commits::UnitByUnit => (
                    round.iter().map(|m| handle(&mut rt, m, now)).collect(),
                    Ok(()),
                ),
                Commits::Grouped => {
                    let limit = 1 + rng.below(4);
                    rt.grouped(limit, |rt| {
                        round.iter().map(|m| handle(rt, m, now)).collect::<Vec<_>>()
                    })
                }
            };
            if let Err(e) = &committed {
                assert!(e.to_string().contains("injected"), "group commit: {e}");
                q.group_failures += 1;
            }
            for (message, result) in round.into_iter().zip(results) {
                let failed = match (&committed, result) {
                    (Err(_), _) => true,
                    (Ok(()), Ok(())) => false,
                    (Ok(()), Err(e)) => {
                        assert!(e.to_string().contains("injected"), "{message:?}: {e}");
                        true
                    }
                };
                if failed {
                    // Redelivered after its visibility timeout, behind some others.
                    q.failed += 1;
                    let at = rng.below(queue.len() + 1);
                    queue.insert(at, message);
                }
            }
            continue;
        }
        // The queue is empty: the due timers, by the embedded tick or through the queue.
        let due = rt.due_timers(now).unwrap_or_else(|e| panic!("{e}"));
        if !due.is_empty() {
            if rng.percent(50) {
                q.ticks += 1;
                let (ticked, committed) = match commits {
                    Commits::UnitByUnit => (rt.tick(now), Ok(())),
                    Commits::Grouped => {
                        let limit = 1 + rng.below(4);
                        rt.grouped(limit, |rt| rt.tick(now))
                    }
                };
                if let Err(e) = ticked.map(drop).and(committed) {
                    assert!(e.to_string().contains("injected"), "tick: {e}");
                    q.tick_failures += 1;
                }
            } else {
                queue.extend(due.into_iter().map(Message::Fire));
            }
            continue;
        }
        let next_due = rt.next_due().unwrap_or_else(|e| panic!("{e}"));
        if let Some(next) = next_due {
            assert!(next > now, "{next} is due and was not fired at {now}");
        }
        match next_due
            .into_iter()
            .chain(later.keys().next().copied())
            .min()
        {
            Some(next) => now = next,
            None => break,
        }
    }
    rt.store().armed = false;
    let elapsed = started.elapsed();

    // Every expected send exactly once, nothing else. (The outbox keeps one row per key, a
    // second insert being ignored: a send applied twice would show in the journal, below.)
    let state = {
        let inner = rt.store().inner();
        let dead = inner.dead_letters().unwrap_or_else(|e| panic!("{e}"));
        format!(
            "(running, ended) {:?}, {} dead letters (first: {:?})",
            inner.enrollment_counts(Some(SCENARIO_ID)).ok(),
            dead.len(),
            dead.first()
        )
    };
    let expected = expected_keys(n);
    let missing: Vec<_> = expected.iter().filter(|k| !sent.contains_key(*k)).collect();
    let twice: Vec<_> = sent.iter().filter(|(_, c)| **c > 1).collect();
    let unexpected: Vec<_> = sent.keys().filter(|k| !expected.contains(*k)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "{} missing {:?}, {} twice {:?}, {} unexpected {:?}; {state}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    );
    // Every enrollment ended, nothing left to fire, no dead letter.
    let inner = rt.store().inner();
    assert_eq!(
        inner.enrollment_counts(Some(SCENARIO_ID)).ok(),
        Some((0, n as u64)),
        "(running, ended)"
    );
    assert_eq!(inner.next_due().ok(), Some(None), "a timer is left");
    let dead = inner.dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dead.is_empty(),
        "{} dead letters: {:?}",
        dead.len(),
        dead.first()
    );
    // The journal: one entry, one send per step and one end per enrollment; the duplicated
    // launches are refused while running (or by once_per), never entered twice.
    let records = inner
        .records(SCENARIO_ID, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut per: BTreeMap<(String, RecordKind, Option<String>), u32> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        if r.kind == RecordKind::Skipped && r.step.is_none() {
            *refused
                .entry(r.reason.clone().unwrap_or_default())
                .or_default() += 1;
            continue;
        }
        let step = matches!(r.kind, RecordKind::Sent)
            .then(|| r.step.clone())
            .flatten();
        *per.entry((r.contact.clone(), r.kind, step)).or_default() += 1;
    }
    for i in 0..n {
        let c = contact_id(i);
        for kind in [RecordKind::Entered, RecordKind::Ended] {
            assert_eq!(per.get(&(c.clone(), kind, None)), Some(&1), "{c} {kind:?}");
        }
    }
    let journal_sends: u32 = per
        .iter()
        .filter(|((_, k, _), _)| *k == RecordKind::Sent)
        .map(|(_, c)| {
            assert_eq!(*c, 1, "a send recorded twice");
            *c
        })
        .sum();
    assert_eq!(journal_sends as usize, 5 * n);
    assert!(
        refused
            .keys()
            .all(|r| r == "already_running" || r == "once_per"),
        "{refused:?}"
    );
    let counts = &rt.store().counts;
    if commits == Commits::Grouped && fail_percent > 0 {
        // The group commits were tested, both ways they fail.
        for injection in [Injection::GroupBeforeCommit, Injection::GroupAfterCommit] {
            assert!(
                counts.injected.get(&injection).is_some_and(|c| *c > 0),
                "no {injection:?} injected: {:?}",
                counts.injected
            );
        }
    }
    eprintln!(
        "faults ({commits:?}): {n} contacts, {} sends (each expected key exactly once: 0 duplicates, 0 lost), \
         {n} enrollments ended, 0 running, 0 dead letters; {} deliveries ({} duplicated, {} failed and \
         redelivered), {} ticks ({} failed), {} group commits failed; {} units of work, {} failed by injection {:?}; \
         refused entries {:?}; {:.2?} (seed {seed:#x})",
        sent.len(),
        q.delivered,
        q.duplicated,
        q.failed,
        q.ticks,
        q.tick_failures,
        q.group_failures,
        counts.units,
        counts.failed(),
        counts.injected,
        refused,
        elapsed
    );
}
