//! Journal records (what happened to whom, when) and the counters per step and per end
//! that `relance journal` and `simulate --journal` print.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::json_text::Object;
use crate::scenario::Channel;

/// What a record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The contact entered the scenario.
    Entered,
    /// An entry or a send was skipped (see `reason`).
    Skipped,
    /// A message was sent.
    Sent,
    /// A send or an action failed (see `reason`); the enrollment goes on.
    Failed,
    /// The enrollment waits: a delay, a wait_for or quiet hours (until `until`).
    Waiting,
    /// A wait ended (`reason`: delay, quiet_hours, event or timeout).
    Resumed,
    /// A condition chose a path (`branch`, `next`).
    Branched,
    /// A split placed the contact on a path (`branch`: the path's `next`), or a variant send
    /// chose its message (`message`).
    Assigned,
    /// The scenario holdout kept the contact: it is sent nothing and ends `held_out`.
    HeldOut,
    /// An action ran.
    Action,
    /// The contact left through exit_when.
    Exited,
    /// The enrollment reached an end (`end`).
    Ended,
    /// The channel delivered a send (`step`): engagement, journaled as it arrives.
    Delivered,
    /// The contact opened a send (`step`).
    Opened,
    /// The contact clicked a link of a send (`step`).
    Clicked,
    /// A send (`step`) bounced.
    Bounced,
    /// The contact marked a send (`step`) as spam.
    Complained,
    /// The contact unsubscribed through a send (`step`).
    Unsubscribed,
    /// An entry converted (DESIGN §3.1): the first event matching the scenario's `conversion`
    /// within its window; `at` is the event's instant, `value` the revenue when present.
    Converted,
    /// A variant send step (`step`) found its winner (`message`); scenario-wide, so the
    /// record has no contact (`"contact": null`).
    Winner,
}

impl RecordKind {
    /// The record of an engagement with a send.
    pub fn of_engagement(kind: crate::contact::EngagementKind) -> RecordKind {
        use crate::contact::EngagementKind as E;
        match kind {
            E::Delivered => RecordKind::Delivered,
            E::Opened => RecordKind::Opened,
            E::Clicked => RecordKind::Clicked,
            E::Bounced => RecordKind::Bounced,
            E::Complained => RecordKind::Complained,
            E::Unsubscribed => RecordKind::Unsubscribed,
        }
    }

    /// The name records carry (`sent`, `held_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Entered => "entered",
            RecordKind::Skipped => "skipped",
            RecordKind::Sent => "sent",
            RecordKind::Failed => "failed",
            RecordKind::Waiting => "waiting",
            RecordKind::Resumed => "resumed",
            RecordKind::Branched => "branched",
            RecordKind::Assigned => "assigned",
            RecordKind::HeldOut => "held_out",
            RecordKind::Action => "action",
            RecordKind::Exited => "exited",
            RecordKind::Ended => "ended",
            RecordKind::Delivered => "delivered",
            RecordKind::Opened => "opened",
            RecordKind::Clicked => "clicked",
            RecordKind::Bounced => "bounced",
            RecordKind::Complained => "complained",
            RecordKind::Unsubscribed => "unsubscribed",
            RecordKind::Converted => "converted",
            RecordKind::Winner => "winner",
        }
    }

    /// True for engagement with a send (delivered, opened, clicked, bounced, complained,
    /// unsubscribed).
    pub fn is_engagement(self) -> bool {
        matches!(
            self,
            RecordKind::Delivered
                | RecordKind::Opened
                | RecordKind::Clicked
                | RecordKind::Bounced
                | RecordKind::Complained
                | RecordKind::Unsubscribed
        )
    }
}

