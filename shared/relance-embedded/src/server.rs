//! `relance run`: the runtime on a clock. One thread owns the SQLite store and does all the
//! work — due timers, launches and inactivity checks on time, then the jobs the HTTP API
//! hands it — so units of work never interleave.
//!
//! The runner works in rounds, each a group commit ([`Runtime::grouped`]): first what is due
//! (up to [`TIMERS_PER_ROUND`] timers), then every job waiting (up to [`JOBS_PER_ROUND`]), each unit of work a savepoint of
//! one transaction committed every [`GROUP_UNITS`] units and at the round's end. Only then
//! are the jobs' callers answered and the outbox delivered, so nothing is acknowledged or
//! sent before it is durable, and a busy runner pays one commit for many units instead of
//! one each.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use relance_core::tracking::TrackingLinks;
use relance_core::unsubscribe::UnsubscribeLinks;

use crate::clock::Clock;
use crate::outbox::{OutboxError, OutboxFile};
use crate::runtime::Runtime;
use crate::store::{SqliteStore, StoreError};

/// The longest the runner sleeps without looking at the store (another process may write).
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// How often the runner applies the policy's retention.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Units of work per group commit: a round commits at least this often (at a few tens of
/// microseconds a unit, every few milliseconds).
pub const GROUP_UNITS: usize = 512;

/// The most jobs one round takes: the callers of a round wait for its last commit.
pub const JOBS_PER_ROUND: usize = 256;

/// The most timers one round fires before it takes the waiting jobs (the rest fire in the
/// next rounds): a herd of due timers holds a request back a fraction of a second, not for
/// as long as the whole herd takes.
pub const TIMERS_PER_ROUND: usize = 4096;

/// Work for the runner thread: runs, then returns how to answer its caller once the round's
/// commit is known.
type Job = Box<dyn FnOnce(&mut Runtime<SqliteStore>, DateTime<Utc>) -> Reply + Send>;

/// Answers a job's caller with the outcome of its round's commit.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Why a call to the runner gave no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The runner stopped (its thread ended).
    #[error("the runtime has stopped")]
    Stopped,
    /// The commit of the call's round failed: some or all of what the call did was not kept
    /// (a unit of work is kept whole or not at all; the call's inputs may be sent again).
    #[error("the store could not commit; the request was not (entirely) kept: {0}")]
    NotCommitted(String),
}

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database did not open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The outbox file did not open.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// The runner stopped (its thread ended): what the background workers stop on.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the runtime has stopped")]
pub struct Stopped;

/// A handle on the runner: hands it jobs and waits for their results.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    jobs: mpsc::Sender<Job>,
    clock: Arc<dyn Clock>,
    unsubscribe: Option<Arc<UnsubscribeLinks>>,
    tracking: Option<Arc<TrackingLinks>>,
}

impl RuntimeHandle {
    /// Runs `work` on the runner thread with the current time and returns its result, once
    /// what it wrote is committed.
    pub async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Runtime<SqliteStore>, DateTime<Utc>) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |rt, now| {
                let out = work(rt, now);
                Box::new(move |committed: Result<(), String>| {
                    drop(tx.send(committed.map(|()| out)));
                })
            }))
            .map_err(|_| CallError::Stopped)?;
        rx.await
            .map_err(|_| CallError::Stopped)?
            .map_err(CallError::NotCommitted)
    }

    /// [`RuntimeHandle::call`] for store work of the background workers, which retry a
    /// store failure on a later round: a failed commit is the work's own store error, so
    /// `Stopped` means only that the runner has stopped.
    pub async fn call_store<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        work: impl FnOnce(&mut Runtime<SqliteStore>, DateTime<Utc>) -> Result<T, E> + Send + 'static,
    ) -> Result<Result<T, E>, Stopped> {
        match self.call(work).await {
            Ok(out) => Ok(out),
            Err(CallError::Stopped) => Err(Stopped),
            Err(CallError::NotCommitted(why)) => Ok(Err(StoreError::GroupLost(why).into())),
        }
    }

    /// The runner's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// How one-click unsubscribe links are signed, when they are.
    pub fn unsubscribe(&self) -> Option<&UnsubscribeLinks> {
        self.unsubscribe.as_deref()
    }

    /// The same handle, the API serving the open pixel and click redirects signed with
    /// `tracking` (`/t/o/{token}`, `/t/c/{token}`); None turns them off (they answer 404).
    pub fn with_tracking(mut self, tracking: Option<TrackingLinks>) -> RuntimeHandle {
        self.tracking = tracking.map(Arc::new);
        self
    }

    /// How open and click tracking URLs are signed, when they are served.
    pub fn tracking(&self) -> Option<&TrackingLinks> {
        self.tracking.as_deref()
    }
}

