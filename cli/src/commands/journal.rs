//! `relance journal`: counts per step and per end, or one contact's path.

use std::process::ExitCode;

use anyhow::{Context, Result};
use relance_core::journal::{JournalCounts, Record, RecordKind};
use relance_core::ports::Store;
use relance_embedded::runtime::Runtime;

use crate::backend::{Backend, on_backend, print_json};

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

pub fn print_counts(scenario: &str, counts: &JournalCounts, order: &[String]) -> Result<()> {
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
        for (path, n) in &c.assigned {
            outln!("    → {path}: {n}");
        }
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

pub fn describe(r: &Record) -> String {
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
        // A split names the path taken; a variant send, the message chosen.
        RecordKind::Branched | RecordKind::Assigned => format!(
            " → {}",
            r.next.as_deref().or(r.message.as_deref()).unwrap_or("")
        ),
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

pub fn print_path(contact: &str, path: &[Record]) -> Result<()> {
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
