//! `relance dev run`: every function's handler in one process (the webhook sender included),
//! polling the queues the way
//! Lambda's event source mappings do (receive up to ten, call, delete what succeeded) and
//! firing the tick on a short period, so a whole scenario runs against LocalStack or the
//! emulator without deploying Lambda.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use relance_runtime::runtime::Runtime;
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::channels::Senders;
use crate::dispatch::AwsDispatch;
use crate::dynamodb::DynamoStore;
use crate::handlers;
use crate::resources::Deployed;
use crate::sqs::SqsQueues;

/// What the dev host needs.
#[derive(Debug)]
pub struct DevHost {
    /// The runtime over DynamoDB (deferring channel messages to each batch's end).
    pub runtime: Runtime<DynamoStore>,
    /// The queues.
    pub queues: SqsQueues,
    /// The senders.
    pub senders: Senders,
    /// What `dev up` created.
    pub deployed: Deployed,
    /// The webhook sender (webhook calls and invokes), when the webhook queue exists.
    pub webhooks: Option<crate::callout::WebhookSender>,
    /// The bridge.
    pub bridge: Bridge,
}

/// The webhook sender of `relance dev run`: the guarded HTTP client from the environment (its
/// local-test escape hatches allowed outside Lambda), the plain `RELANCE_WEBHOOK_SECRET_<NAME>`
/// secrets, the Lambda client of invoke steps; none without a webhook queue.
pub fn webhook_sender(
    sdk: &aws_config::SdkConfig,
    deployed: &Deployed,
    bridge: &Bridge,
) -> Result<Option<crate::callout::WebhookSender>, crate::config::ConfigError> {
    let Some(url) = deployed.queues.get("webhook").cloned() else {
        return Ok(None);
    };
    let secrets = std::env::vars()
        .filter(|(k, v)| {
            k.starts_with(relance_core::webhook::SECRET_VAR_PREFIX)
                && !k.ends_with("_ARN")
                && !k.ends_with("_ARNS")
                && !v.is_empty()
        })
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    Ok(Some(
        crate::callout::WebhookSender::new(
            Arc::new(crate::webhook::HttpTransport::from_env()?),
            secrets,
            crate::ledger::Ledger::new(
                aws_sdk_dynamodb::Client::new(sdk),
                deployed.config.state_table.clone(),
                bridge.clone(),
            ),
            SqsQueues::new(aws_sdk_sqs::Client::new(sdk), bridge.clone()),
            url,
            deployed.config.queues.webhook_dlq.clone(),
            bridge.clone(),
        )
        .with_invoker(Arc::new(crate::callout::LambdaInvoker::new(
            aws_sdk_lambda::Client::new(sdk),
        ))),
    ))
}

fn receive(host: &DevHost, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let client = host.queues.client();
    host.bridge
        .block(
            client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send(),
        )
        .map(|r| r.messages.unwrap_or_default())
        .unwrap_or_else(|e| {
            tracing::warn!(url, error = ?e, "receive failed");
            Vec::new()
        })
}

fn as_event(messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body, "attributes": {}, "messageAttributes": {}}))
        .collect();
    serde_json::from_value(json!({"Records": records})).unwrap_or_default()
}

fn settle(
    host: &DevHost,
    url: &str,
    messages: &[aws_sdk_sqs::types::Message],
    response: &SqsBatchResponse,
) {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for m in messages {
        if failed.contains(&m.message_id.as_deref().unwrap_or("")) {
            continue;
        }
        if let Some(handle) = &m.receipt_handle {
            let _ = host.bridge.block(
                host.queues
                    .client()
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send(),
            );
        }
    }
}

/// Polls every queue and ticks every `tick_every` until `stop` is set.
pub fn run(host: &mut DevHost, tick_every: Duration, stop: &Arc<AtomicBool>) {
    let mut last_tick = Instant::now() - tick_every;
    let q = host.deployed.queues.clone();
    let url = |role: &str| q.get(role).cloned().unwrap_or_default();
    // The step and launch queues `dev up` created (the tick and the trigger's fan-out).
    let dispatch = AwsDispatch::new(host.queues.clone(), host.deployed.config.queues.clone());
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        if last_tick.elapsed() >= tick_every {
            last_tick = Instant::now();
            match handlers::tick(&mut host.runtime, &dispatch, Utc::now()) {
                Ok(summary) if summary.queued + summary.launches + summary.inactivity > 0 => {
                    tracing::info!(?summary, "tick")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "tick failed"),
            }
        }
        // trigger: EventBridge events delivered to the trigger queue by the rule.
        let trigger = url("trigger");
        let messages = receive(host, &trigger);
        if !messages.is_empty() {
            busy = true;
            let mut response = SqsBatchResponse::default();
            for m in &messages {
                let event: Result<EventBridgeEvent<Value>, _> =
                    serde_json::from_str(m.body.as_deref().unwrap_or(""));
                let result = match event {
                    Ok(event) => {
                        handlers::trigger(&mut host.runtime, Some(&dispatch), &event, Utc::now())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("not an EventBridge event: {e}")),
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "trigger failed");
                    response.add_failure(m.message_id.clone().unwrap_or_default());
                }
            }
            settle(host, &trigger, &messages, &response);
        }
        for role in ["step", "launch", "engagement"] {
            let u = url(role);
            let messages = receive(host, &u);
            if messages.is_empty() {
                continue;
            }
            busy = true;
            let event = as_event(&messages);
            let response = match role {
                "step" => handlers::step_executor(&mut host.runtime, &event, Utc::now()),
                "launch" => handlers::launch_page(&mut host.runtime, &event, Utc::now()),
                _ => handlers::engagement(&mut host.runtime, &event, Utc::now()),
            };
            settle(host, &u, &messages, &response);
        }
        for role in ["email", "sms", "push", "web-push"] {
            let u = url(role);
            let messages = receive(host, &u);
            if messages.is_empty() {
                continue;
            }
            busy = true;
            let response = handlers::channel_sender(
                &host.senders,
                host.runtime.store(),
                &as_event(&messages),
                Utc::now(),
            );
            settle(host, &u, &messages, &response);
        }
        if let Some(sender) = host.webhooks.clone() {
            let u = url("webhook");
            let messages = receive(host, &u);
            if !messages.is_empty() {
                busy = true;
                let response = crate::callout::webhook_sender(
                    &mut host.runtime,
                    &sender,
                    &as_event(&messages),
                    Utc::now(),
                );
                settle(host, &u, &messages, &response);
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
