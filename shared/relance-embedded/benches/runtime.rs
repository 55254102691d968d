//! Embedded runtime throughput: N contacts (default 10,000; `RELANCE_BENCH_CONTACTS`) through
//! the reference drip (email, wait a day, if opened SMS else email) on a SQLite file, durable
//! (WAL), with the clock driven by the bench so the wait costs no real time; then the same
//! for the drip measured (a holdout, a split, a conversion) with the same inputs (a third
//! open the first email, a tenth buy), to show what measurement costs.
//! With `RELANCE_BENCH_METRICS=1`, the Prometheus recorder is installed first, as `relance
//! run` does, so that the runtime counts its metrics (the cost of `/metrics`).
//! Run: `cargo bench -p relance-embedded --bench runtime`.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use relance_core::Contact;
use relance_core::contact::EngagementKind;
use relance_core::journal::RecordKind;
use relance_core::ports::{JournalStore, SourceFormat, Status};
use relance_core::wire::{ActivityDetail, EngagementDetail, LaunchDetail};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;
use serde_json::json;

const DRIP: &str = include_str!("../../../examples/reference-drip.yaml");
/// The same drip measured: a holdout, a split and a conversion.
const MEASURED: &str = include_str!("../../../examples/reference-drip-measured.yaml");

fn main() {
    let n: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if std::env::var("RELANCE_BENCH_METRICS").is_ok_and(|v| v == "1") {
        relance_embedded::metrics::install().unwrap_or_else(|e| panic!("{e}"));
        println!("metrics: counted (the Prometheus recorder is installed)");
    }
    let (plain_steps, plain_contacts) = run(n, DRIP, "drip");
    let (steps, contacts) = run(n, MEASURED, "drip-measured");
    // Per contact too: the measured drip has one step more (the split) and none for the held
    // out, so its contact-steps are not the plain drip's.
    println!(
        "cost of measurement: {steps:.0} contact-steps/s measured, {plain_steps:.0} plain ({:+.1}%); {contacts:.0} contacts/s through the drip measured, {plain_contacts:.0} plain ({:+.1}%)",
        (steps / plain_steps - 1.0) * 100.0,
        (contacts / plain_contacts - 1.0) * 100.0
    );
}

/// Runs scenario `id` (from `yaml`) for `n` contacts on a fresh database, prints its figures
/// and returns its contact-steps and contacts per second (launch to end).
fn run(n: usize, yaml: &str, id: &str) -> (f64, f64) {
    let dir = std::env::temp_dir().join(format!("relance-bench-{}-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let store = SqliteStore::open(&dir.join("bench.db")).unwrap_or_else(|e| panic!("{e}"));
    let mut rt = Runtime::new(store);
    let t0: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
        .single()
        .unwrap_or_default();
    let contacts: Vec<Contact> = (0..n)
        .map(|i| Contact::from_json(json!({"id": format!("c{i:07}"), "email": format!("c{i}@x.io"), "phone": format!("+336{i:08}"), "first_name": "Ana"})).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let started = Instant::now();
    rt.import(&contacts, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let import_s = started.elapsed().as_secs_f64();
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let report = rt
        .launch(
            LaunchDetail {
                scenario: id.into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let launch_s = started.elapsed().as_secs_f64();
    // Each contact's first email step (its split path; none when held out), read off the
    // clock.
    let first_step: BTreeMap<String, String> = rt
        .store()
        .records(id, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|r| r.kind == RecordKind::Sent)
        .filter_map(|r| Some((r.contact, r.step?)))
        .collect();
    let started = Instant::now();
    let mut opens = 0;
    for i in (0..n).step_by(3) {
        let contact = format!("c{i:07}");
        let Some(step) = first_step.get(&contact) else {
            continue;
        };
        let detail = EngagementDetail {
            idempotency_key: None,
            contact,
            scenario: id.into(),
            step: step.clone(),
            kind: EngagementKind::Opened,
            url: None,
            link_tags: vec![],
            at: None,
        };
        rt.engagement(detail, t0 + TimeDelta::hours(2))
            .unwrap_or_else(|e| panic!("{e}"));
        opens += 1;
    }
    let engagement_s = started.elapsed().as_secs_f64();
    // A tenth buy three hours in: within the measured drip's window, each converts its entry.
    let bought = t0 + TimeDelta::hours(3);
    let started = Instant::now();
    let mut purchases = 0;
    for i in (1..n).step_by(10) {
        let detail: ActivityDetail = serde_json::from_value(json!({"contact": format!("c{i:07}"), "event": "purchase", "properties": {"amount": 25}, "at": bought}))
            .unwrap_or_else(|e| panic!("{e}"));
        rt.activity(detail, bought)
            .unwrap_or_else(|e| panic!("{e}"));
        purchases += 1;
    }
    let activity_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tick = rt
        .tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let tick_s = started.elapsed().as_secs_f64();
    let (running, ended) = rt
        .store()
        .enrollment_counts(Some(id))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((running, ended), (0, n as u64));
    // Contact-steps as the journal counts them: first, check, sms|again, done for the plain
    // drip; also the split step for the measured one (and no step for a held-out entry).
    let journal = rt.journal(id).unwrap_or_else(|e| panic!("{e}"));
    let steps: u64 = journal.steps.values().map(|s| s.entered).sum();
    // The CPU time spans the reading of the first email steps too (a small part).
    let cpu = cpu_seconds()
        .zip(cpu_started)
        .map(|(end, start)| end - start);
    let total = launch_s + engagement_s + activity_s + tick_s;
    println!(
        "embedded runtime, {id}, {n} contacts ({} held out, {} converted), SQLite WAL file, one transaction per input:",
        journal.ends.get("held_out").copied().unwrap_or(0),
        journal.converted
    );
    println!("  import         {:>8.0} contacts/s", n as f64 / import_s);
    println!(
        "  launch         {:>8.0} entries/s ({} entered, first email each but the held out)",
        report.entered as f64 / launch_s,
        report.entered
    );
    println!(
        "  engagement     {:>8.0} opens/s ({opens})",
        opens as f64 / engagement_s
    );
    println!(
        "  activity       {:>8.0} purchases/s ({purchases})",
        purchases as f64 / activity_s
    );
    println!(
        "  timers         {:>8.0} timers/s ({} fired: check, then SMS or email, end)",
        tick.timers as f64 / tick_s,
        tick.timers
    );
    let rate = steps as f64 / total;
    println!(
        "  overall        {rate:>8.0} contact-steps/s ({steps} steps in {total:.2} s), {:.0} contacts/s",
        n as f64 / total
    );
    // CPU time is what contention on a shared machine disturbs least (the disk's waits are
    // not in it).
    if let Some(cpu) = cpu {
        println!(
            "  CPU            {:>8.1} µs per contact-step, {:.1} µs per contact ({cpu:.2} s)",
            cpu / steps as f64 * 1e6,
            cpu / n as f64 * 1e6
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    (rate, n as f64 / total)
}

/// The CPU time this thread has run so far, in seconds, where Linux tells it
/// (`/proc/thread-self/schedstat`, nanoseconds on CPU); none elsewhere.
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
