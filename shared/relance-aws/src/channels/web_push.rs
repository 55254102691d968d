//! Web push: the browsers' push services through [`crate::webpush::WebPushSender`] (VAPID, RFC 8291);
//! subscriptions a push service reports gone are removed from the contact.

use chrono::{DateTime, Utc};
use relance_core::engine::Send;
use relance_core::ports::{ContactStore, Store};
use serde_json::Value;

use super::{SendError, Senders};
use crate::error::StoreError;

/// Attempts at removing expired subscriptions from a contact other writers are changing.
const FORGET_ATTEMPTS: usize = 5;

impl Senders {
    /// Pushes to every subscription of the contact; those expired are forgotten at `now`.
    pub(super) fn web_push(&self, send: &Send, now: DateTime<Utc>) -> Result<String, SendError> {
        let Some(sender) = &self.web_push else {
            return Err(SendError::Permanent(
                "web push is not configured (RELANCE_VAPID_PRIVATE_KEY, RELANCE_VAPID_SUBJECT)"
                    .into(),
            ));
        };
        let report = sender.deliver_blocking(&self.bridge, send, send.content.data.as_ref(), now);
        let expired: Vec<String> = report.expired().into_iter().map(str::to_string).collect();
        if !expired.is_empty() {
            self.forget_web_push(&send.contact, &expired, now);
        }
        report.outcome().map_err(|e| {
            if e.is_transient() {
                SendError::Transient(e.to_string())
            } else {
                SendError::Permanent(e.to_string())
            }
        })
    }

    /// Removes expired browser subscriptions from the contact, so they are not tried again.
    /// Read and written in one unit, the put conditional on the read (see `put_contact`): a
    /// contact changed meanwhile (another push of the same batch removing its own expired
    /// subscriptions, an opt-out) is read again and the removal redone on it, never
    /// overwritten by the older read.
    fn forget_web_push(&self, contact: &str, expired: &[String], now: DateTime<Utc>) {
        let mut store = self.contacts.clone();
        let mut result = Ok(());
        for _ in 0..FORGET_ATTEMPTS {
            result = store
                .atomically(|store| -> Result<(), StoreError> {
                    let Some(mut c) = store.contact(contact)? else {
                        return Ok(());
                    };
                    let kept: Vec<Value> = c
                        .web_push_subscriptions()
                        .into_iter()
                        .filter(|s| {
                            !s["endpoint"]
                                .as_str()
                                .is_some_and(|e| expired.iter().any(|x| x == e))
                        })
                        .cloned()
                        .collect();
                    c.set_field("web_push", Value::Array(kept));
                    store.put_contact(&c, now)?;
                    Ok(())
                })
                .and_then(|inner| inner);
            if !matches!(result, Err(StoreError::Conflict(_))) {
                break;
            }
        }
        match result {
            Ok(()) => tracing::info!(
                contact,
                expired = expired.len(),
                "expired web push subscriptions removed"
            ),
            Err(e) => {
                tracing::warn!(contact, error = %e, "could not remove expired web push subscriptions")
            }
        }
    }
}
