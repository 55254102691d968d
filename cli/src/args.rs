//! The command line, as clap reads it: every command, its arguments and flags (DESIGN §6).
//! Commands with several actions (`scenario put|activate|...`, `consent show|set`) are
//! nested subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::backend::Backend;

/// Relance: marketing-automation scenarios as code.
#[derive(Debug, Parser)]
#[command(name = "relance", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How logs are written to stderr: text, or json (one object per line, with the
    /// enrollment, scenario, step and idempotency key of sends as fields).
    #[arg(long, global = true, env = "RELANCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of the logs (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's json format), for log shippers.
    Json,
}

/// Where the operating commands act.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The SQLite database.
    #[arg(long, default_value = "relance.db")]
    db: PathBuf,
    /// Act on DynamoDB at this endpoint (LocalStack, the emulator) instead of the database.
    #[arg(long)]
    endpoint: Option<String>,
    /// Act on DynamoDB in AWS (credentials and region from the environment).
    #[arg(long)]
    aws: bool,
    /// The AWS resources' name prefix.
    #[arg(long, default_value = "relance-")]
    prefix: String,
}

impl StoreArgs {
    /// The backend these arguments select.
    pub fn backend(self) -> Backend {
        if self.endpoint.is_some() || self.aws {
            Backend::Aws {
                endpoint: self.endpoint,
                prefix: self.prefix,
            }
        } else {
            Backend::Sqlite(self.db)
        }
    }
}

