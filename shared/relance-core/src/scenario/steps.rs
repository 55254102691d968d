//! Reading the steps: each field on its own, so one problem does not hide the others.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::load::{known_keys, typed};
use super::*;
use crate::condition::Condition;
use crate::duration::IsoDuration;
use crate::problem::Problem;
use crate::schedule::{DateTimeSpec, Delay, LocalTime};

/// The keys of a step (the JSON Schema lists the same).
pub const STEP_KEYS: [&str; 19] = [
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
    "split",
    "action",
    "webhook",
    "invoke",
    "end",
    "next",
];

/// A step's plain fields; its delay, conditions, branches and action are read one by one
/// afterwards, so that a problem in one of them does not hide the others (or the graph). Those
/// are kept as JSON here; the JSON Schema names the shape they are read as.
///
/// A step: one of send, wait_for, if, branches, split, action, webhook, invoke, end (or only a delay),
/// with its targets.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(
    rename = "Step",
    deny_unknown_fields,
    description = "A step: one of send, wait_for, if, branches, split, action, webhook, invoke, end (or only a delay), with its targets."
)]
pub(super) struct RawStep {
    /// Unique within the scenario.
    #[schemars(required)]
    id: Option<String>,
    /// Display name.
    #[allow(dead_code)]
    name: Option<String>,
    /// Free text.
    #[allow(dead_code)]
    description: Option<String>,
    // Wait before running the step (the schema describes it by its type, `Delay`).
    #[schemars(with = "Option<RawDelay>")]
    delay: Option<Value>,
    /// A message id, or `{variants, winner?}`.
    #[schemars(with = "Option<RawSend>")]
    send: Option<Value>,
    // A condition to wait for, with its `timeout`.
    #[schemars(with = "Option<Condition>")]
    wait_for: Option<Value>,
    /// wait_for: where the condition leads.
    on_event: Option<String>,
    /// wait_for: where the timeout leads.
    on_timeout: Option<String>,
    // A two-way condition.
    #[serde(rename = "if")]
    #[schemars(with = "Option<Condition>")]
    if_: Option<Value>,
    /// if: where a true condition leads.
    then: Option<String>,
    /// if: where a false condition leads.
    #[serde(rename = "else")]
    else_: Option<String>,
    /// A multi-way condition: the first true branch wins.
    #[schemars(with = "Option<Vec<RawBranch>>")]
    branches: Option<Value>,
    /// branches: where no true branch leads.
    otherwise: Option<String>,
    /// A random split: 2 to 10 paths whose percents sum to 100.
    #[schemars(with = "Option<Vec<RawSplitPath>>", length(min = 2, max = 10))]
    split: Option<Value>,
    /// One of tag, group, update_profile, export, task, create_lead, event.
    #[schemars(with = "Option<Action>")]
    action: Option<Value>,
    /// An HTTP call per contact, signed, retried, then go on (`next`).
    #[schemars(with = "Option<crate::webhook::Webhook>")]
    webhook: Option<Value>,
    /// An asynchronous Lambda invocation per contact (AWS only), then go on (`next`).
    #[schemars(with = "Option<crate::invoke::Invoke>")]
    invoke: Option<Value>,
    /// success, failure, abandon, neutral or a goal id.
    end: Option<String>,
    /// Where send, action and delay-only steps go on.
    next: Option<String>,
}

/// What `at: best` is written as.
const BEST: &str = "best";

/// The shape [`parse_delay`] reads, key by key: `{after: P2D}`, `{after: P2D, at: "09:00"}`,
/// `{at: "09:00"}`, `{after: P1D, at: best, default_at: "10:00"}` or `{until: date}`.
#[derive(JsonSchema)]
#[schemars(
    rename = "Delay",
    deny_unknown_fields,
    description = "`{after: P2D}`, `{after: P2D, at: \"09:00\"}`, `{at: \"09:00\"}`, `{after: P1D, at: best, default_at: \"10:00\"}` or `{until: date}`."
)]
#[allow(dead_code)]
struct RawDelay {
    /// An ISO-8601 duration.
    after: Option<IsoDuration>,
    /// A time of day ("09:00"), or `best`: the hour the contact opens and clicks most.
    at: Option<LocalTime>,
    /// With `at: best`: the time of day used when the contact has fewer than 3 opens and
    /// clicks in the last 90 days.
    default_at: Option<LocalTime>,
    /// A date-time.
    until: Option<DateTimeSpec>,
    /// Read `at` in the contact's own zone.
    local_time: Option<bool>,
}

