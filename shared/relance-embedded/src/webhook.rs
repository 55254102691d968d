//! Delivery of webhook calls in embedded mode (DESIGN §9): a worker beside the runner leases
//! due calls from the store, signs and sends each through a [`Transport`], and settles it on
//! the runner thread — 2xx: done, `save` applied as a contact update and a `delivered` record;
//! 408, 429, 5xx, timeouts and connection failures: retried with backoff (the next attempt's
//! instant is stored, so a restart resumes) until 24 h after the first attempt, then
//! dead-lettered with a `failed` record; any other status, or an address the outbound rule
//! refuses: `failed` with the reason, never retried.
//!
//! The HTTP client is not here: `relance run` hands the worker the guarded client of
//! `relance_aws::webhook` (the outbound rule of DESIGN §8) as a
//! [`relance_core::webhook::Transport`]. Every attempt
//! carries the same `Idempotency-Key` (`{enrollment}:{step}`), so a receiver drops the
//! duplicate a crash between a call and its settlement can cause.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use relance_core::journal::{Record, RecordKind};
use relance_core::webhook::{self as rules, CallError, Transport, Verdict};
use relance_core::wire::ContactDetail;
use serde_json::{Map, Value};

use crate::runtime::Runtime;
use crate::server::{RuntimeHandle, Stopped};
use crate::store::{Attempt, SqliteStore, StoreError, WebhookRow};

/// How long a leased call stays invisible to the next lease: longer than an attempt's
/// timeout, so a call is in flight once at a time unless the process died.
const LEASE_SECONDS: i64 = 60;
/// Calls leased per round.
const BATCH: usize = 32;

/// Reads a secret's value by its name (the scenario names it, never holds it).
pub type Secrets = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// Secrets from the environment: `secret: crm-key` reads `RELANCE_WEBHOOK_SECRET_CRM_KEY`.
pub fn env_secrets() -> Secrets {
    Arc::new(|name| {
        std::env::var(rules::secret_var(name))
            .ok()
            .filter(|v| !v.is_empty())
            .map(String::into_bytes)
    })
}

/// The webhook worker: leases due calls through the runner, calls them, settles them.
#[derive(Clone)]
pub struct Worker {
    handle: RuntimeHandle,
    transport: Arc<dyn Transport>,
    secrets: Secrets,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker on the runner behind `handle`.
    pub fn new(handle: RuntimeHandle, transport: Arc<dyn Transport>, secrets: Secrets) -> Worker {
        Worker {
            handle,
            transport,
            secrets,
        }
    }

    /// One round: leases the due calls, makes them (concurrently), settles each; returns how
    /// many were attempted.
    pub async fn run_once(&self) -> Result<usize, Stopped> {
        let leased = self
            .handle
            .call_store(|rt, now| {
                rt.store()
                    .lease_webhooks(now, Duration::seconds(LEASE_SECONDS), BATCH)
            })
            .await?;
        let rows = match leased {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(target: "relance::webhook", error = %e, "cannot lease webhook calls");
                return Ok(0);
            }
        };
        let n = rows.len();
        let mut calls = tokio::task::JoinSet::new();
        for row in rows {
            let worker = self.clone();
            calls.spawn(async move { worker.attempt(row).await });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok(Err(Stopped)) = done {
                return Err(Stopped);
            }
        }
        Ok(n)
    }

    /// Runs rounds until the runner stops, pausing `poll` when nothing was due.
    pub async fn run(self, poll: StdDuration) {
        loop {
            match self.run_once().await {
                Ok(0) => tokio::time::sleep(poll).await,
                Ok(_) => {}
                Err(Stopped) => return,
            }
        }
    }

    async fn attempt(&self, row: WebhookRow) -> Result<(), Stopped> {
        let now = self.handle.clock().now();
        let result = match &row.call.secret {
            Some(name) => match (self.secrets)(name) {
                Some(secret) => {
                    let request =
                        rules::request(&row.call, &row.key, Some(&secret), now.timestamp());
                    self.transport.call(request).await
                }
                // A missing secret is configuration: retried, so setting it and restarting
                // delivers the call within its window.
                None => Err(CallError::Unreachable(format!(
                    "the secret \"{name}\" is not set ({})",
                    rules::secret_var(name)
                ))),
            },
            None => {
                self.transport
                    .call(rules::request(&row.call, &row.key, None, now.timestamp()))
                    .await
            }
        };
        let verdict = rules::verdict(&result);
        let answer = result.ok().map(|a| a.body).unwrap_or_default();
        tracing::info!(target: "relance::webhook", key = %row.key, outcome = ?verdict, "webhook attempt");
        let settled = self
            .handle
            .call_store(move |rt, now| settle(rt, &row, &verdict, &answer, now))
            .await?;
        if let Err(e) = settled {
            tracing::error!(target: "relance::webhook", error = %e, "cannot settle a webhook call; it is retried after its lease");
        }
        Ok(())
    }
}

/// Why settling failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn record(
    row: &WebhookRow,
    kind: RecordKind,
    now: DateTime<Utc>,
    reason: Option<String>,
) -> Record {
    let mut r = Record::new(now, &row.contact, kind);
    r.step = Some(row.step.clone());
    r.action = Some("webhook".into());
    r.enrollment = Some(row.enrollment.clone());
    r.reason = reason;
    r
}

/// Settles one attempt of `row` on the runner: the store's state, the journal, and on a 2xx
/// the `save` fields as a contact update (which runs `contact.updated` through the scenarios).
pub fn settle(
    rt: &mut Runtime<SqliteStore>,
    row: &WebhookRow,
    verdict: &Verdict,
    answer: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SettleError> {
    let attempt_no = row.attempts.saturating_add(1);
    let (attempt, journal) = match verdict {
        Verdict::Done => {
            let (fields, mut missing) = rules::saved_fields(&row.call.save, answer);
            if !fields.is_empty() {
                let mut contact = Map::new();
                contact.insert("id".into(), Value::from(row.contact.clone()));
                contact.extend(fields);
                let detail = ContactDetail {
                    action: None,
                    contact,
                    at: None,
                };
                // A value the contact refuses (an invalid email, say) is reported on the
                // delivered record; the call itself succeeded and is not made again.
                if let Err(e) = rt.upsert_contact(detail, now) {
                    tracing::warn!(target: "relance::webhook", key = %row.key, error = %e, "save: the contact update was refused");
                    missing.push(format!("save: the contact update was refused: {e}"));
                }
            }
            let reason = (!missing.is_empty()).then(|| missing.join("; "));
            (
                Attempt::Done,
                record(row, RecordKind::Delivered, now, reason),
            )
        }
        Verdict::Retry(why) => {
            let first = row.first_at.unwrap_or(now);
            match rules::next_attempt(first, attempt_no, now) {
                Some(at) => {
                    rt.store().settle_webhook(
                        &row.key,
                        &Attempt::Retry {
                            at,
                            reason: why.clone(),
                        },
                        None,
                        now,
                    )?;
                    return Ok(());
                }
                None => {
                    let reason = rules::dead_reason("webhook", attempt_no, why);
                    (
                        Attempt::Dead {
                            reason: reason.clone(),
                        },
                        record(row, RecordKind::Failed, now, Some(reason)),
                    )
                }
            }
        }
        Verdict::Failed(why) => {
            let reason = format!("webhook failed: {why}");
            (
                Attempt::Failed {
                    reason: reason.clone(),
                },
                record(row, RecordKind::Failed, now, Some(reason)),
            )
        }
    };
    rt.store()
        .settle_webhook(&row.key, &attempt, Some((&row.scenario, &journal)), now)?;
    Ok(())
}
