//! The outbox file written on a thread of its own: the runner hands over how far the WAL is
//! synced and goes on with the next round while this thread reads those rows on its own
//! connection, appends them and fsyncs the file.
//!
//! Nothing of the exactly-once argument of [`crate::outbox`] changes: rows are still
//! appended in `seq` order and only once synced (the runner hands over only the mark its
//! syncer reported), and the cursor still reaches the database only after the append it
//! covers is synced. What moves is who writes that cursor: this thread's connection only
//! reads (a second writer would wait for the runner's lock), so it publishes the cursor and
//! the runner records it in its next round ([`OutboxWriter::delivered`]). The cursor can
//! therefore lag the file by a round, which is the case the file already covers: on open, the
//! lines past the recorded cursor are read back and not appended again.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{OutboxFile, OutboxRows};
use crate::store::StoreError;

/// How long the thread waits before it tries a failed delivery again (unless handed more).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a read of the outbox waits for SQLite's lock (a WAL reader is held back only
/// while the log is being restarted or recovered).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the runner and the thread meet.
#[derive(Debug, Default)]
struct Progress {
    /// Deliver every row up to here (the runner's synced mark).
    target: i64,
    /// Every row up to here was delivered (appended, or found already in the file).
    reached: i64,
    /// The highest `seq` the file holds, synced: the cursor for the runner to record.
    delivered: i64,
    /// The last delivery failed (and none succeeded since): a waiter stops waiting, and does
    /// not wait for the retry, so a broken file never holds the runner.
    failing: bool,
    /// The runner is done: deliver up to the target, then end.
    stop: bool,
    /// The thread has ended (also after a panic): nobody waits for it any more.
    ended: bool,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic elsewhere cannot leave `Progress` half changed (each change is one field).
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivery of the outbox file on its own thread (see the module's text).
#[derive(Debug)]
pub struct OutboxWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OutboxWriter {
    /// Opens a reading connection to the database at `db` and starts the thread, which owns
    /// `file` from here on. When either fails, the file is handed back with the error.
    pub fn start(
        file: OutboxFile,
        db: &Path,
    ) -> Result<OutboxWriter, Box<(OutboxFile, io::Error)>> {
        let conn = match rusqlite::Connection::open(db).and_then(|conn| {
            conn.pragma_update(None, "query_only", true)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn)
        }) {
            Ok(conn) => conn,
            Err(e) => return Err(Box::new((file, io::Error::other(e)))),
        };
        let at = file.last_seq();
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress {
                target: at,
                reached: at,
                delivered: at,
                ..Progress::default()
            }),
            changed: Condvar::new(),
        });
        // The file goes to the thread once it runs, so a thread that cannot start leaves it here.
        let (hand, handed) = std::sync::mpsc::sync_channel::<OutboxFile>(1);
        let spawned = std::thread::Builder::new()
            .name("relance-outbox".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let _ended = Ended(&shared);
                    if let Ok(file) = handed.recv() {
                        write_loop(file, conn, &shared);
                    }
                }
            });
        match spawned {
            Ok(thread) => {
                // The thread waits for it: this send cannot fail while it runs.
                let _ = hand.send(file);
                Ok(OutboxWriter {
                    shared,
                    thread: Some(thread),
                })
            }
            Err(e) => Err(Box::new((file, e))),
        }
    }

    /// Hands over the rows up to `mark` (synced): returns at once.
    pub fn advance(&self, mark: i64) {
        let mut p = self.shared.lock();
        if mark > p.target {
            p.target = mark;
            self.shared.changed.notify_all();
        }
    }

    /// Waits until every row up to `mark` is in the file, or a delivery failed meanwhile (it
    /// is logged and tried again), or the thread ended. While deliveries are failing it does
    /// not wait at all: the runner goes on, the thread retries.
    pub fn wait(&self, mark: i64) {
        self.advance(mark);
        let mut p = self.shared.lock();
        // A success after a failure reaches the mark: `advance` made the target at least it.
        while p.reached < mark && !p.failing && !p.ended {
            p = self
                .shared
                .changed
                .wait(p)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether the thread has ended (it ends only when dropped, unless it panicked).
    pub fn ended(&self) -> bool {
        self.shared.lock().ended
    }

    /// The highest `seq` the file holds, synced: the cursor to record in the database.
    pub fn delivered(&self) -> i64 {
        self.shared.lock().delivered
    }
}

impl Drop for OutboxWriter {
    /// Delivers what was handed over, then ends the thread.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the thread ended when it returns or unwinds.
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.lock().ended = true;
        self.0.changed.notify_all();
    }
}

