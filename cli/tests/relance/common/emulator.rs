//! What the emulator tests of the CLI share: the emulator's endpoint and reading back what it
//! recorded (kept in this one place so another emulator can be swapped in).

use std::io::{Read, Write};
use std::sync::Once;

/// `AWS_ENDPOINT_URL`, which `./scripts/test` sets when it starts the emulator; `None` when it
/// is not set, after saying once that the emulator tests are skipped (so `cargo test` passes
/// offline). Each emulator test starts with `let Some(url) = endpoint() else { return };`.
pub fn endpoint() -> Option<String> {
    let url = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "AWS_ENDPOINT_URL is not set: the CLI's AWS emulator tests (aws_launch, dev) are skipped; run ./scripts/test, or eval \"$(scripts/emulator env)\" first, to run them"
            );
        });
    }
    url
}

/// What the emulator recorded at `path` (`/_ministack/ses/messages`, ...); null if none.
pub fn emulator_read(path: &str) -> serde_json::Value {
    let url = endpoint().unwrap_or_else(|| panic!("emulator_read needs AWS_ENDPOINT_URL"));
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&host).unwrap_or_else(|e| panic!("{host}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or("null"))
        .unwrap_or(serde_json::Value::Null)
}
