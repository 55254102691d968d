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
    /// The queues, when the functions use them.
    pub queues: QueueUrls,
    /// The EventBridge bus Relance emits its events on (`RELANCE_EVENT_BUS`), if any.
    pub event_bus: Option<String>,
    /// Relance's informational events not published on the bus (`RELANCE_MUTED_EVENTS`, some
    /// of [`MUTABLE_EVENTS`]): EventBridge bills every event published, listened to or not.
    pub muted_events: Vec<String>,
    /// Whether the informational events no rule or archive on the bus could receive are left
    /// out (`RELANCE_INFORMATIONAL_EVENTS`; see `crate::listeners`).
    pub informational: Informational,
}

/// When Relance's informational events (not muted) are published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Informational {
    /// While a rule or an archive on the bus could receive them, as the tick last found
    /// (`when-heard`, the default); always when that finding is missing or stale.
    #[default]
    WhenHeard,
    /// Always (`always`).
    Always,
}

impl Informational {
    /// `RELANCE_INFORMATIONAL_EVENTS`: `when-heard` (the default, also when unset or empty)
    /// or `always`.
    pub fn from_env() -> Result<Informational, ConfigError> {
        Informational::parse(&std::env::var("RELANCE_INFORMATIONAL_EVENTS").unwrap_or_default())
    }

    /// A `RELANCE_INFORMATIONAL_EVENTS` value.
    pub fn parse(value: &str) -> Result<Informational, ConfigError> {
        match value.trim() {
            "" | "when-heard" => Ok(Informational::WhenHeard),
            "always" => Ok(Informational::Always),
            other => Err(ConfigError {
                name: "RELANCE_INFORMATIONAL_EVENTS",
                why: format!("\"{other}\" is neither \"when-heard\" nor \"always\""),
            }),
        }
    }
}

/// The events a deployment may mute: they only inform (an enrollment ended, a goal reached).
/// The others carry work to other systems (a staff task, a lead, an export, a scenario's
/// `event` action) and always go out.
pub const MUTABLE_EVENTS: [&str; 2] = ["relance.enrollment.ended", "relance.goal.reached"];

/// The SQS queue URLs (absent where a deployment does not use one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueUrls {
    /// Due timers, for the step executor.
    pub step: Option<String>,
    /// Email sends, for the email sender.
    pub email: Option<String>,
    /// SMS sends.
    pub sms: Option<String>,
    /// Push sends.
    pub push: Option<String>,
    /// Web push sends.
    pub web_push: Option<String>,
    /// Large launches, fanned out in pages.
    pub launch: Option<String>,
    /// Webhook calls, for the webhook sender (`RELANCE_WEBHOOK_QUEUE_URL`).
    pub webhook: Option<String>,
    /// Where the webhook sender dead-letters a call still failing 24 h after its first
    /// attempt (`RELANCE_WEBHOOK_DLQ_URL`).
    pub webhook_dlq: Option<String>,
}

impl AwsConfig {
    /// Tables named after a prefix (`relance-` gives `relance-state` and `relance-timers`).
    pub fn with_prefix(prefix: &str, timer_shards: u32) -> AwsConfig {
        AwsConfig {
            state_table: format!("{prefix}state"),
            timers_table: format!("{prefix}timers"),
            timer_shards: timer_shards.max(1),
            queues: QueueUrls::default(),
            event_bus: None,
            muted_events: Vec::new(),
            informational: Informational::default(),
        }
    }