/// One journal record: one line of `relance simulate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When (UTC).
    #[serde(
        serialize_with = "crate::instant::rfc3339::serialize",
        deserialize_with = "crate::instant::rfc3339::deserialize"
    )]
    pub at: DateTime<Utc>,
    /// The contact id; empty for a scenario-wide record (`winner`), written `null`.
    #[serde(with = "contact_or_null")]
    pub contact: String,
    /// What happened.
    pub kind: RecordKind,
    /// The step concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// For sends: the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// For sends: the message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why (skips, failures, resumes, exits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For ends: the end (success, failure, abandon, neutral, a goal id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// For branches: which branch (then, else, 0, 1, ..., otherwise); for splits, the path's
    /// `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// For branches: the step chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// For waits: until when at most.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::instant::rfc3339::option"
    )]
    pub until: Option<DateTime<Utc>>,
    /// For actions: which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The enrollment (absent from simulate's output, where contact and time tell it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    /// True on the first record of a step's visit (its "entered" count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arrival: bool,
    /// For conversions: the value (revenue) the converting event carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Number>,
}

/// What the records of one journal row share ([`Record::row_json`]).
struct Shared<'a> {
    at: &'a DateTime<Utc>,
    contact: &'a str,
    enrollment: Option<&'a str>,
}

/// A journal row of several records, as read back: each record's fields but those it shares.
#[derive(Deserialize)]
struct SharedRow {
    records: Vec<serde_json::Map<String, serde_json::Value>>,
    at: serde_json::Value,
    contact: serde_json::Value,
    #[serde(default)]
    enrollment: Option<serde_json::Value>,
}

/// A scenario-wide record has no contact: written `null`, read back as the empty id.
mod contact_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(contact: &str, s: S) -> Result<S::Ok, S::Error> {
        if contact.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(contact)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

impl Record {
    /// A record of `kind` for `contact` at `at`.
    pub fn new(at: DateTime<Utc>, contact: &str, kind: RecordKind) -> Record {
        Record {
            at,
            contact: contact.to_string(),
            kind,
            step: None,
            channel: None,
            message: None,
            reason: None,
            end: None,
            branch: None,
            next: None,
            until: None,
            action: None,
            enrollment: None,
            arrival: false,
            value: None,
        }
    }

    /// Appends this record's JSON to `out`: the same bytes as `serde_json::to_string`, written
    /// without a serializer. Every transition writes its records, and serde_json escapes
    /// strings a byte at a time (field names included): the journal's records were 12% of the
    /// embedded runner's instructions (BENCHMARKS.md, round twelve). A property test compares
    /// the two writers.
    pub fn write_json(&self, out: &mut String) {
        let mut o = Object::open(out);
        self.write_fields(&mut o, None);
        o.end();
    }

    /// This record's fields into `o`; inside a row ([`Record::row_json`]), those equal to
    /// what the row's records share are left out.
    fn write_fields(&self, o: &mut Object<'_>, shared: Option<&Shared<'_>>) {
        if shared.is_none_or(|s| self.at != *s.at) {
            o.instant("at", &self.at);
        }
        if shared.is_none_or(|s| self.contact != s.contact) {
            if self.contact.is_empty() {
                o.raw("contact", "null");
            } else {
                o.str("contact", &self.contact);
            }
        }
        o.plain("kind", self.kind.as_str());
        o.opt_str("step", self.step.as_deref());
        if let Some(channel) = self.channel {
            o.plain("channel", channel.as_str());
        }
        o.opt_str("message", self.message.as_deref());
        o.opt_str("reason", self.reason.as_deref());
        o.opt_str("end", self.end.as_deref());
        o.opt_str("branch", self.branch.as_deref());
        o.opt_str("next", self.next.as_deref());
        if let Some(until) = &self.until {
            o.instant("until", until);
        }
        o.opt_str("action", self.action.as_deref());
        match shared {
            None => o.opt_str("enrollment", self.enrollment.as_deref()),
            Some(s) if self.enrollment.as_deref() == s.enrollment => {}
            // Written even when absent: the row's would fill it in otherwise.
            Some(_) => match &self.enrollment {
                Some(enrollment) => o.str("enrollment", enrollment),
                None => o.raw("enrollment", "null"),
            },
        }
        if self.arrival {
            o.raw("arrival", "true");
        }
        if let Some(value) = &self.value {
            // A number: serde_json writes it as its own serializer would.
            o.raw("value", &value.to_string());
        }
    }

