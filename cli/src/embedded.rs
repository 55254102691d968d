//! The embedded-mode commands: `run`, `scenario`, `launch`, `contacts import`, `journal`,
//! `clone` and `test`. Each opens the SQLite database and calls the runtime.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use relance_core::IsoDuration;
use relance_core::journal::{JournalCounts, Record, RecordKind};
use relance_core::ports::{ScenarioStore, SourceFormat, Status, Store};
use relance_core::script;
use relance_core::wire::LaunchDetail;
use relance_embedded::auth::{self, ApiSecurity};
use relance_embedded::clock::{Clock, ScaledClock, SystemClock};
use relance_embedded::import::{self, ContactsFormat};
use relance_embedded::runtime::{Runtime, RuntimeError};
use relance_embedded::store::SqliteStore;
use relance_runtime::player::{Play, Script, Sink};

/// Where the operating commands act: the embedded SQLite file, or DynamoDB on an endpoint
/// (LocalStack, the emulator) or on AWS.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `--db FILE`.
    Sqlite(PathBuf),
    /// `--endpoint URL` (or `--aws`): the tables named after `prefix`.
    Aws {
        /// The endpoint; None for AWS itself.
        endpoint: Option<String>,
        /// The resources' name prefix.
        prefix: String,
    },
}

/// Runs `$body` with `$rt` bound to the backend's runtime.
macro_rules! on_backend {
    ($backend:expr, |$rt:ident| $body:expr) => {
        match $backend {
            Backend::Sqlite(db) => {
                let mut $rt = open(db)?;
                $rt.set_actor(CLI_ACTOR);
                $body
            }
            Backend::Aws { endpoint, prefix } => {
                let (_tokio, mut $rt) = crate::aws::runtime(endpoint.as_deref(), prefix)?;
                $rt.set_actor(CLI_ACTOR);
                $body
            }
        }
    };
}

/// The actor the consent log names for changes made from the command line.
const CLI_ACTOR: &str = "cli";

fn open(db: &Path) -> Result<Runtime<SqliteStore>> {
    let store =
        SqliteStore::open(db).with_context(|| format!("cannot open database {}", db.display()))?;
    Ok(Runtime::new(store))
}

fn source_format(path: &Path) -> SourceFormat {
    if path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".json")
    {
        SourceFormat::Json
    } else {
        SourceFormat::Yaml
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The API token's digest: `RELANCE_API_TOKEN` when set; else the one generated at the
/// first start (its digest kept in the database); else a new one, printed once.
fn api_token(rt: &mut Runtime<SqliteStore>, now: DateTime<Utc>) -> Result<[u8; 32]> {
    if let Some(token) = std::env::var("RELANCE_API_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        auth::check_token_strength(token.trim())?;
        return Ok(auth::token_sha256(token.trim()));
    }
    let stored = rt
        .store()
        .setting(auth::SETTING_API_TOKEN_SHA256)
        .context("cannot read the API token's digest")?;
    if let Some(text) = stored {
        return auth::from_hex(&text).context(
            "the stored API token digest does not read: run `relance token new --db ...`",
        );
    }
    let token = new_token(rt, now)?;
    outln!(
        "API token (shown once; keep it, it is stored hashed; `relance token new` replaces it): {token}"
    );
    Ok(auth::token_sha256(&token))
}

/// Generates a token and stores its digest (replacing any earlier one).
fn new_token<S: Store>(rt: &mut Runtime<S>, now: DateTime<Utc>) -> Result<String>
where
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let token = auth::generate_token().context("no randomness for the API token")?;
    rt.store()
        .put_setting(
            auth::SETTING_API_TOKEN_SHA256,
            &auth::to_hex(&auth::token_sha256(&token)),
            now,
        )
        .context("cannot store the API token's digest")?;
    Ok(token)
}

/// `relance token new`.
pub fn token_new(db: &Path) -> Result<ExitCode> {
    let mut rt = open(db)?;
    let token = new_token(&mut rt, Utc::now())?;
    outln!("{token}");
    eprintln!(
        "the new API token is printed above, once; restart `relance run` for it to take over"
    );
    Ok(ExitCode::SUCCESS)
}

