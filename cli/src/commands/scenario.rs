//! `relance scenario put|activate|pause|archive|list` and `relance clone`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use relance_core::ports::{SourceFormat, Status, Store};
use relance_embedded::runtime::Runtime;

use crate::backend::{Backend, on_backend, source_format};

/// `relance scenario list`.
pub fn list(backend: &Backend) -> Result<ExitCode> {
    on_backend!(backend, |rt| list_on(&mut rt))
}

fn list_on<S>(rt: &mut Runtime<S>) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    for s in rt.scenarios()? {
        outln!(
            "{:<30} {:<9} latest v{} active {}",
            s.id,
            s.status.as_str(),
            s.latest_version,
            s.active_version.map_or("-".into(), |v| format!("v{v}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `relance scenario put FILE`.
pub fn put(backend: &Backend, file: &Path) -> Result<ExitCode> {
    on_backend!(backend, |rt| put_on(&mut rt, file))
}

fn put_on<S>(rt: &mut Runtime<S>, file: &Path) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let put = rt.put_scenario(&text, source_format(file), Utc::now())?;
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
    Ok(ExitCode::SUCCESS)
}

/// `relance scenario activate|pause|archive ID`.
pub fn set_status(backend: &Backend, id: &str, to: Status) -> Result<ExitCode> {
    on_backend!(backend, |rt| set_status_on(&mut rt, id, to))
}

fn set_status_on<S>(rt: &mut Runtime<S>, id: &str, to: Status) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let entry = rt.set_status(id, to, Utc::now())?;
    outln!(
        "{} {} (active version {})",
        entry.id,
        entry.status.as_str(),
        entry.active_version.map_or("-".into(), |v| format!("v{v}"))
    );
    Ok(ExitCode::SUCCESS)
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
