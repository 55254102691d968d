//! The functions' handlers in process against the emulator, with the real sample payloads of
//! `events/`: trigger → tick → step queue → step executor → channel queues, engagement
//! resuming a wait, a duplicated step message sending once, a poisoned message failing alone.

use crate::support::{
    at, create_queue, drain, emails_to, emulator, emulator_read, queue_arn, sample, sms_to,
    sqs_event, verify_identity,
};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::handlers;
use relance_aws::sqs::SqsQueues;
use relance_core::ports::{SourceFormat, Status};
use relance_runtime::runtime::Runtime;
use serde_json::Value;

fn keys(messages: &[(String, String)]) -> Vec<String> {
    let mut k: Vec<String> = messages
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b)
                .map(|v| {
                    v["send"]["idempotency_key"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default()
        })
        .collect();
    k.sort();
    k
}

const WELCOME: &str = r#"
id: aws-welcome
launch: {type: trigger, event: contact.created}
exit_when: [{event: purchase}]
messages:
  hello: {channel: email, subject: "Welcome {{ contact.first_name | default('there') }}", text: "Hello"}
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

#[test]
fn a_scenario_runs_from_trigger_to_end_through_the_queues() {
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let prefix = format!("f{}-", std::process::id());
    let mut config = AwsConfig::with_prefix(&prefix, 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let step_queue = create_queue(&format!("{prefix}step"));
    config.queues.email = Some(create_queue(&format!("{prefix}email")));
    config.queues.sms = Some(create_queue(&format!("{prefix}sms")));
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge)
        .with_dispatch(AwsDispatch::new(queues.clone(), config.queues.clone()));
    let mut rt = Runtime::new(store);
    let t0 = at("2026-12-01T09:00:00Z");
    let put = rt
        .put_scenario(WELCOME, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));

    // trigger: two new contacts (the sample payload, and the same with another contact).
    let ana: EventBridgeEvent<Value> = sample("trigger.contact.json");
    let mut ben = ana.clone();
    ben.detail = serde_json::json!({"contact": {"id": "ben", "email": "ben@example.com", "phone": "+33600000002"}});
    for event in [&ana, &ben] {
        handlers::trigger(&mut rt, None, event, event.time.unwrap_or(t0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The email sender sends both welcomes through SES, once each.
    verify_identity("news@example.com");
    let senders = relance_aws::channels::Senders::new(
        emu.ses.clone(),
        emu.sns.clone(),
        emu.dynamo.clone(),
        config.state_table.clone(),
        relance_aws::channels::SenderConfig {
            from_email: "news@example.com".into(),
            configuration_set: None,
            default_sms_type: "Transactional".into(),
            sms_sender_id: None,
            ses_v1: false,
            ..relance_aws::channels::SenderConfig::default()
        },
        Bridge::new(emu.runtime.handle().clone()),
    );
    let welcomes = drain(config.queues.email.as_deref().unwrap_or(""));
    assert_eq!(
        keys(&welcomes),
        ["aws-welcome:ana:1:welcome", "aws-welcome:ben:1:welcome"]
    );
    let before = emails_to(
        &emulator_read("/_ministack/ses/messages"),
        "ben@example.com",
    );
    assert!(
        handlers::channel_sender(&senders, rt.store(), &sqs_event(&welcomes), t0)
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        emails_to(
            &emulator_read("/_ministack/ses/messages"),
            "ben@example.com"
        ) - before,
        1
    );
    // Ana opens it: SES's open event (through SNS) reaches the engagement function, her wait
    // resumes and thanks her.
    let opened: SqsEvent = sample("engagement.ses-open.sqs.json");
    assert!(
        handlers::engagement(&mut rt, &opened, at("2026-12-01T10:00:01Z"))
            .batch_item_failures
            .is_empty()
    );
    let opened: EventBridgeEvent<Value> = sample("trigger.engagement.json");
    // An unknown detail-type is refused as bad input.
    let mut odd = opened.clone();
    odd.detail_type = "relance.unknown".into();
    assert!(matches!(
        handlers::trigger(&mut rt, None, &odd, t0),
        Err(handlers::HandlerError::BadInput(_))
    ));

    // tick, a day later: Ben's timeout goes to the step queue, due now.
    let tick: EventBridgeEvent<Value> = sample("tick.scheduled.json");
    let now = tick.time.unwrap_or(t0);
    let summary = handlers::tick(
        &mut rt,
        &crate::support::dispatch(&queues, Some(&step_queue), None),
        now,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.queued, 1);
    let mut step_messages = drain(&step_queue);
    assert_eq!(step_messages.len(), 1);
    // The queue delivers the message twice, beside a poisoned one.
    step_messages.push(("duplicate".into(), step_messages[0].1.clone()));
    step_messages.push(("poison".into(), "{\"not\": \"a timer\"}".into()));
    let response = handlers::step_executor(&mut rt, &sqs_event(&step_messages), now);
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["poison"], "only the poisoned message fails");
    // The sample step payload (a stale copy of Ben's timer, and a bad body) changes nothing.
    let sample_batch: SqsEvent = sample("step-executor.sqs.json");
    let response = handlers::step_executor(&mut rt, &sample_batch, now);
    assert_eq!(response.batch_item_failures.len(), 1);

    let emails = drain(config.queues.email.as_deref().unwrap_or(""));
    let sms = drain(config.queues.sms.as_deref().unwrap_or(""));
    assert_eq!(keys(&emails), ["aws-welcome:ana:1:thanks"]);
    assert_eq!(keys(&sms), ["aws-welcome:ben:1:nudge"]);
    // The senders deliver the thanks and the SMS.
    let before = sms_to(
        &emulator_read("/_ministack/sns/sms-messages"),
        "+33600000002",
    );
    assert!(
        handlers::channel_sender(&senders, rt.store(), &sqs_event(&emails), now)
            .batch_item_failures
            .is_empty()
    );
    assert!(
        handlers::channel_sender(&senders, rt.store(), &sqs_event(&sms), now)
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        sms_to(
            &emulator_read("/_ministack/sns/sms-messages"),
            "+33600000002"
        ) - before,
        1
    );
    let emails = welcomes;
    let body: Value = serde_json::from_str(
        &emails
            .iter()
            .find(|(_, b)| b.contains("ana:1:welcome"))
            .map(|(_, b)| b.clone())
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(body["send"]["content"]["subject"], "Welcome Ana");
    assert_eq!(body["send"]["to"]["email"], "ana@example.com");

    let counts = rt.journal("aws-welcome").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.ends.get("success"), Some(&2));
    let dead = rt.store().dead_letters().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dead.len(),
        2,
        "each poisoned body is kept with its reason: {dead:?}"
    );
    assert!(
        dead.iter()
            .all(|(kind, _, reason)| kind == "step" && reason.contains("not a timer"))
    );

    // The launch queue takes pages of a large launch; the sample page finds both contacts running or done.
    let page: SqsEvent = sample("launch.sqs.json");
    let response = handlers::launch_page(&mut rt, &page, now);
    assert!(response.batch_item_failures.is_empty());
}

