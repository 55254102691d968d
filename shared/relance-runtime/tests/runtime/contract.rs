//! The port contract suite run against `MemoryStore`, the reference implementation.

use relance_runtime::MemoryStore;
use relance_runtime::contract;

#[test]
fn memory_store_keeps_every_port_contract() {
    contract::all(MemoryStore::new);
}

#[test]
fn memory_store_units_are_transactions() {
    contract::transactional(MemoryStore::new);
}

#[test]
fn memory_store_tells_the_next_due_item() {
    contract::next_due_exact(MemoryStore::new);
}
