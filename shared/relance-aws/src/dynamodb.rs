//! `DynamoStore`: every port on DynamoDB, two tables.
//!
//! State table (`pk`, `sk`):
//! | item | pk | sk |
//! |---|---|---|
//! | scenario status | `scenario#{id}` | `meta` |
//! | scenario version | `scenario#{id}` | `v#{version:08}` |
//! | scenario registry | `registry` | `scenario#{id}` |
//! | contact | `contact#{id}` | `profile` |
//! | activity / engagement / send marks | `contact#{id}` | `a#…` / `e#{scenario}#…` / `s#{scenario}#…` |
//! | entry mark and running lock | `contact#{id}` | `entry#{scenario}` |
//! | pending inactivity check | `contact#{id}` | `inactivity#{scenario}` |
//! | consent event (append-only) | `contact#{id}` | `consent#{at µs, 18 digits}#{hash}` |
//! | enrollment | `enrollment#{id}` | `state` |
//! | journal record | `journal#{scenario}` | `{at}#{enrollment}#{hash}` |
//! | outbox (send or action, once per key) | `outbox` | `{idempotency key}` |
//! | launch | `launch` | `{scenario}#{zone}` |
//! | timer cursor | `tick` | `cursor` |
//! | dead letter | `dead` | `{at}#{kind}#{hash}` |
//!
//! Timer table: `pk` = `{minute}#{shard}`, `sk` = `{due}#{enrollment}#{step}` (or
//! `{due}#inactivity#{scenario}#{contact}`), so a tick reads a few partitions per minute and
//! no partition runs hot; a TTL attribute cleans up, correctness never relies on it.
//!
//! Instants that are compared or sorted are integers: `{due}` in a timer's sort key is 18
//! fixed-width digits of microseconds since the epoch ([`instant::to_key`]), the `due` of a
//! timer or inactivity check, a launch's `next_at` and the tick cursor's `cursor_min` are
//! numbers (microseconds). Items written by earlier builds (RFC 3339 text) are still read, and
//! a due item that does not read comes back as [`Due::Unreadable`], so the runtime moves it to
//! the dead letters alone. Other instants (activity, journal, dead letters) stay RFC 3339 with
//! microseconds: fixed width within 1970..9999, the only range inputs may have.
//!
//! There are no transactions: every write is idempotent (deterministic keys) or conditional.
//! The enrollment is written first, conditionally on its version, carrying the transition's
//! effects as `pending`; they are then applied and cleared. A crash in between is repaired the
//! next time the enrollment is read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use chrono::{DateTime, SecondsFormat, TimeDelta, Timelike, Utc};
use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, SendMark,
};
use relance_core::engine::{Effect, Enrollment, Send, Transition, Wake};
use relance_core::instant;
use relance_core::journal::Record;
use relance_core::policy::{Retained, Retention};
use relance_core::ports::{
    ContactChange, ContactStore, Due, EnrollmentStore, EntryMark, InactivityCheck, JournalStore,
    LaunchTime, ScenarioEntry, ScenarioSource, ScenarioStore, SourceFormat, Status, Store,
    TimerStore, UnreadableRow,
};
use relance_core::scenario::{Action, Channel};
use serde::{Deserialize, Serialize};

use crate::bridge::Bridge;
use crate::config::AwsConfig;
use crate::error::{DispatchError, DynamoError, StoreError};
use crate::eventbridge::EventBus;
use crate::sqs::{Outgoing, SqsQueues};

type Item = HashMap<String, AttributeValue>;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: "timestamp",
            why: e.to_string(),
        })
}

/// A compared instant as stored: a number of microseconds since the epoch.
fn micros(t: DateTime<Utc>) -> AttributeValue {
    n(instant::to_micros(t))
}

/// Reads a compared instant: a number of microseconds (this build), 18 digits (a timer's
/// sort key) or RFC 3339 text (earlier builds), within 1970..9999; else why not.
fn read_instant(item: &Item, key: &str) -> Result<DateTime<Utc>, String> {
    let t = match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok().and_then(instant::from_micros),
        Some(AttributeValue::S(v)) => instant::from_key(v).or_else(|| {
            DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| instant::in_range(*t))
        }),
        Some(other) => return Err(format!("{key}: not an instant ({other:?})")),
        None => return Err(format!("{key}: missing")),
    };
    t.ok_or_else(|| {
        format!(
            "{key}: {:?} is not an instant within {}",
            item.get(key),
            instant::RANGE_TEXT
        )
    })
}

/// A string attribute a due item needs, or why it does not read.
fn need_s(item: &Item, key: &str) -> Result<String, String> {
    match get_s(item, key) {
        Some(v) => Ok(v.to_string()),
        None => Err(format!("{key}: missing or not a string")),
    }
}

/// A due item that does not read, with what deletes it (`table`, `pk`, `sk`).
fn unreadable(kind: &str, table: &str, item: &Item, reason: String) -> UnreadableRow {
    let raw: serde_json::Map<String, serde_json::Value> = item
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::S(x) | AttributeValue::N(x) => serde_json::Value::from(x.as_str()),
                other => serde_json::Value::from(format!("{other:?}")),
            };
            (k.clone(), v)
        })
        .collect();
    let locator = serde_json::json!({
        "table": table,
        "pk": get_s(item, "pk").unwrap_or(""),
        "sk": get_s(item, "sk").unwrap_or(""),
    });
    UnreadableRow {
        kind: kind.to_string(),
        locator: locator.to_string(),
        raw: serde_json::Value::Object(raw).to_string(),
        reason,
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &'static str, v: &str) -> Result<T, StoreError> {
    serde_json::from_str(v).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

/// FNV-1a, for short deterministic key suffixes (idempotent re-writes land on the same item).
fn hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Every item of a paged read: `page` is called with the key to start from (none first) and
/// answers one page's items and the key after its last one.
fn paged(
    mut page: impl FnMut(Option<Item>) -> Result<(Vec<Item>, Option<Item>), StoreError>,
) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let (items, next) = page(start.take())?;
        out.extend(items);
        match next {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

fn dynamo<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E>) -> StoreError {
    move |e| StoreError::Dynamo(DynamoError::sdk(op)(e))
}

fn is_conditional<E: ProvideErrorMetadata>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// How many of a contact's latest enrollments in a scenario `history` reads for its sends
/// (frequency-cap windows are short; older ones cannot matter).
const MAX_ENROLLMENTS_READ: usize = 5;

/// The minute bucket of an instant.
fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

fn bucket_key(m: DateTime<Utc>, shard: u32) -> String {
    format!("{}#{shard}", m.format("%Y-%m-%dT%H:%M"))
}

/// Effects kept on an enrollment until they are applied.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    scenario: String,
    at: DateTime<Utc>,
    effects: Vec<Effect>,
    contact: Option<Contact>,
}

