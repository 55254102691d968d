//! Fuzz: the Lambda functions' event decoders. The payloads as the functions receive them
//! (an EventBridge event for trigger and tick, an SQS batch for the step executor, launch
//! pages, the senders and SES feedback, CloudWatch Logs for SMS delivery status, a function
//! URL request for unsubscribe), then each body, detail, log line or token through its
//! function's decoder: trigger's details (contact, activity, engagement, launch), the step
//! executor's timer, launch pages, the senders' send message, SES feedback raw, inside an
//! SNS notification or an EventBridge event, SMS delivery-status lines, unsubscribe tokens.
//! The decoders are `relance_core::inbound`, which the functions call.
//!
//! Properties: what a decoder accepts, the runtime accepts (the engagement read from SES,
//! timers and launch pages come back unchanged through their wire form); a token signs and
//! verifies back to its claim, and fails with another secret; the unsubscribe page escapes
//! whatever text it shows.
#![no_main]

use aws_lambda_events::event::cloudwatch_logs::LogsEvent;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_lambda_events::event::sqs::SqsEvent;
use libfuzzer_sys::fuzz_target;
use relance_core::engine::Wake;
use relance_core::unsubscribe::{self, UnsubscribeClaim};
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use serde_json::Value;

/// The functions' decoders (`relance_aws` calls the same ones).
use relance_core::inbound as aws;

const SECRET: &[u8] = b"fuzz-unsubscribe-secret";

/// Serializes a decoded value and decodes it again: the same value.
fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(value).expect("a decoded value serializes");
    match wire::decode::<T>(&bytes) {
        Ok(again) => assert_eq!(&again, value, "changed through its wire form"),
        Err(e) => panic!("{value:?} does not decode from its own wire form: {e}"),
    }
}

/// trigger: the `detail` of an EventBridge event, as each detail type.
fn detail(detail: &Value) {
    let _ = aws::decode::<ContactDetail>(detail);
    let _ = aws::decode::<ActivityDetail>(detail);
    if let Ok(d) = aws::decode::<EngagementDetail>(detail) {
        round_trip(&d);
    }
    if let Ok(d) = aws::decode::<LaunchDetail>(detail) {
        round_trip(&d);
    }
}

/// The SQS functions: one message body through each decoder.
fn body(body: &str) {
    // step executor
    if let Ok(wake) = serde_json::from_str::<Wake>(body) {
        round_trip(&wake);
    }
    // launch pages
    if let Ok(page) = wire::decode::<LaunchDetail>(body.as_bytes()) {
        round_trip(&page);
    }
    // email, sms, push and web push senders
    if let Ok((_, send)) = aws::decode_send(body) {
        let _ = serde_json::to_vec(&send).expect("a decoded send serializes");
    }
    // engagement: what it reads from SES goes to the runtime as a wire detail
    if let Ok(Some(detail)) = aws::ses_engagement(body) {
        round_trip(&detail);
    }
}

/// engagement, CloudWatch Logs side: one SMS delivery-status line.
fn log_line(line: &str) {
    let _ = aws::sms_delivery_status(line);
}

/// unsubscribe: a token as the function URL's query gives it, and the page shown.
fn token(token: Option<&str>) {
    let page = match unsubscribe::check_request(token, Some(SECRET)) {
        Ok(claim) => unsubscribe::page_html(&unsubscribe::confirm_text(&claim), token),
        Err((_, why)) => unsubscribe::page_html(why, None),
    };
    let _ = page;
}

/// The page escapes its text and token: no markup of theirs.
fn page_escapes(text: &str) {
    let tags = |s: &str| s.matches('<').count();
    assert_eq!(
        tags(&unsubscribe::page_html(text, Some(text))),
        tags(&unsubscribe::page_html("", Some(""))),
        "markup from the text in the page"
    );
}

/// Any claim signs, verifies back to itself, and fails with another secret.
fn claim_round_trip(text: &str) {
    let mut parts = text.splitn(4, '\n');
    let mut next = || parts.next().unwrap_or("").to_string();
    let claim = UnsubscribeClaim {
        contact: next(),
        communication_type: next(),
        scenario: next(),
        step: next(),
    };
    let signed = claim.sign(SECRET).expect("a claim signs");
    assert_eq!(
        UnsubscribeClaim::verify(&signed, SECRET).ok().as_ref(),
        Some(&claim),
        "a signed claim does not verify"
    );
    assert!(
        UnsubscribeClaim::verify(&signed, b"another secret").is_err(),
        "a token verifies with another secret"
    );
}

fuzz_target!(|data: &[u8]| {
    // The payloads.
    if let Ok(event) = serde_json::from_slice::<EventBridgeEvent<Value>>(data) {
        detail(&event.detail);
    }
    if let Ok(batch) = serde_json::from_slice::<SqsEvent>(data) {
        for message in &batch.records {
            if let Some(b) = message.body.as_deref() {
                body(b);
            }
        }
    }
    if let Ok(logs) = serde_json::from_slice::<LogsEvent>(data) {
        for entry in &logs.aws_logs.data.log_events {
            log_line(&entry.message);
        }
    }
    if let Ok(request) = serde_json::from_slice::<LambdaFunctionUrlRequest>(data) {
        token(
            request
                .query_string_parameters
                .get("token")
                .map(String::as_str),
        );
    }
    // The same decoders on the bytes themselves (mutations rarely keep a whole envelope).
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        detail(&v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        body(text);
        log_line(text);
        token(Some(text));
        page_escapes(text);
        claim_round_trip(text);
    }
});
