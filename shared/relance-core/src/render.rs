//! Message rendering with minijinja: `{{ contact.first_name }}` placeholders, HTML bodies
//! auto-escaped, a missing field an error (unless the template gives a `default`), never a
//! half-rendered message. A template is bounded: a static check refuses values that could
//! grow without bound (see the `guard` module), each part renders with a fuel budget (instructions) and
//! into a capped buffer, so a hostile template fails its own send and nothing else.

mod guard;

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use minijinja::value::Rest;
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value as TemplateValue};
use serde::{Deserialize, Serialize};

use crate::contact::Contact;
use crate::problem::Problem;
use crate::scenario::Message;

/// Instructions one part of a message may execute (a loop turn costs a few).
pub const FUEL: u64 = 50_000;
/// The largest rendered html, text or body, in bytes.
pub const BODY_CAP: usize = 262_144;
/// The largest rendered subject or title, in bytes.
pub const LINE_CAP: usize = 4_096;
/// The largest output of `join` or `replace` (unless the input was already bigger).
pub const FILTER_CAP: usize = 65_536;
/// The most items `range` gives.
pub const RANGE_CAP: usize = 1_000;
/// Nesting depth (loops, filters) a template may reach while rendering.
const RECURSION_LIMIT: usize = 64;
/// Instructions `validate` may spend rendering all the messages of one file against a
/// sample contact: the check stays bounded however many messages the file has.
pub const SAMPLE_BUDGET: u64 = 20_000_000;

/// The parts of a message as rendered for one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// Email subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Email HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Email text, or SMS body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Push body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Push data, web push click URL and icon (as written in the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// Web push: where a click goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Email sender, overriding the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Email reply-to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// SES stored template name: SES renders the email from `template_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The stored template's data: `{"contact": fields, "scenario": id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_data: Option<serde_json::Value>,
    /// SMS type (transactional or promotional) when the message sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_type: Option<String>,
    /// The message says `track: false`: no open pixel, links left as written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_tracking: bool,
}

/// Why a message did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message \"{message}\" {part}: {reason}")]
pub struct RenderError {
    /// The message id.
    pub message: String,
    /// Which part (subject, html, ...).
    pub part: &'static str,
    /// What went wrong.
    pub reason: String,
}

const PARTS: [&str; 5] = ["subject", "html", "text", "title", "body"];

fn part<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    match name {
        "subject" => m.subject.as_deref(),
        "html" => m.html.as_deref(),
        "text" => m.text.as_deref(),
        "title" => m.title.as_deref(),
        "body" => m.body.as_deref(),
        _ => None,
    }
}

fn cap(part: &str) -> usize {
    match part {
        "subject" | "title" => LINE_CAP,
        _ => BODY_CAP,
    }
}

/// The compiled templates of a set of messages.
pub struct Templates {
    env: Environment<'static>,
    /// Templates the static check refused (`{id}.{part}` → why): their sends fail fast.
    refused: BTreeMap<String, String>,
    /// The contact fields each message reads, for a sample contact.
    reads: BTreeMap<String, BTreeSet<String>>,
    /// Parts without a `{` (no tag, no placeholder, no comment: the same for every contact),
    /// rendered once when compiled (`{id}.{part}` → text): a send renders them for nothing.
    fixed: BTreeMap<String, String>,
    /// Parts that only place contact fields (or the scenario's id) in text, without
    /// escaping (`{id}.{part}` → pieces): a send fills them in without minijinja when the
    /// fields are strings (see [`Piece`]).
    placed: BTreeMap<String, Vec<Piece>>,
}

/// A piece of a template that only places values in text: `Hello {{ contact.first_name }}`
/// is a text, a field, and nothing else. Filled in with a contact whose fields it reads are
/// strings, it is the text minijinja renders (tested against it); anything else (a field
/// missing or not a string, an output over the cap) is left to minijinja, whose answer or
/// error is the send's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `{{ contact.<name> }}`.
    Field(String),
    /// `{{ scenario }}`.
    Scenario,
}

