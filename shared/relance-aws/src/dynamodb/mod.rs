//! `DynamoStore`: every port on DynamoDB, two tables (state and timers; every key is built
//! in [`crate::keys`], which lays them out). It only stores: a transition's sends and events
//! are handed to the dispatch port ([`crate::dispatch`]) when the unit flushes.
//!
//! # Layout
//! - `mod.rs`: the store, its unit of work, the commit point and the pending effects.
//! - `item`: reading and writing attributes (instants, JSON, unreadable items).
//! - `reads`: the unit's read cache (an item read twice in a unit is read once).
//! - `scenarios`, `contacts`, `enrollments`, `timers`, `journal`, `consent`: one port each.
//!
//! Instants that are compared or sorted are integers: `{due}` in a timer's sort key is 18
//! fixed-width digits of microseconds since the epoch (`instant::to_key`), the `due` of a
//! timer or inactivity check, a launch's `next_at` and the tick cursor's `cursor_min` are
//! numbers (microseconds). Items written by earlier builds (RFC 3339 text) are still read, and
//! a due item that does not read comes back as [`relance_core::ports::Due::Unreadable`], so
//! the runtime moves it to the dead letters alone. Other instants (activity, journal, dead letters) stay RFC 3339 with
//! microseconds: fixed width within 1970..9999, the only range inputs may have.
//!
//! There are no transactions: every write is idempotent (deterministic keys) or conditional.
//! The enrollment is written first, conditionally on its version, carrying the transition's
//! effects as `pending` (JSON packed with DEFLATE by `item::packed_json`, so the item stays
//! within one write unit; earlier builds' text still reads); they are then applied and
//! cleared. A crash in between is repaired the next time the enrollment is read. A contact's
//! latest enrollment in a scenario is kept in its entry item, so its entry and first
//! transition are one conditional put (see `enrollments`). A handler that flushes once per batch writes the batch's
//! journal items (each the proof that its transition's effects were applied) together, 25
//! per `BatchWriteItem`: unconditional puts of deterministic keys, so a partial write is
//! repaired as a crash before the item is (the effects are re-applied, idempotently, when the
//! input is redelivered). The batch's other unconditional, idempotent writes wait for the
//! flush too (`DynamoStore::defers`): the wake timers armed and consumed (written first,
//! then the tick's cursor if a timer needs it moved back, so the cursor never passes a
//! timer not yet written), then, with the journal items, the journal records of
//! engagement and the input keys (recorded last in their unit, as when written at once). So a
//! flush that fails before a journal item leaves its transition to be re-applied, as a crash
//! does. Conditional writes (enrollment versions, entry marks, send claims) stay single
//! requests, in their order; a unit that flushes as it goes (auto-flush) writes everything at
//! once, as before.
//!
//! A scenario's journal is split over [`keys::SHARDS`] partitions by enrollment
//! ([`keys::journal`]); its readers also read the unsplit partition of earlier builds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, TimeToLiveSpecification, WriteRequest,
};
use chrono::{DateTime, Utc};
use relance_core::contact::Contact;
use relance_core::engine::{Effect, Enrollment, Transition};
use relance_core::journal::Record;
use relance_core::policy::{Retained, Retention};
use relance_core::ports::Store;
use relance_core::scenario::Channel;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bridge::Bridge;
use crate::config::AwsConfig;
use crate::dispatch::{AwsDispatch, Dispatch};
use crate::error::{DispatchError, DynamoError, StoreError};
use crate::eventbridge::EventBus;
use crate::keys;
use crate::sqs::{Outgoing, SqsQueues};

mod consent;
mod contacts;
mod enrollments;
mod heard;
pub use enrollments::MAX_ENTRY_ENROLLMENTS;
mod item;
pub use item::document_text;
mod journal;
mod layouts;
mod reads;
mod scenarios;
mod timer_parts;
mod timers;

use item::{Item, dynamo, from_json, get_s, is_conditional, paged, s, to_json};
use reads::ProfileBasis;

/// The most items one `BatchWriteItem` request takes (DynamoDB's limit).
const BATCH_WRITE: usize = 25;

/// Attempts at a batch's unprocessed items before the flush fails (and its input is retried).
const BATCH_ATTEMPTS: u32 = 8;

/// Attempts at writing a contact's changes over concurrent writers of it (each reads the
/// contact again) before the unit fails and its input is retried.
const CONTACT_ATTEMPTS: u32 = 5;

/// Effects kept on an enrollment until they are applied.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    scenario: String,
    at: DateTime<Utc>,
    effects: Vec<Effect>,
    contact: Option<Contact>,
    /// The transition's changes of the contact, from the contact it read: replayed onto the
    /// contact as stored when applied (see `put_transition_contact`). Absent from an earlier
    /// build's pending effects, or when the unit had not read the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contact_delta: Option<relance_core::delta::ContactDelta>,
    /// The batch's journal part that holds the transition's records once applied (and so
    /// proves it applied; see `journal`). None: the transition's own journal item does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<String>,
}

