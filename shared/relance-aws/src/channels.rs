//! The channel senders: email through SESv2, SMS and mobile push through SNS. Each send is
//! claimed once per idempotency key in the state table before it goes out, so a duplicated
//! or replayed queue message never sends twice (at most once: a crash between the claim and
//! the provider's answer leaves the send claimed and not retried; it is logged).
//! Email carries message tags naming the contact, scenario and step, so engagement events
//! coming back from SES find their send without a lookup.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
use aws_sdk_sns::types::MessageAttributeValue;
use relance_core::engine::{Recipient, Send};
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::dynamodb::AwsError;

/// Why one send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Retrying will not help (bad payload, disabled endpoint, rejected address).
    #[error("permanent: {0}")]
    Permanent(String),
    /// Retry later (throttling, a network error).
    #[error("transient: {0}")]
    Transient(String),
}

/// What happened to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent now; the provider's message id.
    Sent(String),
    /// Already claimed by an earlier delivery of the same key.
    Duplicate,
}

/// The sender settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The verified SES identity emails come from (`RELANCE_FROM_EMAIL`).
    pub from_email: String,
    /// The SES configuration set whose event destinations report engagement.
    pub configuration_set: Option<String>,
    /// SMS type when the message does not say: Transactional or Promotional.
    pub default_sms_type: String,
    /// The SMS sender id, when the country allows one.
    pub sms_sender_id: Option<String>,
    /// Send email through SES v1 `SendRawEmail` instead of SESv2 (`RELANCE_EMAIL_API=ses-v1`):
    /// for LocalStack's community edition, which does not emulate SESv2.
    pub ses_v1: bool,
}

impl SenderConfig {
    /// From `RELANCE_FROM_EMAIL`, `RELANCE_SES_CONFIGURATION_SET`, `RELANCE_SMS_TYPE`,
    /// `RELANCE_SMS_SENDER_ID`, `RELANCE_EMAIL_API` (`sesv2`, the default, or `ses-v1`).
    pub fn from_env() -> Result<SenderConfig, crate::config::ConfigError> {
        let opt = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        Ok(SenderConfig {
            from_email: opt("RELANCE_FROM_EMAIL").ok_or(crate::config::ConfigError {
                name: "RELANCE_FROM_EMAIL",
                why: "not set".into(),
            })?,
            configuration_set: opt("RELANCE_SES_CONFIGURATION_SET"),
            default_sms_type: opt("RELANCE_SMS_TYPE").unwrap_or_else(|| "Transactional".into()),
            sms_sender_id: opt("RELANCE_SMS_SENDER_ID"),
            ses_v1: opt("RELANCE_EMAIL_API").is_some_and(|v| v.eq_ignore_ascii_case("ses-v1")),
        })
    }
}

/// The senders and the claim table.
#[derive(Debug, Clone)]
pub struct Senders {
    ses: aws_sdk_sesv2::Client,
    ses_v1: Option<aws_sdk_ses::Client>,
    sns: aws_sdk_sns::Client,
    dynamo: aws_sdk_dynamodb::Client,
    state_table: String,
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

/// The Android (FCM) and Apple (APNs) payloads of a push, as SNS's JSON message structure.
pub fn push_payload(send: &Send) -> Value {
    let title = send.content.title.clone().unwrap_or_default();
    let body = send.content.body.clone().unwrap_or_default();
    let data = json!({"relance_contact": send.contact, "relance_step": send.step, "relance_key": send.idempotency_key});
    let gcm = json!({"notification": {"title": title, "body": body}, "data": data});
    let apns = json!({"aps": {"alert": {"title": title, "body": body}, "sound": "default"}, "relance": data});
    json!({"default": body, "GCM": gcm.to_string(), "APNS": apns.to_string(), "APNS_SANDBOX": apns.to_string()})
}

impl Senders {
    /// Senders on these clients.
    pub fn new(
        ses: aws_sdk_sesv2::Client,
        sns: aws_sdk_sns::Client,
        dynamo: aws_sdk_dynamodb::Client,
        state_table: String,
        config: SenderConfig,
        bridge: Bridge,
    ) -> Senders {
        Senders {
            ses,
            ses_v1: None,
            sns,
            dynamo,
            state_table,
            config,
            bridge,
        }
    }

