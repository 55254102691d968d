//! Delivery of the outbox to a JSON-lines file (and the log), exactly once.
//!
//! Sends are stored in the outbox table in the same transaction as the transition that made
//! them; this module copies them to the file in `seq` order. The file itself says how far
//! delivery went (the `seq` of its last complete line), so a crash between writing a line and
//! anything else neither loses nor repeats a send; a torn last line is cut off on open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use relance_core::engine::Send;
use relance_core::unsubscribe::UnsubscribeLinks;
use serde_json::Value;

use crate::store::{SqliteStore, StoreError};

/// Why delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file could not be read or written.
    #[error("outbox file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outbox file, opened for appending.
#[derive(Debug)]
pub struct OutboxFile {
    path: PathBuf,
    file: File,
    last_seq: i64,
    unsubscribe: Option<UnsubscribeLinks>,
}

impl OutboxFile {
    /// Opens (or creates) the file, finds the last delivered `seq` and cuts a torn last line.
    pub fn open(path: &Path) -> Result<OutboxFile, OutboxError> {
        let io_err = |source| OutboxError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let mut last_seq = 0;
        let mut good_len = 0u64;
        {
            let mut reader = BufReader::new(&file);
            // Bytes, not `read_line`: a torn line may end inside a UTF-8 sequence, and that
            // must be cut like any torn line rather than refuse to open.
            let mut line = Vec::new();
            let mut offset = 0u64;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
                if !line.ends_with(b"\n") {
                    break;
                }
                if let Some(seq) = serde_json::from_slice::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_i64))
                {
                    last_seq = last_seq.max(seq);
                }
                good_len = offset;
            }
        }
        if file.metadata().map_err(io_err)?.len() > good_len {
            file.set_len(good_len).map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok(OutboxFile {
            path: path.to_path_buf(),
            file,
            last_seq,
            unsubscribe: None,
        })
    }

    /// Email lines carry RFC 8058 one-click `List-Unsubscribe` headers with signed links.
    pub fn with_unsubscribe(mut self, links: Option<UnsubscribeLinks>) -> OutboxFile {
        self.unsubscribe = links;
        self
    }

    /// The `seq` of the last delivered row.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Appends every stored row not yet in the file; returns how many.
    pub fn deliver(&mut self, store: &mut SqliteStore) -> Result<usize, OutboxError> {
        let mut total = 0;
        loop {
            let rows = store.outbox_after(self.last_seq, 1000)?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut buf = Vec::new();
            for (seq, kind, payload) in &rows {
                let mut v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut v {
                    map.insert("seq".into(), Value::from(*seq));
                }
                if let Some(headers) = self.headers(kind, &v) {
                    v["headers"] = headers;
                }
                log_row(kind, &v);
                // A JSON value always serializes; the empty fallback only keeps the line count right.
                buf.extend(serde_json::to_vec(&v).unwrap_or_default());
                buf.push(b'\n');
            }
            let io_err = |source| OutboxError::Io {
                path: self.path.clone(),
                source,
            };
            let before = self.file.metadata().map_err(io_err)?.len();
            if let Err(e) = self
                .file
                .write_all(&buf)
                .and_then(|()| self.file.sync_data())
            {
                // A half-written batch is cut back, so the retry starts on a clean line.
                let _ = self.file.set_len(before);
                return Err(io_err(e));
            }
            self.last_seq = rows.last().map_or(self.last_seq, |r| r.0);
            total += rows.len();
        }
    }
}

impl OutboxFile {
    /// The one-click unsubscribe headers of an email send line, as a JSON object.
    fn headers(&self, kind: &str, v: &Value) -> Option<Value> {
        let links = self.unsubscribe.as_ref().filter(|_| kind == "send")?;
        let send: Send = serde_json::from_value(v["send"].clone()).ok()?;
        let headers = links.headers_for(v["scenario"].as_str().unwrap_or(""), &send);
        (!headers.is_empty()).then(|| {
            Value::Object(
                headers
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        })
    }
}

fn log_row(kind: &str, v: &Value) {
    let send = &v["send"];
    match kind {
        "send" => tracing::info!(
            target: "relance::outbox",
            key = send["idempotency_key"].as_str().unwrap_or(""),
            channel = send["channel"].as_str().unwrap_or(""),
            contact = send["contact"].as_str().unwrap_or(""),
            message = send["message"].as_str().unwrap_or(""),
            "sent"
        ),
        _ => {
            tracing::info!(target: "relance::outbox", key = v["idempotency_key"].as_str().unwrap_or(""), "action")
        }
    }
}
