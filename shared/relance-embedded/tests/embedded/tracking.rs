//! Open and click tracking served by the API: the pixel and redirect URLs taken from an
//! instrumented email of the outbox, fetched without the API token (they are signed), and
//! what they record; forged or altered tokens answer like an unknown route and record nothing.

use crate::common::{TempDir, t0};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::TimeDelta;
use http_body_util::BodyExt;
use relance_core::engine::Send;
use relance_core::tracking::{self, TrackingLinks};
use relance_embedded::auth::ApiSecurity;
use relance_embedded::clock::ManualClock;
use relance_embedded::store::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "tracking-test-token-0123456789";
const BASE: &str = "https://relance.example.com";

struct App {
    router: Router,
    clock: Arc<ManualClock>,
    outbox: PathBuf,
    /// Removed with the app (kept when the test fails).
    _dir: TempDir,
    links: TrackingLinks,
}

fn links() -> TrackingLinks {
    TrackingLinks {
        base_url: BASE.into(),
        secret: b"a tracking key of at least thirty-two bytes".to_vec(),
    }
}

/// A fresh app whose API serves tracking URLs signed with [`links`] (or none).
fn app(name: &str, tracking: bool) -> App {
    let dir = TempDir::fresh("track", name);
    let outbox = dir.join("outbox.jsonl");
    let clock = Arc::new(ManualClock::new(t0()));
    let store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
    let (handle, _runner) =
        relance_embedded::server::start_configured(store, &outbox, clock.clone(), None)
            .unwrap_or_else(|e| panic!("{e}"));
    let handle = handle.with_tracking(tracking.then(links));
    App {
        router: relance_embedded::api::router(
            handle,
            ApiSecurity::with_token(TOKEN, vec!["relance.example.com".into()]),
        ),
        clock,
        outbox,
        _dir: dir,
        links: links(),
    }
}

/// One request: (status, headers, body). With `token`, it carries the API token.
async fn send(
    app: &App,
    method: Method,
    path: &str,
    body: &str,
    token: bool,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "relance.example.com")
        .header(
            header::CONTENT_TYPE,
            if path == "/v1/scenarios" {
                "application/yaml"
            } else {
                "application/json"
            },
        );
    if token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let request = request
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    (parts.status, parts.headers, bytes.to_vec())
}

async fn api(app: &App, method: Method, path: &str, body: Value) -> Value {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, _, bytes) = send(app, method, path, &text, true).await;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

/// A tracking URL fetched as a mail client does: no token.
async fn fetch(app: &App, url: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let path = url
        .strip_prefix(BASE)
        .unwrap_or_else(|| panic!("not a tracking URL of this server: {url}"));
    send(app, Method::GET, path, "", false).await
}

impl App {
    /// Two jobs in a row: everything due before them is done and in the outbox.
    async fn sync(&self) {
        for _ in 0..2 {
            api(self, Method::GET, "/v1/scenarios", Value::Null).await;
        }
    }

