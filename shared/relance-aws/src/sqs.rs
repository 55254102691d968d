//! `SqsQueues`: the step queue, the channel queues, the launch queue and the webhook queue. Sends are batched by
//! ten; `DelaySeconds` lands a timer on its second although the tick runs once a minute.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::bridge::Bridge;
use crate::error::SqsError;

/// The longest visibility timeout SQS takes (12 h).
pub const MAX_VISIBILITY_SECONDS: i32 = 43_200;

/// The longest delay SQS takes on a message (15 min).
pub const MAX_DELAY_SECONDS: i32 = 900;

/// How long one request of [`SqsQueues::send_batches_at_once`] may take, its retries
/// included: less than the tick keeps to finish after its last round (`TICK_FINISH`, 5 s), so
/// a hung request never holds the tick past its deadline.
pub const AT_ONCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One message to send: an id unique in its batch, the body, the delay in seconds (0–900).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Unique within one batch.
    pub id: String,
    /// The JSON body.
    pub body: String,
    /// Seconds before it becomes visible.
    pub delay_seconds: i32,
}

/// SQS queues.
#[derive(Debug, Clone)]
pub struct SqsQueues {
    client: Client,
    bridge: Bridge,
}

impl SqsQueues {
    /// Queues reached with `client`.
    pub fn new(client: Client, bridge: Bridge) -> SqsQueues {
        SqsQueues { client, bridge }
    }

    /// The client (tests read queues with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends one message.
    pub fn send(&self, url: &str, body: String) -> Result<(), SqsError> {
        self.bridge
            .block(
                self.client
                    .send_message()
                    .queue_url(url)
                    .message_body(body)
                    .send(),
            )
            .map_err(|e| SqsError::new("SendMessage", format!("{e:?}")))?;
        Ok(())
    }

    /// Makes a received message visible again in `seconds` (at most 12 h, SQS's limit): a
    /// retry waiting for its backoff.
    pub fn change_visibility(
        &self,
        url: &str,
        receipt_handle: &str,
        seconds: i32,
    ) -> Result<(), SqsError> {
        self.bridge
            .block(
                self.client
                    .change_message_visibility()
                    .queue_url(url)
                    .receipt_handle(receipt_handle)
                    .visibility_timeout(seconds.clamp(0, MAX_VISIBILITY_SECONDS))
                    .send(),
            )
            .map_err(|e| SqsError::new("ChangeMessageVisibility", format!("{e:?}")))?;
        Ok(())
    }

    /// Sends messages ten at a time; every entry that fails is reported.
    pub fn send_batch(&self, url: &str, messages: &[Outgoing]) -> Result<(), SqsError> {
        for chunk in messages.chunks(10) {
            self.bridge.block(self.send_ten(url, chunk, None))?;
        }
        Ok(())
    }

    /// Sends messages ten per request, every request at once: one result per ten messages,
    /// in order (a failed request stops none of the others); a request not answered within
    /// [`AT_ONCE_TIMEOUT`] fails (it may still have gone). The tick hands on a herd of timers
    /// this way: one request after the other, a minute's 100,000 timers would take longer
    /// than the function may run.
    pub fn send_batches_at_once(
        &self,
        url: &str,
        messages: &[Outgoing],
    ) -> Vec<Result<(), SqsError>> {
        self.bridge.block(futures_util::future::join_all(
            messages
                .chunks(10)
                .map(|chunk| self.send_ten(url, chunk, Some(AT_ONCE_TIMEOUT))),
        ))
    }

    /// One `SendMessageBatch` of up to ten messages, within `timeout` (retries included) when
    /// given; the first entry SQS refused fails it.
    async fn send_ten(
        &self,
        url: &str,
        chunk: &[Outgoing],
        timeout: Option<std::time::Duration>,
    ) -> Result<(), SqsError> {
        let entries = chunk
            .iter()
            .map(|m| {
                SendMessageBatchRequestEntry::builder()
                    .id(&m.id)
                    .message_body(&m.body)
                    .delay_seconds(m.delay_seconds.clamp(0, 900))
                    .build()
                    .map_err(|e| SqsError::new("SendMessageBatch entry", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries));
        let sent = match timeout {
            Some(limit) => {
                let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(limit)
                    .build();
                request
                    .customize()
                    .config_override(
                        aws_sdk_sqs::config::Builder::default().timeout_config(timeouts),
                    )
                    .send()
                    .await
            }
            None => request.send().await,
        };
        let out = sent.map_err(|e| SqsError::new("SendMessageBatch", format!("{e:?}")))?;
        if let Some(failed) = out.failed.first() {
            return Err(SqsError::new(
                "SendMessageBatch",
                format!(
                    "{} failed: {}",
                    failed.id,
                    failed.message.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(())
    }
}
