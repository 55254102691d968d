//! The channel senders: email through SESv2, SMS and mobile push through SNS. Each send is
//! claimed once per idempotency key in the state table before it goes out, so a duplicated
//! or replayed queue message never sends twice (at most once: a crash between the claim and
//! the provider's answer leaves the send claimed and not retried; it is logged).
//! Email carries message tags naming the contact, scenario and step, so engagement events
//! coming back from SES find their send without a lookup.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag, Template,
};
use aws_sdk_sns::types::MessageAttributeValue;
use relance_core::engine::{Recipient, Send};
use relance_core::unsubscribe::UnsubscribeLinks;
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::error::StoreError;
use crate::webpush::WebPushSender;

/// How long a send waits for a slot of the shared send rate before it is left to the queue.
pub const RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An HTTP status an emulator answers for a call it does not know.
fn unsupported(status: Option<u16>) -> bool {
    matches!(status, Some(404 | 405 | 501))
}

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
    /// Not sent, and it will not be: the provider's list stops it (`suppressed`: on the SES
    /// account suppression list; `opted_out`: the number opted out of SMS with SNS).
    Skipped(String),
}

/// The sender settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderConfig {
    /// The verified SES identity emails come from (`RELANCE_FROM_EMAIL`).
    pub from_email: String,
    /// The SES configuration set whose event destinations report engagement.
    pub configuration_set: Option<String>,
    /// SMS type when the message does not say: Transactional or Promotional.
    pub default_sms_type: String,
    /// The SMS sender id, when the country allows one.
    pub sms_sender_id: Option<String>,
    /// The SMS origination number (a long code, toll-free number or short code), E.164.
    pub sms_origination_number: Option<String>,
    /// Send email through SES v1 `SendRawEmail` instead of SESv2 (`RELANCE_EMAIL_API=ses-v1`):
    /// for LocalStack's community edition, which does not emulate SESv2.
    pub ses_v1: bool,
    /// Ask the provider's lists before sending (SES account suppression list, SNS SMS
    /// opt-outs) and skip, journaled, what they stop (`RELANCE_CHECK_PROVIDER_LISTS`, on by
    /// default).
    pub check_provider_lists: bool,
    /// At most this many sends per second on this channel, shared by every concurrent
    /// invocation (`RELANCE_SEND_RATE`; SES `MaxSendRate`, SNS SMS MPS). None: no limit.
    pub send_rate: Option<u32>,
    /// One-click unsubscribe links on emails (`RELANCE_UNSUBSCRIBE_SECRET`,
    /// `RELANCE_UNSUBSCRIBE_URL`, `RELANCE_UNSUBSCRIBE_MAILTO`).
    pub unsubscribe: Option<UnsubscribeLinks>,
}

impl SenderConfig {
    /// From `RELANCE_FROM_EMAIL`, `RELANCE_SES_CONFIGURATION_SET`, `RELANCE_SMS_TYPE`,
    /// `RELANCE_SMS_SENDER_ID`, `RELANCE_SMS_ORIGINATION_NUMBER`, `RELANCE_EMAIL_API`
    /// (`sesv2`, the default, or `ses-v1`), `RELANCE_CHECK_PROVIDER_LISTS`,
    /// `RELANCE_SEND_RATE` and the `RELANCE_UNSUBSCRIBE_*` settings.
    pub fn from_env() -> Result<SenderConfig, crate::config::ConfigError> {
        let secret = std::env::var("RELANCE_UNSUBSCRIBE_SECRET")
            .ok()
            .filter(|v| !v.trim().is_empty());
        SenderConfig::from_env_with_secret(secret)
    }

