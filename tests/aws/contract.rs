//! The port contract suite (`relance_runtime::contract`) on `DynamoStore`, each contract on
//! fresh tables. DynamoDB's units of work are not transactions (`contract::transactional` is
//! not run), and these contracts do not hold on it yet, each for a design choice of the AWS
//! store that the suite does not allow for (to reconcile, issue 12):
//! - `due_order`, `launches`, `inactivity_checks`, `paused_scenarios_hold_their_due_items`:
//!   `next_due` is always none (the AWS tick runs on a schedule, nothing sleeps until it);
//! - `entry_marks`, `one_running_enrollment`: `mark_entry` is an optimistic claim on the
//!   count read by `entry_mark` in the same unit, and the running lock lives on that mark;
//! - `outbox_once_per_key`: a contact's sends are read from its enrollments' `sent` maps, not
//!   from the recorded sends;
//! - `contacts_and_history`: activity at one instant comes back in key (hash) order, not in
//!   the order appended.

use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dynamodb::DynamoStore;
use relance_runtime::contract;

use crate::support::emulator;

/// A store on fresh tables named after the contract.
fn fresh(name: &str) -> DynamoStore {
    let emu = emulator();
    let config = AwsConfig::with_prefix(&format!("k{}-{name}-", std::process::id()), 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    // Sends recorded in the table: the suite reads the store, not a queue.
    DynamoStore::new(
        emu.dynamo.clone(),
        config,
        Bridge::new(emu.runtime.handle().clone()),
    )
    .recording_sends()
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
    conditional_saves,
    timer_fires_once,
    input_keys,
    consent_log,
    journal_in_order,
);
