//! The console's pages: what each shows, read on the runner (one job per page) and rendered
//! by the autoescaping templates. Lifecycle buttons and test mode are the only writes;
//! test mode simulates on a memory store (nothing is sent or written).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::context;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relance_core::IsoDuration;
use relance_core::contact::Contact;
use relance_core::journal::{JournalCounts, Record};
use relance_core::ports::{ContactStore, ScenarioStore, Status};
use relance_core::report::Report;
use relance_core::scenario::{Launch, Scenario};
use relance_core::script::{self, ScriptedEvent};
use relance_core::wire::LaunchDetail;
use relance_runtime::player::Sink;
use relance_runtime::simulate::Simulation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::session::{self, LOGIN_COOKIE, SESSION_COOKIE, SESSION_LIFETIME};
use super::{Console, LoggedIn};
use crate::runtime::{Runtime, RuntimeError};
use crate::store::SqliteStore;

/// Records the journal page and a scenario page show.
const RECENT: usize = 200;
const RECENT_ON_SCENARIO: usize = 25;
/// Profiles test mode takes at once.
const MAX_PROFILES: usize = 100;
/// How long a test run may take before it is given up (it runs on a blocking thread).
const TEST_DEADLINE: Duration = Duration::from_secs(10);
/// Test runs at once (each is CPU work).
static TEST_RUNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

type Page = Result<Response, Response>;

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment, percent-encoded (contact and scenario ids go into links).
fn seg(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Renders a template, or a 500 naming the template (a bug: the templates are embedded).
fn render(console: &Console, name: &str, ctx: minijinja::Value) -> Response {
    render_status(console, StatusCode::OK, name, ctx)
}

fn render_status(
    console: &Console,
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
) -> Response {
    let rendered = console
        .templates
        .get_template(name)
        .and_then(|t| t.render(ctx));
    match rendered {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            // Display only: the alternate form lists the context's values (contact data).
            tracing::error!(template = name, error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("console template {name} failed to render"),
            )
                .into_response()
        }
    }
}

/// A page that only says why (a refusal, an error), with the status.
pub(super) fn refused(console: &Console, status: StatusCode, message: &str) -> Response {
    render_status(
        console,
        status,
        "message.html",
        context! {title => status.canonical_reason().unwrap_or("Refused"), message, csrf => ""},
    )
}

