//! The AWS adapters, one test binary. Against a local AWS emulator: the store (`store`), the
//! functions' handlers end to end (`functions`), counted cost (`cost`), each channel on the
//! wire (`channels`), the calls each handler makes against its role (`permissions`) and the
//! port contract suite (`contract`), and assignment parity with the formula (`parity`, which
//! also runs the handlers over `MemoryStore` offline), and the experiments through the
//! functions (`experiments`: conversions, the winner check on tick, the global control group),
//! and the webhook step through its queue and sender against a receiver stub (`webhook`), and
//! the senders as `relance run`'s delivery backends (`direct`).
//! Offline: the sample events of `events/` (`events`) and each handler in memory
//! (`handlers`). `./scripts/test` starts the emulator and sets `AWS_ENDPOINT_URL`; without it
//! each emulator test returns at once and one line says they were skipped, so an offline
//! `cargo test` passes.

mod channels;
mod contract;
mod cost;
mod direct;
mod events;
mod experiments;
mod functions;
mod handlers;
mod parity;
mod permissions;
mod store;
mod support;
mod webhook;