    /// The text of one stored journal row holding `records`, in order: one record as
    /// [`Record::write_json`] writes it; several as `{"records":[..],"at":..,"contact":..,
    /// "enrollment":..}`, each record without the instant, contact and enrollment it shares
    /// with the row (the row's are the last record's instant and the first record's contact
    /// and enrollment). A step writes three to five records of one enrollment at one instant:
    /// written once, those three fields were more than half of each record's bytes, and of
    /// the database's (BENCHMARKS.md, round fourteen). [`Record::read_row`] reads every form
    /// back, the arrays older versions wrote included; the row's `at` is its last record's
    /// (a step's records share one instant), as the purge dates a row.
    pub fn row_json(records: &[&Record]) -> String {
        let (Some(first), Some(last), true) = (records.first(), records.last(), records.len() > 1)
        else {
            let mut out = String::with_capacity(160);
            match records.first() {
                Some(one) => one.write_json(&mut out),
                None => out.push_str("[]"),
            }
            return out;
        };
        let shared = Shared {
            at: &last.at,
            contact: &first.contact,
            enrollment: first.enrollment.as_deref(),
        };
        let mut out = String::with_capacity(80 * records.len() + 120);
        let mut row = Object::open(&mut out);
        let list = row.value("records");
        list.push('[');
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            let mut o = Object::open(list);
            record.write_fields(&mut o, Some(&shared));
            o.end();
        }
        list.push(']');
        row.instant("at", shared.at);
        if shared.contact.is_empty() {
            row.raw("contact", "null");
        } else {
            row.str("contact", shared.contact);
        }
        row.opt_str("enrollment", shared.enrollment);
        row.end();
        out
    }

    /// Reads one stored journal row into `out` ([`Record::row_json`]): a record, an array of
    /// records (as schemas 11 to 15 of the embedded store wrote a step's), or a row of records sharing their
    /// instant, contact and enrollment.
    pub fn read_row(text: &str, out: &mut Vec<Record>) -> Result<(), serde_json::Error> {
        let text = text.trim_start();
        if text.starts_with('[') {
            out.extend(serde_json::from_str::<Vec<Record>>(text)?);
        } else if text.starts_with("{\"records\":") {
            let row: SharedRow = serde_json::from_str(text)?;
            out.reserve(row.records.len());
            for mut part in row.records {
                part.entry("at").or_insert_with(|| row.at.clone());
                part.entry("contact").or_insert_with(|| row.contact.clone());
                if let Some(enrollment) = &row.enrollment {
                    part.entry("enrollment")
                        .or_insert_with(|| enrollment.clone());
                }
                out.push(serde_json::from_value(serde_json::Value::Object(part))?);
            }
        } else {
            out.push(serde_json::from_str(text)?);
        }
        Ok(())
    }

    /// With the step.
    pub fn step(mut self, step: &str) -> Self {
        self.step = Some(step.to_string());
        self
    }

    /// With a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Counts for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    /// Visits of the step.
    pub entered: u64,
    /// Messages sent.
    pub sent: u64,
    /// Sends skipped, by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
    /// Sends or actions that failed.
    pub failed: u64,
    /// For splits: contacts assigned, by path (its `next`); for variant sends: sends, by
    /// message.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assigned: BTreeMap<String, u64>,
    /// For sends: engagement records, by kind (delivered, opened, clicked, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engagement: BTreeMap<String, u64>,
}