fn runtime_error(console: &Console, e: &RuntimeError) -> Response {
    let status = match e {
        RuntimeError::UnknownScenario(_) => StatusCode::NOT_FOUND,
        RuntimeError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        RuntimeError::Lifecycle { .. } | RuntimeError::NotActive { .. } => StatusCode::CONFLICT,
        RuntimeError::BadInput { .. } => StatusCode::BAD_REQUEST,
        RuntimeError::Store(_) => {
            tracing::error!(error = %e, "store failure");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    refused(console, status, &e.to_string())
}

/// Runs `work` on the runner; its error becomes the page that says it.
async fn on_runner<T: Send + 'static>(
    console: &Console,
    work: impl FnOnce(&mut Runtime<SqliteStore>, DateTime<Utc>) -> Result<T, RuntimeError>
    + Send
    + 'static,
) -> Result<T, Response> {
    match console.handle.call(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(runtime_error(console, &e)),
        Err(e) => Err(refused(
            console,
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        )),
    }
}

fn store_err(e: crate::store::StoreError) -> RuntimeError {
    RuntimeError::Store(Box::new(e))
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A urlencoded form's fields (the last value of a repeated name wins).
fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Login and logout
// ---------------------------------------------------------------------------------------------

/// `GET /login`: the form, with a fresh pre-login CSRF token in a cookie and in the form.
pub(super) async fn login_form(State(console): State<Console>, headers: HeaderMap) -> Response {
    if session::cookie(&headers, SESSION_COOKIE)
        .is_some_and(|id| console.sessions.get(id).is_some())
    {
        return redirect("/");
    }
    login_page(&console, &headers, StatusCode::OK, None)
}

fn login_page(
    console: &Console,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let token = match session::random_token() {
        Ok(t) => t,
        Err(e) => return refused(console, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut response = render_status(
        console,
        status,
        "login.html",
        context! {title => "Log in", csrf => token, error},
    );
    let cookie = session::set_cookie(LOGIN_COOKIE, &token, 600, session::secure(headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `POST /login`: the API token (compared by digest in constant time) for a session. The
/// form's CSRF token must be the pre-login cookie's; failures are limited per minute.
pub(super) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_form = crate::auth::is_form(&headers);
    let fields = form_fields(&body);
    let expected = session::cookie(&headers, LOGIN_COOKIE);
    let given = fields.get("csrf");
    if !is_form || !matches!((expected, given), (Some(e), Some(g)) if session::same(e, g)) {
        return refused(
            &console,
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or stale: open the login page again",
        );
    }
    // The right token always opens a session: counted across every client, failures past
    // the limit would otherwise let anyone keep the owner out with ten posts a minute. The
    // limit does not slow guessing (every guess is still checked, and the API's bearer check
    // has no limit of its own): the token's length is the defence, at least 24 characters.
    // Past it, wrong tokens get 429 instead of 401, and the log says so.
    let token = fields.get("token").map(|t| t.trim()).unwrap_or("");
    let right = console.security.accepts(token);
    if !right && !console.sessions.may_try() {
        tracing::warn!("console login refused: too many failed logins in the last minute");
        return login_page(
            &console,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins in the last minute: wait a minute and try again."),
        );
    }
    if !right {
        console.sessions.failed();
        tracing::warn!("console login with a wrong token");
        return login_page(
            &console,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That is not this server's API token."),
        );
    }
    let (id, _) = match console.sessions.open() {
        Ok(s) => s,
        Err(e) => return refused(&console, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let secure = session::secure(&headers);
    let mut response = redirect("/");
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &id, SESSION_LIFETIME.as_secs(), secure),
        session::set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// `POST /logout`: ends the session and clears the cookie.
pub(super) async fn logout(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    headers: HeaderMap,
) -> Response {
    console.sessions.close(&me.id);
    let mut response = redirect("/login");
    let cookie = session::set_cookie(SESSION_COOKIE, "", 0, session::secure(&headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The scenario list
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct PartQuery {
    part: Option<String>,
    done: Option<String>,
}

#[derive(Debug, Serialize)]
struct ScenarioRow {
    id: String,
    url: String,
    name: String,
    status: &'static str,
    latest_version: u32,
    active_version: Option<u32>,
    entered: u64,
    active: u64,
    ended: u64,
}

/// Entered, still running and ended enrollments from the counts.
fn totals(counts: &JournalCounts) -> (u64, u64, u64) {
    let ended: u64 = counts.ends.values().sum();
    (counts.entered, counts.entered.saturating_sub(ended), ended)
}

/// The scenario of the version new entries use (else the latest), when it loads.
fn current_scenario(
    rt: &mut Runtime<SqliteStore>,
    id: &str,
) -> Result<Option<(u32, Scenario)>, RuntimeError> {
    let Some(entry) = rt.store().scenario(id).map_err(store_err)? else {
        return Err(RuntimeError::UnknownScenario(id.to_string()));
    };
    let version = entry.active_version.unwrap_or(entry.latest_version);
    // A stored draft that does not validate has no engine: the page still shows its counts.
    Ok(rt
        .engine(id, version)
        .ok()
        .map(|e| (version, e.scenario().clone())))
}

fn scenario_rows(rt: &mut Runtime<SqliteStore>) -> Result<Vec<ScenarioRow>, RuntimeError> {
    let mut rows = Vec::new();
    for entry in rt.scenarios()? {
        let counts = rt.journal(&entry.id)?;
        let (entered, active, ended) = totals(&counts);
        let name = current_scenario(rt, &entry.id)?
            .map(|(_, s)| s.name)
            .unwrap_or_default();
        rows.push(ScenarioRow {
            url: format!("/scenarios/{}", seg(&entry.id)),
            id: entry.id,
            name,
            status: entry.status.as_str(),
            latest_version: entry.latest_version,
            active_version: entry.active_version,
            entered,
            active,
            ended,
        });
    }
    Ok(rows)
}

/// `GET /`: every scenario with its status, version and counts (`?part=counts`: the table
/// alone, which the page's script fetches again every few seconds).
pub(super) async fn list(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Query(q): Query<PartQuery>,
) -> Page {
    let rows = on_runner(&console, |rt, _| scenario_rows(rt)).await?;
    let template = if q.part.as_deref() == Some("counts") {
        "list_counts.html"
    } else {
        "list.html"
    };
    Ok(render(
        &console,
        template,
        context! {title => "Scenarios", nav => "scenarios", csrf => me.session.csrf, rows},
    ))
}

// ---------------------------------------------------------------------------------------------
// A scenario
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct StepRow {
    id: String,
    entered: u64,
    sent: u64,
    failed: u64,
    skipped: String,
    assigned: String,
    engagement: String,
}

fn listing(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row per step, in the scenario's order, then steps only older versions had.
fn step_rows(scenario: Option<&Scenario>, counts: &JournalCounts) -> Vec<StepRow> {
    let mut order: Vec<String> = scenario
        .map(|s| s.steps.iter().map(|st| st.id.clone()).collect())
        .unwrap_or_default();
    for id in counts.steps.keys() {
        if !order.contains(id) {
            order.push(id.clone());
        }
    }
    order
        .into_iter()
        .map(|id| {
            let c = counts.steps.get(&id).cloned().unwrap_or_default();
            StepRow {
                id,
                entered: c.entered,
                sent: c.sent,
                failed: c.failed,
                skipped: listing(&c.skipped),
                assigned: listing(&c.assigned),
                engagement: listing(&c.engagement),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct RecordRow {
    at: String,
    scenario: String,
    scenario_url: String,
    contact: String,
    contact_url: String,
    kind: &'static str,
    step: String,
    detail: String,
}

/// What a record says beyond its kind and step, as one line.
fn detail(r: &Record) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &r.channel {
        parts.push(format!(
            "channel {}",
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
    }
    for (name, value) in [
        ("message", &r.message),
        ("reason", &r.reason),
        ("end", &r.end),
        ("branch", &r.branch),
        ("next", &r.next),
        ("action", &r.action),
    ] {
        if let Some(v) = value {
            parts.push(format!("{name} {v}"));
        }
    }
    if let Some(until) = r.until {
        parts.push(format!("until {}", time(until)));
    }
    if let Some(v) = &r.value {
        parts.push(format!("value {v}"));
    }
    parts.join(", ")
}

fn record_row(scenario: &str, r: &Record) -> RecordRow {
    RecordRow {
        at: time(r.at),
        scenario: scenario.to_string(),
        scenario_url: format!("/scenarios/{}", seg(scenario)),
        contact: r.contact.clone(),
        contact_url: if r.contact.is_empty() {
            String::new()
        } else {
            format!("/contacts/{}", seg(&r.contact))
        },
        kind: r.kind.as_str(),
        step: r.step.clone().unwrap_or_default(),
        detail: detail(r),
    }
}

#[derive(Debug, Serialize)]
struct VersionRow {
    version: u32,
    url: String,
    format: &'static str,
    bytes: usize,
    active: bool,
    latest: bool,
}

#[derive(Debug, Serialize)]
struct ScenarioView {
    id: String,
    url: String,
    journal_url: String,
    name: String,
    status: &'static str,
    latest_version: u32,
    active_version: Option<u32>,
    entered: u64,
    active: u64,
    ended: u64,
    converted: u64,
    not_entered: Vec<(String, u64)>,
    ends: Vec<(String, u64)>,
    steps: Vec<StepRow>,
    winners: Vec<(String, String)>,
    versions: Vec<VersionRow>,
    report: Option<Report>,
    records: Vec<RecordRow>,
    can_activate: bool,
    can_pause: bool,
    can_archive: bool,
    can_launch: bool,
}

fn scenario_view(
    rt: &mut Runtime<SqliteStore>,
    id: &str,
    full: bool,
) -> Result<ScenarioView, RuntimeError> {
    let entry = rt
        .store()
        .scenario(id)
        .map_err(store_err)?
        .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
    let counts = rt.journal(id)?;
    let current = current_scenario(rt, id)?;
    let scenario = current.as_ref().map(|(_, s)| s);
    let (entered, active, ended) = totals(&counts);
    let mut versions = Vec::new();
    let mut report = None;
    let mut records = Vec::new();
    if full {
        for v in (1..=entry.latest_version).rev() {
            if let Some(source) = rt.store().scenario_source(id, v).map_err(store_err)? {
                versions.push(VersionRow {
                    version: v,
                    url: format!("/scenarios/{}/versions/{v}", seg(id)),
                    format: match source.format {
                        relance_core::ports::SourceFormat::Json => "JSON",
                        relance_core::ports::SourceFormat::Yaml => "YAML",
                    },
                    bytes: source.text.len(),
                    active: entry.active_version == Some(v),
                    latest: v == entry.latest_version,
                });
            }
        }
        // The experiment report, when the scenario runs an experiment: a conversion goal,
        // a holdout, a split or message variants.
        let experiment = scenario.is_some_and(|s| {
            s.conversion.is_some() || s.holdout.is_some() || s.winner_steps().next().is_some()
        });
        if experiment && current.is_some() {
            let r = rt.report(id)?;
            let splits = r
                .steps
                .iter()
                .any(|s| !s.paths.is_empty() || !s.variants.is_empty());
            if experiment || splits {
                report = Some(r);
            }
        }
        records = rt
            .store()
            .recent_records(Some(id), RECENT_ON_SCENARIO)
            .map_err(store_err)?
            .iter()
            .map(|(s, r)| record_row(s, r))
            .collect();
    }
    let launchable = scenario.is_some_and(|s| {
        matches!(s.launch, Launch::Manual | Launch::AfterImport(_))
            || matches!(&s.launch, Launch::Trigger(t) if t.event == "manual")
    });
    Ok(ScenarioView {
        id: id.to_string(),
        url: format!("/scenarios/{}", seg(id)),
        journal_url: format!("/journal?scenario={}", seg(id)),
        name: scenario.map(|s| s.name.clone()).unwrap_or_default(),
        status: entry.status.as_str(),
        latest_version: entry.latest_version,
        active_version: entry.active_version,
        entered,
        active,
        ended,
        converted: counts.converted,
        not_entered: counts.not_entered.clone().into_iter().collect(),
        ends: counts.ends.clone().into_iter().collect(),
        steps: step_rows(scenario, &counts),
        winners: counts.winners.clone().into_iter().collect(),
        versions,
        report,
        records,
        can_activate: matches!(entry.status, Status::Draft | Status::Paused),
        can_pause: entry.status == Status::Active,
        can_archive: entry.status != Status::Archived,
        can_launch: entry.status == Status::Active && launchable,
    })
}

/// `GET /scenarios/{id}`: its diagram, counts, versions, lifecycle buttons, experiment report
/// and recent records (`?part=counts`: the counts alone, fetched again by the script).
pub(super) async fn scenario(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Path(id): Path<String>,
    Query(q): Query<PartQuery>,
) -> Page {
    let counts_only = q.part.as_deref() == Some("counts");
    let view = on_runner(&console, move |rt, _| scenario_view(rt, &id, !counts_only)).await?;
    let done = match q.done.as_deref() {
        Some("activate") => Some("Activated."),
        Some("pause") => Some("Paused."),
        Some("archive") => Some("Archived."),
        Some("launch") => Some("Launched."),
        _ => None,
    };
    let template = if counts_only {
        "counts.html"
    } else {
        "scenario.html"
    };
    Ok(render(
        &console,
        template,
        context! {title => format!("Scenario {}", view.id), nav => "scenarios", csrf => me.session.csrf, s => view, done},
    ))
}

/// `GET /scenarios/{id}/diagram.svg`: the diagram with the journal's counts, drawn off the
/// runner (layout is CPU work). An image cannot run script; its own policy allows only the
/// style the SVG writer puts inline.
pub(super) async fn diagram(State(console): State<Console>, Path(id): Path<String>) -> Page {
    let (scenario, counts) = on_runner(&console, move |rt, _| {
        let counts = rt.journal(&id)?;
        Ok((current_scenario(rt, &id)?, counts))
    })
    .await?;
    let Some((_, scenario)) = scenario else {
        return Err(refused(
            &console,
            StatusCode::NOT_FOUND,
            "this scenario's current version does not validate: no diagram",
        ));
    };
    let svg = tokio::task::spawn_blocking(move || {
        super::diagram::svg(&relance_core::graph::dot(&scenario, Some(&counts)))
    })
    .await;
    match svg {
        Ok(Ok(svg)) => Ok((
            [
                (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            svg,
        )
            .into_response()),
        Ok(Err(e)) => Err(refused(
            &console,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
        Err(e) => Err(refused(
            &console,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// `GET /scenarios/{id}/versions/{version}`: a stored version's text.
pub(super) async fn version(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Path((id, version)): Path<(String, u32)>,
) -> Page {
    let key = id.clone();
    let source = on_runner(&console, move |rt, _| {
        rt.store().scenario_source(&key, version).map_err(store_err)
    })
    .await?;
    let Some(source) = source else {
        return Err(refused(
            &console,
            StatusCode::NOT_FOUND,
            &format!("scenario \"{id}\" has no version {version}"),
        ));
    };
    Ok(render(
        &console,
        "version.html",
        context! {title => format!("{id} version {version}"), nav => "scenarios", csrf => me.session.csrf,
        id, url => format!("/scenarios/{}", seg(&source.id)), version, text => source.text},
    ))
}

/// `POST /scenarios/{id}/{action}`: activate, pause, archive or launch (for its audience),
/// then back to the scenario page.
pub(super) async fn lifecycle(
    State(console): State<Console>,
    Path((id, action)): Path<(String, String)>,
) -> Page {
    let status = match action.as_str() {
        "activate" => Some(Status::Active),
        "pause" => Some(Status::Paused),
        "archive" => Some(Status::Archived),
        "launch" => None,
        _ => {
            return Err(refused(
                &console,
                StatusCode::NOT_FOUND,
                &format!("\"{action}\" is not activate, pause, archive or launch"),
            ));
        }
    };
    let key = id.clone();
    on_runner(&console, move |rt, now| {
        rt.set_actor("console");
        match status {
            Some(status) => rt.set_status(&key, status, now).map(|_| ()),
            None => rt
                .launch(
                    LaunchDetail {
                        scenario: key,
                        contacts: None,
                    },
                    now,
                )
                .map(|_| ()),
        }
    })
    .await?;
    Ok(redirect(&format!("/scenarios/{}?done={action}", seg(&id))))
}

// ---------------------------------------------------------------------------------------------
// Contacts and the journal
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct FindQuery {
    id: Option<String>,
}

/// `GET /contacts?id=...`: the contact search form's target.
pub(super) async fn find_contact(Query(q): Query<FindQuery>) -> Response {
    match q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        Some(id) => redirect(&format!("/contacts/{}", seg(id))),
        None => redirect("/journal"),
    }
}

#[derive(Debug, Serialize)]
struct PathView {
    scenario: String,
    url: String,
    records: Vec<RecordRow>,
}

#[derive(Debug, Serialize)]
struct ConsentRow {
    at: String,
    subject: String,
    state: String,
    source: String,
    actor: String,
    reason: String,
    kept: bool,
}

#[derive(Debug, Serialize)]
struct ContactView {
    found: bool,
    profile: Vec<(String, String)>,
    consent: Vec<ConsentRow>,
    paths: Vec<PathView>,
}

fn contact_view(rt: &mut Runtime<SqliteStore>, id: &str) -> Result<ContactView, RuntimeError> {
    let contact: Option<Contact> = rt.store().contact(id).map_err(store_err)?;
    let profile = contact
        .as_ref()
        .map(|c| {
            c.fields()
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    let consent = rt
        .consent_trail(id)?
        .into_iter()
        .map(|e| ConsentRow {
            at: time(e.at),
            subject: e.subject,
            state: serde_json::to_value(e.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            source: e.source,
            actor: e.actor,
            reason: e.reason.unwrap_or_default(),
            kept: e.kept,
        })
        .collect::<Vec<_>>();
    let mut paths = Vec::new();
    for entry in rt.scenarios()? {
        let records = rt.path(&entry.id, id)?;
        if !records.is_empty() {
            paths.push(PathView {
                url: format!("/scenarios/{}", seg(&entry.id)),
                records: records.iter().map(|r| record_row(&entry.id, r)).collect(),
                scenario: entry.id,
            });
        }
    }
    Ok(ContactView {
        found: contact.is_some() || !consent.is_empty() || !paths.is_empty(),
        profile,
        consent,
        paths,
    })
}

/// `GET /contacts/{id}`: the profile, the consent trail and every scenario path.
pub(super) async fn contact(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Path(id): Path<String>,
) -> Page {
    let key = id.clone();
    let view = on_runner(&console, move |rt, _| contact_view(rt, &key)).await?;
    let status = if view.found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(render_status(
        &console,
        status,
        "contact.html",
        context! {title => format!("Contact {id}"), nav => "contacts", csrf => me.session.csrf, id, c => view},
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct JournalQuery {
    scenario: Option<String>,
}

/// `GET /journal`: the newest records, of every scenario or of one.
pub(super) async fn journal(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Query(q): Query<JournalQuery>,
) -> Page {
    let chosen = q.scenario.filter(|s| !s.is_empty());
    let filter = chosen.clone();
    let (ids, records) = on_runner(&console, move |rt, _| {
        let ids: Vec<String> = rt.scenarios()?.into_iter().map(|e| e.id).collect();
        let records: Vec<RecordRow> = rt
            .store()
            .recent_records(filter.as_deref(), RECENT)
            .map_err(store_err)?
            .iter()
            .map(|(s, r)| record_row(s, r))
            .collect();
        Ok((ids, records))
    })
    .await?;
    Ok(render(
        &console,
        "journal.html",
        context! {title => "Journal", nav => "journal", csrf => me.session.csrf, ids, chosen, records, limit => RECENT},
    ))
}

// ---------------------------------------------------------------------------------------------
// Test mode
// ---------------------------------------------------------------------------------------------

/// `GET /scenarios/{id}/test`: the form.
pub(super) async fn test_form(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Path(id): Path<String>,
) -> Page {
    let key = id.clone();
    on_runner(&console, move |rt, _| current_scenario(rt, &key)).await?;
    Ok(render(
        &console,
        "test.html",
        context! {title => format!("Test {id}"), nav => "scenarios", csrf => me.session.csrf, id,
        url => format!("/scenarios/{}", seg(&id)), action => format!("/scenarios/{}/test", seg(&id)),
        profiles => "", events => "", until => "P30D", errors => Vec::<String>::new(), notes => Vec::<String>::new(), results => Vec::<()>::new(), ran => false},
    ))
}

/// One profile's simulated path.
#[derive(Debug, Serialize)]
struct TestResult {
    contact: String,
    records: Vec<RecordRow>,
}

/// Collects the simulation's records; a refused event is noted and the play goes on.
#[derive(Default)]
struct Collect {
    records: Vec<Record>,
    refused: Vec<String>,
}

impl Sink for Collect {
    fn record(&mut self, _scenario: &str, record: &Record) {
        self.records.push(record.clone());
    }

    fn refused(&mut self, error: RuntimeError) -> Result<(), RuntimeError> {
        self.refused.push(error.to_string());
        Ok(())
    }
}

/// What a test run reads from the store: the version's text and syntax, the scenario, the
/// workspace policy and shared messages.
type TestInputs = (
    String,
    relance_core::ports::SourceFormat,
    Scenario,
    Option<String>,
    Option<String>,
);

fn test_inputs(rt: &mut Runtime<SqliteStore>, id: &str) -> Result<TestInputs, RuntimeError> {
    let Some((version, scenario)) = current_scenario(rt, id)? else {
        return Err(RuntimeError::BadInput {
            field: "scenario".into(),
            message: format!("scenario \"{id}\": its current version does not validate"),
        });
    };
    let source = rt
        .store()
        .scenario_source(id, version)
        .map_err(store_err)?
        .ok_or_else(|| RuntimeError::UnknownScenario(id.to_string()))?;
    Ok((
        source.text,
        source.format,
        scenario,
        rt.policy_text()?,
        rt.messages_text()?,
    ))
}

/// Plays the profiles (and events) through the scenario on a memory store and a virtual
/// clock: the same runtime as `relance simulate`, nothing sent, nothing written.
fn simulate(
    inputs: TestInputs,
    contacts: Vec<Contact>,
    mut events: Vec<ScriptedEvent>,
    start: DateTime<Utc>,
    until: IsoDuration,
) -> Result<(Vec<Record>, Vec<String>), String> {
    let (text, format, scenario, policy, messages) = inputs;
    // A scenario launched by an event: without events given, each profile sends it at the
    // start, so every profile enters.
    if events.is_empty()
        && let Launch::Trigger(t) = &scenario.launch
        && t.event != "manual"
    {
        for c in &contacts {
            let line = serde_json::json!({"at": time(start), "contact": c.id(), "event": t.event});
            events.push(ScriptedEvent::from_json(line)?);
        }
    }
    let mut simulation = Simulation::new(scenario, &text, format, start, until);
    simulation.policy = policy.as_deref();
    simulation.messages = messages.as_deref();
    simulation.contacts = contacts;
    simulation.events = events;
    let mut sink = Collect::default();
    simulation.run(&mut sink).map_err(|e| e.to_string())?;
    Ok((sink.records, sink.refused))
}

/// `POST /scenarios/{id}/test`: 1 to 100 profiles as JSON lines (and optional events, the
/// `relance simulate` events file) → each profile's simulated path.
pub(super) async fn test_run(
    State(console): State<Console>,
    Extension(me): Extension<LoggedIn>,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let fields = form_fields(&body);
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let (profiles, events_text, until_text) = (field("profiles"), field("events"), field("until"));
    let until_text = if until_text.trim().is_empty() {
        "P30D".to_string()
    } else {
        until_text.trim().to_string()
    };
    let mut errors = Vec::new();
    let contacts = match script::contacts_from_json_lines(&profiles) {
        Ok(c) => c,
        Err(e) => {
            errors.extend(e.into_iter().map(|m| format!("profiles: {m}")));
            Vec::new()
        }
    };
    if errors.is_empty() && !(1..=MAX_PROFILES).contains(&contacts.len()) {
        errors.push(format!(
            "profiles: give 1 to {MAX_PROFILES} profiles, one JSON object a line (there are {})",
            contacts.len()
        ));
    }
    let events = match script::events_from_json_lines(&events_text) {
        Ok(e) => e,
        Err(e) => {
            errors.extend(e.into_iter().map(|m| format!("events: {m}")));
            Vec::new()
        }
    };
    let until = match until_text.parse::<IsoDuration>() {
        Ok(u) => Some(u),
        Err(e) => {
            errors.push(format!("until: {e}"));
            None
        }
    };
    let key = id.clone();
    let inputs = on_runner(&console, move |rt, _| test_inputs(rt, &key)).await?;
    let mut results = Vec::new();
    let mut notes = Vec::new();
    if let (true, Some(until)) = (errors.is_empty(), until) {
        let start = console.handle.clock().now();
        let order: Vec<String> = contacts.iter().map(|c| c.id().to_string()).collect();
        let work = async {
            let permit = TEST_RUNS.acquire().await.map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                let _slot = permit;
                simulate(inputs, contacts, events, start, until)
            })
            .await
            .map_err(|e| e.to_string())?
        };
        match tokio::time::timeout(TEST_DEADLINE, work).await {
            Err(_) => errors.push(
                "the test run took longer than 10 s: try fewer profiles or a shorter until".into(),
            ),
            Ok(Err(e)) => errors.push(e),
            Ok(Ok((records, refused))) => {
                notes = refused;
                let mut by_contact: BTreeMap<String, Vec<RecordRow>> = BTreeMap::new();
                for r in &records {
                    by_contact
                        .entry(r.contact.clone())
                        .or_default()
                        .push(record_row(&id, r));
                }
                let mut seen = std::collections::BTreeSet::new();
                for contact in order {
                    if seen.insert(contact.clone()) {
                        results.push(TestResult {
                            records: by_contact.remove(&contact).unwrap_or_default(),
                            contact,
                        });
                    }
                }
            }
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(render_status(
        &console,
        status,
        "test.html",
        context! {title => format!("Test {id}"), nav => "scenarios", csrf => me.session.csrf, id,
        url => format!("/scenarios/{}", seg(&id)), action => format!("/scenarios/{}/test", seg(&id)),
        profiles, events => events_text, until => until_text, errors, notes, results, ran => status == StatusCode::OK},
    ))
}
