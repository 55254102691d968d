//! The pure engine of Relance: scenario files, their validation, conditions, calendar
//! arithmetic and the transition function that moves one enrollment through a scenario.
//! No clock, no I/O, no AWS types: every mode (simulate, embedded, AWS) runs this crate.
//!
//! # Layout
//! - [`address`]: email addresses and phone numbers, checked where contacts are written.
//! - [`duration`]: ISO-8601 durations.
//! - [`instant`]: the accepted range of instants (1970..9999) and their storage form.
//! - [`schedule`]: local times across DST, recurring launches, delays, quiet hours.
//! - [`contact`]: contacts, activity events, engagement, history.
//! - [`consent`]: the consent log, its derived state and the rules that keep opt-outs.
//! - [`condition`]: conditions and their evaluation.
//! - [`scenario`]: the v1 scenario file and its loader.
//! - [`validate`]: every problem of a scenario, located.
//! - [`schema`]: the JSON Schema of scenario files, for editors.
//! - [`render`]: message templates.
//! - [`engine`]: enrollments, inputs, effects and the transition function.
//! - [`journal`]: journal records and counters.
//! - [`ports`]: the storage traits runtimes implement (SQLite embedded, DynamoDB on AWS).
//! - [`graph`]: a scenario drawn as a Mermaid flowchart.
//! - [`script`]: the events and contacts files scripts are written in (JSON lines).
//! - [`wire`]: the JSON applications send (HTTP API bodies, EventBridge details).

pub mod address;
pub mod condition;
pub mod consent;
pub mod contact;
pub mod duration;
pub mod engine;
pub mod graph;
pub mod inbound;
pub mod instant;
pub mod journal;
pub mod policy;
pub mod ports;
pub mod problem;
pub mod render;
pub mod scenario;
pub mod schedule;
pub mod schema;
pub mod script;
pub mod unsubscribe;
pub mod validate;
pub mod wire;

pub use condition::Condition;
pub use contact::{ActivityEvent, Contact, Engagement, EngagementKind, History};
pub use duration::IsoDuration;
pub use engine::{Effect, Engine, Enrollment, Input, Transition};
pub use journal::{Record, RecordKind};

pub use policy::Policy;
pub use problem::{Problem, Severity};
pub use scenario::{Format, Scenario};
