//! `relance validate`: every problem of a scenario file, located.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::files::{check_with, print_problems};

pub fn validate_cmd(path: &Path, json: bool, messages: Option<&Path>) -> Result<ExitCode> {
    let report = check_with(path, messages)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report.problems)?;
        writeln!(out)?;
    } else {
        print_problems(path, &report, &mut out)?;
    }
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
