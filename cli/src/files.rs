//! What several commands share: reading files, checking a scenario file, printing its
//! problems, reading `--start` and a policy file.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use relance_core::Format;
use relance_core::validate::{self, Report};

pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn check(path: &Path) -> Result<Report> {
    check_with(path, None)
}

/// Checks a scenario file, its send steps also finding the messages of a shared message
/// store file (`--messages`).
pub fn check_with(path: &Path, messages: Option<&Path>) -> Result<Report> {
    let text = read(path)?;
    let shared = messages
        .map(|m| {
            relance_core::scenario::parse_shared_messages(&read(m)?).map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                anyhow::anyhow!("{}:\n  {}", m.display(), lines.join("\n  "))
            })
        })
        .transpose()?;
    Ok(validate::check_text_with_messages(
        &text,
        Format::from_path(&path.to_string_lossy()),
        shared.as_ref(),
    ))
}

pub fn print_problems(path: &Path, report: &Report, out: &mut dyn Write) -> Result<()> {
    for p in &report.problems {
        writeln!(out, "{}: {p}", path.display())?;
    }
    let (errors, warnings) = validate::summary(&report.problems);
    match (errors, warnings) {
        (0, 0) => writeln!(out, "{}: no problem found", path.display())?,
        (0, w) => writeln!(
            out,
            "{}: no problem found ({w} warning{} above)",
            path.display(),
            plural(w)
        )?,
        (e, w) => writeln!(
            out,
            "{}: {e} error{}, {w} warning{}",
            path.display(),
            plural(e),
            plural(w)
        )?,
    }
    Ok(())
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn parse_start(start: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    start
        .map(|s| {
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("--start: \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })?;
            relance_core::instant::check(t).with_context(|| "--start")
        })
        .transpose()
}

/// Reads a workspace policy file (YAML or JSON), its problems named with their paths.
pub fn load_policy(path: &Path) -> Result<relance_core::Policy> {
    let text = read(path)?;
    let format = if path.extension().is_some_and(|e| e == "json") {
        relance_core::Format::Json
    } else {
        relance_core::Format::Yaml
    };
    relance_core::Policy::parse(&text, format).map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    if p.path.is_empty() { "(top)" } else { &p.path },
                    p.message
                )
            })
            .collect();
        anyhow::anyhow!("{}:\n  {}", path.display(), lines.join("\n  "))
    })
}
