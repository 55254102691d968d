//! `relance simulate`: a scenario played on a virtual clock, one JSON record per line.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};
use relance_core::engine::Engine;
use relance_core::journal::{JournalCounts, Record};
use relance_core::simulation::{self, Simulation};
use relance_core::{Contact, IsoDuration};

use crate::files::{check_with, load_policy, print_problems, read};

pub fn load_contacts(path: &Path) -> Result<Vec<Contact>> {
    let text = read(path)?;
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array", path.display()))?;
        let mut errors = Vec::new();
        let contacts: Vec<Contact> = values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                Contact::from_json(v)
                    .map_err(|e| errors.push(format!("[{i}]: {e}")))
                    .ok()
            })
            .collect();
        if !errors.is_empty() {
            bail!("{}:\n  {}", path.display(), errors.join("\n  "));
        }
        return Ok(contacts);
    }
    simulation::contacts_from_json_lines(&text)
        .map_err(|errors| anyhow::anyhow!("{}:\n  {}", path.display(), errors.join("\n  ")))
}

pub fn simulate_cmd(
    path: &Path,
    contacts: &Path,
    events: Option<&Path>,
    start: Option<&str>,
    until: &str,
    journal: bool,
    (policy, messages): (Option<&Path>, Option<&Path>),
) -> Result<ExitCode> {
    let policy = policy.map(load_policy).transpose()?.unwrap_or_default();
    let report = check_with(path, messages)?;
    let Some(scenario) = report.scenario else {
        print_problems(path, &report, &mut std::io::stderr())?;
        return Ok(ExitCode::from(1));
    };
    let start: DateTime<Utc> = match start {
        Some(s) => relance_core::instant::check(
            DateTime::parse_from_rfc3339(s)
                .with_context(|| {
                    format!("--start: \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })?
                .with_timezone(&Utc),
        )
        .context("--start")?,
        None => Utc::now().trunc_subsecs(0),
    };
    let until: IsoDuration = until.parse().context("--until")?;
    let contacts = load_contacts(contacts)?;
    let events = match events {
        Some(p) => simulation::events_from_json_lines(&read(p)?)
            .map_err(|errors| anyhow::anyhow!("{}:\n  {}", p.display(), errors.join("\n  ")))?,
        None => Vec::new(),
    };
    let engine = Engine::new(scenario).with_policy(policy);
    let mut sim = Simulation::new(&engine, contacts, events);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut counts = JournalCounts::default();
    let mut failure: Option<std::io::Error> = None;
    let end = sim.run(start, &until, &mut |r: &Record| {
        if journal {
            counts.add(r);
        }
        if failure.is_none() {
            let mut shown = r.clone();
            shown.arrival = false;
            shown.enrollment = None;
            if let Err(e) = serde_json::to_writer(&mut out, &shown)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
            {
                failure = Some(e);
            }
        }
    });
    if let Some(e) = failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    if journal {
        let line = serde_json::json!({"at": end, "contact": null, "kind": "journal", "scenario": engine.scenario().id, "counts": counts});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
