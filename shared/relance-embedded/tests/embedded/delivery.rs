//! The delivery worker on the SQLite store, over scripted backends and a manual clock: a
//! contact's messages go in order (its SMS waits behind its email's retry while others go on),
//! a transient answer is retried after its backoff with the same Message-ID, a hard bounce
//! fails the send and suppresses the address, a send retried past 24 h is dead-lettered, an
//! attempt cut short by a stop is sent again once, and only channels with a backend are
//! queued for delivery. (The SMTP backend against a real server has its own tests.)

use crate::common::t0;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::delivery::{Backend, DeliverFuture, DeliveryError, Outgoing};
use relance_core::journal::RecordKind;
use relance_core::ports::{SourceFormat, Status};
use relance_core::scenario::Channel;
use relance_core::wire::LaunchDetail;
use relance_embedded::clock::ManualClock;
use relance_embedded::delivery::{Backends, Worker};
use relance_embedded::server::RuntimeHandle;
use relance_embedded::store::SqliteStore;
use serde_json::json;

/// Answers each recipient from its script (the last answer repeats; none: delivered) and
/// keeps every message handed to it.
#[derive(Debug, Default)]
struct Scripted {
    name: &'static str,
    answers: Mutex<HashMap<String, VecDeque<Result<String, DeliveryError>>>>,
    seen: Mutex<Vec<Outgoing>>,
}

impl Scripted {
    fn new(name: &'static str, script: &[(&str, Vec<Result<String, DeliveryError>>)]) -> Arc<Self> {
        let s = Scripted {
            name,
            ..Scripted::default()
        };
        if let Ok(mut a) = s.answers.lock() {
            for (to, answers) in script {
                a.insert(to.to_string(), answers.iter().cloned().collect());
            }
        }
        Arc::new(s)
    }

    fn seen(&self) -> Vec<Outgoing> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// (contact, step) of each message handed over, in order.
    fn log(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .map(|o| (o.send.contact, o.send.step))
            .collect()
    }
}

fn recipient(o: &Outgoing) -> String {
    serde_json::to_value(&o.send.to)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|m| m.values().next().cloned())
                .and_then(|v| v.as_str().map(str::to_string))
        })
        .unwrap_or_default()
}

impl Backend for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a> {
        let to = recipient(message);
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|mut a| {
                let q = a.get_mut(&to)?;
                if q.len() > 1 {
                    q.pop_front()
                } else {
                    q.front().cloned()
                }
            })
            .unwrap_or_else(|| Ok(format!("id-{}", message.send.idempotency_key)));
        if let Ok(mut s) = self.seen.lock() {
            s.push(message.clone());
        }
        Box::pin(async move { answer })
    }
}

fn transient() -> Result<String, DeliveryError> {
    Err(DeliveryError::Transient("451 4.3.0 try again".into()))
}

const SCENARIO: &str = r#"id: drip
launch: {type: manual}
audience: {all: true}
messages:
  hello: {channel: email, subject: "Hello {{ contact.id }}", html: "<p>Hello</p>", text: Hello}
  nudge: {channel: sms, text: Nudge}
steps:
  - {id: hello, send: hello, next: nudge}
  - {id: nudge, send: nudge, next: done}
  - {id: done, end: success}
"#;

