//! The SMTP backend against a real SMTP server (aiosmtpd, tests/smtp/server.py): STARTTLS and
//! implicit TLS with AUTH, every header of the message received as sent, and each kind of
//! answer classed as the delivery worker needs it (4xx and bad credentials transient, a
//! refused address a hard bounce, a policy refusal permanent but not a bounce).

#[path = "../../../../tests/smtp/server.rs"]
pub(crate) mod smtp_server;

use relance_core::delivery::{Backend, DeliveryError, Outgoing};
use relance_core::engine::{Recipient, Send};
use relance_core::render::Rendered;
use relance_core::scenario::Channel;
use relance_embedded::smtp::{SmtpBackend, SmtpSecurity, SmtpSettings};
use smtp_server::{Options, Protection, SmtpServer};

const FROM: &str = "Shop <news@shop.example>";
const AUTH: &str = "relance:s:cret";

fn outgoing(to: &str, key: &str) -> Outgoing {
    Outgoing {
        scenario: "welcome".to_string(),
        send: Send {
            enrollment: "enr-1".to_string(),
            contact: "c1".to_string(),
            step: "hello".to_string(),
            message: "hello".to_string(),
            channel: Channel::Email,
            communication_type: "marketing".to_string(),
            to: Recipient::Email(to.to_string()),
            content: Rendered {
                subject: Some("Bienvenue, Zoé".to_string()),
                html: Some("<p>Bonjour Zoé</p>".to_string()),
                text: Some("Bonjour Zoé".to_string()),
                reply_to: Some("help@shop.example".to_string()),
                ..Rendered::default()
            },
            idempotency_key: key.to_string(),
        },
        headers: vec![
            (
                "List-Unsubscribe".to_string(),
                "<https://shop.example/u/abc?s=welcome>".to_string(),
            ),
            (
                "List-Unsubscribe-Post".to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ),
        ],
        message_id: relance_core::delivery::message_id(key, "shop.example"),
    }
}

/// A backend for `server`, logging in with `password` (percent-encoded in the URL).
pub(crate) fn backend(server: &SmtpServer, tls: Protection, password: &str) -> SmtpBackend {
    let url = match tls {
        Protection::StartTls => format!("smtp://relance:{password}@127.0.0.1:{}", server.port),
        Protection::Implicit => format!("smtps://relance:{password}@127.0.0.1:{}", server.port),
        Protection::None => format!("smtp://127.0.0.1:{}?tls=none", server.port),
    };
    let mut settings = SmtpSettings::parse(&url, FROM).expect("valid settings");
    settings.ca_file = server.ca.clone();
    SmtpBackend::new(settings).expect("a backend")
}

fn with_auth(tls: Protection) -> Options {
    Options {
        auth: Some(AUTH.to_string()),
        ..Options::new(tls)
    }
}

#[tokio::test]
async fn starttls_with_auth_delivers_every_header_and_both_parts() {
    let Some(server) = SmtpServer::start(&with_auth(Protection::StartTls)) else {
        return;
    };
    let smtp = backend(&server, Protection::StartTls, "s%3Acret");
    assert_eq!(smtp.settings().security, SmtpSecurity::StartTls);
    let message = outgoing("zoe@example.net", "enr-1:hello");
    let id = smtp.deliver(&message).await.expect("delivered");
    assert_eq!(id, message.message_id);

    let received = server.messages();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.mail_from, "news@shop.example");
    assert_eq!(m.rcpt_tos, ["zoe@example.net"]);
    assert_eq!(m.header("Message-ID"), Some(message.message_id.as_str()));
    assert_eq!(m.header("Subject"), Some("Bienvenue, Zoé"));
    assert_eq!(m.header("From"), Some(FROM));
    assert_eq!(m.header("To"), Some("zoe@example.net"));
    assert_eq!(m.header("Reply-To"), Some("help@shop.example"));
    assert_eq!(
        m.header("List-Unsubscribe"),
        Some("<https://shop.example/u/abc?s=welcome>")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(m.header("Date").is_some_and(|d| !d.is_empty()));
    assert_eq!(m.count("Message-ID"), 1);
    assert!(
        m.header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")),
        "{:?}",
        m.header("Content-Type")
    );
    assert_eq!(m.part("text/plain").map(str::trim_end), Some("Bonjour Zoé"));
    assert_eq!(
        m.part("text/html").map(str::trim_end),
        Some("<p>Bonjour Zoé</p>")
    );
}

#[tokio::test]
async fn implicit_tls_with_auth_delivers() {
    let Some(server) = SmtpServer::start(&with_auth(Protection::Implicit)) else {
        return;
    };
    let smtp = backend(&server, Protection::Implicit, "s%3Acret");
    assert_eq!(smtp.settings().security, SmtpSecurity::ImplicitTls);
    let message = outgoing("zoe@example.net", "enr-2:hello");
    smtp.deliver(&message).await.expect("delivered");
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("Message-ID"),
        Some(message.message_id.as_str())
    );
}

