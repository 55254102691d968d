//! `relance import pinpoint`: an Amazon Pinpoint journey written as a scenario file (DESIGN
//! §9), its import notes on standard error, the result checked by the normal validator.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use relance_core::Format;
use relance_core::pinpoint;
use relance_core::validate;

use crate::files::{plural, read};

pub fn pinpoint(path: &Path, out: Option<&Path>) -> Result<ExitCode> {
    let text = read(path)?;
    let imported = pinpoint::import(&text).with_context(|| format!("{}", path.display()))?;
    let mut err = std::io::stderr().lock();
    use std::io::Write as _;
    for p in &imported.problems {
        writeln!(err, "{}: {p}", path.display())?;
    }
    if imported.refused() {
        let errors = imported.problems.iter().filter(|p| p.is_error()).count();
        writeln!(
            err,
            "{}: not imported: {errors} error{} above (no scenario written)",
            path.display(),
            plural(errors)
        )?;
        return Ok(ExitCode::from(1));
    }
    let yaml = imported.to_yaml();
    // What the import wrote must pass the validator users run, or it is not written.
    let report = validate::check_text(&yaml, Format::Yaml);
    if report.errors() > 0 {
        for p in &report.problems {
            writeln!(err, "{} (imported scenario): {p}", path.display())?;
        }
        writeln!(
            err,
            "{}: the imported scenario does not validate (no scenario written)",
            path.display()
        )?;
        return Ok(ExitCode::from(1));
    }
    for p in report.problems.iter() {
        writeln!(err, "{} (imported scenario): {p}", path.display())?;
    }
    if !imported.templates.is_empty() {
        writeln!(err, "templates to create:")?;
        for t in &imported.templates {
            writeln!(err, "  - {}", t.todo())?;
        }
    }
    match out {
        None => out!("{yaml}"),
        Some(o) if o == Path::new("-") => out!("{yaml}"),
        Some(o) => {
            fs::write(o, &yaml).with_context(|| format!("cannot write {}", o.display()))?;
            let (_, warnings) = validate::summary(&imported.problems);
            writeln!(
                err,
                "wrote {} from {} ({warnings} import warning{})",
                o.display(),
                path.display(),
                plural(warnings)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
