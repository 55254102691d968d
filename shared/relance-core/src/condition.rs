//! Conditions: all/any/not, profile clauses, groups, personas, tags, post-send engagement
//! and behaviour, as scenario files write them, and their pure evaluation.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

use crate::contact::{Contact, EngagementKind, History};
use crate::duration::IsoDuration;
use crate::schedule::DateTimeSpec;

/// A condition on a contact, its history and the current enrollment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawCondition")]
pub enum Condition {
    /// Every one holds (true when empty).
    All(Vec<Condition>),
    /// At least one holds (false when empty).
    Any(Vec<Condition>),
    /// The inner one does not hold.
    Not(Box<Condition>),
    /// A profile clause.
    Profile(ProfileClause),
    /// The contact is in at least one of these groups.
    InGroups(Vec<String>),
    /// The contact has at least one of these personas.
    Persona(Vec<String>),
    /// The contact carries this tag.
    Tag(String),
    /// Engagement with a send step of this enrollment.
    Engagement(EngagementClause),
    /// The contact did this event (within a window, if given).
    Event {
        name: String,
        within: Option<IsoDuration>,
    },
}

/// Profile operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Op {
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

/// `{field, op, value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileClause {
    /// The field (dots reach into objects).
    pub field: String,
    /// The operator.
    pub op: Op,
    /// The operand as written.
    pub value: Value,
    /// Parsed operand for before / after.
    date: Option<DateTimeSpec>,
    /// Parsed operand for within_last.
    window: Option<IsoDuration>,
}

/// `{opened: step}`, `{clicked: step, link, link_attribute, ignore_query}`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementClause {
    /// What happened.
    pub kind: EngagementKind,
    /// The send step it concerns.
    pub step: String,
    /// For clicks: this URL only.
    pub link: Option<String>,
    /// For clicks: links carrying this tag only.
    pub link_attribute: Option<String>,
    /// For clicks: compare URLs without their query string.
    pub ignore_query: bool,
}

/// One name, or a list of names.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The written shape of a condition (and of a `wait_for`, which adds `timeout`); the JSON
/// Schema of scenario files describes conditions with it.
///
/// A condition: exactly one of all, any, not, field (with op and value), in_groups, persona,
/// tag, a post-send key (delivered, opened, clicked, bounced, complained, unsubscribed naming
/// a send step) or event (with within).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "RawCondition",
    description = "A condition: exactly one of all, any, not, field (with op and value), in_groups, persona, tag, a post-send key (delivered, opened, clicked, bounced, complained, unsubscribed naming a send step) or event (with within)."
)]
pub(crate) struct RawCondition {
    all: Option<Vec<Condition>>,
    any: Option<Vec<Condition>>,
    not: Option<Box<Condition>>,
    field: Option<String>,
    op: Option<Op>,
    value: Option<Value>,
    in_groups: Option<OneOrMany>,
    persona: Option<OneOrMany>,
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
    within: Option<IsoDuration>,
    /// wait_for only: how long to wait (ISO-8601 duration).
    pub(crate) timeout: Option<IsoDuration>,
}

/// A condition is written as a `RawCondition`: its schema is that one's.
impl schemars::JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RawCondition::json_schema(generator)
    }
}

const KEYS: &str = "all, any, not, field, in_groups, persona, tag, delivered, opened, clicked, bounced, complained, unsubscribed or event";

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        if raw.timeout.is_some() {
            return Err("\"timeout\" belongs to a wait_for, not to a condition".into());
        }
        raw.into_condition()
    }
}