/// The DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: AwsConfig,
    bridge: Bridge,
    /// Entry counts read in this unit, for the optimistic claim in `mark_entry`.
    entries_seen: HashMap<(String, String), u32>,
    /// Fault injection for tests: stop right after the commit point of the next transition.
    crash_after_commit: bool,
    /// Where sends go once in the outbox (the channel queues), when configured.
    queues: Option<SqsQueues>,
    /// Sends are recorded in the contacts' partitions instead (tests, benches): an explicit
    /// choice, never a fallback, so an operating store without queues refuses sends.
    record_sends: bool,
    /// Where ends, goals and actions for other systems are emitted, when configured.
    events: Option<EventBus>,
    /// Channel messages waiting for [`DynamoStore::flush`]: (queue URL, body).
    deferred_messages: Vec<(String, String)>,
    /// Journal items waiting for [`DynamoStore::flush`]; each says its transition is applied.
    deferred_markers: Vec<Item>,
    /// Flush at the end of every unit of work (off when a handler flushes once per batch).
    auto_flush: bool,
    /// A timer cursor is known to exist.
    cursor_exists: bool,
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
            entries_seen: HashMap::new(),
            crash_after_commit: false,
            queues: None,
            record_sends: false,
            events: None,
            deferred_messages: Vec::new(),
            deferred_markers: Vec::new(),
            auto_flush: true,
            cursor_exists: false,
            retention: Retention::default(),
        }
    }

    /// With `false`, channel messages and journal items wait for an explicit
    /// [`DynamoStore::flush`] (a handler flushes once per batch, so sends are batched by ten).
    pub fn set_auto_flush(&mut self, on: bool) {
        self.auto_flush = on;
    }

    /// Sends the deferred channel messages (ten per request, per queue), then writes the
    /// deferred journal items. A transition counts as applied only once its journal item is
    /// written, so a failure here leaves it to be re-applied when the input is redelivered.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let messages = std::mem::take(&mut self.deferred_messages);
        if let Some(queues) = &self.queues {
            let mut by_url: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
            for (url, body) in messages {
                let list = by_url.entry(url).or_default();
                list.push(Outgoing {
                    id: format!("m{}", list.len()),
                    body,
                    delay_seconds: 0,
                });
            }
            for (url, list) in by_url {
                queues
                    .send_batch(&url, &list)
                    .map_err(DispatchError::from)?;
            }
        }
        for marker in std::mem::take(&mut self.deferred_markers) {
            self.put(marker)?;
        }
        Ok(())
    }

    /// Ends, goals and actions for other systems are also emitted on this bus.
    pub fn with_events(mut self, bus: EventBus) -> DynamoStore {
        self.events = Some(bus);
        self
    }

    /// Sends also go to the channel queues named in the configuration.
    pub fn with_queues(mut self, queues: SqsQueues) -> DynamoStore {
        self.queues = Some(queues);
        self
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
        let bus = config.event_bus.clone();
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config, bridge.clone())
            .with_queues(queues);
        match bus {
            Some(bus) => store.with_events(EventBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                bus,
                bridge,
            )),
            None => store,
        }
    }

    /// Tests and benches: sends are recorded in the contacts' partitions (read by
    /// [`DynamoStore::outbox`]) instead of being handed to queues. Never for operation: the
    /// channels would not see them.
    pub fn recording_sends(mut self) -> DynamoStore {
        self.record_sends = true;
        self
    }

    /// The queue a send on `channel` is handed to, or why there is none.
    fn channel_queue(&self, channel: Channel) -> Result<Option<&str>, StoreError> {
        if self.record_sends {
            return Ok(None);
        }
        let q = &self.config.queues;
        let (url, var) = match channel {
            Channel::Email => (&q.email, "RELANCE_EMAIL_QUEUE_URL"),
            Channel::Sms => (&q.sms, "RELANCE_SMS_QUEUE_URL"),
            Channel::Push => (&q.push, "RELANCE_PUSH_QUEUE_URL"),
            Channel::WebPush => (&q.web_push, "RELANCE_WEB_PUSH_QUEUE_URL"),
        };
        match (&self.queues, url) {
            (Some(_), Some(url)) => Ok(Some(url)),
            _ => Err(DispatchError::NoChannelQueue {
                var,
                channel: channel.as_str(),
            }
            .into()),
        }
    }

    /// Tests: make the next transition stop right after its enrollment is written, as a crash
    /// there would, leaving its effects pending.
    pub fn crash_after_next_commit(&mut self) {
        self.crash_after_commit = true;
    }

    /// The settings.
    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// Creates both tables (on demand, TTL on timers) if they do not exist.
    pub async fn create_tables(client: &Client, config: &AwsConfig) -> Result<(), DynamoError> {
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
                Ok(_) => {}
                Err(e)
                    if e.as_service_error().and_then(|s| s.code())
                        == Some("ResourceInUseException") => {}
                Err(e) => return Err(DynamoError::sdk("CreateTable")(e)),
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

    fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .bridge
            .block(
                self.client
                    .get_item()
                    .table_name(&self.config.state_table)
                    .key("pk", s(pk))
                    .key("sk", s(sk))
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
                    .set_item(Some(item))
                    .send(),
            )
            .map_err(dynamo("PutItem"))?;
        Ok(())
    }

    /// Puts unless the key exists; true when written.
    fn put_new(&self, item: Item) -> Result<bool, StoreError> {
        let r = self.bridge.block(
            self.client
                .put_item()
                .table_name(&self.config.state_table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(dynamo("PutItem")(e)),
        }
    }

    fn delete(&self, table: &str, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.bridge
            .block(
                self.client
                    .delete_item()
                    .table_name(table)
                    .key("pk", s(pk))
                    .key("sk", s(sk))
                    .send(),
            )
            .map_err(dynamo("DeleteItem"))?;
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

    /// Every item of a partition whose sort key starts with `prefix`, in order.
    fn query(&self, table: &str, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
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

    /// Timer items of one bucket due at or before `now`, and those whose `due` does not read
    /// (the caller dead-letters them). The whole minute is read and filtered here: sort keys
    /// of earlier builds (RFC 3339 text) and of this one (digits) do not order together.
    fn query_bucket(&self, bucket: &str, now: DateTime<Utc>) -> Result<Vec<Item>, StoreError> {
        let items = self.query_all(
            self.client
                .query()
                .table_name(&self.config.timers_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(bucket))
                .consistent_read(true),
        )?;
        Ok(items
            .into_iter()
            .filter(|i| {
                read_instant(i, "due").is_ok_and(|d| d <= now) || read_instant(i, "due").is_err()
            })
            .collect())
    }

    fn shard(&self, key: &str) -> u32 {
        let h = u64::from_str_radix(&hash(&[key]), 16).unwrap_or(0);
        (h % u64::from(self.config.timer_shards)) as u32
    }

    fn put_timer_item(
        &mut self,
        due: DateTime<Utc>,
        sk: String,
        shard_key: &str,
        mut attrs: Item,
    ) -> Result<(), StoreError> {
        let bucket = bucket_key(minute(due), self.shard(shard_key));
        attrs.insert("pk".into(), s(bucket));
        attrs.insert("sk".into(), s(sk));
        attrs.insert("due".into(), micros(due));
        attrs.insert(
            "expires_at".into(),
            n(due
                .checked_add_signed(TimeDelta::days(30))
                .unwrap_or(due)
                .timestamp()),
        );
        self.bridge
            .block(
                self.client
                    .put_item()
                    .table_name(&self.config.timers_table)
                    .set_item(Some(attrs))
                    .send(),
            )
            .map_err(dynamo("PutItem"))?;
        // The tick starts from the earliest minute that may hold timers. The cursor never
        // passes the current minute, so a timer two minutes ahead needs no update once a
        // cursor exists (one write less per timer).
        if self.cursor_exists && minute(due) >= minute(Utc::now()) + TimeDelta::minutes(2) {
            return Ok(());
        }
        // A number: DynamoDB compares it as one. (`cursor_at`, RFC 3339 text, is the cursor
        // of earlier builds; `due_items` takes the earlier of the two until it moves on.)
        let r = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.config.state_table)
                .key("pk", s("tick"))
                .key("sk", s("cursor"))
                .update_expression("SET cursor_min = :m")
                .condition_expression("attribute_not_exists(cursor_min) OR cursor_min > :m")
                .expression_attribute_values(":m", micros(minute(due)))
                .send(),
        );
        match r {
            Ok(_) => {
                self.cursor_exists = true;
                Ok(())
            }
            Err(e) if is_conditional(&e) => {
                self.cursor_exists = true;
                Ok(())
            }
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
    }

    fn timer_sk_for_wake(w: &Wake) -> String {
        format!("{}#{}#{}", instant::to_key(w.at), w.enrollment, w.step)
    }

    fn inactivity_sk(check: &InactivityCheck) -> String {
        format!(
            "{}#inactivity#{}#{}",
            instant::to_key(check.due),
            check.scenario,
            check.contact
        )
    }

    /// Due items of the timer table (timers and inactivity checks, and items whose `due` does
    /// not read), advancing the cursor past minutes found empty.
    fn due_items(&self, now: DateTime<Utc>) -> Result<Vec<Item>, StoreError> {
        let Some(item) = self.get("tick", "cursor")? else {
            return Ok(Vec::new());
        };
        // The earlier of this build's cursor and an earlier build's, when both are there.
        let ours = item
            .contains_key("cursor_min")
            .then(|| read_instant(&item, "cursor_min"));
        let theirs = item
            .contains_key("cursor_at")
            .then(|| read_instant(&item, "cursor_at"));
        let mut m = match (ours, theirs) {
            (None, None) => return Ok(Vec::new()),
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.and_then(|a| b.map(|b| a.min(b))),
        }
        .map_err(|why| StoreError::Corrupt {
            what: "timer cursor",
            why,
        })?;
        let start = m;
        let last = minute(now);
        let mut items = Vec::new();
        let mut first_busy: Option<DateTime<Utc>> = None;
        while m <= last {
            let mut found = false;
            for shard in 0..self.config.timer_shards {
                let got = self.query_bucket(&bucket_key(m, shard), now)?;
                found |= !got.is_empty();
                items.extend(got);
            }
            if found && first_busy.is_none() {
                first_busy = Some(m);
            }
            m += TimeDelta::minutes(1);
        }
        // Minutes before the first one still holding items are done: move the cursor on.
        let new_cursor = first_busy.unwrap_or(last);
        if new_cursor > start {
            let mut update = self
                .client
                .update_item()
                .table_name(&self.config.state_table)
                .key("pk", s("tick"))
                .key("sk", s("cursor"))
                .update_expression("SET cursor_min = :m REMOVE cursor_at")
                .expression_attribute_values(":m", micros(new_cursor));
            // Only if no timer moved the cursor back meanwhile.
            update = match item.get("cursor_min") {
                Some(old) => update
                    .condition_expression("cursor_min = :old")
                    .expression_attribute_values(":old", old.clone()),
                None => update.condition_expression("attribute_not_exists(cursor_min)"),
            };
            let _ = self.bridge.block(update.send());
        }
        // Items an earlier build wrote (an RFC 3339 sort key) move to this build's key, so
        // `cancel` and the consuming unit find them by it.
        for item in &mut items {
            self.rekey_legacy(item)?;
        }
        // Time order; an unreadable `due` last (the runtime dead-letters it).
        items.sort_by_cached_key(|i| {
            (
                read_instant(i, "due").unwrap_or(DateTime::<Utc>::MAX_UTC),
                get_s(i, "sk").unwrap_or("").to_string(),
            )
        });
        Ok(items)
    }

    /// Rewrites a readable timer-table item whose sort key does not start with 18 digits
    /// (RFC 3339 text, from an earlier build) under this build's key: a copy is written with
    /// the digits and a numeric `due`, then the old item is deleted (a crash in between
    /// leaves both: the copy fires, the old one is then stale and changes nothing).
    fn rekey_legacy(&self, item: &mut Item) -> Result<(), StoreError> {
        let Some(sk) = get_s(item, "sk") else {
            return Ok(());
        };
        let Some(hash_at) = sk.find('#') else {
            return Ok(());
        };
        if instant::from_key(&sk[..hash_at]).is_some() {
            return Ok(());
        }
        let Ok(due) = read_instant(item, "due") else {
            return Ok(());
        };
        let old_sk = sk.to_string();
        let new_sk = format!("{}{}", instant::to_key(due), &old_sk[hash_at..]);
        let mut copy = item.clone();
        copy.insert("sk".into(), s(new_sk));
        copy.insert("due".into(), micros(due));
        self.bridge
            .block(
                self.client
                    .put_item()
                    .table_name(&self.config.timers_table)
                    .set_item(Some(copy.clone()))
                    .send(),
            )
            .map_err(dynamo("PutItem"))?;
        let pk = get_s(item, "pk").unwrap_or("").to_string();
        self.delete(&self.config.timers_table, &pk, &old_sk)?;
        *item = copy;
        Ok(())
    }

    fn active_scenarios(&mut self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .scenarios(Some(Status::Active))?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    fn apply_pending(
        &mut self,
        pending: &Pending,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        // Journal records go together in one item, written last (below).
        for effect in pending
            .effects
            .iter()
            .filter(|e| !matches!(e, Effect::Record(_)))
        {
            self.apply_effect(&pending.scenario, effect, pending.at)?;
        }
        if let Some(c) = &pending.contact {
            self.put_contact(c, pending.at)?;
        }
        if let Some(bus) = &self.events {
            let events = crate::eventbridge::events_of(&pending.scenario, &pending.effects);
            if !events.is_empty() {
                bus.emit(&events).map_err(DispatchError::from)?;
            }
        }
        // Last, the journal item: once written, it says every effect above is applied.
        let records: Vec<&Record> = pending
            .effects
            .iter()
            .filter_map(|e| {
                if let Effect::Record(r) = e {
                    Some(r)
                } else {
                    None
                }
            })
            .collect();
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("journal#{}", pending.scenario)));
        item.insert("sk".into(), s(Self::journal_sk(pending, enrollment)));
        item.insert("contact".into(), s(&enrollment.contact));
        item.insert("records".into(), s(to_json(&records)));
        self.deferred_markers.push(item);
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
        format!(
            "{}#{}#{}",
            ts(pending.at),
            enrollment.id,
            enrollment.version
        )
    }

    fn read_enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let Some(item) = self.get(&format!("enrollment#{id}"), "state")? else {
            return Ok(None);
        };
        let enrollment: Enrollment =
            from_json("enrollment", get_s(&item, "doc").unwrap_or("null"))?;
        let version = get_n(&item, "scenario_version").unwrap_or(1) as u32;
        if let Some(p) = get_s(&item, "pending") {
            // A crash left effects unapplied: apply them now (every one is idempotent).
            let pending: Pending = from_json("pending effects", p)?;
            let marker = self.get(
                &format!("journal#{}", pending.scenario),
                &Self::journal_sk(&pending, &enrollment),
            )?;
            let deferred = self
                .deferred_markers
                .iter()
                .any(|m| get_s(m, "sk") == Some(Self::journal_sk(&pending, &enrollment).as_str()));
            if marker.is_none() && !deferred {
                self.apply_pending(&pending, &enrollment)?;
            }
        }
        Ok(Some((enrollment, version)))
    }

    /// The sends and actions in the outbox, in key order (tests and the dev runner).
    pub fn outbox(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        // Sends live in the contacts' partitions (a scan is fine for tests and the dev runner);
        // actions in the `outbox` partition.
        let mut items = self.scan_all(
            "begins_with(sk, :s) AND attribute_exists(payload)",
            &[(":s", "s#")],
            None,
        )?;
        items.extend(self.query(&self.config.state_table, "outbox", "")?);
        let mut out: Vec<(String, serde_json::Value)> = items
            .iter()
            .map(|i| {
                Ok((
                    get_s(i, "sk").unwrap_or("").to_string(),
                    from_json("outbox payload", get_s(i, "payload").unwrap_or("null"))?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// The dead letters: (kind, payload, reason).
    pub fn dead_letters(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let items = self.query(&self.config.state_table, "dead", "")?;
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

impl ScenarioStore for DynamoStore {
    type Error = StoreError;

    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.query(&self.config.state_table, "registry", "scenario#")? {
            let Some(id) = get_s(&item, "sk").and_then(|k| k.strip_prefix("scenario#")) else {
                continue;
            };
            if let Some(entry) = self.scenario(id)?
                && status.is_none_or(|st| st == entry.status)
            {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, StoreError> {
        let Some(item) = self.get(&format!("scenario#{id}"), "meta")? else {
            return Ok(None);
        };
        let status = get_s(&item, "status")
            .and_then(Status::parse)
            .ok_or(StoreError::Corrupt {
                what: "scenario status",
                why: id.to_string(),
            })?;
        Ok(Some(ScenarioEntry {
            id: id.to_string(),
            status,
            latest_version: get_n(&item, "latest_version").unwrap_or(0) as u32,
            active_version: get_n(&item, "active_version").map(|v| v as u32),
        }))
    }

    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, StoreError> {
        let Some(item) = self.get(&format!("scenario#{id}"), &format!("v#{version:08}"))? else {
            return Ok(None);
        };
        Ok(Some(ScenarioSource {
            id: id.to_string(),
            version,
            format: if get_s(&item, "format") == Some("json") {
                SourceFormat::Json
            } else {
                SourceFormat::Yaml
            },
            text: get_s(&item, "text").unwrap_or("").to_string(),
        }))
    }

    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let existing = self.scenario(id)?;
        let version = existing.as_ref().map_or(0, |e| e.latest_version) + 1;
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("scenario#{id}")));
        item.insert("sk".into(), s(format!("v#{version:08}")));
        item.insert(
            "format".into(),
            s(if format == SourceFormat::Json {
                "json"
            } else {
                "yaml"
            }),
        );
        item.insert("text".into(), s(text));
        item.insert("created_at".into(), s(ts(now)));
        if !self.put_new(item)? {
            return Err(StoreError::Conflict(format!(
                "scenario {id} version {version}"
            )));
        }
        let mut meta = Item::new();
        meta.insert("pk".into(), s(format!("scenario#{id}")));
        meta.insert("sk".into(), s("meta"));
        meta.insert(
            "status".into(),
            s(existing.as_ref().map_or("draft", |e| e.status.as_str())),
        );
        meta.insert("latest_version".into(), n(version));
        if let Some(v) = existing.as_ref().and_then(|e| e.active_version) {
            meta.insert("active_version".into(), n(v));
        }
        meta.insert("updated_at".into(), s(ts(now)));
        self.put(meta)?;
        let mut reg = Item::new();
        reg.insert("pk".into(), s("registry"));
        reg.insert("sk".into(), s(format!("scenario#{id}")));
        self.put(reg)?;
        Ok(version)
    }

    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.config.state_table)
            .key("pk", s(format!("scenario#{id}")))
            .key("sk", s("meta"))
            .expression_attribute_values(":s", s(status.as_str()))
            .expression_attribute_values(":u", s(ts(now)));
        update = match active_version {
            Some(v) => update
                .update_expression("SET #st = :s, updated_at = :u, active_version = :v")
                .expression_attribute_values(":v", n(v)),
            None => update.update_expression("SET #st = :s, updated_at = :u"),
        };
        self.bridge
            .block(update.expression_attribute_names("#st", "status").send())
            .map_err(dynamo("UpdateItem"))?;
        Ok(())
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get("settings", name)?
            .and_then(|item| get_s(&item, "text").map(str::to_string)))
    }

    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s("settings"));
        item.insert("sk".into(), s(name));
        item.insert("text".into(), s(text));
        item.insert("updated_at".into(), s(ts(now)));
        self.put(item)
    }
}

