//! The embedded-mode commands end to end: new, clone, scenario lifecycle, contacts import,
//! launch, journal, graph (with counts, as SVG), schema and test mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "relance-embedded-cli-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn relance(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = relance(cwd, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "relance {args:?}: {text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_template_becomes_a_stored_active_scenario_that_imports_launch_and_journal_work_on() {
    let d = dir("flow");
    let listing = ok(&d, &["new"]);
    assert!(
        listing.contains("welcome-series") && listing.contains("multichannel-reaction"),
        "{listing}"
    );
    ok(
        &d,
        &[
            "new",
            "--template",
            "multichannel-reaction",
            "--id",
            "my-journey",
            "--name",
            "My journey",
        ],
    );
    let text = std::fs::read_to_string(d.join("my-journey.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains("id: my-journey") && text.contains("name: \"My journey\""),
        "{text}"
    );
    let again = relance(
        &d,
        &[
            "new",
            "--template",
            "multichannel-reaction",
            "--id",
            "my-journey",
        ],
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing file is not overwritten"
    );
    ok(&d, &["validate", "my-journey.yaml"]);

    let put = ok(&d, &["scenario", "put", "my-journey.yaml", "--db", "r.db"]);
    assert!(
        put.contains("my-journey v1") && put.contains("draft"),
        "{put}"
    );
    ok(&d, &["scenario", "activate", "my-journey", "--db", "r.db"]);
    ok(&d, &["clone", "my-journey", "copy", "--db", "r.db"]);
    let list = ok(&d, &["scenario", "list", "--db", "r.db"]);
    assert!(
        list.contains("copy")
            && list.contains("draft")
            && list.contains("my-journey")
            && list.contains("active"),
        "{list}"
    );

    std::fs::write(
        d.join("people.csv"),
        "id,email,country,birth_year,push.android\na,a@x.io,FR,1985,arn:aws:sns:us-east-1:000000000000:endpoint/GCM/app/a\nb,b@x.io,US,1990,\n,x@x.io,FR,1990,\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A rejected row makes the exit status 1; the good rows are imported all the same.
    let out = relance(&d, &["contacts", "import", "people.csv", "--db", "r.db"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        report.contains("2 added, 0 modified, 0 unchanged, 1 rejected")
            && report.contains("line 4"),
        "{report}"
    );

    let launch: serde_json::Value =
        serde_json::from_str(&ok(&d, &["launch", "my-journey", "--db", "r.db"]))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(launch["entered"], 1, "{launch}");
    assert_eq!(launch["skipped"]["audience"], 1, "{launch}");

    let journal: serde_json::Value = serde_json::from_str(&ok(
        &d,
        &["journal", "my-journey", "--db", "r.db", "--json"],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(journal["entered"], 1);
    assert_eq!(journal["steps"]["email"]["sent"], 1);
    let table = ok(&d, &["journal", "my-journey", "--db", "r.db"]);
    assert!(
        table.contains("email") && table.contains("not entered (audience): 1"),
        "{table}"
    );
    let path = ok(
        &d,
        &["journal", "my-journey", "--db", "r.db", "--contact", "a"],
    );
    assert!(
        path.contains("sent email (email") && path.contains("waiting reaction"),
        "{path}"
    );

    let svg = ok(
        &d,
        &[
            "graph",
            "my-journey.yaml",
            "--format",
            "svg",
            "--db",
            "r.db",
        ],
    );
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg") && svg.contains("1 entered"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    let mermaid = ok(&d, &["graph", "my-journey.yaml"]);
    assert!(mermaid.starts_with("flowchart TD"), "{mermaid}");
}

#[test]
fn schema_is_json_and_lists_the_scenario_keys() {
    let d = dir("schema");
    let schema: serde_json::Value =
        serde_json::from_str(&ok(&d, &["schema"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        schema["required"],
        serde_json::json!(["id", "launch", "steps"])
    );
    assert!(schema["properties"]["steps"].is_object());
}

#[test]
fn test_mode_prints_each_profiles_path_on_a_fast_clock() {
    let d = dir("test-mode");
    std::fs::write(
        d.join("s.yaml"),
        "id: quick\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: hi, text: x}\n  n: {channel: email, subject: again, text: x}\nsteps:\n  - {id: one, send: m, next: two}\n  - {id: two, send: n, next: done, delay: {after: P2D}}\n  - {id: done, end: success}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.join("p.jsonl"),
        "{\"id\": \"t1\", \"email\": \"t1@x.io\"}\n{\"id\": \"t2\"}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = ok(
        &d,
        &[
            "test",
            "s.yaml",
            "--contacts",
            "p.jsonl",
            "--start",
            "2026-12-01T09:00:00Z",
            "--speed",
            "2000000",
            "--json",
        ],
    );
    let paths: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    let kinds = |c: &str| -> Vec<String> {
        paths[c]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        kinds("t1"),
        ["entered", "sent", "waiting", "resumed", "sent", "ended"]
    );
    assert_eq!(
        kinds("t2"),
        [
            "entered", "skipped", "waiting", "resumed", "skipped", "ended"
        ]
    );
    let second = &paths["t1"][4];
    assert!(
        second["at"]
            .as_str()
            // Never before it is due; how late depends on the machine's load, so not asserted.
            .is_some_and(|a| a >= "2026-12-03T09:00:00"),
        "{second}"
    );
    let too_many: String = (0..101)
        .map(|i| format!("{{\"id\": \"p{i}\"}}\n"))
        .collect();
    std::fs::write(d.join("many.jsonl"), too_many).unwrap_or_else(|e| panic!("{e}"));
    let o = relance(&d, &["test", "s.yaml", "--contacts", "many.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 to 100"));
}

/// Starts `relance run` on a fresh port without `RELANCE_API_TOKEN`; returns the child and the
/// stdout lines up to (and with) the listening line.
fn start_run(d: &Path, port: u16) -> (std::process::Child, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(d)
        .args(["run", "--db", "r.db", "--outbox", "o.jsonl", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("RELANCE_API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}"));
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

/// GET `path` with an optional bearer token; the status code.
fn get_status(port: u16, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("{e}"));
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hostile_run_generates_a_token_once_and_keeps_only_its_digest() {
    let d = dir("token");
    let port = free_port();
    let (mut child, lines) = start_run(&d, port);
    let token_line = lines
        .iter()
        .find(|l| l.starts_with("API token"))
        .unwrap_or_else(|| panic!("no token printed: {lines:?}"));
    let token = token_line.rsplit(' ').next().unwrap_or("").to_string();
    assert!(token.starts_with("rl_") && token.len() > 40, "{token_line}");
    assert_eq!(get_status(port, "/v1/health", None), 200);
    assert_eq!(get_status(port, "/v1/scenarios", None), 401);
    assert_eq!(get_status(port, "/v1/scenarios", Some("rl_guess")), 401);
    assert_eq!(get_status(port, "/v1/scenarios", Some(&token)), 200);
    let _ = child.kill();
    let _ = child.wait();
    // The database keeps the digest, never the token.
    let db = std::fs::read(d.join("r.db")).unwrap_or_default();
    let wal = std::fs::read(d.join("r.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is stored in clear"
        );
    }
    // A restart keeps the same token and does not print it again.
    let port = free_port();
    let (mut child, lines) = start_run(&d, port);
    assert!(!lines.iter().any(|l| l.contains(&token)), "{lines:?}");
    assert_eq!(get_status(port, "/v1/scenarios", Some(&token)), 200);
    let _ = child.kill();
    let _ = child.wait();
    // `relance token new` replaces it.
    let fresh = ok(&d, &["token", "new", "--db", "r.db"]).trim().to_string();
    assert!(fresh.starts_with("rl_") && fresh != token, "{fresh}");
    let port = free_port();
    let (mut child, _) = start_run(&d, port);
    assert_eq!(get_status(port, "/v1/scenarios", Some(&token)), 401);
    assert_eq!(get_status(port, "/v1/scenarios", Some(&fresh)), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn hostile_run_beyond_loopback_needs_an_https_unsubscribe_url() {
    let d = dir("exposed");
    let out = Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(&d)
        .args(["run", "--db", "r.db", "--listen", "0.0.0.0:0"])
        .env(
            "RELANCE_UNSUBSCRIBE_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .env(
            "RELANCE_UNSUBSCRIBE_URL",
            "http://mail.example.com/unsubscribe",
        )
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https") && err.contains("reachable"), "{err}");
}

/// Open and click tracking links point at `RELANCE_PUBLIC_URL`: plain http to a public host
/// (readers' clicks in clear) stops `relance run` at start, naming the setting.
#[test]
fn hostile_run_refuses_a_plain_http_public_url_for_tracking() {
    let d = dir("tracking-http");
    let out = Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(&d)
        .args(["run", "--db", "r.db", "--listen", "127.0.0.1:0"])
        .env(
            "RELANCE_TRACKING_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .env("RELANCE_PUBLIC_URL", "http://relance.example.com")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RELANCE_PUBLIC_URL") && err.contains("https"),
        "{err}"
    );
}

/// Issue 11, finding 5: `relance consent show` prints the trail (one JSON object per line);
/// an import cannot undo an opt-out, `consent set` needs a source, and a reason to unsuppress.
#[test]
fn hostile_import_keeps_opt_outs_and_consent_show_prints_the_trail() {
    let d = dir("consent");
    let write = |name: &str, text: &str| {
        std::fs::write(d.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    };
    write(
        "out.csv",
        "id,email,suppressed,subscriptions.newsletter\nana,ana@example.org,ana@example.org,false\n",
    );
    write(
        "in.jsonl",
        "{\"id\": \"ana\", \"suppressed\": [], \"subscriptions\": {\"newsletter\": true}}\n",
    );
    ok(&d, &["contacts", "import", "out.csv", "--db", "r.db"]);
    let report = ok(&d, &["contacts", "import", "in.jsonl", "--db", "r.db"]);
    assert!(report.contains("2 consent value(s) kept"), "{report}");
    let trail = |d: &Path| -> Vec<serde_json::Value> {
        ok(d, &["consent", "show", "ana", "--db", "r.db"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let shown = trail(&d);
    let summary: Vec<_> = shown
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap_or(""),
                e["source"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                e["kept"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("suppressed", "import", "cli", false),
            ("unsubscribed", "import", "cli", false),
            ("lifted", "import", "cli", true),
            ("subscribed", "import", "cli", true),
        ],
        "{shown:#?}"
    );

    let no_source = relance(
        &d,
        &[
            "consent",
            "set",
            "ana",
            "--subscribe",
            "newsletter",
            "--db",
            "r.db",
        ],
    );
    assert_eq!(no_source.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_source.stderr).contains("source"));
    let no_reason = relance(
        &d,
        &[
            "consent",
            "set",
            "ana",
            "--unsuppress",
            "ana@example.org",
            "--source",
            "desk",
            "--db",
            "r.db",
        ],
    );
    assert_eq!(no_reason.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("reason"));
    assert_eq!(trail(&d).len(), 4, "refused calls append nothing");
    let set = ok(
        &d,
        &[
            "consent",
            "set",
            "ana",
            "--subscribe",
            "newsletter",
            "--unsuppress",
            "ana@example.org",
            "--source",
            "desk",
            "--reason",
            "ticket 7",
            "--db",
            "r.db",
        ],
    );
    assert_eq!(set.lines().count(), 2, "{set}");
    let shown = trail(&d);
    assert_eq!(shown.len(), 6);
    assert_eq!(shown[4]["state"], "subscribed");
    assert_eq!(shown[5]["state"], "lifted");
    assert_eq!(shown[5]["reason"], "ticket 7");
}

/// `relance report` on the database: the split example launched for the example contacts
/// (u2 and u5 held out, u1 on the short path, u3 and u4 on the long one: see the example's
/// header), as a table and as JSON; an unknown scenario is refused as `relance journal` does.
#[test]
fn report_reads_paths_and_holdout_from_the_database() {
    let d = dir("report");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let scenario = format!("{examples}split-test.yaml");
    let contacts = format!("{examples}contacts.jsonl");
    ok(&d, &["scenario", "put", &scenario, "--db", "r.db"]);
    ok(&d, &["scenario", "activate", "split-test", "--db", "r.db"]);
    ok(&d, &["contacts", "import", &contacts, "--db", "r.db"]);
    ok(&d, &["launch", "split-test", "--db", "r.db"]);

    let report: serde_json::Value =
        serde_json::from_str(&ok(&d, &["report", "split-test", "--db", "r.db", "--json"]))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["scenario"], "split-test");
    for key in ["entries", "converted", "rate", "interval", "revenue"] {
        assert!(report["total"].get(key).is_some(), "no {key}: {report}");
    }
    assert_eq!(report["total"]["entries"], 5, "{report}");
    assert_eq!(report["holdout"]["treated"]["entries"], 3, "{report}");
    assert_eq!(report["holdout"]["held_out"]["entries"], 2, "{report}");
    for key in ["absolute", "relative", "z", "p_value"] {
        assert!(
            report["holdout"]["lift"].get(key).is_some(),
            "no {key}: {report}"
        );
    }
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(steps, ["ab", "short", "long", "tips", "done"], "{report}");
    let paths = &report["steps"][0]["paths"];
    assert_eq!(paths[0]["path"], "short");
    assert_eq!(paths[0]["entries"], 1, "{paths}");
    assert_eq!(paths[1]["path"], "long");
    assert_eq!(paths[1]["entries"], 2, "{paths}");
    // Launched now: `tips` waits two days, so the long path has sent one message each.
    assert_eq!(paths[1]["sent"], 2, "{paths}");
    assert_eq!(report["steps"][1]["sent"], 1, "{report}");

    let table = ok(&d, &["report", "split-test", "--db", "r.db"]);
    // proportion_confint(0, 5, alpha=0.05, method="wilson") = (0.0, 0.43448246478317487).
    assert!(
        table.starts_with("split-test: 5 entries, 0 converted, 0.00% [0.00%, 43.45%]"),
        "{table}"
    );
    assert!(
        table.contains("held out: 2 entries") && table.contains("lift: +0.00 pp"),
        "{table}"
    );
    assert!(table.contains("p = 1.0000"), "{table}");
    let short = table
        .lines()
        .find(|l| l.contains("→ short"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(short.contains("[0.00%, 79.35%]"), "{short}");

    let unknown = relance(&d, &["report", "nope", "--db", "r.db"]);
    let journal = relance(&d, &["journal", "nope", "--db", "r.db"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(unknown.status.code(), journal.status.code());
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        String::from_utf8_lossy(&journal.stderr)
    );
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("scenario \"nope\" not found"),
        "{unknown:?}"
    );
}

/// GET `path` with the bearer token: the status code and the body.
fn get_text(port: u16, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn run_logs_sends_as_json_and_its_metrics_count_what_the_journal_holds() {
    use std::io::{BufRead, BufReader};
    let d = dir("json-logs");
    std::fs::write(
        d.join("s.yaml"),
        "id: metrics-cli\ntimezone: UTC\nlaunch: {type: after_import, contacts: added}\n\
         messages:\n  m: {channel: email, subject: \"Hi\", text: \"Hello\"}\n\
         steps:\n  - {id: first, send: m, next: done}\n  - {id: done, end: success}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.join("c.csv"),
        "id,email\nc1,c1@example.org\nc2,c2@example.org\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = "json-logs-token-0123456789abcdef";
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(&d)
        .args([
            "run",
            "--db",
            "r.db",
            "--outbox",
            "o.jsonl",
            "--scenario",
            "s.yaml",
        ])
        .args(["--contacts", "c.csv", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("RELANCE_LOG_FORMAT", "json")
        .env("RELANCE_API_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(d.join("log")).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    for line in BufReader::new(stdout).lines() {
        if line
            .unwrap_or_else(|e| panic!("{e}"))
            .contains("listening on")
        {
            break;
        }
    }
    // The two sends reach the outbox (polled: the runner delivers it beside the API).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(d.join("o.jsonl")).map_or(0, |t| t.lines().count()) < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, metrics) = get_text(port, "/metrics", token);
    assert_eq!(get_status(port, "/metrics", None), 401);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{metrics}");

    // Every log line is a JSON object; the send's carries its enrollment, scenario, step and key.
    let log = std::fs::read_to_string(d.join("log")).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let sent: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "sent").collect();
    assert_eq!(sent.len(), 2, "{log}");
    for f in sent {
        let line = f;
        assert_eq!(f["scenario"], "metrics-cli", "{line}");
        assert_eq!(f["step"], "first", "{line}");
        let enrollment = f["enrollment"].as_str().unwrap_or("");
        assert!(!enrollment.is_empty(), "{line}");
        assert_eq!(f["key"], format!("{enrollment}:first"), "{line}");
    }

    // /metrics counts what `relance journal` counts.
    let counts = ok(&d, &["journal", "metrics-cli", "--db", "r.db", "--json"]);
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap_or_else(|e| panic!("{e}"));
    let sample = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(counts["entered"], 2, "{counts}");
    assert_eq!(
        sample(r#"relance_entries_total{scenario="metrics-cli",result="entered"}"#),
        counts["entered"].as_u64(),
        "{metrics}"
    );
    assert_eq!(
        sample(
            r#"relance_sends_total{scenario="metrics-cli",step="first",channel="email",result="sent"}"#
        ),
        counts["steps"]["first"]["sent"].as_u64(),
        "{metrics}"
    );
}
