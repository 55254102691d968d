//! Property tests of the engine's invariants over generated scenarios, contacts and events
//! played by the simulation: a step never sends twice for one enrollment; when the clock runs
//! out every enrollment is waiting (with a timer after the end) or ended; records come in
//! time order; a run is deterministic.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use relance_core::engine::EnrollmentState;
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::SourceFormat;
use relance_core::script::ScriptedEvent;
use relance_core::{Contact, Format, IsoDuration, validate};
use relance_runtime::simulate::Simulation;
use serde_json::json;

#[derive(Debug, Clone)]
enum GenStep {
    Send { sms: bool, delay_hours: Option<u8> },
    IfOpened { back: usize, jump: usize },
    WaitOpened { back: usize, hours: u8, jump: usize },
    Branch { threshold: i64, jump: usize },
    Tag,
    Delay { hours: u8, at_nine: bool },
}

fn step_strategy() -> impl Strategy<Value = GenStep> {
    prop_oneof![
        3 => (any::<bool>(), proptest::option::of(1u8..72)).prop_map(|(sms, delay_hours)| GenStep::Send { sms, delay_hours }),
        2 => (0usize..8, 0usize..8).prop_map(|(back, jump)| GenStep::IfOpened { back, jump }),
        2 => (0usize..8, 1u8..96, 0usize..8).prop_map(|(back, hours, jump)| GenStep::WaitOpened { back, hours, jump }),
        1 => (0i64..100, 0usize..8).prop_map(|(threshold, jump)| GenStep::Branch { threshold, jump }),
        1 => Just(GenStep::Tag),
        1 => (1u8..72, any::<bool>()).prop_map(|(hours, at_nine)| GenStep::Delay { hours, at_nine }),
    ]
}

/// A scenario whose steps form a chain s0 → s1 → … → end, with extra forward jumps, so
/// every step is reachable, every path ends, and no loop exists.
fn scenario_yaml(steps: &[GenStep], exit_on_purchase: bool) -> String {
    let n = steps.len();
    let sends: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, GenStep::Send { .. }))
        .map(|(i, _)| i)
        .collect();
    let mut y = String::from(
        "id: generated\ntimezone: Europe/Paris\nlaunch: {type: manual}\naudience: {all: true}\n",
    );
    if exit_on_purchase {
        y.push_str("exit_when: [{event: purchase}]\n");
    }
    y.push_str("messages:\n  mail: {channel: email, subject: \"Hi {{ contact.id }}\", text: \"x\"}\n  text: {channel: sms, text: \"Hi\"}\nsteps:\n");
    let forward = |i: usize, jump: usize| format!("s{}", (i + 1 + jump % (n - i)).min(n));
    let target = |j: usize| {
        if j >= n {
            "end".to_string()
        } else {
            format!("s{j}")
        }
    };
    for (i, s) in steps.iter().enumerate() {
        let next = target(i + 1);
        let earlier_send = |back: usize| {
            sends
                .iter()
                .filter(|&&k| k < i)
                .nth_back(back % sends.len().max(1))
                .copied()
        };
        let fwd = |jump: usize| {
            let f = forward(i, jump);
            if f == format!("s{n}") {
                "end".to_string()
            } else {
                f
            }
        };
        match s {
            GenStep::Send { sms, delay_hours } => {
                let _ = write!(
                    y,
                    "  - id: s{i}\n    send: {}\n    next: {next}\n",
                    if *sms { "text" } else { "mail" }
                );
                if let Some(h) = delay_hours {
                    let _ = writeln!(y, "    delay: {{after: PT{h}H}}");
                }
            }
            GenStep::IfOpened { back, jump } => match earlier_send(*back) {
                Some(k) => {
                    let _ = write!(
                        y,
                        "  - id: s{i}\n    if: {{opened: s{k}}}\n    then: {next}\n    else: {}\n",
                        fwd(*jump)
                    );
                }
                None => {
                    let _ = write!(
                        y,
                        "  - id: s{i}\n    if: {{event: purchase}}\n    then: {next}\n    else: {}\n",
                        fwd(*jump)
                    );
                }
            },
            GenStep::WaitOpened { back, hours, jump } => {
                let cond = earlier_send(*back).map_or("{event: visit}".to_string(), |k| {
                    format!("{{any: [{{opened: s{k}}}, {{clicked: s{k}}}]}}")
                });
                let cond = cond.trim_end_matches('}').to_string();
                let _ = write!(
                    y,
                    "  - id: s{i}\n    wait_for: {cond}, timeout: PT{hours}H}}\n    on_event: {}\n    on_timeout: {next}\n",
                    fwd(*jump)
                );
            }
            GenStep::Branch { threshold, jump } => {
                let _ = write!(
                    y,
                    "  - id: s{i}\n    branches:\n      - {{when: {{field: score, op: gt, value: {threshold}}}, next: {}}}\n      - {{when: {{tag: seen}}, next: {next}}}\n    otherwise: {next}\n",
                    fwd(*jump)
                );
            }
            GenStep::Tag => {
                let _ = write!(
                    y,
                    "  - id: s{i}\n    action: {{tag: {{add: [seen]}}}}\n    next: {next}\n"
                );
            }
            GenStep::Delay { hours, at_nine } => {
                let at = if *at_nine { ", at: \"09:00\"" } else { "" };
                let _ = write!(
                    y,
                    "  - id: s{i}\n    delay: {{after: PT{hours}H{at}}}\n    next: {next}\n"
                );
            }
        }
    }
    y.push_str("  - id: end\n    end: success\n");
    y
}