impl ContactStore for DynamoStore {
    type Error = StoreError;

    fn contact(&mut self, id: &str) -> Result<Option<Contact>, StoreError> {
        let Some(item) = self.get(&format!("contact#{id}"), "profile")? else {
            return Ok(None);
        };
        let v: serde_json::Value = from_json("contact", get_s(&item, "doc").unwrap_or("null"))?;
        Contact::from_stored(v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: "contact",
                why: e.to_string(),
            })
    }

    fn put_contact(
        &mut self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, StoreError> {
        let change = match self.contact(contact.id())? {
            None => ContactChange::Added,
            Some(c) if &c == contact => return Ok(ContactChange::Unchanged),
            Some(_) => ContactChange::Modified,
        };
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("contact#{}", contact.id())));
        item.insert("sk".into(), s("profile"));
        item.insert("doc".into(), s(to_json(contact)));
        item.insert("updated_at".into(), s(ts(now)));
        self.put(item)?;
        Ok(change)
    }

    fn contact_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let items = self.scan_all("sk = :p", &[(":p", "profile")], Some("pk"))?;
        let mut ids: Vec<String> = items
            .iter()
            .filter_map(|i| {
                get_s(i, "pk")
                    .and_then(|p| p.strip_prefix("contact#"))
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), StoreError> {
        let props = to_json(&event.properties);
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("contact#{contact}")));
        item.insert(
            "sk".into(),
            s(format!(
                "a#{}#{}",
                ts(event.at),
                hash(&[&event.name, &props])
            )),
        );
        item.insert("name".into(), s(&event.name));
        item.insert("properties".into(), s(props));
        item.insert("at".into(), s(ts(event.at)));
        self.expire(&mut item, Retained::Activity, event.at);
        self.put(item)
    }

    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        e: &Engagement,
    ) -> Result<(), StoreError> {
        let tags = to_json(&e.link_tags);
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("contact#{contact}")));
        item.insert(
            "sk".into(),
            s(format!(
                "e#{scenario}#{}#{}",
                ts(e.at),
                hash(&[
                    &e.step,
                    e.kind.as_str(),
                    e.url.as_deref().unwrap_or(""),
                    &tags
                ])
            )),
        );
        item.insert("step".into(), s(&e.step));
        item.insert("kind".into(), s(e.kind.as_str()));
        item.insert("at".into(), s(ts(e.at)));
        if let Some(u) = &e.url {
            item.insert("url".into(), s(u));
        }
        item.insert("link_tags".into(), s(tags));
        self.expire(&mut item, Retained::Engagement, e.at);
        self.put(item)
    }

    fn input_seen(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(&format!("input#{key}"), "input")?.is_some())
    }

    fn record_input(&mut self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("input#{key}")));
        item.insert("sk".into(), s("input"));
        item.insert("at".into(), s(ts(now)));
        // Conditional: the first record of a key stays; a repeat changes nothing.
        self.put_new(item).map(|_| ())
    }

    fn history(&mut self, contact: &str, scenario: &str) -> Result<History, StoreError> {
        let pk = format!("contact#{contact}");
        let mut h = History::default();
        for item in self.query(&self.config.state_table, &pk, "a#")? {
            h.events.push(ActivityEvent {
                at: parse_ts(get_s(&item, "at").unwrap_or(""))?,
                name: get_s(&item, "name").unwrap_or("").to_string(),
                properties: from_json(
                    "activity properties",
                    get_s(&item, "properties").unwrap_or("{}"),
                )?,
            });
        }
        for item in self.query(&self.config.state_table, &pk, &format!("e#{scenario}#"))? {
            let kind = get_s(&item, "kind").unwrap_or("");
            let kind = EngagementKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or(StoreError::Corrupt {
                    what: "engagement kind",
                    why: kind.to_string(),
                })?;
            h.engagement.push(Engagement {
                at: parse_ts(get_s(&item, "at").unwrap_or(""))?,
                step: get_s(&item, "step").unwrap_or("").to_string(),
                kind,
                url: get_s(&item, "url").map(str::to_string),
                link_tags: from_json("link tags", get_s(&item, "link_tags").unwrap_or("[]"))?,
            });
        }
        // The scenario's earlier sends to the contact (for frequency caps) are in its
        // enrollments' `sent` maps: no separate write per send.
        h.sends = self.scenario_sends(contact, scenario)?;
        h.events.sort_by_key(|e| e.at);
        h.engagement.sort_by_key(|e| e.at);
        Ok(h)
    }

    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, StoreError> {
        let pk = format!("contact#{contact}");
        let mut sends = Vec::new();
        for item in self.query(&self.config.state_table, &pk, "entry#")? {
            let scenario = get_s(&item, "sk")
                .and_then(|sk| sk.strip_prefix("entry#"))
                .unwrap_or("")
                .to_string();
            sends.extend(self.scenario_sends(contact, &scenario)?);
        }
        sends.sort_by_key(|m| m.at);
        Ok(sends)
    }
}

