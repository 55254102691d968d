//! SMTP delivery throughput: N messages through `SmtpBackend::deliver`, CONCURRENCY at once
//! (the pool as large), to the local aiosmtpd test server (`tests/smtp/server.py`), in clear
//! text on loopback, with STARTTLS and with implicit TLS; and for comparison the server's own limit, the same
//! number of messages (the bytes the backend builds) blasted with plain Python `smtplib` over
//! as many connections (`tests/smtp/blast.py`). Each mode gets a fresh server.
//!
//! Prints one JSON line per mode: `mode`, `client`, `messages`, `seconds`, `per_second`.
//! Needs the server's Python (`scripts/smtp-venv`, or `RELANCE_SMTP_PYTHON`).
//!
//! A last mode measures the whole of `relance run`'s delivery: N contacts enrolled in a one-email
//! scenario on a SQLite file opened as `relance run` opens it (WAL, `synchronous = FULL`), then
//! the delivery worker leases, sends through the backend (STARTTLS) and settles each message
//! (one commit per answer): `client` is `relance run pipeline`, timed from the first lease to
//! the last settlement.
//!
//! Run: `cargo bench -p relance-embedded --bench smtp -- --n 2000 --concurrency 8`

#[path = "../../../tests/smtp/server.rs"]
mod smtp_server;

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use relance_core::delivery::{Backend, Outgoing};
use relance_core::engine::{Recipient, Send};
use relance_core::render::Rendered;
use relance_core::scenario::Channel;
use relance_embedded::smtp::{SmtpBackend, SmtpSettings, build_message};

const FROM: &str = "Shop <news@shop.example>";
use smtp_server::{Options, Protection, SmtpServer};

fn outgoing(i: usize) -> Outgoing {
    let key = format!("enr-{i}:hello");
    Outgoing {
        scenario: "welcome".to_string(),
        send: Send {
            enrollment: format!("enr-{i}"),
            contact: format!("c{i}"),
            step: "hello".to_string(),
            message: "hello".to_string(),
            channel: Channel::Email,
            communication_type: "marketing".to_string(),
            to: Recipient::Email(format!("contact{i}@example.net")),
            content: Rendered {
                subject: Some("Bienvenue".to_string()),
                html: Some(format!("<p>Bonjour {i}</p>")),
                text: Some(format!("Bonjour {i}")),
                ..Rendered::default()
            },
            idempotency_key: key.clone(),
        },
        headers: vec![
            (
                "List-Unsubscribe".to_string(),
                format!("<https://shop.example/u/{i}>"),
            ),
            (
                "List-Unsubscribe-Post".to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ),
        ],
        message_id: relance_core::delivery::message_id(&key, "shop.example"),
    }
}

fn arg(name: &str, default: usize) -> Result<usize, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| format!("{name} wants a number"))?
            .parse()?),
        None => Ok(default),
    }
}

fn report(mode: &str, client: &str, messages: usize, seconds: f64) {
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "client": client,
            "messages": messages,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "per_second": (messages as f64 / seconds).round(),
        })
    );
}

async fn through_backend(
    tls: Protection,
    n: usize,
    concurrency: usize,
) -> Result<(usize, f64), Box<dyn Error>> {
    let server = SmtpServer::start(&Options {
        record: false,
        ..Options::new(tls)
    })
    .ok_or("no SMTP server (run scripts/smtp-venv)")?;
    let url = match tls {
        Protection::None => format!("smtp://127.0.0.1:{}?tls=none", server.port),
        Protection::StartTls => format!("smtp://127.0.0.1:{}", server.port),
        Protection::Implicit => format!("smtps://127.0.0.1:{}", server.port),
    };
    let mut settings = SmtpSettings::parse(&url, FROM)?;
    settings.ca_file = server.ca.clone();
    settings.pool = u32::try_from(concurrency)?;
    let backend = Arc::new(SmtpBackend::new(settings)?);
    let messages: Arc<Vec<Outgoing>> = Arc::new((0..n).map(outgoing).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (backend, messages, next) = (backend.clone(), messages.clone(), next.clone());
            tokio::spawn(async move {
                let mut sent = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = messages.get(i) else {
                        return Ok::<usize, String>(sent);
                    };
                    backend.deliver(m).await.map_err(|e| e.to_string())?;
                    sent += 1;
                }
            })
        })
        .collect();
    let mut sent = 0;
    for w in workers {
        sent += w.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    if sent != n {
        return Err(format!("{sent} of {n} messages delivered").into());
    }
    Ok((sent, seconds))
}

