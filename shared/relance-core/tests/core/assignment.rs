//! Assignment against the written formula (DESIGN §3.1), property-tested: for arbitrary
//! contact ids and arbitrary valid share lists (2 to 10 parts, percents with two decimals
//! summing to 100), the split path and the message variant the engine picks on entry are the
//! ones SHA-256 gives when computed here with `sha2`, apart from `relance_core::experiment`.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use relance_core::engine::{Entry, EntryRequest};
use relance_core::{Contact, Engine, Format, History, RecordKind, validate};
use sha2::{Digest, Sha256};

/// `u64` big-endian of the first 8 bytes of SHA-256("{scenario}:{step}:{contact}"), mod 10000.
fn by_formula(scenario: &str, step: &str, contact: &str) -> u32 {
    let digest = Sha256::digest(format!("{scenario}:{step}:{contact}").as_bytes());
    let n = digest[..8]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    // Below 10,000.
    (n % 10_000) as u32
}

/// The index of the part, in list order over consecutive ranges of basis points, that holds
/// `bucket`.
fn owner(shares: &[u32], bucket: u32) -> usize {
    let mut upper = 0;
    shares
        .iter()
        .position(|s| {
            upper += s;
            bucket < upper
        })
        .unwrap_or(usize::MAX)
}

/// Basis points as a percent with two decimals (`1` → `0.01`, `3333` → `33.33`).
fn percent(bp: u32) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// 2 to 10 shares in basis points, each above 0, summing to 10,000: the gaps between up to 9
/// distinct cut points.
fn shares() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::btree_set(1u32..10_000, 1..=9).prop_map(|cuts| {
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(10_000);
        bounds.windows(2).map(|w| w[1] - w[0]).collect()
    })
}

/// Any contact id the contact model takes: printable, not blank.
fn contact_id() -> impl Strategy<Value = String> {
    "\\PC{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

/// The records of `contact` entering the scenario written in `yaml` (which must validate).
fn entered(yaml: &str, contact: &str) -> Vec<relance_core::Record> {
    let (scenario, _) =
        validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}\n{yaml}"));
    let engine = Engine::new(scenario);
    let contact = Contact::from_json(serde_json::json!({"id": contact, "email": "a@example.com"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let now: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
        .single()
        .unwrap_or_default();
    match engine.enter(EntryRequest {
        contact: &contact,
        history: &History::default(),
        running: false,
        last_entered_at: None,
        enrollment_id: "e1",
        now,
    }) {
        Entry::Entered(t) => t.records().cloned().collect(),
        Entry::Skipped { reason, .. } => panic!("skipped: {reason:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_splits_as_the_formula_says(
        scenario in "[a-z][a-z0-9]{0,15}",
        step in "[a-z]{1,8}",
        shares in shares(),
        contacts in proptest::collection::vec(contact_id(), 1..8),
    ) {
        let mut yaml = format!("id: \"{scenario}\"\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: \"{step}\"\n    split:\n");
        for (i, bp) in shares.iter().enumerate() {
            yaml += &format!("      - {{percent: {}, next: path-{i}}}\n", percent(*bp));
        }
        for i in 0..shares.len() {
            yaml += &format!("  - {{id: path-{i}, end: success}}\n");
        }
        for contact in &contacts {
            let want = format!("path-{}", owner(&shares, by_formula(&scenario, &step, contact)));
            let got: Vec<_> = entered(&yaml, contact)
                .into_iter()
                .filter(|r| r.kind == RecordKind::Assigned)
                .map(|r| r.branch.unwrap_or_default())
                .collect();
            prop_assert_eq!(got, vec![want], "{:?} with shares {:?}", contact, shares);
        }
    }

    #[test]
    fn the_engine_picks_variants_as_the_formula_says(
        scenario in "[a-z][a-z0-9]{0,15}",
        step in "[a-z]{1,8}",
        shares in shares(),
        contacts in proptest::collection::vec(contact_id(), 1..8),
    ) {
        let mut yaml = format!("id: \"{scenario}\"\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n");
        for i in 0..shares.len() {
            yaml += &format!("  m{i}: {{channel: email, subject: S{i}, text: t}}\n");
        }
        yaml += &format!("steps:\n  - id: \"{step}\"\n    send:\n      variants:\n");
        for (i, bp) in shares.iter().enumerate() {
            yaml += &format!("        - {{message: m{i}, percent: {}}}\n", percent(*bp));
        }
        yaml += "    next: end-1\n  - {id: end-1, end: success}\n";
        for contact in &contacts {
            let want = format!("m{}", owner(&shares, by_formula(&scenario, &step, contact)));
            let records = entered(&yaml, contact);
            let pick = |kind: RecordKind| -> Vec<String> {
                records
                    .iter()
                    .filter(|r| r.kind == kind)
                    .map(|r| r.message.clone().unwrap_or_default())
                    .collect()
            };
            prop_assert_eq!(pick(RecordKind::Assigned), vec![want.clone()], "{:?} with shares {:?}", contact, shares);
            prop_assert_eq!(pick(RecordKind::Sent), vec![want], "{:?} with shares {:?}", contact, shares);
        }
    }
}
