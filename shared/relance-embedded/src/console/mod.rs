//! The web console `relance run` serves at `/`: server-rendered pages (minijinja templates,
//! autoescaped, embedded in the binary) over the runner, with one stylesheet and one small
//! script (embedded too, no external resource, a strict Content-Security-Policy).
//!
//! Login trades the API token for a session cookie (HttpOnly, SameSite=Strict); every form
//! posts the session's CSRF token. The cookie authenticates console pages only: the `/v1`
//! API stays bearer-only ([`crate::auth`]), and the `Host` check applies to both.
//!
//! # Layout
//! - [`session`]: sessions, CSRF tokens, the cookie's flags, the failed-login limit.
//! - [`diagram`]: a scenario's DOT graph drawn as SVG (shared with `relance graph`).
//! - `pages`: the handlers and what each page shows.

pub mod diagram;
mod pages;
pub mod session;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::{AutoEscape, Environment};
use sha2::{Digest, Sha256};

use crate::auth::ApiSecurity;
use crate::server::RuntimeHandle;
use session::{SESSION_COOKIE, Session, Sessions};

/// The Content-Security-Policy of every console page: nothing but this origin, no inline
/// script or style, no framing, forms only to this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The largest form a console page posts (test mode: 100 profiles and their events).
const FORM_LIMIT: usize = 2 * 1024 * 1024;

/// True for the paths the console serves (its own session check); every other path is the
/// API's (bearer token) or open (health, unsubscribe, tracking).
pub fn is_console_path(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/logout" | "/journal" | "/contacts")
        || path.starts_with("/assets/")
        || path.starts_with("/scenarios/")
        || path.starts_with("/contacts/")
}

/// What the console's handlers share.
#[derive(Debug, Clone)]
struct Console {
    handle: RuntimeHandle,
    security: Arc<ApiSecurity>,
    sessions: Arc<Sessions>,
    templates: Arc<Environment<'static>>,
}

/// The templates, embedded.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("list.html", include_str!("templates/list.html")),
    (
        "list_counts.html",
        include_str!("templates/list_counts.html"),
    ),
    ("scenario.html", include_str!("templates/scenario.html")),
    ("counts.html", include_str!("templates/counts.html")),
    ("records.html", include_str!("templates/records.html")),
    ("version.html", include_str!("templates/version.html")),
    ("contact.html", include_str!("templates/contact.html")),
    ("journal.html", include_str!("templates/journal.html")),
    ("test.html", include_str!("templates/test.html")),
    ("message.html", include_str!("templates/message.html")),
];

/// An embedded asset: its bytes, its content type and a digest that names its version in
/// the URL (so it may be cached for a year).
struct Asset {
    body: &'static str,
    content_type: &'static str,
    version: String,
}

fn asset(body: &'static str, content_type: &'static str) -> Asset {
    let digest = Sha256::digest(body.as_bytes());
    Asset {
        body,
        content_type,
        version: crate::auth::to_hex(&digest[..6]),
    }
}

static CSS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        include_str!("assets/console.css"),
        "text/css; charset=utf-8",
    )
});
static ICON: LazyLock<Asset> =
    LazyLock::new(|| asset(include_str!("assets/favicon.svg"), "image/svg+xml"));
static JS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        include_str!("assets/console.js"),
        "text/javascript; charset=utf-8",
    )
});

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Every template is HTML: every value is escaped unless a template says otherwise
    // (none does).
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.set_loader(|name| {
        Ok(TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| (*t).to_string()))
    });
    env.add_global("css_url", format!("/assets/console.css?v={}", CSS.version));
    env.add_global("js_url", format!("/assets/console.js?v={}", JS.version));
    env.add_global(
        "icon_url",
        format!("/assets/favicon.svg?v={}", ICON.version),
    );
    env
}

/// The console's routes over a runtime handle: pages behind a session, the login page and
/// the assets open. `security` holds the API token the login compares with.
pub fn router(handle: RuntimeHandle, security: Arc<ApiSecurity>) -> Router {
    let console = Console {
        handle,
        security,
        sessions: Arc::new(Sessions::default()),
        templates: Arc::new(environment()),
    };
    let pages = Router::new()
        .route("/", get(pages::list))
        .route("/logout", post(pages::logout))
        .route("/journal", get(pages::journal))
        .route("/contacts", get(pages::find_contact))
        .route("/contacts/{id}", get(pages::contact))
        .route("/scenarios/{id}", get(pages::scenario))
        .route("/scenarios/{id}/diagram.svg", get(pages::diagram))
        .route("/scenarios/{id}/versions/{version}", get(pages::version))
        .route(
            "/scenarios/{id}/test",
            get(pages::test_form).post(pages::test_run),
        )
        .route("/scenarios/{id}/{action}", post(pages::lifecycle))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/assets/console.css", get(|| async { serve(&CSS) }))
        .route("/assets/console.js", get(|| async { serve(&JS) }))
        .route("/assets/favicon.svg", get(|| async { serve(&ICON) }))
        .merge(pages)
        .with_state(console)
        .layer(axum::middleware::from_fn(security_headers))
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // The URL names the content's digest: a new binary is a new URL.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        asset.body,
    )
        .into_response()
}

/// The headers of every console answer: the CSP (unless the handler set its own, as the
/// SVG does), no sniffing, no framing, no referrer, and pages never cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The session of a request, for the handlers behind [`require_session`].
#[derive(Debug, Clone)]
struct LoggedIn {
    id: String,
    session: Session,
}

/// Lets a request through only with a live session: a GET without one is sent to the login
/// page (303), anything else is 403. A POST must be a form (urlencoded) carrying the
/// session's CSRF token in `csrf`, else 403 before any handler runs.
async fn require_session(State(console): State<Console>, request: Request, next: Next) -> Response {
    let found = session::cookie(request.headers(), SESSION_COOKIE)
        .and_then(|id| console.sessions.get(id).map(|s| (id.to_string(), s)));
    let Some((id, session)) = found else {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/login")],
                "log in first",
            )
                .into_response();
        }
        return pages::refused(&console, StatusCode::FORBIDDEN, "log in first");
    };
    let mut request = if *request.method() == Method::POST {
        if !crate::auth::is_form(request.headers()) {
            return pages::refused(
                &console,
                StatusCode::FORBIDDEN,
                "console forms post application/x-www-form-urlencoded with their CSRF token",
            );
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return pages::refused(
                &console,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than 2 MiB",
            );
        };
        let given = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !given.is_some_and(|g| session::same(&g, &session.csrf)) {
            tracing::warn!(path = %parts.uri.path(), "console form without its session's CSRF token");
            return pages::refused(
                &console,
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this session's: reload the page and try again",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    request.extensions_mut().insert(LoggedIn { id, session });
    next.run(request).await
}