impl DynamoStore {
    /// Whose send an SMS message id was: (contact, scenario, step), as the SMS sender
    /// recorded it for a week.
    pub fn sms_send(
        &self,
        message_id: &str,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        Ok(self.get(&format!("sms#{message_id}"), "send")?.map(|item| {
            let field = |k: &str| get_s(&item, k).unwrap_or("").to_string();
            (field("contact"), field("scenario"), field("step"))
        }))
    }

    /// One scenario's sends to a contact, from its latest enrollments' `sent` maps.
    fn scenario_sends(&self, contact: &str, scenario: &str) -> Result<Vec<SendMark>, StoreError> {
        let pk = format!("contact#{contact}");
        let entries = self
            .get(&pk, &format!("entry#{scenario}"))?
            .and_then(|e| get_n(&e, "entries"))
            .unwrap_or(0);
        let mut sends = Vec::new();
        for n in (1..=entries).rev().take(MAX_ENROLLMENTS_READ) {
            if let Some(item) =
                self.get(&format!("enrollment#{scenario}:{contact}:{n}"), "state")?
            {
                let e: Enrollment = from_json("enrollment", get_s(&item, "doc").unwrap_or("null"))?;
                sends.extend(e.sent.values().map(|at| SendMark { at: *at }));
            }
        }
        sends.sort_by_key(|m| m.at);
        Ok(sends)
    }
}

