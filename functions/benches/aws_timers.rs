//! Timer lateness on the AWS path, on the emulator: the tick on a `rate(1 minute)` schedule
//! moves timers due within the next minute to the step queue with `DelaySeconds`, and step
//! executors (concurrent consumers, as Lambda's event source mapping runs them) fire them.
//! Measured: fired − due (wall clock after the step executor's batch returns) for
//!   - "spread": timers spread evenly across a minute (`RELANCE_SPREAD_TIMERS`, default 600);
//!   - "herd": timers all due at the same second (`RELANCE_HERD_TIMERS`, default 10,000).
//!
//! And the tick alone: timers handed to the step queue per second, its requests one at a
//! time and several at once (`RELANCE_TICK_TIMERS`, default 10,000).
//!
//! Run (starts nothing: the emulator must be up, as `./scripts/bench-aws` does):
//! `cargo bench -p relance-functions --bench aws_timers --profile dev`.

#[path = "../../tests/aws/support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::handlers;
use relance_aws::sqs::SqsQueues;
use relance_core::Contact;
use relance_core::engine::Wake;
use relance_core::ports::{SourceFormat, Status};
use relance_core::wire::LaunchDetail;
use relance_runtime::runtime::Runtime;
use serde_json::json;
use support::{create_queue, emulator};

/// Step-executor invocations running at once (Lambda would run more; the machine has two
/// cores shared with the emulator).
const CONSUMERS: usize = 4;

const SCENARIO: &str = "id: lateness
launch: {type: manual}
audience: {all: true}
steps:
  - {id: wait, delay: {after: PT60S}, next: done}
  - {id: done, end: success}
";

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    config: AwsConfig,
    step_queue: String,
}

fn runtime(config: &AwsConfig) -> Runtime<DynamoStore> {
    let emu = emulator();
    let bridge = Bridge::new(emu.runtime.handle().clone());
    let queues = SqsQueues::new(emu.sqs.clone(), bridge.clone());
    let mut store = DynamoStore::new(emu.dynamo.clone(), config.clone(), bridge).with_dispatch(
        relance_aws::dispatch::AwsDispatch::new(queues, config.queues.clone()),
    );
    store.set_auto_flush(false);
    Runtime::new(store)
}

fn setup(name: &str, n: usize, t0: DateTime<Utc>) -> Setup {
    let emu = emulator();
    let prefix = format!("{name}{}-", std::process::id());
    let config = AwsConfig::with_prefix(&prefix, 4);
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let step_queue = create_queue(&format!("{prefix}step"));
    let mut rt = runtime(&config);
    rt.store().set_auto_flush(true);
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            Contact::from_json(json!({"id": format!("c{i:05}")})).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    rt.import(&contacts, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let put = rt
        .put_scenario(SCENARIO, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    Setup { config, step_queue }
}

/// Enters contact `i` at `at` (its timer is then due 60 s later).
fn enter(rt: &mut Runtime<DynamoStore>, ids: Vec<String>, at: DateTime<Utc>) {
    rt.launch(
        LaunchDetail {
            scenario: "lateness".into(),
            contacts: Some(ids),
        },
        at,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.store().flush().unwrap_or_else(|e| panic!("{e}"));
}

/// Runs the tick every minute (on the minute) and the consumers until `n` timers fired or
/// `limit` passed; returns each timer's lateness in milliseconds.
fn fire_all(setup: &Setup, n: usize, limit: Duration) -> Vec<i64> {
    let emu = emulator();
    // By timer: a timer queued by two ticks (due right at a minute's edge) is delivered
    // twice; the second delivery changes nothing, and its first firing is the one measured.
    let lateness = Arc::new(Mutex::new(
        std::collections::HashMap::<String, i64>::with_capacity(n),
    ));
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (config, step_queue, done) =
            (setup.config.clone(), setup.step_queue.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rt = runtime(&config);
            let queues = SqsQueues::new(
                emulator().sqs.clone(),
                Bridge::new(emulator().runtime.handle().clone()),
            );
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Utc::now();
                let next_minute = now.trunc_subsecs(0)
                    + TimeDelta::seconds(60 - i64::from(now.timestamp() as u32 % 60));
                let sleep = (next_minute - now).to_std().unwrap_or_default();
                // Sleep in short steps so the run can end.
                let until = Instant::now() + sleep;
                while Instant::now() < until && !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                match handlers::tick(
                    &mut rt,
                    &support::dispatch(&queues, Some(&step_queue), None),
                    Utc::now(),
                ) {
                    Ok(s) => eprintln!(
                        "  tick at {}: {} timers queued",
                        Utc::now().format("%H:%M:%S%.3f"),
                        s.queued
                    ),
                    Err(e) => eprintln!("  tick failed: {e}"),
                }
            }
        })
    };
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (config, url, lateness, done) = (
                setup.config.clone(),
                setup.step_queue.clone(),
                lateness.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let emu = emulator();
                let mut rt = runtime(&config);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = emu.runtime.block_on(
                        emu.sqs
                            .receive_message()
                            .queue_url(&url)
                            .max_number_of_messages(10)
                            .wait_time_seconds(1)
                            .send(),
                    );
                    let Ok(got) = got else { continue };
                    let messages = got.messages.unwrap_or_default();
                    if messages.is_empty() {
                        continue;
                    }
                    let records: Vec<_> = messages
                        .iter()
                        .map(|m| json!({"messageId": m.message_id, "body": m.body, "attributes": {}, "messageAttributes": {}}))
                        .collect();
                    let event: SqsEvent = serde_json::from_value(json!({"Records": records}))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let response = handlers::step_executor(&mut rt, &event, Utc::now());
                    let fired = Utc::now();
                    let failed: Vec<String> = response
                        .batch_item_failures
                        .iter()
                        .map(|f| f.item_identifier.clone())
                        .collect();
                    let mut late = lateness.lock().unwrap_or_else(|e| e.into_inner());
                    for m in &messages {
                        if failed.contains(&m.message_id.clone().unwrap_or_default()) {
                            continue;
                        }
                        if let Some(w) = m.body.as_deref().and_then(|b| serde_json::from_str::<Wake>(b).ok()) {
                            late.entry(format!("{}:{}", w.enrollment, w.step))
                                .or_insert((fired - w.at).num_milliseconds());
                        }
                        if let Some(h) = &m.receipt_handle {
                            let _ = emu.runtime.block_on(
                                emu.sqs.delete_message().queue_url(&url).receipt_handle(h).send(),
                            );
                        }
                    }
                }
            })
        })
        .collect();
    while started.elapsed() < limit {
        if lateness.lock().map(|l| l.len()).unwrap_or(0) >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    for c in consumers {
        let _ = c.join();
    }
    emu.runtime.block_on(async {});
    let mut l: Vec<i64> = lateness
        .lock()
        .map(|l| l.values().copied().collect())
        .unwrap_or_default();
    l.sort_unstable();
    l
}

