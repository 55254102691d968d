//! What the restart tests share: starting `relance run` on a database, an outbox and a
//! scenario, its stderr in a log file and its stdout lines on a channel; reading the journal.

pub mod emulator;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};

/// The files of one `relance run`.
pub struct RunFiles<'a> {
    pub db: &'a Path,
    pub outbox: &'a Path,
    pub scenario: &'a Path,
    /// Imported at start when given.
    pub contacts: Option<&'a Path>,
    /// Where its stderr goes.
    pub log: &'a Path,
}

/// The API token the tests give `relance run` (RELANCE_API_TOKEN).
pub const API_TOKEN: &str = "test-token-0123456789abcdefghij";

/// Starts `relance run` listening on 127.0.0.1:`port` at log level `level`.
pub fn spawn_run(files: &RunFiles<'_>, port: u16, level: &str) -> (Child, Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relance"));
    cmd.arg("run")
        .arg("--db")
        .arg(files.db)
        .arg("--outbox")
        .arg(files.outbox)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--scenario")
        .arg(files.scenario);
    if let Some(contacts) = files.contacts {
        cmd.arg("--contacts").arg(contacts);
    }
    let mut child = cmd
        .env("RELANCE_LOG", level)
        .env("RELANCE_API_TOKEN", API_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(files.log).expect("create the stderr log"))
        .spawn()
        .expect("spawn relance run");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// `relance journal SCENARIO --db DB --json`.
pub fn journal(scenario: &str, db: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_relance"))
        .arg("journal")
        .arg(scenario)
        .arg("--db")
        .arg(db)
        .arg("--json")
        .output()
        .expect("run relance journal");
    assert!(
        out.status.success(),
        "relance journal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("journal JSON")
}