impl EnrollmentStore for DynamoStore {
    type Error = StoreError;

    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let Some(entry) = self.get(&format!("contact#{contact}"), &format!("entry#{scenario}"))?
        else {
            return Ok(None);
        };
        let Some(id) = get_s(&entry, "running").map(str::to_string) else {
            return Ok(None);
        };
        // A claim whose enrollment never got written, or that has ended, is not running.
        Ok(self.read_enrollment(&id)?.filter(|(e, _)| e.is_running()))
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, StoreError> {
        self.read_enrollment(id)
    }

    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
    ) -> Result<(), StoreError> {
        self.write_enrollment(expected, scenario_version, e, None)
    }

    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, StoreError> {
        let item = self.get(&format!("contact#{contact}"), &format!("entry#{scenario}"))?;
        let mark = match item.as_ref().and_then(|i| {
            get_s(i, "last_entered_at").map(|at| (at, get_n(i, "entries").unwrap_or(0)))
        }) {
            Some((at, entries)) => Some(EntryMark {
                last_entered_at: parse_ts(at)?,
                entries: entries as u32,
            }),
            None => None,
        };
        self.entries_seen.insert(
            (scenario.to_string(), contact.to_string()),
            mark.map_or(0, |m| m.entries),
        );
        Ok(mark)
    }

    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Optimistic claim: only if no other entry happened since this unit read the mark, so
        // concurrent triggers cannot both enter (the loser retries and sees already_running).
        let seen = self
            .entries_seen
            .get(&(scenario.to_string(), contact.to_string()))
            .copied()
            .unwrap_or(0);
        let id = format!("{scenario}:{contact}:{}", seen + 1);
        let r = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.config.state_table)
                .key("pk", s(format!("contact#{contact}")))
                .key("sk", s(format!("entry#{scenario}")))
                .update_expression("SET last_entered_at = :at, entries = :next, running = :id")
                .condition_expression("attribute_not_exists(entries) OR entries = :seen")
                .expression_attribute_values(":at", s(ts(at)))
                .expression_attribute_values(":next", n(seen + 1))
                .expression_attribute_values(":seen", n(seen))
                .expression_attribute_values(":id", s(id))
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Err(StoreError::Conflict(format!(
                "entry of {contact} in {scenario}"
            ))),
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
    }
}