/// Tests: work run once just before the next put of a contact's profile, shared by the
/// store's copies (a concurrent writer's change between a unit's read and its put).
#[derive(Clone, Default)]
struct InjectionPoint(Arc<std::sync::Mutex<Option<InjectedWork>>>);

/// Work a test injects.
type InjectedWork = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for InjectionPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectionPoint")
    }
}

impl InjectionPoint {
    fn set(&self, work: impl FnOnce() + Send + 'static) {
        if let Ok(mut w) = self.0.lock() {
            *w = Some(Box::new(work));
        }
    }

    fn run(&self) {
        let work = self.0.lock().ok().and_then(|mut w| w.take());
        if let Some(work) = work {
            work();
        }
    }
}

/// A timer-table write a batch defers to its flush (see [`DynamoStore::defers`]).
#[derive(Debug, Clone)]
enum TimerWrite {
    /// A wake timer armed (inactivity checks are written at once, see `put_timer_item`).
    Put(Item),
    /// A timer consumed or cancelled: its key (`pk`, `sk`).
    Delete(String, String),
}

impl TimerWrite {
    fn key(&self) -> (String, String) {
        match self {
            TimerWrite::Put(item) => (
                get_s(item, keys::PK).unwrap_or_default().to_string(),
                get_s(item, keys::SK).unwrap_or_default().to_string(),
            ),
            TimerWrite::Delete(pk, sk) => (pk.clone(), sk.clone()),
        }
    }
}

/// The DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: AwsConfig,
    bridge: Bridge,
    /// The state-table items the current unit of work read or wrote (see `reads`).
    unit_reads: reads::UnitReads,
    /// Entry counts read in this unit, for the optimistic claim in `mark_entry`.
    entries_seen: HashMap<(String, String), u32>,
    /// Entries recorded in this unit, by the id of their enrollment, waiting for its first
    /// write (one put for both, see `enrollments`).
    entries_marked: HashMap<String, enrollments::MarkedEntry>,
    /// The settings of this build's new layouts as last read (`layouts`); shared by the
    /// store's clones.
    layouts: Arc<layouts::Settings>,
    /// Tests with simulated clocks: the layouts follow the units' `now`, not the real clock.
    layouts_on_unit_time: bool,
    /// The tick's finding of the informational events nothing on the bus could receive, as
    /// last read (`heard`); shared by the store's clones.
    heard: Arc<heard::Heard>,
    /// Fault injection for tests: stop right after the commit point of the next transition.
    crash_after_commit: bool,
    /// Fault injection for tests: the next flush fails where it would write journal parts.
    fail_next_parts: bool,
    /// Fault injection for tests: work run just before the next put of a profile.
    before_profile_put: InjectionPoint,
    /// Fault injection for tests: work run just before the next restatement is appended.
    before_restated_append: InjectionPoint,
    /// Where sends, ends, goals and actions for other systems go, when configured.
    dispatch: Option<Arc<dyn Dispatch>>,
    /// Sends are recorded in the contacts' partitions instead (tests, benches): an explicit
    /// choice, never a fallback, so an operating store without a dispatch refuses sends.
    record_sends: bool,
    /// Channel messages waiting for [`DynamoStore::flush`]: (channel, body).
    deferred_messages: Vec<(Channel, String)>,
    /// State-table items waiting for [`DynamoStore::flush`], written last: transitions'
    /// journal items (each says its transition is applied), and, in a batch, journal records
    /// and input keys (see [`DynamoStore::defers`]).
    deferred_markers: Vec<Item>,
    /// The current batch's journal parts (see `journal`), written at the flush before the
    /// other deferred items.
    journal_parts: journal::JournalParts,
    /// Timer-table writes of a batch's units (timers armed and consumed) waiting for
    /// [`DynamoStore::flush`], written before the journal items that say they are done.
    deferred_timers: Vec<TimerWrite>,
    /// The current batch's timer parts (see `timer_parts`), written at the flush with the
    /// other timers.
    timer_parts: timer_parts::TimerParts,
    /// What the last listing of due timers found in parts (the timers handed on leave their
    /// parts; the tick marks their messages).
    listed_parts: timer_parts::Listing,
    /// Timers the step executor fires from a part (their message says so): they have no
    /// item of their own to delete. Emptied at the flush.
    wakes_without_item: std::collections::HashSet<String>,
    /// The minute the tick's cursor must be moved back to once `deferred_timers` are
    /// written (a timer due before the cursor), if any.
    deferred_cursor: Option<DateTime<Utc>>,
    /// Flush at the end of every unit of work (off when a handler flushes once per batch).
    auto_flush: bool,
    /// A timer cursor is known to exist, no later than this minute: the earliest this store
    /// set it to (or found it before). A timer due before that minute still moves it back.
    cursor_at_most: Option<DateTime<Utc>>,
    /// The latest `now` the store's callers gave it (a transition, a tick, a write): a timer
    /// due two minutes after it needs no cursor update (see `put_timer_item`). The store never
    /// reads the clock.
    now: Option<DateTime<Utc>>,
    /// The policy's retention: activity, engagement and dead-letter items carry an
    /// `expires_at` (the table's TTL attribute) when their kind has a period.
    retention: Retention,
}

