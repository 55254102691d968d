//! Delivery of the outbox to a JSON-lines file (and the log).
//!
//! Sends are stored in the outbox table in the same transaction as the transition that made
//! them; this module copies them to the file in `seq` order. How far delivery went is kept in
//! the database (`outbox_delivery`: the highest `seq` appended), written after each append
//! is synced, so moving the file away (log rotation) re-sends nothing: the next line starts a
//! new file. A crash between the append and that write leaves lines past the cursor in the
//! file; on open they are read back and a row whose `seq` and idempotency key a line already
//! shows is not appended again. The one case left is at-least-once: the file rotated away
//! after such a crash and before the restart (those last lines, at most what was appended
//! since the cursor was last recorded: one batch of 1,000 when the runner delivers, one round's
//! rows when the outbox thread does,
//! go to the new file too). A torn last line (a crash inside a write) is cut off on open and
//! written again: when the file's last complete line is then behind the cursor, delivery
//! resumes after that line (a rotated file has no torn line, so this never re-sends the old
//! file's lines).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use relance_core::engine::Send;
use relance_core::unsubscribe::UnsubscribeLinks;
use serde_json::Value;

use crate::store::{SqliteStore, StoreError};

mod writer;
pub use writer::OutboxWriter;

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
    /// The highest `seq` in the file or skipped as already there (this process's cursor).
    last_seq: i64,
    /// The cursor as the database has it (behind `last_seq` only while a write failed).
    saved_seq: i64,
    /// Lines past the database's cursor found in the file on open: `seq` → idempotency key.
    present: HashMap<i64, String>,
    unsubscribe: Option<UnsubscribeLinks>,
}

/// Who writes the outbox file: a thread of its own ([`OutboxWriter`]), or the runner itself
/// for an in-memory database (which a second connection cannot open) or when the thread could
/// not start (logged). The runner of `relance run` and the drip bench use it the same way.
#[derive(Debug)]
pub enum Delivery {
    /// The file written by the writer's thread.
    Writer(Threaded),
    /// The file written by the runner.
    Inline(OutboxFile),
}

/// The outbox thread as the runner holds it, with the cursor it last recorded.
#[derive(Debug)]
pub struct Threaded {
    writer: OutboxWriter,
    /// The cursor last recorded in the database.
    recorded: i64,
    /// The thread was found ended (logged once).
    ended: bool,
}

impl Delivery {
    /// The writer's thread on the store's database file, or the runner's own delivery when
    /// there is none.
    pub fn start(file: OutboxFile, store: &mut SqliteStore) -> Delivery {
        let Some(db) = store.file_path() else {
            return Delivery::Inline(file);
        };
        let recorded = file.last_seq();
        match OutboxWriter::start(file, &db) {
            Ok(writer) => Delivery::Writer(Threaded {
                writer,
                recorded,
                ended: false,
            }),
            Err(failed) => {
                let (file, e) = *failed;
                tracing::warn!(error = %e, "no outbox thread; the runner writes the outbox file");
                Delivery::Inline(file)
            }
        }
    }

    /// Delivers (or hands over) the rows up to `synced`; with `in_file`, returns once they are
    /// in the file (or a delivery failed, logged).
    pub fn deliver(&mut self, store: &mut SqliteStore, synced: i64, in_file: bool) {
        match self {
            Delivery::Inline(file) => {
                if let Err(e) = file.deliver_upto(store, synced) {
                    tracing::error!(error = %e, "outbox delivery failed; retrying after the next round");
                }
            }
            Delivery::Writer(threaded) => threaded.deliver(store, synced, in_file),
        }
    }
}

