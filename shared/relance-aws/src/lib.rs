//! Relance's AWS adapters: the engine's ports on DynamoDB, the dispatch port on SQS and
//! EventBridge, and one channel sender per provider (SESv2, SNS SMS, SNS push, web push).
//! The engine core knows nothing of them.
//!
//! # Layout
//! - [`config`]: table names, shard count and queue URLs, from the environment.
//! - [`error`]: one error per AWS service (naming it and the operation), and the store's,
//!   the dispatch port's and resource setup's errors.
//! - [`keys`]: every DynamoDB key and how the items are laid out (the stored format).
//! - [`dynamodb`]: `DynamoStore`, every storage port on two DynamoDB tables (state and
//!   timers), with conditional writes on the enrollment's version and replayable pending
//!   effects; one file per port.
//! - [`dispatch`]: the dispatch port (step, channel and launch queues, the event bus) and
//!   `AwsDispatch` on SQS and EventBridge.
//! - [`sqs`]: `SqsQueues`: sends batched by ten.
//! - [`eventbridge`]: `EventBus`: the events Relance emits (ends, goals, tasks, leads, exports).
//! - [`channels`]: the senders, one per provider, each send once per idempotency key.
//! - [`ledger`]: the senders' ledger: send claims, shared send-rate slots, SMS message ids.
//! - [`webpush`]: the web push protocol (VAPID, RFC 8291) and its HTTP client.
//! - [`webhook`]: the HTTP client of webhook calls, on the outbound rule (a webhook
//!   `Transport`, used by `relance run` and the webhook sender).
//! - [`callout`]: the webhook sender: the webhook queue's calls, once per key, retried by
//!   re-queueing with backoff, dead-lettered after 24 h, `save` applied through the runtime.
//! - [`handlers`]: the functions' logic (trigger, tick, step executor, launch pages, senders,
//!   engagement, unsubscribe), called by the thin Lambda binaries and in-process by the tests.
//! - [`dev`]: `relance dev run`: every handler in one process, polling the queues.
//! - [`resources`]: the names and keys of every resource, and their creation (`relance dev up`).
//! - [`outbound`]: the outbound rule for URLs taken from data (https only, no internal
//!   address, checked on the address connected).
//! - [`meter`]: request counts by service and operation (an SDK interceptor).
//! - [`permissions`]: what each function's code calls, as IAM grants (the table the SAM
//!   template is held to).
//! - [`secrets`]: the functions' secrets, read at start from Secrets Manager by ARN.
//! - [`bridge`]: runs the SDK's async calls from the ports' synchronous methods.

pub mod bridge;
pub mod callout;
pub mod channels;
pub mod config;
pub mod dev;
pub mod dispatch;
pub mod dynamodb;
pub mod error;
pub mod eventbridge;
pub mod handlers;
pub mod keys;
pub mod ledger;
pub mod listeners;
pub mod meter;
pub mod outbound;
pub mod permissions;
pub mod resources;
pub mod secrets;
pub mod sqs;
pub mod webhook;
pub mod webpush;
