//! The channels against the emulator: each channel's request as it goes on the wire (read
//! back from an SDK interceptor), the provider lists skipping and journaling a send, SES
//! engagement feeding a `wait_for` and an `if: {clicked: ...}` condition, SMS delivery status
//! from CloudWatch Logs, one-click unsubscribe through the function's URL (valid and forged
//! tokens), and a burst under a shared send rate sending everything exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::{
    at, create_queue, drain, emails_to, emulator, emulator_read, sample, sqs_event,
    unsubscribe_request, unsubscribe_token, verify_identity,
};
use aws_lambda_events::event::cloudwatch_logs::LogsEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use relance_aws::bridge::Bridge;
use relance_aws::channels::{SenderConfig, Senders};
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::handlers;
use relance_aws::meter::Meter;
use relance_aws::sqs::SqsQueues;
use relance_core::journal::RecordKind;
use relance_core::ports::{ContactStore, JournalStore, SourceFormat, Status};
use relance_core::unsubscribe::{UnsubscribeClaim, UnsubscribeLinks};
use relance_runtime::runtime::Runtime;
use serde_json::{Value, json};

/// Tables and queues under a fresh prefix, and a runtime on them.
fn setup(name: &str) -> (AwsConfig, Runtime<DynamoStore>) {
    let emu = emulator();
    let prefix = format!("{name}{}-", std::process::id());
    let mut config = AwsConfig::with_prefix(&prefix, 2);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    for q in ["email", "sms", "push", "web-push"] {
        let url = create_queue(&format!("{prefix}{q}"));
        match q {
            "email" => config.queues.email = Some(url),
            "sms" => config.queues.sms = Some(url),
            "push" => config.queues.push = Some(url),
            _ => config.queues.web_push = Some(url),
        }
    }
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge)
        .with_dispatch(AwsDispatch::new(queues, config.queues.clone()));
    verify_identity("news@example.com");
    (config, Runtime::new(store))
}

