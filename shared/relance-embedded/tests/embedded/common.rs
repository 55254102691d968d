//! What several test modules share: the tests' starting instant and a temporary directory
//! removed when the test passes (kept when it fails: its files tell why).

use std::ops::Deref;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use relance_core::wire::ContactDetail;
use serde_json::Value;

/// The instant the tests' manual clocks start at (a Monday, 10:00 UTC).
pub fn t0() -> DateTime<Utc> {
    "2026-03-02T10:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A contact write (what `upsert_contact` takes) of these fields: `{"id": .., "email": ..}`.
pub fn contact_detail(fields: Value) -> ContactDetail {
    let Value::Object(contact) = fields else {
        panic!("a contact is a JSON object: {fields}");
    };
    ContactDetail {
        action: None,
        contact,
        at: None,
    }
}

/// A fresh, empty directory `relance-<prefix>-<pid>-<name>` under the system's temporary
/// directory, removed on drop unless the test is failing.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn fresh(prefix: &str, name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("relance-{prefix}-{}-{name}", std::process::id()));
        // A directory left by an earlier run with the same process id would hold old files.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
