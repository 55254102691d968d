//! Making the runner's commits durable on a thread of its own: a round commits without
//! waiting for the disk, its callers are answered and its sends delivered once the WAL is
//! synced, and meanwhile the runner works on the next round.
//!
//! Why this keeps `synchronous = FULL`'s guarantee: in WAL mode a commit is a set of frames
//! appended to the `-wal` file; FULL makes SQLite fsync that file before `COMMIT` returns.
//! Here the store commits with `synchronous = NORMAL` (no fsync), and [`CommitSyncer`] fsyncs
//! the same file afterwards, on its thread. A commit's frames are in the file before its
//! round is handed over, so that fsync makes them durable (with the WAL header, when SQLite
//! restarted the log). Until then nothing of the round is visible outside the runner: its
//! callers are answered, and its outbox rows delivered ([`CommitSyncer::synced`]), only
//! after the sync; a later round that read its writes is answered after a later sync, which
//! covers them too. A power loss before the sync loses only what nobody was told. (Another
//! process reading the database file may see a commit up to one sync early.) A sync that
//! fails stops the runner: after a failed fsync the kernel may have dropped the pages, so
//! nothing more may be acknowledged on top of them.
//!
//! [`Checkpointer`] takes the other disk work off the runner: copying the WAL's pages into
//! the database file (a checkpoint), on a connection and a thread of its own.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Answers a caller once its round is synced (or not).
pub type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Makes every commit so far durable (fsyncs the WAL).
pub type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// The store's WAL file, to fsync: opened when first synced (SQLite creates it with the first
/// write).
#[derive(Debug)]
pub struct WalFile {
    path: PathBuf,
    file: Option<File>,
}

impl WalFile {
    /// The WAL of the database at `db` (`<db>-wal`).
    pub fn of(db: &std::path::Path) -> WalFile {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalFile {
            path: PathBuf::from(path),
            file: None,
        }
    }

    /// Flushes every frame written to the WAL so far to the disk.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let file = match &self.file {
            Some(file) => file,
            None => match File::open(&self.path) {
                Ok(file) => self.file.insert(file),
                // No WAL yet: nothing was written, nothing to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        file.sync_data()
    }

    /// The sync for [`CommitSyncer::start`].
    pub fn into_sync(mut self) -> SyncFn {
        Box::new(move || self.sync())
    }
}

/// What a round handed over after the syncer stopped is answered.
const STOPPED: &str = "the syncer has stopped";
/// What a round handed over after a failed sync is answered.
const NOT_SYNCED: &str = "the store's write-ahead log could not be synced";

/// A round handed to the syncer: the highest outbox row it committed, and whom to answer.
struct Round {
    outbox_mark: i64,
    answers: Vec<Answer>,
}

/// The syncer thread and what it reported: rounds are synced in the order handed over;
/// several waiting rounds share one fsync.
pub struct CommitSyncer {
    rounds: Option<mpsc::Sender<Round>>,
    synced: mpsc::Receiver<Result<(i64, usize), String>>,
    thread: Option<JoinHandle<()>>,
    /// Rounds handed over and not yet reported synced.
    in_flight: usize,
    /// The highest outbox row known to be on disk.
    synced_mark: i64,
}

/// The disk could not sync the store: the runner must stop.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the store's write-ahead log could not be synced to disk: {0}")]
pub struct SyncFailed(pub String);