fn add_contacts(
    rt: &mut Runtime<DynamoStore>,
    contacts: &[Value],
    now: chrono::DateTime<chrono::Utc>,
) {
    let contacts: Vec<relance_core::Contact> = contacts
        .iter()
        .map(|c| relance_core::Contact::from_json(c.clone()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    rt.import(&contacts, now, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Stores and activates `yaml`, adds the contacts and launches the scenario for them all at
/// `t0` (the launch's channel messages are left on their queues).
fn start(
    rt: &mut Runtime<DynamoStore>,
    yaml: &str,
    contacts: &[Value],
    t0: chrono::DateTime<chrono::Utc>,
) {
    let put = rt
        .put_scenario(yaml, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    add_contacts(rt, contacts, t0);
    rt.launch(
        relance_core::wire::LaunchDetail {
            scenario: put.id,
            contacts: None,
        },
        t0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// SESv2 and SNS clients on `endpoint` (the emulator, or a stub) that report every request
/// to `meter`.
fn metered_clients(
    meter: &Meter,
    endpoint: Option<&str>,
) -> (aws_sdk_sesv2::Client, aws_sdk_sns::Client) {
    let emu = emulator();
    emu.runtime.block_on(async {
        let mut loader = aws_config::from_env();
        if let Some(url) = endpoint {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let ses = aws_sdk_sesv2::config::Builder::from(&sdk)
            .interceptor(meter.interceptor())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(&sdk)
            .interceptor(meter.interceptor())
            .build();
        (
            aws_sdk_sesv2::Client::from_conf(ses),
            aws_sdk_sns::Client::from_conf(sns),
        )
    })
}

fn senders(
    config: &AwsConfig,
    ses: aws_sdk_sesv2::Client,
    sns: aws_sdk_sns::Client,
    sender: SenderConfig,
) -> Senders {
    let emu = emulator();
    Senders::new(
        ses,
        sns,
        emu.dynamo.clone(),
        config.state_table.clone(),
        sender,
        Bridge::new(emu.runtime.handle().clone()),
    )
}

fn links() -> UnsubscribeLinks {
    UnsubscribeLinks {
        base_url: "https://unsub.example.com/".into(),
        secret: b"channels test secret".to_vec(),
        mailto: Some("unsubscribe@example.com".into()),
    }
}

/// A channel-queue event of one send, from a sample's shape with another body.
fn send_event(scenario: &str, send: Value) -> SqsEvent {
    let body =
        json!({"kind": "send", "at": "2026-12-01T09:00:00Z", "scenario": scenario, "send": send});
    sqs_event(&[("m-1".to_string(), body.to_string())])
}

fn email_send(contact: &str, address: &str, step: &str) -> Value {
    json!({"enrollment": format!("news:{contact}:1"), "contact": contact, "step": step, "message": step,
        "channel": "email", "communication_type": "newsletter", "to": {"email": address},
        "content": {"subject": "News", "text": "Hello", "html": "<p>Hello</p>"},
        "idempotency_key": format!("news:{contact}:1:{step}")})
}

/// Each channel's request as it leaves: email with the one-click headers, SMS with its type
/// and origination number, push with the FCM and APNs payloads; the web push request is
/// checked by the web push sender's own tests against a push service stub.
#[test]
fn each_channel_sends_the_request_its_provider_expects() {
    if crate::support::offline() {
        return;
    }
    let (config, mut rt) = setup("shape");
    let meter = Meter::default();
    let (ses, sns) = metered_clients(&meter, None);
    let mut sender = SenderConfig::new("news@example.com");
    sender.unsubscribe = Some(links());
    sender.sms_sender_id = Some("RELANCE".into());
    sender.sms_origination_number = Some("+15555550100".into());
    let senders = senders(&config, ses, sns.clone(), sender);
    let t0 = at("2026-12-01T09:00:00Z");

    let email: SqsEvent = sample("email-sender.sqs.json");
    assert!(
        handlers::channel_sender(&senders, rt.store(), &email, t0)
            .batch_item_failures
            .is_empty()
    );
    let bodies = meter.bodies("SESv2.SendEmail");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let request: Value = serde_json::from_str(&bodies[0]).unwrap_or_else(|e| panic!("{e}"));
    let simple = &request["Content"]["Simple"];
    assert_eq!(simple["Subject"]["Data"], "Welcome Ana");
    assert_eq!(simple["Body"]["Html"]["Data"], "<p>Hello Ana</p>");
    let headers: BTreeMap<String, String> = simple["Headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["Name"].as_str().unwrap_or("").to_string(),
                h["Value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        headers["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click",
        "{request}"
    );
    let link = &headers["List-Unsubscribe"];
    assert!(
        link.starts_with("<https://unsub.example.com/?token=")
            && link.ends_with(", <mailto:unsubscribe@example.com?subject=unsubscribe>"),
        "{link}"
    );
    // The token in the header names this send and verifies with the secret.
    let token = link
        .trim_start_matches("<https://unsub.example.com/?token=")
        .split('>')
        .next()
        .unwrap_or_default();
    let claim = UnsubscribeClaim::verify(token, &links().secret).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            claim.contact.as_str(),
            claim.scenario.as_str(),
            claim.step.as_str()
        ),
        ("ana", "aws-welcome", "welcome")
    );
    let tags = request["EmailTags"].to_string();
    assert!(
        tags.contains("relance_contact") && tags.contains("relance_step"),
        "{tags}"
    );

    let sms: SqsEvent = sample("sms-sender.sqs.json");
    assert!(
        handlers::channel_sender(&senders, rt.store(), &sms, t0)
            .batch_item_failures
            .is_empty()
    );
    let publish = meter.bodies("SNS.Publish");
    assert_eq!(publish.len(), 1, "{publish:?}");
    let form = urlencoding_decode(&publish[0]);
    for expected in [
        "PhoneNumber=+33600000001",
        "AWS.SNS.SMS.SMSType",
        "Transactional",
        "AWS.SNS.SMS.SenderID",
        "RELANCE",
        "AWS.MM.SMS.OriginationNumber",
        "+15555550100",
    ] {
        assert!(form.contains(expected), "{expected} not in {form}");
    }

    // Push: one SNS platform endpoint, the message structured per platform.
    let emu = emulator();
    let endpoint = emu.runtime.block_on(async {
        let app = sns
            .create_platform_application()
            .name(format!("shape{}", std::process::id()))
            .platform("GCM")
            .attributes("PlatformCredential", "key")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        sns.create_platform_endpoint()
            .platform_application_arn(app.platform_application_arn.unwrap_or_default())
            .token("device-token-1")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .endpoint_arn
            .unwrap_or_default()
    });
    let push = send_event(
        "aws-welcome",
        json!({"enrollment": "aws-welcome:ana:1", "contact": "ana", "step": "ping", "message": "ping",
            "channel": "push", "communication_type": "push", "to": {"push": [["android", endpoint]]},
            "content": {"title": "Hello", "body": "News for you"}, "idempotency_key": "aws-welcome:ana:1:ping"}),
    );
    assert!(
        handlers::channel_sender(&senders, rt.store(), &push, t0)
            .batch_item_failures
            .is_empty()
    );
    let publish = meter.bodies("SNS.Publish");
    assert_eq!(publish.len(), 2, "{publish:?}");
    let form = urlencoding_decode(&publish[1]);
    assert!(form.contains("MessageStructure=json"), "{form}");
    let message = form
        .split('&')
        .find_map(|kv| kv.strip_prefix("Message="))
        .unwrap_or_default();
    let message: Value = serde_json::from_str(message).unwrap_or_else(|e| panic!("{e}: {form}"));
    let gcm: Value = serde_json::from_str(message["GCM"].as_str().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gcm["notification"]["title"], "Hello");
    assert_eq!(gcm["data"]["relance_key"], "aws-welcome:ana:1:ping");
    let apns: Value = serde_json::from_str(message["APNS"].as_str().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(apns["aps"]["alert"]["body"], "News for you");

    // Web push without VAPID keys: failed for good, journaled, not retried.
    let web: SqsEvent = sample("web-push-sender.sqs.json");
    assert!(
        handlers::channel_sender(&senders, rt.store(), &web, t0)
            .batch_item_failures
            .is_empty()
    );
    let records = rt
        .store()
        .records("aws-welcome", Some("ana"))
        .unwrap_or_default();
    assert!(
        records.iter().any(|r| r.kind == RecordKind::Failed
            && r.step.as_deref() == Some("browser")
            && r.reason
                .as_deref()
                .is_some_and(|w| w.contains("web push is not configured"))),
        "{records:?}"
    );
}

/// Decodes `a=b%2Bc&...` with `+` for spaces, as the SNS query protocol writes it.
fn urlencoding_decode(form: &str) -> String {
    let bytes = form.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `app` on a free local port, on the emulator's runtime; its address.
fn serve(app: axum::Router) -> std::net::SocketAddr {
    let emu = emulator();
    let listener = emu
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    emu.runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A stub of the two provider-list calls the emulator lacks: SESv2 GetSuppressedDestination
/// (one address suppressed for bounces) and SNS CheckIfPhoneNumberIsOptedOut (one number
/// opted out). Everything else is refused, so a send that reached it would fail the test.
fn provider_list_stub() -> String {
    use axum::Router;
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let app = Router::new()
        .route(
            "/v2/email/suppression/addresses/{address}",
            get(|Path(address): Path<String>| async move {
                if address == "gone@example.com" {
                    (StatusCode::OK, axum::Json(json!({"SuppressedDestination": {
                        "EmailAddress": address, "Reason": "BOUNCE", "LastUpdateTime": 1_796_000_000}})))
                } else {
                    (StatusCode::NOT_FOUND, axum::Json(json!({"message": "not suppressed"})))
                }
            }),
        )
        .route(
            "/",
            post(|body: String| async move {
                let opted = body.contains("Action=CheckIfPhoneNumberIsOptedOut")
                    && body.contains("33699999999");
                let xml = format!(
                    "<CheckIfPhoneNumberIsOptedOutResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><CheckIfPhoneNumberIsOptedOutResult><isOptedOut>{opted}</isOptedOut></CheckIfPhoneNumberIsOptedOutResult><ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata></CheckIfPhoneNumberIsOptedOutResponse>"
                );
                if body.contains("Action=CheckIfPhoneNumberIsOptedOut") {
                    (StatusCode::OK, [("content-type", "text/xml")], xml)
                } else {
                    (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], "<ErrorResponse><Error><Code>Stub</Code></Error></ErrorResponse>".to_string())
                }
            }),
        )
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                // The SESv2 client reads the error type from this header.
                if r.status() == StatusCode::NOT_FOUND {
                    r.headers_mut().insert(
                        "x-amzn-errortype",
                        axum::http::HeaderValue::from_static("NotFoundException"),
                    );
                }
                r
            },
        ));
    let addr = serve(app);
    format!("http://{addr}")
}

/// An address on the SES suppression list and a number that opted out of SMS: each send is
/// skipped, journaled with its reason, and never reaches the provider.
#[test]
fn provider_lists_skip_and_journal_the_send() {
    if crate::support::offline() {
        return;
    }
    let (config, mut rt) = setup("lists");
    let meter = Meter::default();
    let stub = provider_list_stub();
    let (ses, sns) = metered_clients(&meter, Some(&stub));
    let senders = senders(&config, ses, sns, SenderConfig::new("news@example.com"));
    let t0 = at("2026-12-01T09:00:00Z");
    let email = send_event("news", email_send("gone", "gone@example.com", "first"));
    let sms = send_event(
        "news",
        json!({"enrollment": "news:out:1", "contact": "out", "step": "text", "message": "text",
            "channel": "sms", "communication_type": "sms", "to": {"phone": "+33699999999"},
            "content": {"text": "Hello"}, "idempotency_key": "news:out:1:text"}),
    );
    for event in [&email, &sms, &email] {
        let r = handlers::channel_sender(&senders, rt.store(), event, t0);
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    assert_eq!(meter.total("SESv2", &["SendEmail"]), 0);
    assert_eq!(meter.total("SNS", &["Publish"]), 0);
    assert_eq!(
        meter.total("SESv2", &["GetSuppressedDestination"]),
        1,
        "the duplicate stops at its claim"
    );
    let records = rt.store().records("news", None).unwrap_or_default();
    let skipped: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Skipped)
        .map(|r| (r.contact.clone(), r.reason.clone().unwrap_or_default()))
        .collect();
    assert!(
        skipped.contains(&("gone".into(), "suppressed (bounce)".into())),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("out".into(), "opted_out".into())),
        "{skipped:?}"
    );
    assert_eq!(skipped.len(), 2, "{skipped:?}");

    // A delivery that settled a send skipped, then stopped before it journaled it (as a
    // crash there would): the queue's redelivery, later, finds the claim and journals the
    // record, at the first delivery's instant, once however often it comes again.
    let late = send_event("news", email_send("gone", "gone@example.com", "late"));
    let body = late.records[0].body.clone().unwrap_or_default();
    let (scenario, send) =
        relance_core::inbound::decode_send(&body).unwrap_or_else(|e| panic!("{e}"));
    let first = handlers::Deliver::deliver(&senders, &send, &scenario, t0);
    assert!(
        matches!(first, Ok(relance_aws::channels::Outcome::Skipped(_))),
        "{first:?}"
    );
    for minutes in [5, 6] {
        let r = handlers::channel_sender(
            &senders,
            rt.store(),
            &late,
            t0 + chrono::TimeDelta::minutes(minutes),
        );
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    let late: Vec<_> = rt
        .store()
        .records("news", None)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Skipped && r.step.as_deref() == Some("late"))
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].at, t0);
    assert_eq!(late[0].reason.as_deref(), Some("suppressed (bounce)"));
    assert_eq!(meter.total("SESv2", &["SendEmail"]), 0);
}

const CLICKS: &str = r#"
id: aws-welcome
launch: {type: manual}
audience: {all: true}
messages:
  hello: {channel: email, subject: "Welcome", text: "Hello"}
  pricing: {channel: email, subject: "About our prices", text: "Prices"}
  other: {channel: email, subject: "Anything else?", text: "Else"}
  later: {channel: email, subject: "Later", text: "Later"}
steps:
  - {id: welcome, send: hello, next: wait}
  - id: wait
    wait_for: {clicked: welcome, timeout: P1D}
    on_event: which
    on_timeout: late
  - id: which
    if: {clicked: welcome, link: "https://shop.example.com/pricing", ignore_query: true}
    then: prices
    else: else
  - {id: prices, send: pricing, next: done}
  - {id: else, send: other, next: done}
  - {id: late, send: later, next: done}
  - {id: done, end: success}
"#;

/// SES click events (through SNS into SQS) resume the wait, and the condition reads the link
/// with its query string ignored; a replayed event changes nothing.
#[test]
fn ses_engagement_feeds_a_wait_and_a_clicked_condition() {
    if crate::support::offline() {
        return;
    }
    let (config, mut rt) = setup("click");
    let t0 = at("2026-12-01T09:00:00Z");
    start(
        &mut rt,
        CLICKS,
        &[
            json!({"id": "ana", "email": "ana@example.com"}),
            json!({"id": "ben", "email": "ben@example.com"}),
        ],
        t0,
    );
    drain(config.queues.email.as_deref().unwrap_or(""));
    // Ana clicks the pricing link (with tracking parameters), twice delivered; Ben clicks
    // another link.
    let click: SqsEvent = sample("engagement.ses-click.sqs.json");
    let mut other = serde_json::to_value(&click).unwrap_or_default();
    let body = other["Records"][0]["body"]
        .as_str()
        .unwrap_or("")
        .replace("\"ana\"", "\"ben\"")
        .replace(
            "https://shop.example.com/pricing?utm_source=relance",
            "https://shop.example.com/blog",
        );
    other["Records"][0]["body"] = Value::String(body);
    let other: SqsEvent = serde_json::from_value(other).unwrap_or_else(|e| panic!("{e}"));
    let now = at("2026-12-01T10:06:00Z");
    for event in [&click, &click, &other] {
        let r = handlers::engagement(&mut rt, event, now);
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    let sent = drain(config.queues.email.as_deref().unwrap_or(""));
    let mut subjects: Vec<(String, String)> = sent
        .iter()
        .map(|(_, b)| {
            let v: Value = serde_json::from_str(b).unwrap_or_default();
            (
                v["send"]["contact"].as_str().unwrap_or("").to_string(),
                v["send"]["content"]["subject"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            ("ana".to_string(), "About our prices".to_string()),
            ("ben".to_string(), "Anything else?".to_string())
        ]
    );
}

/// SNS SMS delivery status, as CloudWatch Logs delivers it to the engagement function, is
/// matched to its send by message id and recorded as `delivered`.
#[test]
fn sms_delivery_status_comes_back_from_cloudwatch_logs() {
    if crate::support::offline() {
        return;
    }
    let (config, mut rt) = setup("smsdl");
    let t0 = at("2026-12-01T09:00:00Z");
    let yaml = "id: aws-welcome\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  nudge: {channel: sms, text: Hello}\n  thanks: {channel: sms, text: Thanks}\nsteps:\n  - {id: nudge, send: nudge, next: wait}\n  - id: wait\n    wait_for: {delivered: nudge, timeout: P1D}\n    on_event: thanks\n    on_timeout: done\n  - {id: thanks, send: thanks, next: done}\n  - {id: done, end: success}\n";
    start(
        &mut rt,
        yaml,
        &[json!({"id": "ana", "phone": "+33600000001"})],
        t0,
    );
    let emu = emulator();
    let meter = Meter::default();
    let (ses, sns) = metered_clients(&meter, None);
    let senders = senders(&config, ses, sns, SenderConfig::new("news@example.com"));
    let queued = drain(config.queues.sms.as_deref().unwrap_or(""));
    assert_eq!(queued.len(), 1);
    let r = handlers::channel_sender(&senders, rt.store(), &sqs_event(&queued), t0);
    assert!(r.batch_item_failures.is_empty());
    // The message id SNS gave, found through the sms# item the sender wrote.
    let published = emu
        .runtime
        .block_on(
            emu.dynamo
                .scan()
                .table_name(&config.state_table)
                .filter_expression("begins_with(pk, :p)")
                .expression_attribute_values(
                    ":p",
                    aws_sdk_dynamodb::types::AttributeValue::S("sms#".into()),
                )
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let items = published.items.unwrap_or_default();
    assert_eq!(items.len(), 1);
    let id = items[0]["pk"]
        .as_s()
        .map(|s| s.trim_start_matches("sms#").to_string())
        .unwrap_or_default();
    // The sample as the function receives it (gzip, base64): decoded, its unknown message id
    // skipped. Then the same line with the id SNS gave, delivered twice.
    let raw: Value = sample("engagement.sms-delivery.logs.json");
    let answer = handlers::engagement_any(&mut rt, raw, at("2026-12-01T10:01:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, Value::Null);
    let mut logs: LogsEvent = sample("engagement.sms-delivery.logs.json");
    let line = &mut logs.aws_logs.data.log_events[0];
    line.message = line
        .message
        .replace("6bf5b2b0-8f2f-5a55-a1c1-3b3f1d2c4e5f", &id);
    for _ in 0..2 {
        let n = handlers::sms_delivery(&mut rt, &logs, at("2026-12-01T10:01:00Z"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 1);
    }
    let thanks = drain(config.queues.sms.as_deref().unwrap_or(""));
    let records = rt
        .store()
        .records("aws-welcome", Some("ana"))
        .unwrap_or_default();
    assert_eq!(thanks.len(), 1, "{thanks:?} {records:#?}");
    assert!(thanks[0].1.contains("Thanks"));
}

/// The unsubscribe function behind its URL: a GET only shows the form; a forged token is
/// refused without a write; the valid POST unsubscribes and ends the wait on it.
#[test]
fn one_click_unsubscribe_through_the_function_url() {
    if crate::support::offline() {
        return;
    }
    let (config, mut rt) = setup("unsub");
    let t0 = at("2026-12-01T09:00:00Z");
    let yaml = "id: news\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  first: {channel: email, type: newsletter, subject: News, text: x}\n  second: {channel: email, type: newsletter, subject: More, text: y}\nsteps:\n  - {id: first, send: first, next: wait}\n  - id: wait\n    wait_for: {unsubscribed: first, timeout: P2D}\n    on_event: gone\n    on_timeout: second\n  - {id: second, send: second, next: done}\n  - {id: gone, end: abandon}\n  - {id: done, end: success}\n";
    start(
        &mut rt,
        yaml,
        &[
            json!({"id": "ana", "email": "ana@example.com"}),
            json!({"id": "ben", "email": "ben@example.com"}),
        ],
        t0,
    );
    drain(config.queues.email.as_deref().unwrap_or(""));
    let secret = links().secret;
    let token = |contact: &str| unsubscribe_token(&secret, contact);
    let request = unsubscribe_request;
    let now = at("2026-12-01T11:00:00Z");
    let get = handlers::unsubscribe(&mut rt, Some(&secret), &request("GET", &token("ana")), now);
    assert_eq!(get.status_code, 200);
    assert!(
        get.body
            .unwrap_or_default()
            .contains("<form method=\"post\"")
    );
    let (ana_sig, ben_payload) = (token("ana"), token("ben"));
    let forged = format!(
        "{}.{}",
        ben_payload.split('.').next().unwrap_or_default(),
        ana_sig.split('.').nth(1).unwrap_or_default()
    );
    let refused = handlers::unsubscribe(&mut rt, Some(&secret), &request("POST", &forged), now);
    assert_eq!(refused.status_code, 403);
    let unconfigured = handlers::unsubscribe(&mut rt, None, &request("POST", &token("ana")), now);
    assert_eq!(unconfigured.status_code, 404);
    let subscription = |rt: &mut Runtime<DynamoStore>, id: &str| {
        rt.store()
            .contact(id)
            .unwrap_or_default()
            .and_then(|c| c.subscription("newsletter"))
    };
    assert_eq!(
        subscription(&mut rt, "ana"),
        None,
        "a GET or a forged POST wrote nothing"
    );
    assert_eq!(subscription(&mut rt, "ben"), None);
    for _ in 0..2 {
        let done =
            handlers::unsubscribe(&mut rt, Some(&secret), &request("POST", &token("ana")), now);
        assert_eq!(done.status_code, 200, "{:?}", done.body);
    }
    assert_eq!(subscription(&mut rt, "ana"), Some(false));
    assert_eq!(subscription(&mut rt, "ben"), None);
    let records = rt.store().records("news", Some("ana")).unwrap_or_default();
    assert!(
        records
            .iter()
            .any(|r| r.kind == RecordKind::Ended && r.end.as_deref() == Some("abandon")),
        "{records:?}"
    );
}

/// Twenty-four sends, a third of them delivered twice, through three concurrent senders
/// sharing a rate of 4 per second: every send goes out exactly once, never more than 4 in
/// one second, and what waited too long was left to the queue and sent on its redelivery.
#[test]
fn a_rate_limited_burst_sends_everything_once() {
    if crate::support::offline() {
        return;
    }
    let (config, _rt) = setup("rate");
    let emu = emulator();
    let meter = Meter::default();
    let (ses, sns) = metered_clients(&meter, None);
    let mut sender = SenderConfig::new("news@example.com");
    sender.send_rate = Some(4);
    let senders = Arc::new(senders(&config, ses, sns, sender));
    let run = std::process::id();
    let addresses: Vec<String> = (0..24)
        .map(|i| format!("rate{run}-{i}@example.com"))
        .collect();
    let mut messages: Vec<(String, String)> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let body = json!({"kind": "send", "at": "2026-12-01T09:00:00Z", "scenario": "burst",
                "send": email_send(&format!("c{i}"), a, "first")});
            (format!("m{i}"), body.to_string())
        })
        .collect();
    let duplicates: Vec<(String, String)> = messages.iter().step_by(3).cloned().collect();
    messages.extend(duplicates);
    // The queue: three consumers take batches of up to 4; failed messages come back.
    let queue = Arc::new(std::sync::Mutex::new(messages));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let (queue, senders, config) = (queue.clone(), senders.clone(), config.clone());
            let handle = emu.runtime.handle().clone();
            std::thread::spawn(move || {
                let bridge = Bridge::new(handle);
                let mut store = DynamoStore::new(emulator().dynamo.clone(), config, bridge);
                let mut redelivered = 0;
                loop {
                    let batch: Vec<(String, String)> = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        let n = q.len().min(4);
                        q.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        return redelivered;
                    }
                    let r = handlers::channel_sender(
                        senders.as_ref(),
                        &mut store,
                        &sqs_event(&batch),
                        at("2026-12-01T09:00:00Z"),
                    );
                    let failed: Vec<String> = r
                        .batch_item_failures
                        .iter()
                        .map(|f| f.item_identifier.clone())
                        .collect();
                    redelivered += failed.len();
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.extend(batch.into_iter().filter(|(id, _)| failed.contains(id)));
                }
            })
        })
        .collect();
    let redelivered: usize = consumers
        .into_iter()
        .map(|c| c.join().unwrap_or_else(|_| panic!("a consumer panicked")))
        .sum();
    let sent = emulator_read("/_ministack/ses/messages");
    for a in &addresses {
        assert_eq!(emails_to(&sent, a), 1, "{a}");
    }
    // The shared counters: never more than the rate in one second.
    let counters = emu
        .runtime
        .block_on(
            emu.dynamo
                .query()
                .table_name(&config.state_table)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(
                    ":p",
                    aws_sdk_dynamodb::types::AttributeValue::S("rate#email".into()),
                )
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let per_second: Vec<u32> = counters
        .items
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i["sends"].as_n().ok().and_then(|n| n.parse().ok()))
        .collect();
    assert!(per_second.iter().all(|n| *n <= 4), "{per_second:?}");
    assert_eq!(
        per_second.iter().sum::<u32>(),
        32,
        "every delivery, duplicates included, took a slot: {per_second:?}"
    );
    assert!(
        per_second.len() >= 8,
        "32 slots at 4/s span at least 8 seconds: {per_second:?}"
    );
    assert_eq!(meter.total("SESv2", &["SendEmail"]), 24);
    eprintln!(
        "rate-limited burst: {} redelivered, {per_second:?}",
        redelivered
    );
}

/// Web push through the sender with VAPID keys: a push service stub accepts one browser and
/// answers 410 Gone for the other, which is removed from the contact.
#[test]
fn web_push_sends_and_forgets_an_expired_subscription() {
    if crate::support::offline() {
        return;
    }
    use axum::http::StatusCode;
    use relance_aws::webpush::{WebPushConfig, WebPushSender, generate_vapid_keys};
    let (config, mut rt) = setup("webpush");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/push/{id}",
            axum::routing::post(
                move |axum::extract::Path(id): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        let encoding = headers
                            .get("content-encoding")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id.clone(), encoding));
                        if id.starts_with("gone") {
                            // Both pushes of the batch below answered together.
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            StatusCode::GONE
                        } else {
                            StatusCode::CREATED
                        }
                    }
                },
            ),
        )
    };
    let addr = serve(app);
    // RFC 8291's example browser keys: a valid P-256 point and auth secret.
    let keys = json!({"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"});
    let subscriptions = json!([
        {"endpoint": format!("http://{addr}/push/live"), "keys": keys},
        {"endpoint": format!("http://{addr}/push/gone"), "keys": keys}
    ]);
    add_contacts(
        &mut rt,
        &[json!({"id": "ana", "web_push": subscriptions})],
        at("2026-12-01T09:00:00Z"),
    );
    let (private, _public) = generate_vapid_keys();
    let mut vapid = WebPushConfig::new(private, "mailto:ops@example.com");
    // The stub push service is plain http on loopback: the tests' escape hatches.
    vapid.allow_http = true;
    vapid.allow_loopback = true;
    let meter = Meter::default();
    let (ses, sns) = metered_clients(&meter, None);
    let senders = senders(&config, ses, sns, SenderConfig::new("news@example.com"))
        .with_web_push(WebPushSender::new(vapid).unwrap_or_else(|e| panic!("{e}")));
    let event = send_event(
        "aws-welcome",
        json!({"enrollment": "aws-welcome:ana:1", "contact": "ana", "step": "browser", "message": "browser",
            "channel": "web_push", "communication_type": "web_push", "to": {"web_push": subscriptions},
            "content": {"title": "Your cart", "body": "Still thinking?", "url": "https://shop.example.com/cart"},
            "idempotency_key": "aws-welcome:ana:1:browser"}),
    );
    for _ in 0..2 {
        let r = handlers::channel_sender(&senders, rt.store(), &event, at("2026-12-01T09:00:00Z"));
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen.len(),
        2,
        "once per subscription, the duplicate stopped: {seen:?}"
    );
    assert!(seen.iter().all(|(_, enc)| enc == "aes128gcm"), "{seen:?}");
    // Ana's subscriptions as stored.
    let left = |rt: &mut Runtime<DynamoStore>| -> Vec<Value> {
        rt.store()
            .contact("ana")
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("ana is gone"))
            .web_push_subscriptions()
            .into_iter()
            .cloned()
            .collect()
    };
    let endpoints: Vec<String> = left(&mut rt)
        .iter()
        .filter_map(|s| s["endpoint"].as_str().map(str::to_string))
        .collect();
    assert_eq!(endpoints, [format!("http://{addr}/push/live")]);

    // Two pushes to the contact in one batch, delivered at once, each sent to the
    // subscriptions its transition saw and each finding a different one gone: both are
    // removed (each removal is read and written conditionally, and redone on the other's).
    let endpoint = |id: &str| json!({"endpoint": format!("http://{addr}/push/{id}"), "keys": keys});
    add_contacts(
        &mut rt,
        &[
            json!({"id": "ana", "web_push": [endpoint("live"), endpoint("gone-a"), endpoint("gone-b")]}),
        ],
        at("2026-12-01T09:00:00Z"),
    );
    let push = |step: &str, gone: &str| {
        json!({"kind": "send", "at": "2026-12-01T09:00:00Z", "scenario": "aws-welcome", "send": {
            "enrollment": "aws-welcome:ana:1", "contact": "ana", "step": step, "message": "browser",
            "channel": "web_push", "communication_type": "web_push",
            "to": {"web_push": [endpoint("live"), endpoint(gone)]},
            "content": {"title": "Your cart", "body": "Still thinking?"},
            "idempotency_key": format!("aws-welcome:ana:1:{step}")}})
        .to_string()
    };
    let batch = sqs_event(&[
        ("m-a".to_string(), push("first", "gone-a")),
        ("m-b".to_string(), push("second", "gone-b")),
    ]);
    let r = handlers::channel_sender(&senders, rt.store(), &batch, at("2026-12-01T09:00:00Z"));
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(left(&mut rt), [endpoint("live")]);
}

