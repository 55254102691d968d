//! The typed model of a scenario: what the loader produces and the engine runs.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::duration::IsoDuration;
use crate::schedule::{DateTimeSpec, Delay, QuietHours, RecurringSchedule};

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
    /// The share of entries held out (entered, sent nothing, ended `held_out`).
    pub holdout: Option<Holdout>,
    /// What counts as a conversion of an entry.
    pub conversion: Option<Conversion>,
}

impl Scenario {
    /// The variant send steps with a winner rule: (step id, its variants, its rule).
    pub fn winner_steps(&self) -> impl Iterator<Item = (&str, &[Variant], &Winner)> {
        self.steps.iter().filter_map(|s| match &s.kind {
            StepKind::Send {
                variants,
                winner: Some(w),
                ..
            } => Some((s.id.as_str(), variants.as_slice(), w)),
            _ => None,
        })
    }
}

/// `conversion: {event, where?, within, value?}` (DESIGN §3.1): each entry, held out or not,
/// converts at most once, on the first matching event within `within` of its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// The activity event name.
    pub event: String,
    /// A condition on the event's properties (profile clauses only).
    pub filter: Option<Condition>,
    /// The window after entry.
    pub within: IsoDuration,
    /// The numeric property summed as revenue.
    pub value: Option<String>,
}

impl Conversion {
    /// True when the event counts as a conversion (its name, and its properties pass `where`).
    pub fn matches(&self, event: &crate::contact::ActivityEvent, tz: Tz) -> bool {
        if event.name != self.event {
            return false;
        }
        let Some(filter) = &self.filter else {
            return true;
        };
        // The clauses read the event's properties as they read a profile's fields.
        let mut properties = crate::contact::Contact::bare("");
        for (k, v) in &event.properties {
            properties.set_field(k, v.clone());
        }
        let history = crate::contact::History::default();
        let sent = BTreeMap::new();
        filter.holds(&crate::condition::EvalContext {
            contact: &properties,
            history: &history,
            sent: &sent,
            now: event.at,
            since: None,
            tz,
        })
    }

    /// The revenue the event carries: its `value` property when that is a number (or a
    /// numeric string).
    pub fn value_of(&self, event: &crate::contact::ActivityEvent) -> Option<serde_json::Number> {
        let field = self.value.as_deref()?;
        let mut parts = field.split('.');
        let mut current = event.properties.get(parts.next()?)?;
        for part in parts {
            current = current.get(part)?;
        }
        match current {
            Value::Number(n) => Some(n.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64),
            _ => None,
        }
    }

    /// The last instant an entry at `entered_at` can convert.
    pub fn until(
        &self,
        entered_at: chrono::DateTime<chrono::Utc>,
        tz: Tz,
    ) -> chrono::DateTime<chrono::Utc> {
        self.within.add_to(entered_at, tz)
    }
}

/// `holdout: {percent}`: entries whose holdout bucket falls below it are held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdout {
    /// The percent × 100.
    pub basis_points: u32,
}

/// `{message, percent}` in a send step's `variants` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The message it sends.
    pub message: String,
    /// Its share, percent × 100.
    pub basis_points: u32,
}

/// `winner: {metric, after, min_sends, confidence}` on a variants send: read and checked, not
/// applied yet (every send keeps its random variant).
#[derive(Debug, Clone, PartialEq)]
pub struct Winner {
    /// `opened`, `clicked` or `converted`.
    pub metric: String,
    /// When the first check runs, past the step's first send.
    pub after: IsoDuration,
    /// The sends every variant needs before one can win.
    pub min_sends: u64,
    /// The one-sided confidence, above 0 and below 1.
    pub confidence: f64,
}