/// The commands, as `relance COMMAND ...` names them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every problem of a scenario file, located; exit 1 when there is an error.
    Validate {
        /// The scenario file (YAML or JSON).
        file: PathBuf,
        /// Print the problems as a JSON array.
        #[arg(long)]
        json: bool,
        /// A shared message store file (message id → message) for the messages the
        /// scenario uses without defining them.
        #[arg(long)]
        messages: Option<PathBuf>,
    },
    /// Run the embedded engine on the real clock, with the HTTP API.
    Run {
        /// The SQLite database (created if missing).
        #[arg(long, default_value = "relance.db")]
        db: PathBuf,
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// The outbox: sent messages, one JSON object per line.
        #[arg(long, default_value = "outbox.jsonl")]
        outbox: PathBuf,
        /// Scenario files to put and activate at start (repeatable).
        #[arg(long = "scenario")]
        scenarios: Vec<PathBuf>,
        /// A contacts file to import at start (CSV or JSON lines).
        #[arg(long)]
        contacts: Option<PathBuf>,
        /// A host name the API answers to besides IP addresses and localhost (repeatable;
        /// also RELANCE_ALLOWED_HOSTS, comma-separated): any other `Host` is refused.
        #[arg(long = "allowed-host")]
        allowed_hosts: Vec<String>,
        /// Which backend delivers each channel (the outbox file records every send either way).
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// The HTTP API's token: `token new` makes a new one (printed once, stored hashed;
    /// restart `relance run` to use it).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Manage stored scenarios: put FILE, activate ID, pause ID, archive ID, list.
    Scenario {
        #[command(subcommand)]
        action: ScenarioCommand,
    },
    /// The workspace policy every scenario obeys: `policy set FILE` (quiet hours, a frequency
    /// cap across scenarios, exempt types), `policy show`.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// The shared message store: `messages put FILE` (message id → message, as in a
    /// scenario's `messages`), `messages show`. Scenarios stored afterwards copy in the
    /// messages they use without defining them.
    Messages {
        #[command(subcommand)]
        action: MessagesCommand,
    },
    /// Launch an active scenario for some contacts, or for its audience.
    Launch {
        /// The scenario id.
        scenario: String,
        /// Only these contacts (repeatable); default its whole audience.
        #[arg(long = "contact")]
        contacts: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Contacts: `relance contacts import FILE` (CSV with a header row, or JSON lines).
    Contacts {
        #[command(subcommand)]
        action: ContactsCommand,
    },
    /// Import from another tool: `import pinpoint JOURNEY.json [--out FILE]` writes a scenario
    /// from an Amazon Pinpoint journey (`aws pinpoint get-journey` output), its warnings on
    /// standard error; exit 1 when it cannot be imported faithfully or does not validate.
    Import {
        #[command(subcommand)]
        action: ImportCommand,
    },
    /// Consent (DESIGN §4): `consent show CONTACT` prints the trail, one JSON object per
    /// line; `consent set CONTACT --subscribe TYPE --source S` re-subscribes (the only way
    /// after an opt-out), `--unsuppress ADDRESS --reason R` lifts a suppression.
    Consent {
        #[command(subcommand)]
        action: ConsentCommand,
    },
    /// Counts per step and per end of a scenario, or one contact's path.
    Journal {
        /// The scenario id.
        scenario: String,
        /// Print this contact's path instead.
        #[arg(long)]
        contact: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The experiment report of a scenario: per step and per split path or message variant,
    /// the sends, engagement, conversions with their 95% interval, and the lift against the
    /// holdout.
    Report {
        /// The scenario id.
        scenario: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a new scenario file from a built-in template (without --template: list them).
    New {
        /// The template.
        #[arg(long)]
        template: Option<String>,
        /// The new scenario's id.
        #[arg(long)]
        id: Option<String>,
        /// Its display name.
        #[arg(long)]
        name: Option<String>,
        /// Where to write it (default ID.yaml; - for standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Copy a stored scenario under a new id (as a draft).
    Clone {
        /// The scenario to copy.
        from: String,
        /// The new id.
        to: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run a scenario for 1 to 100 test profiles on a fast clock, in a throwaway store, and
    /// print each profile's path.
    Test {
        /// The scenario file.
        file: PathBuf,
        /// The test profiles (JSON lines or CSV).
        #[arg(long)]
        contacts: PathBuf,
        /// Events to play (JSON lines, as for simulate).
        #[arg(long)]
        events: Option<PathBuf>,
        /// How many times faster than real time waits pass (86400: a day per second).
        #[arg(long, default_value_t = 86_400.0)]
        speed: f64,
        /// How long to play at most (ISO-8601 duration of scenario time).
        #[arg(long, default_value = "P30D")]
        until: String,
        /// Scenario time at the start (RFC 3339); default now.
        #[arg(long)]
        start: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Local AWS development: `dev up` creates the tables, queues, bus and rule; `dev run`
    /// hosts every function's handler in this process, polling the queues.
    Dev {
        #[command(subcommand)]
        action: DevCommand,
    },
    /// Draw a scenario: Mermaid text (default), Graphviz DOT or SVG; with --db, the journal's
    /// counts on each step.
    Graph {
        /// The scenario file (YAML or JSON).
        file: PathBuf,
        /// mermaid, dot or svg.
        #[arg(long, default_value = "mermaid")]
        format: String,
        /// A database whose journal gives the counts.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Print the JSON Schema of scenario files (for editors), or with --events the schemas of
    /// the events applications send (EventBridge details and API bodies).
    Schema {
        /// The schemas of the events instead.
        #[arg(long)]
        events: bool,
    },
    /// Play a scenario on a virtual clock and print what happens, one JSON object per line.
    Simulate {
        /// The scenario file (YAML or JSON).
        file: PathBuf,
        /// Contacts: JSON lines (one object per line) or a JSON array.
        #[arg(long)]
        contacts: PathBuf,
        /// Events: JSON lines of engagement and activity (`{"at", "contact", "opened": step}`, `{"at", "contact", "event": name}`).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Start of the virtual clock (RFC 3339); default now.
        #[arg(long)]
        start: Option<String>,
        /// How long to play (ISO-8601 duration).
        #[arg(long, default_value = "P30D")]
        until: String,
        /// End with the counts per step and per end (a line `"kind": "journal"`) and the
        /// experiment report (a last line `"kind": "report"`).
        #[arg(long)]
        journal: bool,
        /// The workspace policy (quiet hours, a frequency cap across scenarios), as
        /// `relance policy set` stores it for the runtime.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A shared message store file, as `relance messages put` stores it.
        #[arg(long)]
        messages: Option<PathBuf>,
    },
}

/// `relance token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new API token (printed once, stored hashed; restart `relance run` to use it).
    New {
        /// The SQLite database.
        #[arg(long, default_value = "relance.db")]
        db: PathBuf,
    },
}

/// `relance scenario ...`.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Store a new version of a scenario file.
    Put {
        /// The scenario file (YAML or JSON).
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Activate a stored scenario (its latest version).
    Activate {
        /// The scenario id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pause a scenario: its enrollments hold their timers.
    Pause {
        /// The scenario id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Archive a scenario.
    Archive {
        /// The scenario id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the stored scenarios.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `relance policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Store the workspace policy file.
    Set {
        /// The policy file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the stored policy.
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `relance messages ...`.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Store the shared message store file.
    Put {
        /// The message store file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the shared message store.
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `relance contacts ...`.
#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Import contacts: CSV with a header row, or JSON lines.
    Import {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `relance import ...`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// An Amazon Pinpoint journey (the JSON of `aws pinpoint get-journey`, wrapped in
    /// `JourneyResponse` or bare) as a scenario file.
    Pinpoint {
        /// The journey JSON file.
        file: PathBuf,
        /// Where to write the scenario (default standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `relance consent ...`.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Print a contact's consent trail, one JSON object per line.
    Show {
        /// The contact id.
        contact: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Record consent given outside Relance: re-subscribe (the only way after an opt-out),
    /// unsubscribe, or lift a suppression.
    Set {
        /// The contact id.
        contact: String,
        /// Subscribe to this communication type (repeatable).
        #[arg(long)]
        subscribe: Vec<String>,
        /// Unsubscribe from this communication type (repeatable).
        #[arg(long)]
        unsubscribe: Vec<String>,
        /// Lift the suppression of this address (repeatable; needs --reason).
        #[arg(long)]
        unsuppress: Vec<String>,
        /// Where the consent was given (a form, a ticket): required.
        #[arg(long)]
        source: Option<String>,
        /// Why: required to lift a suppression.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where `relance dev` acts.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The AWS-compatible endpoint (LocalStack, the emulator); default the environment's.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The resources' name prefix.
    #[arg(long, default_value = "relance-")]
    pub prefix: String,
}

/// `relance dev ...`.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create the tables, queues, bus and rule.
    Up {
        #[command(flatten)]
        at: DevArgs,
        /// Timer shards.
        #[arg(long, default_value_t = 4)]
        shards: u32,
    },
    /// Host every function's handler in this process, polling the queues.
    Run {
        #[command(flatten)]
        at: DevArgs,
        /// The verified sender of emails.
        #[arg(long, default_value = "relance@example.com")]
        from: String,
        /// Seconds between ticks.
        #[arg(long, default_value_t = 5)]
        tick_every: u64,
    },
}

/// Where `relance run` delivers each channel. `outbox` (the default) only appends to the outbox
/// file: a dry run. The real backends read their settings from the environment (README, "Send
/// for real from `relance run`").
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Email: outbox, smtp (RELANCE_SMTP_URL) or ses (AWS credentials, RELANCE_FROM_EMAIL).
    #[arg(
        long = "email",
        env = "RELANCE_EMAIL_BACKEND",
        default_value = "outbox"
    )]
    pub email: EmailBackend,
    /// SMS: outbox or sns (AWS credentials).
    #[arg(long = "sms", env = "RELANCE_SMS_BACKEND", default_value = "outbox")]
    pub sms: SnsBackendChoice,
    /// Mobile push: outbox or sns (AWS credentials; the contacts' platform endpoints).
    #[arg(long = "push", env = "RELANCE_PUSH_BACKEND", default_value = "outbox")]
    pub push: SnsBackendChoice,
    /// Web push: outbox or direct (to the browsers' push services; RELANCE_VAPID_PRIVATE_KEY,
    /// RELANCE_VAPID_SUBJECT).
    #[arg(
        long = "web-push",
        env = "RELANCE_WEB_PUSH_BACKEND",
        default_value = "outbox"
    )]
    pub web_push: WebPushBackendChoice,
}

/// Email backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmailBackend {
    /// The outbox file only (dry run).
    Outbox,
    /// An SMTP server or relay.
    Smtp,
    /// Amazon SES.
    Ses,
}

/// SMS and mobile push backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnsBackendChoice {
    /// The outbox file only (dry run).
    Outbox,
    /// Amazon SNS.
    Sns,
}

/// Web push backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebPushBackendChoice {
    /// The outbox file only (dry run).
    Outbox,
    /// The browsers' push services, directly.
    Direct,
}
