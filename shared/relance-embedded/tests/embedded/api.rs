//! The HTTP API in process: the router over a runner with an in-memory store, a manual clock
//! and an outbox file in a temporary directory, called with `tower::ServiceExt::oneshot`.
//!
//! The runner does one job at a time and delivers the outbox after each, so the answer to a
//! later job proves the earlier job's sends are in the file ([`App::sync`]); the outbox is
//! still polled for a while before a test gives up on a send.

use crate::common::{TempDir, t0};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::TimeDelta;
use http_body_util::BodyExt;
use relance_core::unsubscribe::UnsubscribeLinks;
use relance_embedded::auth::ApiSecurity;
use relance_embedded::clock::ManualClock;
use relance_embedded::store::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

const YAML: &str = "application/yaml";
/// The API token of the apps under test.
const TOKEN: &str = "api-test-token-0123456789abcdef";
const JSON: &str = "application/json";

/// The app under test and what it writes.
struct App {
    router: Router,
    clock: Arc<ManualClock>,
    outbox: PathBuf,
    /// Removed with the app (kept when the test fails).
    _dir: TempDir,
}

/// A fresh app with its own temporary directory (named after the test).
fn app(name: &str) -> App {
    app_with(name, None)
}

/// The same, emails carrying one-click unsubscribe links signed with these settings.
fn app_with(name: &str, links: Option<UnsubscribeLinks>) -> App {
    let dir = TempDir::fresh("api", name);
    let outbox = dir.join("outbox.jsonl");
    let clock = Arc::new(ManualClock::new(t0()));
    let store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
    let (handle, _runner) =
        relance_embedded::server::start_configured(store, &outbox, clock.clone(), links)
            .unwrap_or_else(|e| panic!("{e}"));
    App {
        router: relance_embedded::api::router(
            handle,
            ApiSecurity::with_token(TOKEN, vec!["relance.example.com".into()]),
        ),
        clock,
        outbox,
        _dir: dir,
    }
}

/// Sends a request with the API token (unless it carries an `Authorization` of its own):
/// (status, body bytes).
async fn call_raw(app: &App, mut request: Request<Body>) -> (StatusCode, axum::body::Bytes) {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        let bearer = format!("Bearer {TOKEN}");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            bearer.parse().unwrap_or_else(|e| panic!("{e}")),
        );
    }
    call_unauthenticated(app, request).await
}

/// Sends a request as it is: (status, body bytes).
async fn call_unauthenticated(
    app: &App,
    request: Request<Body>,
) -> (StatusCode, axum::body::Bytes) {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    (status, bytes)
}

async fn call(app: &App, request: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes) = call_raw(app, request).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

/// POSTs `body` (text or raw bytes) with a content type.
async fn post(
    app: &App,
    path: &str,
    body: impl Into<Body>,
    content_type: &str,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap_or_else(|e| panic!("{e}"));
    call(app, request).await
}

/// POSTs a JSON value.
async fn post_json(app: &App, path: &str, body: Value) -> (StatusCode, Value) {
    post(app, path, body.to_string(), JSON).await
}

async fn get(app: &App, path: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    call(app, request).await
}

impl App {
    /// Returns once the runner has delivered everything due from earlier jobs and from a
    /// tick at the current time: two jobs in a row, since a tick runs between them.
    async fn sync(&self) {
        for _ in 0..2 {
            let (status, body) = get(self, "/v1/scenarios").await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    /// The outbox lines so far.
    fn outbox_lines(&self) -> Vec<Value> {
        let text = match std::fs::read_to_string(&self.outbox) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("{e}"),
        };
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    /// The outbox once it holds at least `n` lines (polled for up to 2 s).
    async fn outbox_at_least(&self, n: usize) -> Vec<Value> {
        self.sync().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let lines = self.outbox_lines();
            if lines.len() >= n || Instant::now() > deadline {
                assert!(
                    lines.len() >= n,
                    "expected {n} outbox lines, found {}: {lines:#?}",
                    lines.len()
                );
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock and lets the runner fire what became due.
    async fn advance(&self, by: TimeDelta) {
        self.clock.set(t0() + by);
        self.sync().await;
    }
}

/// The `send` objects of the outbox for one contact.
fn sends_to<'a>(lines: &'a [Value], contact: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "send" && l["send"]["contact"] == contact)
        .map(|l| &l["send"])
        .collect()
}

/// The kinds of a contact's path records, in order.
fn kinds(path: &Value) -> Vec<&str> {
    path.as_array()
        .unwrap_or_else(|| panic!("not a list: {path}"))
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or(""))
        .collect()
}

/// Asserts an error answer: the status and the field at fault (when given).
#[track_caller]
fn assert_error(
    (status, body): &(StatusCode, Value),
    want: StatusCode,
    field: Option<&str>,
) -> String {
    assert_eq!(*status, want, "{body}");
    let error = &body["error"];
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message: {body}"));
    assert!(!message.is_empty(), "{body}");
    match field {
        Some(f) => assert_eq!(error["field"], f, "{body}"),
        None => assert!(error.get("field").is_none(), "{body}"),
    }
    message.to_string()
}

async fn put_scenario(app: &App, text: &str) -> Value {
    let (status, body) = post(app, "/v1/scenarios", text.to_string(), YAML).await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "{status}: {body}"
    );
    body
}

async fn activate(app: &App, id: &str) {
    let (status, body) = post(app, &format!("/v1/scenarios/{id}/activate"), "", JSON).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active", "{body}");
}

