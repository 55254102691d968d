//! The webhook worker on the SQLite store, over a scripted transport and a manual clock: a
//! 503 is retried after its backoff with the same key and signature rules, a 2xx applies
//! `save` to the contact and journals `delivered`, a 404 fails for good, a call retried past
//! 24 h is dead-lettered, a missing secret is retried with its variable named, and a restart
//! resumes a call at its stored next attempt. (The real HTTP client against a receiver stub
//! is tested in the CLI's binary, which has both crates.)

use crate::common::t0;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::journal::RecordKind;
use relance_core::policy::Retained;
use relance_core::ports::{ContactStore, JournalStore, SourceFormat, Status};
use relance_core::webhook::{self, Answer, CallError, CallFuture, Request, Transport};
use relance_core::wire::LaunchDetail;
use relance_embedded::clock::ManualClock;
use relance_embedded::server::RuntimeHandle;
use relance_embedded::store::SqliteStore;
use relance_embedded::webhook::{Secrets, Worker};
use serde_json::{Value, json};

const SECRET: &[u8] = b"whsec-test-0123456789";

/// Answers each URL from its script (the last answer repeats) and keeps every request.
#[derive(Debug, Default)]
struct Scripted {
    answers: Mutex<HashMap<String, VecDeque<Result<Answer, CallError>>>>,
    seen: Mutex<Vec<Request>>,
}

impl Scripted {
    fn with(script: &[(&str, Vec<Result<Answer, CallError>>)]) -> Arc<Scripted> {
        let s = Scripted::default();
        if let Ok(mut a) = s.answers.lock() {
            for (url, answers) in script {
                a.insert(url.to_string(), answers.iter().cloned().collect());
            }
        }
        Arc::new(s)
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Transport for Scripted {
    fn call(&self, request: Request) -> CallFuture<'_> {
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|mut a| {
                let q = a.get_mut(&request.url)?;
                if q.len() > 1 {
                    q.pop_front()
                } else {
                    q.front().cloned()
                }
            })
            .unwrap_or(Err(CallError::Unreachable("no script".into())));
        if let Ok(mut s) = self.seen.lock() {
            s.push(request);
        }
        Box::pin(async move { answer })
    }
}

fn status(code: u16, body: &str) -> Result<Answer, CallError> {
    Ok(Answer {
        status: code,
        body: body.as_bytes().to_vec(),
    })
}

fn secrets() -> Secrets {
    Arc::new(|name| (name == "crm").then(|| SECRET.to_vec()))
}

fn scenario(url: &str) -> String {
    format!(
        "id: hook\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: notify\n    webhook:\n      url: \"{url}\"\n      body: '{{\"id\": \"{{{{ contact.id }}}}\", \"email\": \"{{{{ contact.email }}}}\"}}'\n      secret: crm\n      save: {{tier: /data/tier}}\n    next: done\n  - {{id: done, end: success}}\n"
    )
}