impl DynamoStore {
    fn write_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
        pending: Option<&Pending>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("enrollment#{}", e.id)));
        item.insert("sk".into(), s("state"));
        item.insert("doc".into(), s(to_json(e)));
        item.insert("version".into(), n(e.version));
        item.insert("scenario_version".into(), n(scenario_version));
        item.insert("scenario".into(), s(&e.scenario));
        item.insert("contact".into(), s(&e.contact));
        item.insert("running".into(), AttributeValue::Bool(e.is_running()));
        if let Some(p) = pending {
            item.insert("pending".into(), s(to_json(p)));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.config.state_table)
            .set_item(Some(item));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        match self.bridge.block(put.send()) {
            Ok(_) => Ok(()),
            Err(err) if is_conditional(&err) => {
                Err(StoreError::Conflict(format!("enrollment {}", e.id)))
            }
            Err(err) => Err(dynamo("PutItem")(err)),
        }
    }
}

impl TimerStore for DynamoStore {
    type Error = StoreError;

    fn schedule(&mut self, w: &Wake) -> Result<(), StoreError> {
        let mut attrs = Item::new();
        attrs.insert("kind".into(), s("timer"));
        attrs.insert("enrollment".into(), s(&w.enrollment));
        attrs.insert("contact".into(), s(&w.contact));
        attrs.insert("step".into(), s(&w.step));
        self.put_timer_item(w.at, Self::timer_sk_for_wake(w), &w.enrollment, attrs)
    }

