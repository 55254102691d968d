//! Mobile push through SNS platform endpoints (Android FCM, Apple APNs): one JSON message
//! structure carrying each platform's payload.

use relance_core::engine::Send;
use serde_json::{Value, json};

use super::{SendError, sns_error};
use crate::bridge::Bridge;

/// The SNS push sender.
#[derive(Debug, Clone)]
pub struct PushSender {
    sns: aws_sdk_sns::Client,
    bridge: Bridge,
}

/// The Android (FCM) and Apple (APNs) payloads of a push, as SNS's JSON message structure.
pub fn push_payload(send: &Send) -> Value {
    let title = send.content.title.clone().unwrap_or_default();
    let body = send.content.body.clone().unwrap_or_default();
    let data = json!({"relance_contact": send.contact, "relance_step": send.step, "relance_key": send.idempotency_key});
    let gcm = json!({"notification": {"title": title, "body": body}, "data": data});
    let apns = json!({"aps": {"alert": {"title": title, "body": body}, "sound": "default"}, "relance": data});
    json!({"default": body, "GCM": gcm.to_string(), "APNS": apns.to_string(), "APNS_SANDBOX": apns.to_string()})
}

impl PushSender {
    /// Push through `sns`.
    pub fn new(sns: aws_sdk_sns::Client, bridge: Bridge) -> PushSender {
        PushSender { sns, bridge }
    }

    /// Publishes one push to each of the contact's endpoints; their message ids, joined.
    pub fn send(&self, send: &Send, endpoints: &[(String, String)]) -> Result<String, SendError> {
        let payload = push_payload(send).to_string();
        let mut ids = Vec::new();
        for (_, arn) in endpoints {
            let out = self
                .bridge
                .block(
                    self.sns
                        .publish()
                        .target_arn(arn)
                        .message_structure("json")
                        .message(&payload)
                        .send(),
                )
                .map_err(|e| sns_error(&e))?;
            ids.push(out.message_id.unwrap_or_default());
        }
        Ok(ids.join(","))
    }
}
