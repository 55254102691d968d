//! The metrics of DESIGN §9, through the `metrics` facade: what each mode's recorder exports
//! (Prometheus text on the embedded API, CloudWatch embedded metric format on AWS).
//!
//! The runtime counts only what commits: the counts of a unit of work wait in a `Pending`
//! buffer and are emitted once the store commits it (dropped with the unit otherwise), like
//! the journal records they come from. Until [`enable`] is called (by the mode that installs
//! a recorder) nothing is gathered, so `relance simulate` and the benches pay nothing.
//!
//! The series and their labels (every label is bounded by the scenarios: scenario, step and
//! message ids, channels, reasons; never a contact):
//! - [`ENTRIES`] `{scenario, result}`: `entered` for each entry, `held_out` for the entries
//!   the scenario holdout kept (also counted `entered`), `skipped` for each entry refused (its
//!   reason in [`SKIPS`]).
//! - [`SENDS`] `{scenario, step, channel, result}`: `sent` for each send the engine made,
//!   `failed` for each send that failed, in the engine (a template that does not render) or
//!   at delivery (a provider's refusal, retries given up).
//! - [`SKIPS`] `{scenario, reason}`: every `skipped` record, entries refused
//!   (`already_running`, `once_per`, `audience`, `exit_when`) and sends skipped (consent,
//!   quiet hours, frequency cap, ...).
//! - [`CONVERSIONS`] `{scenario, path}`: each entry that converted, by the experiment arm its
//!   contact is in: `held_out` (the scenario holdout), `control` (the workspace's global
//!   control group), else `treated`.
//! - [`TIMER_LATENESS`] (histogram, seconds): how long after its due time a timer fired.
//! - [`DEAD_LETTERS`] `{source}`: each dead letter kept, by what it was (`timer`, `launch`,
//!   `inactivity`, `winner_check`, `delivery`, `webhook`, `send`; on AWS also `step`,
//!   `launch`, `engagement` for a queue message that does not read; an unreadable row's kind).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use relance_core::journal::{Record, RecordKind};
use relance_core::scenario::{Channel, Scenario, StepKind};

/// Entries, by result (`entered`, `held_out`, `skipped`).
pub const ENTRIES: &str = "relance_entries_total";
/// Sends, by step, channel and result (`sent`, `failed`).
pub const SENDS: &str = "relance_sends_total";
/// Skipped entries and sends, by reason.
pub const SKIPS: &str = "relance_skips_total";
/// Conversions, by experiment arm (`treated`, `held_out`, `control`).
pub const CONVERSIONS: &str = "relance_conversions_total";
/// How late timers fire, in seconds (histogram).
pub const TIMER_LATENESS: &str = "relance_timer_lateness_seconds";
/// Dead letters kept, by source.
pub const DEAD_LETTERS: &str = "relance_dead_letters_total";

/// Every series, with its help text: what a recorder describes.
pub const SERIES: [(&str, &str); 6] = [
    (
        ENTRIES,
        "Scenario entries, by result (entered, held_out, skipped).",
    ),
    (
        SENDS,
        "Sends, by scenario, step, channel and result (sent, failed).",
    ),
    (SKIPS, "Skipped entries and sends, by scenario and reason."),
    (
        CONVERSIONS,
        "Conversions, by scenario and experiment arm (treated, held_out, control).",
    ),
    (TIMER_LATENESS, "How long after its due time a timer fired."),
    (DEAD_LETTERS, "Dead letters kept, by source."),
];

/// Whether the runtime gathers its counts (see [`enable`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Describes the series to the installed recorder and has the runtime gather its counts
/// from now on. Call once a recorder is installed; before, counting would cost for nothing.
pub fn enable() {
    for (name, help) in SERIES {
        if name == TIMER_LATENESS {
            describe_histogram!(name, Unit::Seconds, help);
        } else {
            describe_counter!(name, Unit::Count, help);
        }
    }
    ENABLED.store(true, Ordering::Relaxed);
}

/// True once [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the roll-ups are counted too (see [`enable_rollups`]).
static ROLLUPS: AtomicBool = AtomicBool::new(false);

/// Also counts two roll-ups beside their series, for recorders whose alarms cannot sum
/// across labels without metric math (CloudWatch: a plain alarm reads one metric, one
/// dimension set): `relance_sends_total` by `result` alone and `relance_dead_letters_total`
/// without labels. Not for Prometheus, where `sum by (result)` does it and a second label set
/// in a family would be counted twice by a plain `sum`.
pub fn enable_rollups() {
    ROLLUPS.store(true, Ordering::Relaxed);
}

