//! Web push: the browsers' push services through [`crate::webpush::WebPushSender`] (VAPID, RFC 8291);
//! subscriptions a push service reports gone are removed from the contact.

use chrono::{DateTime, Utc};
use relance_core::engine::Send;
use serde_json::Value;

use super::{SendError, Senders};

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

    /// Removes expired browser subscriptions from the contact, so they are not tried again:
    /// one read of the profile (the sender's role reads no more of the contact's partition)
    /// and a put conditional on it, redone on the contact as it is when a concurrent writer
    /// changed it (another push of the same batch removing its own gone subscriptions, an
    /// opt-out): never a write from an older read.
    fn forget_web_push(&self, contact: &str, expired: &[String], now: DateTime<Utc>) {
        let result = self.contacts.change_contact(contact, now, |c| {
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
        });
        match result {
            Ok(false) => {}
            Ok(true) => tracing::info!(
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
