//! Relance's AWS adapters: the same ports as the embedded SQLite store, on DynamoDB (and,
//! next, SQS, SESv2, SNS and EventBridge). The engine core knows nothing of them.
//!
//! # Layout
//! - [`config`]: table names and shard count, from the environment.
//! - [`dynamodb`]: `DynamoStore`, every port on two DynamoDB tables (state and timers), with
//!   conditional writes on the enrollment's version and replayable pending effects.
//! - [`error`]: one error per AWS service (naming it and the operation), and the store's,
//!   the dispatch port's and resource setup's errors.
//! - [`eventbridge`]: `EventBus`: the events Relance emits (ends, goals, tasks, leads, exports).
//! - [`sqs`]: `SqsQueues`: the step, channel and launch queues, batched by ten.
//! - [`channels`]: the senders: email (SESv2), SMS and push (SNS), once per idempotency key.
//! - [`handlers`]: the functions' logic (trigger, tick, step executor, launch pages), called by
//!   the thin Lambda binaries and in-process by the tests.
//! - [`dev`]: `relance dev run`: every handler in one process, polling the queues.
//! - [`resources`]: the names and keys of every resource, and their creation (`relance dev up`).
//! - [`outbound`]: the outbound rule for URLs taken from data (https only, no internal
//!   address, checked on the address connected).
//! - [`permissions`]: what each function's code calls, as IAM grants (the table the SAM
//!   template is held to).
//! - [`meter`]: request counts by service and operation (an SDK interceptor).
//! - [`secrets`]: the functions' secrets, read at start from Secrets Manager by ARN.
//! - [`bridge`]: runs the SDK's async calls from the ports' synchronous methods.

pub mod bridge;
pub mod channels;
pub mod config;
pub mod dev;
pub mod dynamodb;
pub mod error;
pub mod eventbridge;
pub mod handlers;
pub mod meter;
pub mod outbound;
pub mod permissions;
pub mod resources;
pub mod secrets;
pub mod sqs;
pub mod webpush;