/// The pieces of `source` when it only places values in text: literal text and `{{ contact.
/// <name> }}` or `{{ scenario }}` placeholders, nothing else (no tag, no comment, no
/// whitespace control, no filter), and no last newline (which minijinja drops). `None`
/// otherwise.
fn pieces(source: &str) -> Option<Vec<Piece>> {
    if source.ends_with(['\n', '\r']) || source.contains("{%") || source.contains("{#") {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let inside = &rest[open + 2..];
        let close = inside.find("}}")?;
        let expression = inside[..close].trim_matches([' ', '\t', '\n', '\r']);
        if expression == "scenario" {
            out.push(Piece::Scenario);
        } else {
            let name = expression.strip_prefix("contact.")?;
            let mut chars = name.chars();
            let first = chars.next()?;
            if !(first.is_ascii_alphabetic() || first == '_')
                || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return None;
            }
            out.push(Piece::Field(name.to_string()));
        }
        rest = &inside[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    // minijinja spends fuel on each piece: thousands of them run out of it, an error the
    // send must give too. A template that long is left to minijinja.
    (out.len() <= MOST_PIECES).then_some(out)
}

/// The most pieces a placed part has: far from [`FUEL`] (a placeholder spends a few units).
const MOST_PIECES: usize = 256;

/// `pieces` filled in for `contact`, at most `cap` bytes: `None` when a field is missing or
/// not a string, or the text is over the cap (minijinja then renders it, or says why not).
fn fill(pieces: &[Piece], contact: &Contact, scenario: &str, cap: usize) -> Option<String> {
    let mut text = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Scenario => text.push_str(scenario),
            Piece::Field(name) => text.push_str(contact.fields().get(name)?.as_str()?),
        }
    }
    (text.len() <= cap).then_some(text)
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// An environment whose every render is bounded: fuel, recursion, capped `join`, `replace`
/// and `range` (the builtins stay reachable under private names for the capped ones only).
fn bounded_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("relance_builtin_join", minijinja::filters::join);
    env.add_filter("relance_builtin_replace", minijinja::filters::replace);
    env.add_filter("join", capped_join);
    env.add_filter("replace", capped_replace);
    env.add_function("range", capped_range);
    env
}

fn too_big(what: &str, limit: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} output over {limit} bytes"),
    )
}

/// `join` that measures first: a long list joined by a long separator never allocates more
/// than [`FILTER_CAP`].
fn capped_join(
    state: &State,
    value: TemplateValue,
    rest: Rest<TemplateValue>,
) -> Result<TemplateValue, Error> {
    let joiner = rest.first().map(|j| j.to_string().len()).unwrap_or(0);
    let mut total = 0usize;
    if let Some(s) = value.as_str() {
        total = s
            .len()
            .saturating_add(joiner.saturating_mul(s.chars().count()));
    } else {
        for (i, item) in value.try_iter()?.enumerate() {
            let len = item
                .as_str()
                .map_or_else(|| item.to_string().len(), str::len);
            total = total
                .saturating_add(len)
                .saturating_add(if i > 0 { joiner } else { 0 });
            if total > FILTER_CAP {
                break;
            }
        }
    }
    if total > FILTER_CAP {
        return Err(too_big("join", FILTER_CAP));
    }
    let mut args = vec![value];
    args.extend(rest.iter().cloned());
    state.apply_filter("relance_builtin_join", &args)
}

/// `replace` that counts first: the result is at most [`FILTER_CAP`] or the input's size.
fn capped_replace(
    state: &State,
    value: TemplateValue,
    from: TemplateValue,
    to: TemplateValue,
) -> Result<TemplateValue, Error> {
    let text = value.to_string();
    let from_s = from.to_string();
    let to_len = to.to_string().len();
    let count = text.matches(from_s.as_str()).count();
    let grown = text
        .len()
        .saturating_add(count.saturating_mul(to_len))
        .saturating_sub(count.saturating_mul(from_s.len()));
    if grown > FILTER_CAP.max(text.len()) {
        return Err(too_big("replace", FILTER_CAP.max(text.len())));
    }
    state.apply_filter("relance_builtin_replace", &[value, from, to])
}

/// `range` with at most [`RANGE_CAP`] items, so a filter over it stays cheap.
fn capped_range(lower: i64, upper: Option<i64>, step: Option<i64>) -> Result<TemplateValue, Error> {
    let (start, stop) = match upper {
        Some(u) => (lower, u),
        None => (0, lower),
    };
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "cannot create range with step of 0",
        ));
    }
    let span = if step > 0 {
        stop.saturating_sub(start)
    } else {
        start.saturating_sub(stop)
    };
    let count = if span <= 0 {
        0
    } else {
        (span.unsigned_abs() - 1) / step.unsigned_abs() + 1
    };
    if count > RANGE_CAP as u64 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("range has more than {RANGE_CAP} items"),
        ));
    }
    let items: Vec<i64> = (0..count as i64).map(|i| start + i * step).collect();
    Ok(TemplateValue::from(items))
}