fn rollups() -> bool {
    ROLLUPS.load(Ordering::Relaxed)
}

/// Counts one dead letter kept (by what wrote it, once it is written).
pub fn dead_letter(source: &str) {
    dead_letters(source, 1);
}

/// Counts `n` dead letters kept by `source` (once written).
pub fn dead_letters(source: &str, n: u64) {
    if enabled() && n > 0 {
        counter!(DEAD_LETTERS, "source" => source.to_string()).increment(n);
        if rollups() {
            counter!(DEAD_LETTERS).increment(n);
        }
    }
}

/// Records how late a timer fired, in seconds (negative lateness, a timer fired early, is 0).
/// The runtime records its own timers' (for the units that commit); this is for the others.
pub fn timer_lateness(seconds: f64) {
    if enabled() {
        histogram!(TIMER_LATENESS).record(seconds.max(0.0));
    }
}

/// Counts a journal record written outside the runtime's units (a delivery's or a sender's
/// `failed` record), once it is written.
pub fn journaled(scenario: &str, record: &Record) {
    if !enabled() {
        return;
    }
    let scenario: Arc<str> = Arc::from(scenario);
    Tally::of(
        record,
        |_| None,
        |tally| tally.emit(scenario.clone().into()),
    );
}

/// The experiment arm of a conversion's contact (the label `path` of [`CONVERSIONS`]).
pub fn conversion_path(held_out: bool, control: bool) -> &'static str {
    if held_out {
        "held_out"
    } else if control {
        "control"
    } else {
        "treated"
    }
}

/// The channel of a send step's message (its first variant's: the variants of a step share
/// its channel in practice, and a label needs one), or `None` for any other step.
pub(crate) fn channel_of(scenario: &Scenario, step: &str) -> Option<Channel> {
    let s = scenario.steps.iter().find(|s| s.id == step)?;
    let StepKind::Send { message, .. } = &s.kind else {
        return None;
    };
    scenario.messages.get(message).map(|m| m.channel)
}

/// One count of a record, its labels but the scenario.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tally {
    Entry(&'static str),
    Send {
        step: String,
        channel: Channel,
        result: &'static str,
    },
    Skip(String),
    Conversion(&'static str),
    /// A timer fired this many seconds late (no label: the scenario is not one).
    Lateness(f64),
}

impl Tally {
    /// Hands the counts a record makes to `push`; `channel_of` names the channel of a send step when
    /// the record does not (a send the engine failed). A conversion is counted by the
    /// runtime with its path ([`Tally::Conversion`]), not here.
    fn of(
        record: &Record,
        channel_of: impl FnOnce(&str) -> Option<Channel>,
        mut push: impl FnMut(Tally),
    ) {
        let tally = match record.kind {
            RecordKind::Entered => Tally::Entry("entered"),
            RecordKind::HeldOut => Tally::Entry("held_out"),
            RecordKind::Skipped => {
                // A skip without a step is a refused entry: counted among the entries too.
                if record.step.is_none() {
                    push(Tally::Entry("skipped"));
                }
                Tally::Skip(record.reason.clone().unwrap_or_default())
            }
            RecordKind::Sent | RecordKind::Failed => {
                let Some(step) = record.step.as_deref() else {
                    return;
                };
                // A failed action (no channel, not a send step) is no send.
                let Some(channel) = record.channel.or_else(|| channel_of(step)) else {
                    return;
                };
                let result = if record.kind == RecordKind::Sent {
                    "sent"
                } else {
                    "failed"
                };
                Tally::Send {
                    step: step.to_string(),
                    channel,
                    result,
                }
            }
            _ => return,
        };
        push(tally);
    }

    fn emit(self, scenario: metrics::SharedString) {
        match self {
            Tally::Entry(result) => {
                counter!(ENTRIES, "scenario" => scenario, "result" => result).increment(1)
            }
            Tally::Skip(reason) => {
                counter!(SKIPS, "scenario" => scenario, "reason" => reason).increment(1)
            }
            Tally::Send {
                step,
                channel,
                result,
            } => {
                counter!(
                    SENDS,
                    "scenario" => scenario,
                    "step" => step,
                    "channel" => channel.as_str(),
                    "result" => result
                )
                .increment(1);
                if rollups() {
                    counter!(SENDS, "result" => result).increment(1);
                }
            }
            Tally::Conversion(path) => {
                counter!(CONVERSIONS, "scenario" => scenario, "path" => path).increment(1)
            }
            Tally::Lateness(seconds) => timer_lateness(seconds),
        }
    }
}

/// The counts of the unit of work in progress, emitted when it commits.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    tallies: Vec<(Arc<str>, Tally)>,
    /// The scenario of the last count, shared by the counts of one scenario (a label made
    /// once per unit, not once per count).
    last: Option<Arc<str>>,
}