impl Threaded {
    /// [`Delivery::deliver`] through the thread, then the cursor it published recorded: so the
    /// recorded cursor trails the file by at most what the thread appended since the runner's
    /// previous round.
    fn deliver(&mut self, store: &mut SqliteStore, synced: i64, in_file: bool) {
        if !self.ended && self.writer.ended() {
            self.ended = true;
            tracing::error!(
                "the outbox thread has stopped; the outbox file no longer grows until a restart delivers what it missed"
            );
        }
        if in_file {
            self.writer.wait(synced);
        } else {
            self.writer.advance(synced);
        }
        let delivered = self.writer.delivered();
        if delivered <= self.recorded {
            return;
        }
        match store.set_outbox_delivered(delivered) {
            Ok(()) => self.recorded = delivered,
            Err(e) => {
                tracing::error!(error = %e, "outbox cursor not recorded; retrying after the next round");
            }
        }
    }
}

/// Where delivery reads the rows to append, and says how far the file goes.
pub trait OutboxRows {
    /// Rows after `after` and up to `upto`, in order: (seq, kind, payload JSON).
    fn between(
        &mut self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError>;

    /// The file holds every row up to `seq`, synced.
    fn delivered(&mut self, seq: i64) -> Result<(), StoreError>;
}

/// The store itself: the rows read, and the cursor recorded, on its connection.
impl OutboxRows for SqliteStore {
    fn between(
        &mut self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.outbox_between(after, upto, limit)
    }

