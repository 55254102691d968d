//! The senders' ledger in the state table: a claim per idempotency key (so a replayed queue
//! message never sends twice), the shared per-second send rate of each channel, and whose
//! send an SMS message id was (SNS reports SMS delivery by message id only). Keys come from
//! [`crate::keys`].
//!
//! Claims are split over [`keys::SHARDS`] partitions by a hash of their key (`sent#{h}`), so
//! no one partition takes every send. Earlier builds claimed under one partition (`sent`);
//! such a claim must still stop a message an earlier build's sender already saw. Every such
//! message was enqueued before this build first claimed, and no message outlives its queue
//! and dead-letter queue (14 days), so the ledger also reads the old claim of a key, before
//! claiming it, until [`LEGACY_CLAIMS_WINDOW`] after the first claim of this build on the
//! table: that instant is kept in the table (`settings`/`legacy_claims`), written by the
//! first sender of this build, read once per ledger. A table with no old claim then (a new
//! deployment) gets a window already closed: nothing more is read. A send of an earlier
//! build's unfinished transition, re-applied by this build (perhaps after the window), is
//! checked against the old claims by the store before it is enqueued again (the repair path
//! of [`crate::dynamodb`]).

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::bridge::Bridge;
use crate::error::DynamoError;
use crate::keys;

/// How long the SMS sender remembers whose send a message id was.
const SMS_SEND_KEPT_SECONDS: i64 = 7 * 86_400;

/// How long a second's rate slots are kept (the table's TTL removes them after).
const RATE_SLOT_KEPT_SECONDS: u64 = 3600;

/// How long, after this build's first claim on a table, the ledger also reads the claims
/// earlier builds made: the longest a message can wait in a queue and its dead-letter queue
/// (14 days, `infra/template.yaml`), and a day more for a redrive.
pub const LEGACY_CLAIMS_WINDOW: TimeDelta = TimeDelta::days(15);

/// A claimed send that was not sent and will not be: skipped by the provider's list, or
/// failed for good; why, and the instant its outcome was journaled at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    /// Skipped by the provider's list (else failed for good).
    pub skipped: bool,
    /// Why.
    pub reason: String,
    /// When the delivery that settled it journaled it (its journal record's instant).
    pub at: DateTime<Utc>,
}

/// The ledger on one state table.
#[derive(Debug, Clone)]
pub struct Ledger {
    client: Client,
    state_table: String,
    bridge: Bridge,
    /// Until when earlier builds' claims are read (in seconds since the epoch), once known;
    /// shared by the ledger's clones, and read once: a batch's senders claim at once and wait
    /// for the first to read it.
    legacy_until: Arc<Mutex<Option<i64>>>,
}

fn is_conditional<E>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

