//! `relance run` delivering for real, as a self-hoster runs it: the email-then-SMS-to-openers
//! scenario against a real SMTP server (aiosmtpd with STARTTLS and AUTH) and the emulator's
//! SNS, the open measured by fetching the tracking pixel the email carries; and `kill -9`
//! during a burst of 1,000 sends, after which every message arrives exactly once (an attempt
//! cut short is sent again with its Message-ID, and only those may arrive twice).

#[path = "../../../tests/smtp/server.rs"]
mod smtp_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relance_embedded::store::SqliteStore;
use smtp_server::{Options, Protection, SmtpServer};

use crate::common;

const TRACKING_SECRET: &str = "tracking-secret-0123456789abcdefghijklmnop";
const UNSUBSCRIBE_SECRET: &str = "unsubscribe-secret-0123456789abcdefghijklm";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relance-deliver-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// `relance run` on `dir`'s database with these arguments and environment; stderr to a log.
fn spawn(dir: &Path, port: u16, args: &[&str], env: &[(&str, String)], n: usize) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relance"));
    cmd.arg("run")
        .arg("--db")
        .arg(dir.join("relance.db"))
        .arg("--outbox")
        .arg(dir.join("outbox.jsonl"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("RELANCE_LOG", "info")
        .env("RELANCE_API_TOKEN", common::API_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("stderr-{n}.log")))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn relance run: {e}"))
}

