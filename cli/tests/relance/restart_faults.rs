//! SIGKILL with duplicated inputs: `relance run` is killed at random moments and started
//! again while a client posts to its HTTP API, at least once, a duplicated open of each
//! contact's first email, a duplicated activity event and a second launch of each contact
//! (refused: already running, or once_per). A request that fails (the process is down, or
//! killed while answering) is posted again after the restart, so some land twice more. The
//! contacts file is imported again on the second start (a duplicated import).
//!
//! Every expected send must be in the outbox file exactly once, every enrollment ended.
//!
//! Size: `RELANCE_RESTART_CONTACTS` (default 200) and `RELANCE_RESTART_KILLS` (default 8);
//! the documented larger run is `RELANCE_RESTART_CONTACTS=10000 RELANCE_RESTART_KILLS=20
//! cargo test --release -p relance-cli --test relance restart_faults -- --nocapture`.
//! `RELANCE_RESTART_SEED` changes the kill times.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const SCENARIO_ID: &str = "killdup";

/// Five sends, one to four seconds apart: an email; a wait for its opening (the client opens
/// every one, but a late open finds the wait timed out: both ways lead to the SMS, so the
/// sends do not depend on timing); an SMS, a push and two more emails.
const SCENARIO: &str = "id: killdup
launch: {type: after_import, contacts: all}
audience: {all: true}
once_per: P1D
messages:
  ma: {channel: email, subject: \"Étape A\", text: \"première\"}
  mc: {channel: sms, text: \"Étape C, troisième\"}
  md: {channel: push, title: \"Étape D\", body: \"quatrième\"}
  me: {channel: email, subject: \"Étape E\", text: \"cinquième\"}
  mf: {channel: email, subject: \"Étape F\", text: \"sixième\"}
steps:
  - {id: a, send: ma, next: b}
  - id: b
    wait_for: {opened: a, timeout: PT2S}
    on_event: c
    on_timeout: c
  - {id: c, send: mc, next: d}
  - {id: d, delay: {after: PT1S}, send: md, next: e}
  - {id: e, delay: {after: PT1S}, send: me, next: f}
  - {id: f, delay: {after: PT1S}, send: mf, next: done}
  - {id: done, end: success}
";

const SENDS: [&str; 5] = ["a", "c", "d", "e", "f"];

fn contact(i: usize) -> String {
    format!("c{i:05}")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic kill times without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// A started `relance run`.
struct Running {
    child: Child,
    lines: Receiver<String>,
    log: PathBuf,
    spawned: Instant,
    addr: SocketAddr,
}

impl Running {
    fn start(dir: &Path, starts: usize, with_contacts: bool) -> Running {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let log = dir.join(format!("stderr-{starts}.log"));
        let (db, outbox, scenario, contacts) = (
            dir.join("relance.db"),
            dir.join("outbox.jsonl"),
            dir.join("s.yaml"),
            dir.join("c.jsonl"),
        );
        let files = common::RunFiles {
            db: &db,
            outbox: &outbox,
            scenario: &scenario,
            contacts: with_contacts.then_some(contacts.as_path()),
            log: &log,
        };
        let (child, lines) = common::spawn_run(&files, port, "warn");
        Running {
            child,
            lines,
            log,
            spawned: Instant::now(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Waits for the "listening" line (the import is committed by then).
    fn wait_listening(&mut self, timeout: Duration) {
        loop {
            let left = (self.spawned + timeout).saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening") => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "relance run did not say it was listening: {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
        }
    }

    fn kill(mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "relance run stopped by itself ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.child.kill().expect("kill relance run");
        self.child.wait().expect("reap relance run");
    }
}

/// One HTTP request: POST `path` with a JSON body; the status code, or why there is none.
fn post(addr: SocketAddr, path: &str, body: &str) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        common::API_TOKEN,
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))
}

/// The application: reads the outbox file as a provider would, and posts what the contacts
/// do, at least once.
#[derive(Default)]
struct Client {
    /// Requests not yet answered with a 2xx: (path, body).
    pending: VecDeque<(&'static str, String)>,
    /// Bytes of the outbox file already read (complete lines only).
    read: usize,
    rng_state: u64,
    /// Complete outbox lines read.
    lines: usize,
    posted: u64,
    failed: u64,
    first_sends_seen: u64,
}

impl Client {
    fn insert_somewhere(&mut self, request: (&'static str, String)) {
        let mut rng = Rng(self.rng_state.max(1));
        let at = rng.below(self.pending.len() as u64 + 1) as usize;
        self.rng_state = rng.0;
        self.pending.insert(at, request);
    }

    /// New complete outbox lines: for each first email, the contact's inputs, duplicated.
    fn read_outbox(&mut self, outbox: &Path) {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(outbox) {
            let _ = f
                .seek(SeekFrom::Start(self.read as u64))
                .and_then(|_| f.read_to_end(&mut bytes));
        }
        // Complete lines only: a torn last line is cut by the next start, never counted.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n').map(|p| p + 1) else {
            return;
        };
        self.read += end;
        let new = String::from_utf8_lossy(&bytes[..end]).into_owned();
        for line in new.lines() {
            self.lines += 1;
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("outbox line malformed ({e}): {line}"));
            if v["send"]["step"] != "a" {
                continue;
            }
            self.first_sends_seen += 1;
            let c = v["send"]["contact"].as_str().unwrap_or("").to_string();
            let open = format!(
                r#"{{"contact": "{c}", "scenario": "{SCENARIO_ID}", "step": "a", "kind": "opened"}}"#
            );
            let visit = format!(
                r#"{{"contact": "{c}", "event": "page.visited", "properties": {{"url": "https://example.org/{c}"}}}}"#
            );
            let launch = format!(r#"{{"scenario": "{SCENARIO_ID}", "contacts": ["{c}"]}}"#);
            for request in [
                ("/v1/engagement", open.clone()),
                ("/v1/engagement", open),
                ("/v1/events", visit.clone()),
                ("/v1/events", visit),
                ("/v1/launch", launch),
            ] {
                self.insert_somewhere(request);
            }
        }
    }

    /// Reads the outbox and posts until `until` (or until `done` says so).
    fn drive(
        &mut self,
        run: &Running,
        outbox: &Path,
        until: Instant,
        done: impl Fn(&Client) -> bool,
    ) {
        while Instant::now() < until && !done(self) {
            self.read_outbox(outbox);
            let Some((path, body)) = self.pending.pop_front() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            match post(run.addr, path, &body) {
                Ok(status) if (200..300).contains(&status) => self.posted += 1,
                Ok(status) if status < 500 => panic!("{path} {body}: HTTP {status}"),
                _ => {
                    // Down, or killed while answering: posted again later (maybe twice over).
                    self.failed += 1;
                    self.insert_somewhere((path, body));
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

fn outbox_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

fn journal(dir: &Path) -> serde_json::Value {
    common::journal(SCENARIO_ID, &dir.join("relance.db"))
}

#[test]
fn sigkill_with_duplicated_inputs_sends_everything_exactly_once() {
    let n = env_number("RELANCE_RESTART_CONTACTS", 200) as usize;
    let kills = env_number("RELANCE_RESTART_KILLS", 8) as usize;
    let mut rng = Rng(env_number("RELANCE_RESTART_SEED", 0x0dd_ba11).max(1));
    let dir = std::env::temp_dir().join(format!("relance-killdup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    std::fs::write(dir.join("s.yaml"), SCENARIO).expect("write the scenario");
    let lines: String = (0..n)
        .map(|i| {
            let c = contact(i);
            format!(
                "{{\"id\": \"{c}\", \"email\": \"{c}@example.org\", \"phone\": \"+336{i:08}\", \"first_name\": \"Zoé\", \"push\": {{\"android\": \"arn:aws:sns:eu-west-1:000000000000:endpoint/GCM/relance/{c}\"}}}}\n"
            )
        })
        .collect();
    std::fs::write(dir.join("c.jsonl"), lines).expect("write the contacts");
    let outbox = dir.join("outbox.jsonl");
    // The first start imports (one unit); it may take a while for a large file.
    let listening = Duration::from_secs(30 + n as u64 / 100);
    let mut client = Client {
        rng_state: rng.0,
        ..Client::default()
    };
    let t0 = Instant::now();
    let mut starts = 0;
    for k in 0..kills {
        starts += 1;
        // Contacts on the first start, and again on the second (a duplicated import).
        let mut run = Running::start(&dir, starts, k < 2);
        // The first start is killed after its import; the others at any moment, some
        // before they listen (while the overdue timers of the downtime fire).
        let after_listening = k == 0 || rng.below(4) != 0;
        if after_listening {
            run.wait_listening(listening);
        }
        let run_ms = 5 + rng.below(800);
        client.drive(
            &run,
            &outbox,
            Instant::now() + Duration::from_millis(run_ms),
            |_| false,
        );
        run.kill();
        let down_ms = rng.below(600);
        eprintln!(
            "kill {}: {run_ms} ms after {}, {} ms into the test: {} outbox lines, {} requests pending; down {down_ms} ms",
            k + 1,
            if after_listening {
                "listening"
            } else {
                "spawn"
            },
            t0.elapsed().as_millis(),
            outbox_lines(&outbox),
            client.pending.len()
        );
        std::thread::sleep(Duration::from_millis(down_ms));
    }
    // A last start: every pending request answered and every send in the file.
    starts += 1;
    let mut run = Running::start(&dir, starts, false);
    run.wait_listening(listening);
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 50);
    client.drive(&run, &outbox, deadline, |c| {
        c.pending.is_empty() && c.first_sends_seen == n as u64 && c.lines >= 5 * n
    });
    // A little longer, so a duplicate written after the last expected line would show.
    std::thread::sleep(Duration::from_millis(300));
    run.kill();
    let elapsed = t0.elapsed();

    // The outbox file: exactly once, seq increasing, nothing unexpected.
    let text = std::fs::read_to_string(&outbox).expect("read the outbox");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_seq = 0i64;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("outbox line {}: malformed ({e}): {line}", i + 1));
        let seq = v["seq"].as_i64().unwrap_or(0);
        assert!(
            seq > last_seq,
            "outbox line {}: seq {seq} after {last_seq}",
            i + 1
        );
        last_seq = seq;
        let key = v["send"]["idempotency_key"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *seen.entry(key).or_default() += 1;
    }
    let expected: BTreeSet<String> = (0..n)
        .flat_map(|i| SENDS.map(|s| format!("{SCENARIO_ID}:{}:1:{s}", contact(i))))
        .collect();
    let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    let unexpected: Vec<_> = seen.keys().filter(|k| !expected.contains(*k)).collect();
    let journal = journal(&dir);
    assert!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "{} missing (first: {:?}), {} more than once (first: {:?}), {} unexpected (first: {:?}); {} requests pending; journal {journal}; logs in {}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>(),
        client.pending.len(),
        dir.display()
    );
    assert!(client.pending.is_empty(), "requests left unanswered");
    // The journal: one entry and one end per contact, each send step once per contact.
    assert_eq!(journal["entered"], n, "{journal}");
    assert_eq!(journal["ends"]["success"], n, "{journal}");
    for s in SENDS {
        assert_eq!(journal["steps"][s]["sent"], n, "step {s}: {journal}");
    }
    let refused = &journal["not_entered"];
    eprintln!(
        "killdup: {n} contacts, {} sends, each of the {} keys exactly once (0 duplicates, 0 lost), \
         {n} enrollments ended in success; {starts} starts ({kills} SIGKILLs); {} requests answered \
         ({} of them duplicates by design), {} failed and posted again; entries refused {refused}; \
         last seq {last_seq}; {:.1?}",
        seen.values().sum::<usize>(),
        expected.len(),
        client.posted,
        3 * n,
        client.failed,
        elapsed
    );
    let _ = std::fs::remove_dir_all(&dir);
}
