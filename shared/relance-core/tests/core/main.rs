//! relance-core's integration tests, in one binary (one link instead of one per file).
//!
//! # Layout
//! - [`hostile`]: hostile instants and durations, refused where input enters (issue 11).
//! - [`validation`]: one test per validation rule of DESIGN §3, and the shipped examples.
//! - [`pinpoint`]: Pinpoint journeys imported (the fixtures of `tests/fixtures/pinpoint/`),
//!   mapped as DESIGN §9 says, refused or warned about with their paths.
//! - [`properties`]: calendar properties of the schedule functions (proptest).
//! - [`assignment`]: split paths and message variants picked by the engine against the
//!   SHA-256 formula computed apart (proptest).
//! - [`webhook`]: the webhook step: located validation problems, and the call the engine
//!   queues.
//! - [`invoke`]: the invoke step: located validation problems, the invoke the engine queues
//!   with the contact, and the refusal of a store without Lambda.

mod assignment;
mod hostile;
mod invoke;
mod pinpoint;
mod properties;
mod validation;
mod webhook;
