//! The loader: parses YAML or JSON, then reads the document key by key, reporting every
//! shape problem with its path instead of stopping at the first one.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::launch::parse_launch;
use super::steps::parse_step;
use super::*;
use crate::condition::Condition;
use crate::duration::IsoDuration;
use crate::problem::Problem;
use crate::schedule::{LocalTime, QuietHours, parse_zone};

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

/// Parses the text into a JSON value, reporting syntax errors with line and column; a key
/// written twice in a mapping is one of them.
pub fn parse_document(text: &str, format: Format) -> Result<Value, Problem> {
    read_document::<Unique>(text, format).map(|u| u.0)
}

/// [`parse_document`] for a text a store kept: a key written twice keeps its last value, as
/// every build before duplicate keys were refused read it (see `validate::parse_stored`).
pub fn parse_stored_document(text: &str, format: Format) -> Result<Value, Problem> {
    read_document::<Value>(text, format)
}

/// The text read into `T` (a value, with or without the duplicate-key check), its syntax
/// errors with line and column; a YAML text's nesting checked first.
fn read_document<T: serde::de::DeserializeOwned>(text: &str, format: Format) -> Result<T, Problem> {
    match format {
        Format::Json => serde_json::from_str::<T>(text).map_err(|e| {
            Problem::error(
                "",
                format!("JSON syntax: {}", strip_position(&e.to_string())),
            )
            .at(e.line(), e.column())
        }),
        Format::Yaml => {
            flow_depth_within(text, MAX_FLOW_NESTING)?;
            serde_yaml::from_str::<T>(text).map_err(|e| {
                let p = Problem::error(
                    "",
                    format!("YAML syntax: {}", strip_position(&e.to_string())),
                );
                match e.location() {
                    Some(loc) => p.at(loc.line(), loc.column()),
                    None => p,
                }
            })
        }
    }
}

/// The deepest nesting of flow collections (`[..]`, `{..}`) a YAML document may have: the
/// YAML reader's own limit (deeper fails after parsing anyway). Checked before parsing, in one
/// pass, because the parser's time grows with the square of the nesting: 200 KB of `[` held
/// it for minutes (and, on the API, the runner with it).
const MAX_FLOW_NESTING: usize = 128;

