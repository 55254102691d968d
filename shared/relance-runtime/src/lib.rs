//! The runtime shared by every mode that runs for real: it loads through the storage ports
//! (`relance_core::ports`), calls the pure engine and writes the transition back, one unit of
//! work per input. The embedded mode runs it over SQLite, the AWS mode over DynamoDB, and
//! `relance simulate` over [`MemoryStore`].
//!
//! # Layout
//! - [`runtime`]: `Runtime` and its inputs (contacts, activity, engagement, launches, ticks).
//! - [`memory`]: `MemoryStore`, every port in memory (the reference implementation).
//! - `contract` (feature `contract`): the port contract suite, one function per contract.

#[cfg(feature = "contract")]
pub mod contract;
pub mod memory;
pub mod runtime;

pub use memory::{MemoryError, MemoryStore};
