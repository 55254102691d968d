//! The embedded mode's tests, one binary: the HTTP API, the web console (without a browser:
//! login, cookie flags, CSRF, escaping, each page), the port contracts on SQLite, delivery
//! faults, hostile inputs, the runtime over SQLite on a virtual clock, assignment parity
//! with `simulate` for 10,000 contacts against the formula, the webhook worker, the delivery
//! worker, open and click tracking, the SMTP backend against a real SMTP server, and the
//! runner's syncer (nothing answered or delivered before its sync), and due timers' steps
//! read ahead on a second connection.

mod ahead;
mod api;
mod common;
mod console;
mod contract;
mod delivery;
mod durable;
mod faults;
mod hostile;
mod parity;
mod runtime;
mod smtp;
mod tracking;
mod webhook;