impl RawCondition {
    pub(crate) fn into_condition(self) -> Result<Condition, String> {
        let r = self;
        let engagement = [
            (EngagementKind::Delivered, &r.delivered),
            (EngagementKind::Opened, &r.opened),
            (EngagementKind::Clicked, &r.clicked),
            (EngagementKind::Bounced, &r.bounced),
            (EngagementKind::Complained, &r.complained),
            (EngagementKind::Unsubscribed, &r.unsubscribed),
        ];
        let heads = [
            r.all.is_some(),
            r.any.is_some(),
            r.not.is_some(),
            r.field.is_some(),
            r.in_groups.is_some(),
            r.persona.is_some(),
            r.tag.is_some(),
            r.event.is_some(),
        ]
        .into_iter()
        .chain(engagement.iter().map(|(_, s)| s.is_some()))
        .filter(|b| *b)
        .count();
        if heads == 0 {
            return Err(format!("a condition needs one of {KEYS}"));
        }
        if heads > 1 {
            return Err(format!(
                "a condition has exactly one of {KEYS}; combine several with all or any"
            ));
        }
        let is_click = r.clicked.is_some();
        if !is_click && (r.link.is_some() || r.link_attribute.is_some() || r.ignore_query.is_some())
        {
            return Err("link, link_attribute and ignore_query go with clicked only".into());
        }
        if r.event.is_none() && r.within.is_some() {
            return Err("within goes with event only".into());
        }
        if r.field.is_none() && (r.op.is_some() || r.value.is_some()) {
            return Err("op and value go with field only".into());
        }
        if let Some(list) = r.all {
            return Ok(Condition::All(list));
        }
        if let Some(list) = r.any {
            return Ok(Condition::Any(list));
        }
        if let Some(inner) = r.not {
            return Ok(Condition::Not(inner));
        }
        if let Some(field) = r.field {
            return ProfileClause::new(field, r.op, r.value).map(Condition::Profile);
        }
        if let Some(groups) = r.in_groups {
            let groups = groups.into_vec();
            if groups.is_empty() {
                return Err("in_groups needs at least one group".into());
            }
            return Ok(Condition::InGroups(groups));
        }
        if let Some(personas) = r.persona {
            let personas = personas.into_vec();
            if personas.is_empty() {
                return Err("persona needs at least one persona".into());
            }
            return Ok(Condition::Persona(personas));
        }
        if let Some(tag) = r.tag {
            return Ok(Condition::Tag(tag));
        }
        if let Some(name) = r.event {
            if name.trim().is_empty() {
                return Err("event needs a name".into());
            }
            return Ok(Condition::Event {
                name,
                within: r.within,
            });
        }
        for (kind, step) in engagement {
            if let Some(step) = step {
                return Ok(Condition::Engagement(EngagementClause {
                    kind,
                    step: step.clone(),
                    link: r.link,
                    link_attribute: r.link_attribute,
                    ignore_query: r.ignore_query.unwrap_or(false),
                }));
            }
        }
        Err(format!("a condition needs one of {KEYS}"))
    }
}