/// The host names the API answers to: `--allowed-host`, `RELANCE_ALLOWED_HOSTS` and the host
/// of `RELANCE_UNSUBSCRIBE_URL` (mail clients post the one-click form there).
fn allowed_hosts(mut hosts: Vec<String>) -> Vec<String> {
    if let Ok(list) = std::env::var("RELANCE_ALLOWED_HOSTS") {
        hosts.extend(list.split(',').map(|h| h.trim().to_string()));
    }
    if let Ok(url) = std::env::var("RELANCE_UNSUBSCRIBE_URL")
        && let Some(rest) = url.split_once("://").map(|(_, r)| r)
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        hosts.push(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, h)| h)
                .to_string(),
        );
    }
    hosts.retain(|h| !h.is_empty());
    hosts
}

/// Refuses settings that are unsafe once the API is reachable from other machines.
fn check_exposure(listen: SocketAddr) -> Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    eprintln!(
        "warning: listening on {listen}, reachable from other machines: every route but /v1/health and /unsubscribe needs the API token; put TLS in front (a reverse proxy) so the token never crosses the network in clear"
    );
    let secret = std::env::var("RELANCE_UNSUBSCRIBE_SECRET").unwrap_or_default();
    if !secret.trim().is_empty() {
        let url = std::env::var("RELANCE_UNSUBSCRIBE_URL").unwrap_or_default();
        if !url.to_ascii_lowercase().starts_with("https://") {
            bail!(
                "RELANCE_UNSUBSCRIBE_URL must be an https URL when listening beyond loopback ({listen}): the links in emails would otherwise point at an address recipients cannot reach, in clear"
            );
        }
    }
    Ok(())
}

/// `relance run`.
pub fn run(
    db: &Path,
    listen: SocketAddr,
    outbox: &Path,
    scenarios: &[PathBuf],
    contacts: Option<&Path>,
    hosts: Vec<String>,
) -> Result<ExitCode> {
    check_exposure(listen)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let token_sha256;
    {
        let mut rt = open(db)?;
        token_sha256 = api_token(&mut rt, clock.now())?;
        for file in scenarios {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let put = rt
                .put_scenario(&text, source_format(file), clock.now())
                .with_context(|| file.display().to_string())?;
            let entry = rt
                .set_status(&put.id, Status::Active, clock.now())
                .with_context(|| file.display().to_string())?;
            tracing::info!(scenario = %put.id, version = entry.active_version.unwrap_or(put.version), "active");
        }
        if let Some(path) = contacts {
            import_into(&mut rt, path, clock.now())?;
        }
    }
    let links = unsubscribe_links(&format!("http://{listen}/unsubscribe"))?;
    if links.is_none() {
        tracing::info!(
            "RELANCE_UNSUBSCRIBE_SECRET is not set: emails carry no one-click unsubscribe link"
        );
    }
    let store =
        SqliteStore::open(db).with_context(|| format!("cannot open database {}", db.display()))?;
    let (handle, runner) = relance_embedded::server::start_configured(store, outbox, clock, links)
        .context("cannot start the runtime")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, db = %db.display(), outbox = %outbox.display(), "relance is running; Ctrl-C stops it");
        outln!("relance listening on http://{addr} (database {}, outbox {})", db.display(), outbox.display());
        let security = ApiSecurity::new(token_sha256, allowed_hosts(hosts));
        axum::serve(listener, relance_embedded::api::router(handle, security))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(())
    })?;
    let _ = runner.join();
    Ok(ExitCode::SUCCESS)
}