    /// From `RELANCE_STATE_TABLE`, `RELANCE_TIMERS_TABLE`, `RELANCE_TIMER_SHARDS` (default 4)
    /// and the optional `RELANCE_{STEP,EMAIL,SMS,PUSH,WEB_PUSH,LAUNCH}_QUEUE_URL`.
    pub fn from_env() -> Result<AwsConfig, ConfigError> {
        let var = |name: &'static str| {
            std::env::var(name).map_err(|_| ConfigError {
                name,
                why: "not set".into(),
            })
        };
        let shards = AwsConfig::timer_shards_from_env(4)?;
        Ok(AwsConfig {
            state_table: var("RELANCE_STATE_TABLE")?,
            timers_table: var("RELANCE_TIMERS_TABLE")?,
            timer_shards: shards,
            queues: QueueUrls::from_env(),
            event_bus: opt_var("RELANCE_EVENT_BUS"),
            muted_events: AwsConfig::muted_events_from_env()?,
            informational: Informational::from_env()?,
        })
    }

    /// `RELANCE_MUTED_EVENTS`: detail-types separated by commas, each one of
    /// [`MUTABLE_EVENTS`]; none when unset or empty.
    pub fn muted_events_from_env() -> Result<Vec<String>, ConfigError> {
        parse_muted_events(&std::env::var("RELANCE_MUTED_EVENTS").unwrap_or_default())
    }

    /// `RELANCE_TIMER_SHARDS` when set (a number from 1 to 1000), else `default`.
    pub fn timer_shards_from_env(default: u32) -> Result<u32, ConfigError> {
        let Ok(s) = std::env::var("RELANCE_TIMER_SHARDS") else {
            return Ok(default);
        };
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or(ConfigError {
                name: "RELANCE_TIMER_SHARDS",
                why: format!("\"{s}\" is not a number from 1 to 1000"),
            })
    }
}

/// The muted events a `RELANCE_MUTED_EVENTS` value names, refused when one may not be muted.
pub fn parse_muted_events(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !MUTABLE_EVENTS.contains(&name) {
            return Err(ConfigError {
                name: "RELANCE_MUTED_EVENTS",
                why: format!(
                    "\"{name}\" cannot be muted (only {}: the other events carry work to other systems)",
                    MUTABLE_EVENTS.join(", ")
                ),
            });
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

fn opt_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl QueueUrls {
    /// The optional `RELANCE_{STEP,EMAIL,SMS,PUSH,WEB_PUSH,LAUNCH,WEBHOOK}_QUEUE_URL` and
    /// `RELANCE_WEBHOOK_DLQ_URL`.
    pub fn from_env() -> QueueUrls {
        QueueUrls {
            step: opt_var("RELANCE_STEP_QUEUE_URL"),
            email: opt_var("RELANCE_EMAIL_QUEUE_URL"),
            sms: opt_var("RELANCE_SMS_QUEUE_URL"),
            push: opt_var("RELANCE_PUSH_QUEUE_URL"),
            web_push: opt_var("RELANCE_WEB_PUSH_QUEUE_URL"),
            launch: opt_var("RELANCE_LAUNCH_QUEUE_URL"),
            webhook: opt_var("RELANCE_WEBHOOK_QUEUE_URL"),
            webhook_dlq: opt_var("RELANCE_WEBHOOK_DLQ_URL"),
        }
    }

    /// Each URL of `self`, else the one of `other`.
    pub fn or(self, other: QueueUrls) -> QueueUrls {
        QueueUrls {
            step: self.step.or(other.step),
            email: self.email.or(other.email),
            sms: self.sms.or(other.sms),
            push: self.push.or(other.push),
            web_push: self.web_push.or(other.web_push),
            launch: self.launch.or(other.launch),
            webhook: self.webhook.or(other.webhook),
            webhook_dlq: self.webhook_dlq.or(other.webhook_dlq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn informational_events_follow_their_listeners_unless_told_always() {
        assert_eq!(
            Informational::parse("").ok(),
            Some(Informational::WhenHeard)
        );
        assert_eq!(
            Informational::parse(" when-heard ").ok(),
            Some(Informational::WhenHeard)
        );
        assert_eq!(
            Informational::parse("always").ok(),
            Some(Informational::Always)
        );
        let refused = Informational::parse("never")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            refused,
            "RELANCE_INFORMATIONAL_EVENTS: \"never\" is neither \"when-heard\" nor \"always\""
        );
    }

    #[test]
    fn only_informational_events_can_be_muted() {
        assert_eq!(parse_muted_events("").ok(), Some(Vec::new()));
        assert_eq!(
            parse_muted_events(
                " relance.enrollment.ended ,relance.goal.reached,relance.goal.reached"
            )
            .ok(),
            Some(vec![
                "relance.enrollment.ended".to_string(),
                "relance.goal.reached".to_string()
            ])
        );
        let refused = parse_muted_events("relance.enrollment.ended,relance.task")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.starts_with("RELANCE_MUTED_EVENTS: \"relance.task\" cannot be muted"),
            "{refused}"
        );
    }
}
