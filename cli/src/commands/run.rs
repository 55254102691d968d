//! `relance run` (the embedded engine on the real clock, with the HTTP API) and `relance token new`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use relance_core::ports::{ScenarioStore, Status, Store};
use relance_embedded::auth::{self, ApiSecurity};
use relance_embedded::clock::{Clock, SystemClock};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;

use crate::backend::{open, source_format};
use crate::commands::contacts::import_into;
use crate::links::unsubscribe_links;

/// The API token's digest: `RELANCE_API_TOKEN` when set; else the one generated at the
/// first start (its digest kept in the database); else a new one, printed once.
pub fn api_token(rt: &mut Runtime<SqliteStore>, now: DateTime<Utc>) -> Result<[u8; 32]> {
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
pub fn new_token<S: Store>(rt: &mut Runtime<S>, now: DateTime<Utc>) -> Result<String>
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

/// The host names the API answers to: `--allowed-host`, `RELANCE_ALLOWED_HOSTS`, the host
/// of `RELANCE_UNSUBSCRIBE_URL` (mail clients post the one-click form there) and the host of
/// `RELANCE_PUBLIC_URL` (readers fetch the open pixel and click redirects there).
pub fn allowed_hosts(mut hosts: Vec<String>) -> Vec<String> {
    if let Ok(list) = std::env::var("RELANCE_ALLOWED_HOSTS") {
        hosts.extend(list.split(',').map(|h| h.trim().to_string()));
    }
    for setting in ["RELANCE_UNSUBSCRIBE_URL", "RELANCE_PUBLIC_URL"] {
        if let Ok(url) = std::env::var(setting)
            && let Some(host) = crate::links::authority_of(url.trim())
        {
            hosts.push(host.to_string());
        }
    }
    hosts.retain(|h| !h.is_empty());
    hosts
}

/// Refuses settings that are unsafe once the API is reachable from other machines.
pub fn check_exposure(listen: SocketAddr) -> Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    eprintln!(
        "warning: listening on {listen}, reachable from other machines: every route but /v1/health, the signed /unsubscribe and the signed tracking links (/t/o, /t/c) needs the API token (the web console: a session from logging in with it); put TLS in front (a reverse proxy) so the token never crosses the network in clear"
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
    delivery: &crate::args::DeliveryArgs,
) -> Result<ExitCode> {
    check_exposure(listen)?;
    // Before anything runs, so that /metrics counts the start's imports and launches too.
    relance_embedded::metrics::install()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let token_sha256;
    let links = unsubscribe_links(&format!("http://{listen}/unsubscribe"))?;
    if links.is_none() {
        tracing::info!(
            "RELANCE_UNSUBSCRIBE_SECRET is not set: emails carry no one-click unsubscribe link"
        );
    }
    let tracking = crate::links::tracking_links(&format!("http://{listen}"))?;
    // The webhook client's and the delivery backends' settings are checked before anything
    // starts.
    let webhooks =
        relance_aws::webhook::HttpTransport::from_env().context("webhook delivery settings")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let chosen = crate::delivery::backends(delivery, &rt, links.clone())?;
    {
        let mut rt = open(db)?;
        token_sha256 = api_token(&mut rt, clock.now())?;
        // Sends made at start (an import's launch) are delivered for real too.
        rt.store().set_live_channels(&chosen.backends.channels());
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
            // Said as `relance contacts import` says it: a row refused is never dropped
            // without a word.
            let report = import_into(&mut rt, path, clock.now())?;
            let rejected = report["rejected"].as_array().map_or(&[][..], Vec::as_slice);
            tracing::info!(
                file = %path.display(),
                added = %report["added"],
                modified = %report["modified"],
                unchanged = %report["unchanged"],
                consent_kept = %report["consent_kept"],
                rejected = rejected.len(),
                "contacts imported"
            );
            for r in rejected {
                tracing::warn!(
                    file = %path.display(),
                    line = %r["line"],
                    reason = r["reason"].as_str().unwrap_or(""),
                    "contact row refused"
                );
            }
        }
    }
    let mut store =
        SqliteStore::open(db).with_context(|| format!("cannot open database {}", db.display()))?;
    store.set_live_channels(&chosen.backends.channels());
    let (handle, runner) = relance_embedded::server::start_configured(store, outbox, clock, links)
        .context("cannot start the runtime")?;
    let handle = handle.with_tracking(tracking);
    if chosen.backends.is_empty() {
        tracing::info!(
            "every channel goes to the outbox file only (a dry run): see `relance run --help` for real delivery"
        );
    } else {
        tracing::info!(backends = %chosen.backends.describe(), "delivering for real");
    }
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, db = %db.display(), outbox = %outbox.display(), "relance is running; Ctrl-C stops it");
        outln!("relance listening on http://{addr} (database {}, outbox {}); web console: http://{addr}/", db.display(), outbox.display());
        let security = ApiSecurity::new(token_sha256, allowed_hosts(hosts));
        // Webhook calls go out beside the API; the worker holds a runner handle, so it is
        // stopped before the runner is waited for.
        let worker = tokio::spawn(
            relance_embedded::webhook::Worker::new(
                handle.clone(),
                Arc::new(webhooks),
                relance_embedded::webhook::env_secrets(),
            )
            .run(std::time::Duration::from_millis(500)),
        );
        let (stop_deliveries, stop) = tokio::sync::watch::channel(false);
        let deliveries = (!chosen.backends.is_empty()).then(|| {
            tokio::spawn(
                relance_embedded::delivery::Worker::new(
                    handle.clone(),
                    chosen.backends,
                    &chosen.from_email,
                )
                .run(std::time::Duration::from_millis(200), stop),
            )
        });
        // Connections capped and given a deadline for their headers (listen.rs): half-sent
        // requests no longer hold every descriptor.
        relance_embedded::listen::serve(
            listener,
            relance_embedded::api::router(handle, security),
            relance_embedded::listen::ConnectionLimits::default(),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
        worker.abort();
        let _ = worker.await;
        // Sends in flight finish (a provider's answer is recorded) before the runner stops.
        let _ = stop_deliveries.send(true);
        if let Some(deliveries) = deliveries
            && tokio::time::timeout(std::time::Duration::from_secs(30), deliveries)
                .await
                .is_err()
        {
            tracing::warn!("sends still in flight after 30 s: they are sent again at the next start");
        }
        anyhow::Ok(())
    })?;
    let _ = runner.join();
    Ok(ExitCode::SUCCESS)
}