/// The shape [`parse_branches`] reads for each branch: `{when, next}`.
#[derive(JsonSchema)]
#[schemars(
    rename = "Branch",
    deny_unknown_fields,
    description = "`{when, next}` in a `branches` list."
)]
#[allow(dead_code)]
struct RawBranch {
    // The condition (described by its type).
    when: Condition,
    /// Where it leads.
    next: String,
}

/// The shape [`parse_split`] reads for each path: `{percent, next}`.
#[derive(JsonSchema)]
#[schemars(
    rename = "SplitPath",
    deny_unknown_fields,
    description = "`{percent, next}` in a `split` list."
)]
#[allow(dead_code)]
struct RawSplitPath {
    /// Its share: a percent with at most 2 decimals (the shares sum to 100).
    #[schemars(range(min = 0.01, max = 100))]
    percent: f64,
    /// Where it leads.
    next: String,
}

/// What `send` names: one message, or variants the contact's bucket picks among.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Send")]
#[allow(dead_code)]
enum RawSend {
    /// A message id.
    Message(String),
    /// Message variants.
    Variants(RawVariants),
}

/// `{variants, winner?}`: 2 to 10 messages of one channel whose percents sum to 100.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Variants")]
#[allow(dead_code)]
struct RawVariants {
    /// The messages and their shares.
    #[schemars(length(min = 2, max = 10))]
    variants: Vec<RawVariant>,
    /// The rule that picks a winner (read and checked; not applied yet).
    winner: Option<RawWinner>,
}

/// `{message, percent}` in a `variants` list.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Variant")]
#[allow(dead_code)]
struct RawVariant {
    /// A message id of the scenario.
    message: String,
    /// Its share: a percent with at most 2 decimals (the shares sum to 100).
    #[schemars(range(min = 0.01, max = 100))]
    percent: f64,
}

/// `{metric, after, min_sends, confidence}`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Winner")]
#[allow(dead_code)]
struct RawWinner {
    /// What a variant wins on.
    metric: WinnerMetric,
    /// An ISO 8601 duration past the step's first send.
    after: IsoDuration,
    /// The sends every variant needs.
    #[schemars(range(min = 1))]
    min_sends: u64,
    /// The one-sided confidence, such as 0.95.
    #[schemars(range(min = 0, max = 1))]
    confidence: f64,
}

/// The metrics a winner is picked on.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum WinnerMetric {
    /// Distinct contacts who opened.
    Opened,
    /// Distinct contacts who clicked.
    Clicked,
    /// Distinct contacts who converted.
    Converted,
}

/// The most variants a send step has.
pub const MAX_VARIANTS: usize = 10;

/// The metrics a winner is picked on, as written.
pub const WINNER_METRICS: [&str; 3] = ["opened", "clicked", "converted"];

/// Reads the `{variants, winner?}` form of `send`; the count and the sum are checked once every
/// percent has read. Message names are checked by the validator, against the messages.
fn parse_variants(
    base: &str,
    v: &Value,
    problems: &mut Vec<Problem>,
) -> (Vec<Variant>, Option<Winner>) {
    let v = known_keys(
        base,
        v,
        &["variants", "winner"],
        "a variants send",
        problems,
    );
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            base,
            "send is a message id or {variants: [{message, percent}, ...]}",
        ));
        return (Vec::new(), None);
    };
    let vbase = format!("{base}.variants");
    let Some(list) = map.get("variants").and_then(Value::as_array) else {
        problems.push(Problem::error(
            &vbase,
            "missing: variants is a list of {message: <message id>, percent: <share>}",
        ));
        return (Vec::new(), None);
    };
    let out = parse_shares(&vbase, list, &VARIANT_SHARES, problems)
        .into_iter()
        .map(|(basis_points, message)| Variant {
            message,
            basis_points,
        })
        .collect();
    let winner = map
        .get("winner")
        .and_then(|w| parse_winner(&format!("{base}.winner"), w, problems));
    (out, winner)
}

