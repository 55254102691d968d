//! Each function's handler in memory, offline: the runtime over `MemoryStore`, a dispatch
//! port that records what it is handed and senders that answer as told, so what a handler
//! decides (what it enrolls, queues, retries, journals, dead-letters, answers) is tested
//! without the emulator. The emulator modules run the same handlers on the real services.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, TimeDelta, Utc};
use relance_aws::channels::{Outcome, SendError};
use relance_aws::handlers::{self, Deliver, HandlerError};
use relance_core::Contact;
use relance_core::engine::{Recipient, Send, Wake};
use relance_core::journal::RecordKind;
use relance_core::ports::{ContactStore, JournalStore, SourceFormat, Status};
use relance_core::render::Rendered;
use relance_core::scenario::Channel;
use relance_runtime::MemoryStore;
use relance_runtime::runtime::Runtime;
use serde_json::{Value, json};

use crate::support::{Recording, at, sample, sqs_event, unsubscribe_request, unsubscribe_token};

const WELCOME: &str = r#"
id: aws-welcome
launch: {type: trigger, event: contact.created}
messages:
  hello: {channel: email, subject: "Welcome", text: "Hello"}
  thanks: {channel: email, subject: "Thanks for reading", text: "Thanks"}
  nudge: {channel: sms, text: "Did you see our email?"}
steps:
  - {id: welcome, send: hello, next: wait-open}
  - id: wait-open
    wait_for: {opened: welcome, timeout: P1D}
    on_event: thanks
    on_timeout: nudge
  - {id: thanks, send: thanks, next: done}
  - {id: nudge, send: nudge, next: done}
  - {id: done, end: success}
"#;

const NEWS: &str = "id: news\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  first: {channel: email, type: newsletter, subject: News, text: x}\nsteps:\n  - {id: first, send: first, next: wait}\n  - id: wait\n    wait_for: {unsubscribed: first, timeout: P2D}\n    on_event: gone\n    on_timeout: done\n  - {id: gone, end: abandon}\n  - {id: done, end: success}\n";

/// Senders that answer by the send's step: what a provider would have said.
struct Answering;

impl Deliver for Answering {
    fn deliver(&self, send: &Send, _: &str, _: DateTime<Utc>) -> Result<Outcome, SendError> {
        match send.step.as_str() {
            "dup" => Ok(Outcome::Duplicate),
            "skip" => Ok(Outcome::Skipped("opted_out".into())),
            "bad" => Err(SendError::Permanent("EndpointDisabled".into())),
            "later" => Err(SendError::Transient("throttled".into())),
            _ => Ok(Outcome::Sent("provider-1".into())),
        }
    }
}

fn runtime(yaml: &str, t0: DateTime<Utc>) -> Runtime<MemoryStore> {
    let mut rt = Runtime::new(MemoryStore::new());
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt
}

