//! The HTTP API (axum): applications post contacts, activity and engagement (the same JSON
//! as the EventBridge `detail` of the AWS mode), manage scenarios, launch them, import
//! contacts and read the journal and the experiment report; it also serves the one-click
//! unsubscribe and the signed open pixel and click redirects of tracked emails. Bad requests
//! get a 4xx with a JSON error naming the field; nothing is half-written (each request is one
//! unit of work).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use relance_core::contact::EngagementKind;
use relance_core::contact::{Contact, ContactError};
use relance_core::ports::{SourceFormat, Status};
use relance_core::tracking::{self, TrackKind, TrackingClaim};
use relance_core::unsubscribe::{self, UnsubscribeClaim};
use relance_core::validate;
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, ApiSecurity};
use crate::import::{self, ContactsFormat};
use crate::runtime::RuntimeError;
use crate::server::RuntimeHandle;

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Self {
        let mut error = json!({"message": message.into()});
        if let Some(f) = field {
            error["field"] = json!(f);
        }
        ApiError {
            status,
            body: json!({"error": error}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<wire::WireError> for ApiError {
    fn from(e: wire::WireError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.message, Some(&e.field))
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match &e {
            RuntimeError::UnknownScenario(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string(), None)
            }
            RuntimeError::Invalid { problems, .. } => {
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None);
                err.body["error"]["problems"] = json!(problems);
                err
            }
            RuntimeError::Lifecycle { .. } | RuntimeError::NotActive { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string(), None)
            }
            RuntimeError::BadInput { field, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, message.clone(), Some(field))
            }
            RuntimeError::Store(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
            }
        }
    }
}

impl From<crate::server::CallError> for ApiError {
    fn from(e: crate::server::CallError) -> Self {
        if matches!(e, crate::server::CallError::NotCommitted(_)) {
            tracing::error!(error = %e, "a request's work was not committed");
        }
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None)
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, body: impl serde::Serialize) -> ApiResult {
    Ok((status, axum::Json(body)).into_response())
}

/// The API's routes over a runtime handle, behind `security` (DESIGN §8: the bearer token,
/// the content types, the `Host` names). The metrics recorder is installed here if it was not
/// yet ([`crate::metrics::install`]), so that `/metrics` counts from the start.
pub fn router(handle: RuntimeHandle, security: ApiSecurity) -> Router {
    if let Err(e) = crate::metrics::install() {
        tracing::warn!(error = %e, "/metrics answers 500");
    }
    let security = std::sync::Arc::new(security);
    let console = crate::console::router(handle.clone(), security.clone());
    Router::new()
        .route(
            "/v1/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/v1/scenarios", get(list_scenarios).post(put_scenario))
        .route("/v1/scenarios/validate", post(validate_scenario))
        .route(
            "/v1/scenarios/{id}/activate",
            post(|s, p| set_status(s, p, Status::Active)),
        )
        .route(
            "/v1/scenarios/{id}/pause",
            post(|s, p| set_status(s, p, Status::Paused)),
        )
        .route(
            "/v1/scenarios/{id}/archive",
            post(|s, p| set_status(s, p, Status::Archived)),
        )
        .route("/v1/scenarios/{id}/launch", post(launch_scenario))
        .route("/v1/scenarios/{id}/journal", get(journal))
        .route("/v1/scenarios/{id}/report", get(report))
        .route("/v1/scenarios/{id}/contacts/{contact}", get(contact_path))
        .route("/v1/contacts", post(post_contact))
        // Imports are files: allow them far more than the default 2 MB.
        .route(
            "/v1/contacts/import",
            post(import_contacts).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/v1/events", post(post_activity))
        .route("/v1/engagement", post(post_engagement))
        .route("/v1/launch", post(post_launch))
        .route("/v1/consent", post(post_consent))
        .route("/v1/consent/{contact}", get(consent_trail))
        // Prometheus text (DESIGN §9): behind the token like every /v1 route; Prometheus
        // scrapes with `authorization: {credentials: TOKEN}`.
        .route("/metrics", get(prometheus_metrics))
        // RFC 8058: mail clients POST the one-click form; a GET (a link scanner, a person
        // clicking) only shows a confirmation page, it never unsubscribes by itself.
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        // Open and click tracking: signed like the unsubscribe links, open like them.
        .route("/t/o/{token}", get(open_pixel))
        .route("/t/c/{token}", get(click_redirect))
        .fallback(|| async { no_such_route() })
        .with_state(handle)
        // The web console (`/`, `/login`, `/scenarios/...`): its own session check.
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(security, auth::guard))
        // Outermost: every refusal, even the HTTP layer's own, answers in JSON.
        .layer(axum::middleware::from_fn(auth::json_errors))
}

