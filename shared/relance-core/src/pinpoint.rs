//! Pinpoint journey import (DESIGN §9): the JSON `aws pinpoint get-journey` prints (a
//! `JourneyResponse`, wrapped or bare) turned into a scenario document, every field either
//! mapped or reported with its path.
//!
//! The mapping, activity by activity (the step id is the activity key, lowercased, every
//! character outside `[a-z0-9-]` replaced by `-`):
//! - `EMAIL` / `SMS` / `PUSH` → a `send` step and a message of the same id. Emails name the
//!   journey's template as an SES stored template (`template:`); SMS and push templates are
//!   not in the journey JSON, so their message holds a marked placeholder to replace. Every
//!   template is listed in [`Imported::templates`].
//! - `Wait` → a delay-only step (`WaitFor` → `after`, `WaitUntil` → `until`).
//! - `ConditionalSplit` → an `if` step whose `EvaluationWaitTime` is the step's delay;
//!   message events (`EMAIL_OPEN`, `_email.click`, ...) become `{opened: step}`,
//!   `{clicked: step}`, `{delivered: step}`, ...; segments become `{in_groups: [id]}`.
//! - `MultiCondition` → a `branches` step (`DefaultActivity` → `otherwise`).
//! - `RandomSplit` → a `split` step.
//! - `Holdout` → the scenario's `holdout` when it is the start activity; anywhere else, a
//!   `split` whose held-out path leads to an `end: neutral` step `<id>-held-out`.
//! - `CUSTOM` → `webhook` (an `https://` DeliveryUri) or `invoke` (a Lambda name or ARN).
//! - `ContactCenter` → refused (an error): Relance places no calls.
//! - no `NextActivity` → a shared `end: success` step.
//!
//! Journey settings: `StartCondition` → `launch` and `audience` (a segment id becomes a
//! group, with a warning; an event start's attribute and metric dimensions become the
//! trigger's `where`); `Schedule` → `timezone` (`UTC-05` → `Etc/GMT+5`) and the launch
//! date; `LocalTime` → `local_time`; `Limits` → `once_per` and `frequency_cap`; `QuietTime`
//! → `quiet_hours`. What has no equivalent is a warning at its path; what cannot be written
//! faithfully is an error, and the import is refused.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Map, Value, json};

use crate::duration::IsoDuration;
use crate::problem::Problem;
use crate::scenario::{LAUNCH_KEYS, STEP_KEYS};
use crate::schedule::DateTimeSpec;

/// Why a file is not read at all (everything else is a located [`Problem`]).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// JSON, but not a journey.
    #[error(
        "not a Pinpoint journey: expected the output of `aws pinpoint get-journey` \
         ({{\"JourneyResponse\": {{\"Activities\": ...}}}}) or a bare JourneyResponse"
    )]
    NotAJourney,
}

/// A message template the imported scenario names, to create (or to copy) before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateNeeded {
    /// `email`, `sms` or `push`.
    pub channel: &'static str,
    /// The Pinpoint template name.
    pub name: String,
    /// The Pinpoint template version the journey pinned, if any.
    pub version: Option<String>,
    /// The message of the scenario that uses it.
    pub message: String,
}

impl TemplateNeeded {
    /// What to do about it, in one sentence.
    pub fn todo(&self) -> String {
        let version = self
            .version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        match self.channel {
            "email" => format!(
                "email template \"{}\"{version}: create an SES stored template of that name \
                 (aws sesv2 create-email-template) for message {}",
                self.name, self.message
            ),
            channel => format!(
                "{channel} template \"{}\"{version}: copy its text into messages.{} \
                 (it holds a placeholder)",
                self.name, self.message
            ),
        }
    }
}

/// The outcome of an import: the scenario document and what the import has to say.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The scenario, keys in the order a scenario file is written.
    pub scenario: Value,
    /// Errors (the journey cannot be written faithfully) and warnings (something was
    /// changed or left out), located in the journey JSON.
    pub problems: Vec<Problem>,
    /// The templates the scenario names.
    pub templates: Vec<TemplateNeeded>,
    /// Where the journey came from (its id, application, state), for the file's header.
    pub source: Vec<String>,
}