/// Refuses a YAML text whose flow collections nest deeper than `max`, naming the line and
/// column of the first bracket past it. A linear scan: brackets count wherever they are
/// outside comments and quoted text (in a plain text they over-count; balanced ones cancel),
/// and a quote opens quoted text only where a node may start (a line's start, after `: `,
/// `- `, `? `, `,`, a bracket, a colon inside brackets, an anchor or a tag). A guard, not a
/// parser: the API also reads a scenario off the runner, under a deadline, before the runner
/// sees it (SECURITY.md).
fn flow_depth_within(text: &str, max: usize) -> Result<(), Problem> {
    let bytes = text.as_bytes();
    let (mut line, mut column) = (1usize, 0usize);
    let mut depth = 0usize;
    // Whether a node may start here: only whitespace since a line start or an indicator.
    let mut node_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        column += 1;
        // YAML's other line breaks (NEL, LS, PS) and a byte order mark, as the reader takes
        // them: a break, and nothing.
        let other_break = matches!(bytes.get(i..i + 2), Some([0xC2, 0x85]))
            || matches!(bytes.get(i..i + 3), Some([0xE2, 0x80, 0xA8 | 0xA9]));
        if other_break {
            i += if bytes[i] == 0xC2 { 2 } else { 3 };
            line += 1;
            column = 0;
            node_start = true;
            continue;
        }
        if matches!(bytes.get(i..i + 3), Some([0xEF, 0xBB, 0xBF])) {
            i += 3;
            continue;
        }
        // A document marker at a line's start: a node may follow it.
        if column == 1
            && matches!(bytes.get(i..i + 3), Some(b"---" | b"..."))
            && matches!(bytes.get(i + 3), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
        {
            i += 3;
            column += 2;
            node_start = true;
            continue;
        }
        match b {
            b'\n' => {
                line += 1;
                column = 0;
                node_start = true;
            }
            b' ' | b'\t' | b'\r' => {}
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            // Counted wherever they are outside quotes and comments: a bracket in a plain text
            // over-counts (balanced ones cancel), one missed would under-count.
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Problem::error(
                        "",
                        format!("YAML syntax: collections nested deeper than {max} levels"),
                    )
                    .at(line, column));
                }
                node_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                node_start = false;
            }
            b',' if depth > 0 => node_start = true,
            // A verbatim tag (`!<tag:x,y>`) may hold any of the bytes below: to its `>`.
            b'!' if node_start && bytes.get(i + 1) == Some(&b'<') => {
                while i + 1 < bytes.len() && bytes[i] != b'>' {
                    i += 1;
                    column += 1;
                }
            }
            // An anchor or a tag before a node (`&x '..'`, `!!str "..."`): the node starts
            // after it. An alias is a whole node.
            b'&' | b'!' | b'*' if node_start => {
                while i + 1 < bytes.len()
                    && !matches!(
                        bytes[i + 1],
                        b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b']' | b'{' | b'}'
                    )
                {
                    i += 1;
                    column += 1;
                }
                node_start = b != b'*';
            }
            b'\'' | b'"' if node_start => {
                // A quoted scalar: to its closing quote ('' and \" stay inside).
                let quote = b;
                i += 1;
                while i < bytes.len() {
                    let c = bytes[i];
                    if c == b'\n' {
                        line += 1;
                        column = 0;
                    } else {
                        column += 1;
                    }
                    if quote == b'"' && c == b'\\' {
                        i += 2;
                        column += 1;
                        continue;
                    }
                    if c == quote {
                        if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            column += 1;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                node_start = false;
            }
            // `- ` and `? ` are indicators only where a node may start (inside a plain text,
            // `Offer - "x"`, they are text); `: ` ends a key.
            b'-' | b'?'
                if node_start
                    && matches!(bytes.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')) => {}
            b':' if matches!(bytes.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')) => {
                node_start = true;
            }
            // In a flow collection a value may follow its key's colon at once (`{"a":"b"}`).
            b':' if depth > 0 => node_start = true,
            _ => node_start = false,
        }
        i += 1;
    }
    Ok(())
}

/// A document's value with every mapping's keys checked unique: a key written twice is an
/// error (its line and column are the second's), where reading straight into a `Value` kept
/// the last one without a word (`audience` twice: the first audience silently gone).
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

/// Builds the same `Value` as `serde_json`'s own visitor, refusing a repeated key.
struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Unique::deserialize(d).map(|u| u.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut values = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if values.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}: each key once (the second would silently replace the first)"
                )));
            }
            let Unique(value) = map.next_value()?;
            values.insert(key, value);
        }
        Ok(Value::Object(values))
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
    typed::<RawQuietHours>("quiet_hours", value, problems).map(|r| QuietHours {
        from: r.from,
        to: r.to,
    })
}

