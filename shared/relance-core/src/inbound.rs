//! What the functions receive, decoded: the detail of an EventBridge event, a channel queue's
//! send message, SES feedback (raw, inside an SNS notification or an EventBridge event) and
//! SNS SMS delivery-status log lines. Pure functions over text, so the fuzzer and the tests
//! reach them without the AWS SDK; a refusal says what is wrong, never panics.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::contact::EngagementKind;
use crate::engine::Send;
use crate::wire::{self, EngagementDetail};

/// Why an input does not decode (permanent: retrying will not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// An EventBridge event's `detail` as one of the wire types.
pub fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, DecodeError> {
    let bytes = serde_json::to_vec(v).map_err(|e| DecodeError(e.to_string()))?;
    wire::decode(&bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Reads a queue message's send: `(scenario, send)`.
pub fn decode_send(body: &str) -> Result<(String, Send), DecodeError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| DecodeError(format!("send message: {e}")))?;
    let scenario = v["scenario"].as_str().unwrap_or("").to_string();
    let send: Send = serde_json::from_value(v["send"].clone())
        .map_err(|e| DecodeError(format!("send message: {e}")))?;
    Ok((scenario, send))
}

/// Reads an SES event (raw, or inside an SNS notification) as engagement with a send.
/// `None` for events that are not engagement (send, reject, delivery delay, ...).
pub fn ses_engagement(body: &str) -> Result<Option<EngagementDetail>, DecodeError> {
    let mut v: Value =
        serde_json::from_str(body).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
    if v["Type"] == "Notification" {
        let inner = v["Message"].as_str().unwrap_or("");
        v = serde_json::from_str(inner)
            .map_err(|e| DecodeError(format!("SNS message is not JSON: {e}")))?;
    }
    // EventBridge wraps the SES event in `detail`.
    if v.get("detail").is_some_and(Value::is_object) && v.get("mail").is_none() {
        v = v["detail"].take();
    }
    let kind_name = v["eventType"]
        .as_str()
        .or(v["notificationType"].as_str())
        .unwrap_or("");
    let (kind, section) = match kind_name {
        "Delivery" => (EngagementKind::Delivered, "delivery"),
        "Open" => (EngagementKind::Opened, "open"),
        "Click" => (EngagementKind::Clicked, "click"),
        "Bounce" => (EngagementKind::Bounced, "bounce"),
        "Complaint" => (EngagementKind::Complained, "complaint"),
        "Subscription" => (EngagementKind::Unsubscribed, "subscription"),
        _ => return Ok(None),
    };
    let tag = |name: &str| v["mail"]["tags"][name][0].as_str().map(str::to_string);
    let (Some(contact), Some(scenario), Some(step)) = (
        tag("relance_contact"),
        tag("relance_scenario"),
        tag("relance_step"),
    ) else {
        return Err(DecodeError(
            "an SES event without the relance_contact, relance_scenario and relance_step tags"
                .into(),
        ));
    };
    let at = v[section]["timestamp"]
        .as_str()
        .or(v["mail"]["timestamp"].as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    if let Some(t) = at {
        crate::instant::check(t).map_err(|e| DecodeError(format!("SES event timestamp: {e}")))?;
    }
    let mut link_tags: Vec<String> = v["click"]["linkTags"]
        .as_object()
        .map(|m| {
            m.iter()
                .flat_map(|(k, vals)| {
                    vals.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |x| format!("{k}:{x}"))
                        .chain([k.clone()])
                })
                .collect()
        })
        .unwrap_or_default();
    // A soft bounce (mailbox full, ...) is recorded but does not suppress the address.
    if kind == EngagementKind::Bounced && v["bounce"]["bounceType"] == "Transient" {
        link_tags.push(crate::engine::SOFT_BOUNCE.to_string());
    }
    Ok(Some(EngagementDetail {
        idempotency_key: None,
        contact,
        scenario,
        step,
        kind,
        url: v["click"]["link"].as_str().map(str::to_string),
        link_tags,
        at,
    }))
}

/// Reads one SNS SMS delivery-status log line (`DirectPublishToPhoneNumber` and its
/// `/Failure` group): `(message id, engagement kind, link tags)`. A success is `delivered`; a
/// failure is a bounce, soft unless the carrier says the number is unknown or unreachable for
/// good; an opted-out number is `unsubscribed`.
pub fn sms_delivery_status(
    line: &str,
) -> Result<Option<(String, EngagementKind, Vec<String>)>, DecodeError> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| DecodeError(format!("SMS delivery log line is not JSON: {e}")))?;
    let Some(id) = v["notification"]["messageId"].as_str() else {
        return Ok(None);
    };
    let response = v["delivery"]["providerResponse"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    let (kind, tags) = match v["status"].as_str() {
        Some("SUCCESS") => (EngagementKind::Delivered, vec![]),
        Some("FAILURE") if response.contains("opted out") => (EngagementKind::Unsubscribed, vec![]),
        Some("FAILURE")
            if ["invalid", "unknown", "not a valid", "blocked as spam"]
                .iter()
                .any(|w| response.contains(w)) =>
        {
            (EngagementKind::Bounced, vec![])
        }
        Some("FAILURE") => (
            EngagementKind::Bounced,
            vec![crate::engine::SOFT_BOUNCE.to_string()],
        ),
        _ => return Ok(None),
    };
    Ok(Some((id.to_string(), kind, tags)))
}