impl Imported {
    /// True when some problem is an error: the scenario is not to be used as written.
    pub fn refused(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    /// The scenario as a YAML file, headed by comments: its source, the templates to
    /// create and every warning.
    pub fn to_yaml(&self) -> String {
        let mut out =
            String::from("# Imported from Amazon Pinpoint by `relance import pinpoint`.\n");
        for line in &self.source {
            out.push_str(&format!("# {line}\n"));
        }
        if !self.templates.is_empty() {
            out.push_str("# Templates to create:\n");
            for t in &self.templates {
                out.push_str(&format!("#   - {}\n", t.todo()));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("# Import notes:\n");
            for p in &self.problems {
                out.push_str(&format!("#   - {}\n", one_line(&p.to_string())));
            }
        }
        // A Value always serializes to YAML.
        out.push_str(&serde_yaml::to_string(&self.scenario).unwrap_or_default());
        out
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// The Pinpoint message events a condition can name, by what Relance calls them.
const ENGAGEMENT: [(&str, &[&str]); 5] = [
    ("opened", &["open", "opened"]),
    ("clicked", &["click", "clicked"]),
    (
        "delivered",
        &["delivered", "delivery", "success", "received"],
    ),
    ("complained", &["complaint", "complained"]),
    (
        "unsubscribed",
        &["unsubscribe", "unsubscribed", "optout", "opt_out"],
    ),
];

/// The engagement condition key for a Pinpoint message event (`EMAIL_OPEN`,
/// `EMAIL_CLICKED`, `_email.open`, `SMS_DELIVERED`, `_push.opened`, ...).
pub fn engagement_of(event: &str) -> Option<&'static str> {
    let v = event
        .trim_start_matches('_')
        .to_ascii_lowercase()
        .replace(['.', '-'], "_");
    let rest = ["email_", "sms_", "push_", "inapp_", "in_app_"]
        .iter()
        .find_map(|p| v.strip_prefix(p))
        .unwrap_or(&v);
    ENGAGEMENT
        .iter()
        .find(|(_, names)| names.contains(&rest))
        .map(|(key, _)| *key)
}

/// A step id from an activity key: lowercased, every character outside `[a-z0-9-]` a `-`.
pub fn step_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A scenario id from a journey name: as [`step_id`], runs of `-` collapsed, trimmed.
pub fn scenario_id(name: &str) -> String {
    let mut out = String::new();
    for c in step_id(name).chars() {
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').to_string()
}

/// A Pinpoint `Timezone` (`UTC`, `UTC-05`, `UTC+05:30`) as an IANA zone, with a note when
/// the zone is a named one standing for a fractional offset (its daylight saving may differ).
pub fn timezone_of(pinpoint: &str) -> Result<(String, Option<String>), String> {
    let bad =
        || format!("\"{pinpoint}\" is not a Pinpoint time zone such as UTC, UTC-05 or UTC+05:30");
    let s = pinpoint.trim();
    let Some(rest) = s.strip_prefix("UTC").or_else(|| s.strip_prefix("GMT")) else {
        return Err(bad());
    };
    if rest.is_empty() {
        return Ok(("UTC".into(), None));
    }
    let (sign, digits) = if let Some(d) = rest.strip_prefix('+') {
        (1, d)
    } else if let Some(d) = rest.strip_prefix('-') {
        (-1, d)
    } else {
        return Err(bad());
    };
    let (h, m) = digits.split_once(':').unwrap_or((digits, "00"));
    let (Ok(h), Ok(m)) = (h.parse::<i32>(), m.parse::<i32>()) else {
        return Err(bad());
    };
    if m == 0 {
        // Etc/GMT zones carry the POSIX sign: UTC-05 is Etc/GMT+5.
        return match sign * h {
            0 => Ok(("UTC".into(), None)),
            o if (-12..=14).contains(&o) => Ok((
                format!("Etc/GMT{}{}", if o > 0 { '-' } else { '+' }, o.abs()),
                None,
            )),
            _ => Err(bad()),
        };
    }
    let named = match (sign * h, m) {
        (3, 30) => "Asia/Tehran",
        (4, 30) => "Asia/Kabul",
        (5, 30) => "Asia/Kolkata",
        (5, 45) => "Asia/Kathmandu",
        (6, 30) => "Asia/Yangon",
        (8, 45) => "Australia/Eucla",
        (9, 30) => "Australia/Darwin",
        (10, 30) => "Australia/Lord_Howe",
        (12, 45) | (13, 45) => "Pacific/Chatham",
        (-2, 30) | (-3, 30) => "America/St_Johns",
        (-9, 30) => "Pacific/Marquesas",
        _ => return Err(bad()),
    };
    Ok((
        named.into(),
        Some(format!(
            "{pinpoint} has no Etc/ zone: written as {named}, a zone at that offset (check \
             its daylight saving against your audience)"
        )),
    ))
}

/// The activity types, as the `Activity` object names them.
const ACTIVITY_TYPES: [&str; 10] = [
    "EMAIL",
    "SMS",
    "PUSH",
    "CUSTOM",
    "Wait",
    "ConditionalSplit",
    "MultiCondition",
    "RandomSplit",
    "Holdout",
    "ContactCenter",
];

/// Fields of a `JourneyResponse` that describe where it came from: kept in the file's
/// header comment, not as scenario settings.
const SOURCE_FIELDS: [&str; 6] = [
    "Id",
    "ApplicationId",
    "CreationDate",
    "LastModifiedDate",
    "State",
    "tags",
];

/// Reads a journey's JSON and writes the scenario.
pub fn import(text: &str) -> Result<Imported, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let journey = match v.get("JourneyResponse") {
        Some(inner) => inner,
        None => &v,
    };
    let Some(journey) = journey.as_object() else {
        return Err(ImportError::NotAJourney);
    };
    if !journey.contains_key("Activities") {
        return Err(ImportError::NotAJourney);
    }
    let mut importer = Importer::default();
    if let Some(map) = v.as_object()
        && map.contains_key("JourneyResponse")
    {
        for k in map.keys().filter(|k| *k != "JourneyResponse") {
            importer.warn(k.clone(), "not imported: not part of the journey");
        }
    }
    Ok(importer.journey(journey))
}

#[derive(Default)]
struct Importer {
    problems: Vec<Problem>,
    templates: Vec<TemplateNeeded>,
    /// Activity key → step id.
    ids: HashMap<String, String>,
    /// Activity key → its type (`EMAIL`, `Wait`, ...).
    kinds: HashMap<String, &'static str>,
    /// The shared `end: success` step's id, once some activity needs it.
    end: Option<String>,
    /// Step ids taken (activities and generated steps).
    taken: HashSet<String>,
}

/// `a.b`, or `b` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Importer {
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::warning(path, message));
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::error(path, message));
    }

    /// Warns about each key of `map` outside `known`: nothing is dropped silently.
    fn rest(&mut self, map: &Map<String, Value>, path: &str, known: &[&str]) {
        for (k, v) in map {
            if !known.contains(&k.as_str()) && !v.is_null() {
                self.warn(
                    join(path, k),
                    "not imported: Relance has no equivalent for this field",
                );
            }
        }
    }

    /// The object at `map[key]`, or an error when it is something else.
    fn obj<'a>(
        &mut self,
        map: &'a Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.error(join(path, key), "expected an object");
                None
            }
        }
    }

    fn string<'a>(
        &mut self,
        map: &'a Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<&'a str> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.error(join(path, key), "expected a string");
                None
            }
        }
    }

    fn number(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<f64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => {
                self.error(join(path, key), "expected a number");
                None
            }
        }
    }

    fn bool(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(join(path, key), "expected true or false");
                None
            }
        }
    }

    fn strings(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Vec<String> {
        match map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                self.error(join(path, key), "expected a list of strings");
                Vec::new()
            }
        }
    }

    /// A free step id derived from `wanted`.
    fn fresh(&mut self, wanted: &str) -> String {
        let mut id = wanted.to_string();
        let mut n = 2;
        while self.taken.contains(&id) {
            id = format!("{wanted}-{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        id
    }

    /// The step a `NextActivity` (or its absence) leads to; unknown keys are errors.
    fn target(&mut self, next: Option<&str>, path: &str, queue: &mut VecDeque<String>) -> String {
        match next {
            None | Some("") => {
                if self.end.is_none() {
                    let id = self.fresh("end");
                    self.end = Some(id);
                }
                self.end.clone().unwrap_or_default()
            }
            Some(key) => match self.ids.get(key) {
                Some(id) => {
                    queue.push_back(key.to_string());
                    id.clone()
                }
                None => {
                    self.error(path, format!("\"{key}\" names no activity of the journey"));
                    step_id(key)
                }
            },
        }
    }

    fn journey(&mut self, j: &Map<String, Value>) -> Imported {
        let mut doc = Map::new();
        let mut source = Vec::new();
        // Name → id and name.
        let name = self.string(j, "", "Name").unwrap_or_default().to_string();
        let mut id = scenario_id(&name);
        if id.is_empty() {
            let fallback = j.get("Id").and_then(Value::as_str).map(scenario_id);
            id = fallback
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "pinpoint-journey".into());
            self.warn(
                "Name",
                format!("the journey has no usable Name: the scenario id is \"{id}\""),
            );
        }
        doc.insert("id".into(), json!(id));
        doc.insert(
            "name".into(),
            json!(if name.is_empty() {
                id.clone()
            } else {
                name.clone()
            }),
        );
        if let Some(description) = j
            .get("StartCondition")
            .and_then(|s| s.get("Description"))
            .and_then(Value::as_str)
        {
            doc.insert("description".into(), json!(description));
        }
        for key in SOURCE_FIELDS {
            if let Some(v) = j.get(key).filter(|v| !v.is_null()) {
                let shown = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                source.push(format!("{key}: {shown}"));
            }
        }

        // Schedule → timezone (and the launch's date, below).
        let schedule = self.obj(j, "", "Schedule");
        let mut timezone = "UTC".to_string();
        if let Some(s) = schedule {
            if let Some(tz) = self.string(s, "Schedule", "Timezone") {
                match timezone_of(tz) {
                    Ok((zone, note)) => {
                        timezone = zone;
                        if let Some(note) = note {
                            self.warn("Schedule.Timezone", note);
                        }
                    }
                    Err(e) => self.error("Schedule.Timezone", e),
                }
            }
            if self.string(s, "Schedule", "EndTime").is_some() {
                self.warn(
                    "Schedule.EndTime",
                    "not imported: a scenario has no end date; pause or archive it then \
                     (relance scenario pause|archive)",
                );
            }
            self.rest(s, "Schedule", &["Timezone", "StartTime", "EndTime"]);
        }
        doc.insert("timezone".into(), json!(timezone));
        if self.bool(j, "", "LocalTime") == Some(true) {
            doc.insert("local_time".into(), json!(true));
        }

        // StartCondition → launch and audience.
        let start_time = schedule
            .and_then(|s| s.get("StartTime"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let (launch, audience) = self.start(j, start_time.as_deref());
        doc.insert("launch".into(), launch);
        if let Some(a) = audience {
            doc.insert("audience".into(), a);
        }

        // Limits → once_per and frequency_cap.
        self.limits(j, &mut doc);

        // QuietTime → quiet_hours.
        if let Some(q) = self.obj(j, "", "QuietTime") {
            let from = self.string(q, "QuietTime", "Start");
            let to = self.string(q, "QuietTime", "End");
            match (from, to) {
                (Some(from), Some(to)) => {
                    doc.insert("quiet_hours".into(), json!({"from": from, "to": to}));
                    if self.bool(j, "", "WaitForQuietTime") != Some(true) {
                        self.warn(
                            "WaitForQuietTime",
                            "Pinpoint did not send messages due inside quiet time \
                             (WaitForQuietTime is not true); Relance holds them until it ends",
                        );
                    }
                }
                _ => self.error("QuietTime", "a quiet time needs Start and End"),
            }
            self.rest(q, "QuietTime", &["Start", "End"]);
        }

        // Activities → steps and messages.
        let (steps, messages, holdout) = self.activities(j);
        if let Some(h) = holdout {
            doc.insert("holdout".into(), json!({"percent": h}));
        }
        if !messages.is_empty() {
            doc.insert("messages".into(), Value::Object(messages));
        }
        doc.insert("steps".into(), Value::Array(steps));

        // Journey fields with no equivalent, named one by one.
        for (key, why) in [
            (
                "RefreshFrequency",
                "segment refreshes have no equivalent: the launch evaluates the audience (the contacts carrying the group) when it runs",
            ),
            (
                "RefreshOnSegmentUpdate",
                "segment updates do not re-launch a scenario: import the updated contacts and launch it again",
            ),
            (
                "TimezoneEstimationMethods",
                "Relance does not guess time zones: give contacts a timezone",
            ),
            (
                "SendingSchedule",
                "not imported: Relance has no sending schedule besides quiet_hours",
            ),
            (
                "OpenHours",
                "not imported: open hours (Amazon Connect) have no equivalent; quiet_hours holds sends outside a window",
            ),
            (
                "ClosedDays",
                "not imported: closed days (Amazon Connect) have no equivalent",
            ),
            (
                "JourneyChannelSettings",
                "not imported: Amazon Connect campaign settings have no equivalent",
            ),
        ] {
            if j.get(key)
                .is_some_and(|v| !v.is_null() && v != &json!(false))
            {
                self.warn(key, why);
            }
        }
        let mut known: Vec<&str> = vec![
            "Name",
            "Schedule",
            "LocalTime",
            "StartCondition",
            "StartActivity",
            "Activities",
            "Limits",
            "QuietTime",
            "WaitForQuietTime",
            "RefreshFrequency",
            "RefreshOnSegmentUpdate",
            "TimezoneEstimationMethods",
            "SendingSchedule",
            "OpenHours",
            "ClosedDays",
            "JourneyChannelSettings",
        ];
        known.extend(SOURCE_FIELDS);
        self.rest(j, "", &known);
        Imported {
            scenario: Value::Object(doc),
            problems: std::mem::take(&mut self.problems),
            templates: std::mem::take(&mut self.templates),
            source,
        }
    }

    /// `StartCondition` (and the schedule's start) → the launch and the audience.
    fn start(
        &mut self,
        j: &Map<String, Value>,
        start_time: Option<&str>,
    ) -> (Value, Option<Value>) {
        let segment_warning = |seg: &str| {
            format!(
                "segment \"{seg}\" becomes audience group \"{seg}\": contacts carrying that \
                 group stand for the segment (import them with groups: [{seg}])"
            )
        };
        let Some(sc) = self.obj(j, "", "StartCondition") else {
            self.warn(
                "StartCondition",
                "the journey has no start condition: written as a manual launch",
            );
            return (json!({"type": "manual"}), None);
        };
        let mut audience = None;
        let launch;
        if let Some(e) = self.obj(sc, "StartCondition", "EventStartCondition") {
            let path = "StartCondition.EventStartCondition";
            if let Some(seg) = self.string(e, path, "SegmentId") {
                self.warn(join(path, "SegmentId"), segment_warning(seg));
                audience = Some(json!({"groups": [seg]}));
            }
            let mut trigger = Map::new();
            trigger.insert("type".into(), json!("trigger"));
            match self.obj(e, path, "EventFilter") {
                Some(filter) => {
                    let fpath = join(path, "EventFilter");
                    if let Some(t) = self.string(filter, &fpath, "FilterType")
                        && t != "ENDPOINT"
                        && t != "SYSTEM"
                    {
                        self.error(join(&fpath, "FilterType"), "expected ENDPOINT or SYSTEM");
                    }
                    let dpath = join(&fpath, "Dimensions");
                    match self.obj(filter, &fpath, "Dimensions") {
                        Some(d) => {
                            let (name, filter_condition) = self.event_filter(d, &dpath);
                            if let Some(name) = name {
                                if name.starts_with('_') {
                                    self.warn(
                                        join(&dpath, "EventType"),
                                        format!(
                                            "\"{name}\" is a Pinpoint system event: send it to \
                                             Relance as an activity event of that name"
                                        ),
                                    );
                                }
                                trigger.insert("event".into(), json!(name));
                            }
                            if let Some(c) = filter_condition {
                                if LAUNCH_KEYS.contains(&"where") {
                                    trigger.insert("where".into(), c);
                                } else {
                                    self.error(
                                        dpath.clone(),
                                        "the event's attribute and metric dimensions need the \
                                         trigger's `where` (DESIGN §9), which this build's \
                                         scenario format does not have yet",
                                    );
                                }
                            }
                        }
                        None => {
                            self.error(dpath, "an event start needs Dimensions with an EventType")
                        }
                    }
                    self.rest(filter, &fpath, &["FilterType", "Dimensions"]);
                }
                None => self.error(
                    join(path, "EventFilter"),
                    "an event start needs an EventFilter",
                ),
            }
            if start_time.is_some() {
                self.warn(
                    "Schedule.StartTime",
                    "an event-started scenario starts when it is activated, not at the journey's \
                     start time",
                );
            }
            self.rest(e, path, &["SegmentId", "EventFilter"]);
            launch = Value::Object(trigger);
        } else if let Some(s) = self.obj(sc, "StartCondition", "SegmentStartCondition") {
            let path = "StartCondition.SegmentStartCondition";
            match self.string(s, path, "SegmentId") {
                Some(seg) => {
                    self.warn(join(path, "SegmentId"), segment_warning(seg));
                    audience = Some(json!({"groups": [seg]}));
                }
                None => self.error(join(path, "SegmentId"), "a segment start needs a SegmentId"),
            }
            self.rest(s, path, &["SegmentId"]);
            launch = match start_time {
                Some(t) if t.parse::<DateTimeSpec>().is_ok() => {
                    json!({"type": "fixed_dates", "dates": [t]})
                }
                Some(t) => {
                    self.error(
                        "Schedule.StartTime",
                        format!("\"{t}\" is not an ISO 8601 date-time"),
                    );
                    json!({"type": "manual"})
                }
                None => json!({"type": "manual"}),
            };
        } else {
            self.error(
                "StartCondition",
                "a start condition needs EventStartCondition or SegmentStartCondition",
            );
            launch = json!({"type": "manual"});
        }
        self.rest(
            sc,
            "StartCondition",
            &[
                "Description",
                "EventStartCondition",
                "SegmentStartCondition",
            ],
        );
        (launch, audience)
    }

    /// An `EventDimensions` of a start condition: its one event name and the condition over
    /// the event's properties that its attributes and metrics make.
    fn event_filter(
        &mut self,
        d: &Map<String, Value>,
        path: &str,
    ) -> (Option<String>, Option<Value>) {
        let mut name = None;
        match self.obj(d, path, "EventType") {
            Some(t) => {
                let tpath = join(path, "EventType");
                let values = self.strings(t, &tpath, "Values");
                let exclusive = self.string(t, &tpath, "DimensionType") == Some("EXCLUSIVE");
                if exclusive {
                    self.error(
                        join(&tpath, "DimensionType"),
                        "a trigger starts on one named event: EXCLUSIVE (every event but these) \
                         has no equivalent",
                    );
                }
                match values.as_slice() {
                    [one] => name = Some(one.clone()),
                    [] => self.error(join(&tpath, "Values"), "an event start needs an event name"),
                    [first, ..] => {
                        self.error(
                            join(&tpath, "Values"),
                            format!(
                                "a scenario starts on one event; this journey starts on any of \
                                 {}: import it once per event (keep \"{first}\" here)",
                                values.join(", ")
                            ),
                        );
                        name = Some(first.clone());
                    }
                }
                self.rest(t, &tpath, &["DimensionType", "Values"]);
            }
            None => self.error(join(path, "EventType"), "an event start needs an EventType"),
        }
        let mut clauses = Vec::new();
        if let Some(attrs) = self.obj(d, path, "Attributes") {
            clauses.extend(self.attributes(attrs, &join(path, "Attributes")));
        }
        if let Some(metrics) = self.obj(d, path, "Metrics") {
            clauses.extend(self.metrics(metrics, &join(path, "Metrics")));
        }
        self.rest(d, path, &["EventType", "Attributes", "Metrics"]);
        (name, all_of(clauses))
    }

    /// `{name: {AttributeType, Values}}` → profile clauses (the field named as the attribute).
    fn attributes(&mut self, attrs: &Map<String, Value>, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for (field, dim) in attrs {
            let apath = join(path, field);
            let Some(dim) = dim.as_object() else {
                self.error(apath, "expected {AttributeType, Values}");
                continue;
            };
            let values = self.strings(dim, &apath, "Values");
            let kind = self
                .string(dim, &apath, "AttributeType")
                .unwrap_or("INCLUSIVE");
            let clause = |op: &str, value: Value| json!({"field": field, "op": op, "value": value});
            let c = match (kind, values.as_slice()) {
                ("INCLUSIVE", _) => Some(clause("in", json!(values))),
                ("EXCLUSIVE", _) => Some(json!({"not": clause("in", json!(values))})),
                ("CONTAINS", _) => any_of(
                    values
                        .iter()
                        .map(|v| clause("contains", json!(v)))
                        .collect(),
                ),
                ("BEFORE", [v]) => Some(clause("before", json!(v))),
                ("AFTER", [v]) => Some(clause("after", json!(v))),
                ("ON", [v]) => Some(clause("starts_with", json!(v.get(..10).unwrap_or(v)))),
                ("BETWEEN", [a, b]) => {
                    Some(json!({"all": [clause("after", json!(a)), clause("before", json!(b))]}))
                }
                ("NOT_BETWEEN", [a, b]) => Some(
                    json!({"not": {"all": [clause("after", json!(a)), clause("before", json!(b))]}}),
                ),
                _ => {
                    self.error(
                        apath.clone(),
                        format!(
                            "AttributeType {kind} with {} value(s) has no equivalent",
                            values.len()
                        ),
                    );
                    None
                }
            };
            if kind == "ON" {
                self.warn(
                    apath.clone(),
                    "ON is compared on the date written first (the field starts with it)",
                );
            }
            self.rest(dim, &apath, &["AttributeType", "Values"]);
            out.extend(c);
        }
        out
    }

    /// `{name: {ComparisonOperator, Value}}` → numeric profile clauses.
    fn metrics(&mut self, metrics: &Map<String, Value>, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for (field, dim) in metrics {
            let mpath = join(path, field);
            let Some(dim) = dim.as_object() else {
                self.error(mpath, "expected {ComparisonOperator, Value}");
                continue;
            };
            let op = match self.string(dim, &mpath, "ComparisonOperator") {
                Some("GREATER_THAN") => Some("gt"),
                Some("GREATER_THAN_OR_EQUAL") => Some("ge"),
                Some("LESS_THAN") => Some("lt"),
                Some("LESS_THAN_OR_EQUAL") => Some("le"),
                Some("EQUAL") => Some("eq"),
                other => {
                    self.error(
                        join(&mpath, "ComparisonOperator"),
                        format!("{other:?} is not a Pinpoint comparison operator"),
                    );
                    None
                }
            };
            let value = dim.get("Value").filter(|v| v.is_number()).cloned();
            if value.is_none() {
                self.error(
                    join(&mpath, "Value"),
                    "a metric dimension needs a numeric Value",
                );
            }
            if let (Some(op), Some(value)) = (op, value) {
                out.push(json!({"field": field, "op": op, "value": value}));
            }
            self.rest(dim, &mpath, &["ComparisonOperator", "Value"]);
        }
        out
    }

    /// `Limits` → `once_per` and `frequency_cap`, the rest warned about.
    fn limits(&mut self, j: &Map<String, Value>, doc: &mut Map<String, Value>) {
        let limits = self.obj(j, "", "Limits");
        let empty = Map::new();
        let l = limits.unwrap_or(&empty);
        let interval = self.string(l, "Limits", "EndpointReentryInterval");
        let cap = self.number(l, "Limits", "EndpointReentryCap");
        match (interval, cap) {
            (Some(i), _) => match i.parse::<IsoDuration>() {
                Ok(_) => {
                    doc.insert("once_per".into(), json!(i));
                    if cap.is_some_and(|c| c > 1.0) {
                        self.warn(
                            "Limits.EndpointReentryCap",
                            "a cap on the number of entries has no equivalent: once_per keeps \
                             the re-entry interval",
                        );
                    }
                }
                Err(e) => self.error("Limits.EndpointReentryInterval", e.to_string()),
            },
            (None, Some(0.0)) => {}
            (None, Some(c)) if c > 1.0 => self.warn(
                "Limits.EndpointReentryCap",
                format!(
                    "a contact may enter {c} times: a cap on the number of entries has no \
                     equivalent, so re-entry is not limited"
                ),
            ),
            (None, _) => {
                // Pinpoint lets a participant in once unless re-entry is allowed.
                doc.insert("once_per".into(), json!("P100Y"));
                self.warn(
                    "Limits.EndpointReentryCap",
                    "a participant enters the journey once: written as once_per: P100Y",
                );
            }
        }
        let daily = self.number(l, "Limits", "DailyCap").filter(|c| *c > 0.0);
        let timeframe = self.obj(l, "Limits", "TimeframeCap");
        let timeframe = timeframe.and_then(|t| {
            let cap = self.number(t, "Limits.TimeframeCap", "Cap")?;
            let days = self.number(t, "Limits.TimeframeCap", "Days")?;
            self.rest(t, "Limits.TimeframeCap", &["Cap", "Days"]);
            (cap > 0.0 && days > 0.0).then_some((cap, days))
        });
        match (daily, timeframe) {
            (Some(d), t) => {
                doc.insert(
                    "frequency_cap".into(),
                    json!({"max": d as u64, "per": "P1D"}),
                );
                if t.is_some() {
                    self.warn(
                        "Limits.TimeframeCap",
                        "a scenario has one frequency cap: DailyCap is kept, this one is not",
                    );
                }
            }
            (None, Some((cap, days))) => {
                doc.insert(
                    "frequency_cap".into(),
                    json!({"max": cap as u64, "per": format!("P{}D", days as u64)}),
                );
            }
            (None, None) => {}
        }
        if self
            .number(l, "Limits", "TotalCap")
            .is_some_and(|c| c > 0.0)
        {
            self.warn(
                "Limits.TotalCap",
                "a cap on all sends of a participant has no equivalent (frequency_cap counts \
                 within a window)",
            );
        }
        if l.contains_key("MessagesPerSecond") {
            self.warn(
                "Limits.MessagesPerSecond",
                "not imported: the sending rate is the SES / SNS account's",
            );
        }
        self.rest(
            l,
            "Limits",
            &[
                "EndpointReentryInterval",
                "EndpointReentryCap",
                "DailyCap",
                "TimeframeCap",
                "TotalCap",
                "MessagesPerSecond",
            ],
        );
    }

    /// Every activity reachable from the start, in the order it is reached: the steps, the
    /// messages and the scenario's holdout percent.
    fn activities(
        &mut self,
        j: &Map<String, Value>,
    ) -> (Vec<Value>, Map<String, Value>, Option<Value>) {
        let Some(activities) = self.obj(j, "", "Activities") else {
            self.error("Activities", "a journey needs activities");
            return (Vec::new(), Map::new(), None);
        };
        if activities.is_empty() {
            self.error("Activities", "a journey needs activities");
        }
        let mut by_id: HashMap<String, String> = HashMap::new();
        for (key, a) in activities {
            let id = step_id(key);
            if let Some(other) = by_id.insert(id.clone(), key.clone()) {
                self.error(
                    join("Activities", key),
                    format!("activities \"{other}\" and \"{key}\" both become step \"{id}\""),
                );
            }
            self.ids.insert(key.clone(), id.clone());
            self.taken.insert(id);
            let kinds: Vec<&'static str> = ACTIVITY_TYPES
                .into_iter()
                .filter(|t| a.get(*t).is_some_and(|v| !v.is_null()))
                .collect();
            match kinds.as_slice() {
                [one] => {
                    self.kinds.insert(key.clone(), one);
                }
                [] => self.error(
                    join("Activities", key),
                    format!("an activity needs one of {}", ACTIVITY_TYPES.join(", ")),
                ),
                many => self.error(
                    join("Activities", key),
                    format!(
                        "an activity has one type, this one has {}",
                        many.join(" and ")
                    ),
                ),
            }
        }
        let start = match self.string(j, "", "StartActivity") {
            Some(s) if activities.contains_key(s) => Some(s.to_string()),
            Some(s) => {
                self.error("StartActivity", format!("\"{s}\" names no activity"));
                None
            }
            None => {
                self.error("StartActivity", "a journey needs a StartActivity");
                None
            }
        };
        let mut holdout = None;
        let mut queue = VecDeque::new();
        let mut steps = Vec::new();
        let mut messages = Map::new();
        if let Some(start) = start {
            // A holdout as the start activity is the scenario's holdout.
            let mut first = start.clone();
            if self.kinds.get(&start) == Some(&"Holdout")
                && let Some(h) = activities[&start].get("Holdout").and_then(Value::as_object)
            {
                let path = format!("Activities.{start}.Holdout");
                match self.number(h, &path, "Percentage") {
                    Some(p) if p > 0.0 && p < 100.0 => holdout = h.get("Percentage").cloned(),
                    _ => self.error(
                        join(&path, "Percentage"),
                        "a holdout holds out a percentage above 0 and below 100",
                    ),
                }
                match self.string(h, &path, "NextActivity") {
                    Some(next) if activities.contains_key(next) => first = next.to_string(),
                    _ => self.error(
                        join(&path, "NextActivity"),
                        "a starting holdout needs the activity the others go on to",
                    ),
                }
                self.rest(h, &path, &["Percentage", "NextActivity"]);
                self.rest(
                    activities[&start].as_object().unwrap_or(&Map::new()),
                    &format!("Activities.{start}"),
                    &["Holdout"],
                );
                self.taken.remove(&step_id(&start));
            }
            queue.push_back(first);
        }
        let mut seen = HashSet::new();
        while let Some(key) = queue.pop_front() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let Some(a) = activities.get(&key).and_then(Value::as_object) else {
                continue;
            };
            self.activity(&key, a, &mut queue, &mut steps, &mut messages);
        }
        for key in activities.keys() {
            let skipped_start = holdout.is_some()
                && self.ids.get(key).is_some_and(|_| {
                    j.get("StartActivity").and_then(Value::as_str) == Some(key.as_str())
                });
            if !seen.contains(key) && !skipped_start {
                self.warn(
                    join("Activities", key),
                    "not imported: no path from the StartActivity leads to this activity",
                );
            }
        }
        if let Some(end) = &self.end {
            steps.push(json!({"id": end, "end": "success"}));
        }
        (steps, messages, holdout)
    }

    fn activity(
        &mut self,
        key: &str,
        a: &Map<String, Value>,
        queue: &mut VecDeque<String>,
        steps: &mut Vec<Value>,
        messages: &mut Map<String, Value>,
    ) {
        let id = self.ids[key].clone();
        let base = format!("Activities.{key}");
        let mut step = Map::new();
        step.insert("id".into(), json!(id));
        if let Some(d) = self.string(a, &base, "Description") {
            step.insert("description".into(), json!(d));
        }
        let Some(&kind) = self.kinds.get(key) else {
            return;
        };
        self.rest(a, &base, &[kind, "Description"]);
        let path = join(&base, kind);
        let Some(body) = self.obj(a, &base, kind) else {
            return;
        };
        let mut extra_steps = Vec::new();
        let known: &[&str] = match kind {
            "EMAIL" | "SMS" | "PUSH" => {
                let message = self.message(kind, body, &path, &id);
                messages.insert(id.clone(), message);
                step.insert("send".into(), json!(id));
                let next = self.string(body, &path, "NextActivity");
                let next = self.target(next, &join(&path, "NextActivity"), queue);
                step.insert("next".into(), json!(next));
                &[
                    "MessageConfig",
                    "NextActivity",
                    "TemplateName",
                    "TemplateVersion",
                ]
            }
            "CUSTOM" => {
                self.custom(body, &path, &mut step);
                let next = self.string(body, &path, "NextActivity");
                let next = self.target(next, &join(&path, "NextActivity"), queue);
                step.insert("next".into(), json!(next));
                &[
                    "DeliveryUri",
                    "EndpointTypes",
                    "MessageConfig",
                    "NextActivity",
                    "TemplateName",
                    "TemplateVersion",
                ]
            }
            "Wait" => {
                match self.obj(body, &path, "WaitTime") {
                    Some(w) => {
                        if let Some(d) = self.wait(w, &join(&path, "WaitTime")) {
                            step.insert("delay".into(), d);
                        }
                    }
                    None => self.error(join(&path, "WaitTime"), "a wait needs a WaitTime"),
                }
                let next = self.string(body, &path, "NextActivity");
                let next = self.target(next, &join(&path, "NextActivity"), queue);
                step.insert("next".into(), json!(next));
                &["WaitTime", "NextActivity"]
            }
            "ConditionalSplit" => {
                let cpath = join(&path, "Condition");
                let within = self.evaluation_wait(body, &path, &mut step);
                let condition = match self.obj(body, &path, "Condition") {
                    Some(c) => self.condition(c, &cpath, within.as_deref()),
                    None => None,
                };
                match condition {
                    Some(c) => {
                        step.insert("if".into(), c);
                    }
                    None => self.error(cpath, "a yes/no split needs a condition"),
                }
                let t = self.string(body, &path, "TrueActivity");
                let t = self.target(t, &join(&path, "TrueActivity"), queue);
                let f = self.string(body, &path, "FalseActivity");
                let f = self.target(f, &join(&path, "FalseActivity"), queue);
                step.insert("then".into(), json!(t));
                step.insert("else".into(), json!(f));
                &[
                    "Condition",
                    "EvaluationWaitTime",
                    "TrueActivity",
                    "FalseActivity",
                ]
            }
            "MultiCondition" => {
                let within = self.evaluation_wait(body, &path, &mut step);
                let mut branches = Vec::new();
                let bpath = join(&path, "Branches");
                let list = body.get("Branches").and_then(Value::as_array);
                if list.is_none_or(|l| l.is_empty()) {
                    self.error(bpath.clone(), "a multivariate split needs branches");
                }
                for (i, b) in list.into_iter().flatten().enumerate() {
                    let ipath = format!("{bpath}[{i}]");
                    let Some(b) = b.as_object() else {
                        self.error(ipath, "expected {Condition, NextActivity}");
                        continue;
                    };
                    let when = match self.obj(b, &ipath, "Condition") {
                        Some(c) => self.simple(c, &join(&ipath, "Condition"), within.as_deref()),
                        None => None,
                    };
                    let next = self.string(b, &ipath, "NextActivity");
                    let next = self.target(next, &join(&ipath, "NextActivity"), queue);
                    match when {
                        Some(when) => branches.push(json!({"when": when, "next": next})),
                        None => self.error(join(&ipath, "Condition"), "a branch needs a condition"),
                    }
                    self.rest(b, &ipath, &["Condition", "NextActivity"]);
                }
                step.insert("branches".into(), Value::Array(branches));
                let d = self.string(body, &path, "DefaultActivity");
                let d = self.target(d, &join(&path, "DefaultActivity"), queue);
                step.insert("otherwise".into(), json!(d));
                &["Branches", "DefaultActivity", "EvaluationWaitTime"]
            }
            "RandomSplit" => {
                let bpath = join(&path, "Branches");
                let list = body.get("Branches").and_then(Value::as_array);
                let mut paths = Vec::new();
                for (i, b) in list.into_iter().flatten().enumerate() {
                    let ipath = format!("{bpath}[{i}]");
                    let Some(b) = b.as_object() else {
                        self.error(ipath, "expected {Percentage, NextActivity}");
                        continue;
                    };
                    let pct = self.number(b, &ipath, "Percentage");
                    let next = self.string(b, &ipath, "NextActivity");
                    let next = self.target(next, &join(&ipath, "NextActivity"), queue);
                    match pct {
                        Some(p) if p > 0.0 => {
                            paths.push(json!({"percent": b["Percentage"], "next": next}))
                        }
                        _ => self.error(
                            join(&ipath, "Percentage"),
                            "a random split path needs a percentage above 0 (remove empty paths)",
                        ),
                    }
                    self.rest(b, &ipath, &["Percentage", "NextActivity"]);
                }
                if paths.len() < 2 {
                    self.error(bpath, "a random split needs at least two paths");
                }
                step.insert("split".into(), Value::Array(paths));
                &["Branches"]
            }
            "Holdout" => {
                let held = self.fresh(&format!("{id}-held-out"));
                let pct = self.number(body, &path, "Percentage");
                let next = self.string(body, &path, "NextActivity");
                let next = self.target(next, &join(&path, "NextActivity"), queue);
                match pct {
                    Some(p) if p > 0.0 && p < 100.0 => {
                        step.insert(
                            "split".into(),
                            json!([
                                {"percent": body.get("Percentage"), "next": held},
                                {"percent": round2(100.0 - p), "next": next},
                            ]),
                        );
                        self.warn(
                            path.clone(),
                            format!(
                                "a holdout inside the journey becomes a split: {p}% go to step \
                                 \"{held}\" (end: neutral); only a holdout at the start is the \
                                 scenario's holdout (reported against the others)"
                            ),
                        );
                    }
                    _ => self.error(
                        join(&path, "Percentage"),
                        "a holdout holds out a percentage above 0 and below 100",
                    ),
                }
                extra_steps.push(json!({"id": held, "end": "neutral"}));
                &["Percentage", "NextActivity"]
            }
            "ContactCenter" => {
                self.error(
                    path.clone(),
                    "a contact-center activity (an Amazon Connect call) has no equivalent: \
                     Relance places no calls; replace it (a task action, a webhook to your \
                     dialer) and import again",
                );
                let next = self.string(body, &path, "NextActivity");
                let next = self.target(next, &join(&path, "NextActivity"), queue);
                step.insert("next".into(), json!(next));
                &["NextActivity"]
            }
            _ => &[],
        };
        self.rest(body, &path, known);
        steps.push(Value::Object(step));
        steps.extend(extra_steps);
    }

    /// A message activity's message (its id is the step's).
    fn message(&mut self, kind: &str, body: &Map<String, Value>, path: &str, id: &str) -> Value {
        let channel = match kind {
            "EMAIL" => "email",
            "SMS" => "sms",
            _ => "push",
        };
        let mut m = Map::new();
        m.insert("channel".into(), json!(channel));
        let template = self.string(body, path, "TemplateName").map(str::to_string);
        let version = self
            .string(body, path, "TemplateVersion")
            .map(str::to_string);
        let name = match &template {
            Some(t) => t.clone(),
            None => {
                self.error(
                    join(path, "TemplateName"),
                    "a message activity needs its TemplateName",
                );
                String::new()
            }
        };
        if version.is_some() && channel == "email" {
            self.warn(
                join(path, "TemplateVersion"),
                "SES stored templates have no versions: create this version under the name",
            );
        }
        let placeholder = format!(
            "TODO: the text of Pinpoint {channel} template {name} (not in the journey JSON)"
        );
        let config = self.obj(body, path, "MessageConfig");
        let cpath = join(path, "MessageConfig");
        match channel {
            "email" => {
                m.insert("template".into(), json!(name));
                if let Some(c) = config {
                    if let Some(from) = self.string(c, &cpath, "FromAddress") {
                        m.insert("from".into(), json!(from));
                    }
                    self.rest(c, &cpath, &["FromAddress"]);
                }
            }
            "sms" => {
                m.insert("text".into(), json!(placeholder));
                if let Some(c) = config {
                    match self.string(c, &cpath, "MessageType") {
                        Some(t @ ("TRANSACTIONAL" | "PROMOTIONAL")) => {
                            m.insert("sms_type".into(), json!(t.to_ascii_lowercase()));
                        }
                        Some(other) => self.warn(
                            join(&cpath, "MessageType"),
                            format!(
                                "not imported: \"{other}\" is not TRANSACTIONAL or PROMOTIONAL"
                            ),
                        ),
                        None => {}
                    }
                    for key in ["OriginationNumber", "SenderId", "EntityId", "TemplateId"] {
                        if c.contains_key(key) {
                            self.warn(
                                join(&cpath, key),
                                "not imported: configure it on the SMS sender (SNS or AWS End \
                                 User Messaging), which picks the number or sender id",
                            );
                        }
                    }
                    self.rest(
                        c,
                        &cpath,
                        &[
                            "MessageType",
                            "OriginationNumber",
                            "SenderId",
                            "EntityId",
                            "TemplateId",
                        ],
                    );
                }
            }
            _ => {
                m.insert("title".into(), json!(name));
                m.insert("body".into(), json!(placeholder));
                if let Some(c) = config {
                    self.rest(c, &cpath, &[]);
                }
            }
        }
        if channel != "email" {
            self.warn(
                join(path, "TemplateName"),
                format!(
                    "Pinpoint {channel} templates are not in the journey JSON: messages.{id} holds \
                     a placeholder; copy the template's text there before activating"
                ),
            );
        }
        self.templates.push(TemplateNeeded {
            channel: match channel {
                "email" => "email",
                "sms" => "sms",
                _ => "push",
            },
            name,
            version,
            message: id.to_string(),
        });
        Value::Object(m)
    }

    /// A CUSTOM activity → `webhook` or `invoke`.
    fn custom(&mut self, body: &Map<String, Value>, path: &str, step: &mut Map<String, Value>) {
        let uri = self.string(body, path, "DeliveryUri").unwrap_or_default();
        if uri.is_empty() {
            self.error(
                join(path, "DeliveryUri"),
                "a custom activity needs its DeliveryUri",
            );
        }
        let data = body
            .get("MessageConfig")
            .and_then(|c| c.get("Data"))
            .and_then(Value::as_str);
        let (key, value) = if uri.starts_with("https://") || uri.starts_with("http://") {
            let mut w = Map::new();
            w.insert("url".into(), json!(uri));
            if let Some(d) = data {
                w.insert("body".into(), json!(d));
            }
            ("webhook", Value::Object(w))
        } else {
            if data.is_some() {
                self.warn(
                    join(path, "MessageConfig.Data"),
                    "not imported: the invoke event carries the contact and the step, not this \
                     data",
                );
            }
            if !uri.is_empty() && !uri.starts_with("arn:") {
                self.warn(
                    join(path, "DeliveryUri"),
                    format!(
                        "\"{uri}\" is a function name: write its ARN, the form the deployment's \
                         list of invocable functions names"
                    ),
                );
            }
            ("invoke", json!({"function": uri}))
        };
        if !STEP_KEYS.contains(&key) {
            self.error(
                path,
                format!(
                    "CUSTOM activities need the webhook or invoke step (DESIGN §9); this \
                     build's scenario format has no `{key}` step yet"
                ),
            );
        }
        step.insert(key.into(), value);
        if body.contains_key("EndpointTypes") {
            self.warn(
                join(path, "EndpointTypes"),
                "not imported: the call is made once per contact, whatever its channels",
            );
        }
        if let Some(c) = body.get("MessageConfig").and_then(Value::as_object) {
            self.rest(c, &join(path, "MessageConfig"), &["Data"]);
        }
        for key in ["TemplateName", "TemplateVersion"] {
            if body.contains_key(key) {
                self.warn(
                    join(path, key),
                    "not imported: the custom call renders no template",
                );
            }
        }
    }

    /// `WaitTime` → a delay.
    fn wait(&mut self, w: &Map<String, Value>, path: &str) -> Option<Value> {
        let out = match (
            self.string(w, path, "WaitFor"),
            self.string(w, path, "WaitUntil"),
        ) {
            (Some(d), None) => match d.parse::<IsoDuration>() {
                Ok(_) => Some(json!({"after": d})),
                Err(e) => {
                    self.error(join(path, "WaitFor"), e.to_string());
                    None
                }
            },
            (None, Some(t)) => match t.parse::<DateTimeSpec>() {
                Ok(_) => Some(json!({"until": t})),
                Err(_) => {
                    self.error(
                        join(path, "WaitUntil"),
                        format!("\"{t}\" is not an ISO 8601 date-time"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.error(path, "a wait time has WaitFor or WaitUntil, not both");
                None
            }
            (None, None) => {
                self.error(path, "a wait time needs WaitFor or WaitUntil");
                None
            }
        };
        self.rest(w, path, &["WaitFor", "WaitUntil"]);
        out
    }

    /// A split's `EvaluationWaitTime` as the step's delay; the duration waited, if any.
    fn evaluation_wait(
        &mut self,
        body: &Map<String, Value>,
        path: &str,
        step: &mut Map<String, Value>,
    ) -> Option<String> {
        let w = self.obj(body, path, "EvaluationWaitTime")?;
        let d = self.wait(w, &join(path, "EvaluationWaitTime"))?;
        let within = d.get("after").and_then(Value::as_str).map(str::to_string);
        step.insert("delay".into(), d);
        within
    }

    /// A `Condition` (`Conditions` joined by `Operator`).
    fn condition(
        &mut self,
        c: &Map<String, Value>,
        path: &str,
        within: Option<&str>,
    ) -> Option<Value> {
        let list = c.get("Conditions").and_then(Value::as_array);
        let mut parts = Vec::new();
        for (i, s) in list.into_iter().flatten().enumerate() {
            let spath = format!("{path}.Conditions[{i}]");
            match s.as_object() {
                Some(s) => parts.extend(self.simple(s, &spath, within)),
                None => self.error(spath, "expected a condition object"),
            }
        }
        if parts.is_empty() {
            self.error(
                join(path, "Conditions"),
                "a condition needs at least one condition",
            );
            return None;
        }
        let op = self.string(c, path, "Operator").unwrap_or("ALL");
        self.rest(c, path, &["Conditions", "Operator"]);
        match op {
            "ANY" => any_of(parts),
            "ALL" => all_of(parts),
            other => {
                self.error(
                    join(path, "Operator"),
                    format!("\"{other}\" is not ALL or ANY"),
                );
                None
            }
        }
    }

    /// A `SimpleCondition`: an event condition, a segment, or segment dimensions.
    fn simple(
        &mut self,
        s: &Map<String, Value>,
        path: &str,
        within: Option<&str>,
    ) -> Option<Value> {
        let mut parts = Vec::new();
        if let Some(e) = self.obj(s, path, "EventCondition") {
            parts.extend(self.event_condition(e, &join(path, "EventCondition"), within));
        }
        if let Some(seg) = self.obj(s, path, "SegmentCondition") {
            let spath = join(path, "SegmentCondition");
            if let Some(id) = self.string(seg, &spath, "SegmentId") {
                self.warn(
                    join(&spath, "SegmentId"),
                    format!(
                        "segment \"{id}\" becomes {{in_groups: [{id}]}}: contacts carrying that \
                         group stand for the segment"
                    ),
                );
                parts.push(json!({"in_groups": [id]}));
            } else {
                self.error(
                    join(&spath, "SegmentId"),
                    "a segment condition needs a SegmentId",
                );
            }
            self.rest(seg, &spath, &["SegmentId"]);
        }
        for key in ["segmentDimensions", "SegmentDimensions"] {
            if let Some(d) = self.obj(s, path, key) {
                parts.extend(self.segment_dimensions(d, &join(path, key)));
            }
        }
        self.rest(
            s,
            path,
            &[
                "EventCondition",
                "SegmentCondition",
                "segmentDimensions",
                "SegmentDimensions",
            ],
        );
        if parts.is_empty() {
            self.error(
                path,
                "a condition needs EventCondition, SegmentCondition or segmentDimensions",
            );
        }
        all_of(parts)
    }

    /// An `EventCondition`: a message event of a send (`MessageActivity`), or an event.
    fn event_condition(
        &mut self,
        e: &Map<String, Value>,
        path: &str,
        within: Option<&str>,
    ) -> Option<Value> {
        let dpath = join(path, "Dimensions");
        let Some(d) = self.obj(e, path, "Dimensions") else {
            self.error(
                dpath,
                "an event condition needs Dimensions with an EventType",
            );
            return None;
        };
        let tpath = join(&dpath, "EventType");
        let (values, exclusive) = match self.obj(d, &dpath, "EventType") {
            Some(t) => {
                let v = self.strings(t, &tpath, "Values");
                let x = self.string(t, &tpath, "DimensionType") == Some("EXCLUSIVE");
                self.rest(t, &tpath, &["DimensionType", "Values"]);
                (v, x)
            }
            None => (Vec::new(), false),
        };
        if values.is_empty() {
            self.error(
                join(&tpath, "Values"),
                "an event condition needs an event type",
            );
            return None;
        }
        for key in ["Attributes", "Metrics"] {
            if d.get(key)
                .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            {
                self.error(
                    join(&dpath, key),
                    "a condition on an event's attributes or metrics has no equivalent in a \
                     step condition",
                );
            }
        }
        self.rest(d, &dpath, &["EventType", "Attributes", "Metrics"]);
        let mut parts = Vec::new();
        match self.string(e, path, "MessageActivity") {
            Some(activity) => {
                let apath = join(path, "MessageActivity");
                let step = match (self.ids.get(activity), self.kinds.get(activity)) {
                    (Some(id), Some(&("EMAIL" | "SMS" | "PUSH"))) => id.clone(),
                    (Some(_), _) => {
                        self.error(apath, format!("\"{activity}\" is not a message activity"));
                        return None;
                    }
                    (None, _) => {
                        self.error(apath, format!("\"{activity}\" names no activity"));
                        return None;
                    }
                };
                for (i, v) in values.iter().enumerate() {
                    match engagement_of(v) {
                        Some(key) => parts.push(json!({key: step})),
                        None => self.error(
                            format!("{tpath}.Values[{i}]"),
                            format!(
                                "message event \"{v}\" has no equivalent (Relance tests delivered, \
                                 opened, clicked, complained, unsubscribed)"
                            ),
                        ),
                    }
                }
            }
            None => {
                for v in &values {
                    let mut c = Map::new();
                    c.insert("event".into(), json!(v));
                    if let Some(w) = within {
                        c.insert("within".into(), json!(w));
                    }
                    parts.push(Value::Object(c));
                }
                self.warn(
                    tpath.clone(),
                    match within {
                        Some(w) => format!("the event is looked for in the {w} before the check"),
                        None => "the event is looked for in the contact's whole history".into(),
                    },
                );
            }
        }
        self.rest(e, path, &["Dimensions", "MessageActivity"]);
        let c = any_of(parts)?;
        Some(if exclusive { json!({"not": c}) } else { c })
    }

    /// `SegmentDimensions` → profile clauses; device, location and behaviour are refused.
    fn segment_dimensions(&mut self, d: &Map<String, Value>, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for key in ["Attributes", "UserAttributes"] {
            if let Some(a) = self.obj(d, path, key) {
                let apath = join(path, key);
                if !a.is_empty() {
                    self.warn(
                        apath.clone(),
                        "endpoint and user attributes are read as contact fields of the same name",
                    );
                }
                out.extend(self.attributes(a, &apath));
            }
        }
        if let Some(m) = self.obj(d, path, "Metrics") {
            out.extend(self.metrics(m, &join(path, "Metrics")));
        }
        for key in ["Behavior", "Demographic", "Location"] {
            if d.get(key).is_some_and(|v| !v.is_null()) {
                self.error(
                    join(path, key),
                    format!(
                        "{key} dimensions (devices, locations, app sessions) have no equivalent: \
                         store what you need as a contact field and test that"
                    ),
                );
            }
        }
        self.rest(
            d,
            path,
            &[
                "Attributes",
                "UserAttributes",
                "Metrics",
                "Behavior",
                "Demographic",
                "Location",
            ],
        );
        out
    }
}

/// `{all: [..]}`, or the one clause, or nothing.
fn all_of(mut parts: Vec<Value>) -> Option<Value> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({"all": parts})),
    }
}

/// `{any: [..]}`, or the one clause, or nothing.
fn any_of(mut parts: Vec<Value>) -> Option<Value> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({"any": parts})),
    }
}