impl ProfileClause {
    fn new(field: String, op: Option<Op>, value: Option<Value>) -> Result<Self, String> {
        let op = op.ok_or("a field clause needs an op (eq, ne, lt, le, gt, ge, in, contains, starts_with, exists, before, after, within_last, anniversary)")?;
        if field.trim().is_empty() {
            return Err("field must not be empty".into());
        }
        let mut clause = ProfileClause {
            field,
            op,
            value: Value::Null,
            date: None,
            window: None,
        };
        match (op, value) {
            (Op::Exists, None) => clause.value = Value::Bool(true),
            (Op::Exists, Some(Value::Bool(b))) => clause.value = Value::Bool(b),
            (Op::Exists, Some(_)) => return Err("exists takes no value (or true / false)".into()),
            (Op::Anniversary, None) => {}
            (Op::Anniversary, Some(_)) => {
                return Err(
                    "anniversary takes no value: it compares the field's month and day with today"
                        .into(),
                );
            }
            (_, None) => return Err(format!("op {} needs a value", op_name(op))),
            (Op::In, Some(v @ Value::Array(_))) => clause.value = v,
            (Op::In, Some(_)) => {
                return Err("op in needs a list value, such as [Atlanta, Seattle]".into());
            }
            (Op::Before | Op::After, Some(Value::String(s))) => {
                clause.date = Some(s.parse().map_err(|e| format!("{e}"))?);
                clause.value = Value::String(s);
            }
            (Op::Before | Op::After, Some(_)) => {
                return Err(format!(
                    "op {} needs a date such as \"2026-01-01\"",
                    op_name(op)
                ));
            }
            (Op::WithinLast, Some(Value::String(s))) => {
                clause.window = Some(s.parse().map_err(|e| format!("{e}"))?);
                clause.value = Value::String(s);
            }
            (Op::WithinLast, Some(_)) => {
                return Err("op within_last needs a duration such as P30D".into());
            }
            (Op::StartsWith, Some(v @ Value::String(_))) => clause.value = v,
            (Op::StartsWith, Some(_)) => return Err("op starts_with needs a text value".into()),
            (
                Op::Lt | Op::Le | Op::Gt | Op::Ge,
                Some(Value::Array(_) | Value::Object(_) | Value::Null | Value::Bool(_)),
            ) => {
                return Err(format!(
                    "op {} needs a number, a date or a text value",
                    op_name(op)
                ));
            }
            (_, Some(v)) => clause.value = v,
        }
        Ok(clause)
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::Lt => "lt",
        Op::Le => "le",
        Op::Gt => "gt",
        Op::Ge => "ge",
        Op::In => "in",
        Op::Contains => "contains",
        Op::StartsWith => "starts_with",
        Op::Exists => "exists",
        Op::Before => "before",
        Op::After => "after",
        Op::WithinLast => "within_last",
        Op::Anniversary => "anniversary",
    }
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// The contact as it is now.
    pub contact: &'a Contact,
    /// Its history (events, engagement, sends), up to `now`.
    pub history: &'a History,
    /// The sends of the current enrollment: step → when.
    pub sent: &'a BTreeMap<String, DateTime<Utc>>,
    /// The current instant.
    pub now: DateTime<Utc>,
    /// Count only what happened strictly after this instant (a `wait_for` counts what came
    /// after it began; an event at the very instant it began, such as the one that triggered
    /// the scenario, does not count).
    pub since: Option<DateTime<Utc>>,
    /// The zone for dates without offset and for "today".
    pub tz: Tz,
}

impl Condition {
    /// True when the condition holds in `cx`.
    pub fn holds(&self, cx: &EvalContext<'_>) -> bool {
        match self {
            Condition::All(list) => list.iter().all(|c| c.holds(cx)),
            Condition::Any(list) => list.iter().any(|c| c.holds(cx)),
            Condition::Not(inner) => !inner.holds(cx),
            Condition::Profile(clause) => clause.holds(cx),
            Condition::InGroups(groups) => cx
                .contact
                .names("groups")
                .any(|g| groups.iter().any(|x| x == g)),
            Condition::Persona(personas) => cx
                .contact
                .names("personas")
                .any(|p| personas.iter().any(|x| x == p)),
            Condition::Tag(tag) => cx.contact.names("tags").any(|t| t == tag),
            Condition::Engagement(e) => e.holds(cx),
            Condition::Event { name, within } => {
                let from = within.as_ref().map(|w| w.sub_from(cx.now, cx.tz));
                cx.history.events.iter().any(|ev| {
                    ev.name == *name
                        && ev.at <= cx.now
                        && from.is_none_or(|f| ev.at >= f)
                        && cx.since.is_none_or(|s| ev.at > s)
                })
            }
        }
    }

    /// Every sub-condition, this one included, depth first.
    pub fn walk<'a>(&'a self, visit: &mut impl FnMut(&'a Condition)) {
        visit(self);
        match self {
            Condition::All(list) | Condition::Any(list) => list.iter().for_each(|c| c.walk(visit)),
            Condition::Not(inner) => inner.walk(visit),
            _ => {}
        }
    }