    fn cancel(&mut self, w: &Wake) -> Result<(), StoreError> {
        let bucket = bucket_key(minute(w.at), self.shard(&w.enrollment));
        self.delete(
            &self.config.timers_table.clone(),
            &bucket,
            &Self::timer_sk_for_wake(w),
        )
    }

    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, StoreError> {
        let active = self.active_scenarios()?;
        let table = self.config.timers_table.clone();
        let mut out = Vec::new();
        for item in self.due_items(now)? {
            if get_s(&item, "kind") != Some("timer") {
                continue;
            }
            let read = || -> Result<Wake, String> {
                Ok(Wake {
                    at: read_instant(&item, "due")?,
                    contact: need_s(&item, "contact")?,
                    step: need_s(&item, "step")?,
                    enrollment: need_s(&item, "enrollment")?,
                })
            };
            match read() {
                Ok(wake) => {
                    // Enrollment ids start with their scenario id, which has no ':'.
                    let scenario = wake.enrollment.split(':').next().unwrap_or("");
                    if !active.contains(scenario) {
                        continue;
                    }
                    out.push(Due::Ready(wake));
                }
                Err(why) => out.push(Due::Unreadable(unreadable("timer", &table, &item, why))),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn set_inactivity(&mut self, check: &InactivityCheck) -> Result<(), StoreError> {
        let pk = format!("contact#{}", check.contact);
        let sk = format!("inactivity#{}", check.scenario);
        if let Some(old) = self.get(&pk, &sk)?
            && let Ok(due) = read_instant(&old, "due")
        {
            let old = InactivityCheck {
                due,
                ..check.clone()
            };
            self.remove_inactivity(&old)?;
        }
        let mut attrs = Item::new();
        attrs.insert("kind".into(), s("inactivity"));
        attrs.insert("scenario".into(), s(&check.scenario));
        attrs.insert("contact".into(), s(&check.contact));
        let key = format!("{}:{}", check.scenario, check.contact);
        self.put_timer_item(check.due, Self::inactivity_sk(check), &key, attrs)?;
        let mut item = Item::new();
        item.insert("pk".into(), s(pk));
        item.insert("sk".into(), s(sk));
        item.insert("due".into(), micros(check.due));
        self.put(item)
    }

    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), StoreError> {
        for item in self.query(
            &self.config.state_table,
            &format!("contact#{contact}"),
            "inactivity#",
        )? {
            let Some(scenario) = get_s(&item, "sk").and_then(|k| k.strip_prefix("inactivity#"))
            else {
                continue;
            };
            if keep.iter().any(|k| k == scenario) {
                continue;
            }
            let due = read_instant(&item, "due").map_err(|why| StoreError::Corrupt {
                what: "inactivity check",
                why,
            })?;
            self.remove_inactivity(&InactivityCheck {
                scenario: scenario.to_string(),
                contact: contact.to_string(),
                due,
            })?;
        }
        Ok(())
    }

    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, StoreError> {
        let active = self.active_scenarios()?;
        let table = self.config.timers_table.clone();
        let mut out = Vec::new();
        for item in self.due_items(now)? {
            if get_s(&item, "kind") != Some("inactivity") {
                continue;
            }
            let read = || -> Result<InactivityCheck, String> {
                Ok(InactivityCheck {
                    scenario: need_s(&item, "scenario")?,
                    contact: need_s(&item, "contact")?,
                    due: read_instant(&item, "due")?,
                })
            };
            match read() {
                Ok(check) if !active.contains(&check.scenario) => continue,
                Ok(check) => out.push(Due::Ready(check)),
                Err(why) => out.push(Due::Unreadable(unreadable(
                    "inactivity",
                    &table,
                    &item,
                    why,
                ))),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn remove_inactivity(&mut self, check: &InactivityCheck) -> Result<(), StoreError> {
        let key = format!("{}:{}", check.scenario, check.contact);
        let bucket = bucket_key(minute(check.due), self.shard(&key));
        let table = self.config.timers_table.clone();
        self.delete(&table, &bucket, &Self::inactivity_sk(check))?;
        // A check written by an earlier build has an RFC 3339 sort key.
        self.delete(
            &table,
            &bucket,
            &format!(
                "{}#inactivity#{}#{}",
                ts(check.due),
                check.scenario,
                check.contact
            ),
        )?;
        let r = self.bridge.block(
            self.client
                .delete_item()
                .table_name(&self.config.state_table)
                .key("pk", s(format!("contact#{}", check.contact)))
                .key("sk", s(format!("inactivity#{}", check.scenario)))
                .condition_expression("due IN (:d, :t)")
                .expression_attribute_values(":d", micros(check.due))
                .expression_attribute_values(":t", s(ts(check.due)))
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Ok(()),
            Err(e) => Err(dynamo("DeleteItem")(e)),
        }
    }

    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let sk = format!("{scenario}#{zone}");
        match at {
            Some(at) => {
                let mut item = Item::new();
                item.insert("pk".into(), s("launch"));
                item.insert("sk".into(), s(sk));
                item.insert("scenario".into(), s(scenario));
                item.insert("zone".into(), s(zone));
                item.insert("next_at".into(), micros(at));
                self.put(item)
            }
            None => {
                let table = self.config.state_table.clone();
                self.delete(&table, "launch", &sk)
            }
        }
    }

    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, StoreError> {
        let active = self.active_scenarios()?;
        let table = self.config.state_table.clone();
        let mut ready = Vec::new();
        let mut out = Vec::new();
        for item in self.query(&self.config.state_table, "launch", "")? {
            let read = || -> Result<LaunchTime, String> {
                Ok(LaunchTime {
                    scenario: need_s(&item, "scenario")?,
                    zone: need_s(&item, "zone")?,
                    at: read_instant(&item, "next_at")?,
                })
            };
            match read() {
                Ok(l) if l.at <= now && active.contains(&l.scenario) => ready.push(l),
                Ok(_) => {}
                Err(why) => out.push(Due::Unreadable(unreadable("launch", &table, &item, why))),
            }
        }
        ready.sort_by(|a, b| (a.at, &a.scenario, &a.zone).cmp(&(b.at, &b.scenario, &b.zone)));
        out.splice(0..0, ready.into_iter().map(Due::Ready));
        Ok(out)
    }

    fn remove_unreadable(&mut self, row: &UnreadableRow) -> Result<(), StoreError> {
        let locator: serde_json::Value = from_json("unreadable row locator", &row.locator)?;
        let (Some(table), Some(pk), Some(sk)) = (
            locator["table"].as_str(),
            locator["pk"].as_str(),
            locator["sk"].as_str(),
        ) else {
            return Err(StoreError::Corrupt {
                what: "unreadable row locator",
                why: row.locator.clone(),
            });
        };
        // Only the two tables this store owns.
        if table != self.config.timers_table && table != self.config.state_table {
            return Err(StoreError::Corrupt {
                what: "unreadable row locator",
                why: row.locator.clone(),
            });
        }
        self.delete(table, pk, sk)
    }

    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // The AWS tick runs on a schedule; there is nothing to sleep until.
        Ok(None)
    }
}

impl JournalStore for DynamoStore {
    type Error = StoreError;

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), StoreError> {
        let json = to_json(record);
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("journal#{scenario}")));
        item.insert(
            "sk".into(),
            s(format!(
                "{}#{}#{}",
                ts(record.at),
                record.enrollment.as_deref().unwrap_or("-"),
                hash(&[&json])
            )),
        );
        item.insert("contact".into(), s(&record.contact));
        item.insert("record".into(), s(json));
        self.put(item)
    }

    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = relance_core::ports::send_message(scenario, send, at);
        match self.channel_queue(send.channel)? {
            // The channel queue is the outbox: the sender records each key once (its claim).
            // Replays enqueue again; the claim keeps the send single.
            Some(url) => {
                let url = url.to_string();
                self.deferred_messages.push((url, payload.to_string()));
                Ok(())
            }
            // Recording sends (tests, benches): in the contact's partition.
            None => {
                let mut item = Item::new();
                item.insert("pk".into(), s(format!("contact#{}", send.contact)));
                item.insert(
                    "sk".into(),
                    s(format!("s#{scenario}#{}#{}", ts(at), send.idempotency_key)),
                );
                item.insert("at".into(), s(ts(at)));
                item.insert("payload".into(), s(payload.to_string()));
                self.put_new(item).map(|_| ())
            }
        }
    }

    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (key, payload) =
            relance_core::ports::action_message(scenario, enrollment, contact, step, action, at);
        let mut item = Item::new();
        item.insert("pk".into(), s("outbox"));
        item.insert("sk".into(), s(key));
        item.insert("payload".into(), s(payload.to_string()));
        self.put_new(item).map(|_| ())
    }

    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.query(&self.config.state_table, &format!("journal#{scenario}"), "")? {
            if contact.is_some_and(|c| get_s(&item, "contact") != Some(c)) {
                continue;
            }
            match get_s(&item, "records") {
                Some(list) => out.extend(from_json::<Vec<Record>>("journal records", list)?),
                None => out.push(from_json::<Record>(
                    "journal record",
                    get_s(&item, "record").unwrap_or("null"),
                )?),
            }
        }
        Ok(out)
    }

    /// Items expire by the table's TTL (`expires_at`, stamped when written, see
    /// [`DynamoStore::expire`]): nothing to delete here. Journal items are kept, since each
    /// also proves its transition's effects were applied (see the module docs).
    fn purge(
        &mut self,
        _kind: Retained,
        _before: DateTime<Utc>,
        _limit: usize,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s("dead"));
        item.insert(
            "sk".into(),
            s(format!("{}#{kind}#{}", ts(at), hash(&[payload]))),
        );
        item.insert("kind".into(), s(kind));
        item.insert("payload".into(), s(payload));
        item.insert("reason".into(), s(reason));
        self.expire(&mut item, Retained::DeadLetters, at);
        self.put(item)
    }
}