    /// The sends of the outbox once it holds at least `n` (polled for up to 2 s).
    async fn sends(&self, n: usize) -> Vec<Send> {
        self.sync().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let text = std::fs::read_to_string(&self.outbox).unwrap_or_default();
            let sends: Vec<Send> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .filter(|l| l["kind"] == "send")
                .map(|l| {
                    serde_json::from_value(l["send"].clone()).unwrap_or_else(|e| panic!("{e}"))
                })
                .collect();
            if sends.len() >= n || Instant::now() > deadline {
                assert!(sends.len() >= n, "expected {n} sends: {sends:#?}");
                return sends;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The kinds of a contact's path records.
    async fn kinds(&self, scenario: &str, contact: &str) -> Vec<String> {
        let path = api(
            self,
            Method::GET,
            &format!("/v1/scenarios/{scenario}/contacts/{contact}"),
            Value::Null,
        )
        .await;
        path.as_array()
            .unwrap_or_else(|| panic!("{path}"))
            .iter()
            .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Stores and activates a scenario, adds `contact` and launches it for them.
    async fn start(&self, scenario: &str, id: &str, contact: &str) {
        let (status, _, body) = send(self, Method::POST, "/v1/scenarios", scenario, true).await;
        assert!(status.is_success(), "{}", String::from_utf8_lossy(&body));
        api(
            self,
            Method::POST,
            &format!("/v1/scenarios/{id}/activate"),
            Value::Null,
        )
        .await;
        api(
            self,
            Method::POST,
            "/v1/contacts",
            json!({"contact": {"id": contact, "email": format!("{contact}@example.org")}}),
        )
        .await;
        api(
            self,
            Method::POST,
            &format!("/v1/scenarios/{id}/launch"),
            json!({ "contacts": [contact] }),
        )
        .await;
    }
}

/// The `src` of the pixel and the `href`s of the tracked links, in order.
fn urls(html: &str) -> (String, Vec<String>) {
    let pixel_at = html
        .find("<img src=\"")
        .unwrap_or_else(|| panic!("no pixel: {html}"));
    let pixel = html[pixel_at + 10..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string();
    let links = tracking::anchors(html)
        .into_iter()
        .map(|a| a.href)
        .filter(|h| h.starts_with(&format!("{BASE}/t/c/")))
        .collect();
    (pixel, links)
}

/// An HTML email with two links (one tagged), then a wait for its opening or a click.
fn scenario(wait_for: &str, track: &str) -> String {
    format!(
        "\
id: promo
timezone: UTC
launch: {{type: manual}}
messages:
  first:
    channel: email
    subject: Sale
    html: '<html><body><p>Sale!</p><a href=\"https://shop.example/p?a=1&amp;b=2\" ses:tags=\"cta:hero\">Buy</a> <a href=\"https://shop.example/about\">About</a> <a href=\"mailto:help@shop.example\">Help</a></body></html>'
{track}  thanks: {{channel: email, subject: Thanks, text: Thanks}}
steps:
  - {{id: first, send: first, next: wait}}
  - id: wait
    wait_for: {wait_for}
    on_event: thanks
    on_timeout: done
  - {{id: thanks, send: thanks, next: done}}
  - {{id: done, end: success}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_pixel_records_opened_and_resumes_the_wait() {
    let app = app("open", true);
    app.start(
        &scenario("{opened: first, timeout: P2D}", ""),
        "promo",
        "ana",
    )
    .await;
    let sends = app.sends(1).await;
    let html = app
        .links
        .instrument("promo", &sends[0])
        .unwrap_or_else(|| panic!("not instrumented: {:?}", sends[0]));
    let (pixel, links) = urls(&html);
    assert_eq!(links.len(), 2, "{html}");
    assert!(html.contains("href=\"mailto:help@shop.example\""), "{html}");

    // The reader opens the email a minute later.
    app.clock.set(t0() + TimeDelta::minutes(1));
    let (status, headers, body) = fetch(&app, &pixel).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/gif");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .is_ok_and(|v| v.contains("no-store"))
    );
    assert_eq!(body, tracking::PIXEL_GIF);
    let sends = app.sends(2).await;
    assert_eq!(sends[1].step, "thanks");
    let kinds = app.kinds("promo", "ana").await;
    assert_eq!(
        kinds,
        [
            "entered", "sent", "waiting", "opened", "resumed", "sent", "ended"
        ]
    );

    // Each display is an open: a second fetch records a second one (and moves nothing).
    let (status, _, _) = fetch(&app, &pixel).await;
    assert_eq!(status, StatusCode::OK);
    let kinds = app.kinds("promo", "ana").await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "opened").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(app.sends(2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_records_the_original_url_and_tags_and_redirects_there() {
    let app = app("click", true);
    let wait = "{clicked: first, link: \"https://shop.example/p?a=1&b=2\", link_attribute: cta, timeout: P2D}";
    app.start(&scenario(wait, ""), "promo", "ana").await;
    let sends = app.sends(1).await;
    let html = app
        .links
        .instrument("promo", &sends[0])
        .unwrap_or_else(|| panic!("not instrumented"));
    let (_, links) = urls(&html);
    app.clock.set(t0() + TimeDelta::minutes(1));

    // The untagged link: recorded, redirected, but not the click the wait wants.
    let (status, headers, _) = fetch(&app, &links[1]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], "https://shop.example/about");
    app.sync().await;
    let kinds = app.kinds("promo", "ana").await;
    assert_eq!(kinds, ["entered", "sent", "waiting", "clicked"]);

    // The tagged one, its URL decoded from `&amp;`: the wait resumes.
    let (status, headers, _) = fetch(&app, &links[0]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], "https://shop.example/p?a=1&b=2");
    let sends = app.sends(2).await;
    assert_eq!(sends[1].step, "thanks");
    let kinds = app.kinds("promo", "ana").await;
    assert_eq!(
        kinds,
        [
            "entered", "sent", "waiting", "clicked", "clicked", "resumed", "sent", "ended"
        ]
    );
    let report = api(
        &app,
        Method::GET,
        "/v1/scenarios/promo/journal",
        Value::Null,
    )
    .await;
    assert_eq!(report["ends"]["success"], 1, "{report}");

    // A validly signed link of a scenario and contact that no longer exist still takes the
    // reader to the page, and records nothing.
    let ghost = app
        .links
        .click_url("ghost", "gone", "first", "https://shop.example/old", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, headers, _) = fetch(&app, &ghost).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], "https://shop.example/old");
    assert_eq!(app.kinds("promo", "ana").await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forged_and_altered_tracking_tokens_are_404_and_record_nothing() {
    let app = app("forged", true);
    app.start(
        &scenario("{opened: first, timeout: P2D}", ""),
        "promo",
        "ana",
    )
    .await;
    let sends = app.sends(1).await;
    let html = app
        .links
        .instrument("promo", &sends[0])
        .unwrap_or_else(|| panic!("not instrumented"));
    let (pixel, tracked) = urls(&html);
    let token = |url: &str| url.rsplit('/').next().unwrap_or_default().to_string();
    let (click, open) = (token(&tracked[0]), token(&pixel));
    // An attacker's target under a real signature.
    let evil = TrackingLinks {
        secret: b"the attacker's guess of the key".to_vec(),
        ..links()
    }
    .click_url("ana", "promo", "first", "https://evil.example/", &[])
    .unwrap_or_else(|e| panic!("{e}"));
    let swapped = format!(
        "{}.{}",
        token(&evil).split('.').next().unwrap_or_default(),
        click.split('.').nth(1).unwrap_or_default()
    );
    // What an unknown route answers (to a caller with the token: without it, a 401).
    let (_, _, unknown) = send(&app, Method::GET, "/no/such/route", "", true).await;
    let unknown = String::from_utf8_lossy(&unknown).into_owned();
    for path in [
        format!("/t/c/{swapped}"),
        format!("/t/c/{}", token(&evil)),
        format!("/t/c/{}x", click),
        format!("/t/c/{open}"),
        format!("/t/o/{click}"),
        "/t/o/garbage".to_string(),
        "/t/c/a.b".to_string(),
    ] {
        let (status, headers, body) = send(&app, Method::GET, &path, "", false).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(headers.get(header::LOCATION).is_none(), "{path}");
        // The same answer as an unknown route: nothing tells which part failed.
        assert_eq!(String::from_utf8_lossy(&body), unknown, "{path}");
    }
    app.clock.set(t0() + TimeDelta::minutes(1));
    app.sync().await;
    assert_eq!(
        app.kinds("promo", "ana").await,
        ["entered", "sent", "waiting"]
    );

    // With tracking off, even a valid token is an unknown route.
    let off = app_without_tracking().await;
    let (status, _, _) = send(&off, Method::GET, &format!("/t/o/{open}"), "", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn app_without_tracking() -> App {
    app("off", false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_track_false_is_not_instrumented() {
    let app = app("track-false", true);
    app.start(
        &scenario("{opened: first, timeout: P2D}", "    track: false\n"),
        "promo",
        "ana",
    )
    .await;
    let sends = app.sends(1).await;
    assert!(sends[0].content.no_tracking, "{:?}", sends[0]);
    assert_eq!(app.links.instrument("promo", &sends[0]), None);
}
