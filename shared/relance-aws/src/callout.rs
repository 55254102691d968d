//! The webhook sender on AWS (DESIGN §9): each message of the webhook queue is one call a
//! `webhook` step queued, or one asynchronous Lambda invocation an `invoke` step queued (the
//! dispatch port puts them there when the transition is applied). The
//! sender claims the call's key in the senders' ledger (so a duplicated message calls once),
//! signs and sends it with the rules of [`relance_core::webhook`], and settles it:
//!
//! - 2xx: `delivered` journaled, `save` applied as a contact update through the runtime (so
//!   `contact.updated` scenarios see it); a save that fails for now (other writers of the
//!   contact kept winning, a store failure) goes back on the queue as a copy carrying the
//!   answer's fields (`answered`: the call is not made again), applied when it comes;
//! - 408, 429, 5xx, a timeout or a connection failure: the claim is released and a copy of the
//!   message is queued again carrying `first_at`, the attempts made and `not_before` (the
//!   backoff's instant, delayed up to SQS's 15 minutes; a copy arriving earlier waits out the
//!   rest by a visibility change), until 24 h after the first attempt; then the call goes to
//!   the webhook dead-letter queue and `failed` is journaled;
//! - any other status, or an address the outbound rule refuses: `failed`, never retried.
//!
//! An invoke is `lambda:Invoke` with `InvocationType: Event` and the event
//! [`relance_core::invoke::event`]; Lambda's answer is judged by the same rules (202: done;
//! 429 and 5xx: retried; 403, 404 and other 4xx: failed).
//!
//! A retry is a new message rather than the same one made visible again, so the queue's
//! redrive policy (a few receives) still catches a message whose handling keeps failing.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use relance_core::journal::{Record, RecordKind};
use relance_core::webhook::{self as rules, CallError, Transport, Verdict, Webhook};
use relance_core::wire::ContactDetail;
use relance_runtime::runtime::Runtime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bridge::Bridge;
use crate::handlers::HandlerStore;
use crate::ledger::Ledger;
use crate::sqs::{MAX_DELAY_SECONDS, MAX_VISIBILITY_SECONDS, Outgoing, SqsQueues};

/// The `detail-type` of a webhook call (on the bus when no webhook queue is configured).
pub const WEBHOOK: &str = "relance.webhook";

/// The `detail-type` of an invoke (on the bus when no webhook queue is configured).
pub const INVOKE: &str = "relance.invoke";

/// Whether an event of this `detail-type` is a call for the webhook queue.
pub fn is_call(detail_type: &str) -> bool {
    detail_type == WEBHOOK || detail_type == INVOKE
}

/// Invokes a Lambda function asynchronously: the answer's status (202 when queued by
/// Lambda, or the status of Lambda's refusal), or why there was none.
pub trait Invoker: Send + Sync + std::fmt::Debug {
    /// Invokes `function` with `payload` (`InvocationType: Event`).
    fn invoke(&self, function: &str, payload: Vec<u8>) -> rules::CallFuture<'_>;
}

/// [`Invoker`] on the Lambda API.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
}

impl LambdaInvoker {
    /// Invokes with `client`.
    pub fn new(client: aws_sdk_lambda::Client) -> LambdaInvoker {
        LambdaInvoker { client }
    }
}

impl Invoker for LambdaInvoker {
    fn invoke(&self, function: &str, payload: Vec<u8>) -> rules::CallFuture<'_> {
        let call = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send();
        Box::pin(async move {
            match call.await {
                Ok(out) => Ok(rules::Answer {
                    status: u16::try_from(out.status_code).unwrap_or(202),
                    body: Vec::new(),
                }),
                // Lambda's refusal has a status, judged as a webhook's would be (429 and 5xx
                // retried, a missing function or a denied invoke failed).
                Err(aws_sdk_lambda::error::SdkError::ServiceError(e)) => Ok(rules::Answer {
                    status: e.raw().status().as_u16(),
                    body: Vec::new(),
                }),
                Err(e) => Err(CallError::Unreachable(
                    aws_sdk_lambda::error::DisplayErrorContext(&e).to_string(),
                )),
            }
        })
    }
}

