//! The runtime shared by every mode that runs for real: it loads through the storage ports
//! (`relance_core::ports`), calls the pure engine and writes the transition back, one unit of
//! work per input. The embedded mode runs it over SQLite, the AWS mode over DynamoDB, and
//! `relance simulate` over [`MemoryStore`].
//!
//! # Layout
//! - [`runtime`]: `Runtime`, its units of work and its inputs, one private module per concern
//!   (scenarios and settings, contacts and events, launches and imports, ticks and timers).
//! - [`import`]: contacts from CSV or JSON lines (the CLI, the API and the fuzz target parse
//!   them here), with a report.
//! - [`metrics`]: the series of DESIGN §9 through the `metrics` facade, counted for the units
//!   of work that commit.
//! - [`player`]: plays an events script through a `Runtime` on a virtual or scaled clock.
//! - [`simulate`]: `relance simulate`: the player on a virtual clock over a `MemoryStore`.
//! - [`memory`]: `MemoryStore`, every port in memory (the reference implementation).
//! - `contract` (feature `contract`): the port contract suite, one function per contract.

#[cfg(feature = "contract")]
pub mod contract;
pub mod import;
pub mod memory;
pub mod metrics;
pub mod player;
pub mod runtime;
pub mod simulate;

pub use memory::{MemoryError, MemoryStore};
