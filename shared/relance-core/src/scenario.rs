//! The scenario file, v1 (DESIGN §3): its typed model and the loader that reads YAML or JSON
//! and reports every shape problem with its path, instead of stopping at the first one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Weekday;
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::duration::IsoDuration;
use crate::problem::Problem;
use crate::schedule::{
    DateTimeSpec, Delay, LocalTime, QuietHours, Recurrence, RecurringSchedule, parse_zone,
};

/// A scenario: how contacts enter, who may, and the steps they go through.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// `[a-z0-9-]+`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Zone for schedules, dates and `at` times.
    pub timezone: Tz,
    /// Read `at` times and recurring launches in the contact's own zone when it has one.
    pub local_time: bool,
    /// How contacts enter.
    pub launch: Launch,
    /// Who may enter.
    pub audience: Audience,
    /// A contact enters at most once per this window.
    pub once_per: Option<IsoDuration>,
    /// Leave as soon as one of these holds.
    pub exit_when: Vec<Condition>,
    /// Messages reserved to this scenario.
    pub messages: BTreeMap<String, Message>,
    /// Sends due inside are held until it ends.
    pub quiet_hours: Option<QuietHours>,
    /// More sends to one contact in the window are skipped.
    pub frequency_cap: Option<FrequencyCap>,
    /// Whether a contact without a subscription record counts as subscribed.
    pub consent: Consent,
    /// The steps; the first one is where contacts enter.
    pub steps: Vec<Step>,
    /// Custom ends.
    pub goals: Vec<Goal>,
}

/// How contacts enter.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// When asked (CLI, API); in `simulate`, at `--start`.
    Manual,
    /// At each occurrence of a schedule, for the audience.
    Recurring(RecurringSchedule),
    /// At each of these dates, for the audience.
    FixedDates(Vec<DateTimeSpec>),
    /// After a contacts import, for this subset of it.
    AfterImport(ImportSubset),
    /// On a contact or activity event.
    Trigger(Trigger),
}

/// Which imported contacts an `after_import` launch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportSubset {
    /// Every contact in the file.
    All,
    /// Only the new ones.
    Added,
    /// Only the changed ones.
    Modified,
}

/// An event trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The event name (`contact.created`, `page.visited`, `cart.abandoned`, `purchase`, ...).
    pub event: String,
    /// For page.visited: URL patterns (`*` matches anything).
    pub pages: Vec<String>,
    /// For product.viewed and cart.abandoned: the quiet period before it fires.
    pub inactivity_minutes: Option<u32>,
}

impl Trigger {
    /// For inactivity triggers, the event whose silence they wait for.
    pub fn inactivity_source(&self) -> Option<&'static str> {
        match self.event.as_str() {
            "product.viewed" => Some("product.viewed"),
            "cart.abandoned" => Some("cart.updated"),
            _ => None,
        }
    }

    /// True when an event of this name (and properties) launches the scenario directly.
    pub fn fires_on(&self, name: &str, properties: &Map<String, Value>) -> bool {
        if self.inactivity_source().is_some() || name != self.event {
            return false;
        }
        if self.event != "page.visited" || self.pages.is_empty() {
            return true;
        }
        let url = ["url", "page", "path"]
            .iter()
            .find_map(|k| properties.get(*k).and_then(Value::as_str))
            .unwrap_or("");
        self.pages.iter().any(|p| page_matches(p, url))
    }
}

/// True when a page pattern (`/pricing*`) matches a URL, compared whole or by its path.
pub fn page_matches(pattern: &str, url: &str) -> bool {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    let path_only = path.split(['?', '#']).next().unwrap_or(path);
    [url, path, path_only]
        .iter()
        .any(|candidate| glob(pattern.as_bytes(), candidate.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Who may enter: everyone, members of groups, contacts matching criteria (groups and
/// criteria together must both hold).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audience {
    /// In at least one of these groups.
    pub groups: Option<Vec<String>>,
    /// Matching this condition.
    pub criteria: Option<Condition>,
}

/// Consent rule for contacts without a subscription record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// No record counts as subscribed.
    #[default]
    Implicit,
    /// Only an explicit subscription counts.
    Explicit,
}

/// A cap on sends to one contact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// At most this many sends...
    pub max: u32,
    /// ...in this window.
    pub per: IsoDuration,
}

/// A channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// SESv2 in AWS, the outbox when embedded.
    Email,
    /// SNS Publish to a phone number.
    Sms,
    /// SNS platform endpoints (Android, Apple).
    Push,
    /// Browser notifications (VAPID).
    WebPush,
}

impl Channel {
    /// The name used in files and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::WebPush => "web_push",
        }
    }
}

/// A message template.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Where it goes.
    pub channel: Channel,
    /// The communication type consent is checked against (`newsletter`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Email subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Email HTML body (auto-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Email text body, or SMS text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Push / web push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Push / web push body (or SMS text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Push data payload, or web push click URL and icon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// Web push: where a click goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Email sender, overriding the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Email reply-to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// SES stored template name (then subject/html/text come from SES).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// SMS type: transactional or promotional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_type: Option<String>,
}

impl Message {
    /// The communication type consent is checked against.
    pub fn communication_type(&self) -> &str {
        self.kind.as_deref().unwrap_or(self.channel.as_str())
    }
}

/// A custom end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Referenced by `end:`.
    pub id: String,
    /// Which of the four outcomes it counts as.
    #[serde(default = "default_goal_kind")]
    pub kind: EndKind,
    /// Display label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_goal_kind() -> EndKind {
    EndKind::Success
}

/// How an enrollment ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndKind {
    /// The journey reached its aim.
    Success,
    /// It failed.
    Failure,
    /// The contact dropped out.
    Abandon,
    /// Neither.
    Neutral,
    /// A custom goal.
    Goal(String),
}

impl EndKind {
    /// The name used in files and records.
    pub fn as_str(&self) -> &str {
        match self {
            EndKind::Success => "success",
            EndKind::Failure => "failure",
            EndKind::Abandon => "abandon",
            EndKind::Neutral => "neutral",
            EndKind::Goal(g) => g,
        }
    }

