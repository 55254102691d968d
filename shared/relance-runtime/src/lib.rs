//! The runtime shared by every mode that runs for real: it loads through the storage ports
//! (`relance_core::ports`), calls the pure engine and writes the transition back, one unit of
//! work per input. The embedded mode runs it over SQLite, the AWS mode over DynamoDB.
//!
//! # Layout
//! - [`runtime`]: `Runtime` and its inputs (contacts, activity, engagement, launches, ticks).

pub mod runtime;