/// One-click unsubscribe links from `RELANCE_UNSUBSCRIBE_SECRET` (required to turn them on),
/// `RELANCE_UNSUBSCRIBE_URL` (default: this API's `/unsubscribe`) and
/// `RELANCE_UNSUBSCRIBE_MAILTO`.
/// A key shorter than 32 bytes is refused (the links' HMAC has the hash's strength).
pub fn unsubscribe_links(
    default_url: &str,
) -> Result<Option<relance_core::unsubscribe::UnsubscribeLinks>> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let Some(secret) = var("RELANCE_UNSUBSCRIBE_SECRET") else {
        return Ok(None);
    };
    relance_core::unsubscribe::check_secret(secret.as_bytes())
        .map_err(|why| anyhow::anyhow!("RELANCE_UNSUBSCRIBE_SECRET: {why}"))?;
    Ok(Some(relance_core::unsubscribe::UnsubscribeLinks {
        secret: secret.into_bytes(),
        base_url: var("RELANCE_UNSUBSCRIBE_URL").unwrap_or_else(|| default_url.to_string()),
        mailto: var("RELANCE_UNSUBSCRIBE_MAILTO"),
    }))
}

/// `relance scenario put|activate|pause|archive|list`.
pub fn scenario(backend: &Backend, action: &str, arg: Option<&Path>) -> Result<ExitCode> {
    on_backend!(backend, |rt| scenario_on(&mut rt, action, arg))
}