impl DynamoStore {
    /// A store on these tables, running SDK calls on `bridge`.
    pub fn new(client: Client, config: AwsConfig, bridge: Bridge) -> DynamoStore {
        DynamoStore {
            client,
            config,
            bridge,
            unit_reads: reads::UnitReads::default(),
            entries_seen: HashMap::new(),
            entries_marked: HashMap::new(),
            layouts: Arc::default(),
            layouts_on_unit_time: false,
            heard: Arc::default(),
            crash_after_commit: false,
            fail_next_parts: false,
            before_profile_put: InjectionPoint::default(),
            before_restated_append: InjectionPoint::default(),
            dispatch: None,
            record_sends: false,
            deferred_messages: Vec::new(),
            deferred_markers: Vec::new(),
            journal_parts: journal::JournalParts::default(),
            deferred_timers: Vec::new(),
            timer_parts: timer_parts::TimerParts::default(),
            listed_parts: timer_parts::Listing::default(),
            wakes_without_item: std::collections::HashSet::new(),
            deferred_cursor: None,
            auto_flush: true,
            cursor_at_most: None,
            now: None,
            retention: Retention::default(),
        }
    }

    /// With `false`, channel messages and journal items wait for an explicit
    /// [`DynamoStore::flush`] (a handler flushes once per batch, so sends are batched by ten).
    pub fn set_auto_flush(&mut self, on: bool) {
        self.auto_flush = on;
    }

