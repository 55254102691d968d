//! `relance test`: a scenario for a few test profiles on a fast clock, in a throwaway store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use relance_core::IsoDuration;
use relance_core::journal::Record;
use relance_core::ports::Status;
use relance_core::script;
use relance_embedded::clock::ScaledClock;
use relance_embedded::import::{self, ContactsFormat};
use relance_embedded::runtime::{Runtime, RuntimeError};
use relance_embedded::store::SqliteStore;
use relance_runtime::player::{Play, Script, Sink};
use std::collections::BTreeMap;

use crate::backend::{print_json, source_format};
use crate::commands::journal::print_path;

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

pub fn humanize(speed: f64) -> String {
    let secs = speed;
    if secs >= 86_400.0 {
        format!("{:.1} days", secs / 86_400.0)
    } else if secs >= 3600.0 {
        format!("{:.1} hours", secs / 3600.0)
    } else {
        format!("{secs:.0} seconds")
    }
}
