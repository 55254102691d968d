//! The scenario file, v1 (DESIGN §3): its typed model and the loader that reads YAML or JSON
//! and reports every shape problem with its path, instead of stopping at the first one.
//!
//! # Layout
//! - `model`: the typed scenario (steps, launches, messages, actions).
//! - `load`: parsing, the top-level keys, messages, goals and the audience.
//! - `launch`: the `launch` block and its schedules.
//! - `steps`: the `steps` list, one field at a time.

mod launch;
mod load;
mod model;
mod steps;

pub use launch::{
    INACTIVITY_MINUTES, LAUNCH_KEYS, MAX_DAILY_TIMES, MAX_FIXED_DATES, MAX_GOALS, MAX_STEPS,
};
pub use load::{
    Format, Loaded, MESSAGE_KEYS, ScenarioFile, TOP_KEYS, from_value, merge_shared_messages,
    parse_document, parse_shared_messages, parse_stored_document,
};
pub(crate) use load::{quiet_hours, suggest, typed};
pub use model::*;
pub use steps::STEP_KEYS;