struct Bed {
    handle: RuntimeHandle,
    clock: Arc<ManualClock>,
    runner: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Bed {
    fn start(name: &str, store: SqliteStore, at: DateTime<Utc>) -> Bed {
        let dir =
            std::env::temp_dir().join(format!("relance-webhook-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
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
            dir,
        }
    }

    async fn enroll(&self, url: &str) {
        self.enroll_text(scenario(url)).await;
    }

    async fn enroll_text(&self, text: String) {
        self.handle
            .call(move |rt, now| {
                rt.put_scenario(&text, SourceFormat::Yaml, now)?;
                rt.set_status("hook", Status::Active, now)?;
                let fields = json!({"id": "c1", "email": "ada@example.com"});
                rt.upsert_contact(crate::common::contact_detail(fields), now)?;
                rt.launch(
                    LaunchDetail {
                        scenario: "hook".into(),
                        contacts: Some(vec!["c1".into()]),
                    },
                    now,
                )
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The contact's journal in the scenario: (kind, action, reason).
    async fn path(&self) -> Vec<(RecordKind, Option<String>, Option<String>)> {
        self.handle
            .call(|rt, _| rt.path("hook", "c1"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|r| (r.kind, r.action, r.reason))
            .collect()
    }

    async fn key(&self) -> String {
        let records = self
            .handle
            .call(|rt, _| rt.path("hook", "c1"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = records
            .iter()
            .find(|r| r.kind == RecordKind::Action)
            .unwrap_or_else(|| panic!("an action record: {records:?}"));
        webhook::idempotency_key(r.enrollment.as_deref().unwrap_or(""), "notify")
    }

    async fn status(&self, key: &str) -> relance_embedded::store::WebhookStatus {
        let key = key.to_string();
        self.handle
            .call(move |rt, _| rt.store().webhook_status(&key))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a webhook row"))
    }

    async fn contact_field(&self, field: &'static str) -> Option<Value> {
        self.handle
            .call(move |rt, _| rt.store().contact("c1"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .and_then(|c| c.fields().get(field).cloned())
    }

    fn worker(&self, transport: Arc<Scripted>) -> Worker {
        Worker::new(self.handle.clone(), transport, secrets())
    }

    /// Stops the runner (its last handle dropped) and waits for its thread.
    fn stop(mut self) {
        let runner = self.runner.take();
        drop(self);
        if let Some(r) = runner {
            let _ = r.join();
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_503_is_retried_after_its_backoff_then_the_2xx_saves_into_the_contact() {
    let url = "https://hooks.example.com/retry";
    let bed = Bed::start(
        "retry",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll(url).await;
    let transport = Scripted::with(&[(
        url,
        vec![
            status(503, "busy"),
            status(200, r#"{"data":{"tier":"gold"}}"#),
        ],
    )]);
    let worker = bed.worker(transport.clone());
    let key = bed.key().await;

    assert_eq!(worker.run_once().await.ok(), Some(1));
    let s = bed.status(&key).await;
    assert_eq!((s.state.as_str(), s.attempts), ("pending", 1));
    assert_eq!(
        s.next_at,
        Some(t0() + TimeDelta::seconds(30)),
        "30 s backoff"
    );
    assert_eq!(s.last_error.as_deref(), Some("HTTP 503"));
    // Not due yet: nothing is called.
    assert_eq!(worker.run_once().await.ok(), Some(0));

    bed.clock.set(t0() + TimeDelta::seconds(31));
    assert_eq!(worker.run_once().await.ok(), Some(1));
    let s = bed.status(&key).await;
    assert_eq!((s.state.as_str(), s.attempts), ("done", 2));
    assert_eq!(bed.contact_field("tier").await, Some(json!("gold")));

    let seen = transport.seen();
    assert_eq!(seen.len(), 2);
    for (r, t) in seen.iter().zip([t0(), t0() + TimeDelta::seconds(31)]) {
        assert_eq!(
            header(r, "Idempotency-Key"),
            Some(key.as_str()),
            "same key on every attempt"
        );
        assert_eq!(header(r, "Content-Type"), Some("application/json"));
        assert_eq!(r.body, br#"{"id": "c1", "email": "ada@example.com"}"#);
        let sig = header(r, "Relance-Signature").unwrap_or_else(|| panic!("signed"));
        assert!(sig.starts_with(&format!("t={},", t.timestamp())), "{sig}");
        assert!(webhook::verify(SECRET, sig, &r.body, t.timestamp(), 300));
    }
    let path = bed.path().await;
    assert!(
        path.contains(&(RecordKind::Action, Some("webhook".into()), None)),
        "{path:?}"
    );
    assert!(
        path.contains(&(RecordKind::Delivered, Some("webhook".into()), None)),
        "{path:?}"
    );
    // Settled: later rounds call nothing.
    bed.clock.set(t0() + TimeDelta::hours(2));
    assert_eq!(worker.run_once().await.ok(), Some(0));
    assert_eq!(transport.seen().len(), 2);
}

#[tokio::test]
async fn a_404_fails_for_good_and_is_journaled() {
    let url = "https://hooks.example.com/gone";
    let bed = Bed::start(
        "gone",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll(url).await;
    let transport = Scripted::with(&[(url, vec![status(404, "no such hook")])]);
    let worker = bed.worker(transport.clone());
    let key = bed.key().await;
    assert_eq!(worker.run_once().await.ok(), Some(1));
    let s = bed.status(&key).await;
    assert_eq!((s.state.as_str(), s.attempts), ("failed", 1));
    bed.clock.set(t0() + TimeDelta::hours(1));
    assert_eq!(worker.run_once().await.ok(), Some(0));
    let path = bed.path().await;
    assert!(
        path.contains(&(
            RecordKind::Failed,
            Some("webhook".into()),
            Some("webhook failed: HTTP 404".into())
        )),
        "{path:?}"
    );
    assert_eq!(bed.contact_field("tier").await, None, "nothing saved");
    // Retention drops settled calls with the outbox.
    let purged = bed
        .handle
        .call(|rt, now| {
            rt.store()
                .purge(Retained::Outbox, now + TimeDelta::days(1), 100)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(purged >= 1, "{purged}");
    let gone = bed
        .handle
        .call(move |rt, _| rt.store().webhook_status(&key))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gone, None);
}

#[tokio::test]
async fn retention_keeps_a_pending_call() {
    let url = "https://hooks.example.com/pending";
    let bed = Bed::start(
        "pending",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll(url).await;
    let transport = Scripted::with(&[(url, vec![status(503, "")])]);
    let worker = bed.worker(transport);
    let key = bed.key().await;
    assert_eq!(worker.run_once().await.ok(), Some(1));
    bed.handle
        .call(|rt, now| {
            rt.store()
                .purge(Retained::Outbox, now + TimeDelta::days(30), 100)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bed.status(&key).await.state, "pending");
}

#[tokio::test]
async fn a_call_retried_for_24_hours_is_dead_lettered() {
    let url = "https://hooks.example.com/down";
    let bed = Bed::start(
        "down",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll(url).await;
    let transport = Scripted::with(&[(url, vec![status(500, "")])]);
    let worker = bed.worker(transport.clone());
    let key = bed.key().await;
    let mut rounds = 0;
    loop {
        assert_eq!(worker.run_once().await.ok(), Some(1));
        rounds += 1;
        let s = bed.status(&key).await;
        match s.next_at {
            Some(next) if s.state == "pending" => {
                assert!(next <= t0() + TimeDelta::hours(24), "within the window");
                bed.clock.set(next);
            }
            _ => {
                assert_eq!(s.state, "dead");
                assert_eq!(s.attempts, rounds);
                break;
            }
        }
        assert!(rounds < 100, "the retries end");
    }
    // 30 s doubling to an hour: 8 attempts by 1 h 3 min 30 s, then one an hour while the
    // next stays within 24 h of the first: 22 more.
    assert_eq!(rounds, 30, "{rounds} attempts");
    assert_eq!(transport.seen().len(), rounds as usize);
    let dead = bed
        .handle
        .call(|rt, _| rt.store().dead_letters())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dead.iter().any(|(kind, payload, reason)| kind == "webhook"
            && payload.contains(url)
            && reason.contains("HTTP 500")),
        "{dead:?}"
    );
    let path = bed.path().await;
    assert!(
        path.iter().any(|(k, a, r)| *k == RecordKind::Failed
            && a.as_deref() == Some("webhook")
            && r.as_deref().is_some_and(|r| r.contains("dead-lettered"))),
        "{path:?}"
    );
}

#[tokio::test]
async fn a_missing_secret_is_retried_and_named() {
    let url = "https://hooks.example.com/unsigned";
    let bed = Bed::start(
        "nosecret",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll(url).await;
    let transport = Scripted::with(&[(url, vec![status(200, "{}")])]);
    let worker = Worker::new(bed.handle.clone(), transport.clone(), Arc::new(|_| None));
    let key = bed.key().await;
    assert_eq!(worker.run_once().await.ok(), Some(1));
    let s = bed.status(&key).await;
    assert_eq!(s.state, "pending");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("RELANCE_WEBHOOK_SECRET_CRM")),
        "{s:?}"
    );
    assert!(
        transport.seen().is_empty(),
        "an unsigned call is never sent"
    );
}

#[tokio::test]
async fn a_restart_resumes_the_call_at_its_stored_next_attempt() {
    let url = "https://hooks.example.com/restart";
    let dir = std::env::temp_dir().join(format!("relance-webhook-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.join("relance.db");
    let transport = Scripted::with(&[(url, vec![status(429, ""), status(204, "")])]);
    let key = {
        let bed = Bed::start(
            "restart-1",
            SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")),
            t0(),
        );
        bed.enroll(url).await;
        let key = bed.key().await;
        let worker = bed.worker(transport.clone());
        assert_eq!(worker.run_once().await.ok(), Some(1));
        drop(worker);
        bed.stop();
        key
    };
    let bed = Bed::start(
        "restart-2",
        SqliteStore::open(&db).unwrap_or_else(|e| panic!("{e}")),
        t0() + TimeDelta::seconds(10),
    );
    let worker = bed.worker(transport.clone());
    let s = bed.status(&key).await;
    assert_eq!(
        (s.state.as_str(), s.attempts),
        ("pending", 1),
        "kept across the restart"
    );
    assert_eq!(
        worker.run_once().await.ok(),
        Some(0),
        "not due before its backoff"
    );
    bed.clock.set(t0() + TimeDelta::seconds(30));
    assert_eq!(worker.run_once().await.ok(), Some(1));
    assert_eq!(bed.status(&key).await.state, "done");
    let seen = transport.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|r| header(r, "Idempotency-Key") == Some(key.as_str()))
    );
    // The step ran once: one action record, however many attempts.
    let actions = bed
        .path()
        .await
        .into_iter()
        .filter(|(k, _, _)| *k == RecordKind::Action)
        .count();
    assert_eq!(actions, 1);
    drop(worker);
    bed.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_saved_value_the_contact_refuses_is_reported_on_the_delivered_record() {
    let url = "https://hooks.example.com/bad-save";
    let bed = Bed::start(
        "bad-save",
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
        t0(),
    );
    bed.enroll_text(scenario(url).replace(
        "save: {tier: /data/tier}",
        "save: {email: /data/tier, tier: /data/tier, rank: /data/rank}",
    ))
    .await;
    let transport = Scripted::with(&[(url, vec![status(200, r#"{"data":{"tier":"gold"}}"#)])]);
    let worker = bed.worker(transport);
    let key = bed.key().await;
    assert_eq!(worker.run_once().await.ok(), Some(1));
    assert_eq!(
        bed.status(&key).await.state,
        "done",
        "the call is not made again"
    );
    let path = bed.path().await;
    let delivered = path
        .iter()
        .find(|(k, _, _)| *k == RecordKind::Delivered)
        .and_then(|(_, _, reason)| reason.clone())
        .unwrap_or_else(|| panic!("a delivered record with a reason: {path:?}"));
    assert!(delivered.contains("save.rank"), "{delivered}");
    assert!(delivered.contains("refused"), "{delivered}");
    assert_eq!(
        bed.contact_field("email").await,
        Some(json!("ada@example.com")),
        "the email stays"
    );
}

#[test]
fn an_invoke_step_is_refused_here_with_a_located_reason() {
    // `relance run` has no Lambda to call (DESIGN §9): the scenario is refused when put,
    // naming the step and saying to use a webhook; nothing is stored.
    let mut rt = relance_embedded::runtime::Runtime::new(
        SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}")),
    );
    let text = "id: sync\nlaunch: {type: manual}\naudience: {all: true}\nsteps:\n  - id: crm\n    invoke: {function: \"arn:aws:lambda:us-east-1:123456789012:function:crm-sync\"}\n    next: done\n  - {id: done, end: success}\n";
    match rt.put_scenario(text, SourceFormat::Yaml, t0()) {
        Err(relance_embedded::runtime::RuntimeError::Invalid { id, problems }) => {
            assert_eq!(id, "sync");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "steps[0].invoke");
            assert_eq!(problems[0].step.as_deref(), Some("crm"));
            assert!(
                problems[0].message.contains("invoke runs on AWS only")
                    && problems[0].message.contains("use a webhook here"),
                "{problems:?}"
            );
        }
        other => panic!("accepted or another error: {other:?}"),
    }
    assert!(
        relance_core::ports::ScenarioStore::scenario(rt.store(), "sync")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
}
