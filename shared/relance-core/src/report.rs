//! The experiment report of a scenario (DESIGN §3.1), computed from its journal records alone:
//! per step and per split path or message variant, the sends, the engagement, the entries
//! that converted with their rate, 95% Wilson interval and revenue; against the holdout, the
//! lift with its p-value. `relance report`, `GET /v1/scenarios/{id}/report` and
//! `simulate --journal` all print this.
//!
//! # Definitions
//! - An **entry** is an `entered` record; a **held-out** entry also has a `held_out` record,
//!   the others are **treated**. A record belongs to the entry its `enrollment` names; a
//!   record without one (a simulate file, engagement after the enrollment ended) belongs to
//!   its contact's latest entry at or before the record's instant.
//! - An entry **converted** when it has a `converted` record (the first counts, with its
//!   `value` as revenue). The conversion rate of a group of entries is converted / entries,
//!   with its 95% Wilson score interval; revenue is the sum of the converted entries' values.
//! - Per **step**: `entered` counts visits (records marked as a step's arrival, as `relance
//!   journal` counts them); `sent` counts `sent` records; `delivered`, `opened`, `clicked`
//!   count distinct contacts with that engagement record for the step; the conversion
//!   figures are over the distinct entries that reached the step (a record of the step other
//!   than engagement).
//! - Per **split path**: the entries assigned the path (`assigned` with `branch`); `sent`
//!   counts their sends after the assignment; `delivered`, `opened`, `clicked` count distinct
//!   contacts engaging with one of the steps those sends were made at.
//! - Per **message variant**: the entries assigned the variant (`assigned` with `message`,
//!   or a `sent` record of the message at a step with variants); `sent` counts the variant's
//!   `sent` records; engagement counts distinct contacts among those entries engaging with
//!   the step; `winner` is true for the message a `winner` record names for the step.
//! - **Lift** (when the scenario has a holdout, or held-out entries exist): the treated rate
//!   minus the held-out rate (absolute) and that difference over the held-out rate
//!   (relative), with the two-sided pooled two-proportion z-test.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::journal::{Record, RecordKind};
use crate::scenario::{Scenario, StepKind};
use crate::stats::{self, Interval};

/// The report of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario id.
    pub scenario: String,
    /// Every entry, held out or not.
    pub total: Conversions,
    /// Treated against held-out entries; `None` without a holdout.
    pub holdout: Option<HoldoutComparison>,
    /// Treated entries against the entries of the workspace's global control group (the
    /// policy's `holdout: {percent, seed}`), when the workspace has one: the program's lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_holdout: Option<HoldoutComparison>,
    /// Per step, in the scenario's order (then steps only older versions had).
    pub steps: Vec<StepReport>,
}

/// Conversions among a group of entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversions {
    /// The entries of the group (the rate's denominator).
    pub entries: u64,
    /// Those that converted.
    pub converted: u64,
    /// converted / entries; `None` without entries.
    pub rate: Option<f64>,
    /// The rate's 95% Wilson score interval; `None` without entries.
    pub interval: Option<Interval>,
    /// The sum of the converted entries' values.
    pub revenue: f64,
}

/// One step's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step id.
    pub step: String,
    /// Visits of the step.
    pub entered: u64,
    /// Messages sent at the step.
    pub sent: u64,
    /// Distinct contacts a send of the step was delivered to.
    pub delivered: u64,
    /// Distinct contacts who opened a send of the step.
    pub opened: u64,
    /// Distinct contacts who clicked a send of the step.
    pub clicked: u64,
    /// Among the distinct entries that reached the step.
    #[serde(flatten)]
    pub conversions: Conversions,
    /// For a split: one line per path, in the scenario's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathReport>,
    /// For a send with variants: one line per variant, in the scenario's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantReport>,
}

/// One split path's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// The path's `next`.
    pub path: String,
    /// Sends to its entries after the assignment.
    pub sent: u64,
    /// Distinct contacts of the path a send after the assignment was delivered to.
    pub delivered: u64,
    /// Distinct contacts of the path who opened one of those sends.
    pub opened: u64,
    /// Distinct contacts of the path who clicked one of those sends.
    pub clicked: u64,
    /// Among the entries assigned the path.
    #[serde(flatten)]
    pub conversions: Conversions,
}

/// One message variant's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    /// The variant's message id.
    pub message: String,
    /// Its sends at the step.
    pub sent: u64,
    /// Distinct contacts sent the variant that it was delivered to.
    pub delivered: u64,
    /// Distinct contacts sent the variant who opened it.
    pub opened: u64,
    /// Distinct contacts sent the variant who clicked it.
    pub clicked: u64,
    /// Among the entries assigned the variant.
    #[serde(flatten)]
    pub conversions: Conversions,
    /// True when a `winner` record names it for the step.
    pub winner: bool,
}

/// Treated entries against held-out ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutComparison {
    /// The entries that went through the scenario.
    pub treated: Conversions,
    /// The entries held out (sent nothing).
    pub held_out: Conversions,
    /// What the scenario changed.
    pub lift: Lift,
}

