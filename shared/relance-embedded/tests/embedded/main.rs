//! The embedded mode's tests, one binary: the HTTP API, the port contracts on SQLite, delivery
//! faults, hostile inputs, the runtime over SQLite on a virtual clock, assignment parity
//! with `simulate` for 10,000 contacts against the formula, the webhook worker, the delivery
//! worker, and open and click tracking.

mod api;
mod contract;
mod delivery;
mod faults;
mod hostile;
mod parity;
mod runtime;
mod tracking;
mod webhook;