    fn delivered(&mut self, seq: i64) -> Result<(), StoreError> {
        self.set_outbox_delivered(seq)
    }
}

/// The idempotency key a line or row carries (sends under `send`, actions at the top).
fn key_of(v: &Value) -> Option<&str> {
    v.get("idempotency_key")
        .and_then(Value::as_str)
        .or_else(|| v.get("send")?.get("idempotency_key")?.as_str())
}

impl OutboxFile {
    /// Opens (or creates) the file, cuts a torn last line, and reads where delivery stands:
    /// the database's cursor, and the lines past it the file already has (a crash after an
    /// append). A database without a cursor (made before it existed) takes the file's last
    /// `seq`, as delivery did then.
    pub fn open(path: &Path, store: &mut SqliteStore) -> Result<OutboxFile, OutboxError> {
        let io_err = |source| OutboxError::Io {
            path: path.to_path_buf(),
            source,
        };
        let cursor = store.outbox_delivered()?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let mut file_last = 0;
        let mut present = HashMap::new();
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
                if let Ok(v) = serde_json::from_slice::<Value>(&line)
                    && let Some(seq) = v.get("seq").and_then(Value::as_i64)
                {
                    file_last = file_last.max(seq);
                    if cursor.is_some_and(|c| seq > c)
                        && let Some(key) = key_of(&v)
                    {
                        present.insert(seq, key.to_string());
                    }
                }
                good_len = offset;
            }
        }
        let torn = file.metadata().map_err(io_err)?.len() > good_len;
        if torn {
            file.set_len(good_len).map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        let last_seq = match cursor {
            // The torn line, and any the same crash lost after the last complete one, go again.
            Some(c) if torn && file_last > 0 => c.min(file_last),
            Some(c) => c,
            None => {
                store.set_outbox_delivered(file_last)?;
                file_last
            }
        };
        Ok(OutboxFile {
            path: path.to_path_buf(),
            file,
            last_seq,
            saved_seq: last_seq,
            present,
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

    /// Appends every stored row not yet in the file, then records the cursor in the
    /// database; returns how many lines were appended.
    pub fn deliver(&mut self, store: &mut SqliteStore) -> Result<usize, OutboxError> {
        self.deliver_upto(store, i64::MAX)
    }

    /// [`OutboxFile::deliver`], of the rows up to `upto` only: the runner delivers what is
    /// synced to disk, not rows committed since (see [`crate::durable`]).
    pub fn deliver_upto(
        &mut self,
        rows: &mut impl OutboxRows,
        upto: i64,
    ) -> Result<usize, OutboxError> {
        let mut total = 0;
        loop {
            if self.saved_seq < self.last_seq {
                rows.delivered(self.last_seq)?;
                self.saved_seq = self.last_seq;
            }
            if self.last_seq >= upto {
                return Ok(total);
            }
            let rows = rows.between(self.last_seq, upto, 1000)?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut buf = Vec::new();
            let mut lines = 0;
            let log = tracing::enabled!(target: "relance::outbox", tracing::Level::INFO);
            for (seq, kind, payload) in &rows {
                // The common case, a row to append as stored with its `seq` added: spliced in
                // as text, the same bytes as parsing and writing it again would give (the
                // payload was written by serde_json), at a fraction of the cost.
                if self.present.is_empty()
                    && (kind != "send" || self.unsubscribe.is_none())
                    && let Some(line) = with_seq(payload, *seq)
                {
                    if log && let Ok(v) = serde_json::from_str::<Value>(payload) {
                        log_row(kind, &v);
                    }
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    lines += 1;
                    continue;
                }
                let mut v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
                if self
                    .present
                    .get(seq)
                    .is_some_and(|key| key_of(&v) == Some(key.as_str()))
                {
                    // Appended before a crash kept the cursor from moving: already out. Kept in
                    // `present` until this batch is written: if its write fails, the retry must
                    // still know (they are dropped once the cursor passes them, below).
                    continue;
                }
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
                lines += 1;
            }
            let io_err = |source| OutboxError::Io {
                path: self.path.clone(),
                source,
            };
            if !buf.is_empty() {
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
            }
            self.last_seq = rows.last().map_or(self.last_seq, |r| r.0);
            self.present.retain(|seq, _| *seq > self.last_seq);
            total += lines;
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

/// A stored payload (a compact JSON object without `seq`) with `"seq": seq` added last, as
/// inserting it into the parsed object and writing that out gives; `None` for anything else.
fn with_seq(payload: &str, seq: i64) -> Option<String> {
    let body = payload.strip_prefix('{')?.strip_suffix('}')?;
    if body.contains("\"seq\":") {
        return None;
    }
    let separator = if body.is_empty() { "" } else { "," };
    Some(format!("{{{body}{separator}\"seq\":{seq}}}"))
}

fn log_row(kind: &str, v: &Value) {
    let send = &v["send"];
    match kind {
        "send" => tracing::info!(
            target: "relance::outbox",
            key = send["idempotency_key"].as_str().unwrap_or(""),
            enrollment = send["enrollment"].as_str().unwrap_or(""),
            scenario = v["scenario"].as_str().unwrap_or(""),
            step = send["step"].as_str().unwrap_or(""),
            channel = send["channel"].as_str().unwrap_or(""),
            contact = send["contact"].as_str().unwrap_or(""),
            message_id = send["message"].as_str().unwrap_or(""),
            "sent"
        ),
        _ => {
            tracing::info!(
                target: "relance::outbox",
                key = v["idempotency_key"].as_str().unwrap_or(""),
                enrollment = v["enrollment"].as_str().unwrap_or(""),
                scenario = v["scenario"].as_str().unwrap_or(""),
                step = v["step"].as_str().unwrap_or(""),
                "action"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_seq_gives_the_bytes_of_parsing_and_writing_again() {
        let payloads = [
            r#"{"scenario":"drip","send":{"to":"a\"b@x.io","text":"caf\u00e9 \u2028","n":1.5e-7,"tags":[1,2]},"idempotency_key":"k"}"#,
            r#"{"kind":"action","payload":{"nested":{"deep":[{"x":null}]}}}"#,
            "{}",
        ];
        for payload in payloads {
            // As the store writes it: serde_json's compact form.
            let stored = serde_json::from_str::<Value>(payload)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let mut v: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("seq".into(), Value::from(42));
            }
            let written = serde_json::to_string(&v).unwrap_or_default();
            assert_eq!(
                with_seq(&stored, 42).as_deref(),
                Some(written.as_str()),
                "{stored}"
            );
        }
        assert_eq!(with_seq("[1]", 1), None);
        assert_eq!(
            with_seq(r#"{"seq":3}"#, 1),
            None,
            "an existing seq is replaced, not doubled"
        );
    }
}