impl CommitSyncer {
    /// Starts the syncer thread running `sync` (the WAL's, [`WalFile::into_sync`]; tests hand
    /// in one they control; `None`: an in-memory store, nothing to sync, the rounds still
    /// answered in order, by the thread). `synced_mark` is the highest outbox row already on
    /// disk; `notify` is called after each sync (the runner wakes to deliver).
    pub fn start(
        mut sync: Option<SyncFn>,
        synced_mark: i64,
        notify: impl Fn() + Send + 'static,
    ) -> std::io::Result<CommitSyncer> {
        let (rounds_tx, rounds_rx) = mpsc::channel::<Round>();
        let (synced_tx, synced_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relance-sync".into())
            .spawn(move || {
                while let Ok(first) = rounds_rx.recv() {
                    // Every round waiting shares this fsync.
                    let mut batch = vec![first];
                    batch.extend(rounds_rx.try_iter());
                    let rounds = batch.len();
                    let outcome = match sync.as_mut().map_or(Ok(()), |sync| sync()) {
                        Ok(()) => Ok((
                            batch.iter().map(|r| r.outbox_mark).max().unwrap_or(0),
                            rounds,
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    let answered = outcome.clone().map(|_| ());
                    for round in batch {
                        for answer in round.answers {
                            answer(answered.clone());
                        }
                    }
                    let failed = outcome.is_err();
                    if synced_tx.send(outcome).is_err() || failed {
                        break;
                    }
                    notify();
                }
                // After a failure, whatever is handed over until the runner lets go of the
                // syncer is answered as not kept and reported failed (a `wait` never hangs on
                // it). Draining only what was already queued left a round handed over just
                // before the thread ended unanswered: dropped with the channel. Once the
                // runner is gone (its end of the channel dropped), this ends at once.
                while let Ok(round) = rounds_rx.recv() {
                    for answer in round.answers {
                        answer(Err(NOT_SYNCED.into()));
                    }
                    let _ = synced_tx.send(Err(NOT_SYNCED.into()));
                }
            })?;
        Ok(CommitSyncer {
            rounds: Some(rounds_tx),
            synced: synced_rx,
            thread: Some(thread),
            in_flight: 0,
            synced_mark,
        })
    }

    /// Hands over a committed round: `outbox_mark` is the highest outbox row committed so
    /// far, `answers` are called after the sync with its outcome.
    pub fn submit(&mut self, outbox_mark: i64, answers: Vec<Answer>) -> Result<(), SyncFailed> {
        let round = Round {
            outbox_mark,
            answers,
        };
        match self.rounds.as_ref().map(|tx| tx.send(round)) {
            Some(Ok(())) => {
                self.in_flight += 1;
                Ok(())
            }
            Some(Err(mpsc::SendError(round))) => {
                for answer in round.answers {
                    answer(Err(STOPPED.into()));
                }
                Err(SyncFailed(STOPPED.into()))
            }
            None => Err(SyncFailed(STOPPED.into())),
        }
    }

    /// Whether rounds are handed over and not yet reported synced.
    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// The highest outbox row known to be on disk, from what the thread reported so far
    /// (without waiting).
    pub fn synced(&mut self) -> Result<i64, SyncFailed> {
        while let Ok(report) = self.synced.try_recv() {
            self.take(report)?;
        }
        Ok(self.synced_mark)
    }

    /// Waits until every round handed over is synced; the highest outbox row on disk.
    pub fn wait(&mut self) -> Result<i64, SyncFailed> {
        while self.in_flight > 0 {
            match self.synced.recv() {
                Ok(report) => self.take(report)?,
                Err(_) => return Err(SyncFailed(STOPPED.into())),
            }
        }
        Ok(self.synced_mark)
    }

    /// One report covers the rounds its fsync took.
    fn take(&mut self, report: Result<(i64, usize), String>) -> Result<(), SyncFailed> {
        let (mark, rounds) = report.map_err(SyncFailed)?;
        self.synced_mark = self.synced_mark.max(mark);
        self.in_flight = self.in_flight.saturating_sub(rounds);
        Ok(())
    }
}

impl std::fmt::Debug for CommitSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitSyncer")
            .field("in_flight", &self.in_flight)
            .field("synced_mark", &self.synced_mark)
            .finish_non_exhaustive()
    }
}

impl Drop for CommitSyncer {
    fn drop(&mut self) {
        // The thread syncs and answers what was handed over, then ends.
        self.rounds = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checkpoints the database on its own thread and connection, at most once per interval
/// after the runner pokes it (it pokes after each commit that wrote).
///
/// Why: with SQLite's automatic checkpoint, the commit that crosses the threshold copies
/// the WAL's pages into the database file and syncs it before returning, on the runner's
/// thread: about a twentieth of its time under load, with the other core mostly idle. A
/// `PASSIVE` checkpoint from another connection copies what is committed without taking the
/// write lock, while the runner goes on writing. It changes nothing of what is durable: a
/// checkpoint syncs the WAL before it writes a page into the database file, and a commit is
/// durable by the WAL alone (see the module's head).
///
/// The runner keeps SQLite's automatic checkpoint as a guard, at a higher threshold: the log
/// restarts from its beginning only when a write transaction begins with every frame
/// checkpointed (and no reader on an older snapshot), which a checkpoint running beside steady
/// writes may not leave; past the threshold the runner checkpoints what is left after each
/// commit, as before, until the log restarts (see `WAL_CHECKPOINT_GUARD_PAGES` in the store).
pub struct Checkpointer {
    pokes: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    done: Arc<AtomicUsize>,
}

impl Checkpointer {
    /// Opens a connection to the database at `db` (already in WAL mode) and starts the
    /// thread; `every` is the shortest time between two checkpoints.
    pub fn start(db: &Path, every: Duration) -> std::io::Result<Checkpointer> {
        let conn = rusqlite::Connection::open(db).map_err(std::io::Error::other)?;
        let (pokes, poked) = mpsc::sync_channel::<()>(1);
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let thread = std::thread::Builder::new()
            .name("relance-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &poked, every, &counted))?;
        Ok(Checkpointer {
            pokes: Some(pokes),
            thread: Some(thread),
            done,
        })
    }

    /// There are commits to checkpoint (never waits: a poke already waiting covers them).
    pub fn poke(&self) {
        if let Some(pokes) = &self.pokes {
            let _ = pokes.try_send(());
        }
    }

    /// Checkpoints run so far that were not held back by a lock (for tests and benches).
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }
}

fn checkpoint_loop(
    conn: &rusqlite::Connection,
    poked: &mpsc::Receiver<()>,
    every: Duration,
    done: &AtomicUsize,
) {
    let mut last: Option<Instant> = None;
    let mut failing: Option<String> = None;
    while poked.recv().is_ok() {
        // At most one checkpoint per interval: the pokes meanwhile are taken with it.
        if let Some(next) = last.map(|l| l + every) {
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match poked.recv_timeout(next - now) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The runner is gone: closing its connection checkpoints what is left.
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        }
        // (busy, frames in the log, frames checkpointed): a busy or partial checkpoint is
        // normal beside a writer; the next one goes on from there. Only a checkpoint that
        // was not busy counts, and an error is logged when it first appears, not on every try.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(busy) => {
                if busy == 0 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failing = None;
            }
            Err(e) => {
                let why = e.to_string();
                if failing.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, "checkpoint failed; the runner's own checkpoint bounds the log");
                    failing = Some(why);
                }
            }
        }
        last = Some(Instant::now());
    }
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("done", &self.done())
            .finish_non_exhaustive()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.pokes = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sync the test releases one at a time (`Ok` or an error), counting the calls.
    fn gated() -> (SyncFn, mpsc::Sender<std::io::Result<()>>, Arc<Mutex<usize>>) {
        let (tx, rx) = mpsc::channel::<std::io::Result<()>>();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let sync = Box::new(move || {
            *counted.lock().expect("lock") += 1;
            rx.recv().unwrap_or(Ok(()))
        }) as SyncFn;
        (sync, tx, calls)
    }