fn scenario_on<S>(rt: &mut Runtime<S>, action: &str, arg: Option<&Path>) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let now = Utc::now();
    match (action, arg) {
        ("list", _) => {
            for s in rt.scenarios()? {
                outln!(
                    "{:<30} {:<9} latest v{} active {}",
                    s.id,
                    s.status.as_str(),
                    s.latest_version,
                    s.active_version.map_or("-".into(), |v| format!("v{v}"))
                );
            }
        }
        ("put", Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let put = rt.put_scenario(&text, source_format(file), now)?;
            for p in &put.problems {
                eprintln!("{}: {p}", file.display());
            }
            outln!(
                "{} v{}{} ({})",
                put.id,
                put.version,
                if put.changed { "" } else { " (unchanged)" },
                put.status.as_str()
            );
        }
        (status @ ("activate" | "pause" | "archive"), Some(id)) => {
            let to = match status {
                "activate" => Status::Active,
                "pause" => Status::Paused,
                _ => Status::Archived,
            };
            let entry = rt.set_status(&id.to_string_lossy(), to, now)?;
            outln!(
                "{} {} (active version {})",
                entry.id,
                entry.status.as_str(),
                entry.active_version.map_or("-".into(), |v| format!("v{v}"))
            );
        }
        _ => bail!("usage: relance scenario put FILE | activate ID | pause ID | archive ID | list"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `relance launch`.
pub fn launch(backend: &Backend, scenario: &str, contacts: Vec<String>) -> Result<ExitCode> {
    on_backend!(backend, |rt| launch_on(&mut rt, scenario, contacts))
}

fn launch_on<S>(rt: &mut Runtime<S>, scenario: &str, contacts: Vec<String>) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let detail = LaunchDetail {
        scenario: scenario.to_string(),
        contacts: (!contacts.is_empty()).then_some(contacts),
    };
    let report = rt.launch(detail, Utc::now())?;
    print_json(&report)?;
    Ok(ExitCode::SUCCESS)
}

fn import_into<S>(rt: &mut Runtime<S>, path: &Path, now: DateTime<Utc>) -> Result<serde_json::Value>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (rows, rejected) =
        import::parse_contacts_bytes(&bytes, ContactsFormat::from_path(&path.to_string_lossy()));
    let contacts: Vec<_> = rows.into_iter().map(|(_, c)| c).collect();
    let bar = (contacts.len() > 5000).then(|| {
        let bar = indicatif::ProgressBar::new(contacts.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} contacts {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let results = rt.import(&contacts, now, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(import::report(&results, &rejected))
}

/// `relance contacts import`.
pub fn contacts_import(backend: &Backend, file: &Path) -> Result<ExitCode> {
    on_backend!(backend, |rt| contacts_import_on(&mut rt, file))
}

fn contacts_import_on<S>(rt: &mut Runtime<S>, file: &Path) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let report = import_into(rt, file, Utc::now())?;
    outln!(
        "{}: {} added, {} modified, {} unchanged, {} rejected",
        file.display(),
        report["added"],
        report["modified"],
        report["unchanged"],
        report["rejected"].as_array().map_or(0, Vec::len)
    );
    for r in report["rejected"].as_array().into_iter().flatten() {
        outln!(
            "  line {}: {}",
            r["line"],
            r["reason"].as_str().unwrap_or("")
        );
    }
    if report["consent_kept"].as_u64().unwrap_or(0) > 0 {
        outln!(
            "  {} consent value(s) kept: an opt-out or a suppression stands (relance consent show CONTACT)",
            report["consent_kept"]
        );
    }
    // The good rows are in; a script must still learn that some were not.
    Ok(
        if report["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// `relance consent show|set`.
pub fn consent(
    backend: &Backend,
    action: &str,
    request: &relance_core::consent::ConsentRequest,
) -> Result<ExitCode> {
    on_backend!(backend, |rt| consent_on(&mut rt, action, request))
}

fn consent_on<S>(
    rt: &mut Runtime<S>,
    action: &str,
    request: &relance_core::consent::ConsentRequest,
) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let events = match action {
        "show" => rt.consent_trail(&request.contact)?,
        "set" => rt.consent(request, Utc::now())?,
        other => anyhow::bail!("unknown consent action \"{other}\": use show or set"),
    };
    for e in &events {
        outln!("{}", serde_json::to_string(e)?);
    }
    if action == "set" && events.is_empty() {
        eprintln!(
            "{}: already in the state asked for; nothing appended",
            request.contact
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The journal counts of a scenario in a database (for `relance graph --db`).
pub fn counts(backend: &Backend, scenario: &str) -> Result<JournalCounts> {
    on_backend!(backend, |rt| Ok(rt.journal(scenario)?))
}

/// `relance journal`.
pub fn journal(
    backend: &Backend,
    scenario: &str,
    contact: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    on_backend!(backend, |rt| journal_on(&mut rt, scenario, contact, json))
}

fn journal_on<S>(
    rt: &mut Runtime<S>,
    scenario: &str,
    contact: Option<&str>,
    json: bool,
) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    if let Some(c) = contact {
        let path = rt.path(scenario, c)?;
        if json {
            print_json(&path)?;
        } else {
            print_path(c, &path)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let counts = rt.journal(scenario)?;
    if json {
        print_json(&counts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let entry = rt
        .store()
        .scenario(scenario)?
        .context("scenario not found")?;
    let version = entry.active_version.unwrap_or(entry.latest_version);
    let order: Vec<String> = rt
        .engine(scenario, version)
        .map(|e| e.scenario().steps.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    print_counts(scenario, &counts, &order)?;
    Ok(ExitCode::SUCCESS)
}

fn print_counts(scenario: &str, counts: &JournalCounts, order: &[String]) -> Result<()> {
    outln!("{scenario}: {} entered", counts.entered);
    for (reason, n) in &counts.not_entered {
        outln!("  not entered ({reason}): {n}");
    }
    outln!(
        "  {:<24} {:>8} {:>8} {:>8} {:>8}",
        "step",
        "entered",
        "sent",
        "skipped",
        "failed"
    );
    let mut steps: Vec<&String> = order
        .iter()
        .filter(|s| counts.steps.contains_key(*s))
        .collect();
    steps.extend(counts.steps.keys().filter(|k| !order.contains(k)));
    for id in steps {
        let c = &counts.steps[id];
        let skipped: u64 = c.skipped.values().sum();
        let reasons = if c.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "  ({})",
                c.skipped
                    .iter()
                    .map(|(r, n)| format!("{r}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        outln!(
            "  {id:<24} {:>8} {:>8} {skipped:>8} {:>8}{reasons}",
            c.entered,
            c.sent,
            c.failed
        );
    }
    let ends: Vec<String> = counts
        .ends
        .iter()
        .map(|(e, n)| format!("{e}: {n}"))
        .collect();
    outln!(
        "  ends: {}",
        if ends.is_empty() {
            "none yet".into()
        } else {
            ends.join(", ")
        }
    );
    Ok(())
}

fn describe(r: &Record) -> String {
    let step = r
        .step
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let extra = match r.kind {
        RecordKind::Sent => format!(
            " ({} {})",
            r.channel.map_or("", |c| c.as_str()),
            r.message.as_deref().unwrap_or("")
        ),
        RecordKind::Ended => format!(": {}", r.end.as_deref().unwrap_or("")),
        RecordKind::Branched => format!(" → {}", r.next.as_deref().unwrap_or("")),
        RecordKind::Waiting => r
            .until
            .map(|u| {
                format!(
                    " until {}",
                    u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default(),
        RecordKind::Action => format!(" ({})", r.action.as_deref().unwrap_or("")),
        _ => String::new(),
    };
    let reason = r
        .reason
        .as_deref()
        .map(|x| format!(" [{x}]"))
        .unwrap_or_default();
    let kind = serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{kind}{step}{extra}{reason}")
}

fn print_path(contact: &str, path: &[Record]) -> Result<()> {
    outln!("{contact}:");
    if path.is_empty() {
        outln!("  (nothing recorded)");
    }
    for r in path {
        outln!(
            "  {}  {}",
            r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            describe(r)
        );
    }
    Ok(())
}

/// `relance policy set FILE | show`.
pub fn policy(backend: &Backend, action: &str, file: Option<&Path>) -> Result<ExitCode> {
    match (action, file) {
        ("set", Some(path)) => {
            // Read through the same checks as simulate, so a bad file is named with its paths.
            crate::load_policy(path)?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            on_backend!(backend, |rt| {
                let p = rt.set_policy(&text, Utc::now())?;
                outln!(
                    "policy set: quiet hours {}, frequency cap {}, exempt {:?}",
                    if p.quiet_hours.is_some() { "on" } else { "off" },
                    p.frequency_cap
                        .as_ref()
                        .map(|c| format!("{} per {}", c.max, c.per))
                        .unwrap_or_else(|| "off".into()),
                    p.exempt
                );
                Ok(ExitCode::SUCCESS)
            })
        }
        ("set", None) => bail!("policy set: give the policy file"),
        ("show", _) => on_backend!(backend, |rt| {
            match rt.policy_text()? {
                Some(text) => outln!("{}", text.trim_end()),
                None => outln!("no policy set"),
            }
            Ok(ExitCode::SUCCESS)
        }),
        (other, _) => bail!("unknown policy action \"{other}\": use set or show"),
    }
}

/// `relance messages put FILE | show`.
pub fn messages(backend: &Backend, action: &str, file: Option<&Path>) -> Result<ExitCode> {
    match (action, file) {
        ("put", Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            on_backend!(backend, |rt| {
                let n = rt
                    .set_messages(&text, Utc::now())
                    .with_context(|| path.display().to_string())?;
                outln!("{n} shared message(s) stored; scenarios stored from now on use them");
                Ok(ExitCode::SUCCESS)
            })
        }
        ("put", None) => bail!("messages put: give the message store file"),
        ("show", _) => on_backend!(backend, |rt| {
            match rt.messages_text()? {
                Some(text) => outln!("{}", text.trim_end()),
                None => outln!("no shared messages"),
            }
            Ok(ExitCode::SUCCESS)
        }),
        (other, _) => bail!("unknown messages action \"{other}\": use put or show"),
    }
}

/// `relance clone`.
pub fn clone(backend: &Backend, from: &str, to: &str) -> Result<ExitCode> {
    on_backend!(backend, |rt| clone_on(&mut rt, from, to))
}

fn clone_on<S>(rt: &mut Runtime<S>, from: &str, to: &str) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let entry = rt
        .store()
        .scenario(from)?
        .with_context(|| format!("scenario \"{from}\" not found"))?;
    let source = rt
        .store()
        .scenario_source(from, entry.latest_version)?
        .context("scenario version missing")?;
    let mut doc = relance_core::scenario::parse_document(&source.text, source.format.into())
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    doc["id"] = serde_json::Value::String(to.to_string());
    let text = match source.format {
        SourceFormat::Json => serde_json::to_string_pretty(&doc)?,
        SourceFormat::Yaml => crate::templates::instantiate(&source.text, to, None),
    };
    if rt.store().scenario(to)?.is_some() {
        bail!("scenario \"{to}\" already exists");
    }
    let put = rt.put_scenario(&text, source.format, Utc::now())?;
    outln!(
        "{} v{} ({}), copied from {from} v{}",
        put.id,
        put.version,
        put.status.as_str(),
        entry.latest_version
    );
    Ok(ExitCode::SUCCESS)
}

/// `relance test`: the scenario on a fast clock in a throwaway in-memory store.
pub fn test(
    file: &Path,
    contacts: &Path,
    events: Option<&Path>,
    speed: f64,
    until: &str,
    start: Option<DateTime<Utc>>,
    json: bool,
) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !(1.0..=1e9).contains(&speed) {
        bail!("--speed: {speed} is outside 1 to 1,000,000,000");
    }
    let until: IsoDuration = until.parse().context("--until")?;
    let start = start.unwrap_or_else(Utc::now);
    let mut clock = ScaledClock::new(start, speed);
    let mut rt = Runtime::new(SqliteStore::in_memory()?);
    let put = rt.put_scenario(&text, source_format(file), start)?;
    let active = rt.set_status(&put.id, Status::Active, start)?;
    let profiles = std::fs::read_to_string(contacts)
        .with_context(|| format!("cannot read {}", contacts.display()))?;
    let (rows, rejected) = import::parse_contacts(
        &profiles,
        ContactsFormat::from_path(&contacts.to_string_lossy()),
    );
    if let Some(r) = rejected.first() {
        bail!("{}: line {}: {}", contacts.display(), r.line, r.reason);
    }
    if rows.is_empty() || rows.len() > 100 {
        bail!(
            "{}: test mode takes 1 to 100 test profiles, found {}",
            contacts.display(),
            rows.len()
        );
    }
    let ids: Vec<String> = rows.iter().map(|(_, c)| c.id().to_string()).collect();
    let profiles: Vec<_> = rows.into_iter().map(|(_, c)| c).collect();
    rt.import(&profiles, start, &mut |_| {})?;
    let script = match events {
        Some(p) => script::events_from_json_lines(&std::fs::read_to_string(p)?)
            .map_err(|e| anyhow::anyhow!("{}:\n  {}", p.display(), e.join("\n  ")))?,
        None => Vec::new(),
    };
    let engine = rt.engine(&put.id, active.active_version.unwrap_or(put.version))?;
    let manual = matches!(
        engine.scenario().launch,
        relance_core::scenario::Launch::Manual
    );
    let end = until.add_to(start, engine.scenario().timezone);
    eprintln!(
        "testing {} with {} profile(s), {}x faster ({} per real second)",
        put.id,
        ids.len(),
        speed,
        humanize(speed)
    );
    Play::new(&put.id, start, end)
        .launching_at_start(manual)
        .run(&mut rt, Script::new(script), &mut clock, &mut SkipRefused)?;
    let mut paths = BTreeMap::new();
    for id in &ids {
        paths.insert(id.clone(), rt.path(&put.id, id)?);
    }
    if json {
        print_json(&paths)?;
    } else {
        for (id, path) in &paths {
            print_path(id, path)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Test mode reads paths from the store at the end; a refused event is said and skipped.
struct SkipRefused;

impl Sink for SkipRefused {
    fn record(&mut self, _scenario: &str, _record: &Record) {}

    fn refused(&mut self, error: RuntimeError) -> Result<(), RuntimeError> {
        eprintln!("event skipped: {error}");
        Ok(())
    }
}

fn humanize(speed: f64) -> String {
    let secs = speed;
    if secs >= 86_400.0 {
        format!("{:.1} days", secs / 86_400.0)
    } else if secs >= 3600.0 {
        format!("{:.1} hours", secs / 3600.0)
    } else {
        format!("{secs:.0} seconds")
    }
}
