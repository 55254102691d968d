//! `relance run`: the runtime on a clock. One thread owns the SQLite store and does all the
//! work — due timers, launches and inactivity checks on time, then the jobs the HTTP API
//! hands it — so units of work never interleave.
//!
//! The runner works in rounds, each a group commit ([`Runtime::grouped`]): first what is due
//! (up to [`TIMERS_PER_ROUND`] timers), then every job waiting (up to [`JOBS_PER_ROUND`]), each unit of work a savepoint of
//! one transaction committed every [`GROUP_UNITS`] units and at the round's end. The commit
//! does not wait for the disk: the round goes to the syncer thread ([`crate::durable`]),
//! which fsyncs the WAL and only then answers the round's callers; the round's outbox rows
//! are delivered after that sync too. So nothing is acknowledged or sent before it is
//! durable, a busy runner pays one commit for many units instead of one each, and it works
//! on the next round while the disk syncs the last. Checkpoints (the WAL's pages copied into
//! the database file) run on a thread of their own too ([`crate::durable::Checkpointer`]), and
//! so does the writing of the outbox file ([`crate::outbox::OutboxWriter`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use relance_core::tracking::TrackingLinks;
use relance_core::unsubscribe::UnsubscribeLinks;

use crate::clock::Clock;
use crate::durable::{Answer, CommitSyncer, SyncFailed, SyncFn, WalFile};
use crate::outbox::{Delivery, OutboxError, OutboxFile};
use crate::runtime::{Runtime, StepReader};
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

/// The shortest time between two checkpoints of the checkpoint thread: a page many commits
/// change is copied into the database file once per checkpoint at most.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// How long a round waits for another job while the last round's sync is still running (it
/// looks again at the sync after each wait).
const LINGER: Duration = Duration::from_micros(200);

/// The most timers one round fires before it takes the waiting jobs (the rest fire in the
/// next rounds): a herd of due timers holds a request back a fraction of a second, not for
/// as long as the whole herd takes.
pub const TIMERS_PER_ROUND: usize = 4096;

/// Work for the runner thread: runs, then returns how to answer its caller once the round's
/// commit and sync are known.
type Job = Box<dyn FnOnce(&mut Runtime<SqliteStore>, DateTime<Utc>) -> Answer + Send>;

/// What wakes the runner.
enum Wake {
    /// Work from a handle.
    Job(Job),
    /// The syncer finished a sync: rows may be ready to deliver.
    Synced,
    /// The last handle was dropped.
    Stop,
}

/// The handles' side of the runner's channel: when the last handle goes, it tells the runner
/// to stop (the syncer holds a sender too, so the channel itself stays open).
#[derive(Debug)]
struct Jobs(mpsc::Sender<Wake>);

impl Drop for Jobs {
    fn drop(&mut self) {
        let _ = self.0.send(Wake::Stop);
    }
}

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
    /// What an earlier run committed could not be synced to disk.
    #[error(transparent)]
    Sync(#[from] SyncFailed),
}

/// The runner stopped (its thread ended): what the background workers stop on.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the runtime has stopped")]
pub struct Stopped;

/// A handle on the runner: hands it jobs and waits for their results.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    jobs: Arc<Jobs>,
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
            .0
            .send(Wake::Job(Box::new(move |rt, now| {
                let out = work(rt, now);
                Box::new(move |committed: Result<(), String>| {
                    drop(tx.send(committed.map(|()| out)));
                })
            })))
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
    start_syncing(store, outbox, clock, unsubscribe, None)
}

/// [`start_configured`] with `sync` run by the syncer in place of the fsync of the WAL: the
/// tests hold it, or make it fail, to see what the runner tells before a sync.
#[doc(hidden)]
pub fn start_with_sync(
    store: SqliteStore,
    outbox: &Path,
    clock: Arc<dyn Clock>,
    sync: SyncFn,
) -> Result<(RuntimeHandle, JoinHandle<()>), StartError> {
    start_syncing(store, outbox, clock, None, Some(sync))
}