/// The treated rate against the held-out rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lift {
    /// Treated rate − held-out rate (a proportion: 0.02 is 2 percentage points); `None`
    /// when a group has no entries.
    pub absolute: Option<f64>,
    /// The absolute lift over the held-out rate (0.5 is +50%); `None` also when the
    /// held-out rate is 0.
    pub relative: Option<f64>,
    /// The pooled two-proportion z statistic, treated against held out.
    pub z: Option<f64>,
    /// Its two-sided p-value: how often a difference at least this large would show if the
    /// scenario changed nothing.
    pub p_value: Option<f64>,
}

impl Report {
    /// The report of `scenario` from its journal records, in any order (they are taken in
    /// time order, records of the same instant in the order given).
    pub fn from_records<'a>(
        scenario: &Scenario,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Report {
        Report::from_records_with(scenario, records, None)
    }

    /// [`Report::from_records`] with the workspace's global control group compared too.
    pub fn from_records_with<'a>(
        scenario: &Scenario,
        records: impl IntoIterator<Item = &'a Record>,
        global: Option<&crate::policy::GlobalHoldout>,
    ) -> Report {
        let mut records: Vec<&Record> = records.into_iter().collect();
        records.sort_by_key(|r| r.at);
        let mut builder = ReportBuilder::default();
        for r in records {
            builder.add(r);
        }
        builder.finish_with(scenario, global)
    }
}

/// A report built as records arrive, in time order (records naming their enrollment may come
/// in any order): what `simulate --journal` keeps instead of every record.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    /// Order of arrival: tells the sends after an assignment within one entry.
    seq: u64,
    entries: Vec<Entry>,
    by_enrollment: HashMap<String, usize>,
    /// Each contact's entries with their instants, in arrival order.
    by_contact: HashMap<String, Vec<(DateTime<Utc>, usize)>>,
    steps: Steps,
    tallies: Vec<StepTally>,
    /// The winner each variant step found (the first `winner` record of the step).
    winners: HashMap<usize, String>,
}

/// Step ids, interned in the order first seen.
#[derive(Debug, Default)]
struct Steps {
    ids: Vec<String>,
    index: HashMap<String, usize>,
}

impl Steps {
    fn intern(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), self.ids.len() - 1);
        self.ids.len() - 1
    }
}

/// Record-level counts of one step.
#[derive(Debug, Default)]
struct StepTally {
    entered: u64,
    sent: u64,
    /// Sends by message (the variants' `sent`).
    sent_by_message: BTreeMap<String, u64>,
    /// Distinct contacts per engagement kind (delivered, opened, clicked).
    engaged: [HashSet<String>; 3],
}

/// What the report keeps of one entry.
#[derive(Debug, Default)]
struct Entry {
    contact: String,
    /// An `entered` record was seen (records naming an enrollment may come before it).
    entered: bool,
    held_out: bool,
    converted: bool,
    value: Option<f64>,
    reached: BTreeSet<usize>,
    /// (arrival order, step, message).
    sends: Vec<(u64, usize, Option<String>)>,
    /// Split assignments: (arrival order, step, path).
    paths: Vec<(u64, usize, String)>,
    /// Variant assignments: (step, message).
    variants: Vec<(usize, String)>,
    /// (step, engagement kind index) once each.
    engaged: BTreeSet<(usize, usize)>,
}

/// The engagement kinds a report counts, by their index in [`StepTally::engaged`].
fn engagement_index(kind: RecordKind) -> Option<usize> {
    match kind {
        RecordKind::Delivered => Some(0),
        RecordKind::Opened => Some(1),
        RecordKind::Clicked => Some(2),
        _ => None,
    }
}

impl ReportBuilder {
    /// Takes one record into account.
    pub fn add(&mut self, r: &Record) {
        self.seq += 1;
        let step = r.step.as_deref().map(|s| self.steps.intern(s));
        if let Some(s) = step {
            if self.tallies.len() < self.steps.ids.len() {
                self.tallies
                    .resize_with(self.steps.ids.len(), StepTally::default);
            }
            let t = &mut self.tallies[s];
            t.entered += u64::from(r.arrival);
            if r.kind == RecordKind::Sent {
                t.sent += 1;
                if let Some(m) = &r.message {
                    *t.sent_by_message.entry(m.clone()).or_default() += 1;
                }
            }
            if let Some(k) = engagement_index(r.kind)
                && !r.contact.is_empty()
            {
                t.engaged[k].insert(r.contact.clone());
            }
        }
        if r.kind == RecordKind::Winner {
            if let (Some(s), Some(m)) = (step, &r.message) {
                self.winners.entry(s).or_insert_with(|| m.clone());
            }
            return;
        }
        if r.contact.is_empty() {
            return;
        }
        let Some(e) = self.entry_of(r) else {
            return;
        };
        let seq = self.seq;
        let entry = &mut self.entries[e];
        // Engagement marks no visit: joined on the contact, a late opening of an earlier
        // entry's send would otherwise count the latest entry as reaching the step.
        if let Some(s) = step
            && !r.kind.is_engagement()
        {
            entry.reached.insert(s);
        }
        match (r.kind, step) {
            (RecordKind::HeldOut, _) => entry.held_out = true,
            (RecordKind::Converted, _) if !entry.converted => {
                entry.converted = true;
                entry.value = r.value.as_ref().and_then(serde_json::Number::as_f64);
            }
            (RecordKind::Sent, Some(s)) => entry.sends.push((seq, s, r.message.clone())),
            (RecordKind::Assigned, Some(s)) => {
                if let Some(path) = &r.branch {
                    entry.paths.push((seq, s, path.clone()));
                } else if let Some(m) = &r.message {
                    entry.variants.push((s, m.clone()));
                }
            }
            (kind, Some(s)) => {
                if let Some(k) = engagement_index(kind) {
                    entry.engaged.insert((s, k));
                }
            }
            _ => {}
        }
    }

