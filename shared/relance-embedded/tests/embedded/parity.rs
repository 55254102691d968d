//! Assignment parity for 10,000 contacts (issue 13, DESIGN §3.1): `simulate` and the SQLite
//! runtime that `relance run` and `relance test` drive each hold out, place on a path and
//! pick a variant for every contact exactly as the SHA-256 formula, computed apart in
//! `tests/parity/assignment.rs`, says. The AWS functions are held to the same expectation in
//! `tests/aws/parity.rs`.

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::inbound::decode_send;
use relance_core::journal::Record;
use relance_core::ports::{JournalStore, SourceFormat, Status};
use relance_core::{Format, validate};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;
use relance_runtime::player::{Play, Script, Strict, VirtualClock};
use relance_runtime::simulate::Simulation;

#[path = "../../../../tests/parity/assignment.rs"]
mod expected;

/// Contacts compared in each mode.
const CONTACTS: usize = 10_000;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timezone(&Utc)
}

/// `relance simulate`'s records for the fixture launched for `ids` at the start, over a day.
fn simulated(ids: &[String]) -> Vec<Record> {
    let (scenario, _) =
        validate::parse(expected::YAML, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(
        scenario,
        expected::YAML,
        SourceFormat::Yaml,
        start(),
        "P1D".parse().unwrap_or_else(|e| panic!("{e}")),
    );
    sim.contacts = expected::contacts(ids);
    let mut records = Vec::new();
    sim.run(&mut |r: &Record| records.push(r.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    records
}

/// The journal of the SQLite runtime, as `relance run` and `relance test` drive it: the
/// contacts imported, the fixture activated and launched for everyone at the start, played
/// for a day on a virtual clock. With the sends in its outbox: (contact, step, message).
fn on_sqlite(ids: &[String]) -> (Vec<Record>, Vec<(String, String, String)>) {
    let before = start() - TimeDelta::days(1);
    let mut rt = Runtime::new(SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")));
    rt.import(&expected::contacts(ids), before, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let put = rt
        .put_scenario(expected::YAML, SourceFormat::Yaml, before)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, before)
        .unwrap_or_else(|e| panic!("{e}"));
    Play::new(&put.id, start(), start() + TimeDelta::days(1))
        .launching_at_start(true)
        .run(
            &mut rt,
            Script::new(Vec::new()),
            &mut VirtualClock::new(start()),
            &mut Strict,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let records = rt
        .store()
        .records(&put.id, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let sends = rt
        .store()
        .outbox_after(0, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|(_, kind, _)| kind == "send")
        .map(|(_, _, body)| {
            let (_, send) = decode_send(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            (send.contact, send.step, send.message)
        })
        .collect();
    (records, sends)
}

#[test]
fn simulate_and_sqlite_assign_10000_contacts_as_the_formula_says() {
    let ids = expected::contact_ids(CONTACTS);

    let t = Instant::now();
    let records = simulated(&ids);
    let counts = expected::check("simulate", &records, &ids);
    eprintln!(
        "simulate: {CONTACTS} contacts in {:.2?}: {counts:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let (records, sends) = on_sqlite(&ids);
    let counts = expected::check("SQLite runtime", &records, &ids);
    expected::check_sends("SQLite runtime, outbox", sends, &ids);
    eprintln!(
        "SQLite runtime: {CONTACTS} contacts in {:.2?}: {counts:?}",
        t.elapsed()
    );
}
