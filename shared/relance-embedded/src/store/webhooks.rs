//! The webhook calls of the embedded store: one row per `{enrollment}:{step}` key, queued in
//! the transaction of the transition that made the call (so a call is neither lost nor queued
//! twice), leased by the delivery worker before each attempt and settled with its outcome.

use chrono::{DateTime, Duration, Utc};
use relance_core::journal::Record;
use relance_core::ports::Store;
use relance_core::webhook::Webhook;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, StoreError, parse_ts, stamp, to_json, ts};

/// A call the worker is to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// `{enrollment}:{step}`: the `Idempotency-Key`.
    pub key: String,
    /// The scenario.
    pub scenario: String,
    /// The contact.
    pub contact: String,
    /// The enrollment.
    pub enrollment: String,
    /// The step.
    pub step: String,
    /// The call, its body rendered.
    pub call: Webhook,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The first attempt's instant (the retry window's start), if one was made.
    pub first_at: Option<DateTime<Utc>>,
}

/// How an attempt ended, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer: the call is done.
    Done,
    /// A retryable failure: try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why the attempt failed.
        reason: String,
    },
    /// A permanent failure (another 4xx, a refused address).
    Failed {
        /// Why.
        reason: String,
    },
    /// Retried past the window: dead-lettered.
    Dead {
        /// The last failure.
        reason: String,
    },
}

/// Where a call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    /// pending, done, failed or dead.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending calls).
    pub next_at: Option<DateTime<Utc>>,
}

type RawRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

impl SqliteStore {
    /// Queues a call, once per key (a repeat is ignored), due at `at`.
    pub(super) fn queue_webhook(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        call: &Webhook,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = relance_core::webhook::idempotency_key(enrollment, step);
        let call = serde_json::to_string(call).map_err(|e| StoreError::Corrupt {
            what: "webhook call",
            why: e.to_string(),
        })?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO webhook (key, scenario_id, contact_id, enrollment_id, step_id, call, next_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![key, scenario, contact, enrollment, step, call, ts("webhook due", at)?])?;
        Ok(())
    }

    /// Leases up to `limit` due calls for `lease` (a crash during the call retries it after
    /// the lease, with the same key) and returns them, oldest due first. A row that does not
    /// read is dead-lettered alone.
    pub fn lease_webhooks(
        &mut self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        let tx = self.conn.savepoint()?;
        let raw: Vec<RawRow> = {
            let mut stmt = tx.prepare_cached(
                "SELECT key, scenario_id, contact_id, enrollment_id, step_id, call, attempts, first_at FROM webhook WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![stamp(now), limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let until = stamp(now + lease);
        let mut out = Vec::new();
        // Rows that do not read, dead-lettered here (counted once committed).
        let mut buried = 0_u64;
        for (key, scenario, contact, enrollment, step, call, attempts, first_at) in raw {
            let read = serde_json::from_str::<Webhook>(&call)
                .map_err(|e| e.to_string())
                .and_then(|call| {
                    let first_at = first_at
                        .map(parse_ts)
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    Ok((call, first_at))
                });
            match read {
                Ok((call, first_at)) => {
                    tx.prepare_cached("UPDATE webhook SET next_at = ?2 WHERE key = ?1")?
                        .execute(params![key, until])?;
                    out.push(WebhookRow {
                        key,
                        scenario,
                        contact,
                        enrollment,
                        step,
                        call,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        first_at,
                    });
                }
                Err(why) => {
                    let reason = format!("the stored call does not read: {why}");
                    tx.prepare_cached(
                        "UPDATE webhook SET state = 'dead', last_error = ?2 WHERE key = ?1",
                    )?
                    .execute(params![key, reason])?;
                    tx.prepare_cached(
                        "INSERT INTO dead_letter (kind, payload, reason, at) VALUES ('webhook', ?1, ?2, ?3)",
                    )?
                    .execute(params![call, reason, stamp(now)])?;
                    buried += 1;
                }
            }
        }
        tx.commit()?;
        relance_runtime::metrics::dead_letters("webhook", buried);
        Ok(out)
    }

    /// Settles one attempt made at `now`: the count, the first attempt's instant, and the
    /// outcome, with its journal record (`scenario`, `record`) in the same transaction. A dead
    /// call is also dead-lettered (kind `webhook`, the call as payload).
    pub fn settle_webhook(
        &mut self,
        key: &str,
        attempt: &Attempt,
        record: Option<(&str, &Record)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // One unit of work of the store: in a group, a savepoint whose journal row joins the
        // group's in the order written; alone, a transaction of its own.
        self.atomically(|s| -> Result<(), StoreError> {
            if let Some((scenario, record)) = record {
                s.journal_row(scenario, &record.contact, to_json(record))?;
            }
            let tx = &s.conn;
            tx.prepare_cached(
                "UPDATE webhook SET attempts = attempts + 1, first_at = COALESCE(first_at, ?2) WHERE key = ?1",
            )?
            .execute(params![key, stamp(now)])?;
            match attempt {
                Attempt::Done => tx
                    .prepare_cached(
                        "UPDATE webhook SET state = 'done', last_error = NULL WHERE key = ?1",
                    )?
                    .execute(params![key])?,
                Attempt::Retry { at, reason } => tx
                    .prepare_cached("UPDATE webhook SET next_at = ?2, last_error = ?3 WHERE key = ?1")?
                    .execute(params![key, ts("webhook retry", *at)?, reason])?,
                Attempt::Failed { reason } => tx
                    .prepare_cached(
                        "UPDATE webhook SET state = 'failed', last_error = ?2 WHERE key = ?1",
                    )?
                    .execute(params![key, reason])?,
                Attempt::Dead { reason } => {
                    tx.prepare_cached(
                        "UPDATE webhook SET state = 'dead', last_error = ?2 WHERE key = ?1",
                    )?
                    .execute(params![key, reason])?;
                    tx.prepare_cached(
                        "INSERT INTO dead_letter (kind, payload, reason, at) SELECT 'webhook', call, ?2, ?3 FROM webhook WHERE key = ?1",
                    )?
                    .execute(params![key, reason, stamp(now)])?
                }
            };
            Ok(())
        })??;
        // Counted once committed (DESIGN §9).
        if let Some((scenario, record)) = record {
            relance_runtime::metrics::journaled(scenario, record);
        }
        if matches!(attempt, Attempt::Dead { .. }) {
            relance_runtime::metrics::dead_letter("webhook");
        }
        Ok(())
    }

    /// Deletes at most `limit` settled calls (done, failed or dead) first attempted before
    /// `before` (microseconds); pending calls stay whatever their age.
    pub(super) fn purge_webhooks(&mut self, before: i64, limit: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM webhook WHERE key IN (SELECT key FROM webhook WHERE state <> 'pending' AND COALESCE(first_at, next_at) < ?1 LIMIT ?2)",
            )?
            .execute(params![before, limit])?)
    }

    /// Where the call of `key` stands.
    pub fn webhook_status(&mut self, key: &str) -> Result<Option<WebhookStatus>, StoreError> {
        let row: Option<(String, i64, Option<String>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT state, attempts, last_error, next_at FROM webhook WHERE key = ?1",
            )?
            .query_row(params![key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        row.map(|(state, attempts, last_error, next_at)| {
            let next_at = if state == "pending" {
                Some(parse_ts(next_at)?)
            } else {
                None
            };
            Ok(WebhookStatus {
                state,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                last_error,
                next_at,
            })
        })
        .transpose()
    }
}