/// An in-memory writer that fails past its cap (minijinja stops at the first failed write).
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(bytes.len()) > self.cap {
            self.over = true;
            return Err(io::Error::other("output cap reached"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One part rendered: its text and the fuel it used.
struct PartOutput {
    text: String,
    fuel: u64,
}

impl Templates {
    /// Compiles every part of every message; syntax errors, and templates whose values could
    /// grow without bound, come back as problems located at `messages.<id>.<part>`.
    pub fn compile(messages: &BTreeMap<String, Message>) -> (Templates, Vec<Problem>) {
        let mut t = Templates {
            env: bounded_environment(),
            refused: BTreeMap::new(),
            reads: BTreeMap::new(),
            fixed: BTreeMap::new(),
            placed: BTreeMap::new(),
        };
        let mut problems = Vec::new();
        for (id, m) in messages {
            t.add(id, m, &mut problems);
        }
        (t, problems)
    }

    /// What `validate` reports on the messages: [`Templates::compile`]'s problems and
    /// [`Templates::sample_problems`], one message at a time so that memory does not grow
    /// with the number of messages.
    pub fn check(messages: &BTreeMap<String, Message>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut spent = 0u64;
        let mut t = Templates {
            env: bounded_environment(),
            refused: BTreeMap::new(),
            reads: BTreeMap::new(),
            fixed: BTreeMap::new(),
            placed: BTreeMap::new(),
        };
        for (id, m) in messages {
            t.add(id, m, &mut problems);
            let go_on = t.sample_one(id, m, &mut spent, &mut problems);
            // Forget the message before the next one: memory stays that of one message.
            for name in PARTS {
                t.env.remove_template(&format!("{id}.{name}"));
            }
            t.refused.clear();
            t.reads.clear();
            t.fixed.clear();
            t.placed.clear();
            if !go_on {
                break;
            }
        }
        problems
    }

    fn add(&mut self, id: &str, m: &Message, problems: &mut Vec<Problem>) {
        let Templates {
            env,
            refused,
            reads,
            fixed,
            placed,
        } = self;
        for name in PARTS {
            if let Some(source) = part(m, name) {
                let key = format!("{id}.{name}");
                // The `.html` suffix turns on HTML auto-escaping for that part only.
                if let Err(e) = env.add_template_owned(key.clone(), source.to_string()) {
                    problems.push(Problem::error(
                        format!("messages.{id}.{name}"),
                        format!("template: {}", e.detail().unwrap_or("syntax error")),
                    ));
                    continue;
                }
                // A name the template reads that no send provides (`contct.first_name`, a
                // typo, or `event.amount`) fails every send, whatever the contact: said now.
                if let Some(first) = env.get_template(&key).ok().and_then(|t| {
                    t.undeclared_variables(false)
                        .into_iter()
                        .filter(|v| !TEMPLATE_NAMES.contains(&v.as_str()))
                        .min()
                }) {
                    problems.push(Problem::error(
                        format!("messages.{id}.{name}"),
                        format!(
                            "template: `{first}` {UNKNOWN_NAME}: a send knows `contact` (its fields: `contact.first_name`) and `scenario`"
                        ),
                    ));
                }
                match guard::check_template(source) {
                    Ok(r) => {
                        let fields = reads.entry(id.to_string()).or_default();
                        fields.extend(r.map(|r| r.fields).unwrap_or_default());
                        // Rendered by minijinja itself, once: whatever it does with the text
                        // (a last newline) is what every send gets.
                        if !source.contains('{')
                            && let Ok(text) = env
                                .get_template(&key)
                                .and_then(|t| t.render(minijinja::context! {}))
                        {
                            fixed.insert(key, text);
                        } else if minijinja::default_auto_escape_callback(&key)
                            == minijinja::AutoEscape::None
                            && let Some(p) = pieces(source)
                        {
                            // Not an `.html` part: what is placed is not escaped.
                            placed.insert(key, p);
                        }
                    }
                    Err(why) => {
                        env.remove_template(&key);
                        problems.push(Problem::error(
                            format!("messages.{id}.{name}"),
                            format!("template: {why}"),
                        ));
                        refused.insert(key, why);
                    }
                }
            }
        }
    }

    fn render_part(
        &self,
        key: &str,
        part: &str,
        ctx: &TemplateValue,
    ) -> Result<PartOutput, String> {
        if let Some(why) = self.refused.get(key) {
            return Err(format!("template refused: {why}"));
        }
        let template = self.env.get_template(key).map_err(|e| reason(&e))?;
        let limit = cap(part);
        let mut out = Capped {
            buf: Vec::new(),
            cap: limit,
            over: false,
        };
        let result = template.render_captured_to(ctx, &mut out);
        match result {
            Ok(captured) => {
                let fuel = captured.state().fuel_levels().map_or(0, |(used, _)| used);
                let text = String::from_utf8(out.buf)
                    .map_err(|_| "rendered output is not UTF-8".to_string())?;
                Ok(PartOutput { text, fuel })
            }
            Err(_) if out.over => Err(format!("rendered output over {limit} bytes")),
            Err(e) => Err(reason(&e)),
        }
    }

    /// Renders every part of message `id` for `contact`.
    pub fn render(
        &self,
        id: &str,
        message: &Message,
        contact: &Contact,
        scenario: &str,
    ) -> Result<Rendered, RenderError> {
        // The contact as a template value, made only for a part that reads it.
        let mut ctx = None;
        let mut out = Rendered::default();
        for name in PARTS {
            if part(message, name).is_none() {
                continue;
            }
            // Joined, not `format!`ed: a tenth of the reader's formatting went to these keys.
            let key = [id, ".", name].concat();
            let placed = self
                .placed
                .get(&key)
                .and_then(|p| fill(p, contact, scenario, cap(name)));
            let text = match (self.fixed.get(&key), placed) {
                (Some(text), _) if text.len() <= cap(name) => text.clone(),
                (_, Some(text)) => text,
                _ => {
                    let ctx = ctx.get_or_insert_with(|| {
                        minijinja::context! {
                            contact => TemplateValue::from_serialize(contact.fields()),
                            scenario => scenario,
                        }
                    });
                    self.render_part(&key, name, ctx)
                        .map_err(|reason| RenderError {
                            message: id.to_string(),
                            part: name,
                            reason,
                        })?
                        .text
                }
            };
            let slot = match name {
                "subject" => &mut out.subject,
                "html" => &mut out.html,
                "text" => &mut out.text,
                "title" => &mut out.title,
                _ => &mut out.body,
            };
            *slot = Some(text);
        }
        out.data = message.data.clone();
        out.url = message.url.clone();
        out.from = message.from.clone();
        out.reply_to = message.reply_to.clone();
        out.sms_type = message.sms_type.clone();
        out.no_tracking = message.track == Some(false);
        if let Some(name) = &message.template {
            out.template = Some(name.clone());
            out.template_data =
                Some(serde_json::json!({"contact": contact.fields(), "scenario": scenario}));
        }
        Ok(out)
    }

    /// Renders every message against a sample contact (plausible values for the reserved
    /// keys and every field the message reads) and reports, located at the part, those that
    /// run out of fuel, write past their cap or nest too deep. Other render errors depend on
    /// real data (a field's type) and are left to the send. The whole check spends at most
    /// [`SAMPLE_BUDGET`] instructions.
    pub fn sample_problems(&self, messages: &BTreeMap<String, Message>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut spent = 0u64;
        for (id, m) in messages {
            if !self.sample_one(id, m, &mut spent, &mut problems) {
                break;
            }
        }
        problems
    }

    /// Renders message `id` against a sample contact; false once `spent` is past the budget.
    fn sample_one(
        &self,
        id: &str,
        m: &Message,
        spent: &mut u64,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let contact = sample_contact(self.reads.get(id));
        let ctx = minijinja::context! { contact => contact, scenario => "sample" };
        for name in PARTS {
            if part(m, name).is_none() {
                continue;
            }
            let key = format!("{id}.{name}");
            if self.refused.contains_key(&key) || self.env.get_template(&key).is_err() {
                continue;
            }
            if *spent > SAMPLE_BUDGET {
                problems.push(Problem::error(
                    "messages",
                    format!(
                        "rendering the messages against a sample contact took more than \
                         {SAMPLE_BUDGET} instructions together; make the templates simpler"
                    ),
                ));
                return false;
            }
            match self.render_part(&key, name, &ctx) {
                Ok(o) => *spent = spent.saturating_add(o.fuel),
                Err(why) => {
                    *spent = spent.saturating_add(FUEL);
                    if let Some(msg) = bounded_failure(&why) {
                        problems.push(Problem::error(format!("messages.{id}.{name}"), msg));
                    }
                }
            }
        }
        true
    }

    /// Evaluates an expression (`contact.visits + 1`) for `update_profile`.
    pub fn eval_expression(
        &self,
        expression: &str,
        contact: &Contact,
    ) -> Result<serde_json::Value, String> {
        self.check_expression(expression)?;
        let expr = self
            .env
            .compile_expression(expression)
            .map_err(|e| reason(&e))?;
        let value = expr
            .eval(
                minijinja::context! { contact => TemplateValue::from_serialize(contact.fields()) },
            )
            .map_err(|e| reason(&e))?;
        serde_json::to_value(&value).map_err(|e| e.to_string())
    }

    /// Checks a free-standing template (a webhook body): it compiles and passes the guard.
    pub fn check_text(&self, source: &str) -> Result<(), String> {
        self.env
            .template_from_str(source)
            .map_err(|e| format!("template: {}", e.detail().unwrap_or("syntax error")))?;
        guard::check_template(source)
            .map(|_| ())
            .map_err(|why| format!("template: {why}"))
    }

    /// Renders a free-standing template (a webhook body) for `contact`, with the guard, the
    /// fuel budget and the body cap of message parts.
    pub fn render_text(
        &self,
        source: &str,
        contact: &Contact,
        scenario: &str,
    ) -> Result<String, String> {
        self.check_text(source)?;
        let template = self.env.template_from_str(source).map_err(|e| reason(&e))?;
        let ctx = minijinja::context! {
            contact => TemplateValue::from_serialize(contact.fields()),
            scenario => scenario,
        };
        let mut out = Capped {
            buf: Vec::new(),
            cap: BODY_CAP,
            over: false,
        };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => {
                String::from_utf8(out.buf).map_err(|_| "rendered output is not UTF-8".to_string())
            }
            Err(_) if out.over => Err(format!("rendered output over {BODY_CAP} bytes")),
            Err(e) => Err(reason(&e)),
        }
    }

    /// Checks that an expression compiles and that its value is bounded.
    pub fn check_expression(&self, expression: &str) -> Result<(), String> {
        self.env
            .compile_expression(expression)
            .map_err(|e| reason(&e))?;
        guard::check_expression(expression).map(|_| ())
    }
}

/// What the error for a name no send provides says (a version stored before the check reads
/// it as a warning: `validate::parse_stored`).
pub(crate) const UNKNOWN_NAME: &str = "is not a name a message can read";

/// The names a message's template may read without declaring them: what a send provides
/// (`contact`, `scenario`) and the functions of the environment (`range` and minijinja's
/// own).
const TEMPLATE_NAMES: [&str; 6] = ["contact", "scenario", "range", "dict", "namespace", "debug"];

/// A contact with plausible values for the reserved keys and every field `reads` names.
fn sample_contact(reads: Option<&BTreeSet<String>>) -> TemplateValue {
    let mut fields = serde_json::Map::new();
    for (k, v) in [
        ("id", "sample"),
        ("email", "sample@example.com"),
        ("phone", "+15555550123"),
        ("timezone", "UTC"),
        ("first_name", "Sam"),
        ("last_name", "Sample"),
    ] {
        fields.insert(k.to_string(), serde_json::Value::from(v));
    }
    for name in reads.into_iter().flatten() {
        fields
            .entry(name.clone())
            .or_insert_with(|| serde_json::Value::from("sample"));
    }
    TemplateValue::from_serialize(&fields)
}

/// The message `validate` gives when a sample render hit a bound, or `None` for an error
/// that depends on real data.
fn bounded_failure(why: &str) -> Option<String> {
    if why.contains("fuel") {
        Some(format!(
            "template uses more than its fuel ({FUEL} instructions) rendering a sample contact; \
             a send would fail with \"{why}\""
        ))
    } else if why.contains("output over")
        || why.contains("recursion")
        || why.contains("range has more than")
    {
        Some(format!(
            "template goes past a bound rendering a sample contact: {why}"
        ))
    } else {
        None
    }
}

fn reason(e: &minijinja::Error) -> String {
    match e.kind() {
        ErrorKind::OutOfFuel => format!("template fuel exhausted (more than {FUEL} instructions)"),
        minijinja::ErrorKind::UndefinedError => {
            // Which placeholder: the text of the expression that failed, from the template.
            let placeholder = e
                .template_source()
                .zip(e.range())
                .and_then(|(source, range)| source.get(range))
                .map(str::trim)
                .filter(|p| !p.is_empty());
            format!(
                "a placeholder names a field the contact does not have{}{}",
                placeholder.map(|p| format!(": `{p}`")).unwrap_or_default(),
                e.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            )
        }
        _ => e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Channel;
    use serde_json::json;

    fn msg(subject: &str, html: Option<&str>) -> Message {
        serde_json::from_value(json!({"channel": "email", "subject": subject, "html": html}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Renders `m` for `c` both ways: as a send does (placed parts filled in when they can
    /// be) and with minijinja alone. Each part's text, or the error, is the same.
    fn same_as_minijinja(t: &Templates, m: &Message, c: &Contact, what: &str) {
        let fast = t.render("m", m, c, "spring");
        let mut slow_t = Templates::compile(&BTreeMap::from([("m".to_string(), m.clone())])).0;
        slow_t.placed.clear();
        let slow = slow_t.render("m", m, c, "spring");
        match (fast, slow) {
            (Ok(f), Ok(s)) => {
                assert_eq!(
                    (&f.subject, &f.html, &f.text),
                    (&s.subject, &s.html, &s.text),
                    "{what}"
                );
            }
            (Err(f), Err(s)) => assert_eq!((f.part, f.reason), (s.part, s.reason), "{what}"),
            (f, s) => panic!("{what}: {f:?} against {s:?}"),
        }
    }

    /// Placed parts: what they read and what they leave to minijinja.
    #[test]
    fn a_part_that_only_places_fields_is_recognised_and_the_rest_left_to_minijinja() {
        let placed = |source: &str| pieces(source).is_some();
        assert_eq!(
            pieces("Hi {{ contact.first_name }}, {{scenario}}!"),
            Some(vec![
                Piece::Text("Hi ".into()),
                Piece::Field("first_name".into()),
                Piece::Text(", ".into()),
                Piece::Scenario,
                Piece::Text("!".into()),
            ])
        );
        assert!(placed("{{ contact.a }}{{ contact._b2 }}"));
        assert!(placed(&"{{ contact.a }}".repeat(MOST_PIECES)));
        assert!(
            !placed(&"{{ contact.a }}".repeat(MOST_PIECES + 1)),
            "too long: minijinja's"
        );
        assert!(placed("a }} b {{\tcontact.x\n}} {"));
        for other in [
            "Hi {{ contact.first_name }}\n",
            "Hi {{ contact.first_name | upper }}",
            "Hi {{- contact.first_name }}",
            "Hi {{ contact['first_name'] }}",
            "Hi {{ contact.address.city }}",
            "Hi {{ contact.2x }}",
            "Hi {{ first_name }}",
            "{% if x %}y{% endif %}",
            "{# note #}{{ contact.a }}",
            "Hi {{ contact.a",
        ] {
            assert!(!placed(other), "{other:?}");
        }
        let m = |subject: &str, html: &str| msg(subject, Some(html));
        let c = Contact::from_json(json!({"id": "a", "first_name": "Ana <b>&", "age": 41,
            "nick": null, "long": "y".repeat(LINE_CAP)}))
        .unwrap_or_else(|e| panic!("{e}"));
        for (subject, html) in [
            (
                "Hello {{ contact.first_name }}",
                "<p>{{ contact.first_name }}</p>",
            ),
            ("Age {{ contact.age }}", "x"),
            ("Nick {{ contact.nick }}", "x"),
            ("Missing {{ contact.missing }}", "x"),
            ("Long {{ contact.long }}", "x"),
            ("{{ scenario }} {{ contact.id }}", "{{ scenario }}"),
        ] {
            let messages = BTreeMap::from([("m".to_string(), m(subject, html))]);
            let (t, problems) = Templates::compile(&messages);
            assert!(problems.is_empty(), "{problems:?}");
            assert!(
                !t.placed.contains_key("m.html"),
                "an .html part escapes: not placed"
            );
            same_as_minijinja(&t, &messages["m"], &c, subject);
        }
    }

    proptest::proptest! {
        /// Whatever the source and the contact's values, a send renders what minijinja
        /// renders (or fails as it fails): placed parts only take its place where they give
        /// its text.
        #[test]
        fn a_placed_part_renders_what_minijinja_renders(
            texts in proptest::collection::vec("[a-z {}%#|\\-\n\r\t.é🌞<&'\"]{0,8}", 1..5),
            fields in proptest::collection::vec(
                proptest::prop_oneof!["first_name", "x", "scenario", "contact.first_name",
                    "contact.x", "contact.n", " contact.first_name ", "contact.first_name|upper"],
                0..4,
            ),
            value in "[a-z {}%#\\\n\r.é🌞<&'\"]{0,12}",
        ) {
            let mut source = String::new();
            for (i, text) in texts.iter().enumerate() {
                source.push_str(text);
                if let Some(f) = fields.get(i) {
                    source.push_str("{{");
                    source.push_str(f);
                    source.push_str("}}");
                }
            }
            let messages = BTreeMap::from([("m".to_string(), msg(&source, None))]);
            let (t, problems) = Templates::compile(&messages);
            if problems.is_empty() {
                let c = Contact::from_json(json!({"id": "a", "x": value, "n": 7}))
                    .unwrap_or_else(|e| panic!("{e}"));
                same_as_minijinja(&t, &messages["m"], &c, &source);
                let c = Contact::from_json(json!({"id": "a", "first_name": value, "x": null}))
                    .unwrap_or_else(|e| panic!("{e}"));
                same_as_minijinja(&t, &messages["m"], &c, &source);
            }
        }
    }

    /// A part without a `{` renders once, at compile time, and every send gets that text:
    /// the same text as rendering it for the contact (a last newline, CRLF, HTML that is not
    /// escaped, text past its cap still failing as before), and a part with a placeholder in
    /// the same message still renders for the contact.
    #[test]
    fn a_fixed_part_reads_as_rendering_it_for_the_contact() {
        let long = "x".repeat(LINE_CAP + 1);
        let sources = [
            "Welcome",
            "Welcome\n",
            "Line one\r\nLine two\r\n",
            "Two newlines\n\n",
            "<p>Fish & chips</p>\n",
            "Été 🌞 — déjà",
            "",
            long.as_str(),
            "Hello {{ contact.first_name }}\n",
        ];
        let c = Contact::from_json(json!({"id": "a", "first_name": "Ana <3"}))
            .unwrap_or_else(|e| panic!("{e}"));
        for source in sources {
            let mut m = BTreeMap::new();
            m.insert("m".to_string(), msg(source, Some(source)));
            let (t, problems) = Templates::compile(&m);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(
                t.fixed.contains_key("m.subject"),
                !source.contains('{'),
                "{source:?}"
            );
            let ctx = minijinja::context! {
                contact => TemplateValue::from_serialize(c.fields()),
                scenario => "s",
            };
            let slow = |name: &str| {
                t.render_part(&format!("m.{name}"), name, &ctx)
                    .map(|p| p.text)
            };
            match t.render("m", &m["m"], &c, "s") {
                Ok(r) => {
                    assert_eq!(r.subject, slow("subject").ok(), "{source:?}");
                    assert_eq!(r.html, slow("html").ok(), "{source:?}");
                }
                Err(e) => {
                    assert_eq!(e.part, "subject", "{source:?}");
                    assert_eq!(Err(e.reason), slow("subject"), "{source:?}");
                }
            }
        }
    }

    #[test]
    fn track_false_reaches_the_rendered_send() {
        let mut m = BTreeMap::new();
        for (id, track) in [("on", None), ("off", Some(false))] {
            let mut message = msg("Hi", Some("<p>x</p>"));
            message.track = track;
            m.insert(id.to_string(), message);
        }
        let (t, problems) = Templates::compile(&m);
        assert!(problems.is_empty());
        let c = Contact::from_json(json!({"id": "a"})).unwrap_or_else(|e| panic!("{e}"));
        let on = t
            .render("on", &m["on"], &c, "s")
            .unwrap_or_else(|e| panic!("{e}"));
        let off = t
            .render("off", &m["off"], &c, "s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!on.no_tracking && off.no_tracking);
        // Only the opt-out is written, so earlier stored sends read back unchanged.
        let stored = serde_json::to_value(&on).unwrap_or_default();
        assert!(stored.get("no_tracking").is_none(), "{stored}");
        let stored = serde_json::to_value(&off).unwrap_or_default();
        assert_eq!(stored["no_tracking"], true);
    }

    #[test]
    fn renders_placeholders_and_escapes_html_only() {
        let mut m = BTreeMap::new();
        m.insert(
            "w".to_string(),
            msg(
                "Hi {{ contact.first_name }}",
                Some("<p>{{ contact.first_name }}</p>"),
            ),
        );
        let (t, problems) = Templates::compile(&m);
        assert!(problems.is_empty());
        let c = Contact::from_json(json!({"id": "a", "first_name": "<Ana>"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = t
            .render("w", &m["w"], &c, "s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.subject.as_deref(), Some("Hi <Ana>"));
        assert_eq!(r.html.as_deref(), Some("<p>&lt;Ana&gt;</p>"));
    }

    #[test]
    fn a_missing_field_fails_unless_defaulted() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), msg("Hi {{ contact.first_name }}", None));
        m.insert(
            "b".to_string(),
            msg("Hi {{ contact.first_name | default('there') }}", None),
        );
        let (t, _) = Templates::compile(&m);
        let c = Contact::bare("x");
        let e = t
            .render("a", &m["a"], &c, "s")
            .err()
            .unwrap_or_else(|| panic!("should fail"));
        assert_eq!(e.part, "subject");
        assert!(e.reason.contains("does not have"), "{}", e.reason);
        // The error says which placeholder.
        assert!(e.reason.contains("`contact.first_name`"), "{}", e.reason);
        assert_eq!(
            t.render("b", &m["b"], &c, "s").ok().and_then(|r| r.subject),
            Some("Hi there".into())
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let mut m = BTreeMap::new();
        m.insert("bad".to_string(), msg("Hi {{ contact.first_name ", None));
        let (_, problems) = Templates::compile(&m);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "messages.bad.subject");
        let _ = Channel::Email;
    }

    #[test]
    fn expressions_compute_profile_values() {
        let (t, _) = Templates::compile(&BTreeMap::new());
        let c =
            Contact::from_json(json!({"id": "a", "visits": 2})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.eval_expression("contact.visits + 1", &c), Ok(json!(3)));
        assert!(t.check_expression("contact.visits +").is_err());
    }

    fn one(part: &str, source: &str) -> BTreeMap<String, Message> {
        let m: Message =
            serde_json::from_value(json!({"channel": "email", "subject": "s", part: source}))
                .unwrap_or_else(|e| panic!("{e}"));
        BTreeMap::from([("m".to_string(), m)])
    }

    fn refused(source: &str) -> String {
        let (_, problems) = Templates::compile(&one("text", source));
        assert_eq!(problems.len(), 1, "{source}: {problems:?}");
        assert_eq!(problems[0].path, "messages.m.text");
        problems[0].message.clone()
    }

    fn render_text(source: &str, contact: serde_json::Value) -> Result<String, String> {
        let messages = one("text", source);
        let (t, problems) = Templates::compile(&messages);
        assert!(problems.is_empty(), "{source}: {problems:?}");
        let c = Contact::from_json(contact).unwrap_or_else(|e| panic!("{e}"));
        t.render("m", &messages["m"], &c, "s")
            .map(|r| r.text.unwrap_or_default())
            .map_err(|e| e.reason)
    }

    #[test]
    fn hostile_nested_loops_run_out_of_fuel() {
        let bomb = "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% if k == -1 %}x{% endif %}{% endfor %}{% endfor %}{% endfor %}";
        let e = render_text(bomb, json!({"id": "a"}))
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            format!("template fuel exhausted (more than {FUEL} instructions)")
        );
    }

    #[test]
    fn hostile_output_past_its_cap_fails() {
        let flood = "{% for i in range(1000) %}{% for j in range(1000) %}{{ contact.id }}{% endfor %}{% endfor %}";
        let e = render_text(flood, json!({"id": "x".repeat(200)}))
            .err()
            .unwrap_or_default();
        assert_eq!(e, "rendered output over 262144 bytes");
        // A subject has a smaller cap.
        let messages = one("html", "<p>ok</p>");
        let mut m = messages["m"].clone();
        m.subject = Some("{% for i in range(100) %}{{ contact.id }}{% endfor %}".into());
        let messages = BTreeMap::from([("m".to_string(), m)]);
        let (t, _) = Templates::compile(&messages);
        let c =
            Contact::from_json(json!({"id": "y".repeat(100)})).unwrap_or_else(|e| panic!("{e}"));
        let e = t
            .render("m", &messages["m"], &c, "s")
            .err()
            .unwrap_or_else(|| panic!("should fail"));
        assert_eq!(
            (e.part, e.reason.as_str()),
            ("subject", "rendered output over 4096 bytes")
        );
    }

    #[test]
    fn hostile_string_repetition_is_refused() {
        assert!(refused("{{ 'x' * 1000000000 }}").contains("at most 100 times"));
        assert!(
            refused("{{ contact.first_name * contact.count }}").contains("numbers on both sides")
        );
        assert!(refused("{{ ('x' * 100) * 100 }}").contains("not a computed one"));
        assert!(refused("{{ [1, 2, 3] * 1000000000 }}").contains("at most 100 times"));
    }

    #[test]
    fn hostile_doubling_values_are_refused() {
        // Each `set` doubles the last: 2^40 bytes from a few hundred of source.
        let mut doubling = "{% set v0 = contact.first_name %}".to_string();
        for i in 1..40 {
            doubling.push_str(&format!("{{% set v{i} = v{p} ~ v{p} %}}", p = i - 1));
        }
        doubling.push_str("{{ v39 }}");
        assert!(refused(&doubling).contains("more than 16 contact values"));
        // The same inside a loop: the value would grow on each turn.
        let growing = "{% set x = contact.id %}{% for i in range(60) %}{% set x = x ~ x %}{% endfor %}{{ x }}";
        assert!(
            refused(growing).contains("grows on each turn")
                || refused(growing).contains("more than 16")
        );
        // Lists nested in lists quote their items again on each level.
        let nested = "{% set a = [contact.id, contact.id] %}{% set b = [a, a] %}{% set c = [b, b] %}{{ c ~ '' }}";
        assert!(refused(nested).contains("more than 16 contact values"));
    }

    #[test]
    fn hostile_macros_captures_and_includes_are_refused() {
        let recursive = "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ f('x', 60) }}";
        assert!(refused(recursive).contains("macros"));
        assert!(
            refused("{% set a %}{{ contact.id }}{{ contact.id }}{% endset %}{{ a }}")
                .contains("blocks")
        );
        assert!(refused("{% include 'm.text' %}").contains("include"));
        assert!(refused("{% filter upper %}x{% endfilter %}").contains("filter"));
        assert!(refused("{% set ns = namespace(x='a') %}{{ ns.x }}").contains("namespace"));
        assert!(refused("{{ 'x'|center(1000000000) }}").contains("not available"));
        assert!(
            refused("{{ contact.tags|map('center', 1000000000)|join }}")
                .contains("must name one of")
        );
        assert!(
            refused("{% for x in contact.tree recursive %}{{ loop(x.children) }}{% endfor %}")
                .contains("recursive")
        );
    }

    #[test]
    fn hostile_join_replace_and_range_are_capped() {
        let big = "y".repeat(1000);
        let e = render_text(
            "{{ range(1000)|join(contact.bio) }}",
            json!({"id": "a", "bio": big}),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(e, "join output over 65536 bytes");
        let e = render_text(
            "{{ contact.bio|replace('y', contact.bio) }}",
            json!({"id": "a", "bio": big}),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(e, "replace output over 65536 bytes");
        let e = render_text(
            "{% for i in range(100000) %}{% endfor %}",
            json!({"id": "a"}),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(e, "range has more than 1000 items");
    }

    #[test]
    fn hostile_deep_nesting_is_a_syntax_error() {
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
        let (_, problems) = Templates::compile(&one("text", &deep));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.starts_with("template:"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn hostile_expression_bombs_are_refused() {
        let (t, _) = Templates::compile(&BTreeMap::new());
        assert!(t.check_expression("contact.name * 100000000").is_err());
        assert!(t.check_expression("contact.visits|int * 1000").is_ok());
        let c =
            Contact::from_json(json!({"id": "a", "name": "n"})).unwrap_or_else(|e| panic!("{e}"));
        assert!(t.eval_expression("contact.name * 100000000", &c).is_err());
    }

    #[test]
    fn bounded_templates_still_render_what_messages_need() {
        let contact = json!({
            "id": "a", "first_name": "Ana", "last_name": "Lima", "price": "9.5", "qty": 3,
            "cart": [{"name": "tea", "price": 2.5, "qty": 2}, {"name": "mug", "price": 8, "qty": 1}],
            "tags": ["vip", "new"]
        });
        let source = "{% set name = contact.first_name|default('there') %}Hi {{ name ~ ' ' ~ contact.last_name }}\n\
            {{ '-' * 10 }}\n\
            {% for item in contact.cart %}{{ loop.index }}. {{ item.name|upper }} {{ (item.price|float * item.qty|int)|round(2) }}\n{% endfor %}\
            {{ contact.tags|join(', ') }} {{ contact.qty * 2 }} {{ contact.price|float * 1.2 }}\
            {% set total = 0 %}{% for item in contact.cart %}{% set total = total + item.qty|int %}{% endfor %}";
        let text = render_text(source, contact).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text,
            "Hi Ana Lima\n----------\n1. TEA 5.0\n2. MUG 8.0\nvip, new 6 11.4"
        );
    }
}
