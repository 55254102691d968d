//! What the emulator tests of the CLI share: the emulator's endpoint and reading back what it
//! recorded (kept in this one place so another emulator can be swapped in).
#![allow(dead_code)]

use std::io::{Read, Write};

/// `AWS_ENDPOINT_URL`, which `./scripts/test` sets when it starts the emulator.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts the local AWS emulator"
        )
    })
}

/// What the emulator recorded at `path` (`/_ministack/ses/messages`, ...); null if none.
pub fn emulator_read(path: &str) -> serde_json::Value {
    let url = endpoint();
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
