//! The real deliveries of the embedded store: one row per send on a channel with a real
//! backend, queued in the transaction of the transition that made the send (beside its outbox
//! row, whose `seq` it shares), leased by the delivery worker in `seq` order — one open row per
//! contact, so a contact's messages go in order — and settled with the provider's answer.

use chrono::{DateTime, Utc};
use relance_core::engine::Send;
use relance_core::journal::Record;
use relance_core::ports::Store;
use relance_core::scenario::Channel;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, StoreError, parse_ts, stamp, to_json, ts};

/// A send the worker is to hand to its backend now.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    /// The outbox row's `seq`.
    pub seq: i64,
    /// The scenario.
    pub scenario: String,
    /// The send, as the engine made it.
    pub send: Send,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The first attempt's instant (the retry window's start), if one was made.
    pub first_at: Option<DateTime<Utc>>,
    /// An earlier attempt was cut short by the process stopping: the provider may have taken
    /// it, so this one is a resend (with the same Message-ID).
    pub interrupted: bool,
}

/// How an attempt ended, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The provider took it; its message id.
    Done {
        /// The provider's id for the message.
        provider_id: String,
    },
    /// A transient failure: try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why the attempt failed.
        reason: String,
    },
    /// A permanent answer: not retried.
    Failed {
        /// The provider's answer.
        reason: String,
    },
    /// Retried past the window: dead-lettered.
    Dead {
        /// The last failure.
        reason: String,
    },
}

/// Where one delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// pending, sending, done, failed or dead.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The provider's message id, once done.
    pub provider_id: Option<String>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Attempts cut short by a stop.
    pub interrupted: u32,
}

/// How many deliveries are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Waiting for their turn or their retry.
    pub pending: u64,
    /// Handed to a backend, answer not yet recorded.
    pub sending: u64,
    /// Taken by the provider.
    pub done: u64,
    /// Refused for good.
    pub failed: u64,
    /// Retried past the window.
    pub dead: u64,
    /// Resends after an interrupted attempt (summed over rows).
    pub interrupted: u64,
}

type RawRow = (i64, String, String, i64, Option<i64>, i64);

/// The part of a `send` outbox row delivery reads (`ports::send_message` writes it).
#[derive(serde::Deserialize)]
struct SendRow {
    send: Send,
}

impl SqliteStore {
    /// The channels `relance run` delivers for real: from now on, each send on them gets a
    /// delivery row in the transaction that makes it. Sends on other channels go to the
    /// outbox file only.
    pub fn set_live_channels(&mut self, channels: &[Channel]) {
        self.live_channels = channels.to_vec();
    }

