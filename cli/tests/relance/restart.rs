//! Restart safety of `relance run`: killing the process at any moment (SIGKILL) and starting
//! it again loses no send and repeats none. The outbox file is the delivery record: every
//! expected idempotency key must be in it exactly once, in strictly increasing `seq` order.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const SCENARIO_ID: &str = "restart";

/// Three sends one second apart; the texts carry non-ASCII characters so that a torn line
/// can end in the middle of a UTF-8 sequence.
const SCENARIO: &str = "id: restart
launch: {type: after_import, contacts: all}
audience: {all: true}
messages:
  ma: {channel: email, subject: \"Étape A\", text: \"première\"}
  mb: {channel: email, subject: \"Étape B\", text: \"deuxième\"}
  mc: {channel: email, subject: \"Étape C\", text: \"troisième\"}
steps:
  - {id: a, send: ma, next: b}
  - id: b
    delay: {after: PT1S}
    send: mb
    next: c
  - id: c
    delay: {after: PT1S}
    send: mc
    next: done
  - {id: done, end: success}
";

const STEPS: [&str; 3] = ["a", "b", "c"];

/// One test's files.
struct Setup {
    dir: PathBuf,
    db: PathBuf,
    outbox: PathBuf,
    scenario: PathBuf,
    contacts: PathBuf,
    n: usize,
    starts: usize,
}

impl Setup {
    fn new(name: &str, n: usize) -> Setup {
        let dir =
            std::env::temp_dir().join(format!("relance-restart-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let scenario = dir.join("s.yaml");
        std::fs::write(&scenario, SCENARIO).expect("write the scenario");
        let contacts = dir.join("c.jsonl");
        let lines: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"id\": \"{}\", \"email\": \"{}@example.org\", \"first_name\": \"Zoé\"}}\n",
                    contact(i),
                    contact(i)
                )
            })
            .collect();
        std::fs::write(&contacts, lines).expect("write the contacts");
        Setup {
            db: dir.join("relance.db"),
            outbox: dir.join("outbox.jsonl"),
            scenario,
            contacts,
            dir,
            n,
            starts: 0,
        }
    }

    /// Starts `relance run`, with the contacts file on the first start only.
    fn start(&mut self, with_contacts: bool) -> Running {
        self.starts += 1;
        let port = free_port();
        let log = self.dir.join(format!("stderr-{}.log", self.starts));
        let contacts = with_contacts.then_some(self.contacts.as_path());
        let files = common::RunFiles {
            db: &self.db,
            outbox: &self.outbox,
            scenario: &self.scenario,
            contacts,
            log: &log,
        };
        let (child, lines) = common::spawn_run(&files, port, "info");
        Running {
            child,
            lines,
            log,
            spawned: Instant::now(),
        }
    }

    /// Every expected idempotency key (format `scenario:contact:entry:step`).
    fn expected_keys(&self) -> BTreeSet<String> {
        (0..self.n)
            .flat_map(|i| {
                STEPS
                    .iter()
                    .map(move |s| format!("{SCENARIO_ID}:{}:1:{s}", contact(i)))
            })
            .collect()
    }

    /// `relance journal restart --db FILE --json`.
    fn journal(&self) -> serde_json::Value {
        common::journal(SCENARIO_ID, &self.db)
    }

    /// Checks the final outbox file and journal: exactly once, nothing malformed, `seq`
    /// strictly increasing, every enrollment ended in success.
    fn check_exactly_once(&self) {
        let text = std::fs::read(&self.outbox).expect("read the outbox");
        assert!(
            text.is_empty() || text.ends_with(b"\n"),
            "the outbox ends with a torn line"
        );
        let text = String::from_utf8(text).expect("the outbox is UTF-8");
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut last_seq = 0i64;
        let mut total = 0;
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("outbox line {}: malformed ({e}): {line}", i + 1));
            let seq = v["seq"]
                .as_i64()
                .unwrap_or_else(|| panic!("outbox line {}: no seq: {line}", i + 1));
            assert!(
                seq > last_seq,
                "outbox line {}: seq {seq} after {last_seq}",
                i + 1
            );
            last_seq = seq;
            assert_eq!(v["kind"], "send", "outbox line {}: {line}", i + 1);
            let key = v["send"]["idempotency_key"]
                .as_str()
                .unwrap_or_else(|| panic!("outbox line {}: no idempotency key: {line}", i + 1));
            *seen.entry(key.to_string()).or_default() += 1;
            total += 1;
        }
        let expected = self.expected_keys();
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        let unexpected: Vec<_> = seen.keys().filter(|k| !expected.contains(*k)).collect();
        let journal = self.journal();
        assert!(
            missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
            "{} missing (first: {:?}), {} more than once (first: {:?}), {} unexpected (first: {:?}); journal {journal}; logs in {}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            twice.len(),
            twice.iter().take(5).collect::<Vec<_>>(),
            unexpected.len(),
            unexpected.iter().take(5).collect::<Vec<_>>(),
            self.dir.display()
        );
        assert_eq!(total, 3 * self.n);
        assert_eq!(journal["entered"], self.n, "{journal}");
        assert_eq!(journal["ends"]["success"], self.n, "{journal}");
        for s in STEPS {
            assert_eq!(journal["steps"][s]["sent"], self.n, "step {s}: {journal}");
        }
        eprintln!(
            "{} starts, {total} sends, each of the {} keys exactly once, last seq {last_seq}; journal ends {}",
            self.starts,
            expected.len(),
            journal["ends"]
        );
    }
}

/// A started `relance run`.
struct Running {
    child: Child,
    lines: Receiver<String>,
    log: PathBuf,
    spawned: Instant,
}

