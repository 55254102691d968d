//! The metrics a play counts (through a recorder local to the test thread) against the
//! journal it writes: entries, held-out entries, sends, conversions by experiment arm, timer
//! lateness.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use relance_core::experiment::{HOLDOUT_STEP, bucket};
use relance_core::journal::RecordKind;

use crate::histories::play;

/// An email, a day's delay, a second email; half the entries held out; purchases convert.
const SCENARIO: &str = r#"
id: metered
timezone: UTC
launch: {type: manual}
holdout: {percent: 50}
conversion: {event: purchase, within: P7D}
messages:
  hello: {channel: email, subject: Hi, text: Hi}
  again: {channel: email, subject: Again, text: Again}
steps:
  - {id: hello, send: hello, next: wait}
  - {id: wait, delay: {after: P1D}, next: again}
  - {id: again, send: again, next: done}
  - {id: done, end: success}
"#;

/// (series, sorted labels) → counter value, and the histogram samples by series.
type Counts = (
    BTreeMap<(String, Vec<(String, String)>), u64>,
    BTreeMap<String, Vec<f64>>,
);

fn counts(recorder: &DebuggingRecorder) -> Counts {
    let (mut counters, mut histograms) = (BTreeMap::new(), BTreeMap::new());
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        labels.sort();
        match value {
            DebugValue::Counter(n) => {
                counters.insert((key.name().to_string(), labels), n);
            }
            DebugValue::Histogram(values) => {
                histograms
                    .entry(key.name().to_string())
                    .or_insert_with(Vec::new)
                    .extend(values.iter().map(|v| v.into_inner()));
            }
            DebugValue::Gauge(_) => {}
        }
    }
    (counters, histograms)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

#[test]
fn a_play_counts_what_its_journal_holds() {
    let ids: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    let contacts: String = ids
        .iter()
        .map(|c| format!("{{\"id\": \"{c}\", \"email\": \"{c}@example.org\"}}\n"))
        .collect();
    // The play enters every contact at its start; every other one buys within the window.
    let events: String = ids
        .iter()
        .step_by(2)
        .map(|c| format!("{{\"at\": \"2026-12-01T12:00:00Z\", \"contact\": \"{c}\", \"event\": \"purchase\"}}\n"))
        .collect();
    relance_runtime::metrics::enable();
    let recorder = DebuggingRecorder::new();
    let played = metrics::with_local_recorder(&recorder, || {
        play(SCENARIO, &contacts, &events, "2026-12-01T09:00:00Z", "P5D")
    });
    let (counters, histograms) = counts(&recorder);
    let count = |kind: RecordKind| played.records.iter().filter(|r| r.kind == kind).count() as u64;
    let counter = |name: &str, l: &[(&str, &str)]| {
        counters
            .get(&(name.to_string(), labels(l)))
            .copied()
            .unwrap_or(0)
    };

    assert_eq!(count(RecordKind::Entered), 12);
    assert_eq!(
        counter(
            "relance_entries_total",
            &[("scenario", "metered"), ("result", "entered")]
        ),
        12,
        "{counters:?}"
    );
    let held = ids
        .iter()
        .filter(|c| bucket("metered", HOLDOUT_STEP, c) < 5000)
        .count() as u64;
    assert!(held > 0 && held < 12, "{held}");
    assert_eq!(count(RecordKind::HeldOut), held);
    assert_eq!(
        counter(
            "relance_entries_total",
            &[("scenario", "metered"), ("result", "held_out")]
        ),
        held,
        "{counters:?}"
    );
    for step in ["hello", "again"] {
        let sent = played
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Sent && r.step.as_deref() == Some(step))
            .count() as u64;
        assert_eq!(sent, 12 - held, "{step}");
        assert_eq!(
            counter(
                "relance_sends_total",
                &[
                    ("scenario", "metered"),
                    ("step", step),
                    ("channel", "email"),
                    ("result", "sent")
                ]
            ),
            sent,
            "{step}: {counters:?}"
        );
    }
    // Conversions by the arm of each converting contact, as the buckets say.
    let mut arms: BTreeMap<&str, u64> = BTreeMap::new();
    for r in played
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Converted)
    {
        let arm = if bucket("metered", HOLDOUT_STEP, &r.contact) < 5000 {
            "held_out"
        } else {
            "treated"
        };
        *arms.entry(arm).or_default() += 1;
    }
    assert_eq!(arms.values().sum::<u64>(), 6, "{arms:?}");
    for (arm, n) in &arms {
        assert_eq!(
            counter(
                "relance_conversions_total",
                &[("scenario", "metered"), ("path", arm)]
            ),
            *n,
            "{arm}: {counters:?}"
        );
    }
    // One timer per treated entry (the day's delay), each fired at or after its due time.
    let lateness = histograms
        .get("relance_timer_lateness_seconds")
        .cloned()
        .unwrap_or_default();
    assert_eq!(lateness.len() as u64, 12 - held, "{lateness:?}");
    assert!(lateness.iter().all(|s| *s >= 0.0), "{lateness:?}");
    // Nothing else was counted: no skip, no failure, no dead letter.
    assert!(
        counters.keys().all(|(name, _)| [
            "relance_entries_total",
            "relance_sends_total",
            "relance_conversions_total"
        ]
        .contains(&name.as_str())),
        "{counters:?}"
    );
}
