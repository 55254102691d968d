//! `relance simulate`: a scenario played on a virtual clock, one JSON record per line.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};
use relance_core::journal::{JournalCounts, Record};
use relance_core::ports::SourceFormat;
use relance_core::report::ReportBuilder;
use relance_core::script;
use relance_core::{Contact, Format, IsoDuration};
use relance_runtime::player::Sink;
use relance_runtime::runtime::RuntimeError;
use relance_runtime::simulate::Simulation;

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
    script::contacts_from_json_lines(&text)
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
    // Checked here so a bad file is named with its paths; the runtime is given the text.
    let policy = policy
        .map(|p| load_policy(p).and_then(|_| read(p)))
        .transpose()?;
    let report = check_with(path, messages)?;
    let Some(scenario) = report.scenario else {
        print_problems(path, &report, &mut std::io::stderr())?;
        return Ok(ExitCode::from(1));
    };
    let messages = messages.map(read).transpose()?;
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
        Some(p) => script::events_from_json_lines(&read(p)?)
            .map_err(|errors| anyhow::anyhow!("{}:\n  {}", p.display(), errors.join("\n  ")))?,
        None => Vec::new(),
    };
    let text = read(path)?;
    let format = match Format::from_path(&path.to_string_lossy()) {
        Format::Json => SourceFormat::Json,
        Format::Yaml => SourceFormat::Yaml,
    };
    let id = scenario.id.clone();
    // The report line needs the steps, paths and variants; the simulation takes the scenario.
    let for_report = journal.then(|| scenario.clone());
    let mut simulation = Simulation::new(scenario, &text, format, start, until);
    // The global control group the report compares with (the run itself checks the policy).
    let global_holdout = policy
        .as_deref()
        .and_then(|t| relance_core::policy::Policy::parse(t, relance_core::Format::Yaml).ok())
        .and_then(|p| p.holdout);
    simulation.policy = policy.as_deref();
    simulation.messages = messages.as_deref();
    simulation.contacts = contacts;
    simulation.events = events;
    let stdout = std::io::stdout();
    let mut sink = JsonLines {
        out: BufWriter::new(stdout.lock()),
        counts: journal.then(JournalCounts::default),
        report: journal.then(ReportBuilder::default),
        failure: None,
    };
    let done = simulation.run(&mut sink)?;
    let end = done.end;
    // The process exits next: freeing a large store item by item would only add time.
    std::mem::forget(done);
    let JsonLines {
        mut out,
        counts,
        report,
        failure,
    } = sink;
    if let Some(e) = failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    if let Some(counts) = counts {
        let line = serde_json::json!({"at": end, "contact": null, "kind": "journal", "scenario": id, "counts": counts});
        writeln!(out, "{line}")?;
    }
    if let (Some(builder), Some(scenario)) = (report, &for_report) {
        let report = builder.finish_with(scenario, global_holdout.as_ref());
        let line = serde_json::json!({"at": end, "contact": null, "kind": "report", "scenario": id, "report": report});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The simulate output: each journal record as a JSON line (without the enrollment id and
/// the arrival flag), counted and reported for `--journal` (the report joins records on the
/// enrollment id); the first write failure stops the writing.
struct JsonLines<W> {
    out: W,
    counts: Option<JournalCounts>,
    report: Option<ReportBuilder>,
    failure: Option<std::io::Error>,
}

impl<W: Write> Sink for JsonLines<W> {
    fn record(&mut self, _scenario: &str, r: &Record) {
        if let Some(counts) = &mut self.counts {
            counts.add(r);
        }
        if let Some(report) = &mut self.report {
            report.add(r);
        }
        if self.failure.is_none() {
            let mut shown = r.clone();
            shown.arrival = false;
            shown.enrollment = None;
            if let Err(e) = serde_json::to_writer(&mut self.out, &shown)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
            {
                self.failure = Some(e);
            }
        }
    }

    fn refused(&mut self, error: RuntimeError) -> Result<(), RuntimeError> {
        eprintln!("event skipped: {error}");
        Ok(())
    }
}
