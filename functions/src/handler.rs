//! The functions the one `bootstrap` binary serves, chosen by the `_HANDLER` Lambda sets from
//! the template's `Handler`: their names, and the loop that serves each.

use std::fmt;
use std::str::FromStr;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

use crate::{from_env, lock, run_sender, run_sqs, run_webhook_sender, serve, unsubscribe_secret};

/// One of Relance's Lambda functions (the template's `Handler` of its resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// EventBridge contact, activity, engagement and consent events, and `LaunchScenario`
    /// commands; fans out whole-audience launches.
    Trigger,
    /// The `rate(1 minute)` schedule: launches, inactivity checks, due timers to the step queue.
    Tick,
    /// The step queue: one due timer per message, partial batch failures.
    StepExecutor,
    /// The launch queue: each message is a page of a large launch.
    Launch,
    /// The email queue → SESv2, once per idempotency key.
    EmailSender,
    /// The SMS queue → SNS, once per idempotency key.
    SmsSender,
    /// The push queue → SNS mobile push, once per idempotency key.
    PushSender,
    /// The web push queue → browser push services (VAPID, RFC 8291); expired subscriptions are
    /// removed from the contact.
    WebPushSender,
    /// The webhook queue → HTTP calls and invokes (signed, on the outbound rule), once per key,
    /// retried with backoff for 24 h then dead-lettered; `save` applied to the contact.
    WebhookSender,
    /// SES feedback (through SNS into SQS) and SNS SMS delivery status (from CloudWatch Logs),
    /// into engagement records that wake the enrollments waiting on them.
    Engagement,
    /// The one-click unsubscribe endpoint (RFC 8058) behind the function's URL.
    Unsubscribe,
}

impl Handler {
    /// Every function, in the template's order.
    pub const ALL: [Handler; 11] = [
        Handler::Trigger,
        Handler::Tick,
        Handler::StepExecutor,
        Handler::Launch,
        Handler::EmailSender,
        Handler::SmsSender,
        Handler::PushSender,
        Handler::WebPushSender,
        Handler::WebhookSender,
        Handler::Engagement,
        Handler::Unsubscribe,
    ];

    /// The name the template's `Handler` gives (`step-executor`, `email-sender`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Handler::Trigger => "trigger",
            Handler::Tick => "tick",
            Handler::StepExecutor => "step-executor",
            Handler::Launch => "launch",
            Handler::EmailSender => "email-sender",
            Handler::SmsSender => "sms-sender",
            Handler::PushSender => "push-sender",
            Handler::WebPushSender => "web-push-sender",
            Handler::WebhookSender => "webhook-sender",
            Handler::Engagement => "engagement",
            Handler::Unsubscribe => "unsubscribe",
        }
    }

    /// Serves this function's invocations until the runtime stops (settings are read and
    /// secrets fetched once, before the first invocation: a missing one fails the cold start).
    pub async fn serve(self) -> Result<(), Error> {
        match self {
            Handler::Trigger => trigger().await,
            Handler::Tick => tick().await,
            Handler::StepExecutor => run_sqs(relance_aws::handlers::step_executor).await,
            Handler::Launch => run_sqs(relance_aws::handlers::launch_page).await,
            Handler::EmailSender
            | Handler::SmsSender
            | Handler::PushSender
            | Handler::WebPushSender => run_sender().await,
            Handler::WebhookSender => run_webhook_sender().await,
            Handler::Engagement => engagement().await,
            Handler::Unsubscribe => unsubscribe().await,
        }
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `_HANDLER` that names no function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "_HANDLER: unknown function {given:?} (expected one of {})",
    expected()
)]
pub struct UnknownHandler {
    /// What was given.
    pub given: String,
}

fn expected() -> String {
    Handler::ALL.map(Handler::name).join(", ")
}

impl FromStr for Handler {
    type Err = UnknownHandler;

    fn from_str(s: &str) -> Result<Handler, UnknownHandler> {
        Handler::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| UnknownHandler {
                given: s.to_string(),
            })
    }
}

