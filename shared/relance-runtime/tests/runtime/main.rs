//! The runtime's tests, one binary: the port contracts on the memory store.

mod contract;