impl relance_core::ports::ConsentStore for DynamoStore {
    type Error = StoreError;

    /// Written only if absent (the log is append-only; a redone unit lands on the same key).
    fn append_consent(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
    ) -> Result<(), StoreError> {
        let micros = instant::to_micros(e.at);
        let kept = if e.kept { "kept" } else { "" };
        let key = hash(&[
            &e.subject,
            e.state.as_str(),
            &e.source,
            &e.actor,
            e.reason.as_deref().unwrap_or(""),
            kept,
        ]);
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("contact#{}", e.contact)));
        item.insert(
            "sk".into(),
            s(format!("consent#{}#{key}", instant::to_key(e.at))),
        );
        item.insert("subject".into(), s(&e.subject));
        item.insert("state".into(), s(e.state.as_str()));
        item.insert("source".into(), s(&e.source));
        item.insert("actor".into(), s(&e.actor));
        item.insert("at".into(), n(micros));
        if let Some(r) = &e.reason {
            item.insert("reason".into(), s(r));
        }
        item.insert("kept".into(), AttributeValue::Bool(e.kept));
        self.put_new(item)?;
        Ok(())
    }

    fn consent_trail(
        &mut self,
        contact: &str,
    ) -> Result<Vec<relance_core::consent::ConsentEvent>, StoreError> {
        use relance_core::consent::{ConsentEvent, ConsentState};
        let pk = format!("contact#{contact}");
        let mut trail = Vec::new();
        for item in self.query(&self.config.state_table, &pk, "consent#")? {
            let text = |k: &str| get_s(&item, k).unwrap_or_default().to_string();
            let state = ConsentState::parse(&text("state")).ok_or(StoreError::Corrupt {
                what: "consent state",
                why: text("state"),
            })?;
            let at = item
                .get("at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(instant::from_micros)
                .ok_or(StoreError::Corrupt {
                    what: "consent instant",
                    why: text("sk"),
                })?;
            trail.push(ConsentEvent {
                contact: contact.to_string(),
                subject: text("subject"),
                state,
                source: text("source"),
                actor: text("actor"),
                at,
                reason: get_s(&item, "reason").map(str::to_string),
                kept: item
                    .get("kept")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
            });
        }
        Ok(trail)
    }
}

impl Store for DynamoStore {
    type Fault = StoreError;

    fn set_retention(&mut self, retention: &Retention) {
        self.retention = retention.clone();
    }

    /// DynamoDB has no transaction here: the unit's writes are idempotent or conditional, and
    /// `commit_transition` makes each transition whole (see the module docs).
    fn atomically<T, E>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        self.entries_seen.clear();
        Ok(work(self))
    }

    fn commit_transition(
        &mut self,
        scenario: &str,
        scenario_version: u32,
        expected: Option<u64>,
        t: &Transition,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Every send must have somewhere to go before the commit point: a transition journaled
        // `sent` whose message no channel receives is what this refuses (issue 11, finding 4).
        for effect in &t.effects {
            if let Effect::Send(send) = effect {
                self.channel_queue(send.channel)?;
            }
        }
        let pending = Pending {
            scenario: scenario.to_string(),
            at: now,
            effects: t.effects.clone(),
            contact: t.contact.clone(),
        };
        // The commit point: the enrollment, conditionally on its version, with its effects.
        self.write_enrollment(expected, scenario_version, &t.enrollment, Some(&pending))?;
        if std::mem::take(&mut self.crash_after_commit) {
            return Err(StoreError::Injected);
        }
        self.apply_pending(&pending, &t.enrollment)
    }
}