/// Counts per scenario: entries, skips, and per step and per end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCounts {
    /// Enrollments started.
    pub entered: u64,
    /// Entries refused, by reason (already_running, once_per, audience, exit_when).
    pub not_entered: BTreeMap<String, u64>,
    /// Per step id.
    pub steps: BTreeMap<String, StepCounts>,
    /// Per end (success, failure, abandon, neutral, each goal, and exited).
    pub ends: BTreeMap<String, u64>,
    /// Entries converted (the scenario's `conversion`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub converted: u64,
    /// Winners found, by variant step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub winners: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JournalCounts {
    /// Counts one record.
    pub fn add(&mut self, r: &Record) {
        let step = r
            .step
            .as_deref()
            .map(|s| self.steps.entry(s.to_string()).or_default());
        match (r.kind, step) {
            (RecordKind::Entered, _) => self.entered += 1,
            (RecordKind::Skipped, None) => {
                *self
                    .not_entered
                    .entry(r.reason.clone().unwrap_or_default())
                    .or_default() += 1
            }
            (RecordKind::Skipped, Some(s)) => {
                *s.skipped
                    .entry(r.reason.clone().unwrap_or_default())
                    .or_default() += 1;
                s.entered += u64::from(r.arrival);
            }
            (RecordKind::Sent, Some(s)) => {
                s.sent += 1;
                s.entered += u64::from(r.arrival);
            }
            (RecordKind::Failed, Some(s)) => {
                s.failed += 1;
                s.entered += u64::from(r.arrival);
            }
            (RecordKind::Assigned, Some(s)) => {
                // A split counts by path (`branch`), a variant send by message.
                *s.assigned
                    .entry(
                        r.branch
                            .clone()
                            .or_else(|| r.message.clone())
                            .unwrap_or_default(),
                    )
                    .or_default() += 1;
                s.entered += u64::from(r.arrival);
            }
            (k, Some(s)) if k.is_engagement() => {
                *s.engagement.entry(k.as_str().to_string()).or_default() += 1
            }
            (RecordKind::Converted, _) => self.converted += 1,
            (RecordKind::Winner, _) => {
                if let (Some(step), Some(message)) = (&r.step, &r.message) {
                    self.winners.insert(step.clone(), message.clone());
                }
            }
            (RecordKind::Exited, _) => *self.ends.entry("exited".into()).or_default() += 1,
            (RecordKind::Ended, s) => {
                if let Some(s) = s {
                    s.entered += u64::from(r.arrival);
                }
                *self
                    .ends
                    .entry(r.end.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            (_, Some(s)) => s.entered += u64::from(r.arrival),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::json_text::strategies::{instant, text};

    const KINDS: [RecordKind; 21] = [
        RecordKind::Entered,
        RecordKind::Skipped,
        RecordKind::Sent,
        RecordKind::Failed,
        RecordKind::Waiting,
        RecordKind::Resumed,
        RecordKind::Branched,
        RecordKind::Assigned,
        RecordKind::HeldOut,
        RecordKind::Action,
        RecordKind::Exited,
        RecordKind::Ended,
        RecordKind::Delivered,
        RecordKind::Opened,
        RecordKind::Clicked,
        RecordKind::Bounced,
        RecordKind::Complained,
        RecordKind::Unsubscribed,
        RecordKind::Converted,
        RecordKind::Winner,
        RecordKind::Sent,
    ];

    fn number() -> impl Strategy<Value = serde_json::Number> {
        prop_oneof![
            any::<u64>().prop_map(serde_json::Number::from),
            any::<i64>().prop_map(serde_json::Number::from),
            any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        let opt = || proptest::option::of(text());
        (
            (
                instant(),
                prop_oneof![Just(String::new()), text()],
                select(&KINDS[..]),
            ),
            (
                opt(),
                proptest::option::of(select(vec![
                    Channel::Email,
                    Channel::Sms,
                    Channel::Push,
                    Channel::WebPush,
                ])),
                opt(),
                opt(),
                opt(),
            ),
            (opt(), opt(), proptest::option::of(instant()), opt(), opt()),
            (any::<bool>(), proptest::option::of(number())),
        )
            .prop_map(
                |(
                    (at, contact, kind),
                    (step, channel, message, reason, end),
                    (branch, next, until, action, enrollment),
                    (arrival, value),
                )| Record {
                    at,
                    contact,
                    kind,
                    step,
                    channel,
                    message,
                    reason,
                    end,
                    branch,
                    next,
                    until,
                    action,
                    enrollment,
                    arrival,
                    value,
                },
            )
    }

    /// `records` as any stored record reads back: a float `value` is parsed to its nearest
    /// (serde_json's default parse, in every form of row).
    fn as_read(records: &[Record]) -> Vec<Record> {
        serde_json::from_str(&serde_json::to_string(records).unwrap_or_default())
            .unwrap_or_default()
    }

    proptest! {
        #[test]
        fn a_record_is_written_as_serde_json_writes_it(record in record()) {
            let mut ours = String::new();
            record.write_json(&mut ours);
            prop_assert_eq!(&ours, &serde_json::to_string(&record).unwrap_or_default());
        }

        #[test]
        fn a_row_reads_back_as_the_records_written(
            records in proptest::collection::vec(record(), 0..6),
            one_contact in any::<bool>(),
        ) {
            // A step's records share the contact (the store writes a row per contact's run);
            // the rest may differ from the row's and must come back as they were.
            let mut records = records;
            if one_contact && let Some(contact) = records.first().map(|r| r.contact.clone()) {
                for r in &mut records {
                    r.contact.clone_from(&contact);
                }
            }
            let refs: Vec<&Record> = records.iter().collect();
            let text = Record::row_json(&refs);
            let mut back = Vec::new();
            prop_assert!(Record::read_row(&text, &mut back).is_ok(), "{}", text);
            prop_assert_eq!(&back, &as_read(&records));
            // The row's instant is its last record's: the purge dates a row by it.
            if let Some(last) = records.last() {
                let row: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let mut at = String::new();
                crate::instant::rfc3339::push_json(&last.at, &mut at);
                prop_assert_eq!(row.get("at").map(|v| v.to_string()), Some(at));
            }
        }

        #[test]
        fn an_array_written_before_rows_shared_their_fields_still_reads(
            records in proptest::collection::vec(record(), 0..4),
        ) {
            let text = serde_json::to_string(&records).unwrap_or_default();
            let mut back = Vec::new();
            prop_assert!(Record::read_row(&text, &mut back).is_ok());
            prop_assert_eq!(back, as_read(&records));
        }
    }

    #[test]
    fn a_step_row_writes_the_instant_contact_and_enrollment_once() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 6, 5, 7, 39)
            .single()
            .unwrap_or_default();
        let mut resumed = Record::new(at, "c1", RecordKind::Resumed).step("check");
        resumed.enrollment = Some("drip:c1:1".into());
        let mut sent = Record::new(at, "c1", RecordKind::Sent).step("sms");
        sent.enrollment = Some("drip:c1:1".into());
        sent.arrival = true;
        // Another instant and no enrollment: written in the record, `null` for the latter.
        let mut later = Record::new(at + chrono::TimeDelta::seconds(1), "c1", RecordKind::Ended);
        later.end = Some("success".into());
        let text = Record::row_json(&[&resumed, &sent, &later]);
        assert_eq!(
            text,
            r#"{"records":[{"at":"2026-12-06T05:07:39Z","kind":"resumed","step":"check"},{"at":"2026-12-06T05:07:39Z","kind":"sent","step":"sms","arrival":true},{"kind":"ended","end":"success","enrollment":null}],"at":"2026-12-06T05:07:40Z","contact":"c1","enrollment":"drip:c1:1"}"#
        );
        let mut back = Vec::new();
        assert!(Record::read_row(&text, &mut back).is_ok());
        assert_eq!(back, vec![resumed, sent, later]);
    }

    #[test]
    fn a_row_of_one_record_is_the_record() {
        let record = Record::new(DateTime::<Utc>::UNIX_EPOCH, "c1", RecordKind::Opened);
        let mut alone = String::new();
        record.write_json(&mut alone);
        assert_eq!(Record::row_json(&[&record]), alone);
        assert_eq!(Record::row_json(&[]), "[]");
        let mut back = Vec::new();
        assert!(Record::read_row("[]", &mut back).is_ok() && back.is_empty());
        assert!(Record::read_row(r#"{"records":[{"kind":"sent"}]}"#, &mut back).is_err());
    }

    #[test]
    fn a_common_record_is_written_in_full() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 5, 23, 26, 15)
            .single()
            .unwrap_or_default();
        let mut record = Record::new(at, "c\"1", RecordKind::Sent).step("first");
        record.channel = Some(Channel::Email);
        record.enrollment = Some("drip:c1:1".into());
        record.arrival = true;
        let mut out = String::new();
        record.write_json(&mut out);
        assert_eq!(
            out,
            r#"{"at":"2026-12-05T23:26:15Z","contact":"c\"1","kind":"sent","step":"first","channel":"email","enrollment":"drip:c1:1","arrival":true}"#
        );
    }
}
