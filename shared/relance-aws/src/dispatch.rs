//! The dispatch port: where the store and the handlers hand messages and events on (a timer
//! to the step queue, a send to its channel queue, a page of a large launch to the launch
//! queue, a webhook call to the webhook queue, ends, goals and other actions to the
//! EventBridge bus). [`AwsDispatch`] implements it on
//! SQS and EventBridge; tests implement it in memory. The store only stores: it keeps a
//! transition's sends until its flush and hands them to this port.

use std::fmt::Debug;

use relance_core::scenario::Channel;
use serde_json::Value;

use crate::config::QueueUrls;
use crate::error::DispatchError;
use crate::eventbridge::EventBus;
use crate::sqs::{Outgoing, SqsQueues};

/// Where messages and events go.
pub trait Dispatch: Debug + std::marker::Send + Sync {
    /// Whether a send on `channel` has a queue to go to; checked before a transition is
    /// committed, so no `sent` is journaled for a message no queue would receive.
    fn channel_ready(&self, channel: Channel) -> Result<(), DispatchError>;

    /// Puts sends (`send_message` bodies) on `channel`'s queue.
    fn to_channel(&self, channel: Channel, messages: &[Outgoing]) -> Result<(), DispatchError>;

    /// Puts due timers on the step queue, each delayed to its second.
    fn to_step_queue(&self, messages: &[Outgoing]) -> Result<(), DispatchError>;

    /// [`Dispatch::to_step_queue`] ten messages per request, the requests at once where the
    /// port can: one result per ten messages, in order, a failed request stopping none of
    /// the others (the tick hands on each request's timers that went).
    fn to_step_queue_at_once(&self, messages: &[Outgoing]) -> Vec<Result<(), DispatchError>> {
        messages
            .chunks(10)
            .map(|ten| self.to_step_queue(ten))
            .collect()
    }

    /// Whether large launches can be fanned out in pages (a launch queue is configured).
    fn has_launch_queue(&self) -> bool;

    /// Puts pages of a large launch on the launch queue.
    fn to_launch_queue(&self, messages: &[Outgoing]) -> Result<(), DispatchError>;

    /// Publishes events `(detail-type, detail)` on the bus; nothing when none is configured.
    fn publish(&self, events: &[(String, Value)]) -> Result<(), DispatchError>;
}

/// The environment variable naming `channel`'s queue.
pub fn channel_var(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "RELANCE_EMAIL_QUEUE_URL",
        Channel::Sms => "RELANCE_SMS_QUEUE_URL",
        Channel::Push => "RELANCE_PUSH_QUEUE_URL",
        Channel::WebPush => "RELANCE_WEB_PUSH_QUEUE_URL",
    }
}

/// Dispatch on SQS (the queues the configuration names) and, when set, an EventBridge bus.
#[derive(Debug, Clone)]
pub struct AwsDispatch {
    queues: SqsQueues,
    urls: QueueUrls,
    bus: Option<EventBus>,
}

impl AwsDispatch {
    /// Messages go to the queues `urls` names, through `queues`; no bus.
    pub fn new(queues: SqsQueues, urls: QueueUrls) -> AwsDispatch {
        AwsDispatch {
            queues,
            urls,
            bus: None,
        }
    }

    /// Events are also published on `bus`.
    pub fn with_bus(mut self, bus: EventBus) -> AwsDispatch {
        self.bus = Some(bus);
        self
    }

    /// The bus events are published on, if any.
    pub fn bus(&self) -> Option<&EventBus> {
        self.bus.as_ref()
    }

    /// The queues' client (tests and the dev host read queues with it).
    pub fn queues(&self) -> &SqsQueues {
        &self.queues
    }

    /// The queue URLs.
    pub fn urls(&self) -> &QueueUrls {
        &self.urls
    }

    fn step_url(&self) -> Result<&str, DispatchError> {
        self.urls.step.as_deref().ok_or(DispatchError::NoQueue {
            var: "RELANCE_STEP_QUEUE_URL",
        })
    }

    fn channel_url(&self, channel: Channel) -> Result<&str, DispatchError> {
        let url = match channel {
            Channel::Email => &self.urls.email,
            Channel::Sms => &self.urls.sms,
            Channel::Push => &self.urls.push,
            Channel::WebPush => &self.urls.web_push,
        };
        url.as_deref().ok_or(DispatchError::NoChannelQueue {
            var: channel_var(channel),
            channel: channel.as_str(),
        })
    }
}

impl Dispatch for AwsDispatch {
    fn channel_ready(&self, channel: Channel) -> Result<(), DispatchError> {
        self.channel_url(channel).map(|_| ())
    }

    fn to_channel(&self, channel: Channel, messages: &[Outgoing]) -> Result<(), DispatchError> {
        let url = self.channel_url(channel)?;
        Ok(self.queues.send_batch(url, messages)?)
    }

    fn to_step_queue(&self, messages: &[Outgoing]) -> Result<(), DispatchError> {
        Ok(self.queues.send_batch(self.step_url()?, messages)?)
    }

    fn to_step_queue_at_once(&self, messages: &[Outgoing]) -> Vec<Result<(), DispatchError>> {
        let url = match self.step_url() {
            Ok(url) => url,
            Err(_) => {
                return messages
                    .chunks(10)
                    .map(|_| self.step_url().map(|_| ()))
                    .collect();
            }
        };
        self.queues
            .send_batches_at_once(url, messages)
            .into_iter()
            .map(|sent| sent.map_err(DispatchError::from))
            .collect()
    }

    fn has_launch_queue(&self) -> bool {
        self.urls.launch.is_some()
    }

    fn to_launch_queue(&self, messages: &[Outgoing]) -> Result<(), DispatchError> {
        let url = self.urls.launch.as_deref().ok_or(DispatchError::NoQueue {
            var: "RELANCE_LAUNCH_QUEUE_URL",
        })?;
        Ok(self.queues.send_batch(url, messages)?)
    }

    /// Webhook calls go to the webhook queue when one is configured (the webhook sender
    /// calls them, once per key, with the retry rules); everything else, and webhook calls
    /// of a deployment without that queue, on the bus.
    fn publish(&self, events: &[(String, Value)]) -> Result<(), DispatchError> {
        let is_call =
            |detail_type: &str| self.urls.webhook.is_some() && crate::callout::is_call(detail_type);
        let calls: Vec<&Value> = events
            .iter()
            .filter(|(t, _)| is_call(t))
            .map(|(_, detail)| detail)
            .collect();
        let rest: Vec<(String, Value)> = events
            .iter()
            .filter(|(t, _)| !is_call(t))
            .cloned()
            .collect();
        if let (Some(url), false) = (&self.urls.webhook, calls.is_empty()) {
            let messages: Vec<Outgoing> = calls
                .iter()
                .enumerate()
                .map(|(i, detail)| Outgoing {
                    id: format!("w{i}"),
                    body: detail.to_string(),
                    delay_seconds: 0,
                })
                .collect();
            self.queues.send_batch(url, &messages)?;
        }
        match &self.bus {
            Some(bus) if !rest.is_empty() => Ok(bus.emit(&rest)?),
            _ => Ok(()),
        }
    }
}
