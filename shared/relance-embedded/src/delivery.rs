//! Real delivery from `relance run`: a worker beside the runner leases due sends of the
//! channels that have a backend (SMTP, SES, SNS, web push), hands each to its backend and
//! settles the answer on the runner thread.
//!
//! - The provider took it: `done`, its message id kept.
//! - A transient failure (a 4xx SMTP reply, a timeout, throttling): retried with backoff (30 s
//!   doubling to 1 h, stored, so a restart resumes) until 24 h after the first attempt, then
//!   dead-lettered with a `failed` record. The contact's later messages wait behind it, so a
//!   contact's messages arrive in order; other contacts go on.
//! - A permanent answer (a 5xx reply, a rejected address): `failed` with the answer, journaled;
//!   a hard bounce also records `bounced` engagement, which suppresses the address through
//!   the consent log exactly as a bounce reported by SES does on AWS.
//!
//! Each send is queued for delivery in the transaction that made it, and leased rows are
//! marked `sending` before the call; a row found `sending` at start was cut short by a stop
//! and is sent again with the same `Message-ID` (the provider may have taken it: the one case
//! of at-least-once, counted as `interrupted`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use relance_core::EngagementKind;
use relance_core::delivery::{self as rules, Backend, DeliveryError, Outgoing};
use relance_core::journal::{Record, RecordKind};
use relance_core::scenario::Channel;
use relance_core::wire::EngagementDetail;

use crate::runtime::Runtime;
use crate::server::{RuntimeHandle, Stopped};
use crate::store::{DeliveryRow, Settlement, SqliteStore, StoreError};

/// Sends leased per round (and in flight at once at most).
const BATCH: usize = 64;

/// The backends of `relance run`, one per channel that is delivered for real.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    by_channel: HashMap<Channel, Arc<dyn Backend>>,
}

impl Backends {
    /// No real delivery: everything goes to the outbox file only.
    pub fn none() -> Backends {
        Backends::default()
    }

    /// Delivers `channel` through `backend`.
    pub fn with(mut self, channel: Channel, backend: Arc<dyn Backend>) -> Backends {
        self.by_channel.insert(channel, backend);
        self
    }

    /// The channels delivered for real.
    pub fn channels(&self) -> Vec<Channel> {
        let mut channels: Vec<Channel> = self.by_channel.keys().copied().collect();
        channels.sort_by_key(|c| c.as_str());
        channels
    }

    /// True when no channel has a backend.
    pub fn is_empty(&self) -> bool {
        self.by_channel.is_empty()
    }

