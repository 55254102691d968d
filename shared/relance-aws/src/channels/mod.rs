//! The channel senders: one per provider (email through SES, SMS and mobile push through SNS,
//! web push to the browsers' push services), behind the senders' ledger ([`crate::ledger`]):
//! each send is claimed once per idempotency key in the state table before it goes out, so a
//! duplicated or replayed queue message never sends twice (at most once: a crash between the
//! claim and the provider's answer leaves the send claimed and not retried; it is logged).
//!
//! # Layout
//! - `mod.rs`: the settings, the outcome of a send, and [`Senders`], which takes a rate slot,
//!   claims, asks the provider's lists, sends and settles.
//! - [`ses`]: email (SESv2, or SES v1 raw MIME), the suppression list, message tags.
//! - [`sns_sms`]: SMS (SNS `Publish` to a number), the opt-out list.
//! - [`sns_push`]: mobile push (SNS platform endpoints).
//! - [`web_push`]: web push (VAPID, RFC 8291), forgetting expired subscriptions.
//! - [`direct`]: the same senders as delivery backends of `relance run` (no ledger: the
//!   embedded delivery table sends once per key).

use chrono::{DateTime, Utc};
use relance_core::engine::{Recipient, Send};
use relance_core::unsubscribe::UnsubscribeLinks;

use crate::bridge::Bridge;
use crate::config::AwsConfig;
use crate::dynamodb::DynamoStore;
use crate::ledger::Ledger;
use crate::webpush::WebPushSender;

pub mod direct;
pub mod ses;
pub mod sns_push;
pub mod sns_sms;
pub mod web_push;