    /// Email goes through SES v1 with this client when the configuration asks for it.
    pub fn with_ses_v1(mut self, client: aws_sdk_ses::Client) -> Senders {
        self.ses_v1 = Some(client);
        self
    }

    /// Claims a key; false when an earlier delivery already did.
    fn claim(&self, key: &str) -> Result<bool, SendError> {
        let r = self.bridge.block(
            self.dynamo
                .put_item()
                .table_name(&self.state_table)
                .item("pk", AttributeValue::S("sent".into()))
                .item("sk", AttributeValue::S(key.into()))
                .item("status", AttributeValue::S("sending".into()))
                .condition_expression("attribute_not_exists(pk)")
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(SendError::Transient(format!("claim: {e:?}"))),
        }
    }

    /// Records the outcome of a claimed send (or releases the claim so a retry can send). A
    /// success needs no write: the claim already keeps the key from being sent again.
    fn settle(&self, key: &str, outcome: Result<&str, &SendError>) {
        let update = match outcome {
            Ok(id) => {
                tracing::info!(key, provider_id = id, "sent");
                return;
            }
            Err(SendError::Permanent(why)) => self
                .dynamo
                .update_item()
                .table_name(&self.state_table)
                .key("pk", AttributeValue::S("sent".into()))
                .key("sk", AttributeValue::S(key.into()))
                .update_expression("SET #s = :s, reason = :r")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", AttributeValue::S("failed".into()))
                .expression_attribute_values(":r", AttributeValue::S(why.clone()))
                .send(),
            Err(SendError::Transient(_)) => {
                let _ = self.bridge.block(
                    self.dynamo
                        .delete_item()
                        .table_name(&self.state_table)
                        .key("pk", AttributeValue::S("sent".into()))
                        .key("sk", AttributeValue::S(key.into()))
                        .send(),
                );
                return;
            }
        };
        if let Err(e) = self.bridge.block(update) {
            tracing::warn!(key, error = ?e, "could not record a send's outcome");
        }
    }

    /// Sends once per idempotency key.
    pub fn deliver(&self, send: &Send, scenario: &str) -> Result<Outcome, SendError> {
        if !self.claim(&send.idempotency_key)? {
            return Ok(Outcome::Duplicate);
        }
        let result = match &send.to {
            Recipient::Email(address) => self.email(send, scenario, address),
            Recipient::Phone(number) => self.sms(send, number),
            Recipient::Push(endpoints) => self.push(send, endpoints),
            Recipient::WebPush(_) => Err(SendError::Permanent(
                "web push is not delivered by the AWS senders yet".into(),
            )),
        };
        self.settle(&send.idempotency_key, result.as_deref());
        result.map(Outcome::Sent)
    }