    /// True when the condition can change only through an event or engagement (so a
    /// `wait_for` on it can be resumed by one).
    pub fn mentions_events(&self) -> bool {
        let mut found = false;
        self.walk(&mut |c| {
            found |= matches!(c, Condition::Engagement(_) | Condition::Event { .. })
        });
        found
    }
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl EngagementClause {
    fn holds(&self, cx: &EvalContext<'_>) -> bool {
        let Some(sent_at) = cx.sent.get(&self.step) else {
            return false;
        };
        cx.history.engagement.iter().any(|e| {
            e.kind == self.kind
                && e.step == self.step
                && e.at >= *sent_at
                && e.at <= cx.now
                && cx.since.is_none_or(|s| e.at > s)
                && self.link.as_ref().is_none_or(|want| {
                    let got = e.url.as_deref().unwrap_or("");
                    if self.ignore_query {
                        strip_query(got) == strip_query(want)
                    } else {
                        got == want
                    }
                })
                && self
                    .link_attribute
                    .as_ref()
                    .is_none_or(|tag| e.link_tags.iter().any(|t| t == tag))
        })
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_instant(v: &Value, tz: Tz) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| s.trim().parse::<DateTimeSpec>().ok())
        .map(|d| d.resolve(tz))
}

fn as_date(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?.trim();
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// Equality with the coercions a CSV import needs: numbers compare with numeric text,
/// booleans with "true"/"false", text exactly.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            s.eq_ignore_ascii_case(if *x { "true" } else { "false" })
        }
        _ => a == b,
    }
}

