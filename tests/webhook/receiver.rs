//! The webhook receiver stub both webhook test binaries run (the CLI's against `relance run`,
//! the AWS one against the webhook sender): it checks the signature, keeps every request, and
//! acts once per `Idempotency-Key`. Its modes, the last segment of `/hook/{mode}`: `gone`
//! answers 404, `down` 503, `flaky` 500 the first time for a key and then 200; any other 200.
//! The 200 carries `{"data": {"tier": "gold"}}` for `save`. Compiled into each binary with
//! `#[path]`; each spawns `router` on its own runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use relance_core::webhook;
use serde_json::json;

/// The secret the tests configure under the name `crm`.
pub const SECRET: &[u8] = b"whsec-test-secret";

/// What the stub saw: every request (mode, key, signature valid), the keys it acted on.
#[derive(Debug, Default)]
pub struct Receiver {
    pub requests: Vec<(String, String, bool)>,
    pub processed: HashMap<String, u32>,
    failures_left: HashMap<String, u32>,
}

pub type Shared = Arc<Mutex<Receiver>>;

/// The stub's routes over `state`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/hook/{mode}", post(hook))
        .with_state(state)
}

async fn hook(
    State(state): State<Shared>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("idempotency-key");
    let valid = webhook::verify(
        SECRET,
        &header("relance-signature"),
        &body,
        Utc::now().timestamp(),
        300,
    );
    let Ok(mut r) = state.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    };
    r.requests.push((mode.clone(), key.clone(), valid));
    if !valid {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match mode.as_str() {
        "gone" => return (StatusCode::NOT_FOUND, String::new()),
        "down" => return (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        _ => {}
    }
    let left = r.failures_left.entry(key.clone()).or_insert(1);
    if mode == "flaky" && *left > 0 {
        *left -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    }
    // The key makes the effect happen once, however many times the call comes.
    *r.processed.entry(key).or_insert(0) += 1;
    (
        StatusCode::OK,
        json!({"data": {"tier": "gold"}}).to_string(),
    )
}

/// A scenario that calls `url` for each contact, signed with `crm`, saving `tier`.
pub fn scenario(url: &str) -> String {
    format!(
        "id: hook\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: notify\n    webhook:\n      url: \"{url}\"\n      body: '{{\"id\": \"{{{{ contact.id }}}}\"}}'\n      secret: crm\n      save: {{tier: /data/tier}}\n    next: done\n  - {{id: done, end: success}}\n"
    )
}
