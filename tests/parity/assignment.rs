//! The expected outcome of every contact of the assignment parity fixture
//! (`assignment.yaml`), computed from DESIGN §3.1's written formula with `sha2` directly,
//! never through `relance_core::experiment`, and the per-contact comparison of a mode's
//! journal with it. Compiled into the embedded and the AWS test binaries (`#[path]`), so
//! `simulate`, the SQLite runtime (`relance run`, `relance test`) and the AWS functions are
//! held to one independent expectation.
#![allow(dead_code)]

use std::collections::BTreeMap;

use relance_core::Contact;
use relance_core::journal::{Record, RecordKind};
use sha2::{Digest, Sha256};

/// The fixture: holdout 10%, a split 33.33 / 33.33 / 33.34, variants 25 / 25 / 50 on `pb`.
pub const YAML: &str = include_str!("assignment.yaml");

/// The fixture's scenario id, the first part of every hashed key.
pub const SCENARIO: &str = "parity";

/// The fixture's percents, written again in basis points (percent × 100) from the YAML by
/// hand, not read from it: the holdout, the split's paths (their `next`) and `pb`'s variants.
const HOLDOUT: u64 = 1000;
const SPLIT_STEP: &str = "ab";
const PATHS: [(&str, u64); 3] = [("pa", 3333), ("pb", 3333), ("pc", 3334)];
const VARIANT_STEP: &str = "pb";
const VARIANTS: [(&str, u64); 3] = [("b1", 2500), ("b2", 2500), ("b3", 5000)];

