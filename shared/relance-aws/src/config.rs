//! Where the AWS adapters keep things: table names and the timer shard count, read from the
//! environment once (functions fail fast when one is missing).

/// A missing or bad setting.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {why}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: &'static str,
    /// What is wrong.
    pub why: String,
}

/// The adapters' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// The state table: scenarios, contacts, history, enrollments, entry marks, journal.
    pub state_table: String,
    /// The durable timer table: partition = minute bucket + shard, sort = due time + id.
    pub timers_table: String,
    /// How many shards each minute's timers are spread over (so no partition runs hot).
    pub timer_shards: u32,
}

impl AwsConfig {
    /// Tables named after a prefix (`relance-` gives `relance-state` and `relance-timers`).
    pub fn with_prefix(prefix: &str, timer_shards: u32) -> AwsConfig {
        AwsConfig {
            state_table: format!("{prefix}state"),
            timers_table: format!("{prefix}timers"),
            timer_shards: timer_shards.max(1),
        }
    }

    /// From `RELANCE_STATE_TABLE`, `RELANCE_TIMERS_TABLE` and `RELANCE_TIMER_SHARDS` (default 4).
    pub fn from_env() -> Result<AwsConfig, ConfigError> {
        let var = |name: &'static str| {
            std::env::var(name).map_err(|_| ConfigError {
                name,
                why: "not set".into(),
            })
        };
        let shards = match std::env::var("RELANCE_TIMER_SHARDS") {
            Ok(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or(ConfigError {
                    name: "RELANCE_TIMER_SHARDS",
                    why: format!("\"{s}\" is not a number from 1 to 1000"),
                })?,
            Err(_) => 4,
        };
        Ok(AwsConfig {
            state_table: var("RELANCE_STATE_TABLE")?,
            timers_table: var("RELANCE_TIMERS_TABLE")?,
            timer_shards: shards,
        })
    }
}
