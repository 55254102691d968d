//! The workspace policy: rules every scenario obeys on top of its own, the way Pinpoint and
//! Braze users expect them — quiet hours read in each contact's zone, and a frequency cap
//! counted across all scenarios. Messages of an exempt communication type (transactional by
//! default) are never held or capped by the policy.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::IsoDuration;
use crate::problem::Problem;
use crate::scenario::{Format, FrequencyCap, parse_document, quiet_hours, typed};
use crate::schedule::QuietHours;

/// How long each kind of stored history is kept (`retention:` in the policy). A kind left
/// out is kept forever. The consent log is never purged: it is the proof of consent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Activity events (what conditions and inactivity triggers read).
    #[serde(default)]
    pub activity: Option<IsoDuration>,
    /// Engagement records (opened, clicked, ...).
    #[serde(default)]
    pub engagement: Option<IsoDuration>,
    /// Journal records (counts and paths shrink accordingly).
    #[serde(default)]
    pub journal: Option<IsoDuration>,
    /// Outbox rows already delivered.
    #[serde(default)]
    pub outbox: Option<IsoDuration>,
    /// Dead letters.
    #[serde(default)]
    pub dead_letters: Option<IsoDuration>,
}

/// A kind of stored history that retention purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retained {
    /// Activity events.
    Activity,
    /// Engagement records.
    Engagement,
    /// Journal records.
    Journal,
    /// Delivered outbox rows.
    Outbox,
    /// Dead letters.
    DeadLetters,
}

impl Retained {
    /// Every kind.
    pub const ALL: [Retained; 5] = [
        Retained::Activity,
        Retained::Engagement,
        Retained::Journal,
        Retained::Outbox,
        Retained::DeadLetters,
    ];

    /// The policy key.
    pub fn as_str(self) -> &'static str {
        match self {
            Retained::Activity => "activity",
            Retained::Engagement => "engagement",
            Retained::Journal => "journal",
            Retained::Outbox => "outbox",
            Retained::DeadLetters => "dead_letters",
        }
    }
}

impl Retention {
    /// How long `kind` is kept, when it is not kept forever.
    pub fn period(&self, kind: Retained) -> Option<&IsoDuration> {
        match kind {
            Retained::Activity => self.activity.as_ref(),
            Retained::Engagement => self.engagement.as_ref(),
            Retained::Journal => self.journal.as_ref(),
            Retained::Outbox => self.outbox.as_ref(),
            Retained::DeadLetters => self.dead_letters.as_ref(),
        }
        .filter(|d| !d.is_zero())
    }

    /// The instant before which `kind` is purged at `now`, when it is purged.
    pub fn cutoff(&self, kind: Retained, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.period(kind).map(|d| d.sub_from(now, Tz::UTC))
    }

    /// True when nothing is purged.
    pub fn is_empty(&self) -> bool {
        Retained::ALL.iter().all(|k| self.period(*k).is_none())
    }
}

/// Workspace-wide sending rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Held unless the scenario sets its own quiet hours.
    pub quiet_hours: Option<QuietHours>,
    /// At most this many sends to one contact, every scenario counted.
    pub frequency_cap: Option<FrequencyCap>,
    /// Zone for contacts without one (quiet hours and the cap's calendar window).
    pub timezone: Tz,
    /// Communication types the policy never holds or caps.
    pub exempt: Vec<String>,
    /// How long history is kept.
    pub retention: Retention,
    /// The global control group: no scenario sends to it but exempt (transactional) messages.
    pub holdout: Option<GlobalHoldout>,
}

/// `holdout: {percent, seed}`: the workspace's global control group (DESIGN §3.1). A contact
/// is in it when the bucket of `SHA-256("holdout:{seed}:{contact}")` falls below percent × 100;
/// changing the seed draws a new group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalHoldout {
    /// The percent × 100.
    pub basis_points: u32,
    /// What the group is drawn with.
    pub seed: String,
}

impl GlobalHoldout {
    /// True when the contact belongs to the global control group.
    pub fn holds(&self, contact: &str) -> bool {
        u32::from(crate::experiment::global_bucket(&self.seed, contact)) < self.basis_points
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            quiet_hours: None,
            frequency_cap: None,
            timezone: Tz::UTC,
            exempt: vec!["transactional".to_string()],
            retention: Retention::default(),
            holdout: None,
        }
    }
}