/// The answer to an unknown route, and to a tracking URL whose token does not verify (so a
/// prober cannot tell a forged token from a missing route, nor which part failed).
fn no_such_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see the README's API table",
        None,
    )
}

/// The largest contacts file the API takes in one request.
const IMPORT_LIMIT: usize = 256 * 1024 * 1024;

fn scenario_format(headers: &HeaderMap) -> SourceFormat {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        SourceFormat::Json
    } else {
        SourceFormat::Yaml
    }
}

fn utf8(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text",
            Some("body"),
        )
    })
}

async fn list_scenarios(State(h): State<RuntimeHandle>) -> ApiResult {
    let list = h.call(|rt, _| rt.scenarios()).await??;
    ok(StatusCode::OK, list)
}

async fn put_scenario(
    State(h): State<RuntimeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let text = utf8(&body)?;
    let format = scenario_format(&headers);
    // Read first off the runner, under the validations' deadline: a document that does not
    // read is refused as the runner would refuse it (it stores nothing), and one that takes
    // long to read never holds the runner, which every other request waits on.
    let (text, read) = off_the_runner(move || {
        let read = relance_core::scenario::parse_document(&text, format.into()).map(|_| ());
        (text, read)
    })
    .await?;
    if let Err(problem) = read {
        return Err(RuntimeError::Invalid {
            id: String::new(),
            problems: vec![problem],
        }
        .into());
    }
    let outcome = h
        .call(move |rt, now| rt.put_scenario(&text, format, now))
        .await??;
    ok(
        if outcome.changed {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        outcome,
    )
}

/// Validations running at once: each is CPU work on a blocking thread, never on the async
/// workers that answer `/v1/health` and the other routes.
const VALIDATION_SLOTS: usize = 2;
/// How long a request waits for its validation (a slot, then the work) before a 503.
const VALIDATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
static VALIDATIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(VALIDATION_SLOTS);

/// Runs `work` (reading or validating a scenario) on a blocking thread in one of the
/// validation slots, under their deadline (503 past it).
async fn off_the_runner<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "validation did not finish within 10 s (or too many run at once); try again",
            None,
        )
    };
    let slot_and_work = async {
        let permit = VALIDATIONS.acquire().await.map_err(|_| busy())?;
        // The slot is held by the blocking work itself, so a request that gave up still
        // counts until its validation ends: at most VALIDATION_SLOTS run at any time.
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("validation failed: {e}"),
                None,
            )
        })
    };
    tokio::time::timeout(VALIDATION_DEADLINE, slot_and_work)
        .await
        .map_err(|_| busy())?
}

async fn validate_scenario(headers: HeaderMap, body: Bytes) -> ApiResult {
    let text = utf8(&body)?;
    let format = scenario_format(&headers).into();
    let report = off_the_runner(move || validate::check_text(&text, format)).await?;
    ok(
        StatusCode::OK,
        json!({"errors": report.errors(), "problems": report.problems}),
    )
}

