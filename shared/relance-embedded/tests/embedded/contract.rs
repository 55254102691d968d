//! The port contract suite run against `SqliteStore`.

use relance_embedded::store::SqliteStore;
use relance_runtime::contract;

fn fresh() -> SqliteStore {
    SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sqlite_store_keeps_every_port_contract() {
    contract::all(fresh);
}

#[test]
fn sqlite_store_units_are_transactions() {
    contract::transactional(fresh);
}

#[test]
fn sqlite_store_tells_the_next_due_item() {
    contract::next_due_exact(fresh);
}
