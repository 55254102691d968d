//! `relance policy set|show` and `relance messages put|show`: the workspace settings.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::backend::{Backend, on_backend};

/// `relance policy set FILE`.
pub fn policy_set(backend: &Backend, path: &Path) -> Result<ExitCode> {
    // Read through the same checks as simulate, so a bad file is named with its paths.
    crate::files::load_policy(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    on_backend!(backend, |rt| {
        let p = rt.set_policy(&text, Utc::now())?;
        outln!(
            "policy set: quiet hours {}, frequency cap {}, exempt {:?}",
            if p.quiet_hours.is_some() { "on" } else { "off" },
            p.frequency_cap
                .as_ref()
                .map(|c| format!("{} per {}", c.max, c.per))
                .unwrap_or_else(|| "off".into()),
            p.exempt
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `relance policy show`.
pub fn policy_show(backend: &Backend) -> Result<ExitCode> {
    on_backend!(backend, |rt| {
        match rt.policy_text()? {
            Some(text) => outln!("{}", text.trim_end()),
            None => outln!("no policy set"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `relance messages put FILE`.
pub fn messages_put(backend: &Backend, path: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    on_backend!(backend, |rt| {
        let n = rt
            .set_messages(&text, Utc::now())
            .with_context(|| path.display().to_string())?;
        outln!("{n} shared message(s) stored; scenarios stored from now on use them");
        Ok(ExitCode::SUCCESS)
    })
}

/// `relance messages show`.
pub fn messages_show(backend: &Backend) -> Result<ExitCode> {
    on_backend!(backend, |rt| {
        match rt.messages_text()? {
            Some(text) => outln!("{}", text.trim_end()),
            None => outln!("no shared messages"),
        }
        Ok(ExitCode::SUCCESS)
    })
}