    fn parse(s: &str) -> EndKind {
        match s {
            "success" => EndKind::Success,
            "failure" => EndKind::Failure,
            "abandon" => EndKind::Abandon,
            "neutral" => EndKind::Neutral,
            other => EndKind::Goal(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for EndKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EndKind::parse(&String::deserialize(d)?))
    }
}

impl Serialize for EndKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An action step's effect.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Add or remove tags.
    Tag(ListChange),
    /// Add or remove groups.
    Group(ListChange),
    /// Set a profile field to a value or to an expression's result.
    UpdateProfile(ProfileUpdate),
    /// Export the contact to S3.
    Export(Export),
    /// Create a staff task.
    Task(StaffTask),
    /// Create a lead in the CRM (emitted as an event).
    CreateLead(Map<String, Value>),
    /// Emit an event (EventBridge PutEvents in AWS).
    Event(EmitEvent),
}

impl Action {
    /// The name used in records.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Tag(_) => "tag",
            Action::Group(_) => "group",
            Action::UpdateProfile(_) => "update_profile",
            Action::Export(_) => "export",
            Action::Task(_) => "task",
            Action::CreateLead(_) => "create_lead",
            Action::Event(_) => "event",
        }
    }
}

/// `{add: [..], remove: [..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListChange {
    /// Names to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `{field, value}` or `{field, expression}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// The field to set.
    pub field: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// A minijinja expression over `contact` (`contact.visits + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `{bucket, key, fields, dynamic}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// S3 bucket.
    pub bucket: String,
    /// Object key (may hold `{{ }}` placeholders).
    pub key: String,
    /// Fields to export (all when empty).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Re-export when the contact changes.
    #[serde(default)]
    pub dynamic: bool,
}

/// `{title, assignee}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaffTask {
    /// What to do.
    pub title: String,
    /// Who does it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// More detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `{name, detail}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmitEvent {
    /// The event's detail-type.
    pub name: String,
    /// Its detail.
    #[serde(default)]
    pub detail: Map<String, Value>,
}

/// A step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the scenario.
    pub id: String,
    /// Wait before running the step.
    pub delay: Option<Delay>,
    /// What the step does.
    pub kind: StepKind,
}

/// `{when, next}` in a `branches` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The condition.
    pub when: Condition,
    /// Where it leads.
    pub next: String,
}

/// What a step does. Targets that the file left out are empty strings (already reported).
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Send a message, then go on.
    Send { message: String, next: String },
    /// Wait for a reaction, or time out.
    WaitFor {
        condition: Condition,
        timeout: IsoDuration,
        on_event: String,
        on_timeout: String,
    },
    /// Two-way condition.
    If {
        condition: Condition,
        then: String,
        otherwise: String,
    },
    /// Multi-way condition: the first true branch wins.
    Branches {
        branches: Vec<Branch>,
        otherwise: String,
    },
    /// Do something to or about the contact, then go on.
    Action { action: Action, next: String },
    /// End the enrollment.
    End { end: EndKind },
    /// Only a delay, then go on.
    Pass { next: String },
}

impl StepKind {
    /// The outgoing edges: (field path under the step, target id).
    pub fn targets(&self) -> Vec<(String, &str)> {
        match self {
            StepKind::Send { next, .. }
            | StepKind::Action { next, .. }
            | StepKind::Pass { next } => vec![("next".into(), next)],
            StepKind::WaitFor {
                on_event,
                on_timeout,
                ..
            } => vec![
                ("on_event".into(), on_event),
                ("on_timeout".into(), on_timeout),
            ],
            StepKind::If {
                then, otherwise, ..
            } => vec![("then".into(), then), ("else".into(), otherwise)],
            StepKind::Branches {
                branches,
                otherwise,
            } => branches
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("branches[{i}].next"), b.next.as_str()))
                .chain([("otherwise".into(), otherwise.as_str())])
                .collect(),
            StepKind::End { .. } => vec![],
        }
    }

    /// The conditions the step evaluates, with their field path.
    pub fn conditions(&self) -> Vec<(String, &Condition)> {
        match self {
            StepKind::WaitFor { condition, .. } => vec![("wait_for".into(), condition)],
            StepKind::If { condition, .. } => vec![("if".into(), condition)],
            StepKind::Branches { branches, .. } => branches
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("branches[{i}].when"), &b.when))
                .collect(),
            _ => vec![],
        }
    }
}