impl Pending {
    fn scenario(&mut self, scenario: &str) -> Arc<str> {
        match &self.last {
            Some(s) if **s == *scenario => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(scenario);
                self.last = Some(s.clone());
                s
            }
        }
    }

    /// Keeps the count of one record of `scenario` (see [`Tally::of`]).
    pub(crate) fn record(
        &mut self,
        scenario: &str,
        record: &Record,
        channel_of: impl FnOnce(&str) -> Option<Channel>,
    ) {
        let s = self.scenario(scenario);
        Tally::of(record, channel_of, |tally| {
            self.tallies.push((s.clone(), tally))
        });
    }

    /// Keeps a conversion of `scenario` on `path` (see [`conversion_path`]).
    pub(crate) fn conversion(&mut self, scenario: &str, path: &'static str) {
        let s = self.scenario(scenario);
        self.tallies.push((s, Tally::Conversion(path)));
    }

    /// Keeps how late a timer fired, in seconds.
    pub(crate) fn lateness(&mut self, seconds: f64) {
        // The sample has no scenario label: any shared one keeps the buffer's shape.
        let s = self.last.clone().unwrap_or_else(|| Arc::from(""));
        self.tallies.push((s, Tally::Lateness(seconds)));
    }

    /// How many counts wait (a unit's mark, to drop its counts if it fails).
    pub(crate) fn len(&self) -> usize {
        self.tallies.len()
    }

    /// Drops the counts after `mark` (a unit that did not commit).
    pub(crate) fn truncate(&mut self, mark: usize) {
        self.tallies.truncate(mark);
    }

    /// Emits the waiting counts (their unit committed).
    pub(crate) fn emit(&mut self) {
        for (scenario, tally) in self.tallies.drain(..) {
            tally.emit(scenario.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn record(kind: RecordKind) -> Record {
        Record::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            "ada",
            kind,
        )
    }

    #[test]
    fn records_count_by_kind() {
        let mut p = Pending::default();
        p.record("s", &record(RecordKind::Entered), |_| None);
        p.record("s", &record(RecordKind::HeldOut), |_| None);
        p.record("s", &record(RecordKind::Skipped).reason("once_per"), |_| {
            None
        });
        p.record(
            "s",
            &record(RecordKind::Skipped).step("mail").reason("quiet"),
            |_| None,
        );
        let mut sent = record(RecordKind::Sent).step("mail");
        sent.channel = Some(Channel::Email);
        p.record("s", &sent, |_| None);
        // An engine failure of a send step names no channel: the step's message does.
        p.record("s", &record(RecordKind::Failed).step("sms"), |step| {
            (step == "sms").then_some(Channel::Sms)
        });
        // A failed action is no send.
        p.record("s", &record(RecordKind::Failed).step("tag"), |_| None);
        p.record("s", &record(RecordKind::Waiting).step("mail"), |_| None);
        let tallies: Vec<&Tally> = p.tallies.iter().map(|(_, t)| t).collect();
        assert_eq!(
            tallies,
            [
                &Tally::Entry("entered"),
                &Tally::Entry("held_out"),
                &Tally::Entry("skipped"),
                &Tally::Skip("once_per".into()),
                &Tally::Skip("quiet".into()),
                &Tally::Send {
                    step: "mail".into(),
                    channel: Channel::Email,
                    result: "sent"
                },
                &Tally::Send {
                    step: "sms".into(),
                    channel: Channel::Sms,
                    result: "failed"
                },
            ]
        );
        // One label per scenario, shared.
        assert!(Arc::ptr_eq(&p.tallies[0].0, &p.tallies[6].0));
    }

    #[test]
    fn a_failed_unit_keeps_none_of_its_counts() {
        let mut p = Pending::default();
        p.record("s", &record(RecordKind::Entered), |_| None);
        let mark = p.len();
        p.record("s", &record(RecordKind::Entered), |_| None);
        p.conversion("s", "treated");
        p.lateness(1.5);
        assert_eq!(p.len(), 4);
        p.truncate(mark);
        assert_eq!(p.len(), 1);
        p.emit();
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn conversion_paths() {
        assert_eq!(conversion_path(true, true), "held_out");
        assert_eq!(conversion_path(false, true), "control");
        assert_eq!(conversion_path(false, false), "treated");
    }
}
