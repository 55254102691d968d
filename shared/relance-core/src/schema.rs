//! The JSON Schema of scenario files (`relance schema`), generated with schemars from the
//! shape types below. They mirror the file as written (the loader reads the same keys; a test
//! checks the key lists agree), so editors can validate and complete scenario files.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::{Map, Value};

/// A Relance scenario file (v1): how contacts enter, who may, and the steps they go through.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct ScenarioFile {
    /// Lowercase letters, digits and dashes.
    #[schemars(regex(pattern = r"^[a-z0-9-]+$"))]
    id: String,
    /// Display name.
    name: Option<String>,
    /// Free text.
    description: Option<String>,
    /// The format version: 1.
    version: Option<u32>,
    /// IANA zone for schedules, dates and `at` times (default UTC).
    timezone: Option<String>,
    /// Read `at` times and recurring launches in the contact's own `timezone`.
    local_time: Option<bool>,
    /// How contacts enter.
    launch: LaunchFile,
    /// Who may enter.
    audience: Option<AudienceFile>,
    /// A contact enters at most once per this ISO-8601 duration (P30D).
    once_per: Option<String>,
    /// Leave as soon as one of these holds.
    exit_when: Option<Vec<ConditionFile>>,
    /// Messages reserved to this scenario, by id.
    messages: Option<BTreeMap<String, MessageFile>>,
    /// Sends due inside are held until it ends (local time).
    quiet_hours: Option<QuietHoursFile>,
    /// More sends to one contact in the window are skipped.
    frequency_cap: Option<FrequencyCapFile>,
    /// `explicit`: only contacts subscribed to the message type receive it.
    consent: Option<ConsentFile>,
    /// The steps; contacts enter at the first.
    steps: Vec<StepFile>,
    /// Custom ends (at most 100).
    goals: Option<Vec<GoalFile>>,
    /// Free labels.
    labels: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum LaunchType {
    Manual,
    Recurring,
    FixedDates,
    AfterImport,
    Trigger,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Frequency {
    Daily,
    Weekly,
    Monthly,
}

/// A weekday name (mon..sun) or a day of the month (1..31).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum DayRef {
    Number(u32),
    Name(String),
}

/// How contacts enter: exactly one type, its fields flat or nested under its name.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct LaunchFile {
    #[serde(rename = "type")]
    kind: LaunchType,
    /// trigger: contact.created|updated|subscribed|unsubscribed, page.visited, product.viewed,
    /// cart.abandoned, or a custom event name.
    event: Option<String>,
    /// page.visited: URL patterns (`*` matches anything).
    pages: Option<Vec<String>>,
    /// product.viewed / cart.abandoned: 10 to 720.
    #[schemars(range(min = 10, max = 720))]
    inactivity_minutes: Option<u32>,
    /// recurring: daily, weekly or monthly.
    frequency: Option<Frequency>,
    /// recurring: times of day ("09:00"), at most 5 for daily.
    times: Option<Vec<String>>,
    /// recurring: one time of day.
    time: Option<String>,
    /// recurring: weekdays (weekly) or days of the month (monthly).
    days: Option<Vec<DayRef>>,
    /// monthly: also run on the month's last day.
    last_day: Option<bool>,
    /// fixed_dates: at most 10 date-times.
    dates: Option<Vec<String>>,
    /// after_import: all, added or modified.
    contacts: Option<String>,
    /// recurring, nested form.
    recurring: Option<Map<String, Value>>,
    /// fixed_dates, nested form.
    fixed_dates: Option<Map<String, Value>>,
    /// after_import, nested form.
    after_import: Option<Map<String, Value>>,
}

/// all: true, groups, or criteria (groups and criteria together must both hold).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct AudienceFile {
    all: Option<bool>,
    groups: Option<Vec<String>>,
    criteria: Option<ConditionFile>,
}