/// A percent with at most 2 decimals.
fn round2(p: f64) -> Value {
    let r = (p * 100.0).round() / 100.0;
    if r.fract() == 0.0 {
        json!(r as u64)
    } else {
        json!(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_design_9() {
        assert_eq!(step_id("Viv6yKziaa"), "viv6ykziaa");
        assert_eq!(step_id("send_email.1"), "send-email-1");
        assert_eq!(
            scenario_id("  Welcome -- New_Subscribers!! "),
            "welcome-new-subscribers"
        );
    }

    #[test]
    fn time_zones_carry_the_posix_sign() {
        assert_eq!(timezone_of("UTC-05").map(|t| t.0), Ok("Etc/GMT+5".into()));
        assert_eq!(timezone_of("UTC+01").map(|t| t.0), Ok("Etc/GMT-1".into()));
        assert_eq!(timezone_of("UTC").map(|t| t.0), Ok("UTC".into()));
        assert!(timezone_of("UTC+05:30").is_ok_and(|t| t.0 == "Asia/Kolkata" && t.1.is_some()));
        assert!(timezone_of("Europe/Paris").is_err());
        assert!(timezone_of("UTC+07:15").is_err());
        for bad in ["UTCé", "UTC+", "UTC+ab", "UTC+99", "GMT-", ""] {
            assert!(timezone_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_events_map_to_engagement() {
        assert_eq!(engagement_of("EMAIL_OPEN"), Some("opened"));
        assert_eq!(engagement_of("EMAIL_OPENED"), Some("opened"));
        assert_eq!(engagement_of("_email.click"), Some("clicked"));
        assert_eq!(engagement_of("EMAIL_CLICKED"), Some("clicked"));
        assert_eq!(engagement_of("SMS_DELIVERED"), Some("delivered"));
        assert_eq!(engagement_of("EMAIL_SEND"), None);
    }
}
