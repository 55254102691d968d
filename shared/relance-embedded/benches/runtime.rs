//! Embedded runtime throughput: N contacts (default 10,000; `RELANCE_BENCH_CONTACTS`) through
//! a three-step drip (email, wait a day, if opened SMS else email) on a SQLite file, durable
//! (WAL), with the clock driven by the bench so the wait costs no real time.
//! Run: `cargo bench -p relance-embedded --bench runtime`.

use std::time::Instant;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use relance_core::Contact;
use relance_core::contact::EngagementKind;
use relance_core::ports::{SourceFormat, Status};
use relance_core::wire::{EngagementDetail, LaunchDetail};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;
use serde_json::json;

const DRIP: &str = include_str!("../../../examples/reference-drip.yaml");

fn main() {
    let n: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("relance-bench-{}", std::process::id()));
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
        .put_scenario(DRIP, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let report = rt
        .launch(
            LaunchDetail {
                scenario: "drip".into(),
                contacts: None,
            },
            t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let launch_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in (0..n).step_by(3) {
        let detail = EngagementDetail {
            idempotency_key: None,
            contact: format!("c{i:07}"),
            scenario: "drip".into(),
            step: "first".into(),
            kind: EngagementKind::Opened,
            url: None,
            link_tags: vec![],
            at: None,
        };
        rt.engagement(detail, t0 + TimeDelta::hours(2))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let engagement_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tick = rt
        .tick(t0 + TimeDelta::days(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let tick_s = started.elapsed().as_secs_f64();
    let (running, ended) = rt
        .store()
        .enrollment_counts(Some("drip"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((running, ended), (0, n as u64));
    // Steps per contact: first, check, sms|again, done.
    let steps = 4 * n;
    let total = launch_s + engagement_s + tick_s;
    println!("embedded runtime, {n} contacts, SQLite WAL file, one transaction per input:");
    println!("  import         {:>8.0} contacts/s", n as f64 / import_s);
    println!(
        "  launch         {:>8.0} entries/s ({} entered, first email each)",
        report.entered as f64 / launch_s,
        report.entered
    );
    println!(
        "  engagement     {:>8.0} opens/s",
        (n.div_ceil(3)) as f64 / engagement_s
    );
    println!(
        "  timers         {:>8.0} timers/s ({} fired: check, then SMS or email, end)",
        tick.timers as f64 / tick_s,
        tick.timers
    );
    println!(
        "  overall        {:>8.0} contact-steps/s ({steps} steps in {total:.2} s)",
        steps as f64 / total
    );
    let _ = std::fs::remove_dir_all(&dir);
}
