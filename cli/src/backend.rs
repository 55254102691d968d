//! Where the operating commands act: the embedded SQLite file, or DynamoDB through
//! [`crate::aws`]; and the helpers every operating command shares.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use relance_core::ports::SourceFormat;
use relance_embedded::runtime::Runtime;
use relance_embedded::store::SqliteStore;

/// Where the operating commands act: the embedded SQLite file, or DynamoDB on an endpoint
/// (LocalStack, the emulator) or on AWS.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `--db FILE`.
    Sqlite(PathBuf),
    /// `--endpoint URL` (or `--aws`): the tables named after `prefix`.
    Aws {
        /// The endpoint; None for AWS itself.
        endpoint: Option<String>,
        /// The resources' name prefix.
        prefix: String,
    },
}

/// Runs `$body` with `$rt` bound to the backend's runtime.
macro_rules! on_backend {
    ($backend:expr, |$rt:ident| $body:expr) => {
        match $backend {
            $crate::backend::Backend::Sqlite(db) => {
                let mut $rt = $crate::backend::open(db)?;
                $rt.set_actor($crate::backend::CLI_ACTOR);
                $body
            }
            $crate::backend::Backend::Aws { endpoint, prefix } => {
                let (_tokio, mut $rt) = $crate::aws::runtime(endpoint.as_deref(), prefix)?;
                $rt.set_actor($crate::backend::CLI_ACTOR);
                $body
            }
        }
    };
}

pub(crate) use on_backend;

/// The actor the consent log names for changes made from the command line.
pub const CLI_ACTOR: &str = "cli";

pub fn open(db: &Path) -> Result<Runtime<SqliteStore>> {
    let store =
        SqliteStore::open(db).with_context(|| format!("cannot open database {}", db.display()))?;
    Ok(Runtime::new(store))
}

pub fn source_format(path: &Path) -> SourceFormat {
    if path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".json")
    {
        SourceFormat::Json
    } else {
        SourceFormat::Yaml
    }
}

pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