impl Running {
    /// Waits for the "listening" line (the import and the first delivery are done by then).
    fn wait_listening(&mut self) {
        let deadline = self.spawned + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening") => return,
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "relance run did not say it was listening (exit {status:?}): {}",
                        read_log(&self.log)
                    );
                }
            }
        }
    }

    /// SIGKILL; fails when the process had already stopped by itself.
    fn kill(mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "relance run stopped by itself ({status}): {}",
                read_log(&self.log)
            );
        }
        self.child.kill().expect("kill relance run");
        self.child.wait().expect("reap relance run");
    }
}

fn contact(i: usize) -> String {
    format!("c{i:04}")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Complete lines in the outbox file.
fn outbox_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Runs a last time until the outbox holds every send (or 30 s pass), then kills it.
fn run_to_completion(setup: &mut Setup) {
    let mut run = setup.start(false);
    run.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox_lines(&setup.outbox) < 3 * setup.n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A little longer, so a duplicate written after the last expected line would show.
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "final start: {} outbox lines after {:?}",
        outbox_lines(&setup.outbox),
        run.spawned.elapsed()
    );
    run.kill();
}

/// When and how one start is killed.
struct Kill {
    /// Count the delay from the "listening" line (else from the spawn).
    after_listening: bool,
    /// How long it runs before SIGKILL.
    run_ms: u64,
    /// How long it stays down before the next start (so timers fall due while it is down
    /// and fire in the first tick of the next start, right before "listening").
    down_ms: u64,
}

const fn kill(after_listening: bool, run_ms: u64, down_ms: u64) -> Kill {
    Kill {
        after_listening,
        run_ms,
        down_ms,
    }
}

/// Sends the store has committed (the journal's `sent` counts).
fn committed_sends(setup: &Setup) -> u64 {
    let journal = setup.journal();
    STEPS
        .iter()
        .map(|s| journal["steps"][s]["sent"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn sigkill_at_any_moment_loses_nothing_and_repeats_nothing() {
    let mut setup = Setup::new("kill", 300);
    // The `b` timers fall due 1 s after the import, the `c` ones 1 s later. The starts
    // that follow a pause past a due time are killed a few ms after "listening", while
    // their first tick fires the overdue timers: sends committed, not yet in the file.
    let kills = [
        kill(true, 150, 0),
        kill(true, 700, 250),
        kill(true, 20, 0),
        kill(false, 40, 0),
        kill(true, 400, 600),
        kill(true, 30, 0),
        kill(true, 5, 0),
    ];
    let t0 = Instant::now();
    for (k, plan) in kills.iter().enumerate() {
        let mut run = setup.start(k == 0);
        if plan.after_listening {
            run.wait_listening();
        }
        std::thread::sleep(Duration::from_millis(plan.run_ms));
        let at = run.spawned.elapsed();
        run.kill();
        eprintln!(
            "kill {}: {} ms after {} ({} ms after spawn, {} ms into the test): {} sends committed, {} lines in the outbox",
            k + 1,
            plan.run_ms,
            if plan.after_listening {
                "listening"
            } else {
                "spawn"
            },
            at.as_millis(),
            t0.elapsed().as_millis(),
            committed_sends(&setup),
            outbox_lines(&setup.outbox)
        );
        std::thread::sleep(Duration::from_millis(plan.down_ms));
    }
    run_to_completion(&mut setup);
    setup.check_exactly_once();
    let _ = std::fs::remove_dir_all(&setup.dir);
}

/// Cuts the file at `len` bytes.
fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate the outbox");
}

/// The byte offsets where the last complete line starts and ends.
fn last_line(bytes: &[u8]) -> (usize, usize) {
    let end = bytes.len();
    assert!(end > 0 && bytes[end - 1] == b'\n', "no complete last line");
    let start = bytes[..end - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    (start, end)
}

/// A position inside a multi-byte UTF-8 character, past the middle of `line`.
fn mid_character(line: &[u8]) -> usize {
    (line.len() / 2..line.len())
        .find(|&i| (line[i] & 0b1100_0000) == 0b1000_0000)
        .or_else(|| (1..line.len()).find(|&i| (line[i] & 0b1100_0000) == 0b1000_0000))
        .expect("a multi-byte character in the line")
}

#[test]
fn a_torn_last_line_is_cut_and_delivered_again_once() {
    let mut setup = Setup::new("torn", 40);
    let mut run = setup.start(true);
    run.wait_listening();
    std::thread::sleep(Duration::from_millis(1200));
    run.kill();
    // A torn write of the last delivered line: its end (and so its `seq`) never made it to
    // the file, and the cut falls inside a UTF-8 sequence.
    let bytes = std::fs::read(&setup.outbox).expect("read the outbox");
    let (start, end) = last_line(&bytes);
    let at = start + mid_character(&bytes[start..end]);
    cut(&setup.outbox, at as u64);
    eprintln!(
        "torn 1: cut the outbox from {} to {at} bytes (last line {start}..{end})",
        bytes.len()
    );

    let mut run = setup.start(false);
    run.wait_listening();
    std::thread::sleep(Duration::from_millis(600));
    run.kill();
    // A torn append of a line that was never complete: half of a copy of the last line.
    let bytes = std::fs::read(&setup.outbox).expect("read the outbox");
    let (start, end) = last_line(&bytes);
    let half = mid_character(&bytes[start..end]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&setup.outbox)
        .expect("open the outbox");
    f.write_all(&bytes[start..start + half])
        .expect("append a torn line");
    drop(f);
    eprintln!(
        "torn 2: appended {half} bytes of a line to the {} bytes of the outbox",
        bytes.len()
    );

    run_to_completion(&mut setup);
    setup.check_exactly_once();
    let _ = std::fs::remove_dir_all(&setup.dir);
}