async fn add_contact(app: &App, contact: Value) {
    let (status, body) = post_json(app, "/v1/contacts", json!({ "contact": contact })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn launch(app: &App, id: &str, contacts: &[&str]) -> Value {
    let (status, body) = post_json(
        app,
        &format!("/v1/scenarios/{id}/launch"),
        json!({ "contacts": contacts }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn path_of(app: &App, id: &str, contact: &str) -> Value {
    let (status, body) = get(app, &format!("/v1/scenarios/{id}/contacts/{contact}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// One email, then the end.
const HELLO: &str = "\
id: hello
name: Hello
timezone: UTC
launch: {type: manual}
audience: {all: true}
messages:
  greeting: {channel: email, subject: \"Hi {{ contact.first_name }}\", text: \"Hello there\"}
steps:
  - {id: first, send: greeting, next: done}
  - {id: done, end: success}
";

/// An email, a wait for its opening, then a thank-you to openers.
const NUDGE: &str = "\
id: nudge
timezone: UTC
launch: {type: manual}
messages:
  first: {channel: email, subject: \"News\", text: \"Read this\"}
  thanks: {channel: email, subject: \"Thanks for reading\", text: \"More soon\"}
steps:
  - {id: first, send: first, next: wait}
  - id: wait
    wait_for: {opened: first, timeout: P2D}
    on_event: thanks
    on_timeout: done
  - {id: thanks, send: thanks, next: done}
  - {id: done, end: success}
";

/// A day's delay, then an email whose subject says which version sent it.
fn later(subject: &str) -> String {
    format!(
        "\
id: later
timezone: UTC
launch: {{type: manual}}
messages:
  m: {{channel: email, subject: \"{subject}\", text: \"Hello\"}}
steps:
  - id: wait
    delay: {{after: P1D}}
    next: send
  - {{id: send, send: m, next: done}}
  - {{id: done, end: success}}
"
    )
}

/// Launched after each import, for the contacts it added.
const WELCOME_IMPORTED: &str = "\
id: welcome-imported
timezone: UTC
launch: {type: after_import, contacts: added}
messages:
  m: {channel: email, subject: \"Welcome\", text: \"Hello\"}
steps:
  - {id: first, send: m, next: done}
  - {id: done, end: success}
";

// ---------------------------------------------------------------------------------------------
// Happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_goes_from_its_text_to_a_delivered_send() {
    let app = app("happy");
    let (status, _) = get(&app, "/v1/health").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = post(&app, "/v1/scenarios", HELLO, YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "hello");
    assert_eq!(body["version"], 1);
    assert_eq!(body["changed"], true);
    assert_eq!(body["status"], "draft");
    assert_eq!(body["active_version"], Value::Null);

    // The same text again makes no new version.
    let (status, body) = post(&app, "/v1/scenarios", HELLO, YAML).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["changed"], false);

    let (status, body) = post(&app, "/v1/scenarios/hello/activate", "", JSON).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["active_version"], 1);

    let (status, body) = post_json(
        &app,
        "/v1/contacts",
        json!({"contact": {"id": "c1", "email": "ann@example.org", "first_name": "Ann"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["change"], "added");

    let report = launch(&app, "hello", &["c1"]).await;
    assert_eq!(report["entered"], 1, "{report}");

    let (status, counts) = get(&app, "/v1/scenarios/hello/journal").await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["entered"], 1, "{counts}");
    assert_eq!(counts["steps"]["first"]["sent"], 1, "{counts}");
    assert_eq!(counts["ends"]["success"], 1, "{counts}");

    let path = path_of(&app, "hello", "c1").await;
    assert_eq!(kinds(&path), ["entered", "sent", "ended"], "{path}");
    assert_eq!(path[1]["step"], "first");
    assert_eq!(path[1]["at"], "2026-03-02T10:00:00Z");

    let lines = app.outbox_at_least(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let send = &lines[0]["send"];
    assert_eq!(lines[0]["kind"], "send");
    assert_eq!(lines[0]["scenario"], "hello");
    assert_eq!(send["contact"], "c1");
    assert_eq!(send["step"], "first");
    assert_eq!(send["content"]["subject"], "Hi Ann");
    let key = send["idempotency_key"].as_str().unwrap_or("");
    assert!(key.ends_with(":first"), "{send}");

    let (status, list) = get(&app, "/v1/scenarios").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["latest_version"], 1);
}

/// A split behind a 30% holdout.
const EXPERIMENT: &str = "\
id: exp
name: Experiment
timezone: UTC
launch: {type: manual}
audience: {all: true}
holdout: {percent: 30}
messages:
  a: {channel: email, subject: A, text: A}
  b: {channel: email, subject: B, text: B}
steps:
  - id: ab
    split:
      - {percent: 50, next: send-a}
      - {percent: 50, next: send-b}
  - {id: send-a, send: a, next: done}
  - {id: send-b, send: b, next: done}
  - {id: done, end: success}
";

/// DESIGN §3.1: `GET /v1/scenarios/{id}/report` answers the report of the journal: entries
/// per path and in the holdout, engagement per step and per path, rates with intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_tells_paths_holdout_and_engagement() {
    let app = app("report");
    put_scenario(&app, EXPERIMENT).await;
    activate(&app, "exp").await;
    let ids: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for id in &ids {
        add_contact(
            &app,
            json!({"id": id, "email": format!("{id}@example.org")}),
        )
        .await;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    launch(&app, "exp", &ids).await;
    for (contact, step, kind) in [
        ("c0", "send-a", "delivered"),
        ("c0", "send-a", "opened"),
        ("c0", "send-a", "opened"),
        ("c0", "send-a", "clicked"),
        ("c1", "send-a", "delivered"),
        ("c3", "send-b", "delivered"),
    ] {
        let (status, body) = post_json(
            &app,
            "/v1/engagement",
            json!({"contact": contact, "scenario": "exp", "step": step, "kind": kind}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    let (status, report) = get(&app, "/v1/scenarios/exp/report").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["scenario"], "exp");
    // Computed apart from the code, with Python: int.from_bytes(sha256(f"exp:holdout:c{i}"
    // .encode()).digest()[:8], "big") % 10000 < 3000 holds out c6, c12 and c19; of the others,
    // the bucket of f"exp:ab:c{i}" below 5000 sends c0 c1 c2 c4 c7 c9 c11 c17 c18 to send-a.
    assert_eq!(report["total"]["entries"], 20, "{report}");
    assert_eq!(report["holdout"]["held_out"]["entries"], 3, "{report}");
    assert_eq!(report["holdout"]["treated"]["entries"], 17, "{report}");
    // Nothing converts yet: equal rates, no lift, p = 1; rates are numbers, intervals too.
    assert_eq!(report["total"]["converted"], 0);
    assert_eq!(report["total"]["rate"], 0.0);
    assert_eq!(report["total"]["interval"]["low"], 0.0);
    assert_eq!(report["holdout"]["lift"]["absolute"], 0.0);
    assert_eq!(report["holdout"]["lift"]["relative"], Value::Null);
    assert_eq!(report["holdout"]["lift"]["p_value"], 1.0);

    let steps = &report["steps"];
    let ids: Vec<&str> = steps
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["ab", "send-a", "send-b", "done"], "{report}");
    let paths = &steps[0]["paths"];
    assert_eq!(paths[0]["path"], "send-a");
    assert_eq!(paths[0]["entries"], 9, "{paths}");
    assert_eq!(paths[0]["sent"], 9, "{paths}");
    assert_eq!(paths[0]["delivered"], 2, "{paths}");
    assert_eq!(paths[0]["opened"], 1, "{paths}");
    assert_eq!(paths[0]["clicked"], 1, "{paths}");
    assert_eq!(paths[1]["path"], "send-b");
    assert_eq!(paths[1]["entries"], 8, "{paths}");
    assert_eq!(paths[1]["delivered"], 1, "{paths}");
    assert_eq!(paths[1]["opened"], 0, "{paths}");
    let send_a = &steps[1];
    assert_eq!(
        [
            &send_a["entered"],
            &send_a["sent"],
            &send_a["delivered"],
            &send_a["opened"]
        ],
        [9, 9, 2, 1],
        "{send_a}"
    );
    assert_eq!(steps[3]["entered"], 17, "{report}");

    // The journal counts the same.
    let (_, counts) = get(&app, "/v1/scenarios/exp/journal").await;
    assert_eq!(counts["steps"]["ab"]["assigned"]["send-a"], 9, "{counts}");
    assert_eq!(counts["ends"]["held_out"], 3, "{counts}");
}

// ---------------------------------------------------------------------------------------------
// Error paths
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_naming_the_field() {
    let app = app("bad-bodies");

    // Malformed JSON.
    for body in [
        "{",
        "not json",
        "{\"contact\": {\"id\": \"c1\"}",
        "{\"contact\": {\"id\": ",
    ] {
        let r = post(&app, "/v1/contacts", body, JSON).await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));
    }
    // Trailing bytes after a good body.
    let r = post(
        &app,
        "/v1/contacts",
        "{\"contact\": {\"id\": \"c1\"}} x",
        JSON,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));
    // An empty body.
    let r = post(&app, "/v1/events", "", JSON).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));

    // A missing field.
    let r = post_json(&app, "/v1/events", json!({"contact": "c1"})).await;
    let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("event"));
    assert!(message.contains("missing field \"event\""), "{message}");
    let r = post_json(&app, "/v1/contacts", json!({})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contact"));

    // A wrong enum value.
    let r = post_json(
        &app,
        "/v1/engagement",
        json!({"contact": "c1", "scenario": "hello", "step": "first", "kind": "read"}),
    )
    .await;
    let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("kind"));
    assert!(message.contains("read"), "{message}");

    // A wrong type, deeper down.
    let r = post_json(
        &app,
        "/v1/launch",
        json!({"scenario": "s", "contacts": [1]}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contacts[0]"));
    let r = post_json(&app, "/v1/contacts", json!({"contact": "c1"})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contact"));
    let r = post_json(
        &app,
        "/v1/contacts",
        json!({"contact": {"id": "c1"}, "at": "yesterday"}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("at"));

    // An unknown field.
    let r = post_json(
        &app,
        "/v1/contacts",
        json!({"contact": {"id": "c1"}, "extra": 1}),
    )
    .await;
    let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("extra"));
    assert!(message.contains("unknown field \"extra\""), "{message}");
    let r = post_json(
        &app,
        "/v1/scenarios/hello/launch",
        json!({"contact": ["c1"]}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contact"));

    // A contact without an id, or with an empty one.
    let r = post_json(
        &app,
        "/v1/contacts",
        json!({"contact": {"email": "x@example.org"}}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contact.id"));
    for id in [json!(""), json!("  "), json!(null), json!(true)] {
        let r = post_json(&app, "/v1/contacts", json!({"contact": {"id": id}})).await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some("contact.id"));
    }
    // A reserved key of the wrong shape.
    let r = post_json(
        &app,
        "/v1/contacts",
        json!({"contact": {"id": "c1", "tags": 3}}),
    )
    .await;
    let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("contact.tags"));
    assert!(message.contains("list"), "{message}");

    // An empty event name.
    let r = post_json(&app, "/v1/events", json!({"contact": "c1", "event": " "})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("event"));

    // Non-UTF-8 bodies.
    let bad = vec![0xff_u8, 0xfe, b'i', b'd'];
    let r = post(&app, "/v1/scenarios", bad.clone(), YAML).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));
    let r = post(&app, "/v1/scenarios/validate", bad.clone(), YAML).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));
    // An import reports the line that is not UTF-8 (and imports the others).
    let (status, report) = post(&app, "/v1/contacts/import", bad.clone(), "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["rejected"][0]["line"], 1, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    let r = post(&app, "/v1/contacts", bad, JSON).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("body"));

    // Nothing was written by any of these.
    let (status, list) = get(&app, "/v1/scenarios").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));
    put_scenario(&app, HELLO).await;
    activate(&app, "hello").await;
    let report = launch(&app, "hello", &["c1"]).await;
    assert_eq!(report["entered"], 0, "{report}");
    assert_eq!(report["not_found"], json!(["c1"]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_scenarios_are_404_and_the_lifecycle_is_409() {
    let app = app("lifecycle");
    add_contact(&app, json!({"id": "c1", "email": "c1@example.org"})).await;

    let r = post_json(
        &app,
        "/v1/engagement",
        json!({"contact": "c1", "scenario": "nope", "step": "first", "kind": "opened"}),
    )
    .await;
    let message = assert_error(&r, StatusCode::NOT_FOUND, None);
    assert!(message.contains("nope"), "{message}");
    let r = post_json(&app, "/v1/scenarios/nope/launch", json!({})).await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = post_json(&app, "/v1/launch", json!({"scenario": "nope"})).await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = post(&app, "/v1/scenarios/nope/activate", "", JSON).await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = get(&app, "/v1/scenarios/nope/journal").await;
    assert_error(&r, StatusCode::NOT_FOUND, None);
    let r = get(&app, "/v1/scenarios/nope/report").await;
    let message = assert_error(&r, StatusCode::NOT_FOUND, None);
    assert!(message.contains("nope"), "{message}");
    let r = get(&app, "/v1/scenarios/nope/contacts/c1").await;
    assert_error(&r, StatusCode::NOT_FOUND, None);

    // A draft takes no entries.
    put_scenario(&app, HELLO).await;
    let r = post_json(
        &app,
        "/v1/scenarios/hello/launch",
        json!({"contacts": ["c1"]}),
    )
    .await;
    let message = assert_error(&r, StatusCode::CONFLICT, None);
    assert!(message.contains("draft"), "{message}");
    // An empty body launches the audience, which a draft refuses just the same.
    let r = post(&app, "/v1/scenarios/hello/launch", "", JSON).await;
    assert_error(&r, StatusCode::CONFLICT, None);
    // Engagement for a contact that does not exist.
    let r = post_json(
        &app,
        "/v1/engagement",
        json!({"contact": "ghost", "scenario": "hello", "step": "first", "kind": "opened"}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contact"));

    // A draft cannot be paused; an archived scenario cannot come back.
    let r = post(&app, "/v1/scenarios/hello/pause", "", JSON).await;
    assert_error(&r, StatusCode::CONFLICT, None);
    let (status, body) = post(&app, "/v1/scenarios/hello/archive", "", JSON).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "archived");
    let r = post(&app, "/v1/scenarios/hello/activate", "", JSON).await;
    let message = assert_error(&r, StatusCode::CONFLICT, None);
    assert!(message.contains("archived"), "{message}");
    let r = post_json(
        &app,
        "/v1/scenarios/hello/launch",
        json!({"contacts": ["c1"]}),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, None);

    let (_, path) = get(&app, "/v1/scenarios/hello/contacts/c1").await;
    assert_eq!(path, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_with_errors_are_kept_as_drafts_but_do_not_activate() {
    let app = app("invalid");
    let broken = include_str!("../../../../examples/broken/unknown-references.yaml");

    // It reads well enough to be stored, with its problems.
    let (status, body) = post(&app, "/v1/scenarios", broken, YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "broken-unknown-references");
    assert_eq!(body["status"], "draft");
    let problems = body["problems"].as_array().map_or(0, Vec::len);
    assert!(problems > 0, "{body}");

    let r = post(
        &app,
        "/v1/scenarios/broken-unknown-references/activate",
        "",
        JSON,
    )
    .await;
    let message = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, None);
    assert!(message.contains("welcom"), "{message}");
    let problems = r.1["error"]["problems"].as_array().map_or(0, Vec::len);
    assert!(problems > 0, "{}", r.1);

    // Refused activation leaves it a draft.
    let (_, list) = get(&app, "/v1/scenarios").await;
    assert_eq!(list[0]["status"], "draft", "{list}");
    assert_eq!(list[0]["active_version"], Value::Null, "{list}");

    // Text without an id cannot be stored at all.
    for text in [
        "name: no id\nsteps: []\n",
        "id: Not Valid!\nsteps: []\n",
        "{{{",
        "",
    ] {
        let r = post(&app, "/v1/scenarios", text, YAML).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, None);
        let problems = r.1["error"]["problems"].as_array().map_or(0, Vec::len);
        assert!(problems > 0, "{text:?}: {}", r.1);
    }
    // JSON too, chosen by the content type.
    let r = post(&app, "/v1/scenarios", "{\"name\": \"x\"}", JSON).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, None);
    let (_, list) = get(&app, "/v1/scenarios").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Validation alone never stores.
    let (status, body) = post(&app, "/v1/scenarios/validate", HELLO, YAML).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["errors"], 0, "{body}");
    let (status, body) = post(&app, "/v1/scenarios/validate", broken, YAML).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["errors"].as_u64().unwrap_or(0) > 0, "{body}");
    let (_, list) = get(&app, "/v1/scenarios").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_writes_nothing() {
    let app = app("nothing-half-written");
    put_scenario(&app, HELLO).await;
    activate(&app, "hello").await;
    add_contact(
        &app,
        json!({"id": "c1", "email": "c1@example.org", "first_name": "C"}),
    )
    .await;
    launch(&app, "hello", &["c1"]).await;
    app.outbox_at_least(1).await;
    let (_, journal_before) = get(&app, "/v1/scenarios/hello/journal").await;
    let path_before = path_of(&app, "hello", "c1").await;

    // Contacts refused at each stage: decoding, the API's id check, the runtime's check.
    for body in [
        json!({"contact": {"id": "c2", "email": "c2@example.org"}, "extra": true}),
        json!({"contact": {"id": "c2", "email": "c2@example.org"}, "action": "deleted"}),
        json!({"contact": {"id": "c2", "email": "c2@example.org", "tags": 1}}),
        json!({"contact": {"email": "c2@example.org"}}),
        json!({"contact": {"id": "c1", "first_name": "Changed"}, "at": 5}),
    ] {
        let (status, answer) = post_json(&app, "/v1/contacts", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let report = launch(&app, "hello", &["c2"]).await;
    assert_eq!(report["not_found"], json!(["c2"]), "{report}");

    // A refused engagement and a refused launch change no journal.
    let r = post_json(
        &app,
        "/v1/engagement",
        json!({"contact": "c1", "scenario": "hello", "step": "first", "kind": "read"}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("kind"));
    let r = post_json(
        &app,
        "/v1/scenarios/hello/launch",
        json!({"contacts": ["c1", 2]}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("contacts[1]"));
    let (_, journal_after) = get(&app, "/v1/scenarios/hello/journal").await;
    assert_eq!(journal_after, journal_before);
    assert_eq!(path_of(&app, "hello", "c1").await, path_before);

    // c1's stored fields did not change: launching again renders the first name it had.
    let report = launch(&app, "hello", &["c1"]).await;
    assert_eq!(report["entered"], 1, "{report}");
    let lines = app.outbox_at_least(2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[1]["send"]["content"]["subject"], "Hi C");
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_report_each_row_and_launch_after_import_scenarios_for_added_contacts() {
    let app = app("import");
    put_scenario(&app, WELCOME_IMPORTED).await;
    activate(&app, "welcome-imported").await;

    let csv =
        "id,email,first_name\ni1,i1@example.org,Ivy\n,nobody@example.org,No\ni3,i3@example.org\n";
    let (status, report) = post(&app, "/v1/contacts/import", csv, "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["modified"], 0, "{report}");
    assert_eq!(report["unchanged"], 0, "{report}");
    let rejected = report["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        rejected
            .iter()
            .map(|r| r["line"].clone())
            .collect::<Vec<_>>(),
        [json!(3), json!(4)],
        "{report}"
    );
    assert!(
        rejected[0]["reason"].as_str().unwrap_or("").contains("id"),
        "{report}"
    );

    // The same file again changes nothing and launches nobody.
    let (status, report) = post(&app, "/v1/contacts/import", csv, "text/csv; charset=utf-8").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    assert_eq!(report["unchanged"], 1, "{report}");
    assert_eq!(report["rejected"].as_array().map(Vec::len), Some(2));

    // JSON lines: one new contact, one change to i1, one bad line.
    let lines = "{\"id\": \"j1\", \"email\": \"j1@example.org\"}\nnot json\n\n{\"id\": \"i1\", \"first_name\": \"Ivy-May\"}\n{\"email\": \"x@example.org\"}\n";
    let (status, report) = post(&app, "/v1/contacts/import", lines, "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["modified"], 1, "{report}");
    let rejected = report["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        rejected
            .iter()
            .map(|r| r["line"].clone())
            .collect::<Vec<_>>(),
        [json!(2), json!(5)],
        "{report}"
    );

    // Only the added contacts entered: i1 once, j1 once.
    let (_, counts) = get(&app, "/v1/scenarios/welcome-imported/journal").await;
    assert_eq!(counts["entered"], 2, "{counts}");
    assert_eq!(
        kinds(&path_of(&app, "welcome-imported", "i1").await),
        ["entered", "sent", "ended"]
    );
    assert_eq!(
        kinds(&path_of(&app, "welcome-imported", "j1").await),
        ["entered", "sent", "ended"]
    );
    let sent = app.outbox_at_least(2).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sends_to(&sent, "i1").len(), 1);
    assert_eq!(sends_to(&sent, "j1").len(), 1);

    // An empty file is an empty report.
    let (status, report) = post(&app, "/v1/contacts/import", "", "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"added": 0, "modified": 0, "unchanged": 0, "consent_kept": 0, "rejected": []})
    );
}

// ---------------------------------------------------------------------------------------------
// Engagement
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_resumes_the_wait_once() {
    let app = app("engagement");
    put_scenario(&app, NUDGE).await;
    activate(&app, "nudge").await;
    add_contact(&app, json!({"id": "c1", "email": "c1@example.org"})).await;
    launch(&app, "nudge", &["c1"]).await;
    let lines = app.outbox_at_least(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        kinds(&path_of(&app, "nudge", "c1").await),
        ["entered", "sent", "waiting"]
    );

    // The opening comes a minute after the send: a wait counts what happens after it began.
    app.clock.set(t0() + TimeDelta::minutes(1));
    let opened = json!({"contact": "c1", "scenario": "nudge", "step": "first", "kind": "opened"});
    let (status, body) = post_json(&app, "/v1/engagement", opened.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let lines = app.outbox_at_least(2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[1]["send"]["step"], "thanks");
    assert_eq!(lines[1]["send"]["content"]["subject"], "Thanks for reading");

    let path = path_of(&app, "nudge", "c1").await;
    assert_eq!(
        kinds(&path),
        [
            "entered", "sent", "waiting", "opened", "resumed", "sent", "ended"
        ],
        "{path}"
    );
    assert_eq!(path[3]["step"], "first", "{path}");
    assert_eq!(path[4]["reason"], "event", "{path}");
    assert_eq!(path[4]["step"], "wait", "{path}");

    // The same opening again finds nothing waiting.
    let (status, body) = post_json(&app, "/v1/engagement", opened).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.sync().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.outbox_lines().len(), 2);
    // The opening is journaled (a second engagement), and nothing moves.
    assert_eq!(kinds(&path_of(&app, "nudge", "c1").await)[7..], ["opened"]);

    // Nor does the timeout fire later.
    app.advance(TimeDelta::days(3)).await;
    assert_eq!(app.outbox_lines().len(), 2);
    let (_, counts) = get(&app, "/v1/scenarios/nudge/journal").await;
    assert_eq!(counts["ends"]["success"], 1, "{counts}");
}

// ---------------------------------------------------------------------------------------------
// Version pinning
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_enrollments_keep_their_version() {
    let app = app("versions");
    let (status, v1) = post(&app, "/v1/scenarios", later("From v1"), YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    activate(&app, "later").await;
    add_contact(&app, json!({"id": "a", "email": "a@example.org"})).await;
    add_contact(&app, json!({"id": "b", "email": "b@example.org"})).await;
    assert_eq!(launch(&app, "later", &["a"]).await["entered"], 1);

    // A changed text of an active scenario becomes the active version at once.
    let (status, v2) = post(&app, "/v1/scenarios", later("From v2"), YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(v2["changed"], true, "{v2}");
    assert_eq!(v2["status"], "active", "{v2}");
    assert_eq!(v2["active_version"], 2, "{v2}");
    app.clock.set(t0() + TimeDelta::hours(1));
    assert_eq!(launch(&app, "later", &["b"]).await["entered"], 1);

    // Nothing is due yet.
    app.advance(TimeDelta::hours(23)).await;
    assert_eq!(app.outbox_lines().len(), 0);

    // A's day is up: it gets v1's message; B waits an hour more for v2's.
    app.advance(TimeDelta::hours(24) + TimeDelta::minutes(1))
        .await;
    let lines = app.outbox_at_least(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(sends_to(&lines, "a")[0]["content"]["subject"], "From v1");

    // Any cheap job wakes the runner too.
    app.clock
        .set(t0() + TimeDelta::hours(25) + TimeDelta::minutes(1));
    let report = launch(&app, "later", &[]).await;
    assert_eq!(report["entered"], 0, "{report}");
    let lines = app.outbox_at_least(2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(sends_to(&lines, "b")[0]["content"]["subject"], "From v2");
    assert_eq!(sends_to(&lines, "a").len(), 1);

    let (_, counts) = get(&app, "/v1/scenarios/later/journal").await;
    assert_eq!(counts["entered"], 2, "{counts}");
    assert_eq!(counts["steps"]["send"]["sent"], 2, "{counts}");
    assert_eq!(counts["ends"]["success"], 2, "{counts}");

    // A version with errors is stored, but new entries stay on the last good one.
    let broken = later("From v3").replace("send: m", "send: nope");
    let (status, v3) = post(&app, "/v1/scenarios", broken, YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{v3}");
    assert_eq!(v3["version"], 3, "{v3}");
    assert_eq!(v3["active_version"], 2, "{v3}");
    assert!(
        v3["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "{v3}"
    );
    // Posting v1's text again is a new version (4), not a return to 1.
    let (status, v4) = post(&app, "/v1/scenarios", later("From v1"), YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{v4}");
    assert_eq!(v4["version"], 4, "{v4}");
    assert_eq!(v4["active_version"], 4, "{v4}");
}

// ---------------------------------------------------------------------------------------------
// Regressions: reactions to held scenarios, and contacts listed twice in one import.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engagement_does_not_advance_a_paused_or_archived_scenario() {
    let app = app("engagement-paused");
    put_scenario(&app, NUDGE).await;
    activate(&app, "nudge").await;
    add_contact(&app, json!({"id": "c1", "email": "c1@example.org"})).await;
    add_contact(&app, json!({"id": "c2", "email": "c2@example.org"})).await;
    launch(&app, "nudge", &["c1", "c2"]).await;
    app.outbox_at_least(2).await;

    let (status, body) = post(&app, "/v1/scenarios/nudge/pause", "", JSON).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let opened = json!({"contact": "c1", "scenario": "nudge", "step": "first", "kind": "opened"});
    let (status, body) = post_json(&app, "/v1/engagement", opened).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let (status, body) = post(&app, "/v1/scenarios/nudge/archive", "", JSON).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let opened = json!({"contact": "c2", "scenario": "nudge", "step": "first", "kind": "opened"});
    let (status, body) = post_json(&app, "/v1/engagement", opened).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    app.sync().await;
    // Held (paused) and retired (archived) scenarios send nothing more.
    assert_eq!(app.outbox_lines().len(), 2, "{:#?}", app.outbox_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_twice_in_one_import_enters_once() {
    let app = app("import-twice");
    put_scenario(
        &app,
        &WELCOME_IMPORTED.replace("contacts: added", "contacts: all"),
    )
    .await;
    activate(&app, "welcome-imported").await;
    let csv = "id,email
d1,d1@example.org
d1,d1@example.org
";
    let (status, report) = post(&app, "/v1/contacts/import", csv, "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, counts) = get(&app, "/v1/scenarios/welcome-imported/journal").await;
    assert_eq!(counts["entered"], 1, "{counts}");
    app.sync().await;
    assert_eq!(app.outbox_lines().len(), 1, "{:#?}", app.outbox_lines());
}

// ---------------------------------------------------------------------------------------------
// One-click unsubscribe (RFC 8058)
// ---------------------------------------------------------------------------------------------

/// A raw request: (status, body text).
async fn raw(app: &App, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, bytes) = call_raw(app, request).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The token in a send line's `List-Unsubscribe` header.
fn token_of(line: &Value) -> String {
    let header = line["headers"]["List-Unsubscribe"]
        .as_str()
        .unwrap_or_else(|| panic!("no List-Unsubscribe header: {line}"));
    assert_eq!(
        line["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click",
        "{line}"
    );
    let start = header.find("token=").unwrap_or_else(|| panic!("{header}")) + 6;
    let end = header[start..]
        .find('>')
        .map_or(header.len(), |i| start + i);
    header[start..end].to_string()
}

const NEWSLETTER: &str = "\
id: news
timezone: UTC
launch: {type: manual}
messages:
  first: {channel: email, type: newsletter, subject: News, text: x}
  second: {channel: email, type: newsletter, subject: More, text: y}
steps:
  - {id: first, send: first, next: wait}
  - id: wait
    wait_for: {unsubscribed: first, timeout: P2D}
    on_event: gone
    on_timeout: second
  - {id: second, send: second, next: done}
  - {id: gone, end: abandon}
  - {id: done, end: success}
";

#[tokio::test]
async fn one_click_unsubscribe_takes_a_signed_token_and_refuses_a_forged_one() {
    let links = UnsubscribeLinks {
        base_url: "https://example.org/unsubscribe".into(),
        secret: b"test secret".to_vec(),
        mailto: Some("unsubscribe@example.org".into()),
    };
    let app = app_with("unsubscribe", Some(links));
    put_scenario(&app, NEWSLETTER).await;
    activate(&app, "news").await;
    add_contact(&app, json!({"id": "ana", "email": "ana@example.org"})).await;
    add_contact(&app, json!({"id": "bob", "email": "bob@example.org"})).await;
    launch(&app, "news", &["ana", "bob"]).await;
    let lines = app.outbox_at_least(2).await;
    let line_to = |c: &str| {
        lines
            .iter()
            .find(|l| l["send"]["contact"] == c)
            .unwrap_or_else(|| panic!("no send to {c}: {lines:#?}"))
    };
    let ana = token_of(line_to("ana"));
    let bob = token_of(line_to("bob"));
    let header = line_to("ana")["headers"]["List-Unsubscribe"].to_string();
    assert!(
        header.contains("<https://example.org/unsubscribe?token=")
            && header.contains("mailto:unsubscribe@example.org"),
        "{header}"
    );

    // A GET (a link scanner) shows a confirmation form and changes nothing.
    let (status, html) = raw(&app, Method::GET, &format!("/unsubscribe?token={ana}"), "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<form method=\"post\""), "{html}");
    assert!(!kinds(&path_of(&app, "news", "ana").await).contains(&"ended"));

    // Bob's claim with Ana's signature, a damaged token, no token: refused, nothing changes.
    let forged = format!(
        "{}.{}",
        bob.split('.').next().unwrap_or_default(),
        ana.split('.').nth(1).unwrap_or_default()
    );
    let (status, _) = raw(
        &app,
        Method::POST,
        &format!("/unsubscribe?token={forged}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = raw(&app, Method::POST, "/unsubscribe?token=garbage", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = raw(&app, Method::POST, "/unsubscribe", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // An hour later, the one-click POST: Ana is unsubscribed, her wait ends; a repeat is
    // harmless.
    app.advance(TimeDelta::hours(1)).await;
    for _ in 0..2 {
        let (status, html) = raw(
            &app,
            Method::POST,
            &format!("/unsubscribe?token={ana}"),
            "List-Unsubscribe=One-Click",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(
            html.contains("unsubscribed from &quot;newsletter&quot;"),
            "{html}"
        );
    }
    let path = path_of(&app, "news", "ana").await;
    assert!(kinds(&path).contains(&"ended"), "{path}");

    // Two days later Bob, still subscribed, gets the second email; Ana gets nothing more.
    app.advance(TimeDelta::days(3)).await;
    let lines = app.outbox_at_least(3).await;
    assert_eq!(sends_to(&lines, "bob").len(), 2, "{lines:#?}");
    assert_eq!(sends_to(&lines, "ana").len(), 1, "{lines:#?}");
    let bob_path = path_of(&app, "news", "bob").await;
    assert!(!kinds(&bob_path).contains(&"exited"), "{bob_path}");
}

#[tokio::test]
async fn without_a_secret_there_is_no_header_and_the_endpoint_says_so() {
    let app = app("no-unsubscribe");
    put_scenario(&app, HELLO).await;
    activate(&app, "hello").await;
    add_contact(
        &app,
        json!({"id": "ana", "email": "ana@example.org", "first_name": "Ana"}),
    )
    .await;
    launch(&app, "hello", &["ana"]).await;
    let lines = app.outbox_at_least(1).await;
    assert!(lines[0].get("headers").is_none(), "{}", lines[0]);
    let (status, _) = raw(&app, Method::POST, "/unsubscribe?token=a.b", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Hostile callers (issue 11, finding 1; SECURITY.md): the token, the content types, the host
// ---------------------------------------------------------------------------------------------

/// Every route of the API with a method it answers, and a body it would take.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/v1/scenarios", ""),
    ("POST", "/v1/scenarios", "id: x\n"),
    ("POST", "/v1/scenarios/validate", "id: x\n"),
    ("POST", "/v1/scenarios/hello/activate", ""),
    ("POST", "/v1/scenarios/hello/pause", ""),
    ("POST", "/v1/scenarios/hello/archive", ""),
    ("POST", "/v1/scenarios/hello/launch", "{}"),
    ("GET", "/v1/scenarios/hello/journal", ""),
    ("GET", "/v1/scenarios/hello/report", ""),
    ("GET", "/v1/scenarios/hello/contacts/c1", ""),
    ("POST", "/v1/contacts", "{\"contact\": {\"id\": \"c1\"}}"),
    ("POST", "/v1/contacts/import", "id\nc1\n"),
    (
        "POST",
        "/v1/events",
        "{\"contact\": \"c1\", \"event\": \"x\"}",
    ),
    (
        "POST",
        "/v1/engagement",
        "{\"contact\": \"c1\", \"scenario\": \"hello\", \"step\": \"s\", \"kind\": \"complained\"}",
    ),
    ("POST", "/v1/launch", "{\"scenario\": \"hello\"}"),
    ("GET", "/metrics", ""),
    ("GET", "/v1/no-such-route", ""),
];

fn request(method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method.parse::<Method>().unwrap_or_else(|e| panic!("{e}")))
        .uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The state every refused request must have left untouched.
async fn nothing_written(app: &App) {
    let (_, list) = get(app, "/v1/scenarios").await;
    assert_eq!(list, json!([]), "a refused request wrote a scenario");
    app.sync().await;
    assert!(app.outbox_lines().is_empty(), "{:#?}", app.outbox_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_every_route_but_health_and_unsubscribe_needs_the_token() {
    let app = app("hostile-token");
    for (method, path, body) in ROUTES {
        for auth in [None, Some("Bearer wrong-token"), Some("Basic dXNlcjpwYXNz")] {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let (status, bytes) =
                call_unauthenticated(&app, request(method, path, body, &headers)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            let error: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(error["error"]["field"], "Authorization", "{error}");
        }
    }
    nothing_written(&app).await;
    // The open routes stay open.
    let (status, _) = call_unauthenticated(&app, request("GET", "/v1/health", "", &[])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        call_unauthenticated(&app, request("GET", "/unsubscribe?token=x", "", &[])).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cross_site_form_post_stores_and_launches_nothing() {
    let app = app("hostile-csrf");
    add_contact(&app, json!({"id": "c1", "email": "c1@example.org"})).await;
    // What a web page can send across sites without a preflight: a form (text/plain,
    // urlencoded or multipart), no Authorization header.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for (path, body) in [
            ("/v1/scenarios", HELLO),
            ("/v1/scenarios/hello/activate", ""),
            ("/v1/scenarios/hello/launch", "{}"),
        ] {
            let r = request("POST", path, body, &[("content-type", content_type)]);
            let (status, _) = call_unauthenticated(&app, r).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{content_type} {path}");
            // Even with the token (a leaked one, a misconfigured proxy adding it), a simple
            // content type is refused before the handler.
            let (status, body) = post(&app, path, body.to_string(), content_type).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type} {path}: {body}"
            );
            assert_eq!(body["error"]["field"], "Content-Type", "{body}");
        }
    }
    // A body without any content type is refused too; an empty one is fine.
    let r = request(
        "POST",
        "/v1/events",
        "{\"contact\": \"c1\", \"event\": \"x\"}",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-length", "34"),
        ],
    );
    let (status, _) = call_unauthenticated(&app, r).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    nothing_written(&app).await;
    // The routes' own types still work.
    put_scenario(&app, HELLO).await;
    let (status, body) = post(
        &app,
        "/v1/contacts/import",
        "id\nc2\n".to_string(),
        "text/csv",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_foreign_host_names_are_refused() {
    let app = app("hostile-host");
    add_contact(&app, json!({"id": "c1", "email": "c1@example.org"})).await;
    let bearer = format!("Bearer {TOKEN}");
    // DNS rebinding: a page on evil.example whose name now resolves to this server.
    for host in [
        "evil.example",
        "evil.example:8787",
        "relance.example.com.evil.example",
    ] {
        let r = request(
            "GET",
            "/v1/scenarios/hello/contacts/c1",
            "",
            &[("host", host), ("authorization", &bearer)],
        );
        let (status, bytes) = call_unauthenticated(&app, r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{host}");
        let error: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(error["error"]["field"], "Host", "{error}");
    }
    // IP literals, localhost and the configured name are answered.
    for host in [
        "127.0.0.1:8787",
        "localhost:8787",
        "[::1]:8787",
        "relance.example.com",
    ] {
        let r = request(
            "GET",
            "/v1/scenarios",
            "",
            &[("host", host), ("authorization", &bearer)],
        );
        let (status, _) = call_unauthenticated(&app, r).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oversized_body_gets_a_json_413() {
    let app = app("hostile-413");
    let big = format!("id: x\nname: \"{}\"\n", "a".repeat(3 * 1024 * 1024));
    let (status, body) = post(&app, "/v1/scenarios", big, YAML).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{body}"
    );
    nothing_written(&app).await;
}

/// Issue 11, finding 2: an instant outside 1970..9999 is a 400 naming `at`, never a 500; an
/// event at 9999-12-31T23:30 whose inactivity check would fall past 9999 is refused the same
/// way, stores nothing, and the runner goes on firing the other contacts' checks.
#[tokio::test]
async fn hostile_out_of_range_instants_are_a_400_naming_at() {
    let app = app("hostile-instants");
    put_scenario(
        &app,
        "id: cart\nlaunch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}\nmessages:\n  m: {channel: email, subject: s, text: x}\nsteps:\n  - {id: send, send: m, next: done}\n  - {id: done, end: success}\n",
    )
    .await;
    activate(&app, "cart").await;
    add_contact(&app, json!({"id": "a", "email": "a@x.io"})).await;
    add_contact(&app, json!({"id": "b", "email": "b@x.io"})).await;
    for (path, body) in [
        (
            "/v1/events",
            json!({"contact": "a", "event": "cart.updated", "at": "0001-01-01T00:00:00Z"}),
        ),
        (
            "/v1/events",
            json!({"contact": "a", "event": "cart.updated", "at": "1969-12-31T23:59:59Z"}),
        ),
        (
            "/v1/contacts",
            json!({"contact": {"id": "a"}, "at": "0000-01-01T00:00:00Z"}),
        ),
        (
            "/v1/engagement",
            json!({"contact": "a", "scenario": "cart", "step": "send", "kind": "opened", "at": "1900-01-01T00:00:00Z"}),
        ),
    ] {
        let r = post_json(&app, path, body).await;
        let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("at"));
        assert!(
            message.contains("outside 1970-01-01..9999-12-31"),
            "{message}"
        );
    }
    let r = post_json(
        &app,
        "/v1/events",
        json!({"contact": "a", "event": "cart.updated", "at": "9999-12-31T23:30:00Z"}),
    )
    .await;
    let message = assert_error(&r, StatusCode::BAD_REQUEST, Some("at"));
    assert!(message.contains("past 9999-12-31"), "{message}");
    // b's check, in range, still fires.
    let r = post_json(
        &app,
        "/v1/events",
        json!({"contact": "b", "event": "cart.updated"}),
    )
    .await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    app.advance(TimeDelta::minutes(31)).await;
    let lines = app.outbox_at_least(1).await;
    assert_eq!(sends_to(&lines, "b").len(), 1, "{lines:#?}");
    assert!(sends_to(&lines, "a").is_empty(), "{lines:#?}");
}

/// Issue 11, finding 7: a large validation ran on the async worker and stalled every other
/// route (`/v1/health` for 27 s). On a single-threaded runtime, health now answers while the
/// validation is still running on a blocking thread; before, it waited for it to end.
#[tokio::test(flavor = "current_thread")]
async fn hostile_large_validation_does_not_stall_health() {
    let app = Arc::new(app("validation-off-workers"));
    let mut big = String::from(
        "id: big\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  hello: {channel: email, subject: Hello, text: Hello}\n",
    );
    for i in 0..40_000 {
        big.push_str(&format!("  u{i}: {{channel: sms, text: x}}\n"));
    }
    big.push_str(
        "steps:\n  - {id: first, send: hello, next: done}\n  - {id: done, end: success}\n",
    );
    let validating = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, "/v1/scenarios/validate", big, YAML).await })
    };
    // Let the validation start before asking for health.
    tokio::task::yield_now().await;
    let (status, body) = get(&app, "/v1/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !validating.is_finished(),
        "health answered only after the validation"
    );
    let (status, body) = validating.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["errors"], 0, "{body}");
    let problems = body["problems"].as_array().map_or(0, Vec::len);
    assert_eq!(problems, 1_001, "capped at 1,000 and one counting the rest");
}

/// A scenario posted to `/v1/scenarios` is read off the runner first: one that does not read
/// (here nested past the reader's limit, which it used to take minutes to find, with the
/// runner and every request behind it waiting) is refused with the same 422 as before, and the
/// runner answers events meanwhile and after.
#[tokio::test]
async fn hostile_unreadable_scenario_is_refused_off_the_runner() {
    let app = Arc::new(app("scenario-read-off-runner"));
    let deep = format!(
        "id: deep\nname: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, body) = post(&app, "/v1/scenarios", deep, YAML).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("collections nested deeper than 128 levels"),
        "{body}"
    );
    let (status, body) = post(&app, "/v1/scenarios", "id: [broken".to_string(), YAML).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("YAML syntax"), "{body}");
    let (status, body) = get(&app, "/v1/scenarios").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body.as_array().map_or(1, Vec::len),
        0,
        "nothing stored: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Consent (issue 11, finding 5): opt-outs are a log that updates and imports cannot undo
// ---------------------------------------------------------------------------------------------

/// One newsletter email to whoever is launched, under its own id (each check launches anew).
fn one_newsletter(id: &str) -> String {
    format!(
        "\
id: {id}
timezone: UTC
launch: {{type: manual}}
messages:
  m: {{channel: email, type: newsletter, subject: News, text: x}}
steps:
  - {{id: first, send: m, next: done}}
  - {{id: done, end: success}}
"
    )
}

/// Puts, activates and launches a one-newsletter scenario for `contact`; answers how many
/// sends to the contact the outbox holds afterwards and the contact's path.
async fn newsletter_to(app: &App, id: &str, contact: &str) -> (usize, Value) {
    put_scenario(app, &one_newsletter(id)).await;
    activate(app, id).await;
    launch(app, id, &[contact]).await;
    app.sync().await;
    let sends = app
        .outbox_lines()
        .iter()
        .filter(|l| l["kind"] == "send" && l["send"]["contact"] == contact && l["scenario"] == id)
        .count();
    (sends, path_of(app, id, contact).await)
}

/// The contact's consent trail through the API.
async fn trail_of(app: &App, contact: &str) -> Vec<Value> {
    let (status, body) = get(app, &format!("/v1/consent/{contact}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["trail"]
        .as_array()
        .unwrap_or_else(|| panic!("no trail: {body}"))
        .clone()
}

#[tokio::test]
async fn hostile_resubscribe_by_update_after_one_click_unsubscribe_is_kept() {
    let links = UnsubscribeLinks {
        base_url: "https://example.org/unsubscribe".into(),
        secret: b"test secret".to_vec(),
        mailto: None,
    };
    let app = app_with("consent-resubscribe", Some(links));
    add_contact(&app, json!({"id": "ana", "email": "ana@example.org"})).await;
    let (sent, _) = newsletter_to(&app, "n1", "ana").await;
    assert_eq!(sent, 1);
    let line = app
        .outbox_lines()
        .into_iter()
        .find(|l| l["send"]["contact"] == "ana")
        .unwrap_or_else(|| panic!("no send to ana"));
    let token = token_of(&line);
    let (status, html) = raw(
        &app,
        Method::POST,
        &format!("/unsubscribe?token={token}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");

    // The attack: a plain contact update saying subscribed. It is accepted (other fields
    // change), the opt-out stands, and the next newsletter is skipped.
    add_contact(
        &app,
        json!({"id": "ana", "first_name": "Ana", "subscriptions": {"newsletter": true}}),
    )
    .await;
    // The same through a contact event's profile changes.
    let (status, body) = post_json(
        &app,
        "/v1/events",
        json!({"contact": "ana", "event": "contact.updated", "properties": {"subscriptions": {"newsletter": "subscribed"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (sent, path) = newsletter_to(&app, "n2", "ana").await;
    assert_eq!(sent, 0, "an unsubscribed contact was mailed: {path}");
    assert!(
        path.as_array()
            .into_iter()
            .flatten()
            .any(|r| r["kind"] == "skipped" && r["reason"] == "unsubscribed"),
        "{path}"
    );
    let trail = trail_of(&app, "ana").await;
    assert_eq!(trail.len(), 3, "{trail:#?}");
    assert_eq!(
        (&trail[2]["source"], &trail[2]["kept"]),
        (&json!("profile_update"), &json!(true)),
        "{trail:#?}"
    );
    assert_eq!(
        (&trail[0]["state"], &trail[0]["source"], &trail[0]["actor"]),
        (
            &json!("unsubscribed"),
            &json!("unsubscribe_link"),
            &json!("contact")
        ),
        "{trail:#?}"
    );
    assert_eq!(trail[0]["subject"], "newsletter");
    assert_eq!(
        (&trail[1]["state"], &trail[1]["source"], &trail[1]["kept"]),
        (&json!("subscribed"), &json!("api"), &json!(true)),
        "{trail:#?}"
    );

    // Only an explicit consent call with a source re-subscribes.
    let no_source = post_json(
        &app,
        "/v1/consent",
        json!({"contact": "ana", "subscriptions": {"newsletter": true}}),
    )
    .await;
    assert_error(&no_source, StatusCode::BAD_REQUEST, Some("source"));
    let (status, body) = post_json(
        &app,
        "/v1/consent",
        json!({"contact": "ana", "subscriptions": {"newsletter": true}, "source": "preference_center"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["state"], "subscribed", "{body}");
    assert_eq!(body["events"][0]["source"], "preference_center", "{body}");
    let (sent, path) = newsletter_to(&app, "n3", "ana").await;
    assert_eq!(sent, 1, "{path}");
    assert_eq!(trail_of(&app, "ana").await.len(), 4);
}

#[tokio::test]
async fn hostile_import_row_saying_subscribed_keeps_the_opt_out() {
    let app = app("consent-import");
    // An opt-out in an update is honoured (and logged).
    add_contact(
        &app,
        json!({"id": "ana", "email": "ana@example.org", "subscriptions": {"newsletter": false}}),
    )
    .await;
    let csv = "id,email,city,subscriptions.newsletter\nana,ana@example.org,Lyon,true\nbob,bob@example.org,Nice,true\n";
    let (status, report) = post(&app, "/v1/contacts/import", csv, "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["consent_kept"], 1, "{report}");
    assert_eq!(
        (&report["added"], &report["modified"]),
        (&json!(1), &json!(1)),
        "{report}"
    );
    let (sent, path) = newsletter_to(&app, "n1", "ana").await;
    assert_eq!(sent, 0, "an unsubscribed contact was mailed: {path}");
    let (sent, _) = newsletter_to(&app, "n2", "bob").await;
    assert_eq!(sent, 1, "a new contact's opt-in applies");
    let trail = trail_of(&app, "ana").await;
    assert_eq!(
        trail
            .iter()
            .map(|e| (
                e["state"].as_str(),
                e["source"].as_str(),
                e["kept"].as_bool()
            ))
            .collect::<Vec<_>>(),
        vec![
            (Some("unsubscribed"), Some("api"), None),
            (Some("subscribed"), Some("import"), Some(true))
        ],
        "{trail:#?}"
    );
}

#[tokio::test]
async fn hostile_empty_suppressed_list_leaves_a_complaint_suppression() {
    let app = app("consent-suppressed");
    add_contact(&app, json!({"id": "ana", "email": "ana@example.org"})).await;
    let (sent, _) = newsletter_to(&app, "n1", "ana").await;
    assert_eq!(sent, 1);
    let (status, body) = post_json(
        &app,
        "/v1/engagement",
        json!({"contact": "ana", "scenario": "n1", "step": "first", "kind": "complained"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The attack: an update clearing the list (and re-subscribing, for good measure).
    add_contact(
        &app,
        json!({"id": "ana", "suppressed": [], "subscriptions": {"newsletter": true}}),
    )
    .await;
    let (sent, path) = newsletter_to(&app, "n2", "ana").await;
    assert_eq!(sent, 0, "a suppressed address was mailed: {path}");
    assert!(
        path.as_array()
            .into_iter()
            .flatten()
            .any(|r| r["kind"] == "skipped" && r["reason"] == "suppressed"),
        "{path}"
    );
    let trail = trail_of(&app, "ana").await;
    let complaint: Vec<_> = trail
        .iter()
        .filter(|e| e["source"] == "complaint")
        .collect();
    assert_eq!(
        complaint.len(),
        2,
        "unsubscribed and suppressed: {trail:#?}"
    );
    assert!(
        trail.iter().any(|e| e["state"] == "lifted"
            && e["kept"] == true
            && e["subject"] == "ana@example.org"),
        "{trail:#?}"
    );

    // Lifting the suppression needs an explicit call with a reason.
    let no_reason = post_json(
        &app,
        "/v1/consent",
        json!({"contact": "ana", "unsuppress": ["ana@example.org"], "source": "support"}),
    )
    .await;
    assert_error(&no_reason, StatusCode::BAD_REQUEST, Some("reason"));
    let (sent, _) = newsletter_to(&app, "n3", "ana").await;
    assert_eq!(sent, 0, "a refused call changed nothing");
    let (status, body) = post_json(
        &app,
        "/v1/consent",
        json!({"contact": "ana", "unsuppress": ["ana@example.org"], "subscriptions": {"newsletter": true},
               "source": "support", "reason": "ticket 42: the complaint was a mis-click"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2), "{body}");
    let (sent, _) = newsletter_to(&app, "n4", "ana").await;
    assert_eq!(sent, 1);
    let unknown = post_json(
        &app,
        "/v1/consent",
        json!({"contact": "nobody", "subscriptions": {"newsletter": true}, "source": "x"}),
    )
    .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, Some("contact"));
}

// Finding 10 of issue 11: addresses are checked where contacts are written.

#[tokio::test]
async fn hostile_contact_with_a_bad_email_or_phone_is_refused_naming_the_field() {
    let app = app("bad-addresses");
    for (contact, field) in [
        (
            json!({"id": "c1", "email": "ana@example.org\r\nBcc: victim@example.com"}),
            "contact.email",
        ),
        (
            json!({"id": "c1", "email": "not-an-address"}),
            "contact.email",
        ),
        (
            json!({"id": "c1", "email": "ana@example.org, victim@example.com"}),
            "contact.email",
        ),
        (json!({"id": "c1", "email": 42}), "contact.email"),
        (
            json!({"id": "c1", "phone": "06 12 34 56 78"}),
            "contact.phone",
        ),
        (
            json!({"id": "c1", "phone": "+33 6 12\nX: y"}),
            "contact.phone",
        ),
    ] {
        let r = post_json(&app, "/v1/contacts", json!({ "contact": contact })).await;
        assert_error(&r, StatusCode::BAD_REQUEST, Some(field));
    }
    // A profile update carried by an event is a contact write too.
    let r = post_json(
        &app,
        "/v1/events",
        json!({"contact": "c1", "event": "contact.updated", "properties": {"email": "a@example.org\r\nBcc: victim@example.com"}}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("properties.email"));
    // A good contact is stored trimmed, and mailed at that address.
    put_scenario(&app, HELLO).await;
    activate(&app, "hello").await;
    add_contact(
        &app,
        json!({"id": "c1", "email": " ana@example.org ", "phone": "+33 6 12 34 56 78", "first_name": "Ana"}),
    )
    .await;
    launch(&app, "hello", &["c1"]).await;
    let lines = app.outbox_at_least(1).await;
    let sends = sends_to(&lines, "c1");
    assert_eq!(sends.len(), 1, "{lines:#?}");
    assert_eq!(sends[0]["to"]["email"], "ana@example.org", "{lines:#?}");
}

#[tokio::test]
async fn hostile_import_rows_with_bad_addresses_are_rejected_with_their_line() {
    let app = app("import-bad-addresses");
    let csv = "id,email,phone\ni1,i1@example.org,+447700900005\ni2,i2@example,\ni3,,0612345678\n";
    let (status, report) = post(&app, "/v1/contacts/import", csv, "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["added"], 1, "{report}");
    let rejected = report["rejected"].as_array().cloned().unwrap_or_default();
    let lines: Vec<Value> = rejected.iter().map(|r| r["line"].clone()).collect();
    assert_eq!(lines, [json!(3), json!(4)], "{report}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("email"),
        "{report}"
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("phone"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// An email, a day's wait, the end; purchases convert. Its id is this test's own: the metrics
/// recorder is the process's, shared by every test.
const METERED: &str = "\
id: metrics-api
timezone: UTC
launch: {type: manual}
audience: {all: true}
conversion: {event: purchase, within: P7D}
messages:
  m: {channel: email, subject: \"Hi\", text: \"Hello\"}
steps:
  - {id: first, send: m, next: wait}
  - id: wait
    delay: {after: P1D}
    next: done
  - {id: done, end: success}
";

/// The value of one series line of Prometheus text (`name{labels} value`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim().parse().unwrap_or_else(|e| panic!("{v}: {e}"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_journal_holds_behind_the_token() {
    let app = app("metrics");
    put_scenario(&app, METERED).await;
    activate(&app, "metrics-api").await;
    for id in ["m1", "m2"] {
        add_contact(
            &app,
            json!({"id": id, "email": format!("{id}@example.org")}),
        )
        .await;
    }
    // No address: its send is skipped.
    add_contact(&app, json!({"id": "m3"})).await;
    launch(&app, "metrics-api", &["m1", "m2", "m3"]).await;
    // m1 is still waiting: entering again is refused.
    launch(&app, "metrics-api", &["m1"]).await;
    let (status, body) = post_json(
        &app,
        "/v1/events",
        json!({"contact": "m2", "event": "purchase"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.advance(TimeDelta::days(1) + TimeDelta::seconds(1))
        .await;

    // Without the token (or with a wrong one): 401, and no metrics.
    for auth in [None, Some("Bearer wrong-token")] {
        let mut headers = vec![];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let (status, bytes) =
            call_unauthenticated(&app, request("GET", "/metrics", "", &headers)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(!String::from_utf8_lossy(&bytes).contains("relance_"));
    }

    let response = app
        .router
        .clone()
        .oneshot(request(
            "GET",
            "/metrics",
            "",
            &[("authorization", &format!("Bearer {TOKEN}"))],
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let s = |series: &str| sample(&text, series);

    assert_eq!(
        s(r#"relance_entries_total{scenario="metrics-api",result="entered"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(
        s(r#"relance_entries_total{scenario="metrics-api",result="skipped"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        s(r#"relance_skips_total{scenario="metrics-api",reason="already_running"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        s(
            r#"relance_sends_total{scenario="metrics-api",step="first",channel="email",result="sent"}"#
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        s(r#"relance_conversions_total{scenario="metrics-api",path="treated"}"#),
        1.0,
        "{text}"
    );
    // Timers fired (one per waiting contact, in this and other tests): the histogram has them.
    assert!(s("relance_timer_lateness_seconds_count") >= 3.0, "{text}");
    assert!(
        text.contains("# TYPE relance_timer_lateness_seconds histogram"),
        "{text}"
    );

    // The same counts as the journal's.
    let (status, counts) = get(&app, "/v1/scenarios/metrics-api/journal").await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["entered"], 3, "{counts}");
    assert_eq!(counts["converted"], 1, "{counts}");
    assert_eq!(counts["steps"]["first"]["sent"], 2, "{counts}");
    let not_entered = counts["not_entered"]
        .as_object()
        .unwrap_or_else(|| panic!("{counts}"));
    let skipped = counts["steps"]["first"]["skipped"]
        .as_object()
        .unwrap_or_else(|| panic!("{counts}"));
    assert_eq!(skipped.len(), 1, "{counts}");
    for (reason, n) in not_entered.iter().chain(skipped) {
        let series = format!(r#"relance_skips_total{{scenario="metrics-api",reason="{reason}"}}"#);
        assert_eq!(Some(s(&series)), n.as_f64(), "{series}: {text}");
    }
}