fn report(name: &str, n: usize, mut l: Vec<i64>) {
    l.sort_unstable();
    let pct = |q: f64| {
        if l.is_empty() {
            return 0;
        }
        l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1]
    };
    println!(
        "{name}: {} of {n} timers fired; fired - due (ms): min {} p50 {} p90 {} p99 {} max {}",
        l.len(),
        l.first().copied().unwrap_or(0),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        l.last().copied().unwrap_or(0)
    );
}

fn main() {
    let spread = env_n("RELANCE_SPREAD_TIMERS", 600);
    let herd = env_n("RELANCE_HERD_TIMERS", 10_000);

    // Spread: entries 60 s / n apart, so the timers are due across one minute starting two
    // minutes from now (the entries are written at their logical instants, ahead of time).
    if spread > 0 {
        let t0 = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(60);
        let s = setup("spread", spread, t0);
        let mut rt = runtime(&s.config);
        let step_ms = 60_000 / spread as i64;
        let written = Instant::now();
        for i in 0..spread {
            enter(
                &mut rt,
                vec![format!("c{i:05}")],
                t0 + TimeDelta::milliseconds(step_ms * i as i64),
            );
        }
        eprintln!(
            "spread: {spread} timers written in {:.1} s, due from {}",
            written.elapsed().as_secs_f64(),
            t0 + TimeDelta::seconds(60)
        );
        report(
            "spread across a minute",
            spread,
            fire_all(&s, spread, Duration::from_secs(300)),
        );
    }

    // Herd: every contact enters at the same logical instant, far enough ahead for the
    // writes to finish (`RELANCE_HERD_MARGIN` seconds, default 240); every timer is due at
    // the same second, a minute after.
    if herd > 0 {
        let s = setup("herd", herd, Utc::now());
        let margin = env_n("RELANCE_HERD_MARGIN", 240) as i64;
        let t0 = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(margin);
        let written = Instant::now();
        let mut rt = runtime(&s.config);
        let ids: Vec<String> = (0..herd).map(|i| format!("c{i:05}")).collect();
        for page in ids.chunks(100) {
            enter(&mut rt, page.to_vec(), t0);
        }
        let due = t0 + TimeDelta::seconds(60);
        eprintln!(
            "herd: {herd} timers written in {:.1} s, all due at {due}",
            written.elapsed().as_secs_f64()
        );
        assert!(
            Utc::now() < due,
            "the herd was written after it was due: raise the margin"
        );
        report(
            "herd at one second",
            herd,
            fire_all(&s, herd, Duration::from_secs(900)),
        );
    }

    // The tick alone: N timers due at one second, in the parts batches of 100 contacts leave
    // (as the launch function's pages do), handed to the step queue by one tick with its
    // requests one at a time, then `TICK_IN_FLIGHT` at once (`RELANCE_TICK_TIMERS`, default
    // 10,000). The time is the whole tick: listing the due timers, the requests, the parts'
    // deletions.
    let tick_n = env_n("RELANCE_TICK_TIMERS", 10_000);
    if tick_n > 0 {
        for in_flight in [1, handlers::TICK_IN_FLIGHT] {
            let t0 = Utc::now().trunc_subsecs(0);
            let s = setup(&format!("tick{in_flight}x"), tick_n, t0);
            let mut rt = runtime(&s.config);
            let ids: Vec<String> = (0..tick_n).map(|i| format!("c{i:05}")).collect();
            for page in ids.chunks(100) {
                enter(&mut rt, page.to_vec(), t0);
            }
            let queues = SqsQueues::new(
                emulator().sqs.clone(),
                Bridge::new(emulator().runtime.handle().clone()),
            );
            let dispatch = support::dispatch(&queues, Some(&s.step_queue), None);
            let limits = handlers::TickLimits {
                in_flight,
                ..handlers::TickLimits::default()
            };
            let started = Instant::now();
            let summary =
                handlers::tick_with(&mut rt, &dispatch, t0 + TimeDelta::seconds(30), limits)
                    .unwrap_or_else(|e| panic!("{e}"));
            let took = started.elapsed().as_secs_f64();
            println!(
                "tick, {in_flight} request(s) in flight: {} of {tick_n} timers queued ({} left) in {took:.2} s, {:.0} timers/s",
                summary.queued,
                summary.left,
                summary.queued as f64 / took
            );
        }
    }
}
