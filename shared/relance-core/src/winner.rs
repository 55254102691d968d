//! The winner rule of a variant send step (DESIGN §3.1): each variant's tally read from the
//! journal, and the decision — the leader wins when every variant has its `min_sends` and a
//! one-sided pooled two-proportion z-test puts it above each other variant at `confidence`.

use std::collections::{BTreeMap, BTreeSet};

use crate::journal::{Record, RecordKind};
use crate::scenario::{Variant, Winner};

/// The due-slot name (see [`crate::ports::LaunchTime::zone`]) of a step's winner check:
/// scenario-wide due work kept beside the scenario's launches, in every store.
pub const SLOT_PREFIX: &str = "winner#";

/// The setting that holds a step's winner once found (its text: the message id).
pub fn winner_setting(scenario: &str, step: &str) -> String {
    format!("experiment:{scenario}:{step}:winner")
}

/// The setting that holds when a step's winner check was first armed (its first send).
pub fn armed_setting(scenario: &str, step: &str) -> String {
    format!("experiment:{scenario}:{step}:first_send")
}

/// The due-slot name of a step's winner check.
pub fn slot(step: &str) -> String {
    format!("{SLOT_PREFIX}{step}")
}

/// The step a due-slot name checks, when it is a winner check.
pub fn slot_step(zone: &str) -> Option<&str> {
    zone.strip_prefix(SLOT_PREFIX)
}

/// One variant's figures so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The message.
    pub message: String,
    /// Its sends (n_i).
    pub sends: u64,
    /// Distinct contacts sent it who did the metric (s_i).
    pub successes: u64,
}

/// The variants' tallies for `step` from its scenario's journal: sends are the step's `sent`
/// records; a success is a distinct contact sent the variant with an `opened` or `clicked`
/// record of the step, or (metric `converted`) whose entry sent it converted. Records of other
/// steps and messages outside `variants` are ignored.
pub fn tally<'r>(
    step: &str,
    variants: &[Variant],
    metric: &str,
    records: impl IntoIterator<Item = &'r Record>,
) -> Vec<Tally> {
    let mut sends: BTreeMap<&str, u64> = BTreeMap::new();
    // Who was sent which variant, and which entries sent it.
    let mut sent_to: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut sent_by_entry: BTreeMap<&str, &str> = BTreeMap::new();
    let mut engaged: BTreeSet<&str> = BTreeSet::new();
    let mut converted_entries: BTreeSet<&str> = BTreeSet::new();
    let mut converted_contacts: BTreeSet<&str> = BTreeSet::new();
    let engagement = match metric {
        "opened" => Some(RecordKind::Opened),
        "clicked" => Some(RecordKind::Clicked),
        _ => None,
    };
    for r in records {
        match r.kind {
            RecordKind::Sent if r.step.as_deref() == Some(step) => {
                let Some(m) = r.message.as_deref() else {
                    continue;
                };
                *sends.entry(m).or_default() += 1;
                sent_to.entry(m).or_default().insert(&r.contact);
                if let Some(e) = r.enrollment.as_deref() {
                    sent_by_entry.insert(e, m);
                }
            }
            k if Some(k) == engagement && r.step.as_deref() == Some(step) => {
                engaged.insert(&r.contact);
            }
            RecordKind::Converted if metric == "converted" => {
                match r.enrollment.as_deref() {
                    Some(e) => converted_entries.insert(e),
                    None => converted_contacts.insert(&r.contact),
                };
            }
            _ => {}
        }
    }
    variants
        .iter()
        .map(|v| {
            let m = v.message.as_str();
            let contacts = sent_to.get(m);
            let successes = if metric == "converted" {
                // An entry converts once; a conversion without its entry counts by contact.
                let by_entry: BTreeSet<&str> = sent_by_entry
                    .iter()
                    .filter(|(e, sent)| **sent == m && converted_entries.contains(**e))
                    .map(|(e, _)| *e)
                    .collect();
                let by_contact = contacts.map_or(0, |c| {
                    c.iter().filter(|c| converted_contacts.contains(*c)).count()
                });
                (by_entry.len() + by_contact) as u64
            } else {
                contacts.map_or(0, |c| c.iter().filter(|c| engaged.contains(*c)).count()) as u64
            };
            Tally {
                message: v.message.clone(),
                sends: sends.get(m).copied().unwrap_or(0),
                successes: successes.min(sends.get(m).copied().unwrap_or(0)),
            }
        })
        .collect()
}

