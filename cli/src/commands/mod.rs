//! One module per command (or per family of commands), each printing its own output.
//!
//! # Layout
//! - [`validate`], [`schema`], [`new`], [`graph`], [`simulate`], [`test`](mod@test): file commands.
//! - [`run`]: `relance run` and `relance token new`.
//! - [`scenario`]: `relance scenario ...` and `relance clone`.
//! - [`contacts`]: `relance contacts import` and `relance launch`.
//! - [`import`]: `relance import pinpoint`, a Pinpoint journey as a scenario file.
//! - [`consent`]: `relance consent show|set`.
//! - [`journal`]: `relance journal` (and the counts `graph --db` draws).
//! - [`report`]: `relance report`, the experiment report as a table or JSON.
//! - [`policy`]: `relance policy set|show` and `relance messages put|show`.
//! - [`dev`]: `relance dev up|run`.

pub mod consent;
pub mod contacts;
pub mod dev;
pub mod graph;
pub mod import;
pub mod journal;
pub mod new;
pub mod policy;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schema;
pub mod simulate;
pub mod test;
pub mod validate;