/// Sends due inside are held until it ends (local time).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "QuietHours")]
struct RawQuietHours {
    /// Start, a time of day ("22:00").
    from: LocalTime,
    /// End, a time of day ("07:00").
    to: LocalTime,
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
pub(super) fn known_keys(
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

/// A Relance scenario file (v1): how contacts enter, who may, and the steps they go through.
///
/// The loader reads the top level through this type, after reporting unknown keys: each part
/// is kept as JSON and read on its own, so one problem does not hide the
/// others. The JSON Schema of scenario files (`relance schema`) is generated from it, each
/// part described by the type the loader reads it as.
#[derive(Debug, Default, JsonSchema)]
#[schemars(
    deny_unknown_fields,
    description = "A Relance scenario file (v1): how contacts enter, who may, and the steps they go through."
)]
pub struct ScenarioFile {
    /// Lowercase letters, digits and dashes.
    #[schemars(with = "String", required, regex(pattern = r"^[a-z0-9-]+$"))]
    pub id: Option<Value>,
    /// Display name.
    #[schemars(with = "Option<String>")]
    pub name: Option<Value>,
    /// Free text.
    #[schemars(with = "Option<String>")]
    pub description: Option<Value>,
    /// The format version: 1.
    #[schemars(with = "Option<u32>")]
    pub version: Option<Value>,
    /// IANA zone for schedules, dates and `at` times (default UTC).
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Value>,
    /// Read `at` times and recurring launches in the contact's own `timezone`.
    #[schemars(with = "Option<bool>")]
    pub local_time: Option<Value>,
    /// How contacts enter.
    #[schemars(with = "super::launch::RawLaunch", required)]
    pub launch: Option<Value>,
    /// Who may enter.
    #[schemars(with = "Option<RawAudience>")]
    pub audience: Option<Value>,
    /// A contact enters at most once per this ISO-8601 duration (P30D).
    #[schemars(with = "Option<IsoDuration>")]
    pub once_per: Option<Value>,
    /// Leave as soon as one of these holds.
    #[schemars(with = "Option<Vec<Condition>>")]
    pub exit_when: Option<Value>,
    /// Messages reserved to this scenario, by id.
    #[schemars(with = "Option<BTreeMap<String, Message>>")]
    pub messages: Option<Value>,
    /// Sends due inside are held until it ends (local time).
    #[schemars(with = "Option<RawQuietHours>")]
    pub quiet_hours: Option<Value>,
    /// More sends to one contact in the window are skipped.
    #[schemars(with = "Option<FrequencyCap>")]
    pub frequency_cap: Option<Value>,
    /// `explicit`: only contacts subscribed to the message type receive it.
    #[schemars(with = "Option<Consent>")]
    pub consent: Option<Value>,
    /// The steps; contacts enter at the first.
    #[schemars(with = "Vec<super::steps::RawStep>", required)]
    pub steps: Option<Value>,
    /// Custom ends (at most 100).
    #[schemars(with = "Option<Vec<Goal>>")]
    pub goals: Option<Value>,
    /// Free labels.
    #[schemars(with = "Option<Vec<String>>")]
    pub labels: Option<Value>,
    /// This share of entries is held out: entered, sent nothing, ended `held_out`.
    #[schemars(with = "Option<RawHoldout>")]
    pub holdout: Option<Value>,
    /// What "it worked" means: the event that counts as a conversion of an entry.
    #[schemars(with = "Option<RawConversion>")]
    pub conversion: Option<Value>,
}

/// `conversion: {event, where?, within, value?}`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Conversion")]
#[allow(dead_code)]
struct RawConversion {
    /// The activity event that converts (`purchase`, `trial.started`, ...).
    event: String,
    /// Only events whose properties match (`{field, op, value}` clauses, with all, any, not).
    #[serde(rename = "where")]
    filter: Option<Condition>,
    /// The window after entry (ISO 8601, such as P7D): the first match in it counts, once.
    within: String,
    /// A numeric property of the event summed as revenue (dots reach into objects).
    value: Option<String>,
}