/// Reads `winner: {metric, after, min_sends, confidence}`, each part located when it is wrong.
fn parse_winner(base: &str, v: &Value, problems: &mut Vec<Problem>) -> Option<Winner> {
    let v = known_keys(
        base,
        v,
        &["metric", "after", "min_sends", "confidence"],
        "a winner",
        problems,
    );
    let Some(m) = v.as_object() else {
        problems.push(Problem::error(
            base,
            "a winner is {metric: opened|clicked|converted, after: <duration>, min_sends: <n>, confidence: <0..1>}",
        ));
        return None;
    };
    let missing = |problems: &mut Vec<Problem>, key: &str| {
        problems.push(Problem::error(
            format!("{base}.{key}"),
            format!("missing: a winner needs \"{key}\""),
        ));
    };
    let metric = match m.get("metric") {
        None => {
            missing(problems, "metric");
            None
        }
        Some(Value::String(s)) if WINNER_METRICS.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            problems.push(Problem::error(
                format!("{base}.metric"),
                format!("the metric is one of opened, clicked or converted, not {other}"),
            ));
            None
        }
    };
    let after = match m.get("after") {
        None => {
            missing(problems, "after");
            None
        }
        Some(a) => typed::<IsoDuration>(&format!("{base}.after"), a, problems),
    };
    let min_sends = match m.get("min_sends") {
        None => {
            missing(problems, "min_sends");
            None
        }
        Some(n) => match n.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                problems.push(Problem::error(
                    format!("{base}.min_sends"),
                    format!("min_sends is a whole number above 0, not {n}"),
                ));
                None
            }
        },
    };
    let confidence = match m.get("confidence") {
        None => {
            missing(problems, "confidence");
            None
        }
        Some(c) => match c.as_f64() {
            Some(c) if c > 0.0 && c < 1.0 => Some(c),
            _ => {
                problems.push(Problem::error(
                    format!("{base}.confidence"),
                    format!("the confidence is above 0 and below 1 (such as 0.95), not {c}"),
                ));
                None
            }
        },
    };
    // A part that did not read (already reported) stands in with a neutral value, so the
    // checks on the metric still run and one `validate` lists every problem; the errors keep
    // the scenario from running.
    Some(Winner {
        metric: metric?,
        after: after.unwrap_or_else(|| IsoDuration::from_seconds(86_400)),
        min_sends: min_sends.unwrap_or(1),
        confidence: confidence.unwrap_or(0.95),
    })
}

/// The most paths a split has.
pub const MAX_SPLIT_PATHS: usize = 10;

/// Stands in for a part that did not read (already reported), so that the checks that
/// follow neither stop nor add a second, misleading problem about it.
fn placeholder_wait() -> IsoDuration {
    IsoDuration::from_seconds(60)
}

