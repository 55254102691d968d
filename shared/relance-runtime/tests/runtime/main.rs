//! The runtime's tests, one binary: the port contracts on the memory store, and scenarios
//! played as scripted histories, properties and hostile inputs.

mod contract;
mod histories;
mod hostile;
mod properties;
