//! SMS through SNS: `Publish` to a phone number with the SMS type, sender id and origination
//! number, and the SNS opt-out list.

use std::collections::HashMap;

use aws_sdk_sns::types::MessageAttributeValue;
use relance_core::engine::Send;

use super::{SendError, SenderConfig, sns_error, unsupported};
use crate::bridge::Bridge;

/// The SNS SMS sender.
#[derive(Debug, Clone)]
pub struct SmsSender {
    sns: aws_sdk_sns::Client,
    config: SenderConfig,
    bridge: Bridge,
}

impl SmsSender {
    /// SMS through `sns` with these settings.
    pub fn new(sns: aws_sdk_sns::Client, config: SenderConfig, bridge: Bridge) -> SmsSender {
        SmsSender {
            sns,
            config,
            bridge,
        }
    }

    /// Whether the SNS opt-out list stops `number` (`opted_out`). An emulator that lacks the
    /// call is logged and passed (SNS enforces its list anyway); other errors retry later.
    pub fn opted_out(&self, number: &str) -> Result<Option<String>, SendError> {
        let r = self.bridge.block(
            self.sns
                .check_if_phone_number_is_opted_out()
                .phone_number(number)
                .send(),
        );
        match r {
            Ok(out) if out.is_opted_out => Ok(Some("opted_out".into())),
            Ok(_) => Ok(None),
            Err(e)
                if unsupported(e.raw_response().map(|r| r.status().as_u16()))
                    || e.as_service_error()
                        .and_then(|s| aws_sdk_sns::error::ProvideErrorMetadata::code(s))
                        .is_some_and(|c| c == "InvalidAction") =>
            {
                tracing::warn!(
                    "CheckIfPhoneNumberIsOptedOut is not available here; SNS enforces its opt-out list itself"
                );
                Ok(None)
            }
            Err(e) => Err(SendError::Transient(format!("opt-out list: {e:?}"))),
        }
    }

    /// Sends one SMS to `number` (E.164); the provider's message id.
    pub fn send(&self, send: &Send, number: &str) -> Result<String, SendError> {
        let valid = number.starts_with('+')
            && number.len() > 8
            && number.len() <= 16
            && number[1..].bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(SendError::Permanent(format!(
                "\"{number}\" is not an E.164 phone number"
            )));
        }
        let text = send
            .content
            .text
            .clone()
            .or(send.content.body.clone())
            .unwrap_or_default();
        let sms_type = match send.content.sms_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("promotional") => "Promotional",
            Some(t) if t.eq_ignore_ascii_case("transactional") => "Transactional",
            _ => self.config.default_sms_type.as_str(),
        };
        let attributes = [
            ("AWS.SNS.SMS.SMSType", Some(sms_type)),
            ("AWS.SNS.SMS.SenderID", self.config.sms_sender_id.as_deref()),
            (
                "AWS.MM.SMS.OriginationNumber",
                self.config.sms_origination_number.as_deref(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name.to_string(), v))
                .map_err(|e| SendError::Permanent(e.to_string()))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
        let out = self
            .bridge
            .block(
                self.sns
                    .publish()
                    .phone_number(number)
                    .message(text)
                    .set_message_attributes(Some(attributes))
                    .send(),
            )
            .map_err(|e| sns_error(&e))?;
        Ok(out.message_id.unwrap_or_default())
    }
}