fn start_syncing(
    store: SqliteStore,
    outbox: &Path,
    clock: Arc<dyn Clock>,
    unsubscribe: Option<UnsubscribeLinks>,
    sync: Option<SyncFn>,
) -> Result<(RuntimeHandle, JoinHandle<()>), StartError> {
    let mut runtime = Runtime::new(store);
    // Due timers' steps read and computed on a thread of their own while the runner writes.
    read_steps_ahead(&mut runtime);
    // From here on, commits are synced by the syncer thread (see `durable`).
    let wal = runtime.store().defer_sync()?;
    // And checkpointed on a thread of its own, poked after each sync (see `durable`).
    let checkpointer = runtime.store().checkpoint_elsewhere(CHECKPOINT_EVERY)?;
    let mut sync = sync.or_else(|| wal.map(WalFile::into_sync));
    // What an earlier run committed may not be on disk yet (it stopped before its sync):
    // synced before anything of it is delivered.
    if let Some(sync) = sync.as_mut() {
        sync().map_err(|e| StartError::Sync(SyncFailed(e.to_string())))?;
    }
    let mut outbox =
        OutboxFile::open(outbox, runtime.store())?.with_unsubscribe(unsubscribe.clone());
    // Rows committed before a crash and not yet in the file go out first.
    outbox.deliver(runtime.store())?;
    // From here on the file is written on a thread of its own (see `outbox::writer`).
    let outbox = Delivery::start(outbox, runtime.store());
    let synced_mark = runtime.store().outbox_last_seq()?;
    let thread_error = |e: std::io::Error| {
        StartError::Store(StoreError::Corrupt {
            what: "runner thread",
            why: e.to_string(),
        })
    };
    let (tx, rx) = mpsc::channel::<Wake>();
    let notify = tx.clone();
    // The syncer's thread owns the checkpointer: it stops with it.
    let syncer = CommitSyncer::start(sync, synced_mark, move || {
        let _ = notify.send(Wake::Synced);
        if let Some(checkpointer) = &checkpointer {
            checkpointer.poke();
        }
    })
    .map_err(thread_error)?;
    let runner_clock = clock.clone();
    let thread = std::thread::Builder::new()
        .name("relance-runner".into())
        .spawn(move || run_loop(runtime, outbox, runner_clock, rx, syncer))
        .map_err(thread_error)?;
    Ok((
        RuntimeHandle {
            jobs: Arc::new(Jobs(tx)),
            clock,
            unsubscribe: unsubscribe.map(Arc::new),
            tracking: None,
        },
        thread,
    ))
}

/// Gives `runtime` a [`StepReader`] on a reading connection to its database file: the steps
/// of a batch of due timers are read and computed on the reader's thread while the runner
/// writes (see `relance_runtime`'s `ahead` module for why they still hold when written).
/// Nothing for an in-memory database; a reader that cannot start is logged and left out (the
/// runner then computes every step itself, as it always can).
pub fn read_steps_ahead(runtime: &mut Runtime<SqliteStore>) {
    let Some(path) = runtime.store().file_path() else {
        return;
    };
    match SqliteStore::open_reader(&path)
        .map_err(|e| e.to_string())
        .and_then(|store| StepReader::start(store).map_err(|e| e.to_string()))
    {
        Ok(reader) => runtime.read_steps_ahead(reader),
        Err(e) => tracing::warn!(error = %e, "due timers' steps are not read ahead"),
    }
}

fn run_loop(
    mut runtime: Runtime<SqliteStore>,
    mut outbox: Delivery,
    clock: Arc<dyn Clock>,
    jobs: mpsc::Receiver<Wake>,
    mut syncer: CommitSyncer,
) {
    if let Err(e) = run_rounds(&mut runtime, &mut outbox, &clock, &jobs, &mut syncer) {
        // Nothing more may be acknowledged: the handles see the runner stopped.
        tracing::error!(error = %e, "the runner stops");
        return;
    }
    // Every handle is gone: what was handed to the syncer is synced and answered, and its
    // sends delivered.
    if let Err(e) = deliver_synced(&mut runtime, &mut outbox, &mut syncer, Until::AllInFile) {
        tracing::error!(error = %e, "the runner stops");
    }
}