/// `{percent, next}` in a `split` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPath {
    /// Its share, percent × 100.
    pub basis_points: u32,
    /// Where it leads.
    pub next: String,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
    /// `where`: a condition over the event's properties that must hold for it to launch.
    pub filter: Option<Condition>,
    /// The scenario's zone, for the dates `filter` writes without an offset.
    pub zone: Tz,
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
        if let Some(filter) = &self.filter
            && !self.filter_holds(filter, properties)
        {
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

impl Trigger {
    /// The `where` condition over the event's properties, read as a profile's fields.
    fn filter_holds(&self, filter: &Condition, properties: &Map<String, Value>) -> bool {
        let mut fields = crate::contact::Contact::bare("");
        for (k, v) in properties {
            fields.set_field(k, v.clone());
        }
        let history = crate::contact::History::default();
        let sent = BTreeMap::new();
        filter.holds(&crate::condition::EvalContext {
            contact: &fields,
            history: &history,
            sent: &sent,
            // The loader refuses the clauses that read the clock (within_last, anniversary),
            // so no clause reads this instant.
            now: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            since: None,
            tz: self.zone,
        })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// No record counts as subscribed.
    #[default]
    Implicit,
    /// Only an explicit subscription counts.
    Explicit,
}

/// A cap on sends to one contact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// At most this many sends...
    #[schemars(range(min = 1))]
    pub max: u32,
    /// ...in this window.
    pub per: IsoDuration,
}

/// A channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
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

/// A message template; placeholders such as `{{ contact.first_name }}` are minijinja.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
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
    /// Email only: `false` sends it without open and click tracking when `relance run`
    /// tracks them (its links stay as written, no pixel). Default: tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<bool>,
}

impl Message {
    /// True when a click on it can be measured: a link in its bodies (`href` or an
    /// http(s) URL), a web push click URL, or an SES stored template (its links are SES's).
    pub fn has_links(&self) -> bool {
        let link = |t: &Option<String>| {
            t.as_deref().is_some_and(|t| {
                t.contains("href") || t.contains("http://") || t.contains("https://")
            })
        };
        self.template.is_some()
            || self.url.is_some()
            || link(&self.html)
            || link(&self.text)
            || link(&self.body)
            || self
                .data
                .as_ref()
                .is_some_and(|d| d.get("url").is_some_and(Value::is_string))
    }

    /// The communication type consent is checked against.
    pub fn communication_type(&self) -> &str {
        self.kind.as_deref().unwrap_or(self.channel.as_str())
    }
}

/// A custom end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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

    pub(super) fn parse(s: &str) -> EndKind {
        match s {
            "success" => EndKind::Success,
            "failure" => EndKind::Failure,
            "abandon" => EndKind::Abandon,
            "neutral" => EndKind::Neutral,
            other => EndKind::Goal(other.to_string()),
        }
    }
}

/// Written as a string in scenario files (the JSON Schema says so; the parser checks the rest).
impl schemars::JsonSchema for EndKind {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EndKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
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
    /// An HTTP call (DESIGN §9): written as a `webhook:` step (the loader refuses it under
    /// `action:`, and the schema does not list it there); it travels as an action so that
    /// every store queues it through the same outbox path, once per key, and reads back from
    /// effects kept for recovery. In an effect, its `body` is the rendered text.
    #[schemars(skip)]
    Webhook(crate::webhook::Webhook),
    /// An asynchronous Lambda invocation (DESIGN §9, AWS only): written as an `invoke:` step,
    /// queued as an action like a webhook; in an effect it carries the contact's fields.
    #[schemars(skip)]
    Invoke(crate::invoke::Invoke),
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
            Action::Webhook(_) => "webhook",
            Action::Invoke(_) => "invoke",
        }
    }
}

/// `{add: [..], remove: [..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
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
    /// Send a message, then go on. With `variants`, the contact's bucket picks the message
    /// among them (DESIGN §3.1) and `message` is the first variant's.
    Send {
        message: String,
        next: String,
        variants: Vec<Variant>,
        winner: Option<Winner>,
    },
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
    /// Random split: the contact's bucket picks one path (DESIGN §3.1).
    Split { paths: Vec<SplitPath> },
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
            StepKind::Split { paths } => paths
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("split[{i}].next"), p.next.as_str()))
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
}