/// The delivery worker over a SQLite file: N enrolled, then timed until every send is settled.
async fn through_relance(n: usize, concurrency: usize) -> Result<(usize, f64), Box<dyn Error>> {
    use relance_core::ports::{SourceFormat, Status};
    use relance_core::wire::{ContactDetail, LaunchDetail};
    let server = SmtpServer::start(&Options {
        record: false,
        ..Options::new(Protection::StartTls)
    })
    .ok_or("no SMTP server (run scripts/smtp-venv)")?;
    let mut settings = SmtpSettings::parse(&format!("smtp://127.0.0.1:{}", server.port), FROM)?;
    settings.ca_file = server.ca.clone();
    settings.pool = u32::try_from(concurrency)?;
    let backend: Arc<dyn Backend> = Arc::new(SmtpBackend::new(settings)?);
    let dir = server.dir().join("relance");
    std::fs::create_dir_all(&dir)?;
    let mut store = relance_embedded::store::SqliteStore::open(&dir.join("relance.db"))?;
    store.set_live_channels(&[Channel::Email]);
    let clock: Arc<dyn relance_embedded::clock::Clock> =
        Arc::new(relance_embedded::clock::SystemClock);
    let (handle, runner) =
        relance_embedded::server::start_configured(store, &dir.join("outbox.jsonl"), clock, None)?;
    let scenario = "id: bench\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  hello: {channel: email, subject: Bienvenue, html: \"<p>Bonjour {{ contact.id }}</p>\", text: \"Bonjour {{ contact.id }}\"}\nsteps:\n  - {id: hello, send: hello, next: done}\n  - {id: done, end: success}\n";
    handle
        .call(move |rt, now| -> Result<(), String> {
            rt.put_scenario(scenario, SourceFormat::Yaml, now)
                .map_err(|e| e.to_string())?;
            rt.set_status("bench", Status::Active, now)
                .map_err(|e| e.to_string())?;
            for i in 0..n {
                let contact = serde_json::Map::from_iter([
                    ("id".to_string(), serde_json::json!(format!("c{i}"))),
                    (
                        "email".to_string(),
                        serde_json::json!(format!("contact{i}@example.net")),
                    ),
                ]);
                rt.upsert_contact(
                    ContactDetail {
                        action: None,
                        contact,
                        at: None,
                    },
                    now,
                )
                .map_err(|e| e.to_string())?;
            }
            rt.launch(
                LaunchDetail {
                    scenario: "bench".into(),
                    contacts: None,
                },
                now,
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await??;
    let worker = relance_embedded::delivery::Worker::new(
        handle.clone(),
        relance_embedded::delivery::Backends::none().with(Channel::Email, backend),
        "news@shop.example",
    );
    let start = Instant::now();
    let mut attempted = 0;
    loop {
        let round = worker.run_once().await?;
        if round == 0 {
            break;
        }
        attempted += round;
    }
    let seconds = start.elapsed().as_secs_f64();
    let counts = handle.call(|rt, _| rt.store().delivery_counts()).await??;
    drop(worker);
    drop(handle);
    let _ = runner.join();
    if counts.done != n as u64 || attempted != n {
        return Err(format!("{} of {n} delivered ({attempted} attempts)", counts.done).into());
    }
    Ok((n, seconds))
}

fn plain_client(tls: Protection, n: usize, concurrency: usize) -> Result<f64, Box<dyn Error>> {
    let server = SmtpServer::start(&Options {
        record: false,
        ..Options::new(tls)
    })
    .ok_or("no SMTP server (run scripts/smtp-venv)")?;
    let python = smtp_server::python().ok_or("no Python for the SMTP server")?;
    // The same bytes as the backend sends, so the server does the same work per message.
    let sample = server.dir().join("message.eml");
    let built = build_message(&outgoing(0), FROM).map_err(|e| e.to_string())?;
    std::fs::write(&sample, built.formatted())?;
    let mut cmd = Command::new(python);
    cmd.arg(smtp_server::repo_root().join("tests/smtp/blast.py"))
        .args(["--port", &server.port.to_string()])
        .args(["--n", &n.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .arg("--message")
        .arg(&sample);
    match (tls, &server.ca) {
        (Protection::StartTls, Some(ca)) => {
            cmd.args(["--tls", "starttls", "--ca"]).arg(ca);
        }
        (Protection::Implicit, Some(ca)) => {
            cmd.args(["--tls", "implicit", "--ca"]).arg(ca);
        }
        _ => {
            cmd.args(["--tls", "none"]);
        }
    }
    let output = cmd.output()?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
    }
    let line: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    line["seconds"]
        .as_f64()
        .ok_or_else(|| "blast.py printed no seconds".into())
}

fn main() -> Result<(), Box<dyn Error>> {
    let n = arg("--n", 2000)?;
    let concurrency = arg("--concurrency", 8)?.max(1);
    if smtp_server::python().is_none() {
        eprintln!("skipped: run scripts/smtp-venv");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for (mode, tls) in [
        ("cleartext", Protection::None),
        ("starttls", Protection::StartTls),
        ("implicit-tls", Protection::Implicit),
    ] {
        let (sent, seconds) = runtime.block_on(through_backend(tls, n, concurrency))?;
        report(mode, "SmtpBackend (lettre)", sent, seconds);
        let seconds = plain_client(tls, n, concurrency)?;
        report(mode, "python smtplib", n, seconds);
    }
    let (sent, seconds) = runtime.block_on(through_relance(n, concurrency))?;
    report("starttls", "relance run pipeline", sent, seconds);
    Ok(())
}