/// Opens the store and the outbox and starts the runner thread. It runs until every
/// handle is dropped.
pub fn start(
    db: &Path,
    outbox: &Path,
    clock: Arc<dyn Clock>,
) -> Result<(RuntimeHandle, JoinHandle<()>), StartError> {
    let store = SqliteStore::open(db)?;
    start_with(store, outbox, clock)
}

/// Starts the runner thread on an opened store.
pub fn start_with(
    store: SqliteStore,
    outbox: &Path,
    clock: Arc<dyn Clock>,
) -> Result<(RuntimeHandle, JoinHandle<()>), StartError> {
    start_configured(store, outbox, clock, None)
}

/// Starts the runner thread on an opened store, email sends in the outbox carrying signed
/// one-click unsubscribe links when `unsubscribe` is given (the API then verifies them).
pub fn start_configured(
    store: SqliteStore,
    outbox: &Path,
    clock: Arc<dyn Clock>,
    unsubscribe: Option<UnsubscribeLinks>,
) -> Result<(RuntimeHandle, JoinHandle<()>), StartError> {
    let mut runtime = Runtime::new(store);
    let mut outbox =
        OutboxFile::open(outbox, runtime.store())?.with_unsubscribe(unsubscribe.clone());
    // Rows committed before a crash and not yet in the file go out first.
    outbox.deliver(runtime.store())?;
    let (tx, rx) = mpsc::channel::<Job>();
    let runner_clock = clock.clone();
    let thread = std::thread::Builder::new()
        .name("relance-runner".into())
        .spawn(move || run_loop(runtime, outbox, runner_clock, rx))
        .map_err(|e| {
            StartError::Store(StoreError::Corrupt {
                what: "runner thread",
                why: e.to_string(),
            })
        })?;
    Ok((
        RuntimeHandle {
            jobs: tx,
            clock,
            unsubscribe: unsubscribe.map(Arc::new),
            tracking: None,
        },
        thread,
    ))
}

fn run_loop(
    mut runtime: Runtime<SqliteStore>,
    mut outbox: OutboxFile,
    clock: Arc<dyn Clock>,
    jobs: mpsc::Receiver<Job>,
) {
    // Retention runs at start, then hourly: a purge is cheap and never urgent.
    let mut next_purge = std::time::Instant::now();
    let mut round: Vec<Job> = Vec::with_capacity(JOBS_PER_ROUND);
    loop {
        if std::time::Instant::now() >= next_purge {
            if let Err(e) = runtime.purge_history(clock.now()) {
                tracing::error!(error = %e, "retention purge failed; trying again in an hour");
            }
            next_purge = std::time::Instant::now() + PURGE_EVERY;
        }
        let mut pause = Duration::ZERO;
        let (ticked, committed) = runtime.grouped(GROUP_UNITS, |rt| {
            rt.tick_bounded(clock.now(), TIMERS_PER_ROUND)
        });
        if let Err(e) = ticked.and(committed) {
            tracing::error!(error = %e, "tick failed; retrying shortly");
            pause = Duration::from_secs(1);
        }
        if let Err(e) = outbox.deliver(runtime.store()) {
            tracing::error!(error = %e, "outbox delivery failed; retrying shortly");
            pause = Duration::from_secs(1);
        }
        let wait = match runtime.next_due() {
            Ok(Some(due)) => clock.real_span(due - clock.now()).min(MAX_SLEEP),
            _ => MAX_SLEEP,
        }
        .max(pause);
        match jobs.recv_timeout(wait) {
            Ok(job) => round.push(job),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Every job already waiting joins the round: one commit answers them all.
        while round.len() < JOBS_PER_ROUND {
            match jobs.try_recv() {
                Ok(job) => round.push(job),
                Err(_) => break,
            }
        }
        let (replies, committed) = runtime.grouped(GROUP_UNITS, |rt| {
            round
                .drain(..)
                .map(|job| job(rt, clock.now()))
                .collect::<Vec<Reply>>()
        });
        let committed = committed.map_err(|e| e.to_string());
        for reply in replies {
            reply(committed.clone());
        }
        if let Err(e) = outbox.deliver(runtime.store()) {
            tracing::error!(error = %e, "outbox delivery failed");
        }
    }
}