    /// The entry a record belongs to: the one its enrollment names (met first here if its
    /// `entered` record comes later), else its contact's latest entry at or before it; an
    /// `entered` record without an enrollment starts a new one.
    fn entry_of(&mut self, r: &Record) -> Option<usize> {
        let entered = r.kind == RecordKind::Entered;
        let index = match &r.enrollment {
            Some(id) => match self.by_enrollment.get(id) {
                Some(&e) => e,
                None => {
                    self.entries.push(Entry::default());
                    let e = self.entries.len() - 1;
                    self.by_enrollment.insert(id.clone(), e);
                    e
                }
            },
            None if entered => {
                self.entries.push(Entry::default());
                self.entries.len() - 1
            }
            None => {
                return self
                    .by_contact
                    .get(&r.contact)?
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= r.at)
                    .map(|(_, e)| *e);
            }
        };
        let entry = &mut self.entries[index];
        if entered && !entry.entered {
            entry.entered = true;
            entry.contact = r.contact.clone();
            self.by_contact
                .entry(r.contact.clone())
                .or_default()
                .push((r.at, index));
        }
        Some(index)
    }

    /// The report, with `scenario` giving the steps' order, the split paths, the variants and
    /// whether it has a holdout.
    pub fn finish(self, scenario: &Scenario) -> Report {
        self.finish_with(scenario, None)
    }

    /// [`ReportBuilder::finish`], comparing too the treated entries with those of the
    /// workspace's global control group (membership by its formula, DESIGN §3.1). Entries the
    /// scenario held out are in neither group of that comparison.
    pub fn finish_with(
        mut self,
        scenario: &Scenario,
        global: Option<&crate::policy::GlobalHoldout>,
    ) -> Report {
        // The scenario's steps first, in its order; then those only the records name.
        let mut order: Vec<usize> = scenario
            .steps
            .iter()
            .map(|s| self.steps.intern(&s.id))
            .collect();
        let known: HashSet<usize> = order.iter().copied().collect();
        order.extend((0..self.steps.ids.len()).filter(|i| !known.contains(i)));
        self.tallies
            .resize_with(self.steps.ids.len(), StepTally::default);

        // The paths and variants the scenario declares, in its order.
        let mut paths: HashMap<usize, Vec<String>> = HashMap::new();
        let mut variants: HashMap<usize, Vec<String>> = HashMap::new();
        for step in &scenario.steps {
            let s = self.steps.intern(&step.id);
            match &step.kind {
                StepKind::Split { paths: p } => {
                    paths.insert(s, p.iter().map(|p| p.next.clone()).collect());
                }
                StepKind::Send { variants: v, .. } if !v.is_empty() => {
                    variants.insert(s, v.iter().map(|v| v.message.clone()).collect());
                }
                _ => {}
            }
        }
        // Then those only the records name (an older version's).
        for e in self.entries.iter().filter(|e| e.entered) {
            for (_, s, p) in &e.paths {
                push_new(paths.entry(*s).or_default(), p);
            }
            for (s, m) in &e.variants {
                push_new(variants.entry(*s).or_default(), m);
            }
        }

        let mut total = Group::default();
        let (mut treated, mut held_out) = (Group::default(), Group::default());
        let (mut program, mut control) = (Group::default(), Group::default());
        let mut by_step: HashMap<usize, Group> = HashMap::new();
        let mut by_path: HashMap<(usize, &str), Segment> = HashMap::new();
        let mut by_variant: HashMap<(usize, &str), Segment> = HashMap::new();
        for e in self.entries.iter().filter(|e| e.entered) {
            total.add(e);
            let in_control = global.is_some_and(|g| g.holds(&e.contact));
            if in_control {
                control.add(e);
            }
            if e.held_out {
                held_out.add(e);
            } else {
                treated.add(e);
                if !in_control {
                    program.add(e);
                }
            }
            for s in &e.reached {
                by_step.entry(*s).or_default().add(e);
            }
            // A split path: the entry's first assignment at each split step.
            let mut seen = HashSet::new();
            for (seq, s, path) in &e.paths {
                if !seen.insert(*s) {
                    continue;
                }
                let after: Vec<&(u64, usize, Option<String>)> =
                    e.sends.iter().filter(|(q, ..)| q > seq).collect();
                let sent_steps: HashSet<usize> = after.iter().map(|(_, s, _)| *s).collect();
                let segment = by_path.entry((*s, path.as_str())).or_default();
                segment.group.add(e);
                segment.sent += after.len() as u64;
                for (step, k) in &e.engaged {
                    if sent_steps.contains(step) {
                        segment.engaged[*k].insert(e.contact.as_str());
                    }
                }
            }
            // A variant: assigned, or sent at a step with variants.
            let mut members: BTreeSet<(usize, &str)> =
                e.variants.iter().map(|(s, m)| (*s, m.as_str())).collect();
            members.extend(e.sends.iter().filter_map(|(_, s, m)| {
                let m = m.as_deref()?;
                variants.contains_key(s).then_some((*s, m))
            }));
            for (s, m) in members {
                let segment = by_variant.entry((s, m)).or_default();
                segment.group.add(e);
                for (step, k) in &e.engaged {
                    if *step == s {
                        segment.engaged[*k].insert(e.contact.as_str());
                    }
                }
            }
        }
        // Variants only sends name (no entry assigned them) still get their line.
        for (s, t) in self.tallies.iter().enumerate() {
            if let Some(list) = variants.get_mut(&s) {
                for m in t.sent_by_message.keys() {
                    push_new(list, m);
                }
            }
        }

        let steps = order
            .iter()
            .map(|&s| {
                let t = &self.tallies[s];
                let path_lines = paths.get(&s).map_or_else(Vec::new, |list| {
                    list.iter()
                        .map(|p| {
                            let seg = by_path.remove(&(s, p.as_str())).unwrap_or_default();
                            PathReport {
                                path: p.clone(),
                                sent: seg.sent,
                                delivered: seg.engaged[0].len() as u64,
                                opened: seg.engaged[1].len() as u64,
                                clicked: seg.engaged[2].len() as u64,
                                conversions: seg.group.conversions(),
                            }
                        })
                        .collect()
                });
                let variant_lines = variants.get(&s).map_or_else(Vec::new, |list| {
                    list.iter()
                        .map(|m| {
                            let seg = by_variant.remove(&(s, m.as_str())).unwrap_or_default();
                            VariantReport {
                                message: m.clone(),
                                sent: t.sent_by_message.get(m).copied().unwrap_or(0),
                                delivered: seg.engaged[0].len() as u64,
                                opened: seg.engaged[1].len() as u64,
                                clicked: seg.engaged[2].len() as u64,
                                conversions: seg.group.conversions(),
                                winner: self.winners.get(&s) == Some(m),
                            }
                        })
                        .collect()
                });
                StepReport {
                    step: self.steps.ids[s].clone(),
                    entered: t.entered,
                    sent: t.sent,
                    delivered: t.engaged[0].len() as u64,
                    opened: t.engaged[1].len() as u64,
                    clicked: t.engaged[2].len() as u64,
                    conversions: by_step.remove(&s).unwrap_or_default().conversions(),
                    paths: path_lines,
                    variants: variant_lines,
                }
            })
            .collect();

        let holdout = (scenario.holdout.is_some() || held_out.entries > 0).then(|| {
            let (treated, held_out) = (treated.conversions(), held_out.conversions());
            HoldoutComparison {
                lift: lift(&treated, &held_out),
                treated,
                held_out,
            }
        });
        let global_holdout = global.map(|_| {
            let (treated, held_out) = (program.conversions(), control.conversions());
            HoldoutComparison {
                lift: lift(&treated, &held_out),
                treated,
                held_out,
            }
        });
        Report {
            scenario: scenario.id.clone(),
            total: total.conversions(),
            holdout,
            global_holdout,
            steps,
        }
    }
}

fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

/// Conversions of a group of entries, as they are added.
#[derive(Debug, Default)]
struct Group {
    entries: u64,
    converted: u64,
    revenue: Sum,
}

impl Group {
    fn add(&mut self, e: &Entry) {
        self.entries += 1;
        if e.converted {
            self.converted += 1;
            if let Some(v) = e.value {
                self.revenue.add(v);
            }
        }
    }

    fn conversions(&self) -> Conversions {
        let rate = (self.entries > 0).then(|| self.converted as f64 / self.entries as f64);
        Conversions {
            entries: self.entries,
            converted: self.converted,
            rate,
            interval: stats::wilson_95(self.converted, self.entries),
            revenue: self.revenue.total(),
        }
    }
}

/// A path's or a variant's entries, with their sends and engaged contacts.
#[derive(Debug, Default)]
struct Segment<'a> {
    group: Group,
    sent: u64,
    engaged: [HashSet<&'a str>; 3],
}

/// Neumaier's compensated sum: revenue such as 19.99 × 3 adds up to the double nearest
/// 59.97 rather than drifting by an ulp per value.
#[derive(Debug, Default)]
struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn total(&self) -> f64 {
        self.sum + self.compensation
    }
}

fn lift(treated: &Conversions, held_out: &Conversions) -> Lift {
    let absolute = match (treated.rate, held_out.rate) {
        (Some(t), Some(h)) => Some(t - h),
        _ => None,
    };
    let relative = match (absolute, held_out.rate) {
        (Some(a), Some(h)) if h > 0.0 => Some(a / h),
        _ => None,
    };
    let test = stats::two_proportion_test(
        treated.converted,
        treated.entries,
        held_out.converted,
        held_out.entries,
    );
    Lift {
        absolute,
        relative,
        z: test.map(|t| t.z),
        p_value: test.map(|t| t.p_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Format;

    const SCENARIO: &str = "id: exp
name: Experiment
timezone: UTC
launch: {type: manual}
audience: {all: true}
holdout: {percent: 20}
messages:
  intro: {channel: email, subject: Intro, text: Intro}
  short-a: {channel: email, subject: A, text: A}
  short-b: {channel: email, subject: B, text: B}
  long: {channel: email, subject: Long, text: Long}
steps:
  - {id: intro, send: intro, next: ab}
  - id: ab
    split:
      - {percent: 50, next: short}
      - {percent: 50, next: long}
  - id: short
    send: {variants: [{message: short-a, percent: 50}, {message: short-b, percent: 50}]}
    next: done
  - {id: long, send: long, next: done}
  - {id: done, end: success}
";

    fn scenario() -> Scenario {
        match crate::validate::parse(SCENARIO, Format::Yaml) {
            Ok((s, _)) => s,
            Err(problems) => panic!("{problems:?}"),
        }
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap_or_default()
    }

    /// Builds the records of one entry (`enrollment`) of `contact`.
    struct Play<'a> {
        contact: &'a str,
        enrollment: &'a str,
        out: &'a mut Vec<Record>,
    }

    impl Play<'_> {
        fn push(&mut self, minute: i64, kind: RecordKind, step: Option<&str>) -> &mut Record {
            let mut r = Record::new(at(minute), self.contact, kind);
            r.step = step.map(str::to_string);
            r.enrollment = Some(self.enrollment.to_string());
            self.out.push(r);
            let last = self.out.len() - 1;
            &mut self.out[last]
        }
        fn entered(&mut self, m: i64) {
            self.push(m, RecordKind::Entered, None);
        }
        fn held_out(&mut self, m: i64) {
            self.push(m, RecordKind::HeldOut, None);
            self.push(m, RecordKind::Ended, None).end = Some("held_out".into());
        }
        fn sent(&mut self, m: i64, step: &str, message: &str) {
            let r = self.push(m, RecordKind::Sent, Some(step));
            r.message = Some(message.into());
            r.arrival = true;
        }
        fn path(&mut self, m: i64, step: &str, path: &str) {
            let r = self.push(m, RecordKind::Assigned, Some(step));
            r.branch = Some(path.into());
            r.next = Some(path.into());
            r.arrival = true;
        }
        fn variant(&mut self, m: i64, step: &str, message: &str) {
            self.push(m, RecordKind::Assigned, Some(step)).message = Some(message.into());
            self.sent(m, step, message);
        }
        fn end(&mut self, m: i64, step: &str) {
            let r = self.push(m, RecordKind::Ended, Some(step));
            r.end = Some("success".into());
            r.arrival = true;
        }
        fn engaged(&mut self, m: i64, kind: RecordKind, step: &str) {
            self.push(m, kind, Some(step));
        }
        fn converted(&mut self, m: i64, value: Option<f64>) {
            self.push(m, RecordKind::Converted, None).value =
                value.and_then(serde_json::Number::from_f64);
        }
    }

    fn play<'a>(out: &'a mut Vec<Record>, contact: &'a str, enrollment: &'a str) -> Play<'a> {
        Play {
            contact,
            enrollment,
            out,
        }
    }

    /// Four treated entries (two per path, one per variant on `short`), two held out, a
    /// winner on `short`.
    fn records() -> Vec<Record> {
        let mut out = Vec::new();
        let mut c1 = play(&mut out, "c1", "e1");
        c1.entered(0);
        c1.sent(0, "intro", "intro");
        c1.path(0, "ab", "short");
        c1.variant(0, "short", "short-a");
        c1.end(0, "done");
        // Delivered before the split: not the path's engagement.
        c1.engaged(1, RecordKind::Delivered, "intro");
        c1.engaged(2, RecordKind::Opened, "short");
        c1.engaged(3, RecordKind::Clicked, "short");
        c1.engaged(4, RecordKind::Clicked, "short");
        c1.converted(5, Some(10.0));
        // Only the first conversion of an entry counts.
        c1.converted(6, Some(99.0));
        let mut c2 = play(&mut out, "c2", "e2");
        c2.entered(0);
        c2.sent(0, "intro", "intro");
        c2.path(0, "ab", "short");
        c2.variant(0, "short", "short-b");
        c2.end(0, "done");
        c2.engaged(1, RecordKind::Delivered, "short");
        let mut c3 = play(&mut out, "c3", "e3");
        c3.entered(0);
        c3.sent(0, "intro", "intro");
        c3.path(0, "ab", "long");
        c3.sent(0, "long", "long");
        c3.end(0, "done");
        c3.engaged(2, RecordKind::Opened, "long");
        c3.converted(7, Some(5.5));
        let mut c4 = play(&mut out, "c4", "e4");
        c4.entered(0);
        c4.sent(0, "intro", "intro");
        c4.path(0, "ab", "long");
        c4.sent(0, "long", "long");
        c4.end(0, "done");
        for (c, e) in [("h1", "e5"), ("h2", "e6")] {
            let mut h = play(&mut out, c, e);
            h.entered(0);
            h.held_out(0);
        }
        let mut winner = Record::new(at(8), "", RecordKind::Winner).step("short");
        winner.message = Some("short-a".into());
        out.push(winner);
        out
    }

    /// Within 1e-14 (figures from statsmodels are compared the same way in `stats`).
    #[track_caller]
    fn close(actual: Option<f64>, expected: f64) {
        match actual {
            Some(a) => assert!((a - expected).abs() <= 1e-14, "{a} is not {expected}"),
            None => panic!("nothing where {expected} was expected"),
        }
    }

    #[track_caller]
    fn interval(c: &Conversions, low: f64, high: f64) {
        close(c.interval.map(|i| i.low), low);
        close(c.interval.map(|i| i.high), high);
    }

    #[track_caller]
    fn counts(c: &Conversions, entries: u64, converted: u64, revenue: f64) {
        assert_eq!(
            (c.entries, c.converted, c.revenue),
            (entries, converted, revenue),
            "{c:?}"
        );
        close(c.rate, converted as f64 / entries as f64);
    }

    fn step<'a>(r: &'a Report, id: &str) -> &'a StepReport {
        match r.steps.iter().find(|s| s.step == id) {
            Some(s) => s,
            None => panic!("no step {id} in {r:?}"),
        }
    }

    /// (sent, delivered, opened, clicked).
    fn engagement(sent: u64, delivered: u64, opened: u64, clicked: u64) -> [u64; 4] {
        [sent, delivered, opened, clicked]
    }

    #[test]
    fn figures_by_step_path_and_variant() {
        let r = Report::from_records(&scenario(), &records());
        assert_eq!(r.scenario, "exp");
        // Six entries, two converted (c1: 10, c3: 5.5); the held-out ones did not.
        counts(&r.total, 6, 2, 15.5);
        // proportion_confint(2, 6, alpha=0.05, method="wilson")
        interval(&r.total, 0.09677141110578041, 0.700006684861608);

        let order: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(order, ["intro", "ab", "short", "long", "done"]);

        let intro = step(&r, "intro");
        assert_eq!(intro.entered, 4);
        assert_eq!(
            [intro.sent, intro.delivered, intro.opened, intro.clicked],
            engagement(4, 1, 0, 0)
        );
        counts(&intro.conversions, 4, 2, 15.5);
        // proportion_confint(2, 4, alpha=0.05, method="wilson")
        interval(&intro.conversions, 0.15003898915214947, 0.8499610108478506);
        assert!(intro.paths.is_empty() && intro.variants.is_empty());

        let ab = step(&r, "ab");
        assert_eq!((ab.entered, ab.sent), (4, 0));
        counts(&ab.conversions, 4, 2, 15.5);
        let paths: Vec<&str> = ab.paths.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["short", "long"]);
        let (short, long) = (&ab.paths[0], &ab.paths[1]);
        // c1's delivery of `intro` came from a send before the split.
        assert_eq!(
            [short.sent, short.delivered, short.opened, short.clicked],
            engagement(2, 1, 1, 1)
        );
        counts(&short.conversions, 2, 1, 10.0);
        // proportion_confint(1, 2, alpha=0.05, method="wilson")
        interval(&short.conversions, 0.09453120573423068, 0.9054687942657693);
        assert_eq!(
            [long.sent, long.delivered, long.opened, long.clicked],
            engagement(2, 0, 1, 0)
        );
        counts(&long.conversions, 2, 1, 5.5);

        let s = step(&r, "short");
        assert_eq!(s.entered, 2);
        assert_eq!(
            [s.sent, s.delivered, s.opened, s.clicked],
            engagement(2, 1, 1, 1)
        );
        let variants: Vec<(&str, bool)> = s
            .variants
            .iter()
            .map(|v| (v.message.as_str(), v.winner))
            .collect();
        assert_eq!(variants, [("short-a", true), ("short-b", false)]);
        let (a, b) = (&s.variants[0], &s.variants[1]);
        assert_eq!(
            [a.sent, a.delivered, a.opened, a.clicked],
            engagement(1, 0, 1, 1)
        );
        counts(&a.conversions, 1, 1, 10.0);
        // proportion_confint(1, 1, alpha=0.05, method="wilson")
        interval(&a.conversions, 0.2065493143772374, 1.0);
        assert_eq!(
            [b.sent, b.delivered, b.opened, b.clicked],
            engagement(1, 1, 0, 0)
        );
        counts(&b.conversions, 1, 0, 0.0);
        // proportion_confint(0, 1, alpha=0.05, method="wilson")
        interval(&b.conversions, 0.0, 0.7934506856227627);

        let l = step(&r, "long");
        assert_eq!((l.entered, l.sent, l.opened), (2, 2, 1));
        assert!(l.paths.is_empty() && l.variants.is_empty());
        assert_eq!(step(&r, "done").entered, 4);

        let Some(h) = &r.holdout else {
            panic!("no holdout comparison");
        };
        counts(&h.treated, 4, 2, 15.5);
        counts(&h.held_out, 2, 0, 0.0);
        // proportion_confint(0, 2, alpha=0.05, method="wilson")
        interval(&h.held_out, 0.0, 0.657619772493347);
        close(h.lift.absolute, 0.5);
        // Nothing converted in the holdout: no relative lift.
        assert_eq!(h.lift.relative, None);
        // proportions_ztest([2, 0], [4, 2]) = (1.224744871391589, 0.22067136191984693)
        close(h.lift.z, 1.224744871391589);
        close(h.lift.p_value, 0.22067136191984693);
    }

    #[test]
    fn record_order_does_not_matter() {
        let records = records();
        let expected = Report::from_records(&scenario(), &records);
        // Entries in the reverse order, the winner first, each entry's records in its order.
        let mut groups: Vec<Vec<&Record>> = Vec::new();
        for r in &records {
            match groups.last_mut() {
                Some(g) if g[0].enrollment == r.enrollment => g.push(r),
                _ => groups.push(vec![r]),
            }
        }
        let shuffled: Vec<&Record> = groups.into_iter().rev().flatten().collect();
        assert_eq!(shuffled[0].kind, RecordKind::Winner);
        assert_eq!(Report::from_records(&scenario(), shuffled), expected);
    }

    #[test]
    fn the_builder_takes_records_of_an_enrollment_before_its_entry() {
        let records = records();
        let expected = Report::from_records(&scenario(), &records);
        // Conversions first (as a store listing them by kind might), then the rest.
        let mut builder = ReportBuilder::default();
        for r in records.iter().filter(|r| r.kind == RecordKind::Converted) {
            builder.add(r);
        }
        for r in records.iter().filter(|r| r.kind != RecordKind::Converted) {
            builder.add(r);
        }
        assert_eq!(builder.finish(&scenario()), expected);
    }

    #[test]
    fn records_without_enrollment_join_on_the_contact() {
        let records = records();
        let expected = Report::from_records(&scenario(), &records);
        let stripped: Vec<Record> = records
            .into_iter()
            .map(|mut r| {
                r.enrollment = None;
                r
            })
            .collect();
        assert_eq!(Report::from_records(&scenario(), &stripped), expected);
    }

    #[test]
    fn a_conversion_belongs_to_the_latest_entry_before_it() {
        let mut out = Vec::new();
        for (minute, enrollment) in [(0, "first"), (60, "second")] {
            let mut c = play(&mut out, "c1", enrollment);
            c.entered(minute);
            c.sent(minute, "intro", "intro");
            c.path(minute, "ab", "long");
            c.sent(minute, "long", "long");
            c.end(minute, "done");
        }
        // After the second entry: it converts, the first does not.
        play(&mut out, "c1", "second").converted(61, Some(3.0));
        // Engagement with the first entry's send, journaled after that enrollment ended.
        play(&mut out, "c1", "").engaged(30, RecordKind::Opened, "long");
        for r in &mut out {
            r.enrollment = None;
        }
        let r = Report::from_records(&scenario(), &out);
        counts(&r.total, 2, 1, 3.0);
        let long = &step(&r, "ab").paths[1];
        assert_eq!((long.path.as_str(), long.sent, long.opened), ("long", 2, 1));
        counts(&long.conversions, 2, 1, 3.0);
        // Distinct contacts: one, though both entries sent `long`.
        assert_eq!((step(&r, "long").sent, step(&r, "long").opened), (2, 1));
    }

    #[test]
    fn lift_against_a_larger_holdout() {
        // 100 treated entries of which 30 convert (worth 2.5 each), 50 held out of which 5.
        let mut out = Vec::new();
        for i in 0..150 {
            let (contact, enrollment) = (format!("c{i}"), format!("e{i}"));
            let mut c = play(&mut out, &contact, &enrollment);
            c.entered(i);
            if i < 100 {
                c.sent(i, "intro", "intro");
                if i < 30 {
                    c.converted(i + 1, Some(2.5));
                }
            } else {
                c.held_out(i);
                if i < 105 {
                    c.converted(i + 1, Some(1.0));
                }
            }
        }
        let r = Report::from_records(&scenario(), &out);
        counts(&r.total, 150, 35, 80.0);
        // proportion_confint(35, 150, alpha=0.05, method="wilson")
        interval(&r.total, 0.17282631511397295, 0.30715781521566793);
        let Some(h) = &r.holdout else {
            panic!("no holdout comparison");
        };
        counts(&h.treated, 100, 30, 75.0);
        // proportion_confint(30, 100, ...) and proportion_confint(5, 50, ...), "wilson"
        interval(&h.treated, 0.21894885294932756, 0.39584854633346667);
        interval(&h.held_out, 0.0434757649318904, 0.21360231437479657);
        close(h.lift.absolute, 0.2);
        close(h.lift.relative, 2.0);
        // proportions_ztest([30, 5], [100, 50]) = (2.7300945311597404, 0.006331616694821337)
        close(h.lift.z, 2.7300945311597404);
        close(h.lift.p_value, 0.006331616694821337);
    }

    #[test]
    fn no_entries_give_nulls_never_nan() {
        let r = Report::from_records(&scenario(), []);
        assert_eq!(r.total.entries, 0);
        assert_eq!((r.total.rate, r.total.interval), (None, None));
        let Some(h) = &r.holdout else {
            panic!("the scenario has a holdout");
        };
        assert_eq!(
            h.lift,
            Lift {
                absolute: None,
                relative: None,
                z: None,
                p_value: None
            }
        );
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["total"]["rate"], serde_json::Value::Null);
        assert_eq!(json["holdout"]["lift"]["p_value"], serde_json::Value::Null);
        assert_eq!(json["steps"][0]["interval"], serde_json::Value::Null);
        assert!(!json.to_string().contains("NaN"));
        // Every step is listed, even unreached.
        assert_eq!(r.steps.len(), 5);
        assert_eq!(r.steps[1].paths.len(), 2);
        assert_eq!(r.steps[2].variants.len(), 2);
    }

    #[test]
    fn without_a_holdout_there_is_no_comparison() {
        let text = SCENARIO.replace("holdout: {percent: 20}\n", "");
        let Ok((s, _)) = crate::validate::parse(&text, Format::Yaml) else {
            panic!("invalid");
        };
        let treated: Vec<Record> = records()
            .into_iter()
            .filter(|r| !r.contact.starts_with('h'))
            .collect();
        assert_eq!(Report::from_records(&s, &treated).holdout, None);
        // Held-out records of an earlier version still give one.
        assert!(Report::from_records(&s, &records()).holdout.is_some());
    }

    /// The program's lift: entries outside the workspace's global control group against
    /// those inside it, membership by the formula (seed "g", 40%: buckets computed apart with
    /// Python, `int.from_bytes(sha256(b"holdout:g:c4").digest()[:8], "big") % 10000` = 2229,
    /// c5 2608 and c7 88 are in; c0 9920, c1 5652, c2 9603, c3 7863 are out).
    #[test]
    fn the_global_control_group_is_compared_with_the_program() {
        let mut out = Vec::new();
        for (i, c) in ["c0", "c1", "c2", "c3", "c4", "c5", "c7"]
            .iter()
            .enumerate()
        {
            let e = format!("e-{c}");
            let mut p = play(&mut out, c, &e);
            p.entered(i as i64);
            // Three of the four outside convert, one of the three inside.
            if ["c0", "c1", "c2", "c4"].contains(c) {
                p.converted(100 + i as i64, Some(10.0));
            }
        }
        let group = crate::policy::GlobalHoldout {
            basis_points: 4000,
            seed: "g".into(),
        };
        let s = scenario();
        assert_eq!(Report::from_records(&s, &out).global_holdout, None);
        let r = Report::from_records_with(&s, &out, Some(&group));
        let g = r.global_holdout.unwrap_or_else(|| panic!("no comparison"));
        counts(&g.treated, 4, 3, 30.0);
        counts(&g.held_out, 3, 1, 10.0);
        close(g.lift.absolute, 0.75 - 1.0 / 3.0);
        // Python: p = 4/7; (3/4 - 1/3) / math.sqrt(p * (1 - p) * (1/4 + 1/3)).
        close(g.lift.z, 1.1023963796102463);
    }

    #[test]
    fn json_shape_and_round_trip() {
        let r = Report::from_records(&scenario(), &records());
        let json = serde_json::to_value(&r).unwrap_or_default();
        let short = &json["steps"][2];
        for key in [
            "step",
            "entered",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "entries",
            "converted",
            "rate",
            "interval",
            "revenue",
            "variants",
        ] {
            assert!(short.get(key).is_some(), "no {key} in {short}");
        }
        assert_eq!(short["variants"][0]["winner"], true);
        assert_eq!(json["steps"][1]["paths"][0]["path"], "short");
        assert!(json["steps"][0].get("paths").is_none());
        assert_eq!(json["holdout"]["lift"]["relative"], serde_json::Value::Null);
        let back: Report = match serde_json::from_value(json) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, r);
    }

    #[test]
    fn revenue_adds_up_as_written() {
        let mut sum = Sum::default();
        for _ in 0..10 {
            sum.add(0.1);
        }
        // Summed one by one, 0.1 ten times gives 0.9999999999999999 (Python's math.fsum
        // gives 1.0).
        assert_eq!(sum.total(), 1.0);
    }
}