/// The runner's rounds, until every handle is dropped (`Ok`) or the disk fails (`Err`).
fn run_rounds(
    runtime: &mut Runtime<SqliteStore>,
    outbox: &mut Delivery,
    clock: &Arc<dyn Clock>,
    jobs: &mpsc::Receiver<Wake>,
    syncer: &mut CommitSyncer,
) -> Result<(), SyncFailed> {
    // Retention runs at start, then hourly: a purge is cheap and never urgent.
    let mut next_purge = std::time::Instant::now();
    let mut round: Vec<Job> = Vec::with_capacity(JOBS_PER_ROUND);
    let mut stopping = false;
    loop {
        if std::time::Instant::now() >= next_purge {
            if let Err(e) = runtime.purge_history(clock.now()) {
                tracing::error!(error = %e, "retention purge failed; trying again in an hour");
            }
            next_purge = std::time::Instant::now() + PURGE_EVERY;
        }
        let mut pause = Duration::ZERO;
        let written = runtime.store().changes_so_far();
        let (ticked, committed) = runtime.grouped(GROUP_UNITS, |rt| {
            rt.tick_bounded(clock.now(), TIMERS_PER_ROUND)
        });
        if let Err(e) = ticked.and(committed) {
            tracing::error!(error = %e, "tick failed; retrying shortly");
            pause = Duration::from_secs(1);
        }
        if runtime.store().changes_so_far() != written {
            syncer.submit(outbox_mark(runtime), Vec::new())?;
        }
        deliver_synced(runtime, outbox, syncer, Until::HandedOver)?;
        let wait = match runtime.next_due() {
            Ok(Some(due)) => clock.real_span(due - clock.now()).min(MAX_SLEEP),
            _ => MAX_SLEEP,
        }
        .max(pause);
        // While a sync is in flight the runner takes the next jobs as they come: their work
        // runs during the sync.
        match jobs.recv_timeout(wait) {
            Ok(Wake::Job(job)) => round.push(job),
            Ok(Wake::Synced) | Err(RecvTimeoutError::Timeout) => continue,
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Every job already waiting joins the round: one commit answers them all.
        stopping |= take_waiting(jobs, &mut round, JOBS_PER_ROUND);
        let written = runtime.store().changes_so_far();
        let (replies, committed) = runtime.grouped(GROUP_UNITS, |rt| {
            let mut replies: Vec<Answer> = Vec::with_capacity(round.len());
            loop {
                replies.extend(round.drain(..).map(|job| job(rt, clock.now())));
                // While the disk still syncs the last round, this one could not be answered
                // before the next sync anyway: it takes the jobs that come meanwhile, so a
                // slower disk makes larger rounds (fewer commits, fewer pages written).
                let syncing = syncer.synced().is_ok() && syncer.in_flight();
                if stopping || !syncing || replies.len() >= JOBS_PER_ROUND {
                    return replies;
                }
                match jobs.recv_timeout(LINGER) {
                    Ok(Wake::Job(job)) => round.push(job),
                    Ok(Wake::Synced) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                }
                stopping |= take_waiting(jobs, &mut round, JOBS_PER_ROUND - replies.len());
            }
        });
        let committed = committed.map_err(|e| e.to_string());
        if runtime.store().changes_so_far() == written && !syncer.in_flight() {
            // Nothing written, and everything committed before is on disk: nothing to wait for
            // but the delivery of what is synced, so that an answer still comes after the
            // sends of every round answered before it are in the outbox file.
            deliver_synced(runtime, outbox, syncer, Until::SyncedInFile)?;
            for reply in replies {
                reply(committed.clone());
            }
            if stopping {
                return Ok(());
            }
            continue;
        }
        // Answered once the round is on disk (a round that wrote nothing waits too: it may
        // have read what an earlier round wrote, not yet synced).
        let answers = replies
            .into_iter()
            .map(|reply| {
                let committed = committed.clone();
                Box::new(move |synced: Result<(), String>| reply(committed.and(synced))) as Answer
            })
            .collect();
        syncer.submit(outbox_mark(runtime), answers)?;
        deliver_synced(runtime, outbox, syncer, Until::HandedOver)?;
        if stopping {
            return Ok(());
        }
    }
}

/// Moves the jobs already waiting into `round`, until it holds `limit`; whether the last
/// handle's `Stop` came meanwhile.
fn take_waiting(jobs: &mpsc::Receiver<Wake>, round: &mut Vec<Job>, limit: usize) -> bool {
    while round.len() < limit {
        match jobs.try_recv() {
            Ok(Wake::Job(job)) => round.push(job),
            Ok(Wake::Synced) => {}
            Ok(Wake::Stop) => return true,
            Err(_) => break,
        }
    }
    false
}

/// The highest outbox row committed: a round's sends are delivered once the sync after it is
/// done. On a failed read, 0 (its rows go out after a later round's sync).
fn outbox_mark(runtime: &mut Runtime<SqliteStore>) -> i64 {
    runtime.store().outbox_last_seq().unwrap_or(0)
}

/// How far [`deliver_synced`] goes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The rows the syncer reported so far are handed to the outbox writer.
    HandedOver,
    /// The rows the syncer reported so far are in the file.
    SyncedInFile,
    /// Everything handed to the syncer is synced, and its rows are in the file.
    AllInFile,
}

/// Delivers the outbox rows that are on disk: those the syncer reported so far, or
/// ([`Until::AllInFile`]) all those handed to it, once it is done.
fn deliver_synced(
    runtime: &mut Runtime<SqliteStore>,
    outbox: &mut Delivery,
    syncer: &mut CommitSyncer,
    until: Until,
) -> Result<(), SyncFailed> {
    let synced = if until == Until::AllInFile {
        syncer.wait()?
    } else {
        syncer.synced()?
    };
    outbox.deliver(runtime.store(), synced, until != Until::HandedOver);
    Ok(())
}
