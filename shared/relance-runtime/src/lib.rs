//! The runtime shared by every mode that runs for real: it loads through the storage ports
//! (`relance_core::ports`), calls the pure engine and writes the transition back, one unit of
//! work per input. The embedded mode runs it over SQLite, the AWS mode over DynamoDB, and
//! `relance simulate` over [`MemoryStore`].
//!
//! # Layout
//! - [`runtime`]: `Runtime` and its inputs (contacts, activity, engagement, launches, ticks).
//! - [`player`]: plays an events script through a `Runtime` on a virtual or scaled clock.
//! - [`simulate`]: `relance simulate`: the player on a virtual clock over a `MemoryStore`.
//! - [`memory`]: `MemoryStore`, every port in memory (the reference implementation).
//! - `contract` (feature `contract`): the port contract suite, one function per contract.

#[cfg(feature = "contract")]
pub mod contract;
pub mod memory;
pub mod player;
pub mod runtime;
pub mod simulate;

pub use memory::{MemoryError, MemoryStore};