/// The winner among the tallies, by the rule: `None` until every variant has `min_sends`
/// sends and the leader (highest rate; ties: list order) beats each other variant with a
/// one-sided pooled z ≥ the normal quantile of `confidence`.
pub fn decide(rule: &Winner, tallies: &[Tally]) -> Option<usize> {
    if tallies.len() < 2 || tallies.iter().any(|t| t.sends < rule.min_sends.max(1)) {
        return None;
    }
    let rate = |t: &Tally| t.successes as f64 / t.sends as f64;
    let mut leader = 0;
    for (i, t) in tallies.iter().enumerate() {
        if rate(t) > rate(&tallies[leader]) {
            leader = i;
        }
    }
    let lead = &tallies[leader];
    let beats_all = tallies.iter().enumerate().all(|(j, other)| {
        j == leader
            || crate::stats::beats(
                lead.successes,
                lead.sends,
                other.successes,
                other.sends,
                rule.confidence,
            )
    });
    beats_all.then_some(leader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::IsoDuration;
    use chrono::{DateTime, Utc};

    fn rule(min_sends: u64, confidence: f64) -> Winner {
        Winner {
            metric: "clicked".into(),
            after: IsoDuration::from_seconds(86_400),
            min_sends,
            confidence,
        }
    }

    fn t(message: &str, sends: u64, successes: u64) -> Tally {
        Tally {
            message: message.into(),
            sends,
            successes,
        }
    }

    #[test]
    fn pooled_z_matches_an_independent_computation() {
        // Python: p=(120+90)/2000; (120/1000-90/1000)/math.sqrt(p*(1-p)*(2/1000))
        // = 2.1882658846227234
        let z = crate::stats::pooled_z(120, 1000, 90, 1000).unwrap_or(f64::NAN);
        assert!((z - 2.1882658846227234).abs() < 1e-12, "{z}");
    }

    #[test]
    fn the_leader_wins_only_past_min_sends_and_the_critical_z() {
        // z = 2.188 ≥ 1.6449 (0.95) but < 2.3263 (0.99).
        let tallies = [t("a", 1000, 90), t("b", 1000, 120)];
        assert_eq!(decide(&rule(1000, 0.95), &tallies), Some(1));
        assert_eq!(decide(&rule(1000, 0.99), &tallies), None);
        assert_eq!(decide(&rule(1001, 0.95), &tallies), None);
        // Against each other variant: a close third blocks the win.
        let three = [t("a", 1000, 90), t("b", 1000, 120), t("c", 1000, 118)];
        assert_eq!(decide(&rule(100, 0.95), &three), None);
        // Ties go to list order, and a tie never wins.
        assert_eq!(
            decide(&rule(10, 0.95), &[t("a", 100, 10), t("b", 100, 10)]),
            None
        );
    }

    #[test]
    fn tallies_come_from_sent_and_engagement_records() {
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let sent = |c: &str, m: &str| {
            let mut r = Record::new(at, c, RecordKind::Sent).step("s");
            r.message = Some(m.into());
            r.enrollment = Some(format!("e-{c}"));
            r
        };
        let variants = vec![
            Variant {
                message: "a".into(),
                basis_points: 5000,
            },
            Variant {
                message: "b".into(),
                basis_points: 5000,
            },
        ];
        let mut converted = Record::new(at, "c2", RecordKind::Converted);
        converted.enrollment = Some("e-c2".into());
        let records = vec![
            sent("c1", "a"),
            sent("c2", "a"),
            sent("c3", "b"),
            Record::new(at, "c1", RecordKind::Clicked).step("s"),
            // Twice the same contact: one success.
            Record::new(at, "c1", RecordKind::Clicked).step("s"),
            // Another step's click does not count.
            Record::new(at, "c3", RecordKind::Clicked).step("other"),
            converted,
        ];
        assert_eq!(
            tally("s", &variants, "clicked", &records),
            vec![t("a", 2, 1), t("b", 1, 0)]
        );
        assert_eq!(
            tally("s", &variants, "converted", &records),
            vec![t("a", 2, 1), t("b", 1, 0)]
        );
        assert_eq!(
            tally("s", &variants, "opened", &records),
            vec![t("a", 2, 0), t("b", 1, 0)]
        );
    }
}
