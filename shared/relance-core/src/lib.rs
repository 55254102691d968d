//! The pure engine of Relance: scenario files, their validation, conditions, calendar
//! arithmetic and the transition function that moves one enrollment through a scenario.
//! No clock, no I/O, no AWS types: every mode (simulate, embedded, AWS) runs this crate.
//!
//! # Layout
//! - [`address`]: email addresses and phone numbers, checked where contacts are written.
//! - [`instant`]: the accepted range of instants (1970..9999) and their storage form.
//! - [`local`]: wall-clock times and instants in a time zone, DST included.
//! - [`duration`]: ISO-8601 durations.
//! - [`schedule`]: local times of day, recurring launches, delays, quiet hours, inactivity.
//! - [`best_time`]: the hour an `at: best` delay runs at, from the contact's opens and clicks.
//! - [`contact`]: contacts, activity events, engagement, history.
//! - [`consent`]: the consent log, its derived state and the rules that keep opt-outs.
//! - [`condition`]: conditions and their evaluation.
//! - [`scenario`]: the v1 scenario file: its model and its loader (`model`, `load`,
//!   `launch`, `steps`).
//! - [`policy`]: the workspace policy (quiet hours, a cap across scenarios, retention).
//! - [`problem`]: problems found in a scenario file, located.
//! - [`validate`]: every problem of a scenario, located.
//! - [`schema`]: the JSON Schema of scenario files, generated from the loader's types.
//! - [`render`]: message templates.
//! - [`experiment`]: the deterministic SHA-256 bucket behind `split` paths, message variants
//!   and the holdout.
//! - [`winner`]: the winner rule of variant sends (tallies from the journal, the z-test).
//! - [`engine`]: enrollments, inputs, effects and the transition function (`enter`,
//!   `handle`, `run`, and `send` with the pure [`engine::decide_send`]).
//! - [`journal`]: journal records and counters.
//! - [`stats`]: the normal distribution, Wilson intervals and two-proportion z-tests behind
//!   reports and the winner rule.
//! - [`report`]: the experiment report of a scenario, computed from its journal records.
//! - [`delivery`]: the delivery contract of `relance run`: an outgoing message, the
//!   [`delivery::Backend`] a provider implements, how answers are classed, the retry rules.
//! - [`ports`]: the storage traits runtimes implement (SQLite embedded, DynamoDB on AWS).
//! - [`graph`]: a scenario drawn as a Mermaid flowchart or Graphviz DOT.
//! - [`pinpoint`]: Amazon Pinpoint journeys (`aws pinpoint get-journey`) imported as scenario
//!   files, every field mapped or reported with its path (DESIGN §9).
//! - [`script`]: the events and contacts files scripts are written in (JSON lines).
//! - [`wire`]: the JSON applications send (HTTP API bodies, EventBridge details).
//! - [`inbound`]: what the functions receive, decoded (EventBridge details, queue messages,
//!   SES feedback).
//! - [`webhook`]: the webhook step: its definition, static checks, signature, retry rules
//!   and `save`.
//! - [`invoke`]: the invoke step (AWS only): its definition, the function check, the event.
//! - [`retry`]: the retry schedule of webhook calls and deliveries (backoff, 24 h window).
//! - [`net`]: the addresses outbound calls never reach (loopback, private, link-local, ...).
//! - [`signed`]: signed tokens (a claim's JSON and its HMAC-SHA256), behind the unsubscribe
//!   and tracking links.
//! - [`unsubscribe`]: the signed one-click unsubscribe token (RFC 8058).
//! - [`tracking`]: the signed open pixel and click redirects of `relance run`, and the
//!   rewriting of an email's HTML to use them.

pub mod address;
pub mod best_time;
pub mod condition;
pub mod consent;
pub mod contact;
pub mod delivery;
pub mod delta;
pub mod duration;
pub mod engine;
pub mod experiment;
pub mod graph;
pub mod inbound;
pub mod instant;
pub mod invoke;
pub mod journal;
mod json_text;
pub mod local;
pub mod net;
pub mod pinpoint;
pub mod policy;
pub mod ports;
pub mod problem;
pub mod render;
pub mod report;
pub mod retry;
pub mod scenario;
pub mod schedule;
pub mod schema;
pub mod script;
pub mod signed;
pub mod stats;
pub mod tracking;
pub mod unsubscribe;
pub mod validate;
pub mod webhook;
pub mod winner;
pub mod wire;

pub use condition::Condition;
pub use contact::{ActivityEvent, Contact, Engagement, EngagementKind, History};
pub use duration::IsoDuration;
pub use engine::{Effect, Engine, Enrollment, Input, Transition};
pub use journal::{Record, RecordKind};

pub use policy::Policy;
pub use problem::{Problem, Severity};
pub use scenario::{Format, Scenario};
