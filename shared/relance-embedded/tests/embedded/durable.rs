//! The runner's syncer on a file database, as `relance run` has it: a call is answered, and its
//! sends written to the outbox file, only after its round's sync; a failed sync acknowledges
//! nothing of its round and stops the runner.

use crate::common::{TempDir, contact_detail, t0};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relance_core::ports::{SourceFormat, Status};
use relance_core::wire::LaunchDetail;
use relance_embedded::clock::ManualClock;
use relance_embedded::durable::SyncFn;
use relance_embedded::server::{CallError, RuntimeHandle};
use relance_embedded::store::SqliteStore;
use serde_json::json;

const SCENARIO: &str = "id: hello\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  hi: {channel: email, subject: Hi, text: Hi}\nsteps:\n  - {id: hi, send: hi, next: done}\n  - {id: done, end: success}\n";

/// A runner on a database file whose syncs the test releases one at a time (`Ok` or an
/// error); once the bed is dropped every sync succeeds.
struct Bed {
    handle: RuntimeHandle,
    /// Not joined: the runner ends once the bed (its handle, then the gate) is dropped.
    _runner: JoinHandle<()>,
    rt: tokio::runtime::Runtime,
    release: mpsc::Sender<std::io::Result<()>>,
    /// Syncs started so far (the first is the one at start).
    calls: Arc<Mutex<usize>>,
    outbox: PathBuf,
    _dir: TempDir,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let dir = TempDir::fresh("durable", name);
        let outbox = dir.join("outbox.jsonl");
        let store = SqliteStore::open(&dir.join("relance.db")).unwrap_or_else(|e| panic!("{e}"));
        let (release, gate) = mpsc::channel::<std::io::Result<()>>();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let sync = Box::new(move || {
            if let Ok(mut n) = counted.lock() {
                *n += 1;
            }
            gate.recv().unwrap_or(Ok(()))
        }) as SyncFn;
        // The sync at start, of what an earlier run may have left.
        release.send(Ok(())).unwrap_or_else(|e| panic!("{e}"));
        let clock = Arc::new(ManualClock::new(t0()));
        let (handle, runner) =
            relance_embedded::server::start_with_sync(store, &outbox, clock, sync)
                .unwrap_or_else(|e| panic!("{e}"));
        Bed {
            handle,
            _runner: runner,
            rt: tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}")),
            release,
            calls,
            outbox,
            _dir: dir,
        }
    }

    /// Lets the sync in progress (or the next) end with `outcome`.
    fn release(&self, outcome: std::io::Result<()>) {
        self.release.send(outcome).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the syncer is inside its n-th sync.
    fn syncing(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.calls.lock().map_or(0, |c| *c) < n {
            assert!(
                Instant::now() < deadline,
                "the syncer never started sync {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.outbox).map_or(0, |t| t.lines().count())
    }

    /// The scenario active and two contacts, in one call, in the background.
    fn set_up(&self) -> tokio::task::JoinHandle<Result<(), CallError>> {
        let handle = self.handle.clone();
        self.rt.spawn(async move {
            handle
                .call(|rt, now| {
                    rt.put_scenario(SCENARIO, SourceFormat::Yaml, now)?;
                    rt.set_status("hello", Status::Active, now)?;
                    for id in ["c1", "c2"] {
                        let email = format!("{id}@example.com");
                        rt.upsert_contact(contact_detail(json!({"id": id, "email": email})), now)?;
                    }
                    Ok::<(), relance_embedded::runtime::RuntimeError>(())
                })
                .await
                .map(|out| out.unwrap_or_else(|e| panic!("set up: {e}")))
        })
    }

    /// A launch of the scenario for `contact`, in the background: how many entered.
    fn launch(&self, contact: &str) -> tokio::task::JoinHandle<Result<u64, CallError>> {
        let handle = self.handle.clone();
        let contact = contact.to_string();
        self.rt.spawn(async move {
            handle
                .call(move |rt, now| {
                    let detail = LaunchDetail {
                        scenario: "hello".into(),
                        contacts: Some(vec![contact]),
                    };
                    rt.launch(detail, now).map(|r| r.entered)
                })
                .await
                .map(|out| out.unwrap_or_else(|e| panic!("launch: {e}")))
        })
    }

    fn wait<T>(&self, task: tokio::task::JoinHandle<T>) -> T {
        self.rt.block_on(task).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[test]
fn a_call_is_answered_and_its_sends_delivered_only_after_its_sync() {
    let bed = Bed::start("answered-after-sync");
    // SQLite no longer syncs by itself: the syncer does.
    let synchronous = bed
        .rt
        .block_on(bed.handle.call(|rt, _| rt.store().synchronous()))
        .ok()
        .and_then(Result::ok);
    assert_eq!(
        synchronous,
        Some(1),
        "synchronous = NORMAL under the runner"
    );

    let set = bed.set_up();
    bed.syncing(2);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!set.is_finished(), "answered before its round was synced");
    bed.release(Ok(()));
    let set = bed.wait(set);
    assert!(set.is_ok(), "{set:?}");

    let launched = bed.launch("c1");
    bed.syncing(3);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !launched.is_finished(),
        "answered before its round was synced"
    );
    assert_eq!(
        bed.lines(),
        0,
        "a send in the file before its round was synced"
    );
    bed.release(Ok(()));
    assert_eq!(bed.wait(launched).ok(), Some(1));
    // Delivered after the sync (the runner hands the synced rows to the outbox thread).
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.lines() < 1 {
        assert!(
            Instant::now() < deadline,
            "the synced send never reached the file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(bed.lines(), 1);
}

#[test]
fn a_failed_sync_acknowledges_nothing_of_its_round_and_stops_the_runner() {
    let bed = Bed::start("failed-sync");
    bed.release(Ok(()));
    let set = bed.set_up();
    assert!(bed.wait(set).is_ok());

    let launched = bed.launch("c1");
    bed.syncing(3);
    bed.release(Err(std::io::Error::other("the disk is gone")));
    let launched = bed.wait(launched);
    assert!(
        matches!(&launched, Err(CallError::NotCommitted(why)) if why.contains("the disk is gone")),
        "{launched:?}"
    );
    // The runner has stopped: later calls are refused, nothing of the round is in the file.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bed.wait(bed.launch("c2")) {
            Err(CallError::Stopped) => break,
            other => assert!(
                Instant::now() < deadline,
                "the runner went on after a failed sync: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        bed.lines(),
        0,
        "a send of an unsynced round reached the file"
    );
}