/// Which syntax a scenario file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (also reads JSON).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for `.json` files, YAML otherwise.
    pub fn from_path(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Reads a shared message store file: a mapping from message id to message, each checked
/// like a scenario's own messages (problems at `<id>.<key>`).
pub fn parse_shared_messages(text: &str) -> Result<Map<String, Value>, Vec<Problem>> {
    let doc = match parse_document(text, Format::Yaml) {
        Ok(d) => d,
        Err(p) => return Err(vec![p]),
    };
    let Value::Object(map) = doc else {
        if doc.is_null() {
            return Ok(Map::new());
        }
        return Err(vec![Problem::error(
            "",
            "the message store is a mapping from message id to message",
        )]);
    };
    let mut problems = Vec::new();
    for (id, v) in &map {
        typed::<Message>(id, v, &mut problems);
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

/// Copies into the scenario document the shared messages its send steps name but its own
/// `messages` does not define; returns their ids.
pub fn merge_shared_messages(doc: &mut Value, shared: &Map<String, Value>) -> Vec<String> {
    let used: BTreeSet<String> = doc
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("send").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let Some(top) = doc.as_object_mut() else {
        return Vec::new();
    };
    let own = top
        .entry("messages")
        .or_insert_with(|| Value::Object(Map::new()));
    if own.is_null() {
        *own = Value::Object(Map::new());
    }
    let Some(own) = own.as_object_mut() else {
        return Vec::new();
    };
    let mut added = Vec::new();
    for id in used {
        if !own.contains_key(&id)
            && let Some(m) = shared.get(&id)
        {
            own.insert(id.clone(), m.clone());
            added.push(id);
        }
    }
    added
}

/// Parses the text into a JSON value, reporting syntax errors with line and column.
pub fn parse_document(text: &str, format: Format) -> Result<Value, Problem> {
    match format {
        Format::Json => serde_json::from_str::<Value>(text).map_err(|e| {
            Problem::error(
                "",
                format!("JSON syntax: {}", strip_position(&e.to_string())),
            )
            .at(e.line(), e.column())
        }),
        Format::Yaml => serde_yaml::from_str::<Value>(text).map_err(|e| {
            let p = Problem::error(
                "",
                format!("YAML syntax: {}", strip_position(&e.to_string())),
            );
            match e.location() {
                Some(loc) => p.at(loc.line(), loc.column()),
                None => p,
            }
        }),
    }
}

fn strip_position(message: &str) -> String {
    for marker in [" at line ", " at position "] {
        if let Some(i) = message.find(marker) {
            return message[..i].to_string();
        }
    }
    message.to_string()
}

/// `quiet_hours: {from, to}` (of a scenario or of the workspace policy).
pub(crate) fn quiet_hours(value: &Value, problems: &mut Vec<Problem>) -> Option<QuietHours> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        from: LocalTime,
        to: LocalTime,
    }
    typed::<Raw>("quiet_hours", value, problems).map(|r| QuietHours {
        from: r.from,
        to: r.to,
    })
}

/// Deserializes `value` into `T`, reporting the failure at `base` plus the inner path.
pub(crate) fn typed<T: DeserializeOwned>(
    base: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = match inner.as_str() {
                "." | "" => base.to_string(),
                p if p.starts_with('[') => format!("{base}{p}"),
                p if base.is_empty() => p.to_string(),
                p => format!("{base}.{p}"),
            };
            problems.push(Problem::error(path, plain(&e.into_inner().to_string())));
            None
        }
    }
}

/// serde's wording, made a little plainer for people writing YAML.
fn plain(message: &str) -> String {
    message
        .replace(
            "invalid type: map",
            "expected something else than a mapping",
        )
        .replace(" `", " \"")
        .replace('`', "\"")
}

/// Reports each key of the mapping `value` that is not one of `known` (at `base.key`), and
/// returns the mapping without them, so that the rest can still be read and checked.
fn known_keys(
    base: &str,
    value: &Value,
    known: &[&str],
    what: &str,
    problems: &mut Vec<Problem>,
) -> Value {
    let Some(map) = value.as_object() else {
        return value.clone();
    };
    let mut kept = Map::new();
    for (k, v) in map {
        if known.contains(&k.as_str()) {
            kept.insert(k.clone(), v.clone());
        } else {
            problems.push(Problem::error(
                format!("{base}.{k}"),
                unknown_key(k, known, what),
            ));
        }
    }
    Value::Object(kept)
}

fn unknown_key(key: &str, known: &[&str], what: &str) -> String {
    let hint = suggest(key, known.iter().copied())
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    format!(
        "unknown key \"{key}\"{hint}; {what} has {}",
        known.join(", ")
    )
}

/// Names longer than this get no suggestion: comparing them costs too much for a hint.
const SUGGEST_MAX_CHARS: usize = 64;