    /// As [`SenderConfig::from_env`], with the unsubscribe key given (the functions read it
    /// from Secrets Manager at start: [`crate::secrets::from_env`]); a key shorter than
    /// [`relance_core::unsubscribe::MIN_SECRET_BYTES`] is refused.
    pub fn from_env_with_secret(
        unsubscribe_secret: Option<String>,
    ) -> Result<SenderConfig, crate::config::ConfigError> {
        let opt = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let bad = |name: &'static str, why: &str| crate::config::ConfigError {
            name,
            why: why.to_string(),
        };
        let send_rate =
            match opt("RELANCE_SEND_RATE") {
                None => None,
                Some(v) => Some(v.trim().parse::<u32>().ok().filter(|r| *r > 0).ok_or_else(
                    || {
                        bad(
                            "RELANCE_SEND_RATE",
                            "must be a whole number of sends per second, at least 1",
                        )
                    },
                )?),
            };
        let unsubscribe = match unsubscribe_secret {
            None => None,
            Some(secret) => Some(UnsubscribeLinks {
                secret: {
                    relance_core::unsubscribe::check_secret(secret.as_bytes())
                        .map_err(|why| bad("RELANCE_UNSUBSCRIBE_SECRET", &why))?;
                    secret.into_bytes()
                },
                base_url: opt("RELANCE_UNSUBSCRIBE_URL").ok_or_else(|| {
                    bad("RELANCE_UNSUBSCRIBE_URL", "not set (the unsubscribe function's URL), while RELANCE_UNSUBSCRIBE_SECRET is")
                })?,
                mailto: opt("RELANCE_UNSUBSCRIBE_MAILTO"),
            }),
        };
        Ok(SenderConfig {
            from_email: opt("RELANCE_FROM_EMAIL").ok_or(crate::config::ConfigError {
                name: "RELANCE_FROM_EMAIL",
                why: "not set".into(),
            })?,
            configuration_set: opt("RELANCE_SES_CONFIGURATION_SET"),
            default_sms_type: opt("RELANCE_SMS_TYPE").unwrap_or_else(|| "Transactional".into()),
            sms_sender_id: opt("RELANCE_SMS_SENDER_ID"),
            sms_origination_number: opt("RELANCE_SMS_ORIGINATION_NUMBER"),
            ses_v1: opt("RELANCE_EMAIL_API").is_some_and(|v| v.eq_ignore_ascii_case("ses-v1")),
            check_provider_lists: !opt("RELANCE_CHECK_PROVIDER_LISTS").is_some_and(|v| {
                ["0", "false", "off", "no"].contains(&v.to_ascii_lowercase().as_str())
            }),
            send_rate,
            unsubscribe,
        })
    }

    /// Settings for tests and local hosts: this sender address, everything else default
    /// (provider lists checked, no rate limit, no unsubscribe links).
    pub fn new(from_email: &str) -> SenderConfig {
        SenderConfig {
            from_email: from_email.to_string(),
            default_sms_type: "Transactional".into(),
            check_provider_lists: true,
            ..SenderConfig::default()
        }
    }
}

/// The senders and the claim table.
#[derive(Debug, Clone)]
pub struct Senders {
    ses: aws_sdk_sesv2::Client,
    ses_v1: Option<aws_sdk_ses::Client>,
    web_push: Option<WebPushSender>,
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
            web_push: None,
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

    /// Web push goes through this sender (VAPID keys); without it a web push fails for good.
    pub fn with_web_push(mut self, sender: WebPushSender) -> Senders {
        self.web_push = Some(sender);
        self
    }