/// Reads `conversion: {event, where?, within, value?}`.
fn parse_conversion(v: &Value, problems: &mut Vec<Problem>) -> Option<Conversion> {
    let v = known_keys(
        "conversion",
        v,
        &["event", "where", "within", "value"],
        "a conversion",
        problems,
    );
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            "conversion",
            "a conversion is a mapping such as {event: purchase, within: P7D}",
        ));
        return None;
    };
    let event = match map.get("event") {
        Some(Value::String(e)) if !e.trim().is_empty() => Some(e.clone()),
        Some(_) => {
            problems.push(Problem::error(
                "conversion.event",
                "must name an activity event, such as purchase",
            ));
            None
        }
        None => {
            problems.push(Problem::error(
                "conversion.event",
                "missing: a conversion needs the \"event\" that counts",
            ));
            None
        }
    };
    let within = match map.get("within") {
        Some(w) => typed::<IsoDuration>("conversion.within", w, problems).and_then(|d| {
            if d.is_zero() {
                problems.push(Problem::error(
                    "conversion.within",
                    "must be longer than zero, such as P7D",
                ));
                None
            } else {
                Some(d)
            }
        }),
        None => {
            problems.push(Problem::error(
                "conversion.within",
                "missing: a conversion needs a window after entry, such as P7D",
            ));
            None
        }
    };
    let filter = match map.get("where") {
        None | Some(Value::Null) => None,
        Some(w) => {
            let c = typed::<Condition>("conversion.where", w, problems)?;
            let mut properties_only = true;
            c.walk(&mut |c| {
                properties_only &= matches!(
                    c,
                    Condition::All(_)
                        | Condition::Any(_)
                        | Condition::Not(_)
                        | Condition::Profile(_)
                );
            });
            if !properties_only {
                problems.push(Problem::error(
                    "conversion.where",
                    "only {field, op, value} clauses (combined with all, any, not) apply to the event's properties",
                ));
                return None;
            }
            Some(c)
        }
    };
    let value = match map.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if !f.trim().is_empty() => Some(f.clone()),
        Some(_) => {
            problems.push(Problem::error(
                "conversion.value",
                "must name a numeric property of the event, such as amount",
            ));
            return None;
        }
    };
    Some(Conversion {
        event: event?,
        filter,
        within: within?,
        value,
    })
}

/// `holdout: {percent}`: a percent above 0 and below 100, with at most 2 decimals.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Holdout")]
#[allow(dead_code)]
struct RawHoldout {
    /// The share held out, above 0 and below 100, with at most 2 decimals.
    #[schemars(range(min = 0.01, max = 99.99))]
    percent: f64,
}

/// Reads `holdout: {percent}` in basis points.
fn parse_holdout(v: &Value, problems: &mut Vec<Problem>) -> Option<Holdout> {
    let v = known_keys("holdout", v, &["percent"], "a holdout", problems);
    let Some(map) = v.as_object() else {
        problems.push(Problem::error(
            "holdout",
            "a holdout is a mapping such as {percent: 10}",
        ));
        return None;
    };
    let Some(percent) = map.get("percent") else {
        problems.push(Problem::error(
            "holdout.percent",
            "missing: a holdout needs \"percent\"",
        ));
        return None;
    };
    match crate::experiment::basis_points(percent) {
        Ok(bp) if bp > 0 && bp < 10_000 => Some(Holdout { basis_points: bp }),
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
    }
}

impl ScenarioFile {
    /// The top level's parts (its unknown keys are reported apart), null ones included: a
    /// null part is reported like any other value of the wrong type.
    fn read(top: &Map<String, Value>) -> ScenarioFile {
        let get = |key: &str| top.get(key).cloned();
        ScenarioFile {
            id: get("id"),
            name: get("name"),
            description: get("description"),
            version: get("version"),
            timezone: get("timezone"),
            local_time: get("local_time"),
            launch: get("launch"),
            audience: get("audience"),
            once_per: get("once_per"),
            exit_when: get("exit_when"),
            messages: get("messages"),
            quiet_hours: get("quiet_hours"),
            frequency_cap: get("frequency_cap"),
            consent: get("consent"),
            steps: get("steps"),
            goals: get("goals"),
            labels: get("labels"),
            holdout: get("holdout"),
            conversion: get("conversion"),
        }
    }
}

/// The keys of a scenario file (the JSON Schema lists the same).
pub const TOP_KEYS: [&str; 19] = [
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
    "holdout",
    "conversion",
];

