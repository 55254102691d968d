//! Message rendering with minijinja: `{{ contact.first_name }}` placeholders, HTML bodies
//! auto-escaped, a missing field an error (unless the template gives a `default`), never a
//! half-rendered message.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value as TemplateValue};
use serde::{Deserialize, Serialize};

use crate::contact::Contact;
use crate::problem::Problem;
use crate::scenario::Message;

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

/// The compiled templates of a set of messages.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// Compiles every part of every message; syntax errors come back as problems located at
    /// `messages.<id>.<part>`.
    pub fn compile(messages: &BTreeMap<String, Message>) -> (Templates, Vec<Problem>) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut problems = Vec::new();
        for (id, m) in messages {
            for name in PARTS {
                if let Some(source) = part(m, name) {
                    // The `.html` suffix turns on HTML auto-escaping for that part only.
                    if let Err(e) =
                        env.add_template_owned(format!("{id}.{name}"), source.to_string())
                    {
                        problems.push(Problem::error(
                            format!("messages.{id}.{name}"),
                            format!("template: {}", e.detail().unwrap_or("syntax error")),
                        ));
                    }
                }
            }
        }
        (Templates { env }, problems)
    }

    /// Renders every part of message `id` for `contact`.
    pub fn render(
        &self,
        id: &str,
        message: &Message,
        contact: &Contact,
        scenario: &str,
    ) -> Result<Rendered, RenderError> {
        let ctx = minijinja::context! {
            contact => TemplateValue::from_serialize(contact.fields()),
            scenario => scenario,
        };
        let mut out = Rendered::default();
        for name in PARTS {
            if part(message, name).is_none() {
                continue;
            }
            let key = format!("{id}.{name}");
            let text = self
                .env
                .get_template(&key)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| RenderError {
                    message: id.to_string(),
                    part: name,
                    reason: reason(&e),
                })?;
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
        if let Some(name) = &message.template {
            out.template = Some(name.clone());
            out.template_data =
                Some(serde_json::json!({"contact": contact.fields(), "scenario": scenario}));
        }
        Ok(out)
    }

    /// Evaluates an expression (`contact.visits + 1`) for `update_profile`.
    pub fn eval_expression(
        &self,
        expression: &str,
        contact: &Contact,
    ) -> Result<serde_json::Value, String> {
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

    /// Checks that an expression compiles.
    pub fn check_expression(&self, expression: &str) -> Result<(), String> {
        self.env
            .compile_expression(expression)
            .map(|_| ())
            .map_err(|e| reason(&e))
    }
}

fn reason(e: &minijinja::Error) -> String {
    match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            format!(
                "a placeholder names a field the contact does not have{}",
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
}
