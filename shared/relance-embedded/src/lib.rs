//! Relance's embedded mode: everything on one machine, no cloud account.
//!
//! # Layout
//! - [`store`]: `SqliteStore`, the SQLite adapter of every port (WAL, versioned migrations),
//!   with its webhook calls (`store::webhooks`).
//! - [`runtime`]: re-exported from `relance-runtime`: the engine over the ports, one unit of
//!   work per input.
//! - [`outbox`]: delivery of sends to a JSON-lines file and the log, exactly once.
//! - [`delivery`]: real delivery of sends (SMTP, SES, SNS, web push backends handed in):
//!   leased in order per contact, retried with backoff, settled on the runner.
//! - [`smtp`]: the SMTP delivery backend (lettre: STARTTLS or implicit TLS, a pool, a shared
//!   send rate), configured from `RELANCE_SMTP_URL`, its replies classed for the worker.
//! - [`webhook`]: delivery of webhook calls: signed, retried with backoff, settled on the
//!   runner (the HTTP client is handed in).
//! - [`import`]: re-exported from `relance-runtime`: contacts from CSV or JSON lines, with a
//!   report.
//! - [`clock`]: the real clock, a scaled one for `relance test`, a manual one for tests.
//! - [`api`]: the HTTP API (axum).
//! - [`listen`]: serving it on a socket: connections capped, a deadline for headers.
//! - [`metrics`]: the Prometheus recorder behind `/metrics` (the runtime's series).
//! - [`auth`]: who may call it: the bearer token, content types and `Host` names.
//! - [`console`]: the web console at `/` (login by the API token into a session cookie,
//!   CSRF-checked forms, server-rendered pages, the scenario diagram as SVG).
//! - [`durable`]: the runner's commits synced to disk on a thread of their own, callers
//!   answered and sends delivered after the sync.
//! - [`server`]: `relance run`: the runtime on a clock, with the API beside it.

pub mod api;
pub mod auth;
pub mod clock;
pub mod console;
pub mod delivery;
pub mod durable;
pub mod listen;
pub mod metrics;
pub mod outbox;
pub mod server;
pub mod smtp;
pub mod store;
pub mod webhook;

pub use relance_runtime::{import, runtime};
