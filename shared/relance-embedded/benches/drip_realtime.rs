//! Embedded runtime on the real clock, the Relance side of the comparison with a BullMQ peer
//! (`scripts/bench-peer`, `BENCHMARKS.md`): N contacts through a three-step drip (email, wait
//! D, if opened SMS else email) on a durable SQLite file (WAL, synced before a step counts as
//! done, as `relance run` does), the wait D really waited.
//!
//! It drives `Runtime<SqliteStore>` the way the runner of `relance run` (`server.rs`) does, on
//! one thread: first every due timer (oldest first, one unit of work each, a group commit per
//! query of due timers), then a round of jobs in one group commit, and
//! each round handed to the syncer thread, which fsyncs the WAL while the next round runs
//! (`durable.rs`); the outbox rows a sync covered are then handed to the outbox thread, which
//! appends them to the JSON-lines file
//! (fsync). The jobs are the launch, in
//! batches of `--batch` contacts (as the peer adds its jobs in bulks of 1,000), each followed
//! by an "opened" engagement for each even-index contact of the batch. When all are launched,
//! it sleeps until the next timer is due (at most 500 ms, like the runner).
//!
//! Prints one JSON object on stdout with the fields of the peer's (`drip.mjs`): steps_per_s,
//! wall_s, lateness_ms, cpu_s, peak_rss_mib, correctness, phases_s. Exit code 2 when the run
//! is not correct.
//!
//! Run: `cargo bench -p relance-embedded --bench drip_realtime -- --n 100000 --delay 5000`
//! Options: `--n` contacts (10000), `--delay` D in ms, whole seconds (5000), `--batch`
//! contacts per launch (1000), `--dir` for the database (a fresh folder under the temporary
//! directory), `--timeout` in s (1800), `--keep` to keep the database and outbox file,
//! `--group-units` units of work per commit (the runner's 512; 1 commits each unit alone, as
//! the runner did before group commit), `--fsync-inline` to sync each commit before it
//! returns (`synchronous = FULL`, as the runner did before the syncer thread),
//! `--checkpoint-inline` to leave checkpoints to SQLite on the runner's thread (as before
//! the checkpoint thread), `--outbox-inline` to write the outbox file on the runner's thread
//! (as before the outbox thread), `--steps-inline` to compute every step on the runner (as
//! before the reader thread), `--reader-waited` to have the runner wait for each item the
//! reader computes (as before it computed the ones not yet handed over; not with
//! `--steps-inline`), `--branch-from-profile` for the like-for-like variant: no opens, and the
//! check branches on a profile field imported with the contacts (`even`), as the peer decides
//! "opened" from the contact index (the same sends to the same contacts; not the protocol of
//! the target, which keeps the opens: `BENCHMARKS.md`, round sixteen).

/// The `relance` binary's allocator (cli/src/main.rs), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::error::Error;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use relance_core::Contact;
use relance_core::contact::EngagementKind;
use relance_core::ports::{SourceFormat, Status};
use relance_core::wire::{EngagementDetail, LaunchDetail};
use relance_embedded::durable::{Answer, CommitSyncer, WalFile};
use relance_embedded::outbox::{Delivery, OutboxFile};
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn Error>>;

/// What the syncer's answers record: when each check was done (synced) after its due time.
struct Done {
    lateness: Vec<f64>,
    last: Instant,
}

/// An answer for the syncer: records the round's steps as done now, and the lateness of its
/// checks (their due times).
fn record_done(done: &Arc<Mutex<Done>>, dues: Vec<chrono::DateTime<Utc>>) -> Answer {
    let done = done.clone();
    Box::new(move |synced| {
        if let Err(e) = synced {
            eprintln!("[relance] a round was not synced: {e}");
            return;
        }
        let now = Utc::now();
        if let Ok(mut d) = done.lock() {
            d.last = Instant::now();
            d.lateness.extend(dues.iter().map(|at| ms(now - *at)));
        }
    })
}

/// Due timers taken per query, as the runner's tick does.
const TIMER_BATCH: usize = 500;
/// Units of work per group commit, as in the runner.
const GROUP_UNITS: usize = relance_embedded::server::GROUP_UNITS;
const CHECKPOINT_EVERY: std::time::Duration = relance_embedded::server::CHECKPOINT_EVERY;
/// The longest sleep between two looks at the store, as in the runner.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Contacts per import call (setup, before t0).
const IMPORT_CHUNK: usize = 10_000;