    /// The answers given, in order: (caller, outcome).
    type Log = Arc<Mutex<Vec<(u32, Result<(), String>)>>>;

    fn recorder(log: &Log, id: u32) -> Answer {
        let log = log.clone();
        Box::new(move |outcome| log.lock().expect("lock").push((id, outcome)))
    }

    #[test]
    fn callers_are_answered_only_after_the_sync_and_in_order() {
        let (sync, release, calls) = gated();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut syncer = CommitSyncer::start(Some(sync), 7, || {}).expect("thread");
        syncer
            .submit(10, vec![recorder(&log, 1), recorder(&log, 2)])
            .expect("submit");
        // The thread is inside the sync: nobody is answered, nothing new is on disk.
        while *calls.lock().expect("lock") == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            log.lock().expect("lock").is_empty(),
            "answered before the sync"
        );
        assert_eq!(
            syncer.synced().ok(),
            Some(7),
            "no row counts as on disk yet"
        );
        assert!(syncer.in_flight());
        // A round handed over during the sync waits for a sync of its own.
        syncer.submit(12, vec![recorder(&log, 3)]).expect("submit");
        release.send(Ok(())).expect("release");
        release.send(Ok(())).expect("release");
        assert_eq!(syncer.wait().ok(), Some(12));
        assert!(!syncer.in_flight());
        let answered = log.lock().expect("lock").clone();
        assert_eq!(answered, vec![(1, Ok(())), (2, Ok(())), (3, Ok(()))]);
        assert_eq!(*calls.lock().expect("lock"), 2);
    }

    #[test]
    fn a_failed_sync_answers_not_kept_and_stops_the_syncer() {
        let (sync, release, _calls) = gated();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut syncer = CommitSyncer::start(Some(sync), 0, || {}).expect("thread");
        syncer.submit(5, vec![recorder(&log, 1)]).expect("submit");
        release
            .send(Err(std::io::Error::other("disk gone")))
            .expect("release");
        let failed = syncer.wait();
        assert!(
            failed.as_ref().is_err_and(|e| e.0.contains("disk gone")),
            "{failed:?}"
        );
        let answered = log.lock().expect("lock").clone();
        assert_eq!(answered.len(), 1);
        assert!(
            answered[0]
                .1
                .as_ref()
                .is_err_and(|e| e.contains("disk gone"))
        );
        // Later rounds are refused and answered as not kept, never as kept.
        let refused = syncer.submit(6, vec![recorder(&log, 2)]);
        assert!(refused.is_err() || syncer.wait().is_err());
        drop(syncer);
        let answered = log.lock().expect("lock").clone();
        assert!(
            answered.iter().all(|(_, outcome)| outcome.is_err()),
            "{answered:?}"
        );
        assert_eq!(answered.len(), 2);
    }

    #[test]
    fn dropping_the_syncer_syncs_and_answers_what_was_handed_over() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let notified = Arc::new(Mutex::new(0));
        let counter = notified.clone();
        let mut syncer = CommitSyncer::start(None, 0, move || {
            *counter.lock().expect("lock") += 1;
        })
        .expect("thread");
        for id in 0..5 {
            syncer
                .submit(i64::from(id), vec![recorder(&log, id)])
                .expect("submit");
        }
        drop(syncer);
        assert_eq!(log.lock().expect("lock").len(), 5);
        assert!(*notified.lock().expect("lock") >= 1);
    }

    #[test]
    fn the_wal_file_of_a_database_syncs_and_a_missing_one_is_nothing_to_sync() {
        let dir = std::env::temp_dir().join(format!("relance-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("relance.db");
        let mut wal = WalFile::of(&db);
        assert!(wal.sync().is_ok(), "no WAL yet");
        std::fs::write(dir.join("relance.db-wal"), b"frames").expect("write");
        assert!(wal.sync().is_ok());
        assert!(wal.file.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_checkpointer_copies_committed_pages_into_the_database_file_beside_a_writer() {
        let dir = std::env::temp_dir().join(format!("relance-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("relance.db");
        let writer = rusqlite::Connection::open(&db).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (x BLOB);",
            )
            .expect("schema");
        let db_size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        let before = db_size();
        // About 400 pages of rows, committed to the WAL only (no checkpoint of the writer's).
        for _ in 0..100 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(16000))", [])
                .expect("insert");
        }
        assert_eq!(db_size(), before, "nothing copied yet");
        let checkpointer = Checkpointer::start(&db, Duration::from_millis(10)).expect("start");
        checkpointer.poke();
        let deadline = Instant::now() + Duration::from_secs(10);
        while checkpointer.done() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(checkpointer.done() >= 1, "a poke runs a checkpoint");
        assert!(
            db_size() > before + 1_000_000,
            "the pages are in the database file"
        );
        // The writer goes on; later pokes within the interval share one checkpoint.
        writer
            .execute("INSERT INTO t VALUES (zeroblob(16000))", [])
            .expect("insert");
        for _ in 0..50 {
            checkpointer.poke();
        }
        drop(checkpointer); // stops and joins the thread
        let count: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 101);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