#[derive(Debug, Clone)]
struct GenEvent {
    contact: usize,
    minutes: u32,
    kind: u8,
    step: usize,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 25, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

fn play(
    yaml: &str,
    contacts: &[(bool, bool, i64)],
    events: &[GenEvent],
    n_steps: usize,
) -> (Vec<Record>, Vec<relance_core::Enrollment>, DateTime<Utc>) {
    let (scenario, _) = validate::parse(yaml, Format::Yaml)
        .unwrap_or_else(|p| panic!("generated scenario invalid: {p:?}\n{yaml}"));
    let contacts: Vec<Contact> = contacts
        .iter()
        .enumerate()
        .map(|(i, (email, phone, score))| {
            let mut v = json!({"id": format!("c{i}"), "score": score});
            if *email {
                v["email"] = json!(format!("c{i}@example.com"));
            }
            if *phone {
                v["phone"] = json!(format!("+3360000{i:04}"));
            }
            Contact::from_json(v).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let n_contacts = contacts.len();
    let events: Vec<ScriptedEvent> = events
        .iter()
        .map(|e| {
            let at = (start() + Duration::minutes(i64::from(e.minutes))).to_rfc3339();
            let contact = format!("c{}", e.contact % n_contacts);
            let step = format!("s{}", e.step % n_steps);
            let v = match e.kind % 4 {
                0 => json!({"at": at, "contact": contact, "opened": step}),
                1 => {
                    json!({"at": at, "contact": contact, "clicked": step, "link": "https://x.io/a"})
                }
                2 => json!({"at": at, "contact": contact, "event": "purchase"}),
                _ => json!({"at": at, "contact": contact, "event": "visit"}),
            };
            ScriptedEvent::from_json(v).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let until = "P10D"
        .parse::<IsoDuration>()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Simulation::new(scenario, yaml, SourceFormat::Yaml, start(), until);
    sim.contacts = contacts;
    sim.events = events;
    let mut records = Vec::new();
    let mut done = sim
        .run(&mut |r: &Record| records.push(r.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    (records, done.runtime.store().enrollments(), done.end)
}

fn events_strategy() -> impl Strategy<Value = Vec<GenEvent>> {
    proptest::collection::vec(
        (0usize..20, 0u32..(12 * 24 * 60), any::<u8>(), 0usize..10).prop_map(
            |(contact, minutes, kind, step)| GenEvent {
                contact,
                minutes,
                kind,
                step,
            },
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants_hold(
        steps in proptest::collection::vec(step_strategy(), 1..9),
        exit in any::<bool>(),
        contacts in proptest::collection::vec((any::<bool>(), any::<bool>(), 0i64..100), 1..12),
        events in events_strategy(),
    ) {
        let yaml = scenario_yaml(&steps, exit);
        let (records, enrollments, end) = play(&yaml, &contacts, &events, steps.len());

        // A step never sends twice for one enrollment.
        let mut sends: HashMap<(String, String), u32> = HashMap::new();
        for r in records.iter().filter(|r| r.kind == RecordKind::Sent) {
            *sends.entry((r.enrollment.clone().unwrap_or_default(), r.step.clone().unwrap_or_default())).or_default() += 1;
        }
        prop_assert!(sends.values().all(|&n| n == 1), "a step sent twice: {sends:?}");

        // Records come in time order, all within the run.
        prop_assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
        prop_assert!(records.iter().all(|r| r.at >= start() && r.at <= end));

        // Every enrollment is waiting for a timer after the end, or ended; none is stuck.
        for e in &enrollments {
            match &e.state {
                EnrollmentState::Ended { .. } => {}
                EnrollmentState::Due { at, .. } | EnrollmentState::Waiting { until: at, .. } => {
                    prop_assert!(*at > end, "{} is stuck at {at} before the end {end}", e.id);
                }
            }
        }

        // Each enrollment has one entry and at most one end.
        let mut finished: HashMap<String, u32> = HashMap::new();
        for r in records.iter().filter(|r| matches!(r.kind, RecordKind::Ended | RecordKind::Exited)) {
            *finished.entry(r.enrollment.clone().unwrap_or_default()).or_default() += 1;
        }
        prop_assert!(finished.values().all(|&n| n == 1));
        prop_assert_eq!(records.iter().filter(|r| r.kind == RecordKind::Entered).count(), enrollments.len());

        // Deterministic: the same inputs give the same records.
        let (again, _, _) = play(&yaml, &contacts, &events, steps.len());
        prop_assert_eq!(records, again);
    }
}