/// `u64` big-endian of the first 8 bytes of SHA-256("{scenario}:{step}:{contact}"), mod
/// 10000: DESIGN §3.1, word for word.
pub fn bucket(step: &str, contact: &str) -> u64 {
    let digest = Sha256::digest(format!("{SCENARIO}:{step}:{contact}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 10_000
}

/// The part whose range of basis points holds `bucket`: parts in list order own consecutive
/// ranges.
fn owner(parts: &[(&'static str, u64)], bucket: u64) -> &'static str {
    let mut upper = 0;
    for (name, share) in parts {
        upper += share;
        if bucket < upper {
            return name;
        }
    }
    panic!("the fixture's shares sum to {upper}, not 10000")
}

/// What one contact's journal shows of its assignment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `held_out` records.
    pub held_out: usize,
    /// The `branch` of each `assigned` record of the split step.
    pub paths: Vec<String>,
    /// The `message` of each `assigned` record of the variant step.
    pub variants: Vec<String>,
    /// Each `sent` record: (step, message).
    pub sent: Vec<(String, String)>,
    /// The `end` of each `ended` record.
    pub ends: Vec<String>,
}

/// What the formula says `contact` gets: held out (sent nothing, ended `held_out`), else one
/// path, and on `pb` one variant, each sent once, ended `success`.
pub fn expected(contact: &str) -> Outcome {
    if bucket("holdout", contact) < HOLDOUT {
        return Outcome {
            held_out: 1,
            ends: vec!["held_out".into()],
            ..Outcome::default()
        };
    }
    let path = owner(&PATHS, bucket(SPLIT_STEP, contact));
    let (variants, message) = match path {
        VARIANT_STEP => {
            let v = owner(&VARIANTS, bucket(VARIANT_STEP, contact));
            (vec![v.to_string()], v)
        }
        "pa" => (Vec::new(), "a"),
        _ => (Vec::new(), "c"),
    };
    Outcome {
        held_out: 0,
        paths: vec![path.into()],
        variants,
        sent: vec![(path.into(), message.into())],
        ends: vec!["success".into()],
    }
}

/// `c00000`, `c00001`, ... : the first `n` contact ids.
pub fn contact_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i:05}")).collect()
}

/// Each id as a contact with an email address.
pub fn contacts(ids: &[String]) -> Vec<Contact> {
    ids.iter()
        .map(|id| {
            Contact::from_json(serde_json::json!({"id": id, "email": format!("{id}@example.com")}))
                .unwrap_or_else(|e| panic!("{id}: {e}"))
        })
        .collect()
}

/// Each contact's outcome as its records show it.
pub fn observed(records: &[Record]) -> BTreeMap<String, Outcome> {
    let mut out: BTreeMap<String, Outcome> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.contact.is_empty()) {
        let o = out.entry(r.contact.clone()).or_default();
        let step = r.step.clone().unwrap_or_default();
        match r.kind {
            RecordKind::HeldOut => o.held_out += 1,
            RecordKind::Assigned if step == SPLIT_STEP => {
                o.paths.push(r.branch.clone().unwrap_or_default())
            }
            RecordKind::Assigned => o.variants.push(r.message.clone().unwrap_or_default()),
            RecordKind::Sent => o.sent.push((step, r.message.clone().unwrap_or_default())),
            RecordKind::Ended => o.ends.push(r.end.clone().unwrap_or_default()),
            _ => {}
        }
    }
    out
}

/// Asserts that `mode`'s records give every one of `ids` exactly its expected outcome (and
/// no one else any), then that the held-out, per-path and per-variant shares are within 5
/// standard deviations of their percents (a sanity check of the fixture: the exact
/// comparison is the test). Returns the outcomes counted, for the caller to print.
pub fn check(mode: &str, records: &[Record], ids: &[String]) -> BTreeMap<String, usize> {
    let mut seen = observed(records);
    let mut wrong = Vec::new();
    for id in ids {
        let got = seen.remove(id).unwrap_or_default();
        let want = expected(id);
        if got != want {
            wrong.push(format!("{id}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{mode}: {} of {} contacts differ from the formula, first: {:#?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        seen.is_empty(),
        "{mode}: records for contacts never entered: {:?}",
        seen.keys().take(5).collect::<Vec<_>>()
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let o = expected(id);
        let key = match (o.held_out, o.paths.first(), o.variants.first()) {
            (1, _, _) => "held_out".to_string(),
            (_, Some(p), Some(v)) => format!("{p}/{v}"),
            (_, Some(p), None) => p.clone(),
            _ => "none".to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    let n = ids.len() as f64;
    let held = counts.get("held_out").copied().unwrap_or(0) as f64;
    let within = |name: &str, got: f64, of: f64, p: f64| {
        let sd = (p * (1.0 - p) / of).sqrt();
        assert!(
            (got / of - p).abs() <= 5.0 * sd,
            "{mode}: {name} share {} of {of}, expected about {p}",
            got
        );
    };
    within("held out", held, n, HOLDOUT as f64 / 1e4);
    let placed = n - held;
    let on = |prefix: &str| -> f64 {
        counts
            .iter()
            .filter(|(k, _)| k.as_str() == prefix || k.starts_with(&format!("{prefix}/")))
            .map(|(_, c)| *c as f64)
            .sum()
    };
    for (path, bp) in PATHS {
        within(path, on(path), placed, bp as f64 / 1e4);
    }
    let on_variant_step = on(VARIANT_STEP);
    for (variant, bp) in VARIANTS {
        let got = counts
            .get(&format!("{VARIANT_STEP}/{variant}"))
            .copied()
            .unwrap_or(0) as f64;
        within(variant, got, on_variant_step, bp as f64 / 1e4);
    }
    counts
}

/// Asserts that the sends `mode` handed to its channel (contact, step, message: what the
/// email sender would deliver) are exactly the expected ones for `ids`, once each.
pub fn check_sends(mode: &str, mut sends: Vec<(String, String, String)>, ids: &[String]) {
    let mut want: Vec<(String, String, String)> = ids
        .iter()
        .flat_map(|id| {
            expected(id)
                .sent
                .into_iter()
                .map(move |(step, message)| (id.clone(), step, message))
        })
        .collect();
    sends.sort();
    want.sort();
    if sends != want {
        let missing: Vec<_> = want.iter().filter(|s| !sends.contains(s)).take(5).collect();
        let extra: Vec<_> = sends.iter().filter(|s| !want.contains(s)).take(5).collect();
        panic!(
            "{mode}: {} sends handed over, {} expected; missing {missing:?}, unexpected {extra:?}",
            sends.len(),
            want.len()
        );
    }
}

/// The formula above against Python's, for a few ids: each triple was printed by
/// `python3 -c 'import hashlib; b = lambda s: int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") % 10000; print([(c, b("parity:holdout:" + c), b("parity:ab:" + c), b("parity:pb:" + c)) for c in ["c00000", "c00001", "c00002", "c00003", "c00006", "c00009", "c09999"]])'`.
#[test]
fn the_parity_formula_agrees_with_python_hashlib() {
    let python = [
        ("c00000", 6600, 8267, 5146),
        ("c00001", 280, 2559, 2347),
        ("c00002", 1298, 3570, 5274),
        ("c00003", 7623, 2650, 4957),
        ("c00006", 4150, 6603, 2977),
        ("c00009", 5933, 5291, 2394),
        ("c09999", 421, 7570, 3229),
    ];
    for (c, holdout, ab, pb) in python {
        assert_eq!(
            (bucket("holdout", c), bucket("ab", c), bucket("pb", c)),
            (holdout, ab, pb),
            "{c}"
        );
    }
    // Between them these ids take every outcome: c00000 pc, c00001 and c09999 held out
    // (280 and 421 < 1000), c00002 pb/b3 (3570 in [3333, 6666), 5274 >= 5000), c00003 pa,
    // c00006 pb/b2, c00009 pb/b1.
    let got: Vec<String> = ["c00000", "c00001", "c00002", "c00003", "c00006", "c00009"]
        .iter()
        .map(|c| {
            let o = expected(c);
            match (o.paths.first(), o.variants.first()) {
                (Some(p), Some(v)) => format!("{p}/{v}"),
                (Some(p), None) => p.clone(),
                _ => "held_out".into(),
            }
        })
        .collect();
    assert_eq!(got, ["pc", "held_out", "pb/b3", "pa", "pb/b2", "pb/b1"]);
}