struct Bed {
    handle: RuntimeHandle,
    clock: Arc<ManualClock>,
    runner: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Bed {
    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("relance-delivery-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    fn start(dir: &std::path::Path, live: &[Channel], at: DateTime<Utc>) -> Bed {
        let mut store =
            SqliteStore::open(&dir.join("relance.db")).unwrap_or_else(|e| panic!("{e}"));
        store.set_live_channels(live);
        let clock = Arc::new(ManualClock::new(at));
        let (handle, runner) = relance_embedded::server::start_configured(
            store,
            &dir.join("outbox.jsonl"),
            clock.clone(),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Bed {
            handle,
            clock,
            runner: Some(runner),
            dir: dir.to_path_buf(),
        }
    }

    async fn enroll(&self, contacts: &[(&str, &str, &str)]) {
        self.enroll_in(SCENARIO, "drip", contacts).await
    }

    /// Puts and activates `scenario` (its id `id`), then launches it for `contacts`.
    async fn enroll_in(
        &self,
        scenario: &'static str,
        id: &'static str,
        contacts: &[(&str, &str, &str)],
    ) {
        let contacts: Vec<(String, String, String)> = contacts
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        self.handle
            .call(move |rt, now| {
                rt.put_scenario(scenario, SourceFormat::Yaml, now)?;
                rt.set_status(id, Status::Active, now)?;
                for (id, email, phone) in &contacts {
                    let fields = json!({"id": id, "email": email, "phone": phone});
                    rt.upsert_contact(crate::common::contact_detail(fields), now)?;
                }
                rt.launch(
                    LaunchDetail {
                        scenario: id.into(),
                        contacts: None,
                    },
                    now,
                )
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn path(
        &self,
        contact: &'static str,
    ) -> Vec<(RecordKind, Option<String>, Option<String>)> {
        self.handle
            .call(move |rt, _| rt.path("drip", contact))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|r| (r.kind, r.step, r.reason))
            .collect()
    }

    async fn status(&self, key: String) -> Option<relance_embedded::store::DeliveryStatus> {
        self.handle
            .call(move |rt, _| rt.store().delivery_status(&key))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn counts(&self) -> relance_embedded::store::DeliveryCounts {
        self.handle
            .call(|rt, _| rt.store().delivery_counts())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn stop(mut self) {
        drop(self.handle);
        if let Some(r) = self.runner.take() {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
    }
}

fn worker(bed: &Bed, email: &Arc<Scripted>, sms: &Arc<Scripted>) -> Worker {
    let email: Arc<dyn Backend> = email.clone();
    let sms: Arc<dyn Backend> = sms.clone();
    Worker::new(
        bed.handle.clone(),
        Backends::none()
            .with(Channel::Email, email)
            .with(Channel::Sms, sms),
        "news@shop.example",
    )
}

/// Rounds until one attempts nothing.
async fn drain(w: &Worker) -> usize {
    let mut total = 0;
    loop {
        match w.run_once().await {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => panic!("{e}"),
        }
    }
}

fn key_of(outgoing: &Outgoing) -> String {
    outgoing.send.idempotency_key.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_messages_wait_behind_its_retry_while_others_go_on() {
    let dir = Bed::dir("order");
    let bed = Bed::start(&dir, &[Channel::Email, Channel::Sms], t0());
    bed.enroll(&[
        ("c1", "ada@example.com", "+33600000001"),
        ("c2", "bob@example.com", "+33600000002"),
    ])
    .await;
    let email = Scripted::new(
        "smtp",
        &[("ada@example.com", vec![transient(), Ok("250 ok".into())])],
    );
    let sms = Scripted::new("sns", &[]);
    let w = worker(&bed, &email, &sms);
    assert_eq!(drain(&w).await, 3, "c1's email, c2's email, then c2's SMS");
    assert_eq!(
        sms.log(),
        [("c2".to_string(), "nudge".to_string())],
        "c1's SMS waits behind its email's retry"
    );
    let first = email
        .seen()
        .into_iter()
        .find(|o| o.send.contact == "c1")
        .unwrap_or_else(|| panic!("c1's email was attempted"));
    let status = bed
        .status(key_of(&first))
        .await
        .unwrap_or_else(|| panic!("a row"));
    assert_eq!((status.state.as_str(), status.attempts), ("pending", 1));
    assert_eq!(status.last_error.as_deref(), Some("451 4.3.0 try again"));

    // Before the backoff (30 s) nothing is due; after it, the email then the SMS go.
    bed.clock.set(t0() + TimeDelta::seconds(29));
    assert_eq!(drain(&w).await, 0);
    bed.clock.set(t0() + TimeDelta::seconds(30));
    assert_eq!(drain(&w).await, 2);
    let c1: Vec<Outgoing> = email
        .seen()
        .into_iter()
        .filter(|o| o.send.contact == "c1")
        .collect();
    assert_eq!(c1.len(), 2, "two attempts");
    assert_eq!(c1[0].message_id, c1[1].message_id, "the same Message-ID");
    assert!(
        c1[0].message_id.ends_with("@shop.example>"),
        "{}",
        c1[0].message_id
    );
    assert_eq!(
        sms.log().last(),
        Some(&("c1".to_string(), "nudge".to_string()))
    );
    let done = bed
        .status(key_of(&c1[1]))
        .await
        .unwrap_or_else(|| panic!("a row"));
    assert_eq!(
        (
            done.state.as_str(),
            done.attempts,
            done.provider_id.as_deref()
        ),
        ("done", 2, Some("250 ok"))
    );
    let counts = bed.counts().await;
    assert_eq!((counts.done, counts.pending, counts.sending), (4, 0, 0));
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_fails_the_send_and_suppresses_the_address() {
    let dir = Bed::dir("bounce");
    let bed = Bed::start(&dir, &[Channel::Email], t0());
    bed.enroll(&[("c1", "gone@example.com", "+33600000001")])
        .await;
    let email = Scripted::new(
        "smtp",
        &[(
            "gone@example.com",
            vec![Err(DeliveryError::Permanent {
                reason: "550 5.1.1 no such user".into(),
                hard_bounce: true,
            })],
        )],
    );
    let sms = Scripted::new("sns", &[]);
    let w = worker(&bed, &email, &sms);
    assert_eq!(
        drain(&w).await,
        1,
        "the SMS channel has no backend: outbox only"
    );
    let path = bed.path("c1").await;
    assert!(
        path.iter().any(|(k, step, reason)| *k == RecordKind::Failed
            && step.as_deref() == Some("hello")
            && reason.as_deref() == Some("delivery failed: 550 5.1.1 no such user")),
        "{path:?}"
    );
    assert!(
        path.iter().any(|(k, _, _)| *k == RecordKind::Bounced),
        "{path:?}"
    );
    let trail = bed
        .handle
        .call(|rt, _| rt.consent_trail("c1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        trail.iter().any(|e| serde_json::to_string(e)
            .unwrap_or_default()
            .contains("suppressed")),
        "the address is suppressed: {trail:?}"
    );
    let sms_key = {
        let records = bed
            .handle
            .call(|rt, _| rt.path("drip", "c1"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = records
            .iter()
            .find_map(|r| r.enrollment.clone())
            .unwrap_or_default();
        format!("{e}:nudge")
    };
    assert_eq!(
        bed.status(sms_key).await,
        None,
        "the SMS is not queued for delivery"
    );
    let outbox = std::fs::read_to_string(bed.dir.join("outbox.jsonl")).unwrap_or_default();
    assert_eq!(outbox.lines().count(), 2, "the file records both sends");
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_past_a_day_is_dead_lettered() {
    let dir = Bed::dir("dead");
    let bed = Bed::start(&dir, &[Channel::Email], t0());
    bed.enroll(&[("c1", "slow@example.com", "+33600000001")])
        .await;
    let email = Scripted::new("smtp", &[("slow@example.com", vec![transient()])]);
    let sms = Scripted::new("sns", &[]);
    let w = worker(&bed, &email, &sms);
    for hour in 1..=60 {
        drain(&w).await;
        bed.clock.set(t0() + TimeDelta::hours(hour));
    }
    let attempts = email.seen().len();
    assert!((8..=40).contains(&attempts), "{attempts} attempts");
    let path = bed.path("c1").await;
    assert!(
        path.iter().any(|(k, _, reason)| *k == RecordKind::Failed
            && reason
                .as_deref()
                .is_some_and(|r| r.starts_with("delivery dead-lettered after"))),
        "{path:?}"
    );
    let dead = bed
        .handle
        .call(|rt, _| rt.store().dead_letters())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dead.iter().any(|(kind, _, _)| kind == "delivery"),
        "{dead:?}"
    );
    assert_eq!(bed.counts().await.dead, 1);
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_short_by_a_stop_is_sent_again_once_with_its_message_id() {
    let dir = Bed::dir("interrupted");
    let bed = Bed::start(&dir, &[Channel::Email], t0());
    bed.enroll(&[("c1", "ada@example.com", "+33600000001")])
        .await;
    // A lease with no settlement: what a process killed mid-attempt leaves.
    let leased = bed
        .handle
        .call(|rt, now| rt.store().lease_deliveries(now, 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leased.len(), 1);
    let key = leased[0].send.idempotency_key.clone();
    bed.stop().await;

    let bed = Bed::start(&dir, &[Channel::Email], t0());
    let email = Scripted::new("smtp", &[]);
    let sms = Scripted::new("sns", &[]);
    let w = worker(&bed, &email, &sms);
    assert_eq!(w.recover().await.unwrap_or_else(|e| panic!("{e}")), 1);
    assert_eq!(drain(&w).await, 1);
    assert_eq!(w.recover().await.unwrap_or_else(|e| panic!("{e}")), 0);
    assert_eq!(drain(&w).await, 0, "sent once");
    let status = bed
        .status(key.clone())
        .await
        .unwrap_or_else(|| panic!("a row"));
    assert_eq!((status.state.as_str(), status.interrupted), ("done", 1));
    assert_eq!(
        email.seen()[0].message_id,
        relance_core::delivery::message_id(&key, "shop.example")
    );
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The worker through the SMTP backend against the real test server (aiosmtpd, STARTTLS):
/// a 451 is retried after its backoff and the server gets each message once; a 550 at RCPT
/// fails the send, suppresses the address, and the contact's next scenario skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_smtp_server_gets_each_message_once_and_its_550_suppresses() {
    use crate::smtp::smtp_server::{Options, Protection, SmtpServer};
    let options = Options {
        auth: Some("relance:s:cret".into()),
        transient_once: true,
        reject: vec!["gone@example.com".into()],
        ..Options::new(Protection::StartTls)
    };
    let Some(server) = SmtpServer::start(&options) else {
        return;
    };
    let dir = Bed::dir("real-smtp");
    let bed = Bed::start(&dir, &[Channel::Email], t0());
    bed.enroll(&[
        ("c1", "ada@example.com", "+33600000001"),
        ("c2", "gone@example.com", "+33600000002"),
    ])
    .await;
    let smtp: Arc<dyn Backend> = Arc::new(crate::smtp::backend(
        &server,
        Protection::StartTls,
        "s%3Acret",
    ));
    let w = Worker::new(
        bed.handle.clone(),
        Backends::none().with(Channel::Email, smtp),
        "news@shop.example",
    );
    assert_eq!(drain(&w).await, 2);
    assert_eq!(server.count(), 0, "451 for ada, 550 for gone");
    bed.clock.set(t0() + TimeDelta::seconds(30));
    assert_eq!(drain(&w).await, 1, "ada's retry");
    bed.clock.set(t0() + TimeDelta::hours(2));
    assert_eq!(drain(&w).await, 0, "nothing more");
    let received = server.messages();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].rcpt_tos, ["ada@example.com"]);
    assert_eq!(received[0].header("Subject"), Some("Hello c1"));

    let path = bed.path("c2").await;
    assert!(
        path.iter().any(|(k, _, reason)| *k == RecordKind::Failed
            && reason.as_deref().is_some_and(|r| r.contains("550"))),
        "{path:?}"
    );
    // The suppression holds: the next scenario's email to that contact is skipped.
    let skipped = bed
        .handle
        .call(|rt, now| {
            rt.put_scenario(
                &SCENARIO.replace("id: drip", "id: again"),
                SourceFormat::Yaml,
                now,
            )?;
            rt.set_status("again", Status::Active, now)?;
            rt.launch(
                LaunchDetail {
                    scenario: "again".into(),
                    contacts: Some(vec!["c2".into()]),
                },
                now,
            )?;
            rt.path("again", "c2")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        skipped
            .iter()
            .any(|r| r.kind == RecordKind::Skipped && r.step.as_deref() == Some("hello")),
        "{skipped:?}"
    );
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`SCENARIO`] under an id of its own: the metrics recorder is the process's, shared by
/// every test.
const METERED: &str = r#"id: metrics-delivery
launch: {type: manual}
audience: {all: true}
messages:
  hello: {channel: email, subject: "Hello {{ contact.id }}", html: "<p>Hello</p>", text: Hello}
  nudge: {channel: sms, text: Nudge}
steps:
  - {id: hello, send: hello, next: nudge}
  - {id: nudge, send: nudge, next: done}
  - {id: done, end: success}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_refused_at_delivery_counts_as_a_failed_send() {
    relance_embedded::metrics::install().unwrap_or_else(|e| panic!("{e}"));
    let dir = Bed::dir("metrics");
    let bed = Bed::start(&dir, &[Channel::Email], t0());
    bed.enroll_in(
        METERED,
        "metrics-delivery",
        &[
            ("m1", "gone@example.com", "+33600000001"),
            ("m2", "ok@example.com", "+33600000002"),
        ],
    )
    .await;
    let email = Scripted::new(
        "smtp",
        &[(
            "gone@example.com",
            vec![Err(DeliveryError::Permanent {
                reason: "550 5.1.1 no such user".into(),
                hard_bounce: false,
            })],
        )],
    );
    let sms = Scripted::new("sns", &[]);
    let w = worker(&bed, &email, &sms);
    assert_eq!(drain(&w).await, 2);
    let text = relance_embedded::metrics::render().unwrap_or_else(|e| panic!("{e}"));
    let sample = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    };
    // Both emails were sent by the engine; one was refused by the provider.
    let email_series = |result: &str| {
        format!(
            r#"relance_sends_total{{scenario="metrics-delivery",step="hello",channel="email",result="{result}"}}"#
        )
    };
    assert_eq!(
        sample(&email_series("sent")).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        sample(&email_series("failed")).as_deref(),
        Some("1"),
        "{text}"
    );
    drop(w);
    bed.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
