//! `relance consent show|set` (DESIGN §4).

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use relance_core::consent::ConsentRequest;
use relance_core::ports::Store;
use relance_embedded::runtime::Runtime;

use crate::backend::{Backend, on_backend};

/// `relance consent show CONTACT`: the trail, one JSON object per line.
pub fn show(backend: &Backend, contact: &str) -> Result<ExitCode> {
    on_backend!(backend, |rt| show_on(&mut rt, contact))
}

fn show_on<S>(rt: &mut Runtime<S>, contact: &str) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    for e in &rt.consent_trail(contact)? {
        outln!("{}", serde_json::to_string(e)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `relance consent set CONTACT ...`: the events appended, one JSON object per line.
pub fn set(backend: &Backend, request: &ConsentRequest) -> Result<ExitCode> {
    on_backend!(backend, |rt| set_on(&mut rt, request))
}

fn set_on<S>(rt: &mut Runtime<S>, request: &ConsentRequest) -> Result<ExitCode>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    let events = rt.consent(request, Utc::now())?;
    for e in &events {
        outln!("{}", serde_json::to_string(e)?);
    }
    if events.is_empty() {
        eprintln!(
            "{}: already in the state asked for; nothing appended",
            request.contact
        );
    }
    Ok(ExitCode::SUCCESS)
}
