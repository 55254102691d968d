//! HTTP ingest: activity events accepted by `POST /v1/events` of the embedded API, as
//! `relance run` serves it (the same router, token check and runner thread, a SQLite WAL
//! file), from C concurrent clients on keep-alive connections (default 64), for S seconds
//! (default 10). An event is accepted when its answer is 2xx: its unit of work has committed
//! and the WAL is synced (by the runner's syncer thread; `synchronous` then reads 1, NORMAL,
//! since SQLite no longer syncs by itself: see `durable.rs`).
//! Prints events/s, the latency percentiles and the CPU the process used.
//! Run: `cargo bench -p relance-embedded --bench ingest -- [--clients 64] [--seconds 10]`.

/// The `relance` binary's allocator (cli/src/main.rs), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use relance_embedded::auth::ApiSecurity;
use relance_embedded::clock::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "rl_bench_ingest_token_0123456789abcdef";
/// A scenario the events wake (an inactivity clock and a trigger on `purchase`), so each
/// event does what an application's event does: stored, matched against the scenarios.
const SCENARIO: &str = "id: bought\nlaunch: {type: trigger, event: purchase}\nonce_per: P1D\nmessages:\n  thanks: {channel: email, subject: \"Thanks\", text: \"Thanks\"}\nsteps:\n  - {id: thanks, send: thanks, next: done}\n  - {id: done, end: success}\n";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One client: a keep-alive connection posting events until `until`; the latency of each.
async fn client(addr: std::net::SocketAddr, id: u64, until: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return latencies;
    };
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        // Contacts spread over 10,000 ids; a tenth of the events are purchases.
        let contact = (id * 7919 + n) % 10_000;
        let event = if n.is_multiple_of(10) {
            "purchase"
        } else {
            "page_view"
        };
        let body = format!(
            "{{\"contact\":\"c{contact}\",\"event\":\"{event}\",\"properties\":{{\"n\":{n}}},\"idempotency_key\":\"k{id}-{n}\"}}"
        );
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let start = Instant::now();
        if stream.write_all(request.as_bytes()).await.is_err() {
            break;
        }
        // Read the answer: headers, then Content-Length bytes of body.
        let mut have = 0usize;
        let complete = loop {
            match stream.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => break None,
                Ok(read) => have += read,
            }
            let text = &buf[..have];
            if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if have >= end + 4 + length {
                    break Some(head.starts_with("http/1.1 2"));
                }
            }
            if have == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        };
        match complete {
            Some(true) => latencies.push(start.elapsed()),
            Some(false) => {
                eprintln!(
                    "an event was refused: {}",
                    String::from_utf8_lossy(&buf[..have])
                );
                break;
            }
            None => break,
        }
    }
    latencies
}

fn main() {
    let clients = arg("--clients", 64);
    let seconds = arg("--seconds", 10);
    let dir = std::env::temp_dir().join(format!("relance-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (handle, runner) = relance_embedded::server::start(
        &dir.join("relance.db"),
        &dir.join("outbox.jsonl"),
        Arc::new(SystemClock),
    )
    .unwrap_or_else(|e| panic!("start: {e}"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let api = handle.clone();
    let (accepted, wall, cpu, mut latencies) = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let router = relance_embedded::api::router(
            api,
            ApiSecurity::with_token(TOKEN, vec![]),
        );
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        // The scenario, through the API as an application would put it.
        let mut put = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let request = format!(
            "POST /v1/scenarios HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SCENARIO}",
            SCENARIO.len()
        );
        put.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut answer = String::new();
        let _ = put.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 2"), "put scenario: {answer}");

        let cpu_start = cpu_seconds();
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..clients)
            .map(|id| tokio::spawn(client(addr, id, until)))
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap_or_default());
        }
        let wall = start.elapsed();
        let cpu = cpu_seconds() - cpu_start;
        server.abort();
        (latencies.len(), wall, cpu, latencies)
    });
    // SQLite's own setting (2 = FULL: SQLite syncs each commit; 1 = NORMAL: the runner's syncer
    // thread does, before answering).
    let synchronous = rt
        .block_on(handle.call(|rt, _| rt.store().synchronous()))
        .ok()
        .and_then(Result::ok)
        .unwrap_or(-1);
    drop(rt);
    drop(handle);
    let _ = runner.join();
    latencies.sort();
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"clients\": {clients}, \"seconds\": {:.1}, \"accepted\": {accepted}, \"events_per_s\": {:.0}, \"p50_ms\": {:.2}, \"p90_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}, \"cpu_s\": {cpu:.1}, \"synchronous\": {synchronous}}}",
        wall.as_secs_f64(),
        accepted as f64 / wall.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
