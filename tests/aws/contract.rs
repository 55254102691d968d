//! The port contract suite (`relance_runtime::contract`) on `DynamoStore`, each contract on
//! fresh tables: every contract of `contract::all`, driven as the runtime drives a store.
//! Where DynamoDB differs from the transactional stores, the port's contract says what holds
//! on both (`relance_core::ports`):
//! - its units of work are not transactions (`contract::transactional` is not run): every
//!   write is idempotent or conditional, a transition is whole once its enrollment is written
//!   (its effects ride on it until applied, and a crash is repaired when it is next read), and
//!   the running lock is held by the conditional entry claim, not checked at the save;
//! - `next_due` cannot tell (the AWS tick runs on a schedule), so it answers None and
//!   `contract::next_due_exact` is not run; due order is tested on the due reads themselves;
//! - a contact's sends are read from its enrollments' `sent` maps, so they count once
//!   committed with their enrollment (the suite commits them so);
//! - activity (and engagement) of one instant comes back in key order: the order within an
//!   instant is unspecified.

use relance_aws::dynamodb::DynamoStore;
use relance_runtime::contract;

use crate::support::fresh_store;

/// A store on fresh tables named after the contract.
fn fresh(name: &str) -> DynamoStore {
    fresh_store("k", name, 2)
}

/// One test per contract, so a broken one does not hide the others.
macro_rules! contracts {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            if crate::support::offline() {
                return;
            }
            contract::$name(fresh(stringify!($name)));
        }
    )*};
}

contracts!(
    scenario_versions,
    contacts_and_history,
    engagement_across_scenarios,
    conditional_saves,
    one_running_enrollment,
    entry_marks,
    due_order,
    timer_fires_once,
    timers_armed_out_of_order,
    paused_scenarios_hold_their_due_items,
    inactivity_checks,
    launches,
    input_keys,
    consent_log,
    journal_in_order,
);

/// `outbox_once_per_key`, and the recorded outbox (the sends the channels would get) holds
/// the send once.
#[test]
fn outbox_once_per_key() {
    if crate::support::offline() {
        return;
    }
    let store = fresh("outbox_once_per_key");
    contract::outbox_once_per_key(store.clone());
    let sends: Vec<_> = store
        .outbox()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|m| m["kind"] == "send")
        .collect();
    assert_eq!(sends.len(), 1, "one recorded send per key: {sends:?}");
}