    /// Hands the deferred channel messages to the dispatch port (ten per request, per
    /// channel), then writes the deferred timers, the batch's journal parts and the other
    /// journal items, 25 per `BatchWriteItem` request. A transition counts as applied only
    /// once its part or journal item is written, so a failure here leaves it to be re-applied
    /// when the input is redelivered.
    ///
    /// Everything deferred leaves the store here, written or not: a flush that fails fails its
    /// whole batch (the handlers have it delivered again), and what it did not write must not
    /// go out with the next batch's flush as if it were that batch's (an input key without
    /// the records of its unit, a part proving a transition whose message was never handed
    /// on).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let messages = std::mem::take(&mut self.deferred_messages);
        let mut timers = std::mem::take(&mut self.deferred_timers);
        timers.extend(
            self.timer_parts
                .take_items(self.config.timer_shards)
                .into_iter()
                .map(TimerWrite::Put),
        );
        self.wakes_without_item.clear();
        let cursor = self.deferred_cursor.take();
        let parts = self.take_journal_parts();
        let markers = std::mem::take(&mut self.deferred_markers);
        if let Some(dispatch) = &self.dispatch {
            let mut by_channel: BTreeMap<&'static str, (Channel, Vec<Outgoing>)> = BTreeMap::new();
            for (channel, body) in messages {
                let (_, list) = by_channel
                    .entry(channel.as_str())
                    .or_insert_with(|| (channel, Vec::new()));
                list.push(Outgoing {
                    id: format!("m{}", list.len()),
                    body,
                    delay_seconds: 0,
                });
            }
            for (_, (channel, list)) in by_channel {
                dispatch.to_channel(channel, &list)?;
            }
        }
        // Then the timers the batch armed and consumed (before the journal items that say
        // their transitions are applied: a failure here leaves those transitions to be
        // re-applied), then the cursor, after its timers exist (a tick between the two finds
        // nothing missed, as when each timer is written with its cursor).
        self.write_timers(timers)?;
        if let Some(minute) = cursor {
            self.move_cursor_back(minute)?;
        }
        // The batch's journal parts, each the proof its transitions are applied, then the
        // other journal items (and a batch's records and input keys): unconditional puts of
        // keys no one else writes, each independent of the others, in batches; a retry
        // rewrites the same items. The parts first, so that an input key is never written
        // before the records of its unit.
        if std::mem::take(&mut self.fail_next_parts) && !parts.is_empty() {
            return Err(StoreError::Injected);
        }
        self.write_items(parts)?;
        self.write_items(markers)
    }

    /// Puts `items` (unconditional, idempotent): one alone as a plain put (same cost), more in
    /// batches.
    fn write_items(&self, items: Vec<Item>) -> Result<(), StoreError> {
        match <[Item; 1]>::try_from(items) {
            Ok([item]) => self.put(item),
            Err(items) if items.is_empty() => Ok(()),
            Err(items) => self.put_batch(items),
        }
    }

    /// Whether a write of the current unit waits for [`DynamoStore::flush`] instead of being
    /// made now: in a unit of work of a store that flushes once per batch (a handler's),
    /// for the writes that are unconditional and idempotent (deterministic keys) and that
    /// no later read of the batch needs from the table (each such read consults the deferred
    /// writes: `input_seen`, `records`, the pending-effects check, the tick's due items).
    /// They then go 25 per `BatchWriteItem` instead of one request each.
    fn defers(&self) -> bool {
        !self.auto_flush && self.unit_reads.active()
    }

    /// Writes the deferred timer-table writes, the last of each key only (a timer armed
    /// then consumed in one batch is deleted), 25 per `BatchWriteItem` (one alone as a plain
    /// request), retrying what DynamoDB leaves unprocessed as [`DynamoStore::put_batch`] does.
    fn write_timers(&self, writes: Vec<TimerWrite>) -> Result<(), StoreError> {
        let mut unique: Vec<TimerWrite> = Vec::with_capacity(writes.len());
        let mut place: HashMap<(String, String), usize> = HashMap::new();
        for w in writes {
            match place.get(&w.key()) {
                Some(&i) => unique[i] = w,
                None => {
                    place.insert(w.key(), unique.len());
                    unique.push(w);
                }
            }
        }
        let table = self.config.timers_table.clone();
        if let [only] = unique.as_slice() {
            return match only {
                TimerWrite::Put(item) => self
                    .bridge
                    .block(
                        self.client
                            .put_item()
                            .table_name(&table)
                            .set_item(Some(item.clone()))
                            .send(),
                    )
                    .map(|_| ())
                    .map_err(dynamo("PutItem")),
                TimerWrite::Delete(pk, sk) => self.delete(&table, pk, sk),
            };
        }
        let requests = unique
            .iter()
            .map(|w| match w {
                TimerWrite::Put(item) => PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build()),
                TimerWrite::Delete(pk, sk) => DeleteRequest::builder()
                    .key(keys::PK, s(pk))
                    .key(keys::SK, s(sk))
                    .build()
                    .map(|delete| WriteRequest::builder().delete_request(delete).build()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DynamoError::new("BatchWriteItem", e.to_string()))?;
        for chunk in requests.chunks(BATCH_WRITE) {
            self.batch_write(&table, chunk.to_vec())?;
        }
        Ok(())
    }

    /// One `BatchWriteItem` of `requests` (at most [`BATCH_WRITE`]) on `table`, retrying what
    /// DynamoDB leaves unprocessed (throttling) with a growing pause, up to
    /// [`BATCH_ATTEMPTS`] times.
    fn batch_write(&self, table: &str, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut attempt = 0;
        while !requests.is_empty() {
            if attempt == BATCH_ATTEMPTS {
                return Err(DynamoError::new(
                    "BatchWriteItem",
                    format!(
                        "{} items still unprocessed after {BATCH_ATTEMPTS} attempts",
                        requests.len()
                    ),
                )
                .into());
            }
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(25 << attempt));
            }
            attempt += 1;
            let out = self
                .bridge
                .block(
                    self.client
                        .batch_write_item()
                        .request_items(table, requests)
                        .send(),
                )
                .map_err(dynamo("BatchWriteItem"))?;
            requests = out
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
        }
        Ok(())
    }

    /// Whether a deferred write of this batch deletes the timer-table item (`pk`, `sk`) (the
    /// tick must not hand on a timer the batch consumed).
    fn timer_deferred_deleted(&self, pk: &str, sk: &str) -> bool {
        self.deferred_timers
            .iter()
            .rev()
            .find(|w| {
                let (p, k) = w.key();
                p == pk && k == sk
            })
            .is_some_and(|w| matches!(w, TimerWrite::Delete(..)))
    }

    /// Sends, ends, goals and actions for other systems are handed to `dispatch`.
    pub fn with_dispatch(mut self, dispatch: impl Dispatch + 'static) -> DynamoStore {
        self.dispatch = Some(Arc::new(dispatch));
        self
    }

    /// The dispatch port, when one is set.
    pub fn dispatch(&self) -> Option<&dyn Dispatch> {
        self.dispatch.as_deref()
    }

    /// The store the functions and the operating commands use: these tables, sends handed to
    /// the channel queues the configuration names, and events emitted on its bus when it
    /// names one. A transition whose send has no queue is refused (`NoChannelQueue`).
    pub fn from_config(
        sdk: &aws_config::SdkConfig,
        config: AwsConfig,
        bridge: Bridge,
    ) -> DynamoStore {
        let queues = SqsQueues::new(aws_sdk_sqs::Client::new(sdk), bridge.clone());
        let mut dispatch = AwsDispatch::new(queues, config.queues.clone());
        if let Some(bus) = config.event_bus.clone() {
            dispatch = dispatch.with_bus(EventBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                bus,
                bridge.clone(),
            ));
        }
        DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config, bridge).with_dispatch(dispatch)
    }

    /// Tests and benches: sends are recorded in the contacts' partitions (read by
    /// [`DynamoStore::outbox`]) instead of being handed to queues. Never for operation: the
    /// channels would not see them.
    pub fn recording_sends(mut self) -> DynamoStore {
        self.record_sends = true;
        self
    }

    /// Whether a send on `channel` can be handed on: recorded (tests), or a dispatch port
    /// with that channel's queue; else why not, naming the setting.
    fn channel_ready(&self, channel: Channel) -> Result<(), StoreError> {
        if self.record_sends {
            return Ok(());
        }
        match &self.dispatch {
            Some(dispatch) => Ok(dispatch.channel_ready(channel)?),
            None => Err(DispatchError::NoChannelQueue {
                var: crate::dispatch::channel_var(channel),
                channel: channel.as_str(),
            }
            .into()),
        }
    }

    /// Remembers the latest `now` a caller gave.
    fn saw(&mut self, now: DateTime<Utc>) {
        self.now = Some(self.now.map_or(now, |seen| seen.max(now)));
    }

    /// Tests: make the next transition stop right after its enrollment is written, as a crash
    /// there would, leaving its effects pending.
    pub fn crash_after_next_commit(&mut self) {
        self.crash_after_commit = true;
    }

    /// Tests: run `work` just before the next put of a contact's profile, by this store or
    /// any copy of it (as a concurrent writer would change the contact between a unit's read
    /// and its put).
    pub fn before_next_profile_put(&self, work: impl FnOnce() + Send + 'static) {
        self.before_profile_put.set(work);
    }

    /// The profile's `doc` as the current unit read it, to hold a write to (`None`: not read
    /// in the unit, or absent when read: nothing to hold it to); a conflict when a repair made
    /// the unit's view stale.
    fn profile_as_read(&self, contact: &str) -> Result<Option<String>, StoreError> {
        match self.unit_reads.profile_basis(&keys::contact(contact)) {
            Some(ProfileBasis::Doc(doc)) => Ok(doc),
            None => Ok(None),
            Some(ProfileBasis::Stale) => Err(contacts::contact_conflict(contact)),
        }
    }

    /// Tests: run `work` just before the next restatement of what a contact holds is appended
    /// to its consent log (after the unit confirmed the contact as read), by this store or any
    /// copy of it.
    pub fn before_next_restated_append(&self, work: impl FnOnce() + Send + 'static) {
        self.before_restated_append.set(work);
    }

    /// Tests: make the next flush that has journal parts to write fail there, as a write
    /// refused at that point would (after the batch's messages and timers).
    pub fn fail_next_journal_parts(&mut self) {
        self.fail_next_parts = true;
    }

    /// The settings.
    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// Creates both tables (on demand, TTL on timers) if they do not exist.
    pub async fn create_tables(client: &Client, config: &AwsConfig) -> Result<(), DynamoError> {
        let mut created_state = false;
        for table in [&config.state_table, &config.timers_table] {
            let created = client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("pk")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| DynamoError::new("CreateTable", e.to_string()))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("sk")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| DynamoError::new("CreateTable", e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("pk")
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| DynamoError::new("CreateTable", e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("sk")
                        .key_type(KeyType::Range)
                        .build()
                        .map_err(|e| DynamoError::new("CreateTable", e.to_string()))?,
                )
                .send()
                .await;
            match created {
                Ok(_) if table == &config.state_table => created_state = true,
                Ok(_) => {}
                Err(e)
                    if e.as_service_error().and_then(|s| s.code())
                        == Some("ResourceInUseException") => {}
                Err(e) => return Err(DynamoError::sdk("CreateTable")(e)),
            }
        }
        // A state table created here holds nothing of an earlier build, and no earlier build
        // works on it: this build's layouts start at once (entries keep their enrollment in
        // the entry item, batches write journal parts). Best effort (a table still being
        // created refuses it): without it, the first write sets the usual delay.
        if created_state {
            for layout in layouts::Layout::ALL {
                if let Err(e) = client
                    .put_item()
                    .table_name(&config.state_table)
                    .item(keys::PK, s(keys::SETTINGS))
                    .item(keys::SK, s(layout.setting()))
                    .item("from", AttributeValue::N("0".into()))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await
                {
                    tracing::warn!(error = ?e, ?layout, "a new state table's layout setting was not written");
                }
            }
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()
            .map_err(|e| DynamoError::new("CreateTable", e.to_string()))?;
        let _ = client
            .update_time_to_live()
            .table_name(&config.timers_table)
            .time_to_live_specification(ttl)
            .send()
            .await;
        Ok(())
    }

    /// A state-table item, strongly consistent; read once per unit of work (see `reads`).
    fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        if let Some(known) = self.unit_reads.get(pk, sk) {
            return Ok(known);
        }
        if self.whole_partition(pk)? {
            return Ok(self.unit_reads.get(pk, sk).flatten());
        }
        let item = self.get_uncached(pk, sk)?;
        self.unit_reads.know(pk, sk, item.as_ref());
        Ok(item)
    }

    /// A state-table item, strongly consistent, always read.
    fn get_uncached(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .bridge
            .block(
                self.client
                    .get_item()
                    .table_name(&self.config.state_table)
                    .key(keys::PK, s(pk))
                    .key(keys::SK, s(sk))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(dynamo("GetItem"))?;
        Ok(out.item)
    }

    fn put(&self, item: Item) -> Result<(), StoreError> {
        self.bridge
            .block(
                self.client
                    .put_item()
                    .table_name(&self.config.state_table)
                    .set_item(Some(item.clone()))
                    .send(),
            )
            .map_err(dynamo("PutItem"))?;
        self.unit_reads.wrote(&item);
        Ok(())
    }

    /// Puts `items` in the state table, [`BATCH_WRITE`] per `BatchWriteItem` request, retrying
    /// what DynamoDB leaves unprocessed (throttling) with a growing pause, up to
    /// [`BATCH_ATTEMPTS`] times. Only for unconditional puts of deterministic keys, whose order
    /// does not matter: a batch takes no condition, and a partial failure must be harmless
    /// (the caller's retry rewrites the same items). A key given twice is written once, with
    /// its last item (a batch refuses duplicate keys).
    fn put_batch(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut unique: Vec<Item> = Vec::with_capacity(items.len());
        let mut place: HashMap<(String, String), usize> = HashMap::new();
        for item in items {
            let key = (
                get_s(&item, keys::PK).unwrap_or_default().to_string(),
                get_s(&item, keys::SK).unwrap_or_default().to_string(),
            );
            match place.get(&key) {
                Some(&i) => unique[i] = item,
                None => {
                    place.insert(key, unique.len());
                    unique.push(item);
                }
            }
        }
        for chunk in unique.chunks(BATCH_WRITE) {
            let requests = chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map_err(|e| DynamoError::new("BatchWriteItem", e.to_string()))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.batch_write(&self.config.state_table, requests)?;
            for item in chunk {
                self.unit_reads.wrote(item);
            }
        }
        Ok(())
    }

    /// Puts unless the key exists; true when written.
    fn put_new(&self, item: Item) -> Result<bool, StoreError> {
        self.put_if(item, "attribute_not_exists(pk)", Vec::new())
    }

    /// Puts `item` if `condition` (with its `values`) holds; true when written. A refused put
    /// leaves the item to be read again when asked (someone else wrote it).
    fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.config.state_table)
            .set_item(Some(item.clone()))
            .condition_expression(condition);
        for (name, value) in values {
            put = put.expression_attribute_values(name, value);
        }
        match self.bridge.block(put.send()) {
            Ok(_) => {
                self.unit_reads.wrote(&item);
                Ok(true)
            }
            Err(e) if is_conditional(&e) => {
                if let (Some(pk), Some(sk)) = (get_s(&item, keys::PK), get_s(&item, keys::SK)) {
                    self.unit_reads.forget(pk, sk);
                }
                Ok(false)
            }
            Err(e) => Err(dynamo("PutItem")(e)),
        }
    }

    fn delete(&self, table: &str, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.bridge
            .block(
                self.client
                    .delete_item()
                    .table_name(table)
                    .key(keys::PK, s(pk))
                    .key(keys::SK, s(sk))
                    .send(),
            )
            .map_err(dynamo("DeleteItem"))?;
        if table == self.config.state_table {
            self.unit_reads.know(pk, sk, None);
        }
        Ok(())
    }

    /// Every item a query returns, across pages.
    fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        paged(|start| {
            let page = self
                .bridge
                .block(query.clone().set_exclusive_start_key(start).send())
                .map_err(dynamo("Query"))?;
            Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
    }

    /// Every item of the state table matching a filter, across pages (tests and audience listing).
    fn scan_all(
        &self,
        filter: &str,
        values: &[(&str, &str)],
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut scan = self
            .client
            .scan()
            .table_name(&self.config.state_table)
            .filter_expression(filter)
            .set_projection_expression(projection.map(str::to_string));
        for (k, v) in values {
            scan = scan.expression_attribute_values(*k, s(*v));
        }
        paged(|start| {
            let page = self
                .bridge
                .block(scan.clone().set_exclusive_start_key(start).send())
                .map_err(dynamo("Scan"))?;
            Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
    }

    /// Within a unit of work, reads a contact's partition whole (one `Query`) into the unit's
    /// cache; true when it is now known whole there (see `reads`).
    fn whole_partition(&self, pk: &str) -> Result<bool, StoreError> {
        if keys::contact_id(pk).is_none() || !self.unit_reads.active() {
            return Ok(false);
        }
        let items = self.query_uncached(&self.config.state_table, pk, "")?;
        self.unit_reads.know_partition(pk, &items);
        Ok(true)
    }

    /// Every item of a partition whose sort key starts with `prefix`, in order; a contact's
    /// partition is read whole once per unit of work (see `reads`).
    fn query(&self, table: &str, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        if table == self.config.state_table {
            if let Some(items) = self.unit_reads.partition(pk, prefix) {
                return Ok(items);
            }
            if self.whole_partition(pk)? {
                return Ok(self.unit_reads.partition(pk, prefix).unwrap_or_default());
            }
        }
        self.query_uncached(table, pk, prefix)
    }

    /// Every item of a partition whose sort key starts with `prefix`, in order, always read.
    fn query_uncached(&self, table: &str, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let q = self
            .client
            .query()
            .table_name(table)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        // DynamoDB refuses an empty prefix: no prefix means the whole partition.
        let q = if prefix.is_empty() {
            q.key_condition_expression("pk = :pk")
        } else {
            q.key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", s(prefix))
        };
        self.query_all(q)
    }

    /// Writes a transition's contact changes: its [`ContactDelta`] (what it changed of the
    /// contact it read: fields, names added to or removed from a list) replayed onto the
    /// contact as stored now (the transition's own read when nothing changed it since),
    /// conditionally on that read; read again and redone when a concurrent writer changed the
    /// contact in between (up to [`CONTACT_ATTEMPTS`] times), so the transition's changes land
    /// and the other writer's stay, and the opt-outs and suppressions stored stand (a
    /// transition may opt out, never back in). Pending effects written before deltas replay
    /// their `SetField` effects instead (whole values; a consent field through the consent
    /// rule), and an earlier build's without either is put whole, as it was. A contact gone
    /// since (erased) is not written again. Written by a `repair` (a pending transition found
    /// when its enrollment was read), the contact the unit may have read before is stale: the
    /// unit's own later put of it fails, and the unit runs again.
    ///
    /// [`ContactDelta`]: relance_core::delta::ContactDelta
    fn put_transition_contact(
        &mut self,
        changed: &Contact,
        delta: Option<&relance_core::delta::ContactDelta>,
        effects: &[Effect],
        at: DateTime<Utc>,
        repair: bool,
    ) -> Result<(), StoreError> {
        let sets: Vec<(&str, &Value)> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::SetField { field, value, .. } => Some((field.as_str(), value)),
                _ => None,
            })
            .collect();
        let pk = keys::contact(changed.id());
        for _ in 0..CONTACT_ATTEMPTS {
            let Some(item) = self.get(&pk, keys::PROFILE)? else {
                if sets.is_empty() && delta.is_none() {
                    // An earlier build's whole contact, where none is stored: as it was.
                    if self.put_profile(changed, at, None)? {
                        return Ok(());
                    }
                    continue;
                }
                tracing::warn!(
                    contact = changed.id(),
                    "a transition's contact changes not written: the contact is gone"
                );
                return Ok(());
            };
            let stored = contacts::contact_of(&item)?;
            let to_write = if let Some(delta) = delta {
                let mut current = stored.clone();
                delta.apply_to(&mut current);
                relance_core::consent::keep_opt_outs(&stored, &mut current);
                current
            } else if sets.is_empty() {
                changed.clone()
            } else {
                let mut current = stored.clone();
                for (field, value) in &sets {
                    relance_core::consent::set_field_keeping_opt_outs(&mut current, field, value);
                }
                current
            };
            // A refused put forgets the profile: the next attempt reads it again.
            if to_write == stored || self.put_profile(&to_write, at, get_s(&item, "doc"))? {
                // Written by a repair: a contact the unit computed before it is stale.
                if repair {
                    self.unit_reads.profile_stale(&pk);
                }
                return Ok(());
            }
        }
        Err(contacts::contact_conflict(changed.id()))
    }

    /// Applies a transition's pending effects: just committed, or, with `repair`, found
    /// unapplied when its enrollment is read (after a crash).
    fn apply_pending(
        &mut self,
        pending: &Pending,
        enrollment: &Enrollment,
        repair: bool,
    ) -> Result<(), StoreError> {
        // Journal records go together in one item, written last (below).
        for effect in pending
            .effects
            .iter()
            .filter(|e| !matches!(e, Effect::Record(_)))
        {
            // Effects re-applied after a crash may be an earlier build's: a send its sender
            // already claimed under the old `sent` partition went out, and this build's
            // senders read that partition only for a while (see `crate::ledger`), so it is
            // not handed on again. One read per send, on this repair path only.
            if let Effect::Send(send) = effect
                && repair
                && self
                    .get_uncached(keys::LEGACY_SENT, &send.idempotency_key)?
                    .is_some()
            {
                continue;
            }
            self.apply_effect(&pending.scenario, effect, pending.at)?;
        }
        if let Some(c) = &pending.contact {
            self.put_transition_contact(
                c,
                pending.contact_delta.as_ref(),
                &pending.effects,
                pending.at,
                repair,
            )?;
        }
        if let Some(dispatch) = &self.dispatch {
            // The finding is read only for a transition that may publish an informational event.
            let informs = pending
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Ended { .. }));
            let muted = if informs {
                self.muted_now()
            } else {
                Vec::new()
            };
            let events = crate::eventbridge::events_of(&pending.scenario, &pending.effects, &muted);
            if !events.is_empty() {
                dispatch.publish(&events)?;
            }
        }
        // Last, the records: in the batch's part, or in the transition's journal item (after a
        // crash: see `journal`). Once written, either says every effect above is applied.
        let records: Vec<Record> = pending
            .effects
            .iter()
            .filter_map(|e| {
                if let Effect::Record(r) = e {
                    Some(r.clone())
                } else {
                    None
                }
            })
            .collect();
        let entry = journal::PartEntry::new(
            Self::journal_sk(pending, enrollment),
            &enrollment.contact,
            records,
        );
        let part = pending.part.as_deref().filter(|_| !repair);
        if let Some(entry) = self.add_to_part(part, entry) {
            let mut item = Item::new();
            item.insert(
                keys::PK.into(),
                s(keys::journal(&pending.scenario, &enrollment.id)),
            );
            item.insert(keys::SK.into(), s(Self::journal_sk(pending, enrollment)));
            item.insert("contact".into(), s(&enrollment.contact));
            item.insert("records".into(), s(to_json(&entry.into_records())));
            self.deferred_markers.push(item);
        }
        if self.auto_flush {
            self.flush()?;
        }
        Ok(())
    }

    /// Stamps the TTL attribute on an item of a kind the policy's retention limits.
    fn expire(&self, item: &mut Item, kind: Retained, at: DateTime<Utc>) {
        if let Some(period) = self.retention.period(kind) {
            let expires = period.add_to(at, chrono_tz::Tz::UTC).timestamp();
            item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
        }
    }

    fn journal_sk(pending: &Pending, enrollment: &Enrollment) -> String {
        keys::journal_transition(pending.at, &enrollment.id, enrollment.version)
    }

    /// The sends and actions in the outbox, oldest first, then in key order (tests and the
    /// dev runner).
    pub fn outbox(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        // Sends live in the contacts' partitions (a scan is fine for tests and the dev runner);
        // actions in the `outbox` partition.
        let mut items = self.scan_all(
            "begins_with(sk, :s) AND attribute_exists(payload)",
            &[(":s", keys::SEND_PREFIX)],
            None,
        )?;
        items.extend(self.query(&self.config.state_table, keys::OUTBOX, "")?);
        let mut out: Vec<(Option<DateTime<Utc>>, String, serde_json::Value)> = items
            .iter()
            .map(|i| {
                let payload: serde_json::Value =
                    from_json("outbox payload", get_s(i, "payload").unwrap_or("null"))?;
                Ok((
                    serde_json::from_value(payload["at"].clone()).ok(),
                    get_s(i, keys::SK).unwrap_or("").to_string(),
                    payload,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out.into_iter().map(|(_, _, v)| v).collect())
    }

    /// The dead letters: (kind, payload, reason).
    pub fn dead_letters(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let items = self.query(&self.config.state_table, keys::DEAD, "")?;
        Ok(items
            .iter()
            .map(|i| {
                (
                    get_s(i, "kind").unwrap_or("").into(),
                    get_s(i, "payload").unwrap_or("").into(),
                    get_s(i, "reason").unwrap_or("").into(),
                )
            })
            .collect())
    }
}

impl Store for DynamoStore {
    type Fault = StoreError;

    fn set_retention(&mut self, retention: &Retention) {
        self.retention = retention.clone();
    }

    fn is_conflict(fault: &StoreError) -> bool {
        matches!(fault, StoreError::Conflict(_))
    }

    fn reread_contact(&mut self, contact: &str) {
        self.unit_reads.reread_profile(&keys::contact(contact));
    }

    /// In one `TransactWriteItems` with a check of the profile against the unit's read (its
    /// basis): refused (`Conflict`) when another writer changed it since.
    fn append_consent_as_read(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
    ) -> Result<(), StoreError> {
        let seen = self.profile_as_read(&e.contact)?;
        self.append_consent_checked(e, seen.as_deref())
    }

    /// The profile written again as the unit read it, conditionally on that read (its basis):
    /// refused (`Conflict`) when another writer changed it since.
    fn confirm_contact_read(&mut self, contact: &str) -> Result<(), StoreError> {
        let Some(basis) = self.profile_as_read(contact)? else {
            return Ok(());
        };
        let now = self.now.unwrap_or_else(Utc::now);
        if self.put_profile_doc(contact, &basis, now, Some(&basis))? {
            Ok(())
        } else {
            Err(contacts::contact_conflict(contact))
        }
    }

    /// DynamoDB has no transaction here: the unit's writes are idempotent or conditional, and
    /// `commit_transition` makes each transition whole (see the module docs).
    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        self.entries_seen.clear();
        // Reads are kept for this unit only (see `reads`).
        let nested = self.unit_reads.begin();
        let marked_before: Vec<String> = self.entries_marked.keys().cloned().collect();
        let out = work(self);
        if out.is_err() {
            // A unit that failed records none of its entries (its input is retried whole).
            self.entries_marked
                .retain(|id, _| marked_before.contains(id));
        }
        if !nested {
            // An entry whose enrollment was not written is recorded alone.
            let marked = self.write_marked_entries();
            self.unit_reads.end();
            marked?;
        }
        Ok(out)
    }

    fn commit_transition(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        expected: Option<u64>,
        t: &Transition,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.saw(now);
        // Every send must have somewhere to go before the commit point: a transition journaled
        // `sent` whose message no channel receives is what this refuses (issue 11, finding 4).
        for effect in &t.effects {
            if let Effect::Send(send) = effect {
                self.channel_ready(send.channel)?;
            }
        }
        let pending = Pending {
            scenario: scenario.to_string(),
            at: now,
            effects: t.effects.clone(),
            contact: t.contact.clone(),
            contact_delta: match (&t.contact_read, &t.contact) {
                (Some(read), Some(changed)) => {
                    Some(relance_core::delta::ContactDelta::between(read, changed))
                }
                _ => None,
            },
            part: self.journal_part_for(scenario, now)?,
        };
        // The commit point: the enrollment, conditionally on its version, with its effects.
        self.write_enrollment(expected, scenario_version, &t.enrollment, Some(&pending))?;
        if std::mem::take(&mut self.crash_after_commit) {
            return Err(StoreError::Injected);
        }
        self.apply_pending(&pending, &t.enrollment, false)
    }
}
