//! The adapters' errors: one per AWS service, each naming its service and the operation that
//! failed (`SQS SendMessageBatch: …`, never a DynamoDB prefix on another service's call), and
//! the errors of the ports built on them (the store, the dispatch port, resource setup). This
//! module depends on no other adapter module, so every adapter can use it without a cycle.
//! Secrets Manager's error is [`crate::secrets::SecretError`] (it names the setting and the
//! ARN, what an operator fixes); the senders classify SES and SNS failures by what a retry can
//! do ([`crate::channels::SendError`]).

/// Declares a service's error: the operation and the service's message.
macro_rules! service_error {
    ($(#[$doc:meta])* $name:ident, $service:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("{service} {op}: {message}", service = $service)]
        pub struct $name {
            /// The operation (`PutItem`, `SendMessageBatch`, …).
            pub op: &'static str,
            /// The service's message.
            pub message: String,
        }

        impl $name {
            /// `op` failed with `message`.
            pub fn new(op: &'static str, message: impl Into<String>) -> $name {
                $name {
                    op,
                    message: message.into(),
                }
            }

            /// Maps an SDK error of `op`: the service's code and message when it answered,
            /// else the whole error (a network failure, a timeout).
            pub fn sdk<E>(op: &'static str) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>) -> $name
            where
                E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::fmt::Debug,
            {
                move |e| {
                    let message = match e.as_service_error() {
                        Some(service) => format!(
                            "{}: {}",
                            service.code().unwrap_or("error"),
                            service.message().unwrap_or("")
                        ),
                        None => format!("{e:?}"),
                    };
                    $name { op, message }
                }
            }
        }
    };
}

service_error!(
    /// DynamoDB refused or failed a call.
    DynamoError,
    "DynamoDB"
);
service_error!(
    /// SQS refused or failed a call.
    SqsError,
    "SQS"
);
service_error!(
    /// EventBridge refused or failed a call.
    EventBridgeError,
    "EventBridge"
);

/// Why a message or an event could not be handed on ([`crate::dispatch::Dispatch`]).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// SQS failed.
    #[error(transparent)]
    Sqs(#[from] SqsError),
    /// EventBridge failed.
    #[error(transparent)]
    EventBridge(#[from] EventBridgeError),
    /// A send has no channel queue to go to: refused before anything is written, so no
    /// `sent` is ever journaled for a message no queue received.
    #[error(
        "{var} is not set: a {channel} send cannot be handed to its channel queue, so the transition was not committed (set it as the functions have it, or create the queues with `relance dev up`)"
    )]
    NoChannelQueue {
        /// The environment variable that names the missing queue.
        var: &'static str,
        /// The channel.
        channel: &'static str,
    },
    /// A queue the handler needs is not configured.
    #[error("{var}: not set")]
    NoQueue {
        /// The environment variable that names the missing queue.
        var: &'static str,
    },
}

/// A failure of the DynamoDB store (the `Fault` of every port it implements).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB refused or failed a call.
    #[error(transparent)]
    Dynamo(#[from] DynamoError),
    /// Handing the transition's sends or events on failed, or they have nowhere to go.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The enrollment (or the entry mark) changed since it was read.
    #[error("{0} changed concurrently (conditional write refused)")]
    Conflict(String),
    /// A fault injected by a test (a stop right after a commit point, a flush failing where it
    /// writes journal parts).
    #[error("injected fault (a test's)")]
    Injected,
    /// The system gave no random bytes (naming a batch's journal part).
    #[error("no random bytes: {0}")]
    NoRandom(String),
    /// A stored value does not read back.
    #[error("corrupt {what}: {why}")]
    Corrupt {
        /// What.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// Why creating or finding the resources (`relance dev up`, the operating commands) failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// DynamoDB failed (creating the tables).
    #[error(transparent)]
    Dynamo(#[from] DynamoError),
    /// SQS failed (creating or finding the queues).
    #[error(transparent)]
    Sqs(#[from] SqsError),
    /// EventBridge failed (the bus, its rule and target).
    #[error(transparent)]
    EventBridge(#[from] EventBridgeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_its_own_service_and_operation() {
        assert_eq!(
            SqsError::new("SendMessage", "boom").to_string(),
            "SQS SendMessage: boom"
        );
        assert_eq!(
            EventBridgeError::new("PutEvents", "2 entries failed").to_string(),
            "EventBridge PutEvents: 2 entries failed"
        );
        assert_eq!(
            DynamoError::new("PutItem", "x").to_string(),
            "DynamoDB PutItem: x"
        );
        let store: StoreError =
            DispatchError::from(SqsError::new("SendMessageBatch", "m0 failed")).into();
        assert_eq!(store.to_string(), "SQS SendMessageBatch: m0 failed");
    }
}