/// A claim an earlier build made under the unsplit `sent` partition still stops a message
/// delivered again to this build's sender, within the window the first claim of this build
/// stores; a new key is claimed in its shard (`sent#{h}`) and stops its own redelivery. On a
/// table with no old claim the window is closed from the start (no read per send).
#[test]
fn a_claim_made_by_an_earlier_build_still_stops_a_redelivered_send() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use relance_aws::keys;
    if crate::support::offline() {
        return;
    }
    let emu = emulator();
    let get = |table: &str, pk: &str, sk: &str| {
        emu.runtime
            .block_on(
                emu.dynamo
                    .get_item()
                    .table_name(table)
                    .key(keys::PK, AttributeValue::S(pk.into()))
                    .key(keys::SK, AttributeValue::S(sk.into()))
                    .consistent_read(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"))
            .item
    };
    let until = |table: &str| {
        get(table, keys::SETTINGS, keys::LEGACY_CLAIMS)
            .and_then(|i| i.get("until").and_then(|v| v.as_n().ok()).cloned())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let t0 = at("2026-12-01T09:00:00Z");
    let (config, mut rt) = setup("oldclaim");
    // The earlier build's claim of ana's first email, as it wrote it.
    emu.runtime
        .block_on(
            emu.dynamo
                .put_item()
                .table_name(&config.state_table)
                .item(keys::PK, AttributeValue::S(keys::LEGACY_SENT.into()))
                .item(keys::SK, AttributeValue::S("news:ana:1:first".into()))
                .item("status", AttributeValue::S("sending".into()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    let meter = Meter::default();
    let (ses, sns) = metered_clients(&meter, None);
    let first = senders(&config, ses, sns, SenderConfig::new("news@example.com"));
    let ana = send_event("news", email_send("ana", "ana@example.com", "first"));
    let bob = send_event("news", email_send("bob", "bob@example.com", "first"));
    for event in [&ana, &bob, &bob, &ana] {
        let r = handlers::channel_sender(&first, rt.store(), event, t0);
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    assert_eq!(
        meter.total("SESv2", &["SendEmail"]),
        1,
        "bob once; ana not at all, the earlier build's claim stands"
    );
    let bob_key = "news:bob:1:first";
    assert!(get(&config.state_table, &keys::sent(bob_key), bob_key).is_some());
    assert!(get(&config.state_table, keys::LEGACY_SENT, bob_key).is_none());
    assert_eq!(
        until(&config.state_table),
        Some((t0 + relance_aws::ledger::LEGACY_CLAIMS_WINDOW).timestamp())
    );
    // Another sender of this build, later in the window, reads the stored window.
    let meter2 = Meter::default();
    let (ses, sns) = metered_clients(&meter2, None);
    let later = senders(&config, ses, sns, SenderConfig::new("news@example.com"));
    let r = handlers::channel_sender(&later, rt.store(), &ana, t0 + chrono::TimeDelta::days(3));
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(meter2.total("SESv2", &["SendEmail"]), 0);

    // A new deployment: nothing under `sent`, so the window closes at the first claim.
    let (fresh, mut rt) = setup("newclaims");
    let meter3 = Meter::default();
    let (ses, sns) = metered_clients(&meter3, None);
    let fresh_senders = senders(&fresh, ses, sns, SenderConfig::new("news@example.com"));
    let r = handlers::channel_sender(&fresh_senders, rt.store(), &bob, t0);
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(meter3.total("SESv2", &["SendEmail"]), 1);
    assert_eq!(until(&fresh.state_table), Some(t0.timestamp()));
}
