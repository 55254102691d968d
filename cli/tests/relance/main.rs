//! The CLI's integration tests, in one binary: they run the `relance` binary (and, for a
//! few, the runtime directly) the way users do. The AWS emulator tests (`aws_launch`, `dev`)
//! are skipped, with one message, when `AWS_ENDPOINT_URL` is not set.
//!
//! # Layout
//! - [`common`]: starting `relance run`, reading its journal; the emulator's endpoint.
//! - [`cli`]: validate, simulate, shared messages and the policy from the command line.
//! - [`cases`]: the public acceptance cases of `tests/cases/` (the shared checker's semantics)
//!   and the global control group through `simulate --policy`.
//! - [`embedded`]: templates, the scenario lifecycle, import, launch, journal, test mode,
//!   tokens, exposure checks and consent on the SQLite store.
//! - [`pinpoint`]: `relance import pinpoint` of the journey fixtures, validated and simulated
//!   (each contact's path as Pinpoint would take it), and its refusals.
//! - [`console`]: the web console in headless Chromium (chromedriver, fantoccini): login by
//!   keyboard, launch, live counts, a contact's path, test mode, pause and resume, screenshots.
//! - [`secrets`]: a short unsubscribe key stops `relance run`.
//! - [`hostile_burst`]: a burst of hostile API requests against `relance run`.
//! - [`restart`], [`restart_faults`]: SIGKILL at any moment loses and repeats no send.
//! - [`unknown_step`]: a stale timer against a timer naming an unknown step (dead-lettered).
//! - [`delivery`]: `relance run` delivering for real: SMTP (a real server) and the emulator's
//!   SNS, opens by the tracking pixel, and `kill -9` during a burst of 1,000 emails.
//! - [`webhook`]: the webhook step against a receiver stub (signature, retry, duplicate by
//!   key, 404, save), the strict outbound rule, and `simulate`.
//! - [`aws_launch`], [`dev`]: the operating commands and `relance dev` on the AWS emulator.

mod aws_launch;
mod cases;
mod cli;
mod common;
mod console;
mod delivery;
mod dev;
mod embedded;
mod hostile_burst;
mod pinpoint;
mod restart;
mod restart_faults;
mod secrets;
mod unknown_step;
mod webhook;