    fn email(&self, send: &Send, scenario: &str, address: &str) -> Result<String, SendError> {
        if let (true, Some(v1)) = (self.config.ses_v1, &self.ses_v1) {
            return self.email_v1(v1, send, scenario, address);
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
        let message = Message::builder().subject(subject).body(body).build();
        let tags = [
            ("relance_contact", send.contact.as_str()),
            ("relance_scenario", scenario),
            ("relance_step", send.step.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| {
            MessageTag::builder()
                .name(k)
                .value(tag_value(v))
                .build()
                .map_err(|e| SendError::Permanent(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .bridge
            .block(
                self.ses
                    .send_email()
                    .from_email_address(&self.config.from_email)
                    .destination(Destination::builder().to_addresses(address).build())
                    .content(EmailContent::builder().simple(message).build())
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

    fn email_v1(
        &self,
        v1: &aws_sdk_ses::Client,
        send: &Send,
        scenario: &str,
        address: &str,
    ) -> Result<String, SendError> {
        let raw = mime(&self.config.from_email, address, send);
        let data = aws_sdk_ses::primitives::Blob::new(raw.into_bytes());
        let message = aws_sdk_ses::types::RawMessage::builder()
            .data(data)
            .build()
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        let tags = [
            ("relance_contact", send.contact.as_str()),
            ("relance_scenario", scenario),
            ("relance_step", send.step.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_ses::types::MessageTag::builder()
                .name(k)
                .value(tag_value(v))
                .build()
                .map_err(|e| SendError::Permanent(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .bridge
            .block(
                v1.send_raw_email()
                    .source(&self.config.from_email)
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

    fn sms(&self, send: &Send, number: &str) -> Result<String, SendError> {
        let valid = number.starts_with('+')
            && number.len() > 8
            && number.len() <= 16
            && number[1..].bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(SendError::Permanent(format!(
                "\"{number}\" is not an E.164 phone number"
            )));
        }
        let text = send
            .content
            .text
            .clone()
            .or(send.content.body.clone())
            .unwrap_or_default();
        let mut attributes = HashMap::new();
        let kind = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(&self.config.default_sms_type)
            .build()
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        attributes.insert("AWS.SNS.SMS.SMSType".to_string(), kind);
        if let Some(sender) = &self.config.sms_sender_id {
            let v = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(sender)
                .build()
                .map_err(|e| SendError::Permanent(e.to_string()))?;
            attributes.insert("AWS.SNS.SMS.SenderID".to_string(), v);
        }
        let out = self
            .bridge
            .block(
                self.sns
                    .publish()
                    .phone_number(number)
                    .message(text)
                    .set_message_attributes(Some(attributes))
                    .send(),
            )
            .map_err(|e| sns_error(&e))?;
        Ok(out.message_id.unwrap_or_default())
    }

    fn push(&self, send: &Send, endpoints: &[(String, String)]) -> Result<String, SendError> {
        let payload = push_payload(send).to_string();
        let mut ids = Vec::new();
        for (_, arn) in endpoints {
            let out = self
                .bridge
                .block(
                    self.sns
                        .publish()
                        .target_arn(arn)
                        .message_structure("json")
                        .message(&payload)
                        .send(),
                )
                .map_err(|e| sns_error(&e))?;
            ids.push(out.message_id.unwrap_or_default());
        }
        Ok(ids.join(","))
    }
}

fn sns_error<E: aws_sdk_sns::error::ProvideErrorMetadata + std::fmt::Debug>(
    e: &aws_sdk_sns::error::SdkError<E>,
) -> SendError {
    match e.as_service_error().and_then(|s| s.code()) {
        // A disabled endpoint (app uninstalled) or an opted-out number: recorded, not retried forever.
        Some(code @ ("EndpointDisabled" | "InvalidParameter" | "OptedOut" | "NotFound")) => {
            SendError::Permanent(code.to_string())
        }
        _ => SendError::Transient(format!("{e:?}")),
    }
}

/// A MIME message (multipart/alternative when there are text and HTML) for SES v1's
/// `SendRawEmail`; non-ASCII headers are RFC 2047 encoded and bodies base64.
pub fn mime(from: &str, to: &str, send: &Send) -> String {
    use base64::Engine;
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
        header(send.content.subject.as_deref().unwrap_or(""))
    );
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
    m
}

/// Reads a queue message's send: `(scenario, send)`.
pub fn decode_send(body: &str) -> Result<(String, Send), AwsError> {
    let v: Value = serde_json::from_str(body).map_err(|e| AwsError::Corrupt {
        what: "send message",
        why: e.to_string(),
    })?;
    let scenario = v["scenario"].as_str().unwrap_or("").to_string();
    let send: Send = serde_json::from_value(v["send"].clone()).map_err(|e| AwsError::Corrupt {
        what: "send message",
        why: e.to_string(),
    })?;
    Ok((scenario, send))
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
                title: None,
                body: None,
            },
            idempotency_key: "s:c:1:a".into(),
        };
        let m = mime("news@example.com", "c@example.com", &send);
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
}