/// One message of the webhook queue: the action the engine queued, and on a retry's copy
/// where its retries stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMessage {
    /// The scenario.
    pub scenario: String,
    /// The enrollment.
    pub enrollment: String,
    /// The contact.
    pub contact: String,
    /// The webhook step.
    pub step: String,
    /// The action's key (`{enrollment}:{step}:action`).
    #[serde(default)]
    pub idempotency_key: String,
    /// The webhook call, its body rendered (a `relance.webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// The invoke, with the contact's fields (a `relance.invoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke: Option<relance_core::invoke::Invoke>,
    /// When the first attempt was made (a retry's copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_at: Option<DateTime<Utc>>,
    /// Attempts made before this copy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Not to be attempted before this instant (the backoff of a retry's copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The call was answered and only its `save` is left (a copy queued after the contact
    /// kept changing under the update): the call is not made again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<Answered>,
}

/// What is left of an answered call whose `save` could not be written yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// The contact fields `save` takes from the answer.
    pub fields: Map<String, Value>,
    /// What of `save` the answer lacked, reported on the delivered record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CallMessage {
    /// The `Idempotency-Key` header: `{enrollment}:{step}`, as in embedded mode.
    pub fn header_key(&self) -> String {
        rules::idempotency_key(&self.enrollment, &self.step)
    }

    /// `webhook` or `invoke`: the action's name in the journal.
    pub fn action(&self) -> &'static str {
        if self.invoke.is_some() {
            "invoke"
        } else {
            "webhook"
        }
    }

    /// The key claimed in the senders' ledger.
    fn ledger_key(&self) -> String {
        format!("{}#{}", self.action(), self.header_key())
    }

    /// The key claimed when an answer's `save` is done and journaled, by a copy carrying it
    /// (or by the delivery that could not queue one): `delivered` is journaled once, and a copy
    /// delivered again after that applies nothing.
    fn save_key(&self) -> String {
        format!("{}#save", self.ledger_key())
    }

    /// The next attempt's copy (carrying the first attempt's instant and the attempts made) and
    /// its instant, the call's backoff from its first attempt; `None` once the retry window has
    /// ended.
    fn next_copy(&self, now: DateTime<Utc>) -> Option<(CallMessage, DateTime<Utc>)> {
        let first = self.first_at.unwrap_or(now);
        let attempts = self.attempts.saturating_add(1);
        let at = rules::next_attempt(first, attempts, now)?;
        let mut copy = self.clone();
        copy.first_at = Some(first);
        copy.attempts = attempts;
        Some((copy, at))
    }

    /// The event an invoke sends: `{contact, step, scenario, enrollment, idempotency_key}`.
    pub fn invoke_event(&self) -> Option<Value> {
        let i = self.invoke.as_ref()?;
        let mut contact = i.contact.clone().unwrap_or_default();
        contact
            .entry("id")
            .or_insert_with(|| Value::from(self.contact.clone()));
        Some(relance_core::invoke::event(
            &Value::Object(contact),
            &self.step,
            &self.scenario,
            &self.enrollment,
        ))
    }
}

/// Webhook secrets by the environment variable their name maps to
/// ([`relance_core::webhook::secret_var`]: `crm-key` → `RELANCE_WEBHOOK_SECRET_CRM_KEY`).
pub type SecretsByVar = BTreeMap<String, Vec<u8>>;

