//! `relance graph`: a scenario drawn as Mermaid, DOT or SVG, with journal counts from a database.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::backend::Backend;
use crate::files::{check, print_problems};

pub fn graph_cmd(path: &Path, format: &str, db: Option<&Path>) -> Result<ExitCode> {
    let report = check(path)?;
    let Some(scenario) = report.scenario else {
        print_problems(path, &report, &mut std::io::stderr())?;
        return Ok(ExitCode::from(1));
    };
    let counts = match db {
        Some(db) => Some(crate::commands::journal::counts(
            &Backend::Sqlite(db.to_path_buf()),
            &scenario.id,
        )?),
        None => None,
    };
    match format {
        "mermaid" => out!(
            "{}",
            relance_core::graph::mermaid(&scenario, counts.as_ref())
        ),
        "dot" => out!("{}", relance_core::graph::dot(&scenario, counts.as_ref())),
        "svg" => out!(
            "{}",
            svg(&relance_core::graph::dot(&scenario, counts.as_ref()))?
        ),
        other => bail!("--format: \"{other}\" is not mermaid, dot or svg"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Lays a DOT graph out and draws it as SVG (the console's diagram, shared).
pub fn svg(dot: &str) -> Result<String> {
    Ok(relance_embedded::console::diagram::svg(dot)?)
}