impl Policy {
    /// Reads a policy file (YAML or JSON): `quiet_hours: {from, to}`, `frequency_cap: {max,
    /// per}`, `timezone`, `exempt: [types]`. Every problem is reported with its path.
    pub fn parse(text: &str, format: Format) -> Result<Policy, Vec<Problem>> {
        let doc = parse_document(text, format).map_err(|p| vec![p])?;
        Policy::from_value(&doc)
    }

    /// Like [`Policy::parse`], from an already parsed document.
    pub fn from_value(doc: &Value) -> Result<Policy, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut policy = Policy::default();
        let Some(top) = doc.as_object() else {
            if doc.is_null() {
                return Ok(policy);
            }
            return Err(vec![Problem::error("", "a policy is a mapping")]);
        };
        for key in top.keys() {
            if ![
                "quiet_hours",
                "frequency_cap",
                "timezone",
                "exempt",
                "retention",
                "holdout",
            ]
            .contains(&key.as_str())
            {
                problems.push(Problem::error(
                    key.as_str(),
                    format!("unknown key \"{key}\" (expected quiet_hours, frequency_cap, timezone, exempt, retention or holdout)"),
                ));
            }
        }
        policy.quiet_hours = top
            .get("quiet_hours")
            .filter(|v| !v.is_null())
            .and_then(|v| quiet_hours(v, &mut problems));
        policy.frequency_cap = top
            .get("frequency_cap")
            .filter(|v| !v.is_null())
            .and_then(|v| typed::<FrequencyCap>("frequency_cap", v, &mut problems));
        if let Some(cap) = &policy.frequency_cap
            && cap.max == 0
        {
            problems.push(Problem::error("frequency_cap.max", "must be at least 1"));
        }
        if let Some(zone) = top
            .get("timezone")
            .and_then(|v| typed::<String>("timezone", v, &mut problems))
        {
            match zone.parse::<Tz>() {
                Ok(tz) => policy.timezone = tz,
                Err(e) => problems.push(Problem::error("timezone", e.to_string())),
            }
        }
        if let Some(exempt) = top
            .get("exempt")
            .and_then(|v| typed::<Vec<String>>("exempt", v, &mut problems))
        {
            policy.exempt = exempt;
        }
        if let Some(retention) = top
            .get("retention")
            .filter(|v| !v.is_null())
            .and_then(|v| typed::<Retention>("retention", v, &mut problems))
        {
            for kind in Retained::ALL {
                if let Some(d) = retention.period(kind)
                    && d.approx_seconds() < 86_400
                {
                    problems.push(Problem::error(
                        format!("retention.{}", kind.as_str()),
                        format!(
                            "{d} is shorter than a day: history would vanish before anyone reads it"
                        ),
                    ));
                }
            }
            policy.retention = retention;
        }
        if let Some(v) = top.get("holdout").filter(|v| !v.is_null()) {
            policy.holdout = global_holdout(v, &mut problems);
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// True when the policy holds or caps nothing.
    pub fn is_empty(&self) -> bool {
        self.quiet_hours.is_none() && self.frequency_cap.is_none()
    }

    /// True when messages of this communication type escape the policy.
    pub fn exempts(&self, communication_type: &str) -> bool {
        self.exempt.iter().any(|t| t == communication_type)
    }
}

/// Reads `holdout: {percent, seed}`: a percent above 0 and below 100 with at most two
/// decimals, and a non-empty seed (a string or a number).
fn global_holdout(v: &Value, problems: &mut Vec<Problem>) -> Option<GlobalHoldout> {
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            "holdout",
            "the global control group is a mapping such as {percent: 5, seed: \"2026\"}",
        ));
        return None;
    };
    for key in map.keys() {
        if key != "percent" && key != "seed" {
            problems.push(Problem::error(
                format!("holdout.{key}"),
                format!("unknown key \"{key}\" (expected percent and seed)"),
            ));
        }
    }
    let basis_points = match map.get("percent") {
        None => {
            problems.push(Problem::error(
                "holdout.percent",
                "missing: the global control group needs \"percent\"",
            ));
            None
        }
        Some(p) => match crate::experiment::basis_points(p) {
            Ok(bp) if bp > 0 && bp < 10_000 => Some(bp),
            Ok(bp) => {
                problems.push(Problem::error(
                    "holdout.percent",
                    format!(
                        "{} is not above 0 and below 100",
                        crate::experiment::percent_text(bp)
                    ),
                ));
                None
            }
            Err(e) => {
                problems.push(Problem::error("holdout.percent", e));
                None
            }
        },
    };
    let seed = match map.get("seed") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            problems.push(Problem::error(
                "holdout.seed",
                "must be a non-empty string (or a number), such as \"2026\"",
            ));
            None
        }
        None => {
            problems.push(Problem::error(
                "holdout.seed",
                "missing: the global control group needs a \"seed\" (changing it draws a new group)",
            ));
            None
        }
    };
    Some(GlobalHoldout {
        basis_points: basis_points?,
        seed: seed?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key_and_defaults_the_exemption() {
        let p = Policy::parse(
            "quiet_hours: {from: \"21:00\", to: \"08:00\"}\nfrequency_cap: {max: 3, per: P7D}\ntimezone: Europe/Paris\n",
            Format::Yaml,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(p.quiet_hours.is_some());
        assert_eq!(p.frequency_cap.as_ref().map(|c| c.max), Some(3));
        assert_eq!(p.timezone, chrono_tz::Europe::Paris);
        assert!(p.exempts("transactional"));
        assert!(!p.exempts("newsletter"));
        assert!(Policy::parse("", Format::Yaml).is_ok_and(|p| p.is_empty()));
    }

    #[test]
    fn problems_name_their_path() {
        let e = Policy::parse(
            "quiet_hours: {from: \"25:00\", to: \"08:00\"}\nfrequency_cap: {max: 0, per: P1D}\ntimezone: Mars/Base\nnoise: 1\n",
            Format::Yaml,
        )
        .err()
        .unwrap_or_default();
        let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"noise"), "{e:?}");
        assert!(paths.iter().any(|p| p.starts_with("quiet_hours")), "{e:?}");
        assert!(paths.contains(&"frequency_cap.max"), "{e:?}");
        assert!(paths.contains(&"timezone"), "{e:?}");
    }

    #[test]
    fn global_holdout_reads_and_checks() {
        let p = Policy::parse("holdout: {percent: 12.5, seed: \"2026\"}\n", Format::Yaml)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let h = p.holdout.clone().unwrap_or_else(|| panic!("no holdout"));
        assert_eq!(h.basis_points, 1250);
        assert_eq!(h.seed, "2026");
        // About 12.5% of 10,000 contacts, by the formula of DESIGN §3.1.
        let held = (0..10_000).filter(|i| h.holds(&format!("c{i}"))).count();
        assert!((1100..1400).contains(&held), "{held}");
        for (text, path) in [
            ("holdout: {percent: 0, seed: a}", "holdout.percent"),
            ("holdout: {percent: 10.123, seed: a}", "holdout.percent"),
            ("holdout: {percent: 10}", "holdout.seed"),
            ("holdout: {percent: 10, seed: \"\"}", "holdout.seed"),
            ("holdout: {percent: 10, seed: a, size: 3}", "holdout.size"),
            ("holdout: 10", "holdout"),
        ] {
            let e = Policy::parse(text, Format::Yaml).err().unwrap_or_default();
            assert!(e.iter().any(|p| p.path == path), "{text}: {e:?}");
        }
    }

    #[test]
    fn retention_reads_its_kinds_and_refuses_nonsense() {
        let p = Policy::parse(
            "retention: {activity: P400D, journal: P2Y, outbox: P30D}\n",
            Format::Yaml,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let now: DateTime<Utc> = "2026-12-02T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.retention
                .cutoff(Retained::Outbox, now)
                .map(|t| t.to_rfc3339()),
            Some("2026-11-02T00:00:00+00:00".to_string())
        );
        assert_eq!(p.retention.cutoff(Retained::Engagement, now), None);
        assert!(!p.retention.is_empty());
        let e = Policy::parse("retention: {activity: PT1H, forever: P1D}\n", Format::Yaml)
            .err()
            .unwrap_or_default();
        assert!(e.iter().any(|p| p.path.starts_with("retention")), "{e:?}");
    }
}