impl Ledger {
    /// The ledger in `state_table`.
    pub fn new(client: Client, state_table: String, bridge: Bridge) -> Ledger {
        Ledger {
            client,
            state_table,
            bridge,
            legacy_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Claims a key at `now`; false when an earlier delivery already did (under this build's
    /// shard of the key, or, within the window, under the partition earlier builds used).
    pub fn claim(&self, key: &str, now: DateTime<Utc>) -> Result<bool, DynamoError> {
        if now.timestamp() < self.legacy_claims_until(now)? && self.legacy_claimed(key)? {
            return Ok(false);
        }
        let r = self.bridge.block(
            self.client
                .put_item()
                .table_name(&self.state_table)
                .item(keys::PK, AttributeValue::S(keys::sent(key)))
                .item(keys::SK, AttributeValue::S(key.into()))
                .item("status", AttributeValue::S("sending".into()))
                .condition_expression("attribute_not_exists(pk)")
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(DynamoError::new("PutItem", format!("{e:?}"))),
        }
    }

    /// Whether an earlier build claimed `key` (strongly consistent: a sender of that build may
    /// still be running while this one starts).
    fn legacy_claimed(&self, key: &str) -> Result<bool, DynamoError> {
        Ok(self.read_item(keys::LEGACY_SENT, key)?.is_some())
    }

    /// One state-table item, read strongly consistent.
    fn read_item(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<std::collections::HashMap<String, AttributeValue>>, DynamoError> {
        let out = self
            .bridge
            .block(
                self.client
                    .get_item()
                    .table_name(&self.state_table)
                    .key(keys::PK, AttributeValue::S(pk.into()))
                    .key(keys::SK, AttributeValue::S(sk.into()))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| DynamoError::new("GetItem", format!("{e:?}")))?;
        Ok(out.item)
    }

    /// Until when (seconds since the epoch) earlier builds' claims are read: kept in the
    /// table, set by the first claim of this build on it (`now` plus the window, or `now`
    /// when there is no old claim to read), read once per ledger.
    fn legacy_claims_until(&self, now: DateTime<Utc>) -> Result<i64, DynamoError> {
        let mut cached = self.legacy_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = *cached {
            return Ok(until);
        }
        let until = match self.stored_legacy_until()? {
            Some(until) => until,
            None => {
                let until = if self.any_legacy_claim()? {
                    (now + LEGACY_CLAIMS_WINDOW).timestamp()
                } else {
                    now.timestamp()
                };
                let r = self.bridge.block(
                    self.client
                        .put_item()
                        .table_name(&self.state_table)
                        .item(keys::PK, AttributeValue::S(keys::SETTINGS.into()))
                        .item(keys::SK, AttributeValue::S(keys::LEGACY_CLAIMS.into()))
                        .item("until", AttributeValue::N(until.to_string()))
                        .condition_expression("attribute_not_exists(pk)")
                        .send(),
                );
                match r {
                    Ok(_) => until,
                    // Another sender set it first: its instant holds.
                    Err(e) if is_conditional(&e) => self.stored_legacy_until()?.unwrap_or(until),
                    Err(e) => return Err(DynamoError::new("PutItem", format!("{e:?}"))),
                }
            }
        };
        *cached = Some(until);
        Ok(until)
    }

    /// The window's end as stored, if set.
    fn stored_legacy_until(&self) -> Result<Option<i64>, DynamoError> {
        Ok(self
            .read_item(keys::SETTINGS, keys::LEGACY_CLAIMS)?
            .as_ref()
            .and_then(|i| i.get("until"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()))
    }

    /// Whether the partition earlier builds claimed in holds any claim.
    fn any_legacy_claim(&self) -> Result<bool, DynamoError> {
        let out = self
            .bridge
            .block(
                self.client
                    .query()
                    .table_name(&self.state_table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", AttributeValue::S(keys::LEGACY_SENT.into()))
                    .limit(1)
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| DynamoError::new("Query", format!("{e:?}")))?;
        Ok(out.count > 0)
    }

    /// Marks a claimed send failed for good, with why (the claim stays: it is not retried).
    pub fn fail(&self, key: &str, why: &str) -> Result<(), DynamoError> {
        self.mark_failed(key, why, None)
    }

    /// Marks a claimed send that will not be sent (`unsent`: skipped by the provider's list,
    /// or failed for good), with why and the instant its outcome is journaled at, so a
    /// redelivery that finds the claim can journal that outcome again, under the same key, if
    /// the delivery that settled it stopped before journaling it ([`Ledger::unsent`]).
    pub fn fail_unsent(&self, key: &str, unsent: &Unsent) -> Result<(), DynamoError> {
        self.mark_failed(key, &unsent.reason, Some(unsent))
    }

    fn mark_failed(
        &self,
        key: &str,
        why: &str,
        unsent: Option<&Unsent>,
    ) -> Result<(), DynamoError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(keys::PK, AttributeValue::S(keys::sent(key)))
            .key(keys::SK, AttributeValue::S(key.into()))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", AttributeValue::S("failed".into()))
            .expression_attribute_values(":r", AttributeValue::S(why.to_string()));
        update = match unsent {
            None => update.update_expression("SET #s = :s, reason = :r"),
            Some(u) => update
                .update_expression("SET #s = :s, reason = :r, unsent = :u, settled_at = :a")
                .expression_attribute_values(
                    ":u",
                    AttributeValue::S(if u.skipped { "skipped" } else { "failed" }.into()),
                )
                .expression_attribute_values(
                    ":a",
                    AttributeValue::S(u.at.to_rfc3339_opts(SecondsFormat::Nanos, true)),
                ),
        };
        self.bridge
            .block(update.send())
            .map_err(|e| DynamoError::new("UpdateItem", format!("{e:?}")))?;
        Ok(())
    }

    /// What the delivery that holds the claim of `key` settled, when it was not sent (see
    /// [`Ledger::fail_unsent`]); `None` for a send that went, one still under way, or a claim
    /// of an earlier build. One strongly consistent read, made only for a duplicate delivery.
    pub fn unsent(&self, key: &str) -> Result<Option<Unsent>, DynamoError> {
        let Some(item) = self.read_item(&keys::sent(key), key)? else {
            return Ok(None);
        };
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => Some(v.as_str()),
            _ => None,
        };
        let (Some(kind), Some(at), Some(reason)) =
            (text("unsent"), text("settled_at"), text("reason"))
        else {
            return Ok(None);
        };
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| {
                DynamoError::new("GetItem", format!("the claim of {key}: settled_at: {e}"))
            })?
            .with_timezone(&Utc);
        Ok(Some(Unsent {
            skipped: kind == "skipped",
            reason: reason.to_string(),
            at,
        }))
    }

    /// Whether `key` is claimed (one strongly consistent read).
    pub fn is_claimed(&self, key: &str) -> Result<bool, DynamoError> {
        Ok(self.read_item(&keys::sent(key), key)?.is_some())
    }

    /// Releases a claim, so a retry of the same key can send.
    pub fn release(&self, key: &str) -> Result<(), DynamoError> {
        self.bridge
            .block(
                self.client
                    .delete_item()
                    .table_name(&self.state_table)
                    .key(keys::PK, AttributeValue::S(keys::sent(key)))
                    .key(keys::SK, AttributeValue::S(key.into()))
                    .send(),
            )
            .map_err(|e| DynamoError::new("DeleteItem", format!("{e:?}")))?;
        Ok(())
    }

    /// Takes one of `rate` slots of `channel` in `second` (an atomic counter); false when
    /// they are all taken.
    pub fn take_rate_slot(
        &self,
        channel: &str,
        second: u64,
        rate: u32,
    ) -> Result<bool, DynamoError> {
        let r = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.state_table)
                .key(keys::PK, AttributeValue::S(keys::rate(channel)))
                .key(keys::SK, AttributeValue::S(keys::rate_second(second)))
                .update_expression("ADD sends :one SET expires_at = :ttl")
                .condition_expression("attribute_not_exists(sends) OR sends < :max")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":max", AttributeValue::N(rate.to_string()))
                .expression_attribute_values(
                    ":ttl",
                    AttributeValue::N((second + RATE_SLOT_KEPT_SECONDS).to_string()),
                )
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(DynamoError::new("UpdateItem", format!("{e:?}"))),
        }
    }

    /// Remembers, for a week from `now`, whose send the SMS `message_id` was (read back by
    /// [`crate::dynamodb::DynamoStore::sms_send`]).
    pub fn record_sms(
        &self,
        message_id: &str,
        contact: &str,
        scenario: &str,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DynamoError> {
        let expires = now.timestamp() + SMS_SEND_KEPT_SECONDS;
        self.bridge
            .block(
                self.client
                    .put_item()
                    .table_name(&self.state_table)
                    .item(keys::PK, AttributeValue::S(keys::sms(message_id)))
                    .item(keys::SK, AttributeValue::S(keys::SMS_SEND.into()))
                    .item("contact", AttributeValue::S(contact.to_string()))
                    .item("scenario", AttributeValue::S(scenario.to_string()))
                    .item("step", AttributeValue::S(step.to_string()))
                    .item("expires_at", AttributeValue::N(expires.to_string()))
                    .send(),
            )
            .map_err(|e| DynamoError::new("PutItem", format!("{e:?}")))?;
        Ok(())
    }
}