async fn set_status(
    State(h): State<RuntimeHandle>,
    Path(id): Path<String>,
    status: Status,
) -> ApiResult {
    let entry = h
        .call(move |rt, now| rt.set_status(&id, status, now))
        .await??;
    ok(StatusCode::OK, entry)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchBody {
    #[serde(default)]
    contacts: Option<Vec<String>>,
}

async fn launch_scenario(
    State(h): State<RuntimeHandle>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body: LaunchBody = if body.is_empty() {
        LaunchBody { contacts: None }
    } else {
        wire::decode(&body)?
    };
    let detail = LaunchDetail {
        scenario: id,
        contacts: body.contacts,
    };
    let report = h.call(move |rt, now| rt.launch(detail, now)).await??;
    ok(StatusCode::OK, report)
}

async fn post_launch(State(h): State<RuntimeHandle>, body: Bytes) -> ApiResult {
    let detail: LaunchDetail = wire::decode(&body)?;
    let report = h.call(move |rt, now| rt.launch(detail, now)).await??;
    ok(StatusCode::OK, report)
}

async fn journal(State(h): State<RuntimeHandle>, Path(id): Path<String>) -> ApiResult {
    let counts = h.call(move |rt, _| rt.journal(&id)).await??;
    ok(StatusCode::OK, counts)
}

async fn prometheus_metrics() -> Result<Response, ApiError> {
    let text = crate::metrics::render().map_err(|e| {
        tracing::error!(error = %e, "metrics");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
    })?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn report(State(h): State<RuntimeHandle>, Path(id): Path<String>) -> ApiResult {
    let report = h.call(move |rt, _| rt.report(&id)).await??;
    ok(StatusCode::OK, report)
}

async fn contact_path(
    State(h): State<RuntimeHandle>,
    Path((id, contact)): Path<(String, String)>,
) -> ApiResult {
    let records = h.call(move |rt, _| rt.path(&id, &contact)).await??;
    ok(StatusCode::OK, records)
}

async fn post_contact(State(h): State<RuntimeHandle>, body: Bytes) -> ApiResult {
    let detail: ContactDetail = wire::decode(&body)?;
    // Checked here as well as by the runtime, so that the error names the field at fault
    // (an empty or null id is as missing as an absent one).
    if let Err(e) = Contact::from_json(Value::Object(detail.contact.clone())) {
        let field = match &e {
            ContactError::MissingId => "contact.id".to_string(),
            ContactError::Reserved { key, .. } => format!("contact.{key}"),
            ContactError::NotAnObject => "contact".to_string(),
            ContactError::Consent { kind, .. } => format!("contact.subscriptions.{kind}"),
        };
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            e.to_string(),
            Some(&field),
        ));
    }
    let change = h
        .call(move |rt, now| {
            rt.set_actor(API_ACTOR);
            rt.upsert_contact(detail, now)
        })
        .await??;
    ok(StatusCode::OK, json!({"change": change}))
}

async fn post_activity(State(h): State<RuntimeHandle>, body: Bytes) -> ApiResult {
    let detail: ActivityDetail = wire::decode(&body)?;
    h.call(move |rt, now| {
        rt.set_actor(API_ACTOR);
        rt.activity(detail, now)
    })
    .await??;
    ok(StatusCode::ACCEPTED, json!({"accepted": true}))
}

