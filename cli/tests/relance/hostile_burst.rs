//! A hostile burst against a running `relance run` (issue 11, SECURITY.md): bad tokens, bad
//! content types, foreign `Host` names, year-9999 instants, template fuel bombs, 2 MB
//! scenario files, internal web push endpoints and re-subscription attempts, mixed with
//! legitimate traffic. What it asserts: every legitimate request succeeds, nothing is lost
//! (each legitimate signup is journaled and mailed once), no hostile request is accepted, and
//! no unsubscribed contact is mailed. What it measures and prints (not asserted: figures go in
//! RELIABILITY.md): the latency of `/v1/health` while the burst runs.
//!
//! Size: `RELANCE_BURST_CLIENTS` legitimate contacts (default 200), as many hostile requests
//! of each kind per round (`RELANCE_BURST_ROUNDS`, default 3).

#[allow(dead_code)] // the restart tests' helpers, not all used here
use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SCENARIO: &str = "\
id: welcome
name: Welcome
timezone: UTC
launch: {type: trigger, event: signup}
audience: {all: true}
messages:
  hello: {channel: email, type: news, subject: \"Welcome {{ contact.first_name }}\", text: \"Hello\"}
steps:
  - {id: email, send: hello, next: done}
  - {id: done, end: success}
";

/// A template whose loops the contact's data sizes: it passes validation, and for a contact
/// with `n: 1000` it would loop 10^9 times. Its send must fail, not hold the runner.
const FUEL_BOMB: &str = "\
id: bomb
name: Bomb
timezone: UTC
launch: {type: trigger, event: boom}
audience: {all: true}
messages:
  m: {channel: email, subject: \"x\", text: \"{% for a in range(contact.n|int) %}{% for b in range(contact.n|int) %}{% for c in range(contact.n|int) %}x{% endfor %}{% endfor %}{% endfor %}\"}
steps:
  - {id: email, send: m, next: done}
  - {id: done, end: success}
";

/// An inactivity trigger: the review's year-9999 event aimed at it stopped every timer.
const CART: &str = "\
id: cart
name: Cart
timezone: UTC
launch: {type: trigger, event: cart.abandoned, inactivity_minutes: 30}
audience: {all: true}
messages:
  m: {channel: email, subject: \"Your cart\", text: \"Still there\"}
steps:
  - {id: email, send: m, next: done}
  - {id: done, end: success}
";

/// The review's own bomb, loops written in the template: validation refuses it, so it never
/// becomes active.
const LITERAL_BOMB: &str = "\
id: literal-bomb
name: Literal bomb
timezone: UTC
launch: {type: trigger, event: boom}
audience: {all: true}
messages:
  m: {channel: email, subject: \"x\", text: \"{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\"}
steps:
  - {id: email, send: m, next: done}
  - {id: done, end: success}
";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One HTTP/1.1 request; (status, body). `headers` are written as given.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A server may answer (413, 401) before reading a large body and close: that is fine.
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

struct Server {
    addr: SocketAddr,
    bearer: String,
}

impl Server {
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &self.bearer),
                ("Content-Type", content_type),
            ],
            body,
        )
    }

    fn post_json(&self, path: &str, body: &Value) -> (u16, String) {
        self.post(path, "application/json", body.to_string().as_bytes())
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = http(
            self.addr,
            "GET",
            path,
            &[("Authorization", &self.bearer)],
            b"",
        );
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

/// Every hostile request of one round; each must be refused with the status given.
fn hostile_round(server: &Server, round: usize, victims: &[String]) -> Vec<(String, u16, u16)> {
    let addr = server.addr;
    let mut outcomes = Vec::new();
    let mut expect = |what: &str, want: u16, got: (u16, String)| {
        outcomes.push((
            format!("{what}: {}", got.1.chars().take(160).collect::<String>()),
            want,
            got.0,
        ));
    };
    let scenario = SCENARIO.replace("id: welcome", &format!("id: stolen-{round}"));
    // No token, a wrong one, another scheme.
    expect(
        "no token",
        401,
        http(
            addr,
            "POST",
            "/v1/scenarios",
            &[("Content-Type", "application/yaml")],
            scenario.as_bytes(),
        ),
    );
    expect(
        "wrong token",
        401,
        http(
            addr,
            "POST",
            "/v1/launch",
            &[
                ("Authorization", "Bearer rl_guess"),
                ("Content-Type", "application/json"),
            ],
            br#"{"scenario": "welcome"}"#,
        ),
    );
    expect(
        "basic auth",
        401,
        http(
            addr,
            "GET",
            "/v1/scenarios",
            &[("Authorization", "Basic YTpi")],
            b"",
        ),
    );
    // A cross-site form post, with and without the token.
    expect(
        "form post",
        401,
        http(
            addr,
            "POST",
            "/v1/scenarios",
            &[("Content-Type", "text/plain")],
            scenario.as_bytes(),
        ),
    );
    expect(
        "form post with token",
        415,
        server.post("/v1/scenarios", "text/plain", scenario.as_bytes()),
    );
    // DNS rebinding.
    expect(
        "foreign host",
        400,
        http(
            addr,
            "GET",
            "/v1/scenarios/welcome/contacts/v0",
            &[
                ("Host", "evil.example:8787"),
                ("Authorization", &server.bearer),
            ],
            b"",
        ),
    );
    // Year 9999 and out-of-range instants.
    expect(
        "year 9999 event whose inactivity check falls past 9999",
        400,
        server.post_json(
            "/v1/events",
            &json!({"contact": "v0", "event": "cart.updated", "at": "9999-12-31T23:30:00Z"}),
        ),
    );
    expect(
        "year 1969 event",
        400,
        server.post_json(
            "/v1/events",
            &json!({"contact": "v0", "event": "signup", "at": "1969-12-31T23:59:59Z"}),
        ),
    );
    expect("year 1900 engagement", 400, server.post_json("/v1/engagement", &json!({"contact": "v0", "scenario": "welcome", "step": "email", "kind": "opened", "at": "1900-01-01T00:00:00Z"})));
    // A 2 MB scenario file, and one over the limit.
    let mut big = String::from("id: big\nname: Big\nmessages:\n");
    let mut i = 0;
    while big.len() < 1_900_000 {
        big.push_str(&format!(
            "  m{i}: {{channel: email, subject: s, text: t}}\n"
        ));
        i += 1;
    }
    let (status, body) = server.post("/v1/scenarios/validate", "application/yaml", big.as_bytes());
    expect(
        "2 MB scenario validated (its problems listed)",
        200,
        (status, body),
    );
    let huge = "x".repeat(3 * 1024 * 1024);
    expect(
        "3 MB body",
        413,
        server.post(
            "/v1/scenarios/validate",
            "application/yaml",
            huge.as_bytes(),
        ),
    );
    // Re-subscription attempts of contacts who opted out.
    for v in victims.iter().take(3) {
        let (status, body) = server.post_json(
            "/v1/contacts",
            &json!({"contact": {"id": v, "subscriptions": {"news": true}, "suppressed": []}}),
        );
        // Accepted as a profile update, but the opt-out stands (checked at the end).
        expect("re-subscription by update (kept)", 200, (status, body));
    }
    let csv = format!(
        "id,subscriptions.news\n{},true\n",
        victims[round % victims.len()]
    );
    expect(
        "re-subscription by import (kept)",
        200,
        server.post("/v1/contacts/import", "text/csv", csv.as_bytes()),
    );
    // A web push subscription aimed at the cloud metadata address (refused at send time on
    // AWS; stored here, the embedded outbox never connects anywhere).
    let ssrf = json!({"contact": {"id": format!("ssrf-{round}"), "web_push": {"endpoint": "https://169.254.169.254/latest/meta-data", "keys": {"p256dh": "x", "auth": "y"}}}});
    let (status, body) = server.post_json("/v1/contacts", &ssrf);
    expect(
        "internal web push endpoint",
        if status == 400 { 400 } else { 200 },
        (status, body),
    );
    // The literal bomb cannot be activated; the data-driven one fires for a contact whose
    // data makes it loop 10^9 times: its send fails, nothing else waits.
    let (status, body) = server.post("/v1/scenarios", "application/yaml", LITERAL_BOMB.as_bytes());
    expect(
        "literal fuel bomb stored as a draft",
        if status == 201 { 201 } else { 200 },
        (status, body),
    );
    expect(
        "literal fuel bomb activation",
        422,
        server.post(
            "/v1/scenarios/literal-bomb/activate",
            "application/json",
            b"",
        ),
    );
    let bomber = format!("bomb-{round}");
    expect(
        "fuel bomb contact",
        200,
        server.post_json(
            "/v1/contacts",
            &json!({"contact": {"id": bomber, "email": format!("{bomber}@example.org"), "n": 1000}}),
        ),
    );
    expect(
        "fuel bomb trigger",
        202,
        server.post_json("/v1/events", &json!({"contact": bomber, "event": "boom"})),
    );
    outcomes
}

#[test]
fn hostile_burst_leaves_legitimate_traffic_whole() {
    let dir = std::env::temp_dir().join(format!("relance-burst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let scenario = dir.join("welcome.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap_or_else(|e| panic!("{e}"));
    let outbox = dir.join("outbox.jsonl");
    let files = common::RunFiles {
        db: &dir.join("r.db"),
        outbox: &outbox,
        scenario: &scenario,
        contacts: None,
        log: &dir.join("run.log"),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut child, lines) = common::spawn_run(&files, port, "warn");
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("relance run did not start: {e}"));
        if line.contains("listening on") {
            break;
        }
    }
    let server = Arc::new(Server {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        bearer: format!("Bearer {}", common::API_TOKEN),
    });
    let clients = env_number("RELANCE_BURST_CLIENTS", 200);
    let rounds = env_number("RELANCE_BURST_ROUNDS", 3);

    // Contacts who opted out of "news" before the burst.
    let victims: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    for v in &victims {
        let (status, body) = server.post_json(
            "/v1/contacts",
            &json!({"contact": {"id": v, "email": format!("{v}@example.org"), "first_name": "V", "subscriptions": {"news": false}}}),
        );
        assert_eq!(status, 200, "{body}");
    }
    for (id, text) in [("bomb", FUEL_BOMB), ("cart", CART)] {
        let (status, body) = server.post("/v1/scenarios", "application/yaml", text.as_bytes());
        assert!(status == 200 || status == 201, "{status} {body}");
        let (status, body) = server.post(
            &format!("/v1/scenarios/{id}/activate"),
            "application/json",
            b"",
        );
        assert_eq!(status, 200, "{body}");
    }

    // The health probe, sampled all along.
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let prober = {
        let (stop, latencies, addr) = (stop.clone(), latencies.clone(), server.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, _) = http(addr, "GET", "/v1/health", &[], b"");
                assert_eq!(status, 200, "health");
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t.elapsed());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let started = Instant::now();
    let legit = {
        let server = server.clone();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            for i in 0..clients {
                let id = format!("c{i}");
                let (s1, b1) = server.post_json(
                    "/v1/contacts",
                    &json!({"contact": {"id": id, "email": format!("{id}@example.org"), "first_name": "C"}}),
                );
                let (s2, b2) =
                    server.post_json("/v1/events", &json!({"contact": id, "event": "signup"}));
                if s1 != 200 || s2 != 202 {
                    failures.push(format!("{id}: {s1} {b1} / {s2} {b2}"));
                }
            }
            failures
        })
    };
    let hostile: Vec<_> = (0..2)
        .map(|worker| {
            let (server, victims) = (server.clone(), victims.clone());
            std::thread::spawn(move || {
                let mut all = Vec::new();
                for round in 0..rounds {
                    all.extend(hostile_round(&server, worker * rounds + round, &victims));
                }
                all
            })
        })
        .collect();
    // The opted-out contacts try to sign up too: they must be skipped, not mailed.
    for v in &victims {
        let (status, body) =
            server.post_json("/v1/events", &json!({"contact": v, "event": "signup"}));
        assert_eq!(status, 202, "{body}");
    }
    let failures = legit
        .join()
        .unwrap_or_else(|_| panic!("legitimate client panicked"));
    let mut wrong = Vec::new();
    let mut hostile_count = 0;
    for h in hostile {
        for (what, want, got) in h
            .join()
            .unwrap_or_else(|_| panic!("hostile client panicked"))
        {
            hostile_count += 1;
            if want != got {
                wrong.push(format!("{what}: wanted {want}, got {got}"));
            }
        }
    }
    let burst = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    prober
        .join()
        .unwrap_or_else(|_| panic!("health probe failed"));

    // Nothing lost: every legitimate signup entered and was mailed once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let journal = loop {
        let j = server.get("/v1/scenarios/welcome/journal");
        if j["entered"].as_u64() == Some((clients + victims.len()) as u64)
            || Instant::now() > deadline
        {
            break j;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let bombs = server.get("/v1/scenarios/bomb/journal");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        failures.is_empty(),
        "legitimate requests failed: {failures:#?}"
    );
    assert!(
        wrong.is_empty(),
        "hostile requests not refused as they should be: {wrong:#?}"
    );
    // The opted-out contacts enter too, and their email is skipped as unsubscribed.
    assert_eq!(
        journal["entered"],
        (clients + victims.len()) as u64,
        "{journal}"
    );
    assert_eq!(
        journal["steps"]["email"]["sent"], clients as u64,
        "{journal}"
    );
    assert_eq!(
        journal["steps"]["email"]["skipped"]["unsubscribed"],
        victims.len() as u64,
        "{journal}"
    );
    let sent = read_outbox(&outbox);
    let welcome: Vec<&Value> = sent.iter().filter(|l| l["scenario"] == "welcome").collect();
    assert_eq!(
        welcome.len(),
        clients,
        "one welcome email per legitimate contact"
    );
    for v in &victims {
        assert!(
            !welcome.iter().any(|l| l["send"]["contact"] == v.as_str()),
            "{v} opted out and was mailed"
        );
    }
    assert!(
        !sent.iter().any(|l| l["scenario"] == "bomb"),
        "a fuel bomb rendered a send"
    );
    assert_eq!(
        bombs["steps"]["email"]["failed"],
        (2 * rounds) as u64,
        "each bomb's send failed: {bombs}"
    );
    let mut lat = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "hostile burst: {clients} legitimate contacts (2 requests each), {hostile_count} hostile requests, {:.1} s; /v1/health {} probes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        burst.as_secs_f64(),
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_outbox(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
