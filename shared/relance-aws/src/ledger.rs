//! The senders' ledger in the state table: a claim per idempotency key (so a replayed queue
//! message never sends twice), the shared per-second send rate of each channel, and whose
//! send an SMS message id was (SNS reports SMS delivery by message id only). Keys come from
//! [`crate::keys`].

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::bridge::Bridge;
use crate::error::DynamoError;
use crate::keys;

/// How long the SMS sender remembers whose send a message id was.
const SMS_SEND_KEPT_SECONDS: i64 = 7 * 86_400;

/// How long a second's rate slots are kept (the table's TTL removes them after).
const RATE_SLOT_KEPT_SECONDS: u64 = 3600;

/// The ledger on one state table.
#[derive(Debug, Clone)]
pub struct Ledger {
    client: Client,
    state_table: String,
    bridge: Bridge,
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
        }
    }

    /// Claims a key; false when an earlier delivery already did.
    pub fn claim(&self, key: &str) -> Result<bool, DynamoError> {
        let r = self.bridge.block(
            self.client
                .put_item()
                .table_name(&self.state_table)
                .item(keys::PK, AttributeValue::S(keys::SENT.into()))
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

    /// Marks a claimed send failed for good, with why (the claim stays: it is not retried).
    pub fn fail(&self, key: &str, why: &str) -> Result<(), DynamoError> {
        self.bridge
            .block(
                self.client
                    .update_item()
                    .table_name(&self.state_table)
                    .key(keys::PK, AttributeValue::S(keys::SENT.into()))
                    .key(keys::SK, AttributeValue::S(key.into()))
                    .update_expression("SET #s = :s, reason = :r")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":s", AttributeValue::S("failed".into()))
                    .expression_attribute_values(":r", AttributeValue::S(why.to_string()))
                    .send(),
            )
            .map_err(|e| DynamoError::new("UpdateItem", format!("{e:?}")))?;
        Ok(())
    }

    /// Releases a claim, so a retry of the same key can send.
    pub fn release(&self, key: &str) -> Result<(), DynamoError> {
        self.bridge
            .block(
                self.client
                    .delete_item()
                    .table_name(&self.state_table)
                    .key(keys::PK, AttributeValue::S(keys::SENT.into()))
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