/// The idempotency keys of the sends in the outbox.
fn sent_keys(rt: &mut Runtime<MemoryStore>) -> Vec<String> {
    rt.store()
        .outbox_after(0, usize::MAX)
        .into_iter()
        .filter(|(_, kind, _)| *kind == "send")
        .map(|(_, _, m)| {
            m["send"]["idempotency_key"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn add_contacts(rt: &mut Runtime<MemoryStore>, n: usize, t0: DateTime<Utc>) {
    for i in 0..n {
        let c = Contact::from_json(
            json!({"id": format!("c{i:03}"), "email": format!("c{i}@example.com")}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.store()
            .put_contact(&c, t0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn failures(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[test]
fn trigger_enrolls_fans_large_launches_out_and_refuses_unknown_detail_types() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(WELCOME, t0);
    let contact: EventBridgeEvent<Value> = sample("trigger.contact.json");
    handlers::trigger(&mut rt, None, &contact, t0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent_keys(&mut rt), ["aws-welcome:ana:1:welcome"]);

    let mut odd = contact.clone();
    odd.detail_type = "relance.unknown".into();
    assert!(matches!(
        handlers::trigger(&mut rt, None, &odd, t0),
        Err(HandlerError::BadInput(_))
    ));

    // A launch to a whole audience: pages of 100 on the launch queue when there is one,
    // enrolled here when there is none.
    let mut rt = runtime(NEWS, t0);
    add_contacts(&mut rt, 230, t0);
    let mut launch = contact.clone();
    launch.detail_type = "relance.launch".into();
    launch.detail = json!({"scenario": "news"});
    let with_queue = Recording::with_launch_queue();
    handlers::trigger(&mut rt, Some(&with_queue), &launch, t0).unwrap_or_else(|e| panic!("{e}"));
    let pages = std::mem::take(&mut with_queue.handed().launch);
    assert_eq!(pages.len(), 3, "230 contacts in pages of 100");
    let first: Value = serde_json::from_str(&pages[0].body).unwrap_or_default();
    assert_eq!(first["contacts"].as_array().map(Vec::len), Some(100));
    assert!(
        sent_keys(&mut rt).is_empty(),
        "the pages enroll, not the trigger"
    );
    handlers::trigger(&mut rt, Some(&Recording::default()), &launch, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent_keys(&mut rt).len(), 230);
}

#[test]
fn tick_queues_each_due_timer_once_delayed_to_its_second() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(WELCOME, t0);
    let contact: EventBridgeEvent<Value> = sample("trigger.contact.json");
    handlers::trigger(&mut rt, None, &contact, t0).unwrap_or_else(|e| panic!("{e}"));
    let dispatch = Recording::default();
    let due = t0 + TimeDelta::days(1);
    let early = handlers::tick(&mut rt, &dispatch, due - TimeDelta::minutes(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.queued, 0, "not within the lookahead yet");
    let summary = handlers::tick(&mut rt, &dispatch, due - TimeDelta::seconds(30))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.queued, 1);
    let step = std::mem::take(&mut dispatch.handed().step);
    assert_eq!(step[0].delay_seconds, 30, "delayed to its second");
    let wake: Wake = serde_json::from_str(&step[0].body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((wake.step.as_str(), wake.at), ("wait-open", due));
    let again = handlers::tick(&mut rt, &dispatch, due - TimeDelta::seconds(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again.queued, 0,
        "queued once: the next tick starts past its horizon"
    );
}

#[test]
fn step_executor_fires_its_timer_and_fails_only_the_poisoned_message() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(WELCOME, t0);
    let contact: EventBridgeEvent<Value> = sample("trigger.contact.json");
    handlers::trigger(&mut rt, None, &contact, t0).unwrap_or_else(|e| panic!("{e}"));
    let due = t0 + TimeDelta::days(1);
    let wake = Wake {
        at: due,
        contact: "ana".into(),
        step: "wait-open".into(),
        enrollment: "aws-welcome:ana:1".into(),
    };
    let body = serde_json::to_string(&wake).unwrap_or_default();
    let batch = sqs_event(&[
        ("m1".into(), body.clone()),
        ("m2".into(), "this is not a timer".into()),
        ("m3".into(), body),
    ]);
    let response = handlers::step_executor(&mut rt, &batch, due);
    assert_eq!(failures(&response), ["m2"]);
    assert_eq!(
        sent_keys(&mut rt),
        ["aws-welcome:ana:1:welcome", "aws-welcome:ana:1:nudge"],
        "the timeout sends the SMS once, the duplicate changes nothing"
    );
}

#[test]
fn launch_page_enrolls_its_contacts_and_refuses_a_page_without_them() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(NEWS, t0);
    add_contacts(&mut rt, 3, t0);
    let batch = sqs_event(&[
        (
            "p0".into(),
            json!({"scenario": "news", "contacts": ["c000", "c002"]}).to_string(),
        ),
        ("p1".into(), json!({"scenario": "news"}).to_string()),
    ]);
    let response = handlers::launch_page(&mut rt, &batch, t0);
    assert_eq!(failures(&response), ["p1"]);
    assert_eq!(
        sent_keys(&mut rt),
        ["news:c000:1:first", "news:c002:1:first"]
    );
}

fn send(step: &str) -> Send {
    Send {
        enrollment: "news:c000:1".into(),
        contact: "c000".into(),
        step: step.into(),
        message: "first".into(),
        channel: Channel::Email,
        communication_type: "newsletter".into(),
        to: Recipient::Email("c0@example.com".into()),
        content: Rendered {
            subject: Some("News".into()),
            text: Some("x".into()),
            ..Rendered::default()
        },
        idempotency_key: format!("news:c000:1:{step}"),
    }
}

#[test]
fn channel_sender_retries_only_transient_failures_and_journals_what_the_provider_decided() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut store = MemoryStore::new();
    let mut messages: Vec<(String, String)> = ["sent", "dup", "skip", "bad", "later"]
        .iter()
        .map(|step| {
            let body = relance_core::ports::send_message("news", &send(step), t0).to_string();
            (format!("id-{step}"), body)
        })
        .collect();
    messages.push(("id-junk".into(), "not a send".into()));
    let response = handlers::channel_sender(&Answering, &mut store, &sqs_event(&messages), t0);
    assert_eq!(
        failures(&response),
        ["id-later"],
        "only the transient failure is retried"
    );
    let records = store
        .records("news", Some("c000"))
        .unwrap_or_else(|e| panic!("{e}"));
    let decided: Vec<(RecordKind, Option<&str>, Option<&str>)> = records
        .iter()
        .map(|r| (r.kind, r.step.as_deref(), r.reason.as_deref()))
        .collect();
    assert_eq!(
        decided,
        [
            (RecordKind::Skipped, Some("skip"), Some("opted_out")),
            (RecordKind::Failed, Some("bad"), Some("EndpointDisabled")),
        ]
    );
}

/// Senders that wait, each delivery, until every delivery of the batch has begun (or 10 s):
/// they record how many were under way at once.
#[derive(Default)]
struct Gathering {
    under_way: std::sync::Mutex<(usize, usize)>,
    arrived: std::sync::Condvar,
}

impl Deliver for Gathering {
    fn deliver(&self, send: &Send, _: &str, _: DateTime<Utc>) -> Result<Outcome, SendError> {
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        under_way.0 += 1;
        under_way.1 = under_way.1.max(under_way.0);
        self.arrived.notify_all();
        let (mut under_way, _) = self
            .arrived
            .wait_timeout_while(under_way, std::time::Duration::from_secs(10), |u| u.1 < 10)
            .unwrap_or_else(|e| e.into_inner());
        under_way.0 -= 1;
        Ok(Outcome::Sent(format!("provider-{}", send.step)))
    }
}

/// A batch's sends are delivered at once (each delivery is requests one after the other), and
/// what the provider decided is still journaled, and retried, message by message.
#[test]
fn channel_sender_delivers_a_batchs_sends_at_once() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut store = MemoryStore::new();
    let messages: Vec<(String, String)> = (0..10)
        .map(|i| {
            let body =
                relance_core::ports::send_message("news", &send(&format!("s{i}")), t0).to_string();
            (format!("id-{i}"), body)
        })
        .collect();
    let gathering = Gathering::default();
    let response = handlers::channel_sender(&gathering, &mut store, &sqs_event(&messages), t0);
    assert!(failures(&response).is_empty());
    let most = gathering.under_way.lock().map(|u| u.1).unwrap_or(0);
    assert_eq!(most, 10, "the ten deliveries under way at once");
    // Under a send rate, a tenth of it at once: the template's 14 emails and 20 SMS a second
    // keep one and two under way per execution.
    assert_eq!(
        [None, Some(5), Some(14), Some(20), Some(100), Some(1000)]
            .map(handlers::deliveries_at_once),
        [10, 1, 1, 2, 10, 10]
    );
}

#[test]
fn engagement_wakes_the_wait_and_sms_delivery_skips_unknown_message_ids() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(WELCOME, t0);
    let contact: EventBridgeEvent<Value> = sample("trigger.contact.json");
    handlers::trigger(&mut rt, None, &contact, t0).unwrap_or_else(|e| panic!("{e}"));
    let opened: SqsEvent = sample("engagement.ses-open.sqs.json");
    let response = handlers::engagement(&mut rt, &opened, at("2026-12-01T10:00:00Z"));
    assert!(failures(&response).is_empty());
    assert_eq!(
        sent_keys(&mut rt),
        ["aws-welcome:ana:1:welcome", "aws-welcome:ana:1:thanks"],
        "the open ends the wait on its event branch"
    );
    // CloudWatch Logs: the memory store knows no SMS message id, so the line is skipped.
    let logs: Value = sample("engagement.sms-delivery.logs.json");
    let answer = handlers::engagement_any(&mut rt, logs, at("2026-12-01T10:00:01Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, Value::Null);
    assert!(matches!(
        handlers::engagement_any(&mut rt, json!({"neither": true}), t0),
        Err(HandlerError::BadInput(_))
    ));
}

#[test]
fn unsubscribe_shows_the_form_refuses_a_forged_token_and_unsubscribes_on_post() {
    let t0 = at("2026-12-01T09:00:00Z");
    let mut rt = runtime(NEWS, t0);
    add_contacts(&mut rt, 2, t0);
    let secret = b"an unsubscribe key of at least 32 bytes!".to_vec();
    let token = |contact: &str| unsubscribe_token(&secret, contact);
    let request = unsubscribe_request;
    let now = at("2026-12-01T11:00:00Z");
    let get = handlers::unsubscribe(&mut rt, Some(&secret), &request("GET", &token("c000")), now);
    assert_eq!(get.status_code, 200);
    assert!(
        get.body
            .unwrap_or_default()
            .contains("<form method=\"post\"")
    );
    let forged = format!(
        "{}.{}",
        token("c001").split('.').next().unwrap_or_default(),
        token("c000").split('.').nth(1).unwrap_or_default()
    );
    let refused = handlers::unsubscribe(&mut rt, Some(&secret), &request("POST", &forged), now);
    assert_eq!(refused.status_code, 403);
    let subscription = |rt: &mut Runtime<MemoryStore>, id: &str| {
        rt.store()
            .contact(id)
            .unwrap_or_default()
            .and_then(|c| c.subscription("newsletter"))
    };
    assert_eq!(
        subscription(&mut rt, "c000"),
        None,
        "a GET or a forged POST wrote nothing"
    );
    let done = handlers::unsubscribe(
        &mut rt,
        Some(&secret),
        &request("POST", &token("c000")),
        now,
    );
    assert_eq!(done.status_code, 200, "{:?}", done.body);
    assert_eq!(subscription(&mut rt, "c000"), Some(false));
    assert_eq!(subscription(&mut rt, "c001"), None);
}