fn loose_cmp(a: &Value, b: &Value, tz: Tz) -> Option<Ordering> {
    if matches!(a, Value::Number(_)) || matches!(b, Value::Number(_)) {
        return as_number(a)?.partial_cmp(&as_number(b)?);
    }
    if let (Some(x), Some(y)) = (as_instant(a, tz), as_instant(b, tz)) {
        return Some(x.cmp(&y));
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl ProfileClause {
    fn holds(&self, cx: &EvalContext<'_>) -> bool {
        let field = cx.contact.field(&self.field).filter(|v| !v.is_null());
        if self.op == Op::Exists {
            return field.is_some() == (self.value != Value::Bool(false));
        }
        let Some(field) = field else { return false };
        let want = &self.value;
        match self.op {
            Op::Eq => match field {
                Value::Array(items) if !want.is_array() => items.iter().any(|i| loose_eq(i, want)),
                _ => loose_eq(field, want),
            },
            Op::Ne => match field {
                Value::Array(items) if !want.is_array() => !items.iter().any(|i| loose_eq(i, want)),
                _ => !loose_eq(field, want),
            },
            Op::Lt => loose_cmp(field, want, cx.tz) == Some(Ordering::Less),
            Op::Le => matches!(
                loose_cmp(field, want, cx.tz),
                Some(Ordering::Less | Ordering::Equal)
            ),
            Op::Gt => loose_cmp(field, want, cx.tz) == Some(Ordering::Greater),
            Op::Ge => matches!(
                loose_cmp(field, want, cx.tz),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            Op::In => {
                let Value::Array(options) = want else {
                    return false;
                };
                match field {
                    Value::Array(items) => {
                        items.iter().any(|i| options.iter().any(|o| loose_eq(i, o)))
                    }
                    _ => options.iter().any(|o| loose_eq(field, o)),
                }
            }
            Op::Contains => match (field, want) {
                (Value::String(s), Value::String(w)) => s.contains(w.as_str()),
                (Value::Array(items), _) => items.iter().any(|i| loose_eq(i, want)),
                _ => false,
            },
            Op::StartsWith => match (field, want) {
                (Value::String(s), Value::String(w)) => s.starts_with(w.as_str()),
                _ => false,
            },
            Op::Before | Op::After => {
                let (Some(at), Some(spec)) = (as_instant(field, cx.tz), &self.date) else {
                    return false;
                };
                let limit = spec.resolve(cx.tz);
                if self.op == Op::Before {
                    at < limit
                } else {
                    at > limit
                }
            }
            Op::WithinLast => {
                let (Some(at), Some(window)) = (as_instant(field, cx.tz), &self.window) else {
                    return false;
                };
                at <= cx.now && at >= window.sub_from(cx.now, cx.tz)
            }
            Op::Anniversary => {
                let Some(date) = as_date(field) else {
                    return false;
                };
                let today = cx.now.with_timezone(&cx.tz).date_naive();
                let (month, day) = (date.month(), date.day());
                if (month, day) == (today.month(), today.day()) {
                    return true;
                }
                // 29 February falls on 28 February in years without one.
                let leap = NaiveDate::from_ymd_opt(today.year(), 2, 29).is_some();
                (month, day) == (2, 29) && !leap && (today.month(), today.day()) == (2, 28)
            }
            Op::Exists => unreachable_exists(),
        }
    }
}

// `Exists` returns early above; keeping the match exhaustive makes a new operator a compile error.
fn unreachable_exists() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{ActivityEvent, Engagement};
    use serde_json::json;

    fn cond(yaml: &str) -> Condition {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }
    fn cond_err(yaml: &str) -> String {
        match serde_yaml::from_str::<Condition>(yaml) {
            Ok(c) => panic!("{yaml} parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc)
    }
    fn contact(v: Value) -> Contact {
        Contact::from_json(v).unwrap_or_else(|e| panic!("{e}"))
    }

    struct World {
        contact: Contact,
        history: History,
        sent: BTreeMap<String, DateTime<Utc>>,
        now: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    }

    impl World {
        fn new(c: Value) -> Self {
            World {
                contact: contact(c),
                history: History::default(),
                sent: BTreeMap::new(),
                now: at("2026-12-01T12:00:00Z"),
                since: None,
            }
        }
        fn check(&self, yaml: &str) -> bool {
            let cx = EvalContext {
                contact: &self.contact,
                history: &self.history,
                sent: &self.sent,
                now: self.now,
                since: self.since,
                tz: chrono_tz::Europe::Paris,
            };
            cond(yaml).holds(&cx)
        }
    }

    #[test]
    fn every_profile_operator() {
        let w = World::new(
            json!({"id": "a", "city": "Seattle", "age": 41, "score": "12", "email": "ana@example.com",
            "tags": ["vip"], "signup": "2026-11-20T10:00:00Z", "birthday": "1985-12-01", "vip": true}),
        );
        let cases = [
            ("{field: city, op: eq, value: Seattle}", true),
            ("{field: city, op: eq, value: seattle}", false),
            ("{field: city, op: ne, value: Paris}", true),
            ("{field: age, op: lt, value: 42}", true),
            ("{field: age, op: le, value: 41}", true),
            ("{field: age, op: gt, value: 41}", false),
            ("{field: age, op: ge, value: 41}", true),
            ("{field: score, op: gt, value: 9}", true),
            ("{field: age, op: eq, value: \"41\"}", true),
            ("{field: city, op: in, value: [Atlanta, Seattle]}", true),
            ("{field: city, op: in, value: [Atlanta]}", false),
            ("{field: email, op: contains, value: \"@example\"}", true),
            ("{field: tags, op: contains, value: vip}", true),
            ("{field: email, op: starts_with, value: ana}", true),
            ("{field: email, op: exists}", true),
            ("{field: phone, op: exists}", false),
            ("{field: phone, op: exists, value: false}", true),
            ("{field: signup, op: before, value: \"2026-11-21\"}", true),
            ("{field: signup, op: after, value: \"2026-11-21\"}", false),
            ("{field: signup, op: within_last, value: P30D}", true),
            ("{field: signup, op: within_last, value: P7D}", false),
            ("{field: birthday, op: anniversary}", true),
            ("{field: vip, op: eq, value: true}", true),
            ("{field: vip, op: eq, value: \"true\"}", true),
        ];
        for (yaml, want) in cases {
            assert_eq!(w.check(yaml), want, "{yaml}");
        }
    }

    #[test]
    fn a_missing_field_makes_every_clause_false_but_exists() {
        let w = World::new(json!({"id": "a"}));
        for op in [
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "contains",
            "starts_with",
        ] {
            assert!(
                !w.check(&format!("{{field: nope, op: {op}, value: x}}")),
                "{op}"
            );
        }
        assert!(!w.check("{field: nope, op: in, value: [x]}"));
        assert!(!w.check("{field: nope, op: anniversary}"));
        assert!(!w.check("{field: nope, op: within_last, value: P1D}"));
        assert!(w.check("{not: {field: nope, op: exists}}"));
    }

    #[test]
    fn anniversary_of_29_february_falls_on_28_february_in_common_years() {
        let mut w = World::new(json!({"id": "a", "birthday": "2000-02-29"}));
        w.now = at("2027-02-28T12:00:00Z");
        assert!(w.check("{field: birthday, op: anniversary}"));
        w.now = at("2028-02-28T12:00:00Z");
        assert!(!w.check("{field: birthday, op: anniversary}"));
        w.now = at("2028-02-29T12:00:00Z");
        assert!(w.check("{field: birthday, op: anniversary}"));
    }

    #[test]
    fn groups_personas_tags_and_combinators() {
        let w = World::new(
            json!({"id": "a", "groups": ["beta"], "personas": ["buyer"], "tags": ["vip"]}),
        );
        assert!(w.check("{in_groups: [alpha, beta]}"));
        assert!(!w.check("{in_groups: [alpha]}"));
        assert!(w.check("{persona: buyer}"));
        assert!(w.check("{tag: vip}"));
        assert!(w.check("{all: [{tag: vip}, {persona: [buyer]}]}"));
        assert!(!w.check("{all: [{tag: vip}, {tag: other}]}"));
        assert!(w.check("{any: [{tag: other}, {tag: vip}]}"));
        assert!(w.check("{all: []}"));
        assert!(!w.check("{any: []}"));
    }

    #[test]
    fn engagement_counts_only_after_this_enrollment_sent_the_step() {
        let mut w = World::new(json!({"id": "a"}));
        let click = |t: &str, url: &str, tags: &[&str]| Engagement {
            at: at(t),
            step: "first".into(),
            kind: EngagementKind::Clicked,
            url: Some(url.into()),
            link_tags: tags.iter().map(|s| s.to_string()).collect(),
        };
        w.history.engagement.push(click(
            "2026-12-01T09:00:00Z",
            "https://x.io/pricing?utm=1",
            &["cta"],
        ));
        assert!(!w.check("{clicked: first}"), "not sent in this enrollment");
        w.sent.insert("first".into(), at("2026-12-01T08:00:00Z"));
        assert!(w.check("{clicked: first}"));
        assert!(w.check("{clicked: first, link: \"https://x.io/pricing\", ignore_query: true}"));
        assert!(!w.check("{clicked: first, link: \"https://x.io/pricing\"}"));
        assert!(w.check("{clicked: first, link: \"https://x.io/pricing?utm=1\"}"));
        assert!(w.check("{clicked: first, link_attribute: cta}"));
        assert!(!w.check("{clicked: first, link_attribute: footer}"));
        assert!(!w.check("{opened: first}"));
        w.since = Some(at("2026-12-01T10:00:00Z"));
        assert!(
            !w.check("{clicked: first}"),
            "a wait counts only what came after it began"
        );
        w.sent.insert("first".into(), at("2026-12-01T09:30:00Z"));
        w.since = None;
        assert!(
            !w.check("{clicked: first}"),
            "a click before the send is from an earlier enrollment"
        );
    }

    #[test]
    fn behaviour_within_a_window() {
        let mut w = World::new(json!({"id": "a"}));
        w.history.events.push(ActivityEvent {
            at: at("2026-11-28T12:00:00Z"),
            name: "purchase".into(),
            properties: Default::default(),
        });
        assert!(w.check("{event: purchase}"));
        assert!(w.check("{event: purchase, within: P7D}"));
        assert!(!w.check("{event: purchase, within: P2D}"));
        assert!(!w.check("{event: signup}"));
    }

    #[test]
    fn malformed_conditions_say_what_is_wrong() {
        assert!(cond_err("{field: a, op: in, value: x}").contains("list value"));
        assert!(cond_err("{field: a, value: x}").contains("needs an op"));
        assert!(cond_err("{field: a, op: eq}").contains("needs a value"));
        assert!(cond_err("{field: a, op: anniversary, value: x}").contains("takes no value"));
        assert!(cond_err("{field: a, op: within_last, value: 30}").contains("duration"));
        assert!(cond_err("{field: a, op: within_last, value: P3X}").contains("ISO-8601"));
        assert!(cond_err("{field: a, op: between, value: 3}").contains("unknown variant"));
        assert!(cond_err("{tag: a, persona: b}").contains("exactly one"));
        assert!(cond_err("{}").contains("needs one of"));
        assert!(cond_err("{opened: a, link: x}").contains("clicked only"));
        assert!(cond_err("{colour: red}").contains("unknown field"));
        assert!(cond_err("{event: purchase, timeout: P1D}").contains("wait_for"));
    }
}
