//! The functions' senders as `relance run`'s delivery backends, on the emulator: an SMS through
//! `SnsBackend` and an email through `SesBackend` arrive once each with their content; a
//! malformed number is refused for good (not a bounce); an address on the SES account
//! suppression list is a hard bounce.

use relance_aws::bridge::Bridge;
use relance_aws::channels::direct::{SesBackend, SnsBackend};
use relance_aws::channels::{SenderConfig, SesSender};
use relance_core::delivery::{Backend, DeliveryError, Outgoing};
use relance_core::engine::{Recipient, Send};
use relance_core::render::Rendered;
use relance_core::scenario::Channel;

use crate::support::{emails_to, emulator, emulator_read, offline, sms_to, verify_identity};

fn outgoing(channel: Channel, to: Recipient, key: &str, content: Rendered) -> Outgoing {
    Outgoing {
        scenario: "direct".into(),
        send: Send {
            enrollment: format!("direct:{key}:1"),
            contact: key.to_string(),
            step: "hello".into(),
            message: "hello".into(),
            channel,
            communication_type: channel.as_str().to_string(),
            to,
            content,
            idempotency_key: format!("direct:{key}:1:hello"),
        },
        headers: Vec::new(),
        message_id: relance_core::delivery::message_id(key, "shop.example"),
    }
}

#[test]
fn the_senders_deliver_for_relance_run() {
    if offline() {
        return;
    }
    let emu = emulator();
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let config = SenderConfig::new("news@direct.example");
    verify_identity("news@direct.example");

    // SMS through SNS: once, with its text.
    let sns = SnsBackend::new(emu.sns.clone(), &config, bridge.clone());
    assert_eq!(sns.name(), "sns");
    let number = "+33611112222";
    let before = sms_to(&emulator_read("/_ministack/sns/sms-messages"), number);
    let sms = outgoing(
        Channel::Sms,
        Recipient::Phone(number.into()),
        "sms1",
        Rendered {
            text: Some("See you Saturday".into()),
            ..Rendered::default()
        },
    );
    let id = emu
        .runtime
        .block_on(sns.deliver(&sms))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!id.is_empty(), "SNS gives a message id");
    let after = emulator_read("/_ministack/sns/sms-messages");
    assert_eq!(sms_to(&after, number) - before, 1);
    assert!(after.to_string().contains("See you Saturday"));

    // A number that is not E.164 is refused for good, and it is not a bounce.
    let bad = outgoing(
        Channel::Sms,
        Recipient::Phone("0611".into()),
        "sms2",
        Rendered {
            text: Some("x".into()),
            ..Rendered::default()
        },
    );
    match emu.runtime.block_on(sns.deliver(&bad)) {
        Err(DeliveryError::Permanent { hard_bounce, .. }) => assert!(!hard_bounce),
        other => panic!("a permanent failure, got {other:?}"),
    }

    // Email through SESv2: once.
    let ses = SesBackend::new(
        SesSender::new(emu.ses.clone(), config.clone(), bridge),
        &config,
    );
    assert_eq!(ses.name(), "ses");
    let address = "reader@direct.example";
    let before = emails_to(&emulator_read("/_ministack/ses/messages"), address);
    let email = outgoing(
        Channel::Email,
        Recipient::Email(address.into()),
        "mail1",
        Rendered {
            subject: Some("Direct hello".into()),
            html: Some("<p>Hello</p>".into()),
            text: Some("Hello".into()),
            ..Rendered::default()
        },
    );
    emu.runtime
        .block_on(ses.deliver(&email))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        emails_to(&emulator_read("/_ministack/ses/messages"), address) - before,
        1
    );

    // An address on the SES account suppression list is a hard bounce, and nothing is sent.
    let gone = "gone@direct.example";
    let put = emu.runtime.block_on(
        emu.ses
            .put_suppressed_destination()
            .email_address(gone)
            .reason(aws_sdk_sesv2::types::SuppressionListReason::Bounce)
            .send(),
    );
    if put.is_ok() {
        let suppressed = outgoing(
            Channel::Email,
            Recipient::Email(gone.into()),
            "mail2",
            Rendered {
                subject: Some("x".into()),
                text: Some("x".into()),
                ..Rendered::default()
            },
        );
        match emu.runtime.block_on(ses.deliver(&suppressed)) {
            Err(DeliveryError::Permanent { hard_bounce, .. }) => assert!(hard_bounce),
            other => panic!("a hard bounce, got {other:?}"),
        }
        assert_eq!(
            emails_to(&emulator_read("/_ministack/ses/messages"), gone),
            0
        );
    }
}