/// Polls `done` every 50 ms until it holds or `limit` passes; false on timeout.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// GET `url` (http, on this machine) and the status code.
fn get(url: &str) -> u16 {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("{host}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    eprintln!("GET {url}: {}", response.lines().next().unwrap_or(""));
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The `src` of the tracking pixel in an email's HTML.
fn pixel_url(html: &str) -> Option<String> {
    let at = html.find("/t/o/")?;
    let start = html[..at].rfind('"')? + 1;
    let end = at + html[at..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}

fn sms_to(number: &str) -> usize {
    common::emulator::emulator_read("/_ministack/sns/sms-messages")["sms_messages"][number]
        .as_array()
        .map_or(0, Vec::len)
}

const OPENERS: &str = r#"id: openers-live
name: Email, then SMS to openers
timezone: UTC
launch: {type: after_import, contacts: all}
audience: {all: true}
messages:
  invitation:
    channel: email
    type: events
    subject: "You are invited, {{ contact.first_name }}"
    html: "<html><body><p>Our store opening party is on Saturday, {{ contact.first_name }}.</p><p><a href=\"https://shop.example/party\">Save your spot</a></p></body></html>"
    text: "Our store opening party is on Saturday. Reply to save your spot."
  invitation-sms:
    channel: sms
    text: "{{ contact.first_name }}, see you on Saturday at the store opening!"
steps:
  - id: email
    send: invitation
    next: opened
  - id: opened
    delay: {after: PT6S}
    if: {opened: email}
    then: sms
    else: done
  - id: sms
    send: invitation-sms
    next: done
  - id: done
    end: success
"#;

/// The seeds' scenario (examples/openers-sms.yaml, its two days shortened to six seconds, with
/// an HTML part to track) in `relance run --email smtp --sms sns`: the server gets both
/// invitations with their headers, the test opens Ana's by fetching its pixel, and only Ana
/// gets the SMS, through the emulator's SNS.
#[test]
fn openers_get_the_sms_through_smtp_sns_and_the_open_pixel() {
    let Some(endpoint) = common::emulator::endpoint() else {
        return;
    };
    let options = Options {
        auth: Some("relance:s3cret".into()),
        ..Options::new(Protection::StartTls)
    };
    let Some(server) = SmtpServer::start(&options) else {
        return;
    };
    let dir = scratch("openers");
    std::fs::write(dir.join("openers.yaml"), OPENERS).unwrap_or_else(|e| panic!("{e}"));
    let ana_phone = format!("+3361{:07}", std::process::id() % 10_000_000);
    let bob_phone = format!("+3362{:07}", std::process::id() % 10_000_000);
    std::fs::write(
        dir.join("contacts.jsonl"),
        format!(
            "{{\"id\": \"ana\", \"email\": \"ana@example.com\", \"phone\": \"{ana_phone}\", \"first_name\": \"Ana\"}}\n{{\"id\": \"bob\", \"email\": \"bob@example.com\", \"phone\": \"{bob_phone}\", \"first_name\": \"Bob\"}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let ca = server
        .ca
        .clone()
        .unwrap_or_else(|| panic!("the server's CA"))
        .display()
        .to_string();
    let env = [
        (
            "RELANCE_SMTP_URL",
            format!("smtp://relance:s3cret@127.0.0.1:{}", server.port),
        ),
        ("RELANCE_SMTP_CA_FILE", ca),
        ("RELANCE_FROM_EMAIL", "Shop <news@shop.example>".to_string()),
        ("RELANCE_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("RELANCE_TRACKING_SECRET", TRACKING_SECRET.to_string()),
        ("RELANCE_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET.to_string()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
    ];
    let scenario = dir.join("openers.yaml").display().to_string();
    let contacts = dir.join("contacts.jsonl").display().to_string();
    let mut child = spawn(
        &dir,
        port,
        &[
            "--scenario",
            &scenario,
            "--contacts",
            &contacts,
            "--email",
            "smtp",
            "--sms",
            "sns",
        ],
        &env,
        1,
    );
    let both = wait_for(Duration::from_secs(30), || server.count() >= 2);
    let log = || std::fs::read_to_string(dir.join("stderr-1.log")).unwrap_or_default();
    assert!(
        both,
        "both invitations over SMTP; relance run said:\n{}",
        log()
    );
    let received = server.messages();
    let ana = received
        .iter()
        .find(|m| m.rcpt_tos == ["ana@example.com"])
        .unwrap_or_else(|| panic!("Ana's invitation: {received:?}"));
    assert_eq!(ana.header("Subject"), Some("You are invited, Ana"));
    assert_eq!(ana.count("Message-ID"), 1);
    assert!(
        ana.header("Message-ID")
            .is_some_and(|id| id.ends_with("@shop.example>")),
        "{:?}",
        ana.header("Message-ID")
    );
    assert!(
        ana.header("List-Unsubscribe")
            .is_some_and(|v| v.contains(&format!("http://127.0.0.1:{port}/unsubscribe?token="))),
        "{:?}",
        ana.headers
    );
    assert_eq!(
        ana.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let html = ana
        .part("text/html")
        .unwrap_or_else(|| panic!("an HTML part: {:?}", ana.parts));
    assert!(
        !html.contains("href=\"https://shop.example/party\""),
        "the link goes through the click redirect: {html}"
    );
    let pixel = pixel_url(html).unwrap_or_else(|| panic!("a tracking pixel in {html}"));
    assert!(
        pixel.starts_with(&format!("http://127.0.0.1:{port}/t/o/")),
        "{pixel}"
    );
    assert_eq!(get(&pixel), 200, "the pixel answers");

    // Six seconds after the emails, the condition reads the open: Ana gets the SMS, Bob not.
    let sms = wait_for(Duration::from_secs(30), || sms_to(&ana_phone) >= 1);
    assert!(sms, "Ana's SMS through SNS; relance run said:\n{}", log());
    let ended = wait_for(Duration::from_secs(30), || {
        common::journal("openers-live", &dir.join("relance.db"))["ends"]["success"] == 2
    });
    assert!(ended, "both enrollments end; relance run said:\n{}", log());
    assert_eq!(sms_to(&ana_phone), 1);
    assert_eq!(sms_to(&bob_phone), 0);
    let journal = common::journal("openers-live", &dir.join("relance.db"));
    assert_eq!(journal["steps"]["sms"]["sent"], 1, "{journal}");
    let mut store = SqliteStore::open(&dir.join("relance.db")).unwrap_or_else(|e| panic!("{e}"));
    let counts = store.delivery_counts().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (counts.done, counts.failed, counts.dead),
        (3, 0, 0),
        "{counts:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

const BURST: &str = "id: burst
launch: {type: after_import, contacts: all}
audience: {all: true}
messages:
  hello: {channel: email, subject: \"Hello {{ contact.id }}\", text: \"Hello\"}
steps:
  - {id: hello, send: hello, next: done}
  - {id: done, end: success}
";

/// `kill -9` in the middle of a burst of 1,000 emails, then a restart: the server gets every
/// one of the 1,000 Message-IDs; a message may arrive twice only if its attempt was cut short
/// by the kill (the provider may have taken it before its answer was recorded), and no more
/// such duplicates than attempts the restart found cut short.
#[test]
fn kill_9_during_a_burst_of_1000_sends_loses_none_and_repeats_only_cut_short_attempts() {
    let Some(server) = SmtpServer::start(&Options::new(Protection::None)) else {
        return;
    };
    let n = 1000;
    let dir = scratch("burst");
    std::fs::write(dir.join("burst.yaml"), BURST).unwrap_or_else(|e| panic!("{e}"));
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\": \"c{i:04}\", \"email\": \"c{i:04}@example.org\"}}\n"))
        .collect();
    std::fs::write(dir.join("contacts.jsonl"), lines).unwrap_or_else(|e| panic!("{e}"));
    let env = [
        (
            "RELANCE_SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls=none", server.port),
        ),
        ("RELANCE_FROM_EMAIL", "news@shop.example".to_string()),
    ];
    let scenario = dir.join("burst.yaml").display().to_string();
    let contacts = dir.join("contacts.jsonl").display().to_string();
    let mut child = spawn(
        &dir,
        free_port(),
        &[
            "--scenario",
            &scenario,
            "--contacts",
            &contacts,
            "--email",
            "smtp",
        ],
        &env,
        1,
    );
    let started = wait_for(Duration::from_secs(60), || server.count() >= 300);
    assert!(started, "a third of the burst out before the kill");
    child.kill().unwrap_or_else(|e| panic!("kill -9: {e}"));
    let _ = child.wait();
    let at_kill = server.count();
    assert!(
        at_kill < n,
        "killed in the middle of the burst ({at_kill} out)"
    );

    let mut child = spawn(
        &dir,
        free_port(),
        &["--scenario", &scenario, "--email", "smtp"],
        &env,
        2,
    );
    let all = wait_for(Duration::from_secs(120), || {
        let ids: BTreeSet<String> = server
            .messages()
            .into_iter()
            .filter_map(|m| m.header("Message-ID").map(str::to_string))
            .collect();
        ids.len() >= n
    });
    // Let anything still in flight land before counting.
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    assert!(all, "every message after the restart");
    let received = server.messages();
    let mut per_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &received {
        let id = m
            .header("Message-ID")
            .unwrap_or_else(|| panic!("a Message-ID: {:?}", m.headers))
            .to_string();
        per_id.entry(id).or_default().extend(m.rcpt_tos.clone());
    }
    assert_eq!(per_id.len(), n, "{n} distinct messages");
    let recipients: BTreeSet<&String> = per_id.values().flatten().collect();
    assert_eq!(recipients.len(), n, "every contact got its email");
    for (id, to) in &per_id {
        let distinct: BTreeSet<&String> = to.iter().collect();
        assert_eq!(distinct.len(), 1, "{id} went to one address only: {to:?}");
    }
    let duplicates = received.len() - n;
    let mut store = SqliteStore::open(&dir.join("relance.db")).unwrap_or_else(|e| panic!("{e}"));
    let counts = store.delivery_counts().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.done, n as u64, "{counts:?}");
    assert!(
        duplicates as u64 <= counts.interrupted,
        "{duplicates} duplicates but only {} attempts were cut short by the kill",
        counts.interrupted
    );
    eprintln!(
        "kill -9 after {at_kill} of {n} emails: {} received, {} distinct, {} attempts cut short and sent again, {duplicates} of them had reached the server",
        received.len(),
        per_id.len(),
        counts.interrupted
    );
    let _ = std::fs::remove_dir_all(&dir);
}