pub use ses::{SesSender, mime};
pub use sns_push::{PushSender, push_payload};
pub use sns_sms::SmsSender;

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
    /// Already claimed by an earlier delivery of the same key, which did not send it (skipped
    /// or failed for good): its outcome, to journal again (the same record, under the same
    /// key) in case that delivery stopped before it journaled it.
    Unsent(crate::ledger::Unsent),
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
        SenderConfig::read_env(unsubscribe_secret, true)
    }

    /// As [`SenderConfig::from_env`] for a host that sends no email through SES (SMS and
    /// push only, `relance run --sms sns`): `RELANCE_FROM_EMAIL` may be unset (then empty);
    /// every other setting reads the same.
    pub fn from_env_without_sender() -> Result<SenderConfig, crate::config::ConfigError> {
        SenderConfig::read_env(None, false)
    }

    fn read_env(
        unsubscribe_secret: Option<String>,
        sender_required: bool,
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
            from_email: match opt("RELANCE_FROM_EMAIL") {
                Some(from) => from,
                None if !sender_required => String::new(),
                None => {
                    return Err(crate::config::ConfigError {
                        name: "RELANCE_FROM_EMAIL",
                        why: "not set".into(),
                    });
                }
            },
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

/// The senders, one per provider, and the ledger.
#[derive(Debug, Clone)]
pub struct Senders {
    ses: SesSender,
    sms: SmsSender,
    push: PushSender,
    web_push: Option<WebPushSender>,
    ledger: Ledger,
    /// The contacts (web push forgets expired subscriptions on them).
    contacts: DynamoStore,
    config: SenderConfig,
    bridge: Bridge,
}

impl Senders {
    /// Senders on these clients; the ledger and the contacts in `state_table`.
    pub fn new(
        ses: aws_sdk_sesv2::Client,
        sns: aws_sdk_sns::Client,
        dynamo: aws_sdk_dynamodb::Client,
        state_table: String,
        config: SenderConfig,
        bridge: Bridge,
    ) -> Senders {
        let contacts = DynamoStore::new(
            dynamo.clone(),
            AwsConfig {
                state_table: state_table.clone(),
                ..AwsConfig::with_prefix("", 1)
            },
            bridge.clone(),
        );
        Senders {
            ses: SesSender::new(ses, config.clone(), bridge.clone()),
            sms: SmsSender::new(sns.clone(), config.clone(), bridge.clone()),
            push: PushSender::new(sns, bridge.clone()),
            web_push: None,
            ledger: Ledger::new(dynamo, state_table, bridge.clone()),
            contacts,
            config,
            bridge,
        }
    }

    /// Email goes through SES v1 with this client when the configuration asks for it.
    pub fn with_ses_v1(mut self, client: aws_sdk_ses::Client) -> Senders {
        self.ses = self.ses.with_v1(client);
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

    /// Takes one send from this second's shared budget (the ledger's counter per channel and
    /// second), waiting for the next second when it is spent. After [`RATE_WAIT`] without a
    /// slot the send is left to the queue (transient), which absorbs the burst instead of
    /// failing it. This paces real sends in real seconds, so it reads the wall clock.
    fn take_rate_slot(&self, channel: &str) -> Result<(), SendError> {
        let Some(rate) = self.config.send_rate else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            match self.ledger.take_rate_slot(channel, now.as_secs(), rate) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    if started.elapsed() >= RATE_WAIT {
                        return Err(SendError::Transient(format!(
                            "send rate of {rate}/s reached for {channel}; left to the queue"
                        )));
                    }
                    let to_next = 1_000 - u64::from(now.subsec_millis()).min(999);
                    std::thread::sleep(std::time::Duration::from_millis(to_next + 5));
                }
                Err(e) => return Err(SendError::Transient(format!("rate slot: {e}"))),
            }
        }
    }

    /// The provider's own lists: the SES account suppression list for an email address, the
    /// SNS opt-out list for a phone number.
    fn provider_list_stops(&self, to: &Recipient) -> Result<Option<String>, SendError> {
        if !self.config.check_provider_lists {
            return Ok(None);
        }
        match to {
            Recipient::Email(address) => self.ses.suppressed(address),
            Recipient::Phone(number) => self.sms.opted_out(number),
            Recipient::Push(_) | Recipient::WebPush(_) => Ok(None),
        }
    }

    /// Records the outcome of a claimed send (or releases the claim so a retry can send). A
    /// success needs no write: the claim already keeps the key from being sent again. One not
    /// sent keeps why and `now`, the instant its outcome is journaled at (see `Outcome::Unsent`).
    fn settle(
        &self,
        key: &str,
        outcome: Result<&str, &SendError>,
        skipped: bool,
        now: DateTime<Utc>,
    ) {
        match outcome {
            Ok(id) => tracing::info!(key, provider_id = id, "sent"),
            Err(SendError::Permanent(why)) => {
                let unsent = crate::ledger::Unsent {
                    skipped,
                    reason: why.clone(),
                    at: now,
                };
                if let Err(e) = self.ledger.fail_unsent(key, &unsent) {
                    tracing::warn!(key, error = %e, "could not record a send's outcome");
                }
            }
            Err(SendError::Transient(_)) => {
                let _ = self.ledger.release(key);
            }
        }
    }

    /// Sends once per idempotency key: a slot of the shared send rate, the claim, the
    /// provider's lists, then the provider. `now` stamps what the ledger keeps.
    pub fn deliver(
        &self,
        send: &Send,
        scenario: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SendError> {
        self.take_rate_slot(send.channel.as_str())?;
        let claimed = self
            .ledger
            .claim(&send.idempotency_key, now)
            .map_err(|e| SendError::Transient(format!("claim: {e}")))?;
        if !claimed {
            return Ok(match self.ledger.unsent(&send.idempotency_key) {
                Ok(Some(unsent)) => Outcome::Unsent(unsent),
                Ok(None) => Outcome::Duplicate,
                Err(e) => {
                    tracing::warn!(key = send.idempotency_key, error = %e, "a duplicate delivery's claim did not read; its outcome is not journaled again");
                    Outcome::Duplicate
                }
            });
        }
        match self.provider_list_stops(&send.to) {
            Ok(Some(reason)) => {
                self.settle(
                    &send.idempotency_key,
                    Err(&SendError::Permanent(reason.clone())),
                    true,
                    now,
                );
                return Ok(Outcome::Skipped(reason));
            }
            Ok(None) => {}
            Err(e) => {
                self.settle(&send.idempotency_key, Err(&e), false, now);
                return Err(e);
            }
        }
        let result = match &send.to {
            Recipient::Email(address) => self.ses.send(send, scenario, address),
            Recipient::Phone(number) => self.sms.send(send, number).inspect(|id| {
                self.remember_sms(id, send, scenario, now);
            }),
            Recipient::Push(endpoints) => self.push.send(send, endpoints),
            Recipient::WebPush(_) => self.web_push(send, now),
        };
        self.settle(&send.idempotency_key, result.as_deref(), false, now);
        result.map(Outcome::Sent)
    }

    /// SNS reports SMS delivery in CloudWatch Logs by message id only: remember whose send it
    /// was for a week, so the engagement function can record `delivered` or a failure.
    fn remember_sms(&self, id: &str, send: &Send, scenario: &str, now: DateTime<Utc>) {
        if id.is_empty() {
            return;
        }
        if let Err(e) = self
            .ledger
            .record_sms(id, &send.contact, scenario, &send.step, now)
        {
            tracing::warn!(message_id = id, error = ?e, "SMS sent; its delivery status will not be matched");
        }
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
