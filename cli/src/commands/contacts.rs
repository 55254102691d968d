//! `relance contacts import` and `relance launch`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use relance_core::ports::Store;
use relance_core::wire::LaunchDetail;
use relance_embedded::import::{self, ContactsFormat};
use relance_embedded::runtime::Runtime;

use crate::backend::{Backend, on_backend, print_json};

/// `relance launch`.
pub fn launch(backend: &Backend, scenario: &str, contacts: Vec<String>) -> Result<ExitCode> {
    on_backend!(backend, |rt| launch_on(&mut rt, scenario, contacts))
}

fn launch_on<S>(rt: &mut Runtime<S>, scenario: &str, contacts: Vec<String>) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let detail = LaunchDetail {
        scenario: scenario.to_string(),
        contacts: (!contacts.is_empty()).then_some(contacts),
    };
    let report = rt.launch(detail, Utc::now())?;
    print_json(&report)?;
    Ok(ExitCode::SUCCESS)
}

pub fn import_into<S>(
    rt: &mut Runtime<S>,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<serde_json::Value>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (rows, rejected) =
        import::parse_contacts_bytes(&bytes, ContactsFormat::from_path(&path.to_string_lossy()));
    let contacts: Vec<_> = rows.into_iter().map(|(_, c)| c).collect();
    let bar = (contacts.len() > 5000).then(|| {
        let bar = indicatif::ProgressBar::new(contacts.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} contacts {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let results = rt.import(&contacts, now, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(import::report(&results, &rejected))
}

/// `relance contacts import`.
pub fn contacts_import(backend: &Backend, file: &Path) -> Result<ExitCode> {
    on_backend!(backend, |rt| contacts_import_on(&mut rt, file))
}

fn contacts_import_on<S>(rt: &mut Runtime<S>, file: &Path) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let report = import_into(rt, file, Utc::now())?;
    outln!(
        "{}: {} added, {} modified, {} unchanged, {} rejected",
        file.display(),
        report["added"],
        report["modified"],
        report["unchanged"],
        report["rejected"].as_array().map_or(0, Vec::len)
    );
    for r in report["rejected"].as_array().into_iter().flatten() {
        outln!(
            "  line {}: {}",
            r["line"],
            r["reason"].as_str().unwrap_or("")
        );
    }
    if report["consent_kept"].as_u64().unwrap_or(0) > 0 {
        outln!(
            "  {} consent value(s) kept: an opt-out or a suppression stands (relance consent show CONTACT)",
            report["consent_kept"]
        );
    }
    // The good rows are in; a script must still learn that some were not.
    Ok(
        if report["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}
