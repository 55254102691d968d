//! `relance simulate` speed (the player over a `MemoryStore`): N contacts (default 10,000; `RELANCE_BENCH_CONTACTS` to change) through
//! a 30-day, five-step scenario with opens and purchases, timed over a few runs.
//! Run: `cargo bench -p relance-runtime --bench simulate`.

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use relance_core::ports::SourceFormat;
use relance_core::script::ScriptedEvent;
use relance_core::{Contact, Format, IsoDuration, Record, validate};
use relance_runtime::simulate::Simulation;
use serde_json::json;

const SCENARIO: &str = r#"
id: bench-drip
timezone: Europe/Paris
launch: {type: manual}
audience: {criteria: {field: email, op: exists}}
exit_when: [{event: purchase}]
messages:
  welcome: {channel: email, subject: "Welcome {{ contact.first_name }}", text: "Hello {{ contact.first_name }}"}
  nudge: {channel: sms, text: "Still there, {{ contact.first_name }}?"}
  last: {channel: email, subject: "Last chance", html: "<p>Hi {{ contact.first_name }}</p>"}
steps:
  - {id: welcome, send: welcome, next: wait-open}
  - id: wait-open
    wait_for: {opened: welcome, timeout: P3D}
    on_event: check
    on_timeout: nudge
  - {id: nudge, send: nudge, next: check}
  - id: check
    delay: {after: P7D, at: "10:00"}
    if: {not: {clicked: welcome}}
    then: last
    else: done
  - {id: last, send: last, next: done, delay: {after: P14D}}
  - {id: done, end: success}
"#;

fn main() {
    let n: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("RELANCE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (scenario, _) = validate::parse(SCENARIO, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 3, 20, 9, 0, 0)
        .single()
        .unwrap_or_default();
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            let v = json!({"id": format!("c{i}"), "email": format!("c{i}@example.com"), "phone": format!("+336{i:08}"), "first_name": format!("Name{i}")});
            Contact::from_json(v).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    // A third open within a day, a tenth click, a twentieth buy during the month.
    let mut events = Vec::new();
    for i in 0..n {
        let c = format!("c{i}");
        if i % 3 == 0 {
            let at = start + Duration::minutes((i % 1440) as i64);
            events.push(json!({"at": at.to_rfc3339(), "contact": c, "opened": "welcome"}));
        }
        if i % 10 == 0 {
            let at = start + Duration::hours(30);
            events.push(json!({"at": at.to_rfc3339(), "contact": c, "clicked": "welcome", "link": "https://x.io/a"}));
        }
        if i % 20 == 0 {
            let at = start + Duration::days(12);
            events.push(json!({"at": at.to_rfc3339(), "contact": c, "event": "purchase"}));
        }
    }
    let events: Vec<ScriptedEvent> = events
        .into_iter()
        .map(|v| ScriptedEvent::from_json(v).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let until: IsoDuration = "P30D".parse().unwrap_or_else(|e| panic!("{e}"));

    let mut best = f64::MAX;
    let mut records = 0usize;
    let mut sends = 0usize;
    for _ in 0..runs {
        let (contacts, events) = (contacts.clone(), events.clone());
        let t = Instant::now();
        let mut sim = Simulation::new(
            scenario.clone(),
            SCENARIO,
            SourceFormat::Yaml,
            start,
            until.clone(),
        );
        sim.contacts = contacts;
        sim.events = events;
        let (mut count, mut sent) = (0usize, 0usize);
        let done = sim.run(&mut |r: &Record| {
            count += 1;
            sent += usize::from(r.kind == relance_core::RecordKind::Sent);
            black_box(r);
        });
        black_box(done.unwrap_or_else(|e| panic!("{e}")));
        best = best.min(t.elapsed().as_secs_f64());
        records = count;
        sends = sent;
    }
    println!(
        "simulate: {n} contacts, 30 days, 5-step drip: best of {runs} runs {:.1} ms, {records} records ({sends} sends), {:.0} records/s, {:.0} contacts/s",
        best * 1000.0,
        records as f64 / best,
        n as f64 / best
    );
}