fn parse_delay(base: &str, v: &Value, problems: &mut Vec<Problem>) -> Delay {
    let v = known_keys(
        base,
        v,
        &["after", "at", "until", "local_time", "default_at"],
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
    let best = v.is_some_and(|v| v.as_str() == Some(BEST));
    let at = match v {
        _ if best => None,
        Some(Value::String(s)) => s.parse::<LocalTime>().map_or_else(
            |_| {
                problems.push(Problem::error(
                    &p,
                    format!("\"{s}\" is not a time of day such as \"09:00\", or {BEST}"),
                ));
                None
            },
            Some,
        ),
        v => v.and_then(|v| typed::<LocalTime>(&p, v, problems)),
    };
    let (p, v) = field("default_at");
    let default_at = v.and_then(|v| typed::<LocalTime>(&p, v, problems));
    let (p, v) = field("until");
    let until = v.and_then(|v| typed::<DateTimeSpec>(&p, v, problems));
    let (p, v) = field("local_time");
    let local_time = v.and_then(|v| typed::<bool>(&p, v, problems));
    if best && !map.contains_key("default_at") {
        problems.push(Problem::error(
            format!("{base}.default_at"),
            "missing: at: best needs default_at, the time of day used when the contact has fewer than 3 opens and clicks, such as \"10:00\"",
        ));
    }
    if !best && map.contains_key("default_at") {
        problems.push(Problem::error(
            format!("{base}.default_at"),
            "default_at goes only with at: best",
        ));
    }
    let failed = problems.len() > before;
    if map.contains_key("until") && (map.contains_key("after") || map.contains_key("at")) {
        problems.push(Problem::error(
            format!("{base}.until"),
            "until cannot be combined with after or at",
        ));
    }
    if !failed && after.is_none() && at.is_none() && !best && until.is_none() {
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
        // Kept only with `at: best`, which it marks (a stray one was reported above).
        default_at: default_at.filter(|_| best),
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

/// A `split` list: each path's percent in basis points and its target; the count and the sum
/// are checked once every percent has read.
fn parse_split(base: &str, v: &Value, problems: &mut Vec<Problem>) -> Vec<SplitPath> {
    let Some(list) = v.as_array() else {
        problems.push(Problem::error(
            base,
            "split is a list of {percent: <share>, next: <step>}",
        ));
        return Vec::new();
    };
    parse_shares(base, list, &SPLIT_SHARES, problems)
        .into_iter()
        .map(|(basis_points, next)| SplitPath { basis_points, next })
        .collect()
}

/// How a list of shares (split paths, message variants) is written, for its problems.
struct Shares {
    /// The most items.
    max: usize,
    /// The key naming each item's target (`next`, `message`).
    target: &'static str,
    /// The keys an item takes, in the order its problems name them.
    keys: [&'static str; 2],
    /// One item (`a split path`).
    item: &'static str,
    /// One item where its share is 0 (`a path`).
    zero: &'static str,
    /// An item's shape.
    shape: &'static str,
    /// What holds the list and what its items are called (`a split`, `paths`).
    owner: (&'static str, &'static str),
}

const SPLIT_SHARES: Shares = Shares {
    max: MAX_SPLIT_PATHS,
    target: "next",
    keys: ["percent", "next"],
    item: "a split path",
    zero: "a path",
    shape: "a split path is {percent: <share>, next: <step>}",
    owner: ("a split", "paths"),
};

const VARIANT_SHARES: Shares = Shares {
    max: MAX_VARIANTS,
    target: "message",
    keys: ["message", "percent"],
    item: "a variant",
    zero: "a variant",
    shape: "a variant is {message: <message id>, percent: <share>}",
    owner: ("a send", "variants"),
};

/// Reads a list of shares: each item's percent in basis points and its target; the count and
/// the sum are checked once every percent has read.
fn parse_shares(
    base: &str,
    list: &[Value],
    shares: &Shares,
    problems: &mut Vec<Problem>,
) -> Vec<(u32, String)> {
    if !(2..=shares.max).contains(&list.len()) {
        let (owner, items) = shares.owner;
        problems.push(Problem::error(
            base,
            format!(
                "{owner} has 2 to {} {items}, not {}",
                shares.max,
                list.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut all_read = true;
    for (i, item) in list.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let item = known_keys(&path, item, &shares.keys, shares.item, problems);
        let Some(map) = item.as_object() else {
            problems.push(Problem::error(path, shares.shape));
            all_read = false;
            continue;
        };
        let basis_points = match map.get("percent") {
            Some(v) => match crate::experiment::basis_points(v) {
                Ok(0) => {
                    problems.push(Problem::error(
                        format!("{path}.percent"),
                        format!("{} needs a share above 0", shares.zero),
                    ));
                    Some(0)
                }
                Ok(bp) => Some(bp),
                Err(e) => {
                    problems.push(Problem::error(format!("{path}.percent"), e));
                    None
                }
            },
            None => {
                problems.push(Problem::error(
                    format!("{path}.percent"),
                    format!("missing: {} needs \"percent\"", shares.item),
                ));
                None
            }
        };
        all_read &= basis_points.is_some();
        let target_path = format!("{path}.{}", shares.target);
        let target = match map.get(shares.target) {
            Some(n) => typed::<String>(&target_path, n, problems),
            None => {
                problems.push(Problem::error(
                    target_path,
                    format!("missing: {} needs \"{}\"", shares.item, shares.target),
                ));
                None
            }
        };
        out.push((basis_points.unwrap_or(0), target.unwrap_or_default()));
    }
    // Saturating: a hostile list of many items must not overflow.
    let sum = out
        .iter()
        .fold(0u32, |acc, (bp, _)| acc.saturating_add(*bp));
    if all_read && !out.is_empty() && sum != 10_000 {
        problems.push(Problem::error(
            base,
            format!(
                "percents sum to {}, not 100",
                crate::experiment::percent_text(sum)
            ),
        ));
    }
    out
}

/// Reads step `i`. The flag is false when the step could not be read at all (no id, not a
/// mapping, a target that is not text): the graph checks are then skipped.
pub(super) fn parse_step(i: usize, v: &Value, problems: &mut Vec<Problem>) -> (Step, bool) {
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
            "a step is a mapping with an id and what it does (send, wait_for, if, branches, split, action, webhook, invoke or end)",
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
        ("split", raw.split.is_some()),
        ("action", raw.action.is_some()),
        ("webhook", raw.webhook.is_some()),
        ("invoke", raw.invoke.is_some()),
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
        raw.next.is_some() && !matches!(kind, "send" | "action" | "webhook" | "invoke" | "pass"),
        "next",
        "send, action, webhook, invoke and delay-only steps",
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
        "send" => {
            let (message, variants, winner) = match raw.send.as_ref() {
                Some(Value::String(m)) => (m.clone(), Vec::new(), None),
                Some(v) => {
                    let (variants, winner) = parse_variants(&format!("{base}.send"), v, problems);
                    let first = variants.first().map(|v| v.message.clone());
                    (first.unwrap_or_default(), variants, winner)
                }
                None => (String::new(), Vec::new(), None),
            };
            StepKind::Send {
                message,
                next: need(&mut errs, raw.next, "next", "a send step needs \"next\""),
                variants,
                winner,
            }
        }
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
        "split" => StepKind::Split {
            paths: parse_split(
                &format!("{base}.split"),
                raw.split.as_ref().unwrap_or(&Value::Null),
                problems,
            ),
        },
        "action" => {
            // An action that did not read stands in as one that has nothing to check.
            let action = raw
                .action
                .as_ref()
                .and_then(|a| typed::<Action>(&format!("{base}.action"), a, problems))
                .and_then(|a| match a {
                    Action::Webhook(_) => {
                        problems.push(Problem::error(
                            format!("{base}.action.webhook"),
                            "webhook is a step of its own: write `webhook: {url, ...}` on the step, not under action",
                        ));
                        None
                    }
                    Action::Invoke(_) => {
                        problems.push(Problem::error(
                            format!("{base}.action.invoke"),
                            "invoke is a step of its own: write `invoke: {function: ARN}` on the step, not under action",
                        ));
                        None
                    }
                    a => Some(a),
                })
                .unwrap_or_else(|| Action::CreateLead(Map::new()));
            StepKind::Action {
                action,
                next: need(&mut errs, raw.next, "next", "an action step needs \"next\""),
            }
        }
        "webhook" => {
            // A webhook that did not read stands in as an action with nothing to check; its
            // problems are already reported, located under `webhook`.
            let action = raw
                .webhook
                .as_ref()
                .and_then(|w| {
                    typed::<crate::webhook::Webhook>(&format!("{base}.webhook"), w, problems)
                })
                .map_or_else(|| Action::CreateLead(Map::new()), Action::Webhook);
            StepKind::Action {
                action,
                next: need(&mut errs, raw.next, "next", "a webhook step needs \"next\""),
            }
        }
        "invoke" => {
            // An invoke that did not read stands in as an action with nothing to check; its
            // problems are already reported, located under `invoke`.
            let action = raw
                .invoke
                .as_ref()
                .and_then(|w| {
                    typed::<crate::invoke::Invoke>(&format!("{base}.invoke"), w, problems)
                })
                .map_or_else(|| Action::CreateLead(Map::new()), Action::Invoke);
            StepKind::Action {
                action,
                next: need(&mut errs, raw.next, "next", "an invoke step needs \"next\""),
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
                    "a step needs one of send, wait_for, if, branches, split, action, webhook, invoke or end (or a delay and next)"
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
                    "a step needs send, wait_for, if, branches, split, action, webhook, invoke, end or at least a delay"
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