/// What the webhook sender holds between invocations.
#[derive(Clone)]
pub struct WebhookSender {
    transport: Arc<dyn Transport>,
    invoker: Option<Arc<dyn Invoker>>,
    secrets: SecretsByVar,
    ledger: Ledger,
    queues: SqsQueues,
    queue_url: String,
    dead_letter_url: Option<String>,
    bridge: Bridge,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("transport", &self.transport)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("queue_url", &self.queue_url)
            .field("dead_letter_url", &self.dead_letter_url)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender calling through `transport`, signing with `secrets`, claiming in `ledger`,
    /// queueing retries on `queue_url` and dead-lettering on `dead_letter_url`.
    pub fn new(
        transport: Arc<dyn Transport>,
        secrets: SecretsByVar,
        ledger: Ledger,
        queues: SqsQueues,
        queue_url: String,
        dead_letter_url: Option<String>,
        bridge: Bridge,
    ) -> WebhookSender {
        WebhookSender {
            transport,
            invoker: None,
            secrets,
            ledger,
            queues,
            queue_url,
            dead_letter_url,
            bridge,
        }
    }

    /// Invokes `invoke` steps' functions through `invoker`.
    pub fn with_invoker(mut self, invoker: Arc<dyn Invoker>) -> WebhookSender {
        self.invoker = Some(invoker);
        self
    }

    fn call(&self, message: &CallMessage, now: DateTime<Utc>) -> Result<rules::Answer, CallError> {
        if let (Some(i), Some(event)) = (&message.invoke, message.invoke_event()) {
            let Some(invoker) = &self.invoker else {
                return Err(CallError::Unreachable(
                    "this webhook sender has no Lambda client to invoke with".into(),
                ));
            };
            return self
                .bridge
                .block(invoker.invoke(&i.function, event.to_string().into_bytes()));
        }
        let Some(webhook) = &message.webhook else {
            return Err(CallError::Refused(
                "the message holds neither a webhook nor an invoke".into(),
            ));
        };
        let key = message.header_key();
        let secret = match &webhook.secret {
            None => None,
            Some(name) => match self.secrets.get(&rules::secret_var(name)) {
                Some(value) => Some(value.as_slice()),
                // A missing secret is configuration: retried, so adding it (and its ARN to
                // the stack) delivers the call within its window; never sent unsigned.
                None => {
                    return Err(CallError::Unreachable(format!(
                        "the secret \"{name}\" is not set ({}_ARN)",
                        rules::secret_var(name)
                    )));
                }
            },
        };
        let request = rules::request(webhook, &key, secret, now.timestamp());
        self.bridge.block(self.transport.call(request))
    }
}

/// Why a message was not settled (the queue delivers it again).
#[derive(Debug, thiserror::Error)]
enum Unsettled {
    #[error("ledger: {0}")]
    Ledger(#[from] crate::error::DynamoError),
    #[error("queue: {0}")]
    Queue(#[from] crate::error::SqsError),
}

fn record(
    message: &CallMessage,
    kind: RecordKind,
    now: DateTime<Utc>,
    reason: Option<String>,
) -> Record {
    let mut r = Record::new(now, &message.contact, kind).step(&message.step);
    r.action = Some(message.action().into());
    r.enrollment = Some(message.enrollment.clone());
    r.reason = reason;
    r
}

/// webhook sender: each message of the webhook queue is one call, made once per key and
/// settled as the module says. A message that does not decode is kept as a dead letter.
pub fn webhook_sender<S: HandlerStore>(
    rt: &mut Runtime<S>,
    sender: &WebhookSender,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for sqs in &event.records {
        let id = sqs.message_id.clone().unwrap_or_default();
        let body = sqs.body.as_deref().unwrap_or("");
        let message: CallMessage = match serde_json::from_str(body) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("not a webhook call: {e}");
                tracing::error!(message = %id, reason = %why, "kept as a dead letter");
                if rt.store().dead_letter("webhook", body, &why, now).is_ok() {
                    relance_runtime::metrics::dead_letter("webhook");
                }
                continue;
            }
        };
        if let Err(e) = handle(rt, sender, sqs, &message, now) {
            tracing::warn!(message = %id, key = %message.header_key(), error = %e, "webhook call not settled; the queue delivers it again");
            response.add_failure(id);
        } else if message.not_before.is_some_and(|t| t > now) && sqs.receipt_handle.is_some() {
            // Waiting out the rest of its backoff (made visible again at that instant).
            response.add_failure(id);
        }
    }
    if let Err(e) = rt.store().flush() {
        tracing::error!(error = %e, "flush failed; the whole batch is delivered again");
        response = SqsBatchResponse::default();
        for m in &event.records {
            response.add_failure(m.message_id.clone().unwrap_or_default());
        }
    }
    response
}

fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    // Rounded up, so a retry never comes before its instant.
    i32::try_from(((at - now).num_milliseconds().max(0) + 999) / 1000).unwrap_or(i32::MAX)
}

fn handle<S: HandlerStore>(
    rt: &mut Runtime<S>,
    sender: &WebhookSender,
    sqs: &SqsMessage,
    message: &CallMessage,
    now: DateTime<Utc>,
) -> Result<(), Unsettled> {
    if let Some(at) = message.not_before.filter(|t| *t > now) {
        let wait = seconds_until(at, now);
        match &sqs.receipt_handle {
            Some(receipt) => {
                sender.queues.change_visibility(
                    &sender.queue_url,
                    receipt,
                    wait.min(MAX_VISIBILITY_SECONDS),
                )?;
            }
            None => requeue(sender, message.clone(), at, now)?,
        }
        return Ok(());
    }
    if let Some(answered) = &message.answered {
        // The call was made and answered: only its save and its record are left.
        if sender.ledger.is_claimed(&message.save_key())? {
            tracing::info!(key = %message.header_key(), "webhook answer already saved: duplicate delivery ignored");
            return Ok(());
        }
        return deliver(rt, sender, message, answered.clone(), now);
    }
    let key = message.ledger_key();
    if !sender.ledger.claim(&key, now)? {
        tracing::info!(key = %message.header_key(), "webhook already called or settled: duplicate delivery ignored");
        return Ok(());
    }
    let result = sender.call(message, now);
    let verdict = rules::verdict(&result);
    let answer = result.ok().map(|a| a.body).unwrap_or_default();
    let attempt = message.attempts.saturating_add(1);
    tracing::info!(key = %message.header_key(), attempt, outcome = ?verdict, "webhook attempt");
    match verdict {
        Verdict::Done => {
            let save = message
                .webhook
                .as_ref()
                .map(|w| w.save.clone())
                .unwrap_or_default();
            let (fields, missing) = rules::saved_fields(&save, &answer);
            deliver(rt, sender, message, Answered { fields, missing }, now)?;
        }
        Verdict::Failed(why) => {
            let reason = format!("{} failed: {why}", message.action());
            sender.ledger.fail(&key, &reason)?;
            journal(
                rt,
                message,
                record(message, RecordKind::Failed, now, Some(reason)),
            );
        }
        Verdict::Retry(why) => {
            match message.next_copy(now) {
                Some((copy, at)) => {
                    // Released first: the copy claims again when its time comes.
                    sender.ledger.release(&key)?;
                    tracing::info!(key = %message.header_key(), reason = %why, next = %at, "webhook retried");
                    requeue(sender, copy, at, now)?;
                }
                None => {
                    let reason = rules::dead_reason(message.action(), attempt, &why);
                    sender.ledger.fail(&key, &reason)?;
                    let mut dead = serde_json::to_value(message).unwrap_or(Value::Null);
                    if let Some(o) = dead.as_object_mut() {
                        o.insert("reason".into(), Value::from(reason.clone()));
                    }
                    if let Some(url) = &sender.dead_letter_url {
                        sender.queues.send(url, dead.to_string())?;
                    }
                    if rt
                        .store()
                        .dead_letter("webhook", &dead.to_string(), &reason, now)
                        .is_ok()
                    {
                        relance_runtime::metrics::dead_letter("webhook");
                    }
                    journal(
                        rt,
                        message,
                        record(message, RecordKind::Failed, now, Some(reason)),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Writes an answered call's `save` to the contact and journals it delivered. The call is not
/// made again: a value the contact refuses is reported on the delivered record. A save that
/// fails for now (a concurrent writer of the contact that keeps winning after the update ran
/// again from fresh reads, or a store failure) goes back on the queue as a copy carrying the
/// fields, with the call's backoff, until the call's retry window ends (then it is reported).
/// A copy holds no claim while it writes (nothing to release if it stops): it claims
/// [`CallMessage::save_key`] once written, to journal, so `delivered` is journaled once, and a
/// copy the queue delivers after that finds the claim and applies nothing. A copy stopped
/// between its write and its claim (or two deliveries of one copy at once) writes the fields
/// again when it comes back, over what was written in between.
fn deliver<S: HandlerStore>(
    rt: &mut Runtime<S>,
    sender: &WebhookSender,
    message: &CallMessage,
    answered: Answered,
    now: DateTime<Utc>,
) -> Result<(), Unsettled> {
    let is_copy = message.answered.is_some();
    // Whether a copy may be on the queue: then the journal is claimed first.
    let mut copy_queued = is_copy;
    let Answered {
        fields,
        mut missing,
    } = answered;
    match save(rt, message, &fields, now) {
        Ok(()) => {}
        Err(e) if !save_fails_for_now(&e) => {
            tracing::warn!(key = %message.header_key(), error = %e, "save: the contact update was refused");
            missing.push(format!("save: the contact update was refused: {e}"));
        }
        Err(e) => match message.next_copy(now) {
            None => {
                tracing::warn!(key = %message.header_key(), error = %e, "save: still not written when the retry window ended");
                missing.push(format!(
                    "save: not written within the call's retry window: {e}"
                ));
            }
            Some((mut copy, at)) => {
                copy.answered = Some(Answered {
                    fields,
                    missing: missing.clone(),
                });
                tracing::warn!(key = %message.header_key(), error = %e, next = %at, "save: not written for now; saved again later");
                match requeue(sender, copy, at, now) {
                    Ok(()) => return Ok(()),
                    // A copy is delivered again by the queue: it holds no claim.
                    Err(q) if is_copy => return Err(q),
                    // The call's own delivery holds the call's claim: redelivered, it would
                    // not call, nor know the answer. Reported (the copy may still have been
                    // queued: the journal is claimed first).
                    Err(q) => {
                        copy_queued = true;
                        missing.push(format!(
                            "save: not written ({e}) and could not be queued again: {q}"
                        ));
                    }
                }
            }
        },
    }
    if copy_queued && !claim_journal(sender, message, is_copy, now)? {
        return Ok(());
    }
    let reason = (!missing.is_empty()).then(|| missing.join("; "));
    journal(
        rt,
        message,
        record(message, RecordKind::Delivered, now, reason),
    );
    Ok(())
}

/// Writes `fields` of an answer into the message's contact, as a contact update run again from
/// fresh reads while a concurrent writer wins (nothing to write: done).
fn save<S: HandlerStore>(
    rt: &mut Runtime<S>,
    message: &CallMessage,
    fields: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), crate::handlers::HandlerError> {
    if fields.is_empty() {
        return Ok(());
    }
    let mut contact = Map::new();
    contact.insert("id".into(), Value::from(message.contact.clone()));
    contact.extend(fields.clone());
    let detail = ContactDetail {
        action: None,
        contact,
        at: None,
    };
    crate::handlers::again_on_conflict(|| Ok(rt.upsert_contact(detail.clone(), now)?)).map(drop)
}

/// Claims the journal of an answer's `save` ([`CallMessage::save_key`]): false when another
/// copy has it. The call's own delivery journals even when the claim fails (it would not come
/// back: its call is claimed), a record twice being better than none.
fn claim_journal(
    sender: &WebhookSender,
    message: &CallMessage,
    is_copy: bool,
    now: DateTime<Utc>,
) -> Result<bool, Unsettled> {
    match sender.ledger.claim(&message.save_key(), now) {
        Ok(true) => Ok(true),
        Ok(false) => {
            tracing::info!(key = %message.header_key(), "webhook answer already journaled by another copy");
            Ok(false)
        }
        Err(e) if !is_copy => {
            tracing::warn!(key = %message.header_key(), error = %e, "the journal's claim failed; journaled anyway");
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a save's failure may pass (a store that failed or lost to concurrent writers),
/// rather than a value the contact refuses.
fn save_fails_for_now(e: &crate::handlers::HandlerError) -> bool {
    use crate::handlers::HandlerError;
    matches!(
        e,
        HandlerError::Store(_)
            | HandlerError::Dispatch(_)
            | HandlerError::Runtime(relance_runtime::runtime::RuntimeError::Store(_))
    )
}

/// Queues `copy` again, due at `at`: delayed up to SQS's 15 minutes, the rest waited out by a
/// visibility change when it arrives.
fn requeue(
    sender: &WebhookSender,
    mut copy: CallMessage,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Unsettled> {
    copy.not_before = Some(at);
    let body = serde_json::to_string(&copy).unwrap_or_default();
    sender.queues.send_batch(
        &sender.queue_url,
        &[Outgoing {
            id: "retry".into(),
            body,
            delay_seconds: seconds_until(at, now).min(MAX_DELAY_SECONDS),
        }],
    )?;
    Ok(())
}

fn journal<S: HandlerStore>(rt: &mut Runtime<S>, message: &CallMessage, record: Record) {
    match rt.store().journal(&message.scenario, &record) {
        Ok(()) => relance_runtime::metrics::journaled(&message.scenario, &record),
        Err(e) => {
            tracing::warn!(key = %message.header_key(), error = %e, "could not journal a webhook's outcome")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_call_reads_and_its_retry_copy_round_trips() {
        // What the dispatch port puts on the queue (the action's event detail).
        let detail = serde_json::json!({
            "scenario": "s", "enrollment": "s:c:1", "contact": "c", "step": "notify",
            "idempotency_key": "s:c:1:notify:action",
            "webhook": {"url": "https://hooks.example.com/x", "body": "{\"a\":1}", "secret": "crm"}
        });
        let m: CallMessage = serde_json::from_value(detail).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header_key(), "s:c:1:notify");
        assert_eq!(m.ledger_key(), "webhook#s:c:1:notify");
        assert_eq!((m.first_at, m.attempts, m.not_before), (None, 0, None));
        let mut copy = m.clone();
        copy.first_at = Some(DateTime::<Utc>::UNIX_EPOCH);
        copy.attempts = 2;
        copy.not_before = Some(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(60));
        copy.answered = Some(Answered {
            fields: serde_json::Map::from_iter([("tier".to_string(), serde_json::json!("gold"))]),
            missing: vec!["save: plan: /data/plan is not in the answer".into()],
        });
        let back: CallMessage =
            serde_json::from_str(&serde_json::to_string(&copy).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, copy);
        assert!(
            is_call("relance.webhook") && is_call("relance.invoke") && !is_call("relance.task")
        );
        assert_eq!(m.action(), "webhook");
    }

    #[test]
    fn an_invoke_carries_the_contact_and_the_step_as_its_event() {
        let detail = serde_json::json!({
            "scenario": "s", "enrollment": "s:c:1", "contact": "c", "step": "sync",
            "idempotency_key": "s:c:1:sync:action",
            "invoke": {"function": "arn:aws:lambda:us-east-1:123456789012:function:crm-sync",
                       "contact": {"id": "c", "email": "c@example.com"}}
        });
        let m: CallMessage = serde_json::from_value(detail).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.action(), "invoke");
        assert_eq!(m.ledger_key(), "invoke#s:c:1:sync");
        assert_eq!(
            m.invoke_event(),
            Some(serde_json::json!({
                "contact": {"id": "c", "email": "c@example.com"},
                "step": "sync", "scenario": "s", "enrollment": "s:c:1",
                "idempotency_key": "s:c:1:sync"
            }))
        );
    }

    #[test]
    fn waits_round_up_to_the_second() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            seconds_until(now + chrono::Duration::milliseconds(1), now),
            1
        );
        assert_eq!(seconds_until(now + chrono::Duration::seconds(30), now), 30);
        assert_eq!(seconds_until(now - chrono::Duration::seconds(30), now), 0);
    }
}
