//! The sample events of `events/` (offline): each decodes into the Lambda event type its
//! function receives (`aws_lambda_events`), survives decode → encode → decode unchanged, and
//! the input it carries for the handler parses with the decoder the handler uses. A sample
//! added without a case here fails the test.

use aws_lambda_events::event::cloudwatch_logs::{LogData, LogsEvent};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_lambda_events::event::sqs::SqsEvent;
use relance_aws::handlers::detail_type;
use relance_core::engine::Wake;
use relance_core::inbound;
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes a sample as `T`, then checks that encoding and decoding it again gives it back.
fn round_trip<T>(name: &str) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let decoded: T = crate::support::sample(name);
    let encoded = serde_json::to_string(&decoded).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again: T = serde_json::from_str(&encoded).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(again, decoded, "{name} changed through encode → decode");
    decoded
}

/// The bodies of an SQS sample, at least one.
fn bodies(name: &str) -> Vec<String> {
    let event: SqsEvent = round_trip(name);
    let bodies: Vec<String> = event
        .records
        .into_iter()
        .map(|m| {
            m.body
                .unwrap_or_else(|| panic!("{name}: a record without a body"))
        })
        .collect();
    assert!(!bodies.is_empty(), "{name}: no records");
    bodies
}

/// A trigger sample: its detail decodes as its detail-type says.
fn trigger(name: &str) {
    let event: EventBridgeEvent<Value> = round_trip(name);
    let detail = &event.detail;
    let parsed = match event.detail_type.as_str() {
        detail_type::CONTACT => inbound::decode::<ContactDetail>(detail).map(|_| ()),
        detail_type::ACTIVITY => inbound::decode::<ActivityDetail>(detail).map(|_| ()),
        detail_type::ENGAGEMENT => inbound::decode::<EngagementDetail>(detail).map(|_| ()),
        detail_type::LAUNCH => inbound::decode::<LaunchDetail>(detail).map(|_| ()),
        other => panic!("{name}: the trigger takes no detail-type {other:?}"),
    };
    parsed.unwrap_or_else(|e| panic!("{name}: {}", e.0));
    assert!(
        event.time.is_some(),
        "{name}: the trigger's `now` is the event's time"
    );
}

#[test]
fn every_sample_event_decodes_round_trips_and_carries_a_handler_input() {
    let mut covered = Vec::new();
    let mut case = |name: &'static str, check: &dyn Fn(&str)| {
        check(name);
        covered.push(name.to_string());
    };
    for sender in [
        "email-sender.sqs.json",
        "sms-sender.sqs.json",
        "push-sender.sqs.json",
        "web-push-sender.sqs.json",
    ] {
        case(sender, &|name| {
            for body in bodies(name) {
                let (scenario, send) = inbound::decode_send(&body)
                    .unwrap_or_else(|e| panic!("{name}: not a send: {}", e.0));
                assert!(
                    !scenario.is_empty() && !send.idempotency_key.is_empty(),
                    "{name}"
                );
            }
        });
    }
    for ses in [
        "engagement.ses-open.sqs.json",
        "engagement.ses-click.sqs.json",
    ] {
        case(ses, &|name| {
            for body in bodies(name) {
                let detail = inbound::ses_engagement(&body)
                    .unwrap_or_else(|e| panic!("{name}: {}", e.0))
                    .unwrap_or_else(|| panic!("{name}: no engagement read from {body}"));
                assert!(!detail.contact.is_empty(), "{name}");
            }
        });
    }
    case("engagement.sms-delivery.logs.json", &|name| {
        // `AwsLogs` encodes its base64 without padding and decodes only padded text
        // (aws_lambda_events 1.2.1), so the whole event cannot round-trip through the crate's
        // own encoder: the decoded log data, what the handler reads, must.
        let logs: LogsEvent = crate::support::sample(name);
        let data = &logs.aws_logs.data;
        let encoded = serde_json::to_string(data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again: LogData =
            serde_json::from_str(&encoded).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&again, data, "{name} changed through encode → decode");
        let lines = &data.log_events;
        assert!(!lines.is_empty(), "{name}: no log lines");
        for line in lines {
            inbound::sms_delivery_status(&line.message)
                .unwrap_or_else(|e| panic!("{name}: {}", e.0))
                .unwrap_or_else(|| panic!("{name}: no delivery status in {}", line.message));
        }
    });
    case("webhook-sender.sqs.json", &|name| {
        // A webhook call as queued, a retry's copy, and an invoke with its contact.
        let messages: Vec<relance_aws::callout::CallMessage> = bodies(name)
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        let actions: Vec<&str> = messages.iter().map(|m| m.action()).collect();
        assert_eq!(actions, ["webhook", "webhook", "invoke"], "{name}");
        assert_eq!(messages[1].attempts, 1, "{name}: the retry's copy");
        assert!(messages[1].not_before.is_some() && messages[1].first_at.is_some());
        let event = messages[2]
            .invoke_event()
            .unwrap_or_else(|| panic!("{name}: no invoke event"));
        assert_eq!(event["idempotency_key"], "crm-sync:ana:1:sync", "{name}");
        assert_eq!(event["contact"]["email"], "ana@example.com", "{name}");
    });
    case("step-executor.sqs.json", &|name| {
        // The batch carries a timer and, on purpose, a poisoned message (the partial batch
        // failure case): the timer parses, the poison does not.
        let (timers, poison): (Vec<String>, Vec<String>) = bodies(name)
            .into_iter()
            .partition(|body| serde_json::from_str::<Wake>(body).is_ok());
        assert!(!timers.is_empty(), "{name}: no timer");
        assert_eq!(poison, ["this is not a timer"], "{name}");
    });
    case("launch.sqs.json", &|name| {
        for body in bodies(name) {
            let page: LaunchDetail =
                wire::decode(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                page.contacts.is_some(),
                "{name}: a launch page lists its contacts"
            );
        }
    });
    case("tick.scheduled.json", &|name| {
        let event: EventBridgeEvent<Value> = round_trip(name);
        assert!(
            event.time.is_some(),
            "{name}: the tick's `now` is the event's time"
        );
    });
    for name in [
        "trigger.contact.json",
        "trigger.activity.json",
        "trigger.engagement.json",
        "trigger.launch.json",
    ] {
        case(name, &trigger);
    }
    case("unsubscribe.url-post.json", &|name| {
        let request: LambdaFunctionUrlRequest = round_trip(name);
        assert_eq!(
            request.request_context.http.method.as_deref(),
            Some("POST"),
            "{name}"
        );
        assert!(
            request.query_string_parameters.contains_key("token"),
            "{name}: the handler reads the token from the query string"
        );
    });
    let mut on_disk: Vec<String> = std::fs::read_dir(crate::support::events_dir())
        .unwrap_or_else(|e| panic!("events/: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    on_disk.sort();
    covered.sort();
    assert_eq!(covered, on_disk, "every sample in events/ has a case here");
}