async fn post_engagement(State(h): State<RuntimeHandle>, body: Bytes) -> ApiResult {
    let detail: EngagementDetail = wire::decode(&body)?;
    h.call(move |rt, now| rt.engagement(detail, now)).await??;
    ok(StatusCode::ACCEPTED, json!({"accepted": true}))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn page(status: u16, text: &str, form_token: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let html = unsubscribe::page_html(text, form_token);
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn check_token(
    h: &RuntimeHandle,
    token: Option<&str>,
) -> Result<UnsubscribeClaim, (u16, &'static str)> {
    unsubscribe::check_request(token, h.unsubscribe().map(|l| l.secret.as_slice()))
}

async fn unsubscribe_page(State(h): State<RuntimeHandle>, Query(q): Query<TokenQuery>) -> Response {
    match check_token(&h, q.token.as_deref()) {
        Ok(claim) => page(200, &unsubscribe::confirm_text(&claim), q.token.as_deref()),
        Err((status, why)) => page(status, why, None),
    }
}

async fn unsubscribe(State(h): State<RuntimeHandle>, Query(q): Query<TokenQuery>) -> Response {
    let claim = match check_token(&h, q.token.as_deref()) {
        Ok(c) => c,
        Err((status, why)) => {
            tracing::warn!(status, why, "unsubscribe refused");
            return page(status, why, None);
        }
    };
    let kind = claim.communication_type.clone();
    match h.call(move |rt, now| rt.unsubscribe(&claim, now)).await {
        Ok(Ok(())) => page(200, &unsubscribe::done_text(&kind), None),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn import_contacts(
    State(h): State<RuntimeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("csv"));
    let (rows, rejected) = import::parse_contacts_bytes(
        &body,
        if csv {
            ContactsFormat::Csv
        } else {
            ContactsFormat::JsonLines
        },
    );
    let contacts: Vec<_> = rows.into_iter().map(|(_, c)| c).collect();
    let results = h
        .call(move |rt, now| {
            rt.set_actor(API_ACTOR);
            rt.import(&contacts, now, &mut |_| {})
        })
        .await??;
    ok(StatusCode::OK, import::report(&results, &rejected))
}

/// The actor the consent log names for changes made through the API.
const API_ACTOR: &str = "api";

/// `POST /v1/consent`: the explicit consent call (re-subscribe with a source, lift a
/// suppression with a reason); answers the consent events appended.
async fn post_consent(State(h): State<RuntimeHandle>, body: Bytes) -> ApiResult {
    let request: relance_core::consent::ConsentRequest = wire::decode(&body)?;
    let events = h
        .call(move |rt, now| {
            rt.set_actor(API_ACTOR);
            rt.consent(&request, now)
        })
        .await??;
    ok(StatusCode::OK, json!({"events": events}))
}

/// `GET /v1/consent/{contact}`: the contact's consent trail, oldest first.
async fn consent_trail(State(h): State<RuntimeHandle>, Path(contact): Path<String>) -> ApiResult {
    let trail = h.call(move |rt, _| rt.consent_trail(&contact)).await??;
    ok(StatusCode::OK, json!({"trail": trail}))
}

/// The claim of a tracking request, or None (tracking off, or a token that does not verify
/// for this route: logged, never told to the caller).
fn tracking_claim(h: &RuntimeHandle, kind: TrackKind, token: &str) -> Option<TrackingClaim> {
    let links = h.tracking()?;
    match links.verify(kind, token) {
        Ok(claim) => Some(claim),
        Err(e) => {
            tracing::warn!(error = %e, ?kind, "tracking token refused");
            None
        }
    }
}

/// Records an open or a click as engagement. Each fetch is one event (no idempotency key, no
/// `at`: the runtime stamps it and does not deduplicate), as a provider reports every open.
/// A contact or scenario gone since the send records nothing; that is logged, not answered.
async fn record(h: &RuntimeHandle, claim: TrackingClaim) {
    let kind = match claim.kind {
        TrackKind::Open => EngagementKind::Opened,
        TrackKind::Click => EngagementKind::Clicked,
    };
    let detail = EngagementDetail {
        contact: claim.contact,
        scenario: claim.scenario,
        step: claim.step,
        kind,
        url: claim.url,
        link_tags: claim.tags,
        at: None,
        idempotency_key: None,
    };
    let (contact, scenario) = (detail.contact.clone(), detail.scenario.clone());
    match h.call(move |rt, now| rt.engagement(detail, now)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %contact, %scenario, kind = kind.as_str(), "tracking: engagement not recorded");
        }
        Err(e) => {
            tracing::error!(error = %e, %contact, %scenario, kind = kind.as_str(), "tracking: engagement not recorded");
        }
    }
}

/// `GET /t/o/{token}`: records `opened`, answers a transparent 1x1 GIF that is never cached
/// (each display of the email fetches it again). A HEAD only answers.
async fn open_pixel(
    State(h): State<RuntimeHandle>,
    method: Method,
    Path(token): Path<String>,
) -> Response {
    let Some(claim) = tracking_claim(&h, TrackKind::Open, &token) else {
        return no_such_route().into_response();
    };
    if method == Method::GET {
        record(&h, claim).await;
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, no-cache, must-revalidate"),
        ],
        tracking::PIXEL_GIF.as_slice(),
    )
        .into_response()
}

/// `GET /t/c/{token}`: records `clicked` with the link's URL and tags, then `302 Found` to
/// that URL, which only a valid signature can name (never an open redirect). The reader
/// reaches the page even when nothing could be recorded. A HEAD only answers.
async fn click_redirect(
    State(h): State<RuntimeHandle>,
    method: Method,
    Path(token): Path<String>,
) -> Response {
    let Some(claim) = tracking_claim(&h, TrackKind::Click, &token) else {
        return no_such_route().into_response();
    };
    let target = tracking::location(claim.url.as_deref().unwrap_or_default());
    if method == Method::GET {
        record(&h, claim).await;
    }
    match axum::http::HeaderValue::from_str(&target) {
        Ok(location) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (
                    header::CACHE_CONTROL,
                    axum::http::HeaderValue::from_static("no-store"),
                ),
            ],
        )
            .into_response(),
        Err(_) => no_such_route().into_response(),
    }
}
