//! Why an operation was refused or failed, and the checks of inputs every part shares.

use chrono::{DateTime, Utc};
use relance_core::Problem;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed.
    #[error("store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// No scenario with this id.
    #[error("scenario \"{0}\" not found")]
    UnknownScenario(String),
    /// The scenario has errors (activation refused, or the file does not read).
    #[error("scenario {}: {} error(s): {}", if id.is_empty() { "file" } else { id.as_str() }, problems.iter().filter(|p| p.is_error()).count(),
        problems.iter().filter(|p| p.is_error()).map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The scenario id, when known.
        id: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The lifecycle does not allow this.
    #[error("scenario \"{id}\" is {from}: it cannot become {to}")]
    Lifecycle {
        /// The scenario id.
        id: String,
        /// Its status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// The scenario is not active, so it takes no entries.
    #[error("scenario \"{id}\" is {status}: activate it first")]
    NotActive {
        /// The scenario id.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// A field of the input is wrong.
    #[error("{field}: {message}")]
    BadInput {
        /// Where.
        field: String,
        /// What.
        message: String,
    },
}

/// A bad `idempotency_key`, as the caller's error.
pub(super) fn bad_key(e: relance_core::wire::WireError) -> RuntimeError {
    RuntimeError::BadInput {
        field: e.field,
        message: e.message,
    }
}

/// Refuses a profile update whose `email` or `phone` a contact write would refuse.
pub(super) fn check_profile_addresses(
    changes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), RuntimeError> {
    relance_core::contact::check_addresses(&mut changes.clone()).map_err(|e| {
        RuntimeError::BadInput {
            field: match &e {
                relance_core::contact::ContactError::Reserved { key, .. } => {
                    format!("properties.{key}")
                }
                _ => "properties".into(),
            },
            message: e.to_string(),
        }
    })
}

pub(crate) fn store_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> RuntimeError {
    RuntimeError::Store(Box::new(e))
}

/// The instant of an input (`at`, default `now`), refused outside 1970-01-01..9999-12-31.
/// The wire decoders refuse such an `at` already; this keeps callers that build details in
/// code to the same rule, since a stored instant out of range would not read back.
pub(super) fn input_at(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, RuntimeError> {
    relance_core::instant::check(at.unwrap_or(now)).map_err(|e| RuntimeError::BadInput {
        field: "at".into(),
        message: e.to_string(),
    })
}
