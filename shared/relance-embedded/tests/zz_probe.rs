use std::sync::Arc;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use relance_embedded::clock::ManualClock;
use relance_embedded::store::SqliteStore;
use tower::ServiceExt;

async fn post(r: &axum::Router, path: &str, body: impl Into<Body>, ct: &str) -> String {
    let req = Request::builder().method("POST").uri(path).header(header::CONTENT_TYPE, ct).body(body.into()).unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let s = resp.status();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    let t = String::from_utf8_lossy(&b);
    format!("{s} {}", &t[..t.len().min(400)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let dir = std::env::temp_dir().join("relance-probe");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new("2026-03-02T10:00:00Z".parse().unwrap()));
    let (h, _t) = relance_embedded::server::start_with(SqliteStore::in_memory().unwrap(), &dir.join("o.jsonl"), clock).unwrap();
    let r = relance_embedded::api::router(h);
    let sc = "id: nudge\ntimezone: UTC\nlaunch: {type: manual}\nmessages:\n  first: {channel: email, subject: N, text: x}\n  thanks: {channel: email, subject: T, text: y}\nsteps:\n  - {id: first, send: first, next: wait}\n  - id: wait\n    wait_for: {opened: first, timeout: P2D}\n    on_event: thanks\n    on_timeout: done\n  - {id: thanks, send: thanks, next: done}\n  - {id: done, end: success}\n";
    println!("put {}", post(&r, "/v1/scenarios", sc, "application/yaml").await);
    println!("act {}", post(&r, "/v1/scenarios/nudge/activate", "", "application/json").await);
    println!("contact {}", post(&r, "/v1/contacts", r#"{"contact": {"id": "c1", "email": "c1@x.io"}}"#, "application/json").await);
    println!("contact {}", post(&r, "/v1/contacts", r#"{"contact": {"id": "c2", "email": "c2@x.io"}}"#, "application/json").await);
    println!("launch {}", post(&r, "/v1/scenarios/nudge/launch", "", "application/json").await);
    println!("pause {}", post(&r, "/v1/scenarios/nudge/pause", "", "application/json").await);
    println!("eng {}", post(&r, "/v1/engagement", r#"{"contact":"c1","scenario":"nudge","step":"first","kind":"opened"}"#, "application/json").await);
    println!("archive {}", post(&r, "/v1/scenarios/nudge/archive", "", "application/json").await);
    println!("eng {}", post(&r, "/v1/engagement", r#"{"contact":"c2","scenario":"nudge","step":"first","kind":"opened"}"#, "application/json").await);
    let req = Request::builder().uri("/v1/scenarios/nudge/journal").body(Body::empty()).unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    println!("journal {:?}", resp.into_body().collect().await.unwrap().to_bytes());
    println!("scen json ct wrong {}", post(&r, "/v1/scenarios", "", "application/json").await);
}