    /// Queues the send just written to the outbox as row `seq`, due at `at`.
    pub(super) fn queue_delivery(
        &mut self,
        seq: i64,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO delivery (seq, scenario_id, contact_id, channel, next_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                seq,
                scenario,
                send.contact,
                send.channel.as_str(),
                ts("delivery due", at)?
            ])?;
        Ok(())
    }

    /// Rows left `sending` by a process that stopped mid-attempt go back to `pending`, marked
    /// interrupted (the provider may have taken them: they are sent again, same Message-ID).
    /// Returns how many. Call once at start, before the first lease.
    pub fn recover_deliveries(&mut self) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE delivery SET state = 'pending', interrupted = interrupted + 1 WHERE state = 'sending'",
            )?
            .execute([])?)
    }

    /// Leases up to `limit` due deliveries, oldest first, at most one per contact and none
    /// for a contact whose earlier message is still open (a retry holds the contact's later
    /// messages back). Leased rows are `sending` until settled. A row whose send does not read
    /// is dead-lettered alone.
    pub fn lease_deliveries(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let tx = self.conn.savepoint()?;
        let raw: Vec<RawRow> = {
            let mut stmt = tx.prepare_cached(
                "SELECT d.seq, d.scenario_id, o.payload, d.attempts, d.first_at, d.interrupted
                 FROM delivery d JOIN outbox o ON o.seq = d.seq
                 WHERE d.state = 'pending' AND d.next_at <= ?1
                   AND NOT EXISTS (SELECT 1 FROM delivery e
                                   WHERE e.contact_id = d.contact_id AND e.seq < d.seq
                                     AND e.state IN ('pending', 'sending'))
                 ORDER BY d.seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![stamp(now), limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        // Rows that do not read, dead-lettered here (counted once committed).
        let mut buried = 0_u64;
        for (seq, scenario, payload, attempts, first_at, interrupted) in raw {
            let read = serde_json::from_str::<SendRow>(&payload)
                .map(|row| row.send)
                .map_err(|e| e.to_string())
                .and_then(|send| {
                    let first_at = first_at
                        .map(parse_ts)
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    Ok((send, first_at))
                });
            match read {
                Ok((send, first_at)) => {
                    tx.prepare_cached("UPDATE delivery SET state = 'sending' WHERE seq = ?1")?
                        .execute(params![seq])?;
                    out.push(DeliveryRow {
                        seq,
                        scenario,
                        send,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        first_at,
                        interrupted: interrupted > 0,
                    });
                }
                Err(why) => {
                    let reason = format!("the stored send does not read: {why}");
                    tx.prepare_cached(
                        "UPDATE delivery SET state = 'dead', last_error = ?2 WHERE seq = ?1",
                    )?
                    .execute(params![seq, reason])?;
                    tx.prepare_cached(
                        "INSERT INTO dead_letter (kind, payload, reason, at) VALUES ('delivery', ?1, ?2, ?3)",
                    )?
                    .execute(params![payload, reason, stamp(now)])?;
                    buried += 1;
                }
            }
        }
        tx.commit()?;
        relance_runtime::metrics::dead_letters("delivery", buried);
        Ok(out)
    }

    /// Settles one attempt made at `now`: the count, the first attempt's instant, and the
    /// outcome, with its journal record (`scenario`, `record`) in the same transaction. A dead
    /// delivery is also dead-lettered (kind `delivery`, the send as payload).
    pub fn settle_delivery(
        &mut self,
        seq: i64,
        settlement: &Settlement,
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
                "UPDATE delivery SET attempts = attempts + 1, first_at = COALESCE(first_at, ?2) WHERE seq = ?1",
            )?
            .execute(params![seq, stamp(now)])?;
            match settlement {
                Settlement::Done { provider_id } => tx
                    .prepare_cached(
                        "UPDATE delivery SET state = 'done', provider_id = ?2, last_error = NULL WHERE seq = ?1",
                    )?
                    .execute(params![seq, provider_id])?,
                Settlement::Retry { at, reason } => tx
                    .prepare_cached(
                        "UPDATE delivery SET state = 'pending', next_at = ?2, last_error = ?3 WHERE seq = ?1",
                    )?
                    .execute(params![seq, stamp(*at), reason])?,
                Settlement::Failed { reason } => tx
                    .prepare_cached(
                        "UPDATE delivery SET state = 'failed', last_error = ?2 WHERE seq = ?1",
                    )?
                    .execute(params![seq, reason])?,
                Settlement::Dead { reason } => {
                    tx.prepare_cached(
                        "UPDATE delivery SET state = 'dead', last_error = ?2 WHERE seq = ?1",
                    )?
                    .execute(params![seq, reason])?;
                    tx.prepare_cached(
                        "INSERT INTO dead_letter (kind, payload, reason, at)
                         SELECT 'delivery', payload, ?2, ?3 FROM outbox WHERE seq = ?1",
                    )?
                    .execute(params![seq, reason, stamp(now)])?
                }
            };
            Ok(())
        })??;
        // Counted once committed (DESIGN §9).
        if let Some((scenario, record)) = record {
            relance_runtime::metrics::journaled(scenario, record);
        }
        if matches!(settlement, Settlement::Dead { .. }) {
            relance_runtime::metrics::dead_letter("delivery");
        }
        Ok(())
    }

    /// Where the delivery of the send under `idempotency_key` stands (none: not delivered
    /// for real, or unknown).
    pub fn delivery_status(
        &mut self,
        idempotency_key: &str,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT d.state, d.attempts, d.provider_id, d.last_error, d.interrupted
                 FROM delivery d JOIN outbox o ON o.seq = d.seq WHERE o.idempotency_key = ?1",
            )?
            .query_row(params![idempotency_key], |r| {
                Ok(DeliveryStatus {
                    state: r.get(0)?,
                    attempts: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    provider_id: r.get(2)?,
                    last_error: r.get(3)?,
                    interrupted: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                })
            })
            .optional()?)
    }

    /// How many deliveries are in each state.
    pub fn delivery_counts(&mut self) -> Result<DeliveryCounts, StoreError> {
        let mut counts = DeliveryCounts::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, COUNT(*), SUM(interrupted) FROM delivery GROUP BY state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (state, n, interrupted) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            counts.interrupted += u64::try_from(interrupted).unwrap_or(0);
            match state.as_str() {
                "pending" => counts.pending += n,
                "sending" => counts.sending += n,
                "done" => counts.done += n,
                "failed" => counts.failed += n,
                "dead" => counts.dead += n,
                _ => {}
            }
        }
        Ok(counts)
    }
}
