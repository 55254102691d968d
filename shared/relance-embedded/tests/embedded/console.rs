//! The web console in process, without a browser: login by the API token, the session
//! cookie's flags, CSRF refusals, the cookie refused by the `/v1` API, escaping of data, and
//! what each page shows (counts, paths, journal, test mode writing nothing).

use crate::common::{TempDir, t0};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use relance_embedded::auth::ApiSecurity;
use relance_embedded::clock::ManualClock;
use relance_embedded::store::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "console-test-token-0123456789abcdef";
const HOST: &str = "127.0.0.1:8787";

const HELLO: &str = "\
id: hello
name: Hello <b>there</b>
timezone: UTC
launch: {type: manual}
audience: {all: true}
messages:
  greeting: {channel: email, subject: \"Hi\", text: \"Hello there\"}
steps:
  - {id: first, send: greeting, next: wait}
  - {id: wait, delay: {after: P1D}, next: done}
  - {id: done, end: success}
";

struct App {
    router: Router,
    /// Removed with the app (kept when the test fails).
    _dir: TempDir,
}

fn app(name: &str) -> App {
    let dir = TempDir::fresh("console", name);
    let clock = Arc::new(ManualClock::new(t0()));
    let store = SqliteStore::in_memory().unwrap_or_else(|e| panic!("{e}"));
    let (handle, _runner) =
        relance_embedded::server::start_configured(store, &dir.join("outbox.jsonl"), clock, None)
            .unwrap_or_else(|e| panic!("{e}"));
    App {
        router: relance_embedded::api::router(
            handle,
            ApiSecurity::with_token(TOKEN, vec!["relance.example.com".into()]),
        ),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The body with the slashes the HTML escaping writes `&#x2f;` read back (a browser
    /// does the same in attributes), for assertions on links.
    fn links(&self) -> String {
        self.body.replace("&#x2f;", "/")
    }
}

async fn send(app: &App, request: Request<Body>) -> Answer {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn request(method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header(header::HOST, HOST);
    }
    b.body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The API with the bearer token (JSON).
async fn api(app: &App, method: Method, path: &str, body: &str, ct: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let a = send(
        app,
        request(
            method,
            path,
            &[("authorization", &bearer), ("content-type", ct)],
            body,
        ),
    )
    .await;
    (
        a.status,
        serde_json::from_str(&a.body).unwrap_or(Value::Null),
    )
}

/// A cookie's value from `Set-Cookie` answers, and the whole header line.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|line| {
            let value = line
                .split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            (value, line.to_string())
        })
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf field in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Posts the login form with the pre-login `cookie`, its `csrf` token and `token`.
async fn post_login(app: &App, cookie: &str, csrf: &str, token: &str) -> Answer {
    send(
        app,
        request(
            Method::POST,
            "/login",
            &[("cookie", cookie), ("content-type", FORM)],
            &form(&[("csrf", csrf), ("token", token)]),
        ),
    )
    .await
}

/// Logs in: (session cookie header value, the session's CSRF token).
async fn login(app: &App) -> (String, String) {
    let page = send(app, request(Method::GET, "/login", &[], "")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (pre, _) =
        set_cookie(&page.headers, "relance_login").unwrap_or_else(|| panic!("no login cookie"));
    let csrf = csrf_of(&page.body);
    let cookie = format!("relance_login={pre}");
    let a = post_login(app, &cookie, &csrf, TOKEN).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let (session, _) =
        set_cookie(&a.headers, "relance_session").unwrap_or_else(|| panic!("no session cookie"));
    let cookie = format!("relance_session={session}");
    let home = send(app, request(Method::GET, "/", &[("cookie", &cookie)], "")).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    let csrf = csrf_of(&home.body);
    (cookie, csrf)
}

async fn page(app: &App, cookie: &str, path: &str) -> Answer {
    send(app, request(Method::GET, path, &[("cookie", cookie)], "")).await
}

async fn post_form(app: &App, cookie: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
    send(
        app,
        request(
            Method::POST,
            path,
            &[("cookie", cookie), ("content-type", FORM)],
            &form(fields),
        ),
    )
    .await
}

async fn with_hello(app: &App) {
    let (status, body) = api(
        app,
        Method::POST,
        "/v1/scenarios",
        HELLO,
        "application/yaml",
    )
    .await;
    assert!(status.is_success(), "{body}");
    for id in ["ada", "bob"] {
        let contact = json!({"contact": {"id": id, "email": format!("{id}@example.org")}});
        let (status, body) = api(
            app,
            Method::POST,
            "/v1/contacts",
            &contact.to_string(),
            "application/json",
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
}

/// Activates then launches scenario `id` with the console's buttons (each a CSRF form that
/// redirects back to the page).
async fn activate_and_launch(app: &App, cookie: &str, csrf: &str, id: &str) {
    for action in ["activate", "launch"] {
        let a = post_form(
            app,
            cookie,
            &format!("/scenarios/{id}/{action}"),
            &[("csrf", csrf)],
        )
        .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{action}: {}", a.body);
    }
}

async fn status_of(app: &App, id: &str) -> String {
    let (_, list) = api(app, Method::GET, "/v1/scenarios", "", "application/json").await;
    list.as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == id))
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_pages_need_it() {
    let app = app("login");
    // Without a session a page sends the browser to the login form.
    let a = page(&app, "", "/").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/login");
    let a = page(&app, "relance_session=forged", "/scenarios/hello").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    // The login page: strict CSP, a labelled password field.
    let a = send(&app, request(Method::GET, "/login", &[], "")).await;
    let csp = a.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(a.body.contains("<label for=\"token\">"), "{}", a.body);
    assert!(!a.body.contains("<script>"), "no inline script: {}", a.body);
    // Logging in on loopback over http: HttpOnly, SameSite=Strict, Path=/, not Secure.
    let (pre, _) = set_cookie(&a.headers, "relance_login").unwrap_or_else(|| panic!("no cookie"));
    let csrf = csrf_of(&a.body);
    let cookie = format!("relance_login={pre}");
    let ok = post_login(&app, &cookie, &csrf, TOKEN).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let (session, line) =
        set_cookie(&ok.headers, "relance_session").unwrap_or_else(|| panic!("no session"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(flag), "{line}");
    }
    assert!(!line.contains("Secure"), "{line}");
    assert!(session.len() >= 43, "{session}");
    // Reached by a configured name (behind a TLS proxy): the cookie is Secure.
    let a = send(
        &app,
        request(
            Method::GET,
            "/login",
            &[("host", "relance.example.com")],
            "",
        ),
    )
    .await;
    let (pre, line) =
        set_cookie(&a.headers, "relance_login").unwrap_or_else(|| panic!("no cookie"));
    assert!(line.contains("Secure"), "{line}");
    let cookie = format!("relance_login={pre}");
    let ok = send(
        &app,
        request(
            Method::POST,
            "/login",
            &[
                ("host", "relance.example.com"),
                ("cookie", &cookie),
                ("content-type", FORM),
            ],
            &form(&[("csrf", &csrf_of(&a.body)), ("token", TOKEN)]),
        ),
    )
    .await;
    let (_, line) =
        set_cookie(&ok.headers, "relance_session").unwrap_or_else(|| panic!("no session"));
    assert!(
        line.contains("Secure") && line.contains("HttpOnly"),
        "{line}"
    );
    // With the session, pages answer; logout ends it.
    let cookie = format!("relance_session={session}");
    let home = page(&app, &cookie, "/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("<h1>Scenarios</h1>"), "{}", home.body);
    let out = post_form(&app, &cookie, "/logout", &[("csrf", &csrf_of(&home.body))]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let (_, line) =
        set_cookie(&out.headers, "relance_session").unwrap_or_else(|| panic!("no clearing"));
    assert!(line.contains("Max-Age=0"), "{line}");
    assert_eq!(page(&app, &cookie, "/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wrong_tokens_and_login_without_its_csrf_are_refused() {
    let app = app("wrong-token");
    let a = send(&app, request(Method::GET, "/login", &[], "")).await;
    let (pre, _) = set_cookie(&a.headers, "relance_login").unwrap_or_else(|| panic!("no cookie"));
    let csrf = csrf_of(&a.body);
    let cookie = format!("relance_login={pre}");
    // No CSRF token, a wrong one, or no pre-login cookie: 403, no session.
    for (c, fields) in [
        (cookie.as_str(), vec![("token", TOKEN)]),
        (cookie.as_str(), vec![("csrf", "nope"), ("token", TOKEN)]),
        ("", vec![("csrf", csrf.as_str()), ("token", TOKEN)]),
    ] {
        let a = send(
            &app,
            request(
                Method::POST,
                "/login",
                &[("cookie", c), ("content-type", FORM)],
                &form(&fields),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(set_cookie(&a.headers, "relance_session").is_none());
    }
    // Wrong tokens: 401 and no session, until the limit of failures per minute: 429 for a
    // wrong one, while the right one still logs in (anyone could otherwise keep the owner out).
    let wrong = "not-the-token-0123456789abc";
    for _ in 0..10 {
        let a = post_login(&app, &cookie, &csrf, wrong).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(set_cookie(&a.headers, "relance_session").is_none());
        assert!(a.body.contains("not this server"), "{}", a.body);
    }
    let a = post_login(&app, &cookie, &csrf, wrong).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&a.headers, "relance_session").is_none());
    let a = post_login(&app, &cookie, &csrf, TOKEN).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(set_cookie(&a.headers, "relance_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_console_posts_without_the_sessions_csrf_token_are_403() {
    let app = app("csrf");
    with_hello(&app).await;
    let (cookie, csrf) = login(&app).await;
    let (other_cookie, other_csrf) = login(&app).await;
    assert_ne!(csrf, other_csrf);
    for fields in [
        vec![],
        vec![("csrf", "wrong")],
        vec![("csrf", other_csrf.as_str())],
    ] {
        let a = post_form(&app, &cookie, "/scenarios/hello/activate", &fields).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{fields:?}: {}", a.body);
    }
    // The right token in another content type (a JSON or multipart post) is refused too.
    let a = send(
        &app,
        request(
            Method::POST,
            "/scenarios/hello/activate",
            &[("cookie", &cookie), ("content-type", "application/json")],
            &json!({"csrf": csrf}).to_string(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Without any session, a post is 403 too.
    let a = post_form(&app, "", "/scenarios/hello/activate", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&app, "hello").await, "draft");
    // With its session's token: done, back to the scenario page.
    let a = post_form(
        &app,
        &other_cookie,
        "/scenarios/hello/activate",
        &[("csrf", &other_csrf)],
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(
        a.headers[header::LOCATION],
        "/scenarios/hello?done=activate"
    );
    assert_eq!(status_of(&app, "hello").await, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_the_session_cookie_does_not_authenticate_the_api() {
    let app = app("cookie-api");
    with_hello(&app).await;
    let (cookie, _) = login(&app).await;
    for (method, path) in [
        (Method::GET, "/v1/scenarios"),
        (Method::POST, "/v1/scenarios/hello/activate"),
        (Method::GET, "/v1/consent/ada"),
    ] {
        let a = send(
            &app,
            request(method.clone(), path, &[("cookie", &cookie)], ""),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert_eq!(status_of(&app, "hello").await, "draft");
    // The Host check covers the console too.
    let a = send(
        &app,
        request(Method::GET, "/login", &[("host", "evil.example")], ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(
        &app,
        request(
            Method::GET,
            "/",
            &[("host", "evil.example"), ("cookie", &cookie)],
            "",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_contact_ids_profile_fields_and_names_render_inert() {
    let app = app("escape");
    with_hello(&app).await;
    let evil = "<script>alert(1)</script>";
    let contact = json!({"contact": {"id": evil, "email": "x@example.org", "note": "<img src=x onerror=alert(2)>"}});
    let (status, body) = api(
        &app,
        Method::POST,
        "/v1/contacts",
        &contact.to_string(),
        "application/json",
    )
    .await;
    assert!(status.is_success(), "{body}");
    let (cookie, csrf) = login(&app).await;
    post_form(
        &app,
        &cookie,
        "/scenarios/hello/activate",
        &[("csrf", &csrf)],
    )
    .await;
    let a = post_form(&app, &cookie, "/scenarios/hello/launch", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let encoded = encoded.replace('+', "%20");
    for path in [
        format!("/contacts/{encoded}"),
        "/journal".to_string(),
        "/scenarios/hello".to_string(),
        "/".to_string(),
    ] {
        let a = page(&app, &cookie, &path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        for raw in ["<script>alert", "<img src=x", "<b>there</b>"] {
            assert!(!a.body.contains(raw), "{path} shows {raw} raw: {}", a.body);
        }
    }
    let a = page(&app, &cookie, &format!("/contacts/{encoded}")).await;
    assert!(
        a.body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{}",
        a.body
    );
    assert!(
        a.body.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        a.body
    );
    // Links to the contact carry its id percent-encoded.
    let j = page(&app, &cookie, "/journal").await;
    assert!(
        j.links()
            .contains("href=\"/contacts/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\""),
        "{}",
        j.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_counts_diagram_paths_journal_and_lifecycle() {
    let app = app("pages");
    with_hello(&app).await;
    let (cookie, csrf) = login(&app).await;
    let list = page(&app, &cookie, "/").await;
    assert!(
        list.links().contains("href=\"/scenarios/hello\""),
        "{}",
        list.body
    );
    assert!(list.body.contains("draft"), "{}", list.body);
    activate_and_launch(&app, &cookie, &csrf, "hello").await;
    // The counts fragment the script polls: two entered, both still waiting.
    let counts = page(&app, &cookie, "/scenarios/hello?part=counts").await;
    assert!(
        counts.body.contains("<dd id=\"count-entered\">2</dd>"),
        "{}",
        counts.body
    );
    assert!(
        counts.body.contains("<dd id=\"count-active\">2</dd>"),
        "{}",
        counts.body
    );
    assert!(
        !counts.body.contains("<html"),
        "a fragment: {}",
        counts.body
    );
    let list = page(&app, &cookie, "/?part=counts").await;
    assert!(
        list.body.contains("data-count=\"entered\">2<"),
        "{}",
        list.body
    );
    // The scenario page: buttons as CSRF forms, the diagram, versions, recent records.
    let s = page(&app, &cookie, "/scenarios/hello?done=launch").await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(s.body.contains("Launched."), "{}", s.body);
    assert!(
        s.links().contains("action=\"/scenarios/hello/pause\""),
        "{}",
        s.body
    );
    assert!(
        s.links().contains("src=\"/scenarios/hello/diagram.svg\""),
        "{}",
        s.body
    );
    assert!(
        s.links().contains("href=\"/scenarios/hello/versions/1\""),
        "{}",
        s.body
    );
    assert!(s.links().contains("href=\"/contacts/ada\""), "{}", s.body);
    let svg = page(&app, &cookie, "/scenarios/hello/diagram.svg").await;
    assert_eq!(svg.status, StatusCode::OK);
    assert!(
        svg.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("image/svg+xml")
    );
    assert!(
        svg.body.contains("<svg") && svg.body.contains("first"),
        "{}",
        svg.body
    );
    let v = page(&app, &cookie, "/scenarios/hello/versions/1").await;
    assert!(v.body.contains("id: hello"), "{}", v.body);
    // The contact page: profile, consent trail, the path with its timestamps.
    let consent =
        json!({"contact": "ada", "subscriptions": {"newsletter": false}, "source": "support-desk"});
    let (status, body) = api(
        &app,
        Method::POST,
        "/v1/consent",
        &consent.to_string(),
        "application/json",
    )
    .await;
    assert!(status.is_success(), "{body}");
    let c = page(&app, &cookie, "/contacts/ada").await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(c.body.contains("ada@example.org"), "{}", c.body);
    assert!(
        c.body
            .contains("<td>newsletter</td><td>unsubscribed</td><td>support-desk</td>"),
        "{}",
        c.body
    );
    assert!(
        c.body.contains("<time datetime=\"2026-03-02T10:00:00Z\">"),
        "{}",
        c.body
    );
    for kind in ["entered", "sent", "waiting"] {
        assert!(
            c.body.contains(&format!("kind-{kind}")),
            "{kind}: {}",
            c.body
        );
    }
    assert_eq!(
        page(&app, &cookie, "/contacts/nobody").await.status,
        StatusCode::NOT_FOUND
    );
    // The journal, all and per scenario.
    let j = page(&app, &cookie, "/journal?scenario=hello").await;
    assert!(j.body.contains("kind-sent"), "{}", j.body);
    // Pause, then resume.
    let a = post_form(&app, &cookie, "/scenarios/hello/pause", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(status_of(&app, "hello").await, "paused");
    let s = page(&app, &cookie, "/scenarios/hello").await;
    assert!(s.body.contains(">Resume</button>"), "{}", s.body);
    post_form(
        &app,
        &cookie,
        "/scenarios/hello/activate",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status_of(&app, "hello").await, "active");
    // A lifecycle the scenario refuses is a page saying why (409), and an unknown action 404.
    let a = post_form(&app, &cookie, "/scenarios/nope/pause", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = post_form(
        &app,
        &cookie,
        "/scenarios/hello/explode",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Assets are served with long cache headers; pages are never cached.
    let css = page(&app, "", "/assets/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap_or_default()
            .contains("max-age=")
    );
    assert_eq!(s.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mode_shows_each_profiles_path_and_writes_nothing() {
    let app = app("test-mode");
    with_hello(&app).await;
    let (cookie, csrf) = login(&app).await;
    let form_page = page(&app, &cookie, "/scenarios/hello/test").await;
    assert_eq!(form_page.status, StatusCode::OK);
    assert!(
        form_page.body.contains("<label for=\"profiles\">"),
        "{}",
        form_page.body
    );
    let profiles = "{\"id\": \"t1\", \"email\": \"t1@example.org\"}\n{\"id\": \"t2\"}\n";
    let a = post_form(
        &app,
        &cookie,
        "/scenarios/hello/test",
        &[
            ("csrf", &csrf),
            ("profiles", profiles),
            ("events", ""),
            ("until", "P3D"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("Simulated path of t1"), "{}", a.body);
    assert!(a.body.contains("Simulated path of t2"), "{}", a.body);
    assert!(a.body.contains("kind-sent"), "{}", a.body);
    assert!(a.body.contains("end success"), "{}", a.body);
    // No email address: t2's send is skipped, as the real run would.
    assert!(a.body.contains("kind-skipped"), "{}", a.body);
    // Nothing was stored: no contact t1, no journal record.
    assert_eq!(
        page(&app, &cookie, "/contacts/t1").await.status,
        StatusCode::NOT_FOUND
    );
    let (_, journal) = api(
        &app,
        Method::GET,
        "/v1/scenarios/hello/journal",
        "",
        "application/json",
    )
    .await;
    assert_eq!(journal["entered"], 0, "{journal}");
    // 0 or 101 profiles, a bad line or a bad duration: 422 saying which.
    let many: String = (0..101)
        .map(|i| format!("{{\"id\": \"p{i}\"}}\n"))
        .collect();
    for (profiles, until, says) in [
        ("", "P1D", "give 1 to 100 profiles"),
        (many.as_str(), "P1D", "give 1 to 100 profiles"),
        ("{not json", "P1D", "profiles:"),
        ("{\"id\": \"x\"}", "forever", "until:"),
    ] {
        let a = post_form(
            &app,
            &cookie,
            "/scenarios/hello/test",
            &[("csrf", &csrf), ("profiles", profiles), ("until", until)],
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{says}");
        assert!(a.body.contains(says), "{says}: {}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_shows_its_report_on_the_scenario_page() {
    let app = app("report");
    let split = include_str!("../../../../examples/split-test.yaml");
    let (status, body) = api(
        &app,
        Method::POST,
        "/v1/scenarios",
        split,
        "application/yaml",
    )
    .await;
    assert!(status.is_success(), "{body}");
    for i in 1..=5 {
        let contact =
            json!({"contact": {"id": format!("u{i}"), "email": format!("u{i}@example.org")}});
        let (status, body) = api(
            &app,
            Method::POST,
            "/v1/contacts",
            &contact.to_string(),
            "application/json",
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
    let (cookie, csrf) = login(&app).await;
    // A scenario without an experiment has no report section.
    with_hello(&app).await;
    let plain = page(&app, &cookie, "/scenarios/hello").await;
    assert!(!plain.body.contains("Experiment report"), "{}", plain.body);
    activate_and_launch(&app, &cookie, &csrf, "split-test").await;
    let s = page(&app, &cookie, "/scenarios/split-test").await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    for text in [
        "Experiment report",
        "Scenario holdout",
        "<th scope=\"row\">Held out</th>",
        "path short",
        "path long",
    ] {
        assert!(s.body.contains(text), "{text}: {}", s.body);
    }
    // The report's numbers are the API's.
    let (_, report) = api(
        &app,
        Method::GET,
        "/v1/scenarios/split-test/report",
        "",
        "application/json",
    )
    .await;
    let held_out = &report["holdout"]["held_out"]["entries"];
    let treated = &report["holdout"]["treated"]["entries"];
    assert_eq!(
        held_out.as_u64().unwrap_or(0) + treated.as_u64().unwrap_or(0),
        7,
        "the five u* contacts and ada and bob: {report}"
    );
    assert!(
        s.body.contains(&format!("0 / {treated}")),
        "treated 0 / {treated}: {}",
        s.body
    );
}
