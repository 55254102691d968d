//! The webhook step on AWS (issue 14): a launch's transition puts the call on the webhook
//! queue (not the bus); the webhook sender, with the guarded HTTP client (its loopback and
//! http escape hatches on for the test) and a receiver stub on 127.0.0.1, signs it (the stub
//! checks the signature), retries a 500 by queueing a copy with its backoff (a copy arriving
//! early waits out the rest by a visibility change), calls once per key (a duplicate delivery
//! makes no request), applies `save` to the contact on the 200, fails a 404 for good, and
//! dead-letters a call still failing 24 h after its first attempt.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::callout::{CallMessage, WebhookSender, webhook_sender};
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::ledger::Ledger;
use relance_aws::sqs::SqsQueues;
use relance_aws::webhook::HttpTransport;
use relance_core::journal::RecordKind;
use relance_core::ports::{ContactStore, JournalStore, SourceFormat, Status};
use relance_core::webhook;
use relance_core::wire::{ContactDetail, LaunchDetail};
use relance_runtime::runtime::Runtime;
use serde_json::json;

use crate::support::{create_queue, emulator};

#[path = "../webhook/receiver.rs"]
mod stub;

pub(crate) use stub::scenario;
use stub::{SECRET, Shared};

pub(crate) fn receiver() -> (String, Shared) {
    let emu = emulator();
    let state: Shared = Arc::default();
    let app = stub::router(state.clone());
    let listener = emu
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    emu.runtime
        .spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

/// Received without deleting, with receipt handles, as Lambda's event source hands them.
pub(crate) fn receive(url: &str) -> SqsEvent {
    let emu = emulator();
    let got = emu
        .runtime
        .block_on(
            emu.sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let records: Vec<SqsMessage> = got
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            serde_json::from_value(json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "attributes": {}, "messageAttributes": {}
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    serde_json::from_value(json!({"Records": records})).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn event_of(message: &CallMessage) -> SqsEvent {
    let body = serde_json::to_string(message).unwrap_or_default();
    serde_json::from_value(json!({"Records": [{"messageId": "m1", "body": body, "attributes": {}, "messageAttributes": {}}]}))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `url` until a (delayed) message is visible, at most `seconds`; kept unacknowledged.
pub(crate) fn receive_after(url: &str, seconds: i64) -> SqsEvent {
    let start = Utc::now();
    loop {
        let got = receive(url);
        if !got.records.is_empty() || Utc::now() - start > TimeDelta::seconds(seconds) {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// A webhook sender on these clients: the guarded client with its local-test escape hatches
/// on, the `crm` secret, no dead-letter queue but the configuration's.
pub(crate) fn local_sender(
    dynamo: &aws_sdk_dynamodb::Client,
    queues: &SqsQueues,
    config: &AwsConfig,
    bridge: &Bridge,
) -> WebhookSender {
    let env = HashMap::from([
        ("RELANCE_WEBHOOK_ALLOW_HTTP", "1"),
        ("RELANCE_OUTBOUND_ALLOW_LOOPBACK", "1"),
    ]);
    let transport = HttpTransport::from_lookup(|n| env.get(n).map(|v| v.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    WebhookSender::new(
        Arc::new(transport),
        BTreeMap::from([(webhook::secret_var("crm"), SECRET.to_vec())]),
        Ledger::new(dynamo.clone(), config.state_table.clone(), bridge.clone()),
        queues.clone(),
        config.queues.webhook.clone().unwrap_or_default(),
        config.queues.webhook_dlq.clone(),
        bridge.clone(),
    )
}

/// A `hook` scenario (a webhook step calling `url`) active on fresh tables and a webhook queue
/// with its dead-letter queue, named by `prefix`; contacts `ids` stored and the scenario launched
/// for the first: its call waits on the queue.
pub(crate) struct HookDeployment {
    pub(crate) config: AwsConfig,
    pub(crate) queue: String,
    pub(crate) dlq: String,
    pub(crate) bridge: Bridge,
    pub(crate) queues: SqsQueues,
    pub(crate) rt: Runtime<DynamoStore>,
}

/// See [`HookDeployment`]; on these clients (the emulator's, or metered ones).
pub(crate) fn hook_deployment(
    runtime: &tokio::runtime::Runtime,
    dynamo: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    url: &str,
    ids: &[&str],
) -> HookDeployment {
    let mut config = AwsConfig::with_prefix(prefix, 1);
    runtime
        .block_on(DynamoStore::create_tables(dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = create_queue(&format!("{prefix}webhook"));
    let dlq = create_queue(&format!("{prefix}webhook-dlq"));
    config.queues.webhook = Some(queue.clone());
    config.queues.webhook_dlq = Some(dlq.clone());
    let bridge = Bridge::new(runtime.handle().clone());
    let queues = SqsQueues::new(sqs.clone(), bridge.clone());
    let store = DynamoStore::new(dynamo.clone(), config.clone(), bridge.clone())
        .with_dispatch(AwsDispatch::new(queues.clone(), config.queues.clone()));
    let mut rt = Runtime::new(store);
    let now = Utc::now();
    rt.put_scenario(&scenario(url), SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("hook", Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    for id in ids {
        rt.upsert_contact(
            ContactDetail {
                action: None,
                contact: serde_json::Map::from_iter([("id".to_string(), json!(id))]),
                at: None,
            },
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    rt.launch(
        LaunchDetail {
            scenario: "hook".into(),
            contacts: Some(ids.iter().take(1).map(|id| id.to_string()).collect()),
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    HookDeployment {
        config,
        queue,
        dlq,
        bridge,
        queues,
        rt,
    }
}

#[test]
fn webhooks_go_through_their_queue_signed_retried_once_per_key_and_dead_lettered() {
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let (base, stub) = receiver();
    let prefix = format!("wh{}-", std::process::id());
    let HookDeployment {
        config,
        queue,
        dlq,
        bridge,
        queues,
        mut rt,
    } = hook_deployment(
        &emu.runtime,
        &emu.dynamo,
        &emu.sqs,
        &prefix,
        &format!("{base}/hook/flaky"),
        &["c1"],
    );

    // The transition put the call on the webhook queue, the body rendered.
    let first = receive(&queue);
    assert_eq!(first.records.len(), 1, "{first:?}");
    let queued: CallMessage = serde_json::from_str(first.records[0].body.as_deref().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(queued.contact, "c1");
    assert_eq!(
        queued.webhook.as_ref().and_then(|w| w.body.as_deref()),
        Some("{\"id\": \"c1\"}")
    );
    let key = queued.header_key();

    let env = HashMap::from([
        ("RELANCE_WEBHOOK_ALLOW_HTTP", "1"),
        ("RELANCE_OUTBOUND_ALLOW_LOOPBACK", "1"),
    ]);
    let transport = HttpTransport::from_lookup(|n| env.get(n).map(|v| v.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let sender = WebhookSender::new(
        Arc::new(transport),
        BTreeMap::from([(webhook::secret_var("crm"), SECRET.to_vec())]),
        Ledger::new(
            emu.dynamo.clone(),
            config.state_table.clone(),
            bridge.clone(),
        ),
        queues.clone(),
        queue.clone(),
        Some(dlq.clone()),
        bridge.clone(),
    );

    // Attempt 1: a 500. The message is settled (no batch failure) and a copy is queued,
    // carrying the first attempt's instant, due 30 s later.
    let t1 = Utc::now();
    let response = webhook_sender(&mut rt, &sender, &first, t1);
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    emu.runtime
        .block_on(
            emu.sqs
                .delete_message()
                .queue_url(&queue)
                .receipt_handle(first.records[0].receipt_handle.clone().unwrap_or_default())
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let copy = loop {
        // The copy is delayed to its backoff: wait for it (at most the 30 s and a margin).
        let got = receive(&queue);
        if !got.records.is_empty() {
            break got;
        }
        assert!(
            Utc::now() - t1 < TimeDelta::seconds(60),
            "the retry's copy never arrived"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert!(
        Utc::now() - t1 >= TimeDelta::seconds(29),
        "the copy came before its backoff"
    );
    let retry: CallMessage = serde_json::from_str(copy.records[0].body.as_deref().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.first_at, Some(t1));
    assert_eq!(retry.not_before, Some(t1 + TimeDelta::seconds(30)));

    // Arriving before its instant, the copy waits out the rest by a visibility change
    // (reported failed so the queue keeps it) and makes no request.
    let early = webhook_sender(&mut rt, &sender, &copy, t1 + TimeDelta::seconds(10));
    assert_eq!(early.batch_item_failures.len(), 1, "{early:?}");
    assert_eq!(stub.lock().map(|r| r.requests.len()).unwrap_or(0), 1);

    // At its time: a 200, delivered, and `save` applied to the contact.
    let done = webhook_sender(&mut rt, &sender, &copy, Utc::now());
    assert!(done.batch_item_failures.is_empty(), "{done:?}");
    let c1 = rt
        .store()
        .contact("c1")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no c1"));
    assert_eq!(c1.field("tier"), Some(&json!("gold")));
    let path = rt.path("hook", "c1").unwrap_or_else(|e| panic!("{e}"));
    let delivered: Vec<_> = path
        .iter()
        .filter(|r| r.kind == RecordKind::Delivered && r.action.as_deref() == Some("webhook"))
        .collect();
    assert_eq!(delivered.len(), 1, "{path:#?}");
    assert_eq!(delivered[0].reason, None);

    // A duplicate delivery of the same key: no request, nothing journaled again.
    let again = webhook_sender(&mut rt, &sender, &copy, Utc::now());
    assert!(again.batch_item_failures.is_empty());
    {
        let r = stub.lock().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.requests.len(), 2, "{:?}", r.requests);
        assert!(r.requests.iter().all(|(_, k, valid)| *valid && *k == key));
        assert_eq!(r.processed.get(&key), Some(&1));
    }

    // A 404: failed for good, with its status; nothing queued again.
    let mut gone = queued.clone();
    gone.contact = "c2".into();
    gone.enrollment = "hook:c2:1".into();
    if let Some(w) = gone.webhook.as_mut() {
        w.url = format!("{base}/hook/gone");
        w.save.clear();
    }
    let _ = webhook_sender(&mut rt, &sender, &event_of(&gone), Utc::now());
    let records = rt
        .store()
        .records("hook", Some("c2"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        records.iter().any(|r| r.kind == RecordKind::Failed
            && r.reason.as_deref() == Some("webhook failed: HTTP 404")),
        "{records:#?}"
    );

    // Still failing 24 h after its first attempt: dead-lettered, journaled failed.
    let mut down = queued.clone();
    down.contact = "c3".into();
    down.enrollment = "hook:c3:1".into();
    if let Some(w) = down.webhook.as_mut() {
        w.url = format!("{base}/hook/down");
    }
    down.first_at = Some(Utc::now() - TimeDelta::hours(24));
    down.attempts = 30;
    let _ = webhook_sender(&mut rt, &sender, &event_of(&down), Utc::now());
    let records = rt
        .store()
        .records("hook", Some("c3"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        records.iter().any(|r| r.kind == RecordKind::Failed
            && r.reason.as_deref().is_some_and(
                |w| w.starts_with("webhook dead-lettered after 31 attempts in 24 h: HTTP 503")
            )),
        "{records:#?}"
    );
    let dead = crate::support::drain(&dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1.contains("hook:c3:1"), "{}", dead[0].1);
    // Neither the 404 nor the dead letter left a copy on the queue.
    assert!(crate::support::drain(&queue).is_empty());
}

/// Answers the statuses it is given in turn (202 once they are used), keeping each invoke.
#[derive(Debug, Default)]
struct FakeLambda {
    statuses: Mutex<Vec<u16>>,
    calls: Mutex<Vec<(String, serde_json::Value)>>,
}

impl relance_aws::callout::Invoker for FakeLambda {
    fn invoke(&self, function: &str, payload: Vec<u8>) -> webhook::CallFuture<'_> {
        let event = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((function.to_string(), event));
        }
        let status = self
            .statuses
            .lock()
            .ok()
            .and_then(|mut s| (!s.is_empty()).then(|| s.remove(0)))
            .unwrap_or(202);
        Box::pin(async move {
            Ok(webhook::Answer {
                status,
                body: Vec::new(),
            })
        })
    }
}

const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:crm-sync";

#[test]
fn invokes_go_through_the_webhook_queue_with_the_contact_and_step_as_the_event() {
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let prefix = format!("inv{}-", std::process::id());
    let mut config = AwsConfig::with_prefix(&prefix, 1);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = create_queue(&format!("{prefix}webhook"));
    config.queues.webhook = Some(queue.clone());
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge.clone())
        .with_dispatch(AwsDispatch::new(queues.clone(), config.queues.clone()));
    let mut rt = Runtime::new(store);
    let now = Utc::now();
    let text = format!(
        "id: sync\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: crm\n    invoke: {{function: \"{FUNCTION}\"}}\n    next: done\n  - {{id: done, end: success}}\n"
    );
    rt.put_scenario(&text, SourceFormat::Yaml, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status("sync", Status::Active, now)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.upsert_contact(
        ContactDetail {
            action: None,
            contact: serde_json::Map::from_iter([
                ("id".to_string(), json!("c1")),
                ("email".to_string(), json!("c1@example.com")),
            ]),
            at: None,
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.launch(
        LaunchDetail {
            scenario: "sync".into(),
            contacts: Some(vec!["c1".into()]),
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let queued = crate::support::drain(&queue);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let message: CallMessage = serde_json::from_str(&queued[0].1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message.action(), "invoke");

    let lambda = Arc::new(FakeLambda {
        statuses: Mutex::new(vec![429]),
        ..FakeLambda::default()
    });
    let env = HashMap::<&str, &str>::new();
    let sender = WebhookSender::new(
        Arc::new(
            HttpTransport::from_lookup(|n| env.get(n).map(|v| v.to_string()))
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        BTreeMap::new(),
        Ledger::new(
            emu.dynamo.clone(),
            config.state_table.clone(),
            bridge.clone(),
        ),
        queues.clone(),
        queue.clone(),
        None,
        bridge.clone(),
    )
    .with_invoker(lambda.clone());

    // Throttled (429): retried, as a webhook's 429 would be: a copy due 30 s later.
    let t1 = Utc::now();
    let r = webhook_sender(&mut rt, &sender, &event_of(&message), t1);
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let copies = crate::support::drain_after(&queue, 40);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy: CallMessage = serde_json::from_str(&copies[0].1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((copy.attempts, copy.first_at), (1, Some(t1)));
    // At its time: queued by Lambda (202), journaled delivered; a duplicate invokes nothing.
    let later = copy.not_before.unwrap_or(t1);
    for _ in 0..2 {
        let r = webhook_sender(&mut rt, &sender, &event_of(&copy), later);
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    let calls = lambda.calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let enrollment = message.enrollment.clone();
    for (function, event) in &calls {
        assert_eq!(function, FUNCTION);
        assert_eq!(
            *event,
            json!({
                "contact": {"id": "c1", "email": "c1@example.com"},
                "step": "crm", "scenario": "sync", "enrollment": enrollment,
                "idempotency_key": format!("{enrollment}:crm"),
            })
        );
    }
    let path = rt.path("sync", "c1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        path.iter()
            .filter(|r| r.kind == RecordKind::Delivered && r.action.as_deref() == Some("invoke"))
            .count(),
        1,
        "{path:#?}"
    );

    // The real Lambda API (the emulator's): a function that does not exist is Lambda's 404,
    // failed for good, never retried.
    let sdk = emu.runtime.block_on(aws_config::load_from_env());
    let real = WebhookSender::new(
        Arc::new(
            HttpTransport::from_lookup(|n| env.get(n).map(|v| v.to_string()))
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        BTreeMap::new(),
        Ledger::new(
            emu.dynamo.clone(),
            config.state_table.clone(),
            bridge.clone(),
        ),
        queues.clone(),
        queue.clone(),
        None,
        bridge.clone(),
    )
    .with_invoker(Arc::new(relance_aws::callout::LambdaInvoker::new(
        aws_sdk_lambda::Client::new(&sdk),
    )));
    let mut missing = message.clone();
    missing.contact = "c2".into();
    missing.enrollment = "sync:c2:1".into();
    if let Some(i) = missing.invoke.as_mut() {
        i.function = format!(
            "arn:aws:lambda:us-east-1:000000000000:function:relance-missing-{}",
            std::process::id()
        );
    }
    let r = webhook_sender(&mut rt, &real, &event_of(&missing), Utc::now());
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let records = rt
        .store()
        .records("sync", Some("c2"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        records.iter().any(|r| r.kind == RecordKind::Failed
            && r.reason.as_deref() == Some("invoke failed: HTTP 404")),
        "{records:#?}"
    );
    assert!(crate::support::drain(&queue).is_empty());
}

/// Re-arms, while `on`, a concurrent writer of contact `id` before each put of a profile by
/// `store` or its copies: every update of the contact loses to it.
fn keep_changing(
    store: DynamoStore,
    id: &'static str,
    on: Arc<std::sync::atomic::AtomicBool>,
    writes: Arc<std::sync::atomic::AtomicUsize>,
) {
    use relance_core::ports::Store;
    use std::sync::atomic::Ordering;
    let mut other = store.clone();
    let next = store.clone();
    store.before_next_profile_put(move || {
        if !on.load(Ordering::SeqCst) {
            return;
        }
        let n = writes.fetch_add(1, Ordering::SeqCst);
        other
            .atomically(|s| {
                let mut c = s.contact(id)?.unwrap_or_else(|| panic!("no contact {id}"));
                c.set_field("touched", json!(n));
                s.put_contact(&c, Utc::now())
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Armed again once the other writer's own put is done.
        keep_changing(next, id, on, writes);
    });
}

/// How many messages of a queue wait out their delay.
fn delayed(url: &str) -> usize {
    let emu = emulator();
    let name = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed;
    emu.runtime
        .block_on(
            emu.sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(name.clone())
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .attributes
        .and_then(|a| a.get(&name).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A 200 whose `save` keeps losing to another writer of the contact: the call is not made
/// again, and the save is not dropped either: a copy carrying the answer's fields comes back
/// with the call's backoff (and, losing again, queues the next), writes them once the contact
/// holds still, and journals the call delivered once; a copy delivered again after that
/// applies nothing (a newer value of the field stays); a copy still losing when the call's
/// retry window ends is reported on `delivered`.
#[test]
fn hostile_a_save_that_keeps_losing_is_saved_later_not_dropped() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let (base, stub) = receiver();
    let prefix = format!("whs{}-", std::process::id());
    let HookDeployment {
        config,
        queue,
        bridge,
        queues,
        mut rt,
        ..
    } = hook_deployment(
        &emu.runtime,
        &emu.dynamo,
        &emu.sqs,
        &prefix,
        &format!("{base}/hook/ok"),
        &["c1", "c2"],
    );
    let first = receive(&queue);
    assert_eq!(first.records.len(), 1, "{first:?}");
    let sender = local_sender(&emu.dynamo, &queues, &config, &bridge);
    let delivered = |rt: &mut Runtime<DynamoStore>, contact: &str| {
        rt.store()
            .records("hook", Some(contact))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|r| r.kind == RecordKind::Delivered)
            .collect::<Vec<_>>()
    };
    let tier = |rt: &mut Runtime<DynamoStore>, contact: &str| {
        rt.store()
            .contact(contact)
            .unwrap_or_else(|e| panic!("{e}"))
            .and_then(|c| c.field("tier").cloned())
    };

    // The call answers 200; every update of c1 loses to the other writer.
    let on = Arc::new(AtomicBool::new(true));
    let writes = Arc::new(AtomicUsize::new(0));
    keep_changing(rt.store().clone(), "c1", on.clone(), writes.clone());
    let t1 = Utc::now();
    let r = webhook_sender(&mut rt, &sender, &first, t1);
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert!(writes.load(Ordering::SeqCst) >= 3, "the save ran and lost");
    assert_eq!(tier(&mut rt, "c1"), None);
    assert!(
        delivered(&mut rt, "c1").is_empty(),
        "not journaled before it is saved"
    );
    emu.runtime
        .block_on(
            emu.sqs
                .delete_message()
                .queue_url(&queue)
                .receipt_handle(first.records[0].receipt_handle.clone().unwrap_or_default())
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));

    // The copy: the answer's fields, due with the call's first backoff. Still losing, it queues
    // the next copy (the queue's delayed message) and journals nothing.
    let copy = receive_after(&queue, 60);
    assert_eq!(copy.records.len(), 1, "the save's copy was queued");
    let queued: CallMessage = serde_json::from_str(copy.records[0].body.as_deref().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}"));
    let gold = serde_json::Map::from_iter([("tier".to_string(), json!("gold"))]);
    assert_eq!(
        queued.answered.as_ref().map(|a| a.fields.clone()),
        Some(gold.clone()),
        "{queued:?}"
    );
    assert_eq!((queued.attempts, queued.first_at), (1, Some(t1)));
    let before = writes.load(Ordering::SeqCst);
    let again = webhook_sender(&mut rt, &sender, &copy, Utc::now());
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    assert!(
        writes.load(Ordering::SeqCst) > before,
        "the copy's save lost too"
    );
    assert_eq!(delayed(&queue), 1, "the next copy waits out its backoff");
    assert!(delivered(&mut rt, "c1").is_empty());

    // The contact holds still now: the copy, delivered again (as the next one will be),
    // saves, journals delivered, calls nothing.
    on.store(false, Ordering::SeqCst);
    let done = webhook_sender(&mut rt, &sender, &copy, Utc::now());
    assert!(done.batch_item_failures.is_empty(), "{done:?}");
    assert_eq!(tier(&mut rt, "c1"), Some(json!("gold")));
    let c1 = rt
        .store()
        .contact("c1")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no c1"));
    assert!(
        c1.field("touched").is_some(),
        "the other writer's change kept"
    );
    let records = delivered(&mut rt, "c1");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].reason, None);

    // A newer value of the field, then the next copy (and the first again): done already, they
    // apply nothing and journal nothing.
    rt.upsert_contact(
        ContactDetail {
            action: None,
            contact: serde_json::Map::from_iter([
                ("id".to_string(), json!("c1")),
                ("tier".to_string(), json!("platinum")),
            ]),
            at: None,
        },
        Utc::now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let next = receive_after(&queue, 90);
    assert_eq!(next.records.len(), 1, "the next copy came");
    let late = webhook_sender(&mut rt, &sender, &next, Utc::now());
    assert!(late.batch_item_failures.is_empty(), "{late:?}");
    let late = webhook_sender(&mut rt, &sender, &copy, Utc::now());
    assert!(late.batch_item_failures.is_empty(), "{late:?}");
    assert_eq!(tier(&mut rt, "c1"), Some(json!("platinum")));
    assert_eq!(delivered(&mut rt, "c1").len(), 1);
    assert_eq!(
        stub.lock().map(|r| r.requests.len()).unwrap_or(0),
        1,
        "the call was made once"
    );

    // A copy for c2 still losing when the call's 24 h retry window ends: reported on
    // `delivered`, once however often it comes.
    let mut last = queued.clone();
    last.contact = "c2".into();
    last.enrollment = "hook:c2:1".into();
    last.first_at = Some(Utc::now() - TimeDelta::hours(24));
    last.attempts = 30;
    last.not_before = None;
    on.store(true, Ordering::SeqCst);
    keep_changing(rt.store().clone(), "c2", on.clone(), writes.clone());
    for _ in 0..2 {
        let r = webhook_sender(&mut rt, &sender, &event_of(&last), Utc::now());
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    on.store(false, Ordering::SeqCst);
    let records = delivered(&mut rt, "c2");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(
        records[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("save: not written within the call's retry window")),
        "{records:#?}"
    );
    assert_eq!(tier(&mut rt, "c2"), None);
}