/// The candidate closest to a misspelt `word`, when one is close enough to be meant. The cost
/// stays small per candidate (short names only, lengths within the limit, an early exit), so
/// a file with many names and many misspellings still validates in linear time.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    if len > SUGGEST_MAX_CHARS {
        return None;
    }
    let limit = match len {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    };
    candidates
        .into_iter()
        .filter(|c| c.len() <= SUGGEST_MAX_CHARS * 4 && c.chars().count().abs_diff(len) <= limit)
        .filter_map(|c| edit_distance(word, c, limit).map(|d| (d, c)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`, when at most
/// `limit`.
fn edit_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
        // Every later cell builds on this row or the one before: past the limit in both,
        // the distance is too.
        let row_min = |r: &Vec<usize>| r.iter().copied().min().unwrap_or(0);
        if row_min(&d[i]) > limit && (i < 2 || row_min(&d[i - 1]) > limit) {
            return None;
        }
    }
    Some(d[a.len()][b.len()]).filter(|&x| x <= limit)
}

/// The keys of a scenario file (the JSON Schema lists the same).
pub const TOP_KEYS: [&str; 17] = [
    "id",
    "name",
    "description",
    "version",
    "timezone",
    "local_time",
    "launch",
    "audience",
    "once_per",
    "exit_when",
    "messages",
    "quiet_hours",
    "frequency_cap",
    "consent",
    "steps",
    "goals",
    "labels",
];

/// The keys of a message (the JSON Schema lists the same).
pub const MESSAGE_KEYS: [&str; 13] = [
    "channel", "type", "subject", "html", "text", "title", "body", "data", "url", "from",
    "reply_to", "template", "sms_type",
];

/// The keys of a launch (the JSON Schema lists the same).
pub const LAUNCH_KEYS: [&str; 14] = [
    "type",
    "event",
    "pages",
    "inactivity_minutes",
    "frequency",
    "times",
    "time",
    "days",
    "last_day",
    "dates",
    "contacts",
    "recurring",
    "fixed_dates",
    "after_import",
];

/// A scenario as far as it could be read, with the shape problems found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario; parts that did not read are left at defaults.
    pub scenario: Scenario,
    /// Shape problems (unknown keys, wrong types, bad durations, times and zones).
    pub problems: Vec<Problem>,
    /// True when some step did not read at all (graph checks are then skipped).
    pub broken_steps: bool,
    /// Ids of messages that are declared but did not read (already reported), so that the
    /// steps sending them are not reported as naming an unknown message.
    pub unread_messages: BTreeSet<String>,
}

/// Reads a scenario from its JSON value, collecting every shape problem instead of stopping
/// at the first, so that [`crate::validate`] can go on to check its meaning.
pub fn from_value(doc: &Value) -> Result<Loaded, Problem> {
    let mut problems = Vec::new();
    let Some(top) = doc.as_object() else {
        return Err(Problem::error(
            "",
            "a scenario file must be a mapping with id, launch and steps",
        ));
    };
    for key in top.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
        problems.push(Problem::error(
            key.clone(),
            unknown_key(key, &TOP_KEYS, "a scenario"),
        ));
    }
    let mut required = |key: &str| {
        let v = top.get(key);
        if v.is_none() {
            problems.push(Problem::error(
                key,
                format!("missing: a scenario needs \"{key}\""),
            ));
        }
        v
    };
    let id_value = required("id");
    let launch_value = required("launch");
    let steps_value = required("steps");

    let id = id_value
        .and_then(|v| typed::<String>("id", v, &mut problems))
        .unwrap_or_default();
    if id_value.is_some()
        && (id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        problems.push(Problem::error(
            "id",
            format!("\"{id}\" is not a valid id: use lowercase letters, digits and dashes"),
        ));
    }
    let name = top
        .get("name")
        .and_then(|v| typed::<String>("name", v, &mut problems))
        .unwrap_or_else(|| id.clone());
    if let Some(v) = top.get("version")
        && v.as_u64() != Some(1)
    {
        problems.push(Problem::error(
            "version",
            "only version 1 of the scenario format exists",
        ));
    }
    let timezone = match top.get("timezone") {
        None => chrono_tz::UTC,
        Some(v) => typed::<String>("timezone", v, &mut problems)
            .and_then(|s| {
                parse_zone(&s)
                    .map_err(|e| problems.push(Problem::error("timezone", e.to_string())))
                    .ok()
            })
            .unwrap_or(chrono_tz::UTC),
    };
    let local_time = top
        .get("local_time")
        .and_then(|v| typed::<bool>("local_time", v, &mut problems))
        .unwrap_or(false);
    let launch = launch_value
        .and_then(|v| parse_launch(v, &mut problems))
        .unwrap_or(Launch::Manual);
    let audience = top
        .get("audience")
        .and_then(|v| parse_audience(v, &mut problems))
        .unwrap_or_default();
    let once_per = top
        .get("once_per")
        .and_then(|v| typed::<IsoDuration>("once_per", v, &mut problems));
    let exit_when = match top.get("exit_when") {
        None => Vec::new(),
        // One condition is accepted as a list of one.
        Some(v @ Value::Object(_)) => typed::<Condition>("exit_when", v, &mut problems)
            .into_iter()
            .collect(),
        Some(v) => typed::<Vec<Condition>>("exit_when", v, &mut problems).unwrap_or_default(),
    };
    let mut messages = BTreeMap::new();
    let mut unread_messages = BTreeSet::new();
    if let Some(v) = top.get("messages") {
        match v.as_object() {
            Some(map) => {
                for (mid, m) in map {
                    let path = format!("messages.{mid}");
                    let m = known_keys(&path, m, &MESSAGE_KEYS, "a message", &mut problems);
                    match typed::<Message>(&path, &m, &mut problems) {
                        Some(msg) => {
                            messages.insert(mid.clone(), msg);
                        }
                        None => {
                            unread_messages.insert(mid.clone());
                        }
                    }
                }
            }
            None if v.is_null() => {}
            None => problems.push(Problem::error(
                "messages",
                "must be a mapping from message id to message",
            )),
        }
    }
    let quiet_hours = top
        .get("quiet_hours")
        .and_then(|v| quiet_hours(v, &mut problems));
    let frequency_cap = top
        .get("frequency_cap")
        .and_then(|v| typed::<FrequencyCap>("frequency_cap", v, &mut problems));
    let consent = top
        .get("consent")
        .and_then(|v| typed::<Consent>("consent", v, &mut problems))
        .unwrap_or_default();
    let goals = top
        .get("goals")
        .map(|v| parse_goals(v, &mut problems))
        .unwrap_or_default();
    let mut broken_steps = false;
    let steps = match steps_value {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (step, ok) = parse_step(i, s, &mut problems);
                broken_steps |= !ok;
                step
            })
            .collect(),
        Some(_) => {
            problems.push(Problem::error("steps", "must be a list of steps"));
            Vec::new()
        }
        None => Vec::new(),
    };
    Ok(Loaded {
        scenario: Scenario {
            id,
            name,
            timezone,
            local_time,
            launch,
            audience,
            once_per,
            exit_when,
            messages,
            quiet_hours,
            frequency_cap,
            consent,
            steps,
            goals,
        },
        problems,
        broken_steps,
        unread_messages,
    })
}

/// The goals one by one: a goal that does not read still counts as declared (its problem
/// is reported), so the ends that name it are not reported as unknown too.
fn parse_goals(v: &Value, problems: &mut Vec<Problem>) -> Vec<Goal> {
    let Some(list) = v.as_array() else {
        problems.push(Problem::error(
            "goals",
            "goals is a list such as [{id: signed-up, kind: success, label: Signed up}]",
        ));
        return Vec::new();
    };
    let mut goals = Vec::new();
    for (i, g) in list.iter().enumerate() {
        let path = format!("goals[{i}]");
        let g = known_keys(&path, g, &["id", "kind", "label"], "a goal", problems);
        match typed::<Goal>(&path, &g, problems) {
            Some(goal) => goals.push(goal),
            None => {
                if let Some(id) = g.get("id").and_then(Value::as_str) {
                    goals.push(Goal {
                        id: id.to_string(),
                        kind: EndKind::Success,
                        label: None,
                    });
                }
            }
        }
    }
    goals
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LaunchType {
    Manual,
    Recurring,
    FixedDates,
    AfterImport,
    Trigger,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frequency {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DayRef {
    Number(i64),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecurring {
    frequency: Option<Frequency>,
    times: Option<Vec<LocalTime>>,
    time: Option<LocalTime>,
    days: Option<Vec<DayRef>>,
    last_day: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLaunch {
    #[serde(rename = "type")]
    kind: LaunchType,
    event: Option<String>,
    pages: Option<Vec<String>>,
    inactivity_minutes: Option<i64>,
    frequency: Option<Frequency>,
    times: Option<Vec<LocalTime>>,
    time: Option<LocalTime>,
    days: Option<Vec<DayRef>>,
    last_day: Option<bool>,
    dates: Option<Vec<DateTimeSpec>>,
    contacts: Option<ImportSubset>,
    recurring: Option<RawRecurring>,
    fixed_dates: Option<RawDates>,
    after_import: Option<RawImport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDates {
    dates: Vec<DateTimeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    contacts: ImportSubset,
}

fn weekday(name: &str) -> Option<Weekday> {
    match name.to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

/// The launch limits of DESIGN §3.
pub const MAX_DAILY_TIMES: usize = 5;
/// At most this many fixed dates.
pub const MAX_FIXED_DATES: usize = 10;
/// Inactivity triggers wait between these many minutes.
pub const INACTIVITY_MINUTES: std::ops::RangeInclusive<i64> = 10..=720;
/// At most this many steps.
pub const MAX_STEPS: usize = 1000;
/// At most this many goals.
pub const MAX_GOALS: usize = 100;

fn parse_launch(v: &Value, problems: &mut Vec<Problem>) -> Option<Launch> {
    // Schedules may be written flat (`{type: recurring, frequency: daily, ...}`) or nested
    // (`{type: recurring, recurring: {frequency: daily, ...}}`); both read the same.
    let mut v = known_keys("launch", v, &LAUNCH_KEYS, "a launch", problems);
    if let Some(nested) = v.get("recurring").filter(|n| n.is_object()).cloned() {
        let nested = known_keys(
            "launch.recurring",
            &nested,
            &["frequency", "times", "time", "days", "last_day"],
            "a recurring schedule",
            problems,
        );
        v["recurring"] = nested;
    }
    let raw: RawLaunch = typed("launch", &v, problems)?;
    let before = problems.len();
    let err = |problems: &mut Vec<Problem>, path: &str, msg: String| {
        problems.push(Problem::error(format!("launch.{path}"), msg))
    };
    let not_for = |problems: &mut Vec<Problem>, present: bool, key: &str, kind: &str| {
        if present {
            err(
                problems,
                key,
                format!("\"{key}\" does not apply to a {kind} launch"),
            );
        }
    };
    let kind_name = match raw.kind {
        LaunchType::Manual => "manual",
        LaunchType::Recurring => "recurring",
        LaunchType::FixedDates => "fixed_dates",
        LaunchType::AfterImport => "after_import",
        LaunchType::Trigger => "trigger",
    };
    let is = |k: &str| k == kind_name;
    not_for(
        problems,
        raw.event.is_some() && !is("trigger"),
        "event",
        kind_name,
    );
    not_for(
        problems,
        raw.pages.is_some() && !is("trigger"),
        "pages",
        kind_name,
    );
    not_for(
        problems,
        raw.inactivity_minutes.is_some() && !is("trigger"),
        "inactivity_minutes",
        kind_name,
    );
    let flat_recurring = raw.frequency.is_some()
        || raw.times.is_some()
        || raw.time.is_some()
        || raw.days.is_some()
        || raw.last_day.is_some();
    not_for(
        problems,
        (flat_recurring || raw.recurring.is_some()) && !is("recurring"),
        "frequency",
        kind_name,
    );
    not_for(
        problems,
        (raw.dates.is_some() || raw.fixed_dates.is_some()) && !is("fixed_dates"),
        "dates",
        kind_name,
    );
    not_for(
        problems,
        (raw.contacts.is_some() || raw.after_import.is_some()) && !is("after_import"),
        "contacts",
        kind_name,
    );
    let launch = match raw.kind {
        LaunchType::Manual => Launch::Manual,
        LaunchType::Recurring => {
            let (r, base) = match raw.recurring {
                Some(nested) => {
                    if flat_recurring {
                        err(problems, "recurring", "write the schedule either inside \"recurring\" or flat in launch, not both".into());
                    }
                    (nested, "recurring.")
                }
                None => (
                    RawRecurring {
                        frequency: raw.frequency,
                        times: raw.times,
                        time: raw.time,
                        days: raw.days,
                        last_day: raw.last_day,
                    },
                    "",
                ),
            };
            let mut times = r.times.unwrap_or_default();
            times.extend(r.time);
            times.sort();
            times.dedup();
            if times.is_empty() {
                err(
                    problems,
                    &format!("{base}time"),
                    "a recurring launch needs a time (\"09:00\") or times".into(),
                );
            }
            let days = r.days.unwrap_or_default();
            let recurrence = match r.frequency {
                None => {
                    err(
                        problems,
                        &format!("{base}frequency"),
                        "a recurring launch needs a frequency: daily, weekly or monthly".into(),
                    );
                    Recurrence::Daily
                }
                Some(Frequency::Daily) => {
                    if times.len() > MAX_DAILY_TIMES {
                        err(
                            problems,
                            &format!("{base}times"),
                            format!(
                                "a daily launch runs at most {MAX_DAILY_TIMES} times a day, found {}",
                                times.len()
                            ),
                        );
                    }
                    if !days.is_empty() {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a daily launch runs every day: remove days".into(),
                        );
                    }
                    Recurrence::Daily
                }
                Some(Frequency::Weekly) => {
                    let mut list = Vec::new();
                    for (i, d) in days.iter().enumerate() {
                        match d {
                            DayRef::Name(n) if weekday(n).is_some() && n.len() >= 3 => {
                                list.extend(weekday(n))
                            }
                            _ => err(
                                problems,
                                &format!("{base}days[{i}]"),
                                "not a weekday: use mon, tue, wed, thu, fri, sat or sun".into(),
                            ),
                        }
                    }
                    if days.is_empty() {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a weekly launch needs days, such as [mon, thu]".into(),
                        );
                    }
                    Recurrence::Weekly(list)
                }
                Some(Frequency::Monthly) => {
                    let mut list = Vec::new();
                    for (i, d) in days.iter().enumerate() {
                        match d {
                            DayRef::Number(n) if (1..=31).contains(n) => list.push(*n as u32),
                            _ => err(
                                problems,
                                &format!("{base}days[{i}]"),
                                "not a day of the month: use 1 to 31".into(),
                            ),
                        }
                    }
                    let last_day = r.last_day.unwrap_or(false);
                    if days.is_empty() && !last_day {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a monthly launch needs days (1 to 31) or last_day: true".into(),
                        );
                    }
                    Recurrence::Monthly {
                        days: list,
                        last_day,
                    }
                }
            };
            if r.last_day.is_some() && !matches!(recurrence, Recurrence::Monthly { .. }) {
                err(
                    problems,
                    &format!("{base}last_day"),
                    "last_day applies to monthly launches only".into(),
                );
            }
            Launch::Recurring(RecurringSchedule { recurrence, times })
        }
        LaunchType::FixedDates => {
            let (dates, path) = match (raw.dates, raw.fixed_dates) {
                (Some(d), None) => (d, "dates"),
                (None, Some(n)) => (n.dates, "fixed_dates.dates"),
                (Some(d), Some(_)) => {
                    err(
                        problems,
                        "fixed_dates",
                        "write the dates either inside \"fixed_dates\" or flat in launch, not both"
                            .into(),
                    );
                    (d, "dates")
                }
                (None, None) => {
                    err(problems, "dates", "a fixed_dates launch needs dates".into());
                    (Vec::new(), "dates")
                }
            };
            if dates.len() > MAX_FIXED_DATES {
                err(
                    problems,
                    path,
                    format!(
                        "a fixed_dates launch has at most {MAX_FIXED_DATES} dates, found {}",
                        dates.len()
                    ),
                );
            }
            if dates.is_empty() && path != "dates" {
                err(
                    problems,
                    path,
                    "a fixed_dates launch needs at least one date".into(),
                );
            }
            Launch::FixedDates(dates)
        }
        LaunchType::AfterImport => {
            let subset = raw
                .contacts
                .or(raw.after_import.map(|a| a.contacts))
                .unwrap_or(ImportSubset::All);
            Launch::AfterImport(subset)
        }
        LaunchType::Trigger => {
            let event = raw.event.unwrap_or_default();
            if event.trim().is_empty() {
                err(problems, "event", "a trigger launch needs an event (contact.created, page.visited, purchase, ...)".into());
            }
            let trigger = Trigger {
                event,
                pages: raw.pages.unwrap_or_default(),
                inactivity_minutes: None,
            };
            let inactive = trigger.inactivity_source().is_some();
            if trigger.event == "page.visited" && trigger.pages.is_empty() {
                err(
                    problems,
                    "pages",
                    "a page.visited trigger needs pages, such as [\"/pricing*\"]".into(),
                );
            }
            if trigger.event != "page.visited" && !trigger.pages.is_empty() {
                err(
                    problems,
                    "pages",
                    "pages applies to page.visited triggers only".into(),
                );
            }
            let minutes = match (inactive, raw.inactivity_minutes) {
                (true, None) => {
                    err(
                        problems,
                        "inactivity_minutes",
                        format!(
                            "a {} trigger needs inactivity_minutes (10 to 720)",
                            trigger.event
                        ),
                    );
                    None
                }
                (true, Some(m)) if !INACTIVITY_MINUTES.contains(&m) => {
                    err(
                        problems,
                        "inactivity_minutes",
                        format!("inactivity_minutes must be between 10 and 720, found {m}"),
                    );
                    None
                }
                (true, Some(m)) => Some(m as u32),
                (false, Some(_)) => {
                    err(problems, "inactivity_minutes", "inactivity_minutes applies to product.viewed and cart.abandoned triggers only".into());
                    None
                }
                (false, None) => None,
            };
            Launch::Trigger(Trigger {
                inactivity_minutes: minutes,
                ..trigger
            })
        }
    };
    (problems.len() == before).then_some(launch)
}

fn parse_audience(v: &Value, problems: &mut Vec<Problem>) -> Option<Audience> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        all: Option<bool>,
        groups: Option<Vec<String>>,
        criteria: Option<Condition>,
    }
    let raw: Raw = typed("audience", v, problems)?;
    match (raw.all, &raw.groups, &raw.criteria) {
        (None, None, None) => {
            problems.push(Problem::error(
                "audience",
                "an audience needs all: true, groups or criteria",
            ));
            None
        }
        (Some(false), None, None) => {
            problems.push(Problem::error(
                "audience.all",
                "all: false selects nobody; use groups or criteria",
            ));
            None
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            problems.push(Problem::error(
                "audience.all",
                "all: true cannot be combined with groups or criteria",
            ));
            None
        }
        _ => {
            if raw.groups.as_ref().is_some_and(Vec::is_empty) {
                problems.push(Problem::error("audience.groups", "name at least one group"));
            }
            Some(Audience {
                groups: raw.groups,
                criteria: raw.criteria,
            })
        }
    }
}

/// The keys a step may have.
/// The keys of a step (the JSON Schema lists the same).
pub const STEP_KEYS: [&str; 16] = [
    "id",
    "name",
    "description",
    "delay",
    "send",
    "wait_for",
    "on_event",
    "on_timeout",
    "if",
    "then",
    "else",
    "branches",
    "otherwise",
    "action",
    "end",
    "next",
];

/// A step's plain fields; its delay, conditions, branches and action are read one by one
/// afterwards, so that a problem in one of them does not hide the others (or the graph).
#[derive(Debug, Deserialize)]
struct RawStep {
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    delay: Option<Value>,
    send: Option<String>,
    wait_for: Option<Value>,
    on_event: Option<String>,
    on_timeout: Option<String>,
    #[serde(rename = "if")]
    if_: Option<Value>,
    then: Option<String>,
    #[serde(rename = "else")]
    else_: Option<String>,
    branches: Option<Value>,
    otherwise: Option<String>,
    action: Option<Value>,
    end: Option<String>,
    next: Option<String>,
}

/// Stands in for a part that did not read (already reported), so that the checks that
/// follow neither stop nor add a second, misleading problem about it.
fn placeholder_wait() -> IsoDuration {
    IsoDuration::from_seconds(60)
}

fn parse_delay(base: &str, v: &Value, problems: &mut Vec<Problem>) -> Delay {
    let v = known_keys(
        base,
        v,
        &["after", "at", "until", "local_time"],
        "a delay",
        problems,
    );
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            base,
            "a delay is a mapping such as {after: P2D, at: \"09:00\"} or {until: \"2026-12-24T10:00\"}",
        ));
        return Delay {
            after: Some(placeholder_wait()),
            ..Delay::default()
        };
    };
    let before = problems.len();
    let field = |k: &str| (format!("{base}.{k}"), map.get(k));
    let (p, v) = field("after");
    let after = v.and_then(|v| typed::<IsoDuration>(&p, v, problems));
    let (p, v) = field("at");
    let at = v.and_then(|v| typed::<LocalTime>(&p, v, problems));
    let (p, v) = field("until");
    let until = v.and_then(|v| typed::<DateTimeSpec>(&p, v, problems));
    let (p, v) = field("local_time");
    let local_time = v.and_then(|v| typed::<bool>(&p, v, problems));
    let failed = problems.len() > before;
    if map.contains_key("until") && (map.contains_key("after") || map.contains_key("at")) {
        problems.push(Problem::error(
            format!("{base}.until"),
            "until cannot be combined with after or at",
        ));
    }
    if !failed && after.is_none() && at.is_none() && until.is_none() {
        problems.push(Problem::error(
            base,
            "a delay needs after, at or until, such as {after: P2D}",
        ));
    }
    let mut delay = Delay {
        after,
        at,
        until,
        local_time,
    };
    if failed && !delay.holds() {
        delay.after = Some(placeholder_wait());
    }
    delay
}

/// A `wait_for`: a condition plus its `timeout`, each read on its own.
fn parse_wait(base: &str, v: &Value, problems: &mut Vec<Problem>) -> (Condition, IsoDuration) {
    let placeholder = || Condition::Event {
        name: String::new(),
        within: None,
    };
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            base,
            "a wait_for is a condition with a timeout, such as {opened: first, timeout: P1D}",
        ));
        return (placeholder(), placeholder_wait());
    };
    let mut rest = map.clone();
    let timeout = match rest.remove("timeout") {
        None => {
            problems.push(Problem::error(
                format!("{base}.timeout"),
                "missing: a wait_for needs a timeout, such as P1D",
            ));
            placeholder_wait()
        }
        Some(t) => typed::<IsoDuration>(&format!("{base}.timeout"), &t, problems)
            .unwrap_or_else(placeholder_wait),
    };
    let condition = if rest.is_empty() {
        problems.push(Problem::error(
            base,
            "a wait_for needs a condition besides its timeout, such as {opened: first} or {event: purchase}",
        ));
        placeholder()
    } else {
        typed::<Condition>(base, &Value::Object(rest), problems).unwrap_or_else(placeholder)
    };
    (condition, timeout)
}

fn parse_branches(base: &str, v: &Value, problems: &mut Vec<Problem>) -> Vec<Branch> {
    let Some(list) = v.as_array() else {
        problems.push(Problem::error(
            base,
            "branches is a list of {when: <condition>, next: <step>}",
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let b = known_keys(&path, b, &["when", "next"], "a branch", problems);
        let Some(map) = b.as_object() else {
            problems.push(Problem::error(
                path,
                "a branch is {when: <condition>, next: <step>}",
            ));
            continue;
        };
        let when = match map.get("when") {
            Some(w) => typed::<Condition>(&format!("{path}.when"), w, problems),
            None => {
                problems.push(Problem::error(
                    format!("{path}.when"),
                    "missing: a branch needs \"when\"",
                ));
                None
            }
        };
        let next = match map.get("next") {
            Some(n) => typed::<String>(&format!("{path}.next"), n, problems),
            None => {
                problems.push(Problem::error(
                    format!("{path}.next"),
                    "missing: a branch needs \"next\"",
                ));
                None
            }
        };
        out.push(Branch {
            when: when.unwrap_or(Condition::All(Vec::new())),
            next: next.unwrap_or_default(),
        });
    }
    out
}

/// Reads step `i`. The flag is false when the step could not be read at all (no id, not a
/// mapping, a target that is not text): the graph checks are then skipped.
fn parse_step(i: usize, v: &Value, problems: &mut Vec<Problem>) -> (Step, bool) {
    let base = format!("steps[{i}]");
    let id_hint = v
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let before = problems.len();
    let name_step = |problems: &mut Vec<Problem>, id: &str| {
        for p in &mut problems[before..] {
            if p.step.is_none() && !id.is_empty() {
                p.step = Some(id.to_string());
            }
        }
    };
    let broken = |id: String| Step {
        id,
        delay: None,
        kind: StepKind::Pass {
            next: String::new(),
        },
    };
    if !v.is_object() {
        problems.push(Problem::error(
            &base,
            "a step is a mapping with an id and what it does (send, wait_for, if, branches, action or end)",
        ));
        return (broken(id_hint), false);
    }
    let v = known_keys(&base, v, &STEP_KEYS, "a step", problems);
    let Some(raw) = typed::<RawStep>(&base, &v, problems) else {
        name_step(problems, &id_hint);
        return (broken(id_hint), false);
    };
    let Some(id) = raw.id.clone() else {
        problems.push(Problem::error(
            format!("{base}.id"),
            "missing: every step needs an id",
        ));
        return (broken(String::new()), false);
    };
    let mut errs: Vec<(String, String)> = Vec::new();
    let err = |errs: &mut Vec<(String, String)>, field: &str, msg: String| {
        errs.push((field.to_string(), msg))
    };
    if id.trim().is_empty() || id.chars().any(char::is_whitespace) {
        err(
            &mut errs,
            "id",
            format!("\"{id}\" is not a valid step id: use letters, digits, dashes or underscores"),
        );
    }
    let delay = raw
        .delay
        .as_ref()
        .map(|d| parse_delay(&format!("{base}.delay"), d, problems));
    let kinds: Vec<&str> = [
        ("send", raw.send.is_some()),
        ("wait_for", raw.wait_for.is_some()),
        ("if", raw.if_.is_some()),
        ("branches", raw.branches.is_some()),
        ("action", raw.action.is_some()),
        ("end", raw.end.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if kinds.len() > 1 {
        err(
            &mut errs,
            "",
            format!(
                "a step does one thing, but this one has {}; split it into several steps",
                kinds.join(" and ")
            ),
        );
    }
    let kind = kinds.first().copied().unwrap_or("pass");
    let stray = |errs: &mut Vec<(String, String)>, present: bool, key: &str, belongs: &str| {
        if present {
            err(
                errs,
                key,
                format!("\"{key}\" belongs to {belongs}, not to a {kind} step"),
            );
        }
    };
    stray(
        &mut errs,
        raw.next.is_some() && !matches!(kind, "send" | "action" | "pass"),
        "next",
        "send, action and delay-only steps",
    );
    stray(
        &mut errs,
        raw.on_event.is_some() && kind != "wait_for",
        "on_event",
        "wait_for steps",
    );
    stray(
        &mut errs,
        raw.on_timeout.is_some() && kind != "wait_for",
        "on_timeout",
        "wait_for steps",
    );
    stray(
        &mut errs,
        raw.then.is_some() && kind != "if",
        "then",
        "if steps",
    );
    stray(
        &mut errs,
        raw.else_.is_some() && kind != "if",
        "else",
        "if steps",
    );
    stray(
        &mut errs,
        raw.otherwise.is_some() && kind != "branches",
        "otherwise",
        "branches steps",
    );
    let need = |errs: &mut Vec<(String, String)>,
                value: Option<String>,
                key: &str,
                what: &str|
     -> String {
        value.unwrap_or_else(|| {
            err(errs, key, format!("missing: {what}"));
            String::new()
        })
    };
    let step_kind = match kind {
        "send" => StepKind::Send {
            message: raw.send.unwrap_or_default(),
            next: need(&mut errs, raw.next, "next", "a send step needs \"next\""),
        },
        "wait_for" => {
            let (condition, timeout) = parse_wait(
                &format!("{base}.wait_for"),
                raw.wait_for.as_ref().unwrap_or(&Value::Null),
                problems,
            );
            StepKind::WaitFor {
                condition,
                timeout,
                on_event: need(
                    &mut errs,
                    raw.on_event,
                    "on_event",
                    "a wait_for step needs \"on_event\" (where to go when it happens)",
                ),
                on_timeout: need(
                    &mut errs,
                    raw.on_timeout,
                    "on_timeout",
                    "a wait_for step needs \"on_timeout\" (where to go when the timeout passes)",
                ),
            }
        }
        "if" => StepKind::If {
            condition: raw
                .if_
                .as_ref()
                .and_then(|c| typed::<Condition>(&format!("{base}.if"), c, problems))
                .unwrap_or(Condition::All(Vec::new())),
            then: need(&mut errs, raw.then, "then", "an if step needs \"then\""),
            otherwise: need(&mut errs, raw.else_, "else", "an if step needs \"else\""),
        },
        "branches" => {
            let list = raw.branches.as_ref().unwrap_or(&Value::Null);
            let branches = parse_branches(&format!("{base}.branches"), list, problems);
            if branches.is_empty() && list.as_array().is_some() {
                err(
                    &mut errs,
                    "branches",
                    "branches needs at least one {when, next}".into(),
                );
            }
            StepKind::Branches {
                branches,
                otherwise: need(
                    &mut errs,
                    raw.otherwise,
                    "otherwise",
                    "a branches step needs \"otherwise\" (where to go when no branch holds)",
                ),
            }
        }
        "action" => {
            // An action that did not read stands in as one that has nothing to check.
            let action = raw
                .action
                .as_ref()
                .and_then(|a| typed::<Action>(&format!("{base}.action"), a, problems))
                .unwrap_or_else(|| Action::CreateLead(Map::new()));
            StepKind::Action {
                action,
                next: need(&mut errs, raw.next, "next", "an action step needs \"next\""),
            }
        }
        "end" => StepKind::End {
            end: EndKind::parse(raw.end.as_deref().unwrap_or("neutral")),
        },
        _ => match (&delay, &raw.next) {
            (None, None) => {
                err(
                    &mut errs,
                    "",
                    "a step needs one of send, wait_for, if, branches, action or end (or a delay and next)"
                        .into(),
                );
                StepKind::Pass {
                    next: String::new(),
                }
            }
            (None, Some(_)) => {
                err(
                    &mut errs,
                    "",
                    "a step needs send, wait_for, if, branches, action, end or at least a delay"
                        .into(),
                );
                StepKind::Pass {
                    next: raw.next.unwrap_or_default(),
                }
            }
            (Some(_), _) => StepKind::Pass {
                next: need(
                    &mut errs,
                    raw.next,
                    "next",
                    "a delay-only step needs \"next\"",
                ),
            },
        },
    };
    for (field, msg) in errs {
        let path = if field.is_empty() {
            base.clone()
        } else {
            format!("{base}.{field}")
        };
        problems.push(Problem::error(path, msg));
    }
    name_step(problems, &id);
    (
        Step {
            id,
            delay,
            kind: step_kind,
        },
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_patterns_match_paths_and_urls() {
        assert!(page_matches("/pricing*", "https://x.io/pricing?plan=pro"));
        assert!(page_matches("/pricing*", "/pricing/teams"));
        assert!(page_matches("*/blog/*", "https://x.io/blog/a"));
        assert!(!page_matches("/pricing*", "https://x.io/about"));
        assert!(page_matches("/", "https://x.io"));
        assert!(page_matches("/docs", "https://x.io/docs#top"));
    }

    #[test]
    fn serde_paths_look_like_the_file() {
        let doc: Value =
            serde_yaml::from_str("steps:\n  - {id: a, delay: {after: P2X}, next: b}\n")
                .unwrap_or_default();
        let mut problems = Vec::new();
        let _ = parse_step(0, &doc["steps"][0], &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "steps[0].delay.after");
        assert!(
            problems[0].message.contains("P2X"),
            "{}",
            problems[0].message
        );
    }
}