fn drip(delay_s: u64, branch_from_profile: bool) -> String {
    // The reference drip, its day shortened to D.
    let drip = include_str!("../../../examples/reference-drip.yaml")
        .replace("after: P1D", &format!("after: PT{delay_s}S"));
    if branch_from_profile {
        drip.replace(
            "if: {opened: first}",
            "if: {field: even, op: eq, value: true}",
        )
    } else {
        drip
    }
}

#[derive(Debug)]
struct Args {
    n: usize,
    delay_ms: u64,
    batch: usize,
    dir: PathBuf,
    timeout_s: u64,
    keep: bool,
    group_units: usize,
    fsync_inline: bool,
    checkpoint_inline: bool,
    outbox_inline: bool,
    steps_inline: bool,
    reader_waited: bool,
    branch_from_profile: bool,
}

fn args() -> Res<Args> {
    let mut a = Args {
        n: 10_000,
        delay_ms: 5_000,
        batch: 1_000,
        dir: std::env::temp_dir().join(format!("relance-drip-bench-{}", std::process::id())),
        timeout_s: 1_800,
        keep: false,
        group_units: GROUP_UNITS,
        fsync_inline: false,
        checkpoint_inline: false,
        outbox_inline: false,
        steps_inline: false,
        reader_waited: false,
        branch_from_profile: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--n" => a.n = value("--n")?.parse()?,
            "--delay" => a.delay_ms = value("--delay")?.parse()?,
            "--batch" => a.batch = value("--batch")?.parse()?,
            "--dir" => a.dir = PathBuf::from(value("--dir")?),
            "--timeout" => a.timeout_s = value("--timeout")?.parse()?,
            "--keep" => a.keep = true,
            "--fsync-inline" => a.fsync_inline = true,
            "--checkpoint-inline" => a.checkpoint_inline = true,
            "--outbox-inline" => a.outbox_inline = true,
            "--steps-inline" => a.steps_inline = true,
            "--reader-waited" => a.reader_waited = true,
            "--branch-from-profile" => a.branch_from_profile = true,
            "--group-units" => a.group_units = value("--group-units")?.parse()?,
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // Scenario durations are whole seconds (ISO 8601 PTnS).
    if a.delay_ms == 0 || !a.delay_ms.is_multiple_of(1000) {
        return Err("--delay must be a positive multiple of 1000 ms".into());
    }
    if a.n == 0 || a.batch == 0 {
        return Err("--n and --batch must be positive".into());
    }
    Ok(a)
}

fn contact_id(i: usize) -> String {
    format!("c{i:07}")
}

fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('c')?.parse().ok()
}

/// User + system CPU seconds of this process (all threads), from /proc/self/stat.
fn cpu_self(clk_tck: f64) -> f64 {
    cpu_of("/proc/self/stat", clk_tck)
}

/// CPU seconds (user + system) of the calling thread: the runner's own share.
fn cpu_runner(clk_tck: f64) -> f64 {
    cpu_of("/proc/thread-self/stat", clk_tck)
}

