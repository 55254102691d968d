//! Email through SES: SESv2 `SendEmail` (or SES v1 `SendRawEmail` for LocalStack's community
//! edition, with a MIME message built here and refused when a header could be injected), the
//! account suppression list, and message tags naming the contact, scenario and step so
//! engagement coming back from SES finds its send without a lookup.

use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag, Template,
};
use relance_core::engine::Send;
use serde_json::Value;

use super::{SendError, SenderConfig, unsupported};
use crate::bridge::Bridge;

/// The SES sender.
#[derive(Debug, Clone)]
pub struct SesSender {
    v2: aws_sdk_sesv2::Client,
    v1: Option<aws_sdk_ses::Client>,
    config: SenderConfig,
    bridge: Bridge,
}

/// A tag value SES accepts (letters, digits, `_`, `-`, `.`, `@`).
fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The message tags of an email (both SES APIs): they name the contact, scenario and step,
/// so engagement events coming back find their send without a lookup.
fn message_tags<'a>(
    send: &'a Send,
    scenario: &'a str,
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    [
        ("relance_contact", send.contact.as_str()),
        ("relance_scenario", scenario),
        ("relance_step", send.step.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k, tag_value(v)))
}

impl SesSender {
    /// Email through `v2` with these settings.
    pub fn new(v2: aws_sdk_sesv2::Client, config: SenderConfig, bridge: Bridge) -> SesSender {
        SesSender {
            v2,
            v1: None,
            config,
            bridge,
        }
    }

    /// Email goes through SES v1 with this client when the settings ask for it.
    pub fn with_v1(mut self, client: aws_sdk_ses::Client) -> SesSender {
        self.v1 = Some(client);
        self
    }

    /// Why the SES account suppression list stops `address` (none when it does not). An
    /// emulator that lacks the call is logged and passed (SES enforces its list anyway);
    /// other errors retry later.
    pub fn suppressed(&self, address: &str) -> Result<Option<String>, SendError> {
        let r = self.bridge.block(
            self.v2
                .get_suppressed_destination()
                .email_address(address)
                .send(),
        );
        match r {
            Ok(out) => Ok(out
                .suppressed_destination
                .map(|d| format!("suppressed ({})", d.reason.as_str().to_ascii_lowercase()))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) if unsupported(e.raw_response().map(|r| r.status().as_u16())) => {
                tracing::warn!(
                    "GetSuppressedDestination is not available here; SES enforces its suppression list itself"
                );
                Ok(None)
            }
            Err(e) => Err(SendError::Transient(format!("suppression list: {e:?}"))),
        }
    }

