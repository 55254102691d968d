//! `relance run` refuses an unsubscribe key shorter than 32 bytes at start, naming the
//! setting, instead of signing years of links with a guessable key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn hostile_short_unsubscribe_key_stops_relance_run() {
    let dir = std::env::temp_dir().join(format!("relance-secrets-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_relance"))
        .current_dir(&dir)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("RELANCE_UNSUBSCRIBE_SECRET", "secret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // A run that accepted the key would serve until stopped: give it a while, then stop it.
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {
                let _ = child.kill();
                break None;
            }
        }
    };
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.is_some_and(|s| !s.success()),
        "relance run started with a 6-byte unsubscribe key: {stderr}"
    );
    assert!(
        stderr.contains("RELANCE_UNSUBSCRIBE_SECRET") && stderr.contains("at least 32"),
        "{stderr}"
    );
}