    /// The settings.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Takes one send from this second's shared budget (an atomic counter per channel and
    /// second in the state table), waiting for the next second when it is spent. After
    /// [`RATE_WAIT`] without a slot the send is left to the queue (transient), which absorbs
    /// the burst instead of failing it.
    fn take_rate_slot(&self, channel: &str) -> Result<(), SendError> {
        let Some(rate) = self.config.send_rate else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let second = now.as_secs();
            let r = self.bridge.block(
                self.dynamo
                    .update_item()
                    .table_name(&self.state_table)
                    .key("pk", AttributeValue::S(format!("rate#{channel}")))
                    .key("sk", AttributeValue::S(second.to_string()))
                    .update_expression("ADD sends :one SET expires_at = :ttl")
                    .condition_expression("attribute_not_exists(sends) OR sends < :max")
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .expression_attribute_values(":max", AttributeValue::N(rate.to_string()))
                    .expression_attribute_values(
                        ":ttl",
                        AttributeValue::N((second + 3600).to_string()),
                    )
                    .send(),
            );
            match r {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    if started.elapsed() >= RATE_WAIT {
                        return Err(SendError::Transient(format!(
                            "send rate of {rate}/s reached for {channel}; left to the queue"
                        )));
                    }
                    let to_next = 1_000 - u64::from(now.subsec_millis()).min(999);
                    std::thread::sleep(std::time::Duration::from_millis(to_next + 5));
                }
                Err(e) => return Err(SendError::Transient(format!("rate slot: {e:?}"))),
            }
        }
    }

    /// The provider's own lists: the SES account suppression list for an email address, the
    /// SNS opt-out list for a phone number. An emulator that lacks the call is logged and
    /// passed (the provider enforces its lists anyway); other errors retry later.
    fn provider_list_stops(&self, to: &Recipient) -> Result<Option<String>, SendError> {
        if !self.config.check_provider_lists {
            return Ok(None);
        }
        match to {
            Recipient::Email(address) => {
                let r = self.bridge.block(
                    self.ses
                        .get_suppressed_destination()
                        .email_address(address)
                        .send(),
                );
                match r {
                    Ok(out) => Ok(out.suppressed_destination.map(|d| {
                        format!("suppressed ({})", d.reason.as_str().to_ascii_lowercase())
                    })),
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
            Recipient::Phone(number) => {
                let r = self.bridge.block(
                    self.sns
                        .check_if_phone_number_is_opted_out()
                        .phone_number(number)
                        .send(),
                );
                match r {
                    Ok(out) if out.is_opted_out => Ok(Some("opted_out".into())),
                    Ok(_) => Ok(None),
                    Err(e)
                        if unsupported(e.raw_response().map(|r| r.status().as_u16()))
                            || e.as_service_error()
                                .and_then(|s| aws_sdk_sns::error::ProvideErrorMetadata::code(s))
                                .is_some_and(|c| c == "InvalidAction") =>
                    {
                        tracing::warn!(
                            "CheckIfPhoneNumberIsOptedOut is not available here; SNS enforces its opt-out list itself"
                        );
                        Ok(None)
                    }
                    Err(e) => Err(SendError::Transient(format!("opt-out list: {e:?}"))),
                }
            }
            Recipient::Push(_) | Recipient::WebPush(_) => Ok(None),
        }
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

    /// Sends once per idempotency key: a slot of the shared send rate, the claim, the
    /// provider's lists, then the provider.
    pub fn deliver(&self, send: &Send, scenario: &str) -> Result<Outcome, SendError> {
        self.take_rate_slot(send.channel.as_str())?;
        if !self.claim(&send.idempotency_key)? {
            return Ok(Outcome::Duplicate);
        }
        match self.provider_list_stops(&send.to) {
            Ok(Some(reason)) => {
                self.settle(
                    &send.idempotency_key,
                    Err(&SendError::Permanent(reason.clone())),
                );
                return Ok(Outcome::Skipped(reason));
            }
            Ok(None) => {}
            Err(e) => {
                self.settle(&send.idempotency_key, Err(&e));
                return Err(e);
            }
        }
        let result = match &send.to {
            Recipient::Email(address) => self.email(send, scenario, address),
            Recipient::Phone(number) => self.sms(send, scenario, number),
            Recipient::Push(endpoints) => self.push(send, endpoints),
            Recipient::WebPush(_) => self.web_push(send),
        };
        self.settle(&send.idempotency_key, result.as_deref());
        result.map(Outcome::Sent)
    }

    fn web_push(&self, send: &Send) -> Result<String, SendError> {
        let Some(sender) = &self.web_push else {
            return Err(SendError::Permanent(
                "web push is not configured (RELANCE_VAPID_PRIVATE_KEY, RELANCE_VAPID_SUBJECT)"
                    .into(),
            ));
        };
        let report = sender.deliver_blocking(&self.bridge, send, send.content.data.as_ref());
        let expired: Vec<String> = report.expired().into_iter().map(str::to_string).collect();
        if !expired.is_empty() {
            self.forget_web_push(&send.contact, &expired);
        }
        report.outcome().map_err(|e| {
            if e.is_transient() {
                SendError::Transient(e.to_string())
            } else {
                SendError::Permanent(e.to_string())
            }
        })
    }

    /// Removes expired browser subscriptions from the contact, so they are not tried again.
    fn forget_web_push(&self, contact: &str, expired: &[String]) {
        let mut store = crate::dynamodb::DynamoStore::new(
            self.dynamo.clone(),
            crate::config::AwsConfig {
                state_table: self.state_table.clone(),
                ..crate::config::AwsConfig::with_prefix("", 1)
            },
            self.bridge.clone(),
        );
        let result = (|| -> Result<(), StoreError> {
            use relance_core::ports::ContactStore;
            let Some(mut c) = store.contact(contact)? else {
                return Ok(());
            };
            let kept: Vec<Value> = c
                .web_push_subscriptions()
                .into_iter()
                .filter(|s| {
                    !s["endpoint"]
                        .as_str()
                        .is_some_and(|e| expired.iter().any(|x| x == e))
                })
                .cloned()
                .collect();
            c.set_field("web_push", Value::Array(kept));
            store.put_contact(&c, chrono::Utc::now())?;
            Ok(())
        })();
        match result {
            Ok(()) => tracing::info!(
                contact,
                expired = expired.len(),
                "expired web push subscriptions removed"
            ),
            Err(e) => {
                tracing::warn!(contact, error = %e, "could not remove expired web push subscriptions")
            }
        }
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
                self.ses
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

    fn email_v1(
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

    fn sms(&self, send: &Send, scenario: &str, number: &str) -> Result<String, SendError> {
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
        let sms_type = match send.content.sms_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("promotional") => "Promotional",
            Some(t) if t.eq_ignore_ascii_case("transactional") => "Transactional",
            _ => self.config.default_sms_type.as_str(),
        };
        let attributes = [
            ("AWS.SNS.SMS.SMSType", Some(sms_type)),
            ("AWS.SNS.SMS.SenderID", self.config.sms_sender_id.as_deref()),
            (
                "AWS.MM.SMS.OriginationNumber",
                self.config.sms_origination_number.as_deref(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name.to_string(), v))
                .map_err(|e| SendError::Permanent(e.to_string()))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
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
        let id = out.message_id.unwrap_or_default();
        // SNS reports SMS delivery in CloudWatch Logs by message id only: remember whose send
        // it was for a week, so the engagement function can record `delivered` or a failure.
        if !id.is_empty() {
            let expires = chrono::Utc::now().timestamp() + 7 * 86_400;
            let r = self.bridge.block(
                self.dynamo
                    .put_item()
                    .table_name(&self.state_table)
                    .item("pk", AttributeValue::S(format!("sms#{id}")))
                    .item("sk", AttributeValue::S("send".into()))
                    .item("contact", AttributeValue::S(send.contact.clone()))
                    .item("scenario", AttributeValue::S(scenario.to_string()))
                    .item("step", AttributeValue::S(send.step.clone()))
                    .item("expires_at", AttributeValue::N(expires.to_string()))
                    .send(),
            );
            if let Err(e) = r {
                tracing::warn!(message_id = id, error = ?e, "SMS sent; its delivery status will not be matched");
            }
        }
        Ok(id)
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