/// The thread's side: its own connection to read the rows, and the cursor published.
struct Reader<'a> {
    conn: rusqlite::Connection,
    shared: &'a Shared,
}

impl OutboxRows for Reader<'_> {
    fn between(
        &mut self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        crate::store::outbox_rows(&self.conn, after, upto, limit)
    }

    fn delivered(&mut self, seq: i64) -> Result<(), StoreError> {
        let mut p = self.shared.lock();
        p.delivered = p.delivered.max(seq);
        Ok(())
    }
}

fn write_loop(mut file: OutboxFile, conn: rusqlite::Connection, shared: &Shared) {
    let mut rows = Reader { conn, shared };
    let mut failing: Option<String> = None;
    loop {
        let target = {
            let mut p = shared.lock();
            loop {
                if p.target > p.reached {
                    break p.target;
                }
                if p.stop {
                    return;
                }
                p = shared
                    .changed
                    .wait(p)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        match file.deliver_upto(&mut rows, target) {
            Ok(_) => {
                if failing.take().is_some() {
                    tracing::info!("outbox delivery works again");
                }
                // The cursor was published as the file went (`Reader::delivered`).
                let mut p = shared.lock();
                p.failing = false;
                p.reached = p.reached.max(target);
                shared.changed.notify_all();
            }
            Err(e) => {
                // Logged when it first appears, not at every retry.
                let why = e.to_string();
                if failing.as_deref() != Some(why.as_str()) {
                    tracing::error!(error = %why, "outbox delivery failed; retrying");
                    failing = Some(why);
                }
                let mut p = shared.lock();
                p.failing = true;
                shared.changed.notify_all();
                if p.stop {
                    return;
                }
                // Tried again after a while, or sooner when handed more rows.
                let handed = p.target;
                let (p, _) = shared
                    .changed
                    .wait_timeout_while(p, RETRY_AFTER, |p| p.target == handed && !p.stop)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// A store on a fresh file, and a second connection to write rows as the runner would.
    fn setup(name: &str) -> (std::path::PathBuf, SqliteStore, rusqlite::Connection) {
        let dir = std::env::temp_dir().join(format!("relance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = SqliteStore::open(&dir.join("relance.db")).expect("open");
        let conn = rusqlite::Connection::open(dir.join("relance.db")).expect("second connection");
        (dir, store, conn)
    }

    fn add_row(conn: &rusqlite::Connection, key: &str) {
        let payload = serde_json::json!({"kind": "action", "idempotency_key": key}).to_string();
        conn.execute(
            "INSERT INTO outbox (idempotency_key, scenario_id, contact_id, kind, at, payload)
             VALUES (?1, 'drip', 'c', 'action', 0, ?2)",
            rusqlite::params![key, payload],
        )
        .expect("insert");
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The file holds the rows of these idempotency keys, each once, in this order.
    fn assert_each_row_once(path: &Path, keys: &[&str]) {
        let found: Vec<_> = lines(path)
            .iter()
            .map(|v| v["idempotency_key"].as_str().map(String::from))
            .collect();
        let expected: Vec<_> = keys.iter().map(|k| Some(k.to_string())).collect();
        assert_eq!(found, expected, "each row once, in order");
    }

    #[test]
    fn the_thread_appends_what_it_is_handed_and_the_runner_records_the_cursor() {
        let (dir, mut store, conn) = setup("outbox-writer");
        let path = dir.join("outbox.jsonl");
        let file = OutboxFile::open(&path, &mut store).expect("outbox");
        for k in ["a", "b", "c"] {
            add_row(&conn, k);
        }
        let writer = OutboxWriter::start(file, &dir.join("relance.db"))
            .unwrap_or_else(|failed| panic!("start: {}", failed.1));
        // Only what is handed over goes out: rows 1 and 2, not 3.
        writer.wait(2);
        let seqs: Vec<_> = lines(&path).iter().map(|v| v["seq"].as_i64()).collect();
        assert_eq!(seqs, [Some(1), Some(2)]);
        assert_eq!(writer.delivered(), 2);
        // The thread's connection only reads: the cursor is the runner's to record.
        assert_eq!(store.outbox_delivered().expect("cursor"), Some(0));
        store
            .set_outbox_delivered(writer.delivered())
            .expect("record");
        // Dropping the writer delivers what was handed over, no more.
        add_row(&conn, "d");
        writer.advance(3);
        drop(writer);
        assert_eq!(lines(&path).len(), 3);
        // Reopened with the cursor behind the file (recorded at 2, the file at 3): row 3 is
        // found in the file and not appended again; row 4 is.
        let mut file = OutboxFile::open(&path, &mut store).expect("reopen");
        assert_eq!(file.deliver(&mut store).expect("deliver"), 1);
        assert_each_row_once(&path, &["a", "b", "c", "d"]);
        assert_eq!(store.outbox_delivered().expect("cursor"), Some(4));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_append_after_a_crash_does_not_append_the_crash_lines_again() {
        let (dir, mut store, conn) = setup("outbox-crash-then-failing");
        let path = dir.join("outbox.jsonl");
        let mut file = OutboxFile::open(&path, &mut store).expect("outbox");
        for k in ["a", "b", "c"] {
            add_row(&conn, k);
        }
        assert_eq!(file.deliver(&mut store).expect("deliver"), 3);
        // A crash after the append, before the cursor moved: recorded at 1, the file at 3.
        store.set_outbox_delivered(1).expect("cursor");
        add_row(&conn, "d");
        let mut file = OutboxFile::open(&path, &mut store).expect("reopen");
        // The first append after it fails (a read-only handle: the disk refusing the write)...
        file.file = std::fs::File::open(&path).expect("read-only handle");
        assert!(file.deliver(&mut store).is_err());
        // ... and the retry still knows rows 2 and 3 are in the file.
        file.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("writable handle");
        assert_eq!(file.deliver(&mut store).expect("retry"), 1);
        assert_each_row_once(&path, &["a", "b", "c", "d"]);
        assert_eq!(store.outbox_delivered().expect("cursor"), Some(4));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_waiter_is_not_held_by_a_failing_delivery_and_the_retry_delivers() {
        let (dir, mut store, conn) = setup("outbox-writer-failing");
        let path = dir.join("outbox.jsonl");
        let file = OutboxFile::open(&path, &mut store).expect("outbox");
        add_row(&conn, "a");
        // The table goes away under the thread: every read fails.
        conn.execute_batch("ALTER TABLE outbox RENAME TO outbox_gone")
            .expect("rename");
        let writer = OutboxWriter::start(file, &dir.join("relance.db"))
            .unwrap_or_else(|failed| panic!("start: {}", failed.1));
        writer.wait(1);
        assert_eq!(writer.delivered(), 0);
        assert!(lines(&path).is_empty());
        // While it keeps failing, a waiter does not wait for the retry.
        let started = std::time::Instant::now();
        writer.wait(1);
        assert!(
            started.elapsed() < RETRY_AFTER / 2,
            "held {:?}",
            started.elapsed()
        );
        // Back in place: the retry (at most a second later) delivers it.
        conn.execute_batch("ALTER TABLE outbox_gone RENAME TO outbox")
            .expect("rename back");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.delivered() < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(writer.delivered(), 1);
        assert_eq!(lines(&path).len(), 1);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