async fn trigger() -> Result<(), Error> {
    let f = from_env().await?;
    serve(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let f = f.clone();
        async move {
            let now = event.payload.time.unwrap_or_else(chrono::Utc::now);
            // Large launches fan out in pages when the launch queue is configured.
            let fanout: Option<&dyn relance_aws::dispatch::Dispatch> = Some(&f.dispatch);
            relance_aws::handlers::trigger(&mut lock(&f), fanout, &event.payload, now)?;
            Ok::<(), Error>(())
        }
    }))
    .await
}

/// What the tick keeps of its time to finish after its last request to the step queue (the
/// parts' rewrites, the horizon).
const TICK_FINISH: std::time::Duration = std::time::Duration::from_secs(5);

async fn tick() -> Result<(), Error> {
    let f = from_env().await?;
    // Fail at start, not at the first tick, when the step queue is not configured.
    f.config
        .queues
        .step
        .as_ref()
        .ok_or("RELANCE_STEP_QUEUE_URL: not set")?;
    serve(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let f = f.clone();
        async move {
            // `now` is the scheduled event's time.
            let now = event.payload.time.unwrap_or_else(chrono::Utc::now);
            let mut rt = lock(&f);
            // The heartbeat that keeps this build's stored layouts written (on the real
            // clock; `dynamodb::layouts`). A failure only lets them lapse (cost, not
            // correctness): the tick goes on.
            if let Err(e) = rt.store().heartbeat(chrono::Utc::now()) {
                tracing::warn!(error = %e, "layout heartbeat not written");
            }
            // Which informational events nothing on the bus could receive (`listeners`): a
            // failure lets the previous finding age out (every event published again).
            if let Some(bus) = f.dispatch.bus()
                && let Err(e) = relance_aws::listeners::check(rt.store(), bus, chrono::Utc::now())
            {
                tracing::warn!(error = %e, "the bus's listeners not checked");
            }
            // New requests stop with 5 s to spare before the function's deadline (the
            // timers left go to the next tick); a tick cut off by its timeout would leave its
            // horizon unwritten and the next one would queue its timers again.
            let left = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let limits = relance_aws::handlers::TickLimits {
                until: Some(std::time::Instant::now() + left.saturating_sub(TICK_FINISH)),
                ..Default::default()
            };
            let summary = relance_aws::handlers::tick_with(&mut rt, &f.dispatch, now, limits)?;
            Ok::<_, Error>(serde_json::to_value(summary)?)
        }
    }))
    .await
}

async fn engagement() -> Result<(), Error> {
    let f = from_env().await?;
    serve(service_fn(|event: LambdaEvent<Value>| {
        let f = f.clone();
        async move {
            Ok::<Value, Error>(relance_aws::handlers::engagement_any(
                &mut lock(&f),
                event.payload,
                chrono::Utc::now(),
            )?)
        }
    }))
    .await
}

async fn unsubscribe() -> Result<(), Error> {
    let f = from_env().await?;
    // Internet-facing: its role holds no BatchWriteItem (which could delete), so each of its
    // transitions writes its journal item alone, as it happens (one request: nothing to batch).
    lock(&f).store().set_auto_flush(true);
    // Once per cold start, before serving: from Secrets Manager by ARN (at least 32 bytes).
    let secret = unsubscribe_secret().await?;
    serve(service_fn(
        |event: LambdaEvent<LambdaFunctionUrlRequest>| {
            let (f, secret) = (f.clone(), secret.clone());
            async move {
                Ok::<LambdaFunctionUrlResponse, Error>(relance_aws::handlers::unsubscribe(
                    &mut lock(&f),
                    secret.as_deref(),
                    &event.payload,
                    chrono::Utc::now(),
                ))
            }
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_function() {
        for h in Handler::ALL {
            assert_eq!(h.name().parse::<Handler>(), Ok(h));
            assert_eq!(h.to_string(), h.name());
        }
    }

    #[test]
    fn hostile_unknown_handler_is_named_with_the_expected_ones() {
        let Err(e) = "bootstrap".parse::<Handler>() else {
            panic!("bootstrap is no function")
        };
        assert_eq!(e.given, "bootstrap");
        let message = e.to_string();
        assert!(
            message.starts_with("_HANDLER: unknown function \"bootstrap\" (expected one of trigger, tick, step-executor,"),
            "{message}"
        );
        assert!(message.ends_with("engagement, unsubscribe)"), "{message}");
        assert!("".parse::<Handler>().is_err());
        assert!("Trigger".parse::<Handler>().is_err());
    }
}