#[tokio::test]
async fn cleartext_to_loopback_delivers_the_html_alone_as_one_part() {
    let Some(server) = SmtpServer::start(&Options::new(Protection::None)) else {
        return;
    };
    let smtp = backend(&server, Protection::None, "");
    let mut message = outgoing("zoe@example.net", "enr-3:hello");
    message.send.content.text = None;
    smtp.deliver(&message).await.expect("delivered");
    let received = server.messages();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert!(
        m.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        m.header("Content-Type")
    );
    assert_eq!(m.parts.len(), 1);
}

#[tokio::test]
async fn a_wrong_password_is_transient_with_the_535_reply() {
    let Some(server) = SmtpServer::start(&with_auth(Protection::StartTls)) else {
        return;
    };
    let smtp = backend(&server, Protection::StartTls, "wrong");
    match smtp
        .deliver(&outgoing("zoe@example.net", "enr-4:hello"))
        .await
    {
        Err(DeliveryError::Transient(reason)) => {
            assert!(reason.contains("535"), "{reason}");
            assert!(reason.contains("credentials"), "{reason}");
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(server.messages().len(), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_is_transient() {
    for (tls, scheme) in [
        (Protection::StartTls, "smtp"),
        (Protection::Implicit, "smtps"),
    ] {
        let Some(server) = SmtpServer::start(&with_auth(tls)) else {
            return;
        };
        let url = format!("{scheme}://relance:s%3Acret@127.0.0.1:{}", server.port);
        // No RELANCE_SMTP_CA_FILE: the throwaway CA is not among the system's roots.
        let smtp = SmtpBackend::new(SmtpSettings::parse(&url, FROM).expect("valid")).expect("ok");
        match smtp
            .deliver(&outgoing("zoe@example.net", "enr-5:hello"))
            .await
        {
            Err(DeliveryError::Transient(reason)) => {
                assert!(reason.contains("certificate"), "{scheme}: {reason}")
            }
            other => panic!("{scheme}: expected a transient failure, got {other:?}"),
        }
        assert_eq!(server.messages().len(), 0);
    }
}

#[tokio::test]
async fn a_451_is_transient_then_the_retry_is_delivered_once() {
    let options = Options {
        transient_once: true,
        ..with_auth(Protection::StartTls)
    };
    let Some(server) = SmtpServer::start(&options) else {
        return;
    };
    let smtp = backend(&server, Protection::StartTls, "s%3Acret");
    let message = outgoing("zoe@example.net", "enr-6:hello");
    match smtp.deliver(&message).await {
        Err(DeliveryError::Transient(reason)) => {
            assert!(reason.contains("451 4.3.0 try again"), "{reason}");
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(server.messages().len(), 0);
    let id = smtp.deliver(&message).await.expect("the retry is taken");
    assert_eq!(id, message.message_id);
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("Message-ID"),
        Some(message.message_id.as_str())
    );
}

#[tokio::test]
async fn a_rejected_recipient_is_a_hard_bounce_and_the_pool_goes_on() {
    let options = Options {
        reject: vec!["gone@example.net".to_string()],
        ..with_auth(Protection::StartTls)
    };
    let Some(server) = SmtpServer::start(&options) else {
        return;
    };
    let smtp = backend(&server, Protection::StartTls, "s%3Acret");
    match smtp
        .deliver(&outgoing("gone@example.net", "enr-7:hello"))
        .await
    {
        Err(DeliveryError::Permanent {
            reason,
            hard_bounce: true,
        }) => assert!(reason.contains("550 5.1.1 no such user"), "{reason}"),
        other => panic!("expected a hard bounce, got {other:?}"),
    }
    // The refused transaction does not spoil the pooled connection for the next message.
    smtp.deliver(&outgoing("zoe@example.net", "enr-8:hello"))
        .await
        .expect("the next message is delivered");
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_tos, ["zoe@example.net"]);
}

#[tokio::test]
async fn a_policy_refusal_is_permanent_but_not_a_bounce() {
    let options = Options {
        policy_reject: true,
        ..with_auth(Protection::StartTls)
    };
    let Some(server) = SmtpServer::start(&options) else {
        return;
    };
    let smtp = backend(&server, Protection::StartTls, "s%3Acret");
    match smtp
        .deliver(&outgoing("zoe@example.net", "enr-9:hello"))
        .await
    {
        Err(DeliveryError::Permanent {
            reason,
            hard_bounce: false,
        }) => assert!(reason.contains("554 5.7.1"), "{reason}"),
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
    assert_eq!(server.messages().len(), 0);
}

#[test]
fn cleartext_to_a_remote_host_is_refused_at_configuration() {
    let error =
        SmtpSettings::parse("smtp://u:p@mail.example.com:25?tls=none", FROM).expect_err("refused");
    let text = error.to_string();
    assert!(text.starts_with("RELANCE_SMTP_URL"), "{text}");
    assert!(text.contains("loopback"), "{text}");
    let error = SmtpSettings::from_lookup(|var| match var {
        "RELANCE_SMTP_URL" => Some("smtp://192.0.2.7?tls=none".to_string()),
        "RELANCE_FROM_EMAIL" => Some(FROM.to_string()),
        _ => None,
    })
    .expect_err("refused");
    assert!(error.to_string().contains("192.0.2.7"), "{error}");
}
