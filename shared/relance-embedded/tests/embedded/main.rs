//! The embedded mode's tests, one binary: the HTTP API, the port contracts on SQLite, delivery
//! faults, hostile inputs, and the runtime over SQLite on a virtual clock.

mod api;
mod contract;
mod faults;
mod hostile;
mod runtime;
