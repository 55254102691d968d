//! Experiments played as histories: conversions counted per entry (held-out entries
//! included, within the window, after the enrollment ended), the winner rule checked on
//! schedule from the journal, and the global control group.

use relance_core::experiment::{HOLDOUT_STEP, bucket};
use relance_core::journal::{Record, RecordKind};

use crate::histories::play;

fn of_kind(records: &[Record], kind: RecordKind) -> Vec<&Record> {
    records.iter().filter(|r| r.kind == kind).collect()
}

const CONVERSION: &str = r#"
id: conv
timezone: UTC
launch: {type: manual}
holdout: {percent: 50}
conversion:
  event: purchase
  where: {field: amount, op: ge, value: 20}
  within: P2D
  value: amount
messages:
  hello: {channel: email, subject: Hi, text: Hi}
steps:
  - {id: hello, send: hello, next: done}
  - {id: done, end: success}
"#;

#[test]
fn conversions_count_once_per_entry_within_the_window_held_out_included() {
    let ids: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let held: Vec<bool> = ids
        .iter()
        .map(|c| bucket("conv", HOLDOUT_STEP, c) < 5000)
        .collect();
    assert!(
        held.iter().any(|h| *h) && held.iter().any(|h| !*h),
        "{held:?}"
    );
    let contacts: String = ids
        .iter()
        .map(|c| format!("{{\"id\": \"{c}\", \"email\": \"{c}@example.org\"}}\n"))
        .collect();
    // k0: converts at +1h with 30 (then buys again: counted once, the first).
    // k1: buys for 10, below the `where`; then for 25 at +1d: converts with 25.
    // k2: buys at +3d, after the window. k3: buys exactly at the window's end.
    // k4: a different event. k5..k7: nothing.
    let events = r#"
{"at": "2026-12-01T10:00:00Z", "contact": "k0", "event": "purchase", "amount": 30}
{"at": "2026-12-01T11:00:00Z", "contact": "k0", "event": "purchase", "amount": 99}
{"at": "2026-12-01T12:00:00Z", "contact": "k1", "event": "purchase", "amount": 10}
{"at": "2026-12-02T09:00:00Z", "contact": "k1", "event": "purchase", "amount": "25"}
{"at": "2026-12-04T09:00:00Z", "contact": "k2", "event": "purchase", "amount": 50}
{"at": "2026-12-03T09:00:00Z", "contact": "k3", "event": "purchase", "amount": 40}
{"at": "2026-12-01T10:00:00Z", "contact": "k4", "event": "visit", "amount": 40}
"#;
    let played = play(CONVERSION, &contacts, events, "2026-12-01T09:00:00Z", "P5D");
    let converted: Vec<(String, String, String)> = of_kind(&played.records, RecordKind::Converted)
        .iter()
        .map(|r| {
            (
                r.contact.clone(),
                r.at.to_rfc3339(),
                r.value
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        converted,
        vec![
            ("k0".into(), "2026-12-01T10:00:00+00:00".into(), "30".into()),
            (
                "k1".into(),
                "2026-12-02T09:00:00+00:00".into(),
                "25.0".into()
            ),
            ("k3".into(), "2026-12-03T09:00:00+00:00".into(), "40".into()),
        ]
    );
    // Each conversion names its entry, held out or not: the enrollment had ended by then.
    for r in of_kind(&played.records, RecordKind::Converted) {
        assert_eq!(
            r.enrollment.as_deref(),
            Some(format!("conv:{}:1", r.contact).as_str())
        );
    }
    // Held-out entries were sent nothing; the others were.
    for (c, h) in ids.iter().zip(&held) {
        let sent = played
            .records
            .iter()
            .any(|r| r.contact == *c && r.kind == RecordKind::Sent);
        assert_eq!(sent, !h, "{c}");
    }
}

const WINNER: &str = r#"
id: abw
timezone: UTC
launch: {type: trigger, event: signup}
messages:
  a: {channel: email, subject: A, text: "Start at https://example.org/a"}
  b: {channel: email, subject: B, text: "Start at https://example.org/b"}
steps:
  - id: mail
    send:
      variants:
        - {message: a, percent: 50}
        - {message: b, percent: 50}
      winner: {metric: opened, after: PT6H, min_sends: 100, confidence: 0.95}
    next: done
  - {id: done, end: success}
"#;

#[test]
fn the_winner_is_checked_after_the_first_send_then_daily_and_then_always_sent() {
    // 400 sign-ups at 10:00 on day 1: b's contacts open four times as often as a's.
    let first: Vec<String> = (0..400).map(|i| format!("w{i:03}")).collect();
    let later: Vec<String> = (0..40).map(|i| format!("x{i:03}")).collect();
    let variant = |c: &str| {
        if bucket("abw", "mail", c) < 5000 {
            "a"
        } else {
            "b"
        }
    };
    let contacts: String = first
        .iter()
        .chain(&later)
        .map(|c| format!("{{\"id\": \"{c}\", \"email\": \"{c}@example.org\"}}\n"))
        .collect();
    let mut events = String::new();
    for c in &first {
        events.push_str(&format!(
            "{{\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"{c}\", \"event\": \"signup\"}}\n"
        ));
    }
    // Opens an hour later: every 10th of a's contacts, every 5th of b's... and more of b's.
    for (i, c) in first.iter().enumerate() {
        let opens = match variant(c) {
            "a" => i % 10 == 0,
            _ => i % 5 < 2,
        };
        if opens {
            events.push_str(&format!(
                "{{\"at\": \"2026-12-01T11:00:00Z\", \"contact\": \"{c}\", \"opened\": \"mail\"}}\n"
            ));
        }
    }
    // Sign-ups after the check: they all get the winner.
    for c in &later {
        events.push_str(&format!(
            "{{\"at\": \"2026-12-02T10:00:00Z\", \"contact\": \"{c}\", \"event\": \"signup\"}}\n"
        ));
    }
    let played = play(WINNER, &contacts, &events, "2026-12-01T09:00:00Z", "P3D");
    let winners = of_kind(&played.records, RecordKind::Winner);
    let mut kinds = std::collections::BTreeMap::new();
    for r in &played.records {
        *kinds.entry(format!("{:?}", r.kind)).or_insert(0) += 1;
    }
    assert_eq!(winners.len(), 1, "{kinds:?}");
    let w = winners[0];
    // Checked at exactly `after` past the step's first send (10:00 + 6h).
    assert_eq!(w.at.to_rfc3339(), "2026-12-01T16:00:00+00:00");
    assert_eq!(w.step.as_deref(), Some("mail"));
    assert_eq!(w.message.as_deref(), Some("b"));
    assert!(w.contact.is_empty());
    let line = serde_json::to_value(w).unwrap_or_default();
    assert_eq!(line["contact"], serde_json::Value::Null);
    // Before the winner: each contact its bucket's variant; after it: the winner, assigned.
    for r in of_kind(&played.records, RecordKind::Sent) {
        let want = if r.contact.starts_with('x') {
            "b"
        } else {
            variant(&r.contact)
        };
        assert_eq!(r.message.as_deref(), Some(want), "{}", r.contact);
    }
    let assigned_later = of_kind(&played.records, RecordKind::Assigned)
        .iter()
        .filter(|r| r.contact.starts_with('x'))
        .count();
    assert_eq!(assigned_later, later.len());
    // The journal carries the opens per step (the tally's input).
    assert!(
        of_kind(&played.records, RecordKind::Opened)
            .iter()
            .all(|r| r.step.as_deref() == Some("mail"))
    );
}

#[test]
fn without_enough_sends_the_check_runs_again_every_day_and_finds_no_winner() {
    let yaml = WINNER.replace("min_sends: 100", "min_sends: 1000");
    let contacts: String = (0..50)
        .map(|i| format!("{{\"id\": \"n{i}\", \"email\": \"n{i}@example.org\"}}\n"))
        .collect();
    let events: String = (0..50)
        .map(|i| {
            format!("{{\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"n{i}\", \"event\": \"signup\"}}\n")
        })
        .collect();
    let played = play(&yaml, &contacts, &events, "2026-12-01T09:00:00Z", "P3D");
    assert!(of_kind(&played.records, RecordKind::Winner).is_empty());
}