#[test]
fn senders_deliver_once_per_key_and_engagement_comes_back() {
    if crate::support::offline() {
        return;
    }
    use relance_aws::channels::{SenderConfig, Senders};
    let emu = emulator();
    let prefix = format!("s{}-", std::process::id());
    let mut config = AwsConfig::with_prefix(&prefix, 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    config.queues.email = Some(create_queue(&format!("{prefix}email")));
    // SES, like the AWS sandbox, sends only from a verified identity.
    verify_identity("news@example.com");
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let mut store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge.clone())
        .with_dispatch(AwsDispatch::new(queues.clone(), config.queues.clone()));
    let senders = Senders::new(
        emu.ses.clone(),
        emu.sns.clone(),
        emu.dynamo.clone(),
        config.state_table.clone(),
        SenderConfig {
            from_email: "news@example.com".into(),
            configuration_set: None,
            default_sms_type: "Transactional".into(),
            sms_sender_id: None,
            ses_v1: false,
            ..SenderConfig::default()
        },
        bridge,
    );
    let t0 = at("2026-12-01T09:00:00Z");

    // Email: the sample payload, delivered twice, goes out once.
    let before = emails_to(
        &emulator_read("/_ministack/ses/messages"),
        "ana@example.com",
    );
    let email: SqsEvent = sample("email-sender.sqs.json");
    for _ in 0..2 {
        let r = handlers::channel_sender(&senders, &mut store, &email, t0);
        assert!(r.batch_item_failures.is_empty());
    }
    let sent = emulator_read("/_ministack/ses/messages");
    assert_eq!(emails_to(&sent, "ana@example.com") - before, 1, "{sent}");
    assert!(sent.to_string().contains("Welcome Ana"));

    // SMS: once; a number that is not E.164 is refused for good (a dead letter, not a retry).
    let sms: SqsEvent = sample("sms-sender.sqs.json");
    let before = sms_to(
        &emulator_read("/_ministack/sns/sms-messages"),
        "+33600000001",
    );
    for _ in 0..2 {
        assert!(
            handlers::channel_sender(&senders, &mut store, &sms, t0)
                .batch_item_failures
                .is_empty()
        );
    }
    assert_eq!(
        sms_to(
            &emulator_read("/_ministack/sns/sms-messages"),
            "+33600000001"
        ) - before,
        1
    );
    let mut bad = serde_json::to_value(&sms).unwrap_or_default();
    let body = bad["Records"][0]["body"]
        .as_str()
        .unwrap_or("")
        .replace("+33600000001", "0600000001")
        .replace(":nudge", ":nudge-bad");
    bad["Records"][0]["body"] = Value::String(body);
    let bad: SqsEvent = serde_json::from_value(bad).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        handlers::channel_sender(&senders, &mut store, &bad, t0)
            .batch_item_failures
            .is_empty()
    );
    assert!(
        store
            .dead_letters()
            .unwrap_or_default()
            .iter()
            .any(|(kind, _, why)| kind == "send" && why.contains("E.164"))
    );

    // Push: Android and Apple payloads through SNS platform endpoints.
    let app = emu
        .runtime
        .block_on(
            emu.sns
                .create_platform_application()
                .name(format!("{prefix}app"))
                .platform("GCM")
                .attributes("PlatformCredential", "test-key")
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .platform_application_arn
        .unwrap_or_default();
    let endpoint = emu
        .runtime
        .block_on(
            emu.sns
                .create_platform_endpoint()
                .platform_application_arn(app)
                .token("device-token-ana")
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .endpoint_arn
        .unwrap_or_default();
    let push: SqsEvent = sample("push-sender.sqs.json");
    let mut push = serde_json::to_value(&push).unwrap_or_default();
    let body = push["Records"][0]["body"].as_str().unwrap_or("").replace(
        "arn:aws:sns:us-east-1:000000000000:endpoint/GCM/relance-app/ana",
        &endpoint,
    );
    push["Records"][0]["body"] = Value::String(body.clone());
    let (_, send) = relance_core::inbound::decode_send(&body).unwrap_or_else(|e| panic!("{e}"));
    let payload = relance_aws::channels::push_payload(&send);
    assert!(
        payload["GCM"]
            .as_str()
            .is_some_and(|g| g.contains("\"notification\""))
            && payload["APNS"]
                .as_str()
                .is_some_and(|a| a.contains("\"aps\""))
    );
    let outcome = senders.deliver(&send, "aws-welcome", at("2026-12-01T09:00:00Z"));
    assert!(
        matches!(outcome, Ok(relance_aws::channels::Outcome::Sent(_))),
        "{outcome:?}"
    );
    // The queue delivering it again: a duplicate, nothing sent.
    let push: SqsEvent = serde_json::from_value(push).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        handlers::channel_sender(&senders, &mut store, &push, t0)
            .batch_item_failures
            .is_empty()
    );

    // Engagement: SES's open (through SNS) and click (raw) come back to a waiting enrollment.
    let mut rt = Runtime::new(store);
    let put = rt
        .put_scenario(WELCOME, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let ana: EventBridgeEvent<Value> = sample("trigger.contact.json");
    handlers::trigger(&mut rt, None, &ana, t0).unwrap_or_else(|e| panic!("{e}"));
    let opened: SqsEvent = sample("engagement.ses-open.sqs.json");
    assert!(
        handlers::engagement(&mut rt, &opened, at("2026-12-01T10:00:01Z"))
            .batch_item_failures
            .is_empty()
    );
    let clicked: SqsEvent = sample("engagement.ses-click.sqs.json");
    assert!(
        handlers::engagement(&mut rt, &clicked, at("2026-12-01T10:05:01Z"))
            .batch_item_failures
            .is_empty()
    );
    let click =
        relance_core::inbound::ses_engagement(clicked.records[0].body.as_deref().unwrap_or(""))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a click"));
    assert_eq!(
        click.url.as_deref(),
        Some("https://shop.example.com/pricing?utm_source=relance")
    );
    assert!(click.link_tags.contains(&"cta".to_string()));
    let path = rt
        .path("aws-welcome", "ana")
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<String> = path
        .iter()
        .map(|r| format!("{:?} {}", r.kind, r.step.clone().unwrap_or_default()))
        .collect();
    assert!(
        kinds.contains(&"Resumed wait-open".to_string())
            && kinds.contains(&"Sent thanks".to_string()),
        "{kinds:?}"
    );
}

#[test]
fn ends_goals_and_tasks_reach_the_bus_and_large_launches_fan_out_in_pages() {
    if crate::support::offline() {
        return;
    }
    use relance_aws::eventbridge::EventBus;
    let emu = emulator();
    let prefix = format!("e{}-", std::process::id());
    let config = AwsConfig::with_prefix(&prefix, 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    // The bus, with a rule sending Relance's events to a queue the test reads.
    let bus = format!("{prefix}bus");
    emu.runtime
        .block_on(emu.eb.create_event_bus().name(&bus).send())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let target = create_queue(&format!("{prefix}events"));
    let target_arn = queue_arn(&target);
    emu.runtime
        .block_on(
            emu.eb
                .put_rule()
                .name(format!("{prefix}all"))
                .event_bus_name(&bus)
                .event_pattern(r#"{"source": ["relance"]}"#)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let t = aws_sdk_eventbridge::types::Target::builder()
        .id("q")
        .arn(target_arn)
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    emu.runtime
        .block_on(
            emu.eb
                .put_targets()
                .rule(format!("{prefix}all"))
                .event_bus_name(&bus)
                .targets(t)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));

    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge.clone()).with_dispatch(
        AwsDispatch::new(queues.clone(), config.queues.clone()).with_bus(EventBus::new(
            emu.eb.clone(),
            bus.clone(),
            bridge,
        )),
    );
    let mut rt = Runtime::new(store);
    let t0 = at("2026-12-01T09:00:00Z");
    let yaml = "id: leads\nlaunch: {type: manual}\ngoals: [{id: qualified, kind: success}]\nsteps:\n  - {id: call, action: {task: {title: Call the lead, assignee: sales}}, next: done}\n  - {id: done, end: qualified}\n";
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let contacts: Vec<relance_core::Contact> = (0..230)
        .map(|i| {
            relance_core::Contact::from_json(serde_json::json!({"id": format!("l{i:03}")}))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    rt.import(&contacts, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));

    // A launch for the whole audience becomes pages on the launch queue.
    let launch_queue = create_queue(&format!("{prefix}launch"));
    let launch: EventBridgeEvent<Value> = sample("trigger.launch.json");
    let mut whole = launch.clone();
    whole.detail = serde_json::json!({"scenario": "leads"});
    handlers::trigger(
        &mut rt,
        Some(&crate::support::dispatch(
            &queues,
            None,
            Some(&launch_queue),
        )),
        &whole,
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pages = drain(&launch_queue);
    assert_eq!(pages.len(), 3, "230 contacts in pages of 100");
    let response = handlers::launch_page(&mut rt, &sqs_event(&pages[..1]), t0);
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        rt.journal("leads")
            .unwrap_or_else(|e| panic!("{e}"))
            .ends
            .get("qualified"),
        Some(&100)
    );

    // Each of the 100 emitted a task, an end and a goal; read a few back from the bus's queue.
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.extend(drain(&target));
        if seen.len() >= 300 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let types: std::collections::BTreeSet<String> = seen
        .iter()
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .map(|v| v["detail-type"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        types.contains("relance.task")
            && types.contains("relance.enrollment.ended")
            && types.contains("relance.goal.reached"),
        "{types:?} from {} events",
        seen.len()
    );
}

#[test]
fn a_failed_send_is_retried_without_duplicating_and_a_poisoned_message_reaches_the_dlq() {
    if crate::support::offline() {
        return;
    }
    use relance_aws::channels::{Outcome, SenderConfig, Senders};
    let emu = emulator();
    let prefix = format!("r{}-", std::process::id());
    let config = AwsConfig::with_prefix(&prefix, 1);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    verify_identity("news@example.com");
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let sender_config = SenderConfig {
        from_email: "news@example.com".into(),
        configuration_set: None,
        default_sms_type: "Transactional".into(),
        sms_sender_id: None,
        ses_v1: false,
        ..SenderConfig::default()
    };
    // A sender whose SES is unreachable: the send fails for now, and its claim is released.
    let unreachable = emu.runtime.block_on(async {
        let sdk = aws_config::load_from_env().await;
        let conf = aws_sdk_sesv2::config::Builder::from(&sdk)
            .endpoint_url("http://127.0.0.1:9")
            .build();
        aws_sdk_sesv2::Client::from_conf(conf)
    });
    let failing = Senders::new(
        unreachable,
        emu.sns.clone(),
        emu.dynamo.clone(),
        config.state_table.clone(),
        sender_config.clone(),
        bridge.clone(),
    );
    let working = Senders::new(
        emu.ses.clone(),
        emu.sns.clone(),
        emu.dynamo.clone(),
        config.state_table.clone(),
        sender_config,
        bridge.clone(),
    );
    let batch: SqsEvent = sample("email-sender.sqs.json");
    let mut raw = serde_json::to_value(&batch).unwrap_or_default();
    let body = raw["Records"][0]["body"]
        .as_str()
        .unwrap_or("")
        .replace("aws-welcome:ana:1:welcome", &format!("{prefix}retry"))
        // Its own address: other tests send the same sample at the same time.
        .replace("ana@example.com", &format!("{prefix}ana@example.com"));
    let address = format!("{prefix}ana@example.com");
    raw["Records"][0]["body"] = Value::String(body.clone());
    let batch: SqsEvent = serde_json::from_value(raw).unwrap_or_else(|e| panic!("{e}"));
    let mut store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge.clone());
    let first = handlers::channel_sender(&failing, &mut store, &batch, at("2026-12-01T09:00:00Z"));
    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "a transient failure is retried by the queue"
    );
    let before = emails_to(&emulator_read("/_ministack/ses/messages"), &address);
    let retry = handlers::channel_sender(&working, &mut store, &batch, at("2026-12-01T09:00:30Z"));
    assert!(retry.batch_item_failures.is_empty());
    let again = handlers::channel_sender(&working, &mut store, &batch, at("2026-12-01T09:01:00Z"));
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(
        emails_to(&emulator_read("/_ministack/ses/messages"), &address) - before,
        1,
        "sent once, on the retry"
    );
    let (_, send) = relance_core::inbound::decode_send(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        working
            .deliver(&send, "aws-welcome", at("2026-12-01T09:00:00Z"))
            .ok(),
        Some(Outcome::Duplicate)
    );

    // A queue with a redrive policy: a message the step executor keeps failing ends in the DLQ.
    let dlq = create_queue(&format!("{prefix}step-dlq"));
    let dlq_arn = queue_arn(&dlq);
    let step = emu
        .runtime
        .block_on(
            emu.sqs
                .create_queue()
                .queue_name(format!("{prefix}step"))
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "1",
                )
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
                )
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .queue_url
        .unwrap_or_default();
    let queues = SqsQueues::new(emu.sqs.clone(), bridge);
    queues
        .send_batch(&step, &[
            relance_aws::sqs::Outgoing { id: "good".into(), body: "{\"enrollment\":\"x:y:1\",\"contact\":\"y\",\"step\":\"s\",\"at\":\"2026-12-01T09:00:00Z\"}".into(), delay_seconds: 0 },
            relance_aws::sqs::Outgoing { id: "poison".into(), body: "not a timer".into(), delay_seconds: 0 },
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rt = Runtime::new(store);
    // As Lambda's event source mapping does: receive, call, delete what succeeded.
    let mut quiet = 0;
    for _ in 0..12 {
        let got = emu
            .runtime
            .block_on(
                emu.sqs
                    .receive_message()
                    .queue_url(&step)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            quiet += 1;
            if quiet >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(400));
            continue;
        }
        quiet = 0;
        let pairs: Vec<(String, String)> = got
            .iter()
            .map(|m| {
                (
                    m.message_id.clone().unwrap_or_default(),
                    m.body.clone().unwrap_or_default(),
                )
            })
            .collect();
        let response =
            handlers::step_executor(&mut rt, &sqs_event(&pairs), at("2026-12-01T09:00:00Z"));
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for m in &got {
            if !failed.contains(&m.message_id.as_deref().unwrap_or("")) {
                let _ = emu.runtime.block_on(
                    emu.sqs
                        .delete_message()
                        .queue_url(&step)
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .send(),
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(600));
    }
    let dead = drain(&dlq);
    assert_eq!(
        dead.len(),
        1,
        "the poisoned message, alone, in the DLQ: {dead:?}"
    );
    assert_eq!(dead[0].1, "not a timer");
}

#[test]
fn with_ses_v1_email_goes_through_send_raw_email_for_localstack_community() {
    if crate::support::offline() {
        return;
    }
    use relance_aws::channels::{Outcome, SenderConfig, Senders};
    let emu = emulator();
    let prefix = format!("v{}-", std::process::id());
    let config = AwsConfig::with_prefix(&prefix, 1);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let v1 = emu
        .runtime
        .block_on(async { aws_sdk_ses::Client::new(&aws_config::load_from_env().await) });
    let _ = emu.runtime.block_on(
        v1.verify_email_identity()
            .email_address("news@example.com")
            .send(),
    );
    let senders = Senders::new(
        emu.ses.clone(),
        emu.sns.clone(),
        emu.dynamo.clone(),
        config.state_table.clone(),
        SenderConfig {
            from_email: "news@example.com".into(),
            configuration_set: None,
            default_sms_type: "Transactional".into(),
            sms_sender_id: None,
            ses_v1: true,
            ..SenderConfig::default()
        },
        Bridge::new(emu.runtime.handle().clone()),
    )
    .with_ses_v1(v1);
    let batch: SqsEvent = sample("email-sender.sqs.json");
    let body = batch.records[0]
        .body
        .clone()
        .unwrap_or_default()
        .replace("aws-welcome:ana:1:welcome", &format!("{prefix}v1"))
        .replace("ana@example.com", "v1@example.com");
    let (_, send) = relance_core::inbound::decode_send(&body).unwrap_or_else(|e| panic!("{e}"));
    let before = emails_to(&emulator_read("/_ministack/ses/messages"), "v1@example.com");
    let outcome = senders.deliver(&send, "aws-welcome", at("2026-12-01T09:00:00Z"));
    assert!(matches!(outcome, Ok(Outcome::Sent(_))), "{outcome:?}");
    let after = emulator_read("/_ministack/ses/messages");
    assert_eq!(emails_to(&after, "v1@example.com") - before, 1, "{after}");
}
