//! The runtime's tests, one binary: the port contracts on the memory store, and scenarios
//! played as scripted histories, experiments (conversions, winners), properties and hostile
//! inputs, and the metrics counted of a play.

mod contract;
mod experiments;
mod histories;
mod hostile;
mod metrics;
mod properties;