/// A condition: exactly one of all, any, not, field (with op and value), in_groups, persona,
/// tag, a post-send key (delivered, opened, clicked, bounced, complained, unsubscribed naming
/// a send step) or event (with within).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct ConditionFile {
    all: Option<Vec<ConditionFile>>,
    any: Option<Vec<ConditionFile>>,
    not: Option<Box<ConditionFile>>,
    field: Option<String>,
    op: Option<OpFile>,
    value: Option<Value>,
    in_groups: Option<Vec<String>>,
    persona: Option<Vec<String>>,
    tag: Option<String>,
    delivered: Option<String>,
    opened: Option<String>,
    clicked: Option<String>,
    bounced: Option<String>,
    complained: Option<String>,
    unsubscribed: Option<String>,
    link: Option<String>,
    link_attribute: Option<String>,
    ignore_query: Option<bool>,
    event: Option<String>,
    /// ISO-8601 duration.
    within: Option<String>,
    /// wait_for only: how long to wait (ISO-8601 duration).
    timeout: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum OpFile {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    StartsWith,
    Exists,
    Before,
    After,
    WithinLast,
    Anniversary,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ChannelFile {
    Email,
    Sms,
    Push,
    WebPush,
}

/// A message template; placeholders such as `{{ contact.first_name }}` are minijinja.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct MessageFile {
    channel: ChannelFile,
    /// The communication type consent is checked against.
    #[serde(rename = "type")]
    kind: Option<String>,
    subject: Option<String>,
    html: Option<String>,
    text: Option<String>,
    title: Option<String>,
    body: Option<String>,
    data: Option<Map<String, Value>>,
    url: Option<String>,
    from: Option<String>,
    reply_to: Option<String>,
    /// An SES stored template name.
    template: Option<String>,
    /// transactional or promotional.
    sms_type: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct QuietHoursFile {
    from: String,
    to: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct FrequencyCapFile {
    #[schemars(range(min = 1))]
    max: u32,
    per: String,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ConsentFile {
    Implicit,
    Explicit,
}

/// `{after: P2D}`, `{after: P2D, at: "09:00"}`, `{at: "09:00"}` or `{until: date}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct DelayFile {
    after: Option<String>,
    at: Option<String>,
    until: Option<String>,
    local_time: Option<bool>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct BranchFile {
    when: ConditionFile,
    next: String,
}

/// One of tag, group, update_profile, export, task, create_lead, event.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct ActionFile {
    tag: Option<Map<String, Value>>,
    group: Option<Map<String, Value>>,
    update_profile: Option<Map<String, Value>>,
    export: Option<Map<String, Value>>,
    task: Option<Map<String, Value>>,
    create_lead: Option<Map<String, Value>>,
    event: Option<Map<String, Value>>,
}

/// A step: one of send, wait_for, if, branches, action, end (or only a delay), with its targets.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct StepFile {
    id: String,
    name: Option<String>,
    description: Option<String>,
    delay: Option<DelayFile>,
    /// A message id.
    send: Option<String>,
    wait_for: Option<ConditionFile>,
    on_event: Option<String>,
    on_timeout: Option<String>,
    #[serde(rename = "if")]
    if_: Option<ConditionFile>,
    then: Option<String>,
    #[serde(rename = "else")]
    else_: Option<String>,
    branches: Option<Vec<BranchFile>>,
    otherwise: Option<String>,
    action: Option<ActionFile>,
    /// success, failure, abandon, neutral or a goal id.
    end: Option<String>,
    next: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct GoalFile {
    id: String,
    kind: Option<String>,
    label: Option<String>,
}

/// The JSON Schema of scenario files.
pub fn scenario_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(ScenarioFile)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{LAUNCH_KEYS, MESSAGE_KEYS, STEP_KEYS, TOP_KEYS};

    fn keys(schema: &Value, def: Option<&str>) -> Vec<String> {
        let node = match def {
            Some(d) => &schema["$defs"][d],
            None => schema,
        };
        let mut k: Vec<String> = node["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_schema_lists_exactly_the_keys_the_loader_reads() {
        let s = scenario_schema();
        assert_eq!(keys(&s, None), sorted(&TOP_KEYS));
        assert_eq!(keys(&s, Some("StepFile")), sorted(&STEP_KEYS));
        assert_eq!(keys(&s, Some("LaunchFile")), sorted(&LAUNCH_KEYS));
        assert_eq!(keys(&s, Some("MessageFile")), sorted(&MESSAGE_KEYS));
        assert_eq!(s["required"], serde_json::json!(["id", "launch", "steps"]));
    }
}