/// The keys of a message (the JSON Schema lists the same).
pub const MESSAGE_KEYS: [&str; 14] = [
    "channel", "type", "subject", "html", "text", "title", "body", "data", "url", "from",
    "reply_to", "template", "sms_type", "track",
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
    let file = ScenarioFile::read(top);
    let mut required = |key: &str, v: Option<&'_ Value>| {
        if v.is_none() {
            problems.push(Problem::error(
                key,
                format!("missing: a scenario needs \"{key}\""),
            ));
        }
    };
    let id_value = file.id.as_ref();
    let launch_value = file.launch.as_ref();
    let steps_value = file.steps.as_ref();
    required("id", id_value);
    required("launch", launch_value);
    required("steps", steps_value);

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
    let name = file
        .name
        .as_ref()
        .and_then(|v| typed::<String>("name", v, &mut problems))
        .unwrap_or_else(|| id.clone());
    if let Some(v) = file.version.as_ref()
        && v.as_u64() != Some(1)
    {
        problems.push(Problem::error(
            "version",
            "only version 1 of the scenario format exists",
        ));
    }
    let timezone = match file.timezone.as_ref() {
        None => chrono_tz::UTC,
        Some(v) => typed::<String>("timezone", v, &mut problems)
            .and_then(|s| {
                parse_zone(&s)
                    .map_err(|e| problems.push(Problem::error("timezone", e.to_string())))
                    .ok()
            })
            .unwrap_or(chrono_tz::UTC),
    };
    let local_time = file
        .local_time
        .as_ref()
        .and_then(|v| typed::<bool>("local_time", v, &mut problems))
        .unwrap_or(false);
    let mut launch = launch_value
        .and_then(|v| parse_launch(v, &mut problems))
        .unwrap_or(Launch::Manual);
    // `where` reads dates written without an offset in the scenario's zone.
    if let Launch::Trigger(t) = &mut launch {
        t.zone = timezone;
    }
    let audience = file
        .audience
        .as_ref()
        .and_then(|v| parse_audience(v, &mut problems))
        .unwrap_or_default();
    let once_per = file
        .once_per
        .as_ref()
        .and_then(|v| typed::<IsoDuration>("once_per", v, &mut problems));
    let exit_when = match file.exit_when.as_ref() {
        None => Vec::new(),
        // One condition is accepted as a list of one.
        Some(v @ Value::Object(_)) => typed::<Condition>("exit_when", v, &mut problems)
            .into_iter()
            .collect(),
        Some(v) => typed::<Vec<Condition>>("exit_when", v, &mut problems).unwrap_or_default(),
    };
    let mut messages = BTreeMap::new();
    let mut unread_messages = BTreeSet::new();
    if let Some(v) = file.messages.as_ref() {
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
    let quiet_hours = file
        .quiet_hours
        .as_ref()
        .and_then(|v| quiet_hours(v, &mut problems));
    let frequency_cap = file
        .frequency_cap
        .as_ref()
        .and_then(|v| typed::<FrequencyCap>("frequency_cap", v, &mut problems));
    let consent = file
        .consent
        .as_ref()
        .and_then(|v| typed::<Consent>("consent", v, &mut problems))
        .unwrap_or_default();
    let goals = file
        .goals
        .as_ref()
        .map(|v| parse_goals(v, &mut problems))
        .unwrap_or_default();
    let holdout = file
        .holdout
        .as_ref()
        .and_then(|v| parse_holdout(v, &mut problems));
    let conversion = file
        .conversion
        .as_ref()
        .and_then(|v| parse_conversion(v, &mut problems));
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
            holdout,
            conversion,
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

/// Who may enter: all: true, groups, or criteria (groups and criteria together must both hold).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Audience")]
struct RawAudience {
    /// Everyone.
    all: Option<bool>,
    /// Members of at least one of these groups.
    groups: Option<Vec<String>>,
    // Contacts matching this condition (described by its type).
    criteria: Option<Condition>,
}

fn parse_audience(v: &Value, problems: &mut Vec<Problem>) -> Option<Audience> {
    let raw: RawAudience = typed("audience", v, problems)?;
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
