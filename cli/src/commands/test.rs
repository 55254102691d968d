//! `relance test`: a scenario for a few test profiles on a fast clock, in a throwaway store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use relance_core::IsoDuration;
use relance_core::ports::Status;
use relance_core::simulation::{self};
use relance_core::wire::LaunchDetail;
use relance_embedded::clock::{Clock, ScaledClock};
use relance_embedded::import::{self, ContactsFormat};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;
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
    let clock = ScaledClock::new(start, speed);
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
    let mut script = match events {
        Some(p) => simulation::events_from_json_lines(&std::fs::read_to_string(p)?)
            .map_err(|e| anyhow::anyhow!("{}:\n  {}", p.display(), e.join("\n  ")))?,
        None => Vec::new(),
    };
    script.sort_by_key(|e| std::cmp::Reverse(e.at()));
    let engine = rt.engine(&put.id, active.active_version.unwrap_or(put.version))?;
    if matches!(
        engine.scenario().launch,
        relance_core::scenario::Launch::Manual
    ) {
        rt.launch(
            LaunchDetail {
                scenario: put.id.clone(),
                contacts: Some(ids.clone()),
            },
            start,
        )?;
    }
    let end = until.add_to(start, engine.scenario().timezone);
    eprintln!(
        "testing {} with {} profile(s), {}x faster ({} per real second)",
        put.id,
        ids.len(),
        speed,
        humanize(speed)
    );
    loop {
        let now = clock.now().min(end);
        while script.last().is_some_and(|e| e.at() <= now) {
            let Some(e) = script.pop() else { break };
            let result = rt.scripted(&put.id, e, now);
            if let Err(err) = result {
                eprintln!("event skipped: {err}");
            }
        }
        rt.tick(now)?;
        let (running, _) = rt.store().enrollment_counts(Some(&put.id))?;
        let waiting_for_more = !script.is_empty()
            || !matches!(
                engine.scenario().launch,
                relance_core::scenario::Launch::Manual
            );
        if now >= end || (running == 0 && !waiting_for_more) {
            break;
        }
        let next = rt
            .next_due()?
            .into_iter()
            .chain(script.last().map(|e| e.at()))
            .min()
            .unwrap_or(end);
        std::thread::sleep(clock.real_span(next - clock.now()).clamp(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(200),
        ));
    }
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