    /// `email=smtp, sms=sns`, for the start-up line.
    pub fn describe(&self) -> String {
        self.channels()
            .into_iter()
            .filter_map(|c| {
                self.by_channel
                    .get(&c)
                    .map(|b| format!("{}={}", c.as_str(), b.name()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn get(&self, channel: Channel) -> Option<&Arc<dyn Backend>> {
        self.by_channel.get(&channel)
    }
}

/// The delivery worker: leases due sends through the runner, delivers them, settles them.
#[derive(Clone)]
pub struct Worker {
    handle: RuntimeHandle,
    backends: Backends,
    from_email: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("backends", &self.backends)
            .field("from_email", &self.from_email)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker on the runner behind `handle`; `from_email` is the default sender (its domain
    /// names the `Message-ID`s).
    pub fn new(handle: RuntimeHandle, backends: Backends, from_email: &str) -> Worker {
        Worker {
            handle,
            backends,
            from_email: from_email.to_string(),
        }
    }

    /// Puts rows a stop cut short back in line (call once, before the first round); returns
    /// how many.
    pub async fn recover(&self) -> Result<usize, Stopped> {
        let recovered = self
            .handle
            .call_store(|rt, _| rt.store().recover_deliveries())
            .await?;
        match recovered {
            Ok(n) => {
                if n > 0 {
                    tracing::warn!(target: "relance::delivery", count = n, "sends interrupted by the last stop are sent again with their Message-ID (the provider may have taken them)");
                }
                Ok(n)
            }
            Err(e) => {
                tracing::error!(target: "relance::delivery", error = %e, "cannot recover interrupted deliveries");
                Ok(0)
            }
        }
    }

    /// Leases up to `room` due sends and starts their attempts in `inflight`; how many.
    async fn lease_into(
        &self,
        room: usize,
        inflight: &mut tokio::task::JoinSet<Result<(), Stopped>>,
    ) -> Result<usize, Stopped> {
        let leased = self
            .handle
            .call_store(move |rt, now| rt.store().lease_deliveries(now, room))
            .await?;
        let rows = match leased {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(target: "relance::delivery", error = %e, "cannot lease deliveries");
                return Ok(0);
            }
        };
        let n = rows.len();
        for row in rows {
            let worker = self.clone();
            inflight.spawn(async move { worker.attempt(row).await });
        }
        Ok(n)
    }

    /// One round: leases the due sends, delivers them concurrently, settles each; returns how
    /// many were attempted.
    pub async fn run_once(&self) -> Result<usize, Stopped> {
        let mut inflight = tokio::task::JoinSet::new();
        let n = self.lease_into(BATCH, &mut inflight).await?;
        while let Some(done) = inflight.join_next().await {
            if let Ok(Err(Stopped)) = done {
                return Err(Stopped);
            }
        }
        Ok(n)
    }

    /// Recovers, then delivers until the runner stops or `stop` turns true: up to 64
    /// sends in flight, a new one leased as soon as one is settled (a slow answer holds up
    /// only its own contact), pausing up to `poll` when nothing is due. The sends in flight
    /// when `stop` turns finish first, so a graceful stop leaves no attempt cut short.
    pub async fn run(self, poll: StdDuration, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.recover().await.is_err() {
            return;
        }
        let mut inflight = tokio::task::JoinSet::new();
        while !*stop.borrow() {
            let room = BATCH.saturating_sub(inflight.len());
            let leased = if room > 0 {
                match self.lease_into(room, &mut inflight).await {
                    Ok(n) => n,
                    Err(Stopped) => break,
                }
            } else {
                0
            };
            if leased > 0 && inflight.len() < BATCH {
                continue;
            }
            tokio::select! {
                done = inflight.join_next(), if !inflight.is_empty() => {
                    if let Some(Ok(Err(Stopped))) = done {
                        break;
                    }
                }
                _ = tokio::time::sleep(poll), if leased == 0 => {}
                changed = stop.changed() => {
                    // The stop's sender gone: nobody can stop it any more but the runner.
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        while inflight.join_next().await.is_some() {}
    }

    /// The message handed to the backend for `row`.
    pub fn outgoing(&self, row: &DeliveryRow) -> Outgoing {
        let mut send = row.send.clone();
        let mut headers = Vec::new();
        if send.channel == Channel::Email {
            // The links `relance run` was started with, on the runner's handle.
            if let Some(html) = self
                .handle
                .tracking()
                .and_then(|t| t.instrument(&row.scenario, &send))
            {
                send.content.html = Some(html);
            }
            if let Some(links) = self.handle.unsubscribe() {
                headers = links.headers_for(&row.scenario, &send);
            }
        }
        let from = send.content.from.as_deref().unwrap_or(&self.from_email);
        let message_id = rules::message_id(&send.idempotency_key, rules::domain_of(from));
        Outgoing {
            scenario: row.scenario.clone(),
            send,
            headers,
            message_id,
        }
    }

    async fn attempt(&self, row: DeliveryRow) -> Result<(), Stopped> {
        let result = match self.backends.get(row.send.channel) {
            Some(backend) => {
                let message = self.outgoing(&row);
                backend.deliver(&message).await
            }
            // The channel's backend was switched off since the send was queued: kept for a
            // later start that has it (retried within the window, then dead-lettered).
            None => Err(DeliveryError::Transient(format!(
                "no backend is configured for {} now",
                row.send.channel.as_str()
            ))),
        };
        match &result {
            Ok(id) => {
                tracing::info!(target: "relance::delivery", key = %row.send.idempotency_key, enrollment = %row.send.enrollment, scenario = %row.scenario, step = %row.send.step, channel = row.send.channel.as_str(), provider_id = %id, "delivered")
            }
            Err(e) => {
                tracing::warn!(target: "relance::delivery", key = %row.send.idempotency_key, enrollment = %row.send.enrollment, scenario = %row.scenario, step = %row.send.step, channel = row.send.channel.as_str(), error = %e, "delivery attempt failed")
            }
        }
        let settled = self
            .handle
            .call_store(move |rt, now| settle(rt, &row, result, now))
            .await?;
        if let Err(e) = settled {
            tracing::error!(target: "relance::delivery", error = %e, "cannot settle a delivery; it is attempted again at the next start");
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

fn failed_record(row: &DeliveryRow, now: DateTime<Utc>, reason: String) -> Record {
    let mut r = Record::new(now, &row.send.contact, RecordKind::Failed).step(&row.send.step);
    r.channel = Some(row.send.channel);
    r.message = Some(row.send.message.clone());
    r.enrollment = Some(row.send.enrollment.clone());
    r.reason = Some(reason);
    r
}

/// Settles one attempt of `row` on the runner: the store's state, the journal, and on a hard
/// bounce the `bounced` engagement (which suppresses the address and wakes a waiting
/// enrollment).
pub fn settle(
    rt: &mut Runtime<SqliteStore>,
    row: &DeliveryRow,
    result: Result<String, DeliveryError>,
    now: DateTime<Utc>,
) -> Result<(), SettleError> {
    let attempt_no = row.attempts.saturating_add(1);
    let (settlement, record) = match result {
        Ok(provider_id) => (Settlement::Done { provider_id }, None),
        Err(DeliveryError::Transient(why)) => {
            let first = row.first_at.unwrap_or(now);
            match rules::next_attempt(first, attempt_no, now) {
                Some(at) => (Settlement::Retry { at, reason: why }, None),
                None => {
                    let reason = rules::dead_reason("delivery", attempt_no, &why);
                    (
                        Settlement::Dead {
                            reason: reason.clone(),
                        },
                        Some(failed_record(row, now, reason)),
                    )
                }
            }
        }
        Err(DeliveryError::Permanent {
            reason,
            hard_bounce,
        }) => {
            if hard_bounce {
                // Before the settlement: were the process to stop between the two, the resend
                // bounces again and this engagement, keyed, is not recorded twice.
                let detail = EngagementDetail {
                    contact: row.send.contact.clone(),
                    scenario: row.scenario.clone(),
                    step: row.send.step.clone(),
                    kind: EngagementKind::Bounced,
                    url: None,
                    link_tags: Vec::new(),
                    at: Some(now),
                    idempotency_key: Some(format!("{}:bounce", row.send.idempotency_key)),
                };
                if let Err(e) = rt.engagement(detail, now) {
                    tracing::error!(target: "relance::delivery", key = %row.send.idempotency_key, error = %e, "a hard bounce could not be recorded");
                }
            }
            let reason = format!("delivery failed: {reason}");
            (
                Settlement::Failed {
                    reason: reason.clone(),
                },
                Some(failed_record(row, now, reason)),
            )
        }
    };
    rt.store().settle_delivery(
        row.seq,
        &settlement,
        record.as_ref().map(|r| (row.scenario.as_str(), r)),
        now,
    )?;
    Ok(())
}