fn cpu_of(stat: &str, clk_tck: f64) -> f64 {
    let Ok(s) = fs::read_to_string(stat) else {
        return 0.0;
    };
    // Fields after "(comm) ": state is field 3, utime 14, stime 15.
    let rest = s.rfind(')').map_or("", |i| &s[i + 2..]);
    let f: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(14) + field(15)) / clk_tck
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn cpu_machine(clk_tck: f64) -> f64 {
    let Ok(s) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (g(0) + g(1) + g(2) + g(5) + g(6) + g(7)) / clk_tck
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/self/status` value in MiB (VmHWM: the peak resident set).
fn status_mib(key: &str) -> Option<f64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn file_mib(p: &Path) -> f64 {
    fs::metadata(p).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The peer's percentile: the value at rank ceil(q * len) in the sorted list.
fn pct(sorted: &[f64], q: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    json!(round(sorted[rank - 1], 1))
}

fn ms(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// The timers fired during the run.
#[derive(Debug)]
struct Fired {
    /// Every fire.
    total: usize,
    /// Contacts whose timer fired exactly once.
    once: usize,
    /// Contacts whose timer fired more than once, and fires for an unknown contact.
    other: usize,
}

/// What the store and the outbox file hold at the end.
fn check(rt: &mut Runtime<SqliteStore>, outbox_path: &Path, n: usize, fired: &Fired) -> Res<Value> {
    let expected = [("first", n), ("sms", n.div_ceil(2)), ("again", n / 2)];
    let (running, ended) = rt.store().enrollment_counts(Some("drip"))?;
    let mut counts = [0usize; 3];
    let mut wrong_parity = 0usize;
    let mut other_rows = 0usize;
    let mut keys = HashSet::new();
    let mut duplicate_keys = 0usize;
    let mut sent = HashSet::new();
    let mut duplicate_sends = 0usize;
    let mut rows = 0usize;
    let mut seq = 0;
    loop {
        let batch = rt.store().outbox_after(seq, 10_000)?;
        let Some(last) = batch.last() else { break };
        seq = last.0;
        for (_, kind, payload) in &batch {
            rows += 1;
            let v: Value = serde_json::from_str(payload)?;
            let send = &v["send"];
            let (Some(message), Some(contact), Some(key)) = (
                send["message"].as_str(),
                send["contact"].as_str(),
                send["idempotency_key"].as_str(),
            ) else {
                other_rows += 1;
                continue;
            };
            if kind != "send" {
                other_rows += 1;
                continue;
            }
            if !keys.insert(key.to_string()) {
                duplicate_keys += 1;
            }
            if !sent.insert((contact.to_string(), message.to_string())) {
                duplicate_sends += 1;
            }
            let even = index_of(contact).is_some_and(|i| i % 2 == 0);
            match message {
                "first" => counts[0] += 1,
                "sms" => {
                    counts[1] += 1;
                    wrong_parity += usize::from(!even);
                }
                "again" => {
                    counts[2] += 1;
                    wrong_parity += usize::from(even);
                }
                _ => other_rows += 1,
            }
        }
    }
    // The outbox file: every row delivered once, in order.
    let mut file_lines = 0usize;
    let mut file_keys = HashSet::new();
    let mut file_duplicates = 0usize;
    let mut last_seq = 0;
    let mut out_of_order = 0usize;
    for line in BufReader::new(fs::File::open(outbox_path)?).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        file_lines += 1;
        let s = v["seq"].as_i64().unwrap_or(0);
        out_of_order += usize::from(s <= last_seq);
        last_seq = s;
        let key = v["send"]["idempotency_key"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !file_keys.insert(key) {
            file_duplicates += 1;
        }
    }
    let dead_letters = rt.store().dead_letters()?.len();
    let pending = rt.next_due()?;
    let ok = running == 0
        && ended == n as u64
        && expected.iter().zip(counts).all(|((_, e), c)| *e == c)
        && wrong_parity == 0
        && other_rows == 0
        && duplicate_keys == 0
        && duplicate_sends == 0
        && file_lines == rows
        && file_duplicates == 0
        && out_of_order == 0
        && dead_letters == 0
        && pending.is_none()
        && fired.once == n
        && fired.other == 0;
    Ok(json!({
        "ok": ok,
        "expected": {"email-1": expected[0].1, "sms": expected[1].1, "email-2": expected[2].1},
        "sends_in_outbox": {"email-1": counts[0], "sms": counts[1], "email-2": counts[2]},
        "duplicate_idempotency_keys": duplicate_keys,
        "duplicate_sends": duplicate_sends,
        "sms_all_even": counts[1] > 0 && wrong_parity == 0,
        "wrong_branch": wrong_parity,
        "other_outbox_rows": other_rows,
        "outbox_file": {"lines": file_lines, "table_rows": rows, "duplicates": file_duplicates, "out_of_order": out_of_order},
        "enrollments": {"running": running, "ended": ended},
        "timers_fired": fired.total,
        "contacts_whose_timer_fired_once": fired.once,
        "timers_fired_more_than_once_or_unknown": fired.other,
        "timers_left": pending.is_some(),
        "dead_letters": dead_letters,
    }))
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(2),
        Err(e) => {
            eprintln!("drip_realtime: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Res<bool> {
    let a = args()?;
    let n = a.n;
    let clk = clk_tck();
    let _ = fs::remove_dir_all(&a.dir);
    fs::create_dir_all(&a.dir)?;
    let db = a.dir.join("drip.db");
    let outbox_path = a.dir.join("outbox.jsonl");
    let mut store = SqliteStore::open(&db)?;
    let outbox = OutboxFile::open(&outbox_path, &mut store)?;
    let mut rt = Runtime::new(store);
    // As the runner, due timers' steps read and computed on a thread of their own
    // (`--steps-inline`: each by its unit on the runner's thread, as before that thread).
    if !a.steps_inline {
        if a.reader_waited {
            let reader = SqliteStore::open_reader(&db)?;
            rt.read_steps_ahead(relance_embedded::runtime::StepReader::start(reader)?.waited_for());
        } else {
            relance_embedded::server::read_steps_ahead(&mut rt);
        }
    }
    // As the runner: commits synced by the syncer thread (or, `--fsync-inline`, by SQLite
    // before each commit returns).
    let wal = if a.fsync_inline {
        None
    } else {
        rt.store().defer_sync()?
    };
    // And, as the runner, checkpoints on a thread of their own, poked after each sync.
    let checkpointer = if a.checkpoint_inline {
        None
    } else {
        rt.store().checkpoint_elsewhere(CHECKPOINT_EVERY)?
    };
    let checkpoints_by_thread = checkpointer.is_some();
    // And, as the runner, the outbox file written on a thread of its own (`--outbox-inline`:
    // by the runner, as before that thread).
    let mut outbox = if a.outbox_inline {
        Delivery::Inline(outbox)
    } else {
        Delivery::start(outbox, rt.store())
    };
    let outbox_by_thread = matches!(outbox, Delivery::Writer(_));
    let synced_from = rt.store().outbox_last_seq()?;
    let mut syncer = CommitSyncer::start(wal.map(WalFile::into_sync), synced_from, move || {
        if let Some(checkpointer) = &checkpointer {
            checkpointer.poke();
        }
    })?;
    // A step is done when its round is synced: lateness and the last step's time are taken
    // when the syncer answers.
    let done = Arc::new(Mutex::new(Done {
        lateness: Vec::with_capacity(n),
        last: Instant::now(),
    }));

    // Setup, before t0 (the peer has no contacts to store): import, put and activate.
    let setup = Instant::now();
    for start in (0..n).step_by(IMPORT_CHUNK) {
        let chunk = (start..(start + IMPORT_CHUNK).min(n))
            .map(|i| {
                let mut fields = json!({"id": contact_id(i), "email": format!("c{i}@x.io"),
                    "phone": format!("+336{i:08}"), "first_name": "Ana"});
                // Like for like: what the peer decides from the index, a field of the profile.
                if a.branch_from_profile {
                    fields["even"] = json!(i % 2 == 0);
                }
                Contact::from_json(fields)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rt.import(&chunk, Utc::now(), &mut |_| {})?;
    }
    let import_s = setup.elapsed().as_secs_f64();
    let put = rt.put_scenario(
        &drip(a.delay_ms / 1000, a.branch_from_profile),
        SourceFormat::Yaml,
        Utc::now(),
    )?;
    rt.set_status(&put.id, Status::Active, Utc::now())?;
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("[relance] imported {n} contacts in {import_s:.2} s");

    let loadavg_before = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let cpu_setup = cpu_self(clk);
    let runner_setup = cpu_runner(clk);
    let machine0 = cpu_machine(clk);
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);

    // t0: the start of enrollment.
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut launched = 0u64;
    let mut engagements = 0usize;
    // Timers fired per contact index: a byte each, so that the bench's own bookkeeping stays
    // small next to the runtime's memory (peak RSS is measured for the whole process).
    let mut fired_by_contact = vec![0u8; n];
    let mut fired_total = 0usize;
    let mut fired_unknown = 0usize;
    let (mut launch_s, mut engagement_s, mut timers_s, mut outbox_s, mut sleep_s) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut enroll_done = None;
    let mut first_check = None;
    if let Ok(mut d) = done.lock() {
        d.last = t0;
    }
    let mut last_log = Instant::now();
    let mut timed_out = false;
    loop {
        // Every due timer first, oldest first, as the runner's tick does.
        loop {
            let started = Instant::now();
            let due = rt.due_timers_up_to(Utc::now(), TIMER_BATCH)?;
            if due.is_empty() {
                timers_s += started.elapsed().as_secs_f64();
                break;
            }
            first_check.get_or_insert(started);
            // One round of the runner: the due timers in one group commit.
            let (fired, committed) = rt.grouped(a.group_units, |rt| -> Res<()> {
                rt.fire_due(&due, Utc::now())?;
                Ok(())
            });
            fired?;
            committed?;
            // Lateness: synced (the check done and the SMS or email-2 in the outbox, on disk)
            // minus due, recorded by the syncer's answer.
            let mark = rt.store().outbox_last_seq()?;
            syncer.submit(
                mark,
                vec![record_done(&done, due.iter().map(|w| w.at).collect())],
            )?;
            for wake in &due {
                fired_total += 1;
                match index_of(&wake.contact).and_then(|i| fired_by_contact.get_mut(i)) {
                    Some(count) => *count = count.saturating_add(1),
                    None => fired_unknown += 1,
                }
            }
            timers_s += started.elapsed().as_secs_f64();
            let started = Instant::now();
            outbox.deliver(rt.store(), syncer.synced()?, false);
            outbox_s += started.elapsed().as_secs_f64();
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[relance] {:.0} s: launched {launched}/{n}, timers fired {}/{n}",
                t0.elapsed().as_secs_f64(),
                fired_total
            );
            last_log = Instant::now();
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        // Then one job: the next launch batch (email-1 for each), and the opens of its evens.
        if next < n {
            let end = (next + a.batch).min(n);
            // One round of the runner's jobs: the launch, then the opens of its evens, in one
            // group commit.
            let started = Instant::now();
            let mut launch_done = started;
            let (round, committed) = rt.grouped(a.group_units, |rt| -> Res<(u64, usize)> {
                let report = rt.launch(
                    LaunchDetail {
                        scenario: "drip".into(),
                        contacts: Some((next..end).map(contact_id).collect()),
                    },
                    Utc::now(),
                )?;
                launch_done = Instant::now();
                // Extra work the peer does not do: it decides "opened" from the contact index,
                // Relance records the engagement and evaluates `if: {opened: first}` from it.
                // (None in the like-for-like variant, whose check reads the profile instead.)
                let mut opened = 0;
                let opens = if a.branch_from_profile {
                    0..0
                } else {
                    next..end
                };
                for i in opens.filter(|i| i % 2 == 0) {
                    rt.engagement(
                        EngagementDetail {
                            idempotency_key: None,
                            contact: contact_id(i),
                            scenario: "drip".into(),
                            step: "first".into(),
                            kind: EngagementKind::Opened,
                            url: None,
                            link_tags: vec![],
                            at: None,
                        },
                        Utc::now(),
                    )?;
                    opened += 1;
                }
                Ok((report.entered, opened))
            });
            let (entered, opened) = round?;
            committed?;
            let mark = rt.store().outbox_last_seq()?;
            syncer.submit(mark, vec![record_done(&done, Vec::new())])?;
            launched += entered;
            engagements += opened;
            // The commit is shared; the launch's share is counted with the engagements.
            launch_s += (launch_done - started).as_secs_f64();
            engagement_s += launch_done.elapsed().as_secs_f64();
            let started = Instant::now();
            outbox.deliver(rt.store(), syncer.synced()?, false);
            outbox_s += started.elapsed().as_secs_f64();
            next = end;
            if next == n {
                enroll_done = Some(Instant::now());
            }
            continue;
        }
        if fired_total >= n {
            break;
        }
        // Nothing due: what is in flight synced and delivered, then sleep until the next
        // timer, as the runner does.
        let started = Instant::now();
        outbox.deliver(rt.store(), syncer.wait()?, true);
        outbox_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        match rt.next_due()? {
            Some(due) => {
                let wait = (due - Utc::now()).to_std().unwrap_or_default();
                std::thread::sleep(wait.min(MAX_SLEEP));
            }
            None => break, // nothing left to fire: the check below tells what is missing
        }
        sleep_s += started.elapsed().as_secs_f64();
    }
    outbox.deliver(rt.store(), syncer.wait()?, true);
    drop(outbox);
    let synchronous = rt.store().synchronous()?;
    let (mut lateness, last_step_done) = match done.lock() {
        Ok(mut d) => (std::mem::take(&mut d.lateness), d.last),
        Err(_) => return Err("the syncer's record is poisoned".into()),
    };
    let wall = (last_step_done - t0).as_secs_f64();
    let cpu_run = cpu_self(clk) - cpu_setup;
    let cpu_runner_run = cpu_runner(clk) - runner_setup;
    let machine = cpu_machine(clk) - machine0;
    let peak_rss = status_mib("VmHWM:");

    let once = fired_by_contact.iter().filter(|c| **c == 1).count();
    let fired = Fired {
        total: fired_total,
        once,
        other: fired_unknown + fired_by_contact.iter().filter(|c| **c > 1).count(),
    };
    let mut correctness = check(&mut rt, &outbox_path, n, &fired)?;
    let ok = !timed_out && launched == n as u64 && correctness["ok"] == json!(true);
    correctness["ok"] = json!(ok);
    correctness["launched"] = json!(launched);

    lateness.sort_by(f64::total_cmp);
    let mean = lateness.iter().sum::<f64>() / lateness.len().max(1) as f64;
    let since_t0 = |t: Option<Instant>| t.map(|t| round((t - t0).as_secs_f64(), 3));
    let enroll = since_t0(enroll_done);
    // Steps counted as the peer counts them: email-1 (sent by the launch), the check (the
    // timer fired after D) and the final send (SMS or email-2, in the check's unit of work).
    // Relance's end step, in the same unit as the final send, is not counted.
    let total_steps = 3 * n;
    let completed_steps = launched as usize + 2 * fired.total;
    let out = json!({
        "system": "relance-embedded",
        "N": n,
        "delay_ms": a.delay_ms,
        "group_units": a.group_units,
        "launch_batch": a.batch,
        "total_steps": total_steps,
        "completed_steps": completed_steps,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        "steps_per_s": round(total_steps as f64 / wall, 1),
        "phases_s": {
            "enroll_done": enroll,
            "last_email1_done": enroll,
            "first_check_start": since_t0(first_check),
            "last_step_done": round(wall, 3),
        },
        "busy_s": {
            "launch": round(launch_s, 3),
            "engagement": round(engagement_s, 3),
            "timers": round(timers_s, 3),
            "outbox_delivery": round(outbox_s, 3),
            "sleep": round(sleep_s, 3),
        },
        "protocol": if a.branch_from_profile { "branch-from-profile" } else { "opens" },
        "extra_work": {
            "engagements": engagements,
            "engagement_s": round(engagement_s, 3),
            "note": if a.branch_from_profile {
                "none: like for like, the check branches on the profile field `even` (imported before t0), as the peer decides \"opened\" from the contact index; engagement_s is the rounds' commits"
            } else {
                "an \"opened\" engagement for each even contact through Runtime::engagement (one unit of work each, in the launch's group commit); the peer decides \"opened\" from the contact index"
            },
        },
        "setup_s": {"import": round(import_s, 3), "total": round(setup_s, 3)},
        "lateness_ms": {
            "count": lateness.len(),
            "p50": pct(&lateness, 0.5),
            "p90": pct(&lateness, 0.9),
            "p99": pct(&lateness, 0.99),
            "max": lateness.last().map(|v| round(*v, 1)),
            "mean": round(mean, 1),
            "min": lateness.first().map(|v| round(*v, 1)),
        },
        "cpu_s": {
            "relance": round(cpu_run, 2),
            "runner_thread": round(cpu_runner_run, 2),
            "setup_before_t0": round(cpu_setup, 2),
            "other_on_machine": round(machine - cpu_run, 2),
        },
        "peak_rss_mib": {"relance": peak_rss.map(|v| round(v, 1))},
        "store": {
            "journal_mode": "WAL",
            "synchronous": match synchronous { 2 => "FULL", 1 => "NORMAL", 3 => "EXTRA", _ => "OFF" },
            "wal_synced_by": if a.fsync_inline { "SQLite, before each commit returns" } else { "the syncer thread, before a round is answered or delivered" },
            "checkpoints_by": if checkpoints_by_thread { "the checkpoint thread" } else { "SQLite, on the runner's thread" },
            "outbox_file_by": if outbox_by_thread { "the outbox thread" } else { "the runner's thread" },
            "timer_steps_read_ahead": rt.steps_ahead(),
            "db_mib": round(file_mib(&db), 1),
            "wal_mib": round(file_mib(&a.dir.join("drip.db-wal")), 1),
            "outbox_file_mib": round(file_mib(&outbox_path), 1),
        },
        "correctness": correctness,
        "versions": {"relance": env!("CARGO_PKG_VERSION"), "sqlite": rusqlite::version(), "allocator": "mimalloc"},
        "loadavg_before": loadavg_before,
    });
    drop(rt);
    if !a.keep {
        let _ = fs::remove_dir_all(&a.dir);
    }
    println!("{out}");
    Ok(ok)
}
