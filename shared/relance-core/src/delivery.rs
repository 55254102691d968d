//! The delivery contract of `relance run`: one outgoing message handed to a provider (SMTP,
//! SES, SNS, a browser's push service), how the provider's answer is classed, and the retry
//! rules the embedded delivery worker applies. No I/O here: the backends implement
//! [`Backend`] in the adapter crates and the worker drives them.

use std::future::Future;
use std::pin::Pin;

use sha2::{Digest, Sha256};

/// One message to hand to a provider: the engine's send, with what delivery adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The scenario of the send.
    pub scenario: String,
    /// The send as the engine made it (its content rendered); for email, the HTML already
    /// carries the tracking pixel and redirects when tracking is on.
    pub send: crate::engine::Send,
    /// Extra headers (email): the RFC 8058 one-click `List-Unsubscribe` pair.
    pub headers: Vec<(String, String)>,
    /// The email `Message-ID` (with its angle brackets), the same on every attempt of the
    /// send, so a resend after an interrupted attempt is recognisably the same message.
    pub message_id: String,
}

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later: a 4xx SMTP reply, a timeout, throttling, a connection failure.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help: a 5xx SMTP reply, a rejected address or payload. With
    /// `hard_bounce` the address itself is refused (a 5.1.x reply, a 550 "no such user"),
    /// so it is suppressed as a hard bounce reported by SES would be.
    #[error("permanent: {reason}")]
    Permanent {
        /// The provider's answer.
        reason: String,
        /// The address does not exist or refuses mail for good.
        hard_bounce: bool,
    },
}

/// A future a backend returns: the provider's message id, or why it failed.
pub type DeliverFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, DeliveryError>> + Send + 'a>>;

/// A provider for one channel.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Its name in configuration and logs (`smtp`, `ses`, `sns`, `web-push`).
    fn name(&self) -> &'static str;
    /// Hands `message` to the provider; answers within a bounded time or fails transiently.
    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a>;
}

// Deliveries are retried on the same schedule as webhook calls.
pub use crate::retry::{
    FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, RETRY_WINDOW_HOURS, backoff, dead_reason,
    next_attempt,
};

/// The `Message-ID` of the send under `idempotency_key`, from `domain` (the sender's): a
/// digest of the key, so it is stable across attempts and restarts and names no contact.
pub fn message_id(idempotency_key: &str, domain: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let domain = if domain.trim().is_empty() {
        "relance.invalid"
    } else {
        domain.trim()
    };
    format!("<{hex}@{domain}>")
}

/// The domain of an email address (after the last `@`), or the empty string.
pub fn domain_of(address: &str) -> &str {
    let address = address.trim().trim_end_matches('>');
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn message_ids_are_stable_per_key_and_name_no_contact() {
        let a = message_id("enr-42:welcome", "example.com");
        assert_eq!(a, message_id("enr-42:welcome", "example.com"));
        assert_ne!(a, message_id("enr-43:welcome", "example.com"));
        assert!(a.starts_with('<') && a.ends_with("@example.com>"));
        assert!(!a.contains("enr-42"));
        assert!(message_id("k", "").ends_with("@relance.invalid>"));
    }

    #[test]
    fn domains_come_after_the_last_at_sign() {
        assert_eq!(domain_of("news@example.com"), "example.com");
        assert_eq!(domain_of("Shop <news@shop.example>"), "shop.example");
        assert_eq!(domain_of("nobody"), "");
    }
}
