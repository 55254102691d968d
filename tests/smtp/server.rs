//! The SMTP test server (`tests/smtp/server.py`, aiosmtpd) run from Rust tests and benches: it
//! is spawned with the Python of `.smtp/` (made by `scripts/smtp-venv`) or of
//! `RELANCE_SMTP_PYTHON`, waited for, read back (every accepted message, headers and text parts
//! parsed by Python's `email`), and killed on drop. Without that Python, [`SmtpServer::start`]
//! prints "skipped: run scripts/smtp-venv" and gives `None`. Compiled into each binary with
//! `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// How the server protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    StartTls,
    Implicit,
    None,
}

/// What the server requires and which faults it injects.
#[derive(Debug, Clone)]
pub struct Options {
    pub tls: Protection,
    /// `user:pass` required through AUTH PLAIN or LOGIN.
    pub auth: Option<String>,
    /// The first DATA of each Message-ID is answered 451.
    pub transient_once: bool,
    /// RCPT TO these is answered `550 5.1.1 no such user`.
    pub reject: Vec<String>,
    /// Every DATA is answered `554 5.7.1 message refused by policy`.
    pub policy_reject: bool,
    /// Keep every accepted message (for [`SmtpServer::messages`]).
    pub record: bool,
}

impl Options {
    pub fn new(tls: Protection) -> Options {
        Options {
            tls,
            auth: None,
            transient_once: false,
            reject: Vec::new(),
            policy_reject: false,
            record: true,
        }
    }
}

/// One message the server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The raw message.
    pub data: String,
    /// Header names and decoded values, in order.
    pub headers: Vec<(String, String)>,
    /// The text parts: content type and decoded content.
    pub parts: Vec<Part>,
}

/// A text part of a received message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Part {
    pub content_type: String,
    pub content: String,
}

impl Received {
    /// The decoded value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers are called `name` (any case).
    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The decoded content of the first part of `content_type`.
    pub fn part(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.content.as_str())
    }
}

/// A running server; killed, and its files removed, on drop.
#[derive(Debug)]
pub struct SmtpServer {
    child: Child,
    /// Held open: the server ends when its standard input closes.
    _stdin: Option<ChildStdin>,
    pub port: u16,
    /// The CA that signed the server's certificate (with TLS).
    pub ca: Option<PathBuf>,
    dir: PathBuf,
    out: Option<PathBuf>,
}

/// The repository's root: the first parent of this crate holding `tests/smtp/server.py`.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("tests/smtp/server.py").is_file() {
            return dir;
        }
        if !dir.pop() {
            panic!(
                "tests/smtp/server.py not found above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// The Python with aiosmtpd and trustme: `RELANCE_SMTP_PYTHON`, else `.smtp/bin/python`.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RELANCE_SMTP_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".smtp/bin/python");
    venv.is_file().then_some(venv)
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "relance-smtp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory for the SMTP server");
    dir
}

impl SmtpServer {
    /// Starts a server with `options` and waits until it listens; `None` (after saying so)
    /// when the server's Python is not installed.
    pub fn start(options: &Options) -> Option<SmtpServer> {
        let Some(python) = python() else {
            eprintln!(
                "skipped: run scripts/smtp-venv (no .smtp/bin/python, RELANCE_SMTP_PYTHON unset)"
            );
            return None;
        };
        let dir = scratch_dir();
        let mut cmd = Command::new(&python);
        cmd.arg(repo_root().join("tests/smtp/server.py"))
            .args(["--port", "0", "--tls"])
            .arg(match options.tls {
                Protection::StartTls => "starttls",
                Protection::Implicit => "implicit",
                Protection::None => "none",
            })
            .arg("--ca")
            .arg(dir.join("ca.pem"));
        if let Some(auth) = &options.auth {
            cmd.args(["--auth", auth]);
        }
        if options.transient_once {
            cmd.arg("--transient-once");
        }
        for address in &options.reject {
            cmd.args(["--reject", address]);
        }
        if options.policy_reject {
            cmd.arg("--policy-reject");
        }
        let out = options.record.then(|| dir.join("received.jsonl"));
        if let Some(out) = &out {
            cmd.arg("--out").arg(out);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the SMTP server's ready line");
        let ready: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("the SMTP server did not start ({e}): {line:?}")
        });
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("a port in the ready line");
        let ca = ready["ca"].as_str().map(PathBuf::from);
        Some(SmtpServer {
            child,
            _stdin: stdin,
            port,
            ca,
            dir,
            out,
        })
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let Some(out) = &self.out else {
            return Vec::new();
        };
        match std::fs::read_to_string(out) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a received message as JSON"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", out.display()),
        }
    }

    /// How many messages were accepted so far (without parsing them).
    pub fn count(&self) -> usize {
        self.out
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or(0, |t| t.lines().count())
    }

    /// Its scratch directory (the CA, the received messages).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
