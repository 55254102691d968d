//! The channel senders as delivery backends of `relance run` ([`relance_core::delivery::Backend`]):
//! email through SES, SMS and mobile push through SNS, web push to the browsers' push
//! services — the very senders the Lambda functions use, with the provider's lists checked
//! the same way. What the functions' ledger does (once per idempotency key) the embedded
//! delivery table does, so these call the providers directly.

use chrono::Utc;
use relance_core::delivery::{Backend, DeliverFuture, DeliveryError, Outgoing};
use relance_core::engine::Recipient;

use super::{PushSender, SendError, SenderConfig, SesSender, SmsSender};
use crate::bridge::Bridge;
use crate::webpush::WebPushSender;

/// A sender's failure as delivery classes it. A provider list that stops the address (SES's
/// account suppression list) is a hard bounce, so the address is suppressed here too.
fn classed(e: SendError) -> DeliveryError {
    match e {
        SendError::Transient(why) => DeliveryError::Transient(why),
        SendError::Permanent(reason) => DeliveryError::Permanent {
            reason,
            hard_bounce: false,
        },
    }
}

/// A provider list stopped the send: the address is refused for good.
fn stopped(reason: String, hard_bounce: bool) -> DeliveryError {
    DeliveryError::Permanent {
        reason,
        hard_bounce,
    }
}

/// Email through SES (SESv2, or SES v1 raw MIME when the settings ask for it).
#[derive(Debug, Clone)]
pub struct SesBackend {
    ses: SesSender,
    check_lists: bool,
}

impl SesBackend {
    /// Email through `ses`, with `config`'s sender, configuration set, unsubscribe links and
    /// list checks.
    pub fn new(ses: SesSender, config: &SenderConfig) -> SesBackend {
        SesBackend {
            ses,
            check_lists: config.check_provider_lists,
        }
    }

    fn send(&self, message: &Outgoing) -> Result<String, DeliveryError> {
        let Recipient::Email(address) = &message.send.to else {
            return Err(stopped("not an email recipient".into(), false));
        };
        if self.check_lists
            && let Some(reason) = self.ses.suppressed(address).map_err(classed)?
        {
            return Err(stopped(reason, true));
        }
        self.ses
            .send(&message.send, &message.scenario, address)
            .map_err(classed)
    }
}

impl Backend for SesBackend {
    fn name(&self) -> &'static str {
        "ses"
    }

    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a> {
        // The sender is synchronous (its bridge gives the worker thread away while it waits).
        Box::pin(async move { self.send(message) })
    }
}

/// SMS and mobile push through SNS.
#[derive(Debug, Clone)]
pub struct SnsBackend {
    sms: SmsSender,
    push: PushSender,
    check_lists: bool,
}

impl SnsBackend {
    /// SMS (with `config`'s type, sender id and origination number) and push through SNS.
    pub fn new(sns: aws_sdk_sns::Client, config: &SenderConfig, bridge: Bridge) -> SnsBackend {
        SnsBackend {
            sms: SmsSender::new(sns.clone(), config.clone(), bridge.clone()),
            push: PushSender::new(sns, bridge),
            check_lists: config.check_provider_lists,
        }
    }

    fn send(&self, message: &Outgoing) -> Result<String, DeliveryError> {
        match &message.send.to {
            Recipient::Phone(number) => {
                if self.check_lists
                    && let Some(reason) = self.sms.opted_out(number).map_err(classed)?
                {
                    return Err(stopped(reason, false));
                }
                self.sms.send(&message.send, number).map_err(classed)
            }
            Recipient::Push(endpoints) => self.push.send(&message.send, endpoints).map_err(classed),
            _ => Err(stopped("not an SMS or mobile push recipient".into(), false)),
        }
    }
}

impl Backend for SnsBackend {
    fn name(&self) -> &'static str {
        "sns"
    }

    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a> {
        Box::pin(async move { self.send(message) })
    }
}

/// Web push straight to the browsers' push services (VAPID, RFC 8291): no AWS involved.
#[derive(Debug, Clone)]
pub struct WebPushBackend {
    sender: WebPushSender,
}

impl WebPushBackend {
    /// Web push with these VAPID keys.
    pub fn new(sender: WebPushSender) -> WebPushBackend {
        WebPushBackend { sender }
    }
}

impl Backend for WebPushBackend {
    fn name(&self) -> &'static str {
        "web-push"
    }

    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a> {
        Box::pin(async move {
            let report = self
                .sender
                .deliver(
                    &message.send,
                    message.send.content.data.as_ref(),
                    Utc::now(),
                )
                .await;
            report.outcome().map_err(|e| {
                if e.is_transient() {
                    DeliveryError::Transient(e.to_string())
                } else {
                    DeliveryError::Permanent {
                        reason: e.to_string(),
                        hard_bounce: false,
                    }
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_failures_keep_their_class() {
        assert_eq!(
            classed(SendError::Transient("throttled".into())),
            DeliveryError::Transient("throttled".into())
        );
        assert_eq!(
            classed(SendError::Permanent("EndpointDisabled".into())),
            DeliveryError::Permanent {
                reason: "EndpointDisabled".into(),
                hard_bounce: false
            }
        );
    }
}
