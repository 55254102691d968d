//! The webhook step end to end (issue 14): the runner on SQLite, the worker with the real HTTP
//! client of `relance run` (the outbound rule, its loopback and http escape hatches on) and a
//! receiver stub on 127.0.0.1 that checks the signature, answers 500 then 200, keeps what it
//! did per `Idempotency-Key` (a duplicate delivery changes nothing), answers 404 for a gone
//! hook and JSON for `save`. Also: the strict rule refuses loopback and `http://`, and
//! `relance simulate` journals the call without making it.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use relance_aws::outbound::OutboundPolicy;
use relance_aws::webhook::HttpTransport;
use relance_core::journal::RecordKind;
use relance_core::ports::{ContactStore, SourceFormat, Status};
use relance_core::webhook::{self, CallError, Method, Request, Transport};
use relance_core::wire::{ContactDetail, LaunchDetail};
use relance_embedded::clock::{Clock, ManualClock};
use relance_embedded::server::RuntimeHandle;
use relance_embedded::store::SqliteStore;
use relance_embedded::webhook::Worker;
use serde_json::json;

#[path = "../../../tests/webhook/receiver.rs"]
mod stub;

use stub::{SECRET, Shared, scenario};

async fn receiver() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = stub::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

/// The client of `relance run` with the test-only escape hatches on.
fn local_transport() -> Arc<HttpTransport> {
    let env = HashMap::from([
        ("RELANCE_WEBHOOK_ALLOW_HTTP", "1"),
        ("RELANCE_OUTBOUND_ALLOW_LOOPBACK", "1"),
    ]);
    Arc::new(
        HttpTransport::from_lookup(|n| env.get(n).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn start(url: &str) -> (RuntimeHandle, Arc<ManualClock>, String) {
    let dir = std::env::temp_dir().join(format!(
        "relance-cli-webhook-{}-{}",
        std::process::id(),
        url.rsplit('/').next().unwrap_or("")
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
    let (handle, _runner) = relance_embedded::server::start_configured(
        store,
        &dir.join("outbox.jsonl"),
        clock.clone(),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = scenario(url);
    let enrollment = handle
        .call(move |rt, now| {
            rt.put_scenario(&text, SourceFormat::Yaml, now)?;
            rt.set_status("hook", Status::Active, now)?;
            let contact = serde_json::Map::from_iter([("id".to_string(), json!("c1"))]);
            rt.upsert_contact(
                ContactDetail {
                    action: None,
                    contact,
                    at: None,
                },
                now,
            )?;
            rt.launch(
                LaunchDetail {
                    scenario: "hook".into(),
                    contacts: Some(vec!["c1".into()]),
                },
                now,
            )?;
            let path = rt.path("hook", "c1")?;
            Ok::<_, relance_embedded::runtime::RuntimeError>(
                path.iter()
                    .find(|r| r.kind == RecordKind::Action)
                    .and_then(|r| r.enrollment.clone())
                    .unwrap_or_default(),
            )
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let key = webhook::idempotency_key(&enrollment, "notify");
    (handle, clock, key)
}

fn secrets() -> relance_embedded::webhook::Secrets {
    Arc::new(|name| (name == "crm").then(|| SECRET.to_vec()))
}

async fn state_of(handle: &RuntimeHandle, key: &str) -> String {
    let key = key.to_string();
    handle
        .call(move |rt, _| rt.store().webhook_status(&key))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|s| s.state)
        .unwrap_or_default()
}

#[tokio::test]
async fn the_stub_sees_a_signed_retry_a_duplicate_by_key_and_the_answer_is_saved() {
    let (base, stub) = receiver().await;
    let (handle, clock, key) = start(&format!("{base}/hook/flaky")).await;
    let transport = local_transport();
    let worker = Worker::new(handle.clone(), transport.clone(), secrets());

    // The first attempt: a 500, retried after 30 s.
    assert_eq!(worker.run_once().await.ok(), Some(1));
    assert_eq!(state_of(&handle, &key).await, "pending");
    clock.set(clock.now() + TimeDelta::seconds(31));

    // A worker that leased the call, sent it and died before settling it: the call went out.
    let leased = handle
        .call(|rt, now| rt.store().lease_webhooks(now, TimeDelta::seconds(60), 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leased.len(), 1);
    let row = &leased[0];
    let first = transport
        .call(webhook::request(
            &row.call,
            &row.key,
            Some(SECRET),
            clock.now().timestamp(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status, 200);
    // Leased: nothing to do until the lease ends; then the call goes again, same key.
    assert_eq!(worker.run_once().await.ok(), Some(0));
    clock.set(clock.now() + TimeDelta::seconds(61));
    assert_eq!(worker.run_once().await.ok(), Some(1));
    assert_eq!(state_of(&handle, &key).await, "done");

    let r = stub
        .lock()
        .map(|r| (r.requests.clone(), r.processed.clone()));
    let (requests, processed) = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests.iter().all(|(_, k, valid)| k == &key && *valid),
        "every request signed, under one key: {requests:?}"
    );
    assert_eq!(processed.get(&key), Some(&2), "two deliveries of one key");
    let tier = handle
        .call(|rt, _| rt.store().contact("c1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .and_then(|c| c.fields().get("tier").cloned());
    assert_eq!(tier, Some(json!("gold")), "save copied /data/tier");
}

#[tokio::test]
async fn a_404_from_the_stub_is_a_permanent_failure() {
    let (base, stub) = receiver().await;
    let (handle, clock, key) = start(&format!("{base}/hook/gone")).await;
    let worker = Worker::new(handle.clone(), local_transport(), secrets());
    assert_eq!(worker.run_once().await.ok(), Some(1));
    assert_eq!(state_of(&handle, &key).await, "failed");
    clock.set(clock.now() + TimeDelta::hours(2));
    assert_eq!(worker.run_once().await.ok(), Some(0));
    let n = stub.lock().map(|r| r.requests.len()).unwrap_or_default();
    assert_eq!(n, 1, "never retried");
    let path = handle
        .call(|rt, _| rt.path("hook", "c1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        path.iter().any(|r| r.kind == RecordKind::Failed
            && r.reason.as_deref() == Some("webhook failed: HTTP 404")),
        "{path:?}"
    );
}

#[tokio::test]
async fn the_strict_rule_refuses_loopback_private_and_plain_http() {
    let (base, stub) = receiver().await;
    let strict = HttpTransport::new(OutboundPolicy::strict(), Duration::from_secs(2));
    let call = |url: String| Request {
        method: Method::Post,
        url,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let port = base.rsplit(':').next().unwrap_or("");
    for url in [
        format!("{base}/hook/flaky"),
        format!("https://127.0.0.1:{port}/hook/flaky"),
        format!("https://localhost:{port}/hook/flaky"),
        "https://10.1.2.3/hook".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
    ] {
        match strict.call(call(url.clone())).await {
            Err(CallError::Refused(why)) => assert!(!why.is_empty()),
            other => panic!("{url}: {other:?}"),
        }
    }
    let n = stub.lock().map(|r| r.requests.len()).unwrap_or_default();
    assert_eq!(n, 0, "nothing reached the stub");
}

#[test]
fn simulate_journals_the_call_without_making_it() {
    let d = std::env::temp_dir().join(format!("relance-cli-{}-sim-webhook", std::process::id()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    // An address nothing listens on: simulate must not call it (and must not wait for it).
    let s = d.join("s.yaml");
    std::fs::write(&s, scenario("https://hooks.example.com/never"))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = d.join("c.jsonl");
    std::fs::write(&c, "{\"id\": \"c1\"}\n").unwrap_or_else(|e| panic!("{e}"));
    let o = Command::new(env!("CARGO_BIN_EXE_relance"))
        .args([
            "simulate",
            &s.to_string_lossy(),
            "--contacts",
            &c.to_string_lossy(),
            "--start",
            "2026-12-01T09:00:00Z",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("").to_string(),
                l["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("action".into(), "webhook".into())),
        "{kinds:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "ended" && l["end"] == "success"),
        "the step goes on without an answer: {out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