    /// Sends one email: SESv2 `SendEmail`, or SES v1 `SendRawEmail` when the settings ask
    /// for it and a v1 client is set; the provider's message id.
    pub fn send(&self, send: &Send, scenario: &str, address: &str) -> Result<String, SendError> {
        if let (true, Some(v1)) = (self.config.ses_v1, &self.v1) {
            return self.send_v1(v1, send, scenario, address);
        }
        let text = |v: &Option<String>| {
            v.as_ref()
                .map(|t| Content::builder().data(t).charset("UTF-8").build())
                .transpose()
        };
        let subject = Content::builder()
            .data(send.content.subject.clone().unwrap_or_default())
            .charset("UTF-8")
            .build()
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        let body = Body::builder()
            .set_html(text(&send.content.html).map_err(|e| SendError::Permanent(e.to_string()))?)
            .set_text(text(&send.content.text).map_err(|e| SendError::Permanent(e.to_string()))?)
            .build();
        let headers = self.unsubscribe_headers(scenario, send)?;
        let content = match &send.content.template {
            // An SES stored template renders subject and bodies from the contact's fields.
            Some(name) => EmailContent::builder()
                .template(
                    Template::builder()
                        .template_name(name)
                        .template_data(
                            send.content
                                .template_data
                                .clone()
                                .unwrap_or(Value::Null)
                                .to_string(),
                        )
                        .set_headers(Some(headers))
                        .build(),
                )
                .build(),
            None => {
                let message = Message::builder()
                    .subject(subject)
                    .body(body)
                    .set_headers(Some(headers))
                    .build();
                EmailContent::builder().simple(message).build()
            }
        };
        let tags = message_tags(send, scenario)
            .map(|(k, v)| {
                MessageTag::builder()
                    .name(k)
                    .value(v)
                    .build()
                    .map_err(|e| SendError::Permanent(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .bridge
            .block(
                self.v2
                    .send_email()
                    .from_email_address(
                        send.content
                            .from
                            .as_deref()
                            .unwrap_or(&self.config.from_email),
                    )
                    .set_reply_to_addresses(send.content.reply_to.clone().map(|r| vec![r]))
                    .destination(Destination::builder().to_addresses(address).build())
                    .content(content)
                    .set_email_tags(Some(tags))
                    .set_configuration_set_name(self.config.configuration_set.clone())
                    .send(),
            )
            .map_err(|e| match e.as_service_error() {
                Some(s)
                    if s.is_message_rejected()
                        || s.is_account_suspended_exception()
                        || s.is_mail_from_domain_not_verified_exception() =>
                {
                    SendError::Permanent(format!("{s:?}"))
                }
                _ => SendError::Transient(format!("{e:?}")),
            })?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// The RFC 8058 one-click headers, when unsubscribe links are configured.
    fn unsubscribe_headers(
        &self,
        scenario: &str,
        send: &Send,
    ) -> Result<Vec<MessageHeader>, SendError> {
        let Some(links) = &self.config.unsubscribe else {
            return Ok(Vec::new());
        };
        links
            .headers_for(scenario, send)
            .into_iter()
            .map(|(name, value)| {
                MessageHeader::builder()
                    .name(name)
                    .value(value)
                    .build()
                    .map_err(|e| SendError::Permanent(e.to_string()))
            })
            .collect()
    }

    fn send_v1(
        &self,
        v1: &aws_sdk_ses::Client,
        send: &Send,
        scenario: &str,
        address: &str,
    ) -> Result<String, SendError> {
        let headers = self
            .config
            .unsubscribe
            .as_ref()
            .map(|l| l.headers_for(scenario, send))
            .unwrap_or_default();
        let from = send
            .content
            .from
            .as_deref()
            .unwrap_or(&self.config.from_email);
        let raw = mime(from, address, send, &headers).map_err(SendError::Permanent)?;
        let data = aws_sdk_ses::primitives::Blob::new(raw.into_bytes());
        let message = aws_sdk_ses::types::RawMessage::builder()
            .data(data)
            .build()
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        let tags = message_tags(send, scenario)
            .map(|(k, v)| {
                aws_sdk_ses::types::MessageTag::builder()
                    .name(k)
                    .value(v)
                    .build()
                    .map_err(|e| SendError::Permanent(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .bridge
            .block(
                v1.send_raw_email()
                    .source(from)
                    .destinations(address)
                    .raw_message(message)
                    .set_tags(Some(tags))
                    .set_configuration_set_name(self.config.configuration_set.clone())
                    .send(),
            )
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_message_rejected() => SendError::Permanent(format!("{s:?}")),
                _ => SendError::Transient(format!("{e:?}")),
            })?;
        Ok(out.message_id)
    }
}

/// Why a header cannot go into a raw message: a line break (or any control character) in a
/// value would end the header and start another (`Subject: x\r\nBcc: victim@…`).
fn header_refusal(name: &str, value: &str) -> Option<String> {
    // RFC 5322 field names: printable ASCII except the colon.
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Some(format!(
            "the header name {name:?} is not a valid field name; the message is refused"
        ));
    }
    value.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "the {name} header contains the control character U+{:04X}; the message is refused so that no header can be injected",
            u32::from(c)
        )
    })
}

/// A MIME message (multipart/alternative when there are text and HTML) for SES v1's
/// `SendRawEmail`; non-ASCII headers are RFC 2047 encoded and bodies base64. Refused (the
/// reason names the header) when a header value carries a line break or another control
/// character, or a header name is not one: the raw path writes headers itself, so nothing
/// from a template or a contact may add one. The subject's surrounding whitespace (a YAML
/// block's final newline) is trimmed first.
pub fn mime(
    from: &str,
    to: &str,
    send: &Send,
    headers: &[(String, String)],
) -> Result<String, String> {
    use base64::Engine;
    let subject = send.content.subject.as_deref().unwrap_or("").trim();
    let fixed = [
        ("From", from),
        ("To", to),
        ("Subject", subject),
        ("Reply-To", send.content.reply_to.as_deref().unwrap_or("")),
    ];
    let custom = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    if let Some(why) = fixed
        .into_iter()
        .chain(custom)
        .find_map(|(name, value)| header_refusal(name, value))
    {
        return Err(why);
    }
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t.as_bytes());
    let header = |t: &str| {
        if t.is_ascii() {
            t.to_string()
        } else {
            format!("=?UTF-8?B?{}?=", b64(t))
        }
    };
    let body = |t: &str| {
        let encoded = b64(t);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        lines.join("\r\n")
    };
    let boundary = format!(
        "relance-{}",
        send.idempotency_key
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {}\r\nMIME-Version: 1.0\r\n",
        header(subject)
    );
    if let Some(reply_to) = &send.content.reply_to {
        m.push_str(&format!("Reply-To: {reply_to}\r\n"));
    }
    for (name, value) in headers {
        m.push_str(&format!("{name}: {value}\r\n"));
    }
    let parts: Vec<(&str, &str)> = [
        ("text/plain", send.content.text.as_deref()),
        ("text/html", send.content.html.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    m.push_str(&format!(
        "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
    ));
    for (kind, text) in parts {
        m.push_str(&format!("--{boundary}\r\nContent-Type: {kind}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n", body(text)));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relance_core::engine::Recipient;
    use relance_core::render::Rendered;
    use relance_core::scenario::Channel;

    #[test]
    fn mime_encodes_non_ascii_headers_and_both_bodies() {
        let send = Send {
            enrollment: "s:c:1".into(),
            contact: "c".into(),
            step: "a".into(),
            message: "m".into(),
            channel: Channel::Email,
            communication_type: "email".into(),
            to: Recipient::Email("c@example.com".into()),
            content: Rendered {
                subject: Some("Bonjour Chloé".into()),
                html: Some("<p>Salut</p>".into()),
                text: Some("Salut".into()),
                ..Rendered::default()
            },
            idempotency_key: "s:c:1:a".into(),
        };
        let m = mime(
            "news@example.com",
            "c@example.com",
            &send,
            &[("List-Unsubscribe".into(), "<https://u/x>".into())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            m.contains("Subject: =?UTF-8?B?Qm9uam91ciBDaGxvw6k=?="),
            "{m}"
        );
        assert!(
            m.contains("Content-Type: text/plain; charset=UTF-8")
                && m.contains("Content-Type: text/html; charset=UTF-8"),
            "{m}"
        );
        assert!(m.contains("U2FsdXQ="), "the text body, base64: {m}");
        assert!(m.trim_end().ends_with("--"), "{m}");
    }

    fn send_with(subject: &str, reply_to: Option<&str>) -> Send {
        Send {
            enrollment: "s:c:1".into(),
            contact: "c".into(),
            step: "a".into(),
            message: "m".into(),
            channel: Channel::Email,
            communication_type: "email".into(),
            to: Recipient::Email("c@example.com".into()),
            content: Rendered {
                subject: Some(subject.into()),
                reply_to: reply_to.map(str::to_string),
                text: Some("Salut".into()),
                ..Rendered::default()
            },
            idempotency_key: "s:c:1:a".into(),
        }
    }

    #[test]
    fn hostile_crlf_cannot_add_a_header_on_the_ses_v1_path() {
        let injected = "Hello\r\nBcc: victim@example.com";
        let ok_headers = [("List-Unsubscribe".to_string(), "<https://u/x>".to_string())];
        // The subject, from a template fed by contact data.
        let e = mime(
            "news@example.com",
            "c@example.com",
            &send_with(injected, None),
            &ok_headers,
        )
        .err()
        .unwrap_or_else(|| panic!("a CR/LF subject was written into the message"));
        assert!(e.contains("Subject") && e.contains("U+000D"), "{e}");
        // Every other header the raw path writes.
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Vec<(String, String)>,
            &'a str,
        );
        let cases: [Case; 5] = [
            (
                "news@example.com\r\nBcc: v@example.com",
                "c@example.com",
                None,
                vec![],
                "From",
            ),
            (
                "news@example.com",
                "c@example.com\nBcc: v@example.com",
                None,
                vec![],
                "To",
            ),
            (
                "news@example.com",
                "c@example.com",
                Some("r@example.com\r\nBcc: v@example.com"),
                vec![],
                "Reply-To",
            ),
            (
                "news@example.com",
                "c@example.com",
                None,
                vec![(
                    "List-Unsubscribe".into(),
                    "<https://u/x>\r\nBcc: v@example.com".into(),
                )],
                "List-Unsubscribe",
            ),
            (
                "news@example.com",
                "c@example.com",
                None,
                vec![("Bcc: v@example.com\r\nX".into(), "y".into())],
                "header name",
            ),
        ];
        for (from, to, reply_to, headers, named) in cases {
            let e = mime(from, to, &send_with("Hello", reply_to), &headers)
                .err()
                .unwrap_or_else(|| panic!("{named}: an injected header was written"));
            assert!(e.contains(named), "{named}: {e}");
        }
        // A block scalar's final newline is only trimmed.
        let m = mime(
            "news@example.com",
            "c@example.com",
            &send_with("Hello\n", None),
            &ok_headers,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.contains("Subject: Hello\r\nMIME-Version"), "{m}");
        assert!(!m.contains("Bcc"), "{m}");
    }
}
