//! The `relance` command: a thin layer over `relance-core` that reads files, calls the
//! engine and prints. Exit status: 0 fine, 1 the scenario has errors, 2 bad usage or input.

/// `println!` that reports a write failure (a closed pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// `print!` that reports a write failure instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod aws;
mod embedded;
mod templates;

use std::fs;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};
use clap::{Parser, Subcommand};
use relance_core::journal::{JournalCounts, Record};
use relance_core::ports::SourceFormat;
use relance_core::script;
use relance_core::validate::{self, Report};
use relance_core::{Contact, Format, IsoDuration};
use relance_runtime::player::Sink;
use relance_runtime::runtime::RuntimeError;
use relance_runtime::simulate::Simulation;

/// Relance: marketing-automation scenarios as code.
#[derive(Debug, Parser)]
#[command(name = "relance", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the operating commands act.
#[derive(Debug, clap::Args)]
struct StoreArgs {
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
    fn backend(self) -> embedded::Backend {
        if self.endpoint.is_some() || self.aws {
            embedded::Backend::Aws {
                endpoint: self.endpoint,
                prefix: self.prefix,
            }
        } else {
            embedded::Backend::Sqlite(self.db)
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
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
    },
    /// The HTTP API's token: `token new` makes a new one (printed once, stored hashed;
    /// restart `relance run` to use it).
    Token {
        /// new.
        action: String,
        /// The SQLite database.
        #[arg(long, default_value = "relance.db")]
        db: PathBuf,
    },
    /// Manage stored scenarios: put FILE, activate ID, pause ID, archive ID, list.
    Scenario {
        /// put, activate, pause, archive or list.
        action: String,
        /// The file (put) or the scenario id.
        target: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The workspace policy every scenario obeys: `policy set FILE` (quiet hours, a frequency
    /// cap across scenarios, exempt types), `policy show`.
    Policy {
        /// set or show.
        action: String,
        /// The policy file (set).
        file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The shared message store: `messages put FILE` (message id → message, as in a
    /// scenario's `messages`), `messages show`. Scenarios stored afterwards copy in the
    /// messages they use without defining them.
    Messages {
        /// put or show.
        action: String,
        /// The message store file (put).
        file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
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
        /// import.
        action: String,
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Consent (DESIGN §4): `consent show CONTACT` prints the trail, one JSON object per
    /// line; `consent set CONTACT --subscribe TYPE --source S` re-subscribes (the only way
    /// after an opt-out), `--unsuppress ADDRESS --reason R` lifts a suppression.
    Consent {
        /// show or set.
        action: String,
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
        /// Where the consent was given (a form, a ticket): required by set.
        #[arg(long)]
        source: Option<String>,
        /// Why: required to lift a suppression.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
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
        /// up or run.
        action: String,
        /// The AWS-compatible endpoint (LocalStack, the emulator); default the environment's.
        #[arg(long)]
        endpoint: Option<String>,
        /// The resources' name prefix.
        #[arg(long, default_value = "relance-")]
        prefix: String,
        /// The verified sender of emails (dev run).
        #[arg(long, default_value = "relance@example.com")]
        from: String,
        /// Seconds between ticks (dev run).
        #[arg(long, default_value_t = 5)]
        tick_every: u64,
        /// Timer shards (dev up).
        #[arg(long, default_value_t = 4)]
        shards: u32,
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
        /// Print the counts per step and per end as a last line (`"kind": "journal"`).
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELANCE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run {
            db,
            listen,
            outbox,
            scenarios,
            contacts,
            allowed_hosts,
        } => embedded::run(
            &db,
            listen,
            &outbox,
            &scenarios,
            contacts.as_deref(),
            allowed_hosts,
        ),
        Command::Token { action, db } if action == "new" => embedded::token_new(&db),
        Command::Token { action, .. } => Err(anyhow::anyhow!(
            "unknown token action \"{action}\": use new"
        )),
        Command::Scenario {
            action,
            target,
            store,
        } => embedded::scenario(&store.backend(), &action, target.as_deref()),
        Command::Policy {
            action,
            file,
            store,
        } => embedded::policy(&store.backend(), &action, file.as_deref()),
        Command::Messages {
            action,
            file,
            store,
        } => embedded::messages(&store.backend(), &action, file.as_deref()),
        Command::Launch {
            scenario,
            contacts,
            store,
        } => embedded::launch(&store.backend(), &scenario, contacts),
        Command::Contacts {
            action,
            file,
            store,
        } if action == "import" => embedded::contacts_import(&store.backend(), &file),
        Command::Contacts { action, .. } => Err(anyhow::anyhow!(
            "unknown contacts action \"{action}\": use import"
        )),
        Command::Consent {
            action,
            contact,
            subscribe,
            unsubscribe,
            unsuppress,
            source,
            reason,
            store,
        } => {
            let subscriptions = subscribe
                .into_iter()
                .map(|t| (t, true))
                .chain(unsubscribe.into_iter().map(|t| (t, false)))
                .collect();
            let request = relance_core::consent::ConsentRequest {
                contact,
                subscriptions,
                unsuppress,
                source: source.unwrap_or_default(),
                reason,
            };
            embedded::consent(&store.backend(), &action, &request)
        }
        Command::Journal {
            scenario,
            contact,
            json,
            store,
        } => embedded::journal(&store.backend(), &scenario, contact.as_deref(), json),
        Command::New {
            template,
            id,
            name,
            out,
        } => new_cmd(
            template.as_deref(),
            id.as_deref(),
            name.as_deref(),
            out.as_deref(),
        ),
        Command::Clone { from, to, store } => embedded::clone(&store.backend(), &from, &to),
        Command::Dev {
            action,
            endpoint,
            prefix,
            from,
            tick_every,
            shards,
        } => match action.as_str() {
            "up" => aws::dev_up(endpoint.as_deref(), &prefix, shards),
            "run" => aws::dev_run(
                endpoint.as_deref(),
                &prefix,
                &from,
                std::time::Duration::from_secs(tick_every.max(1)),
            ),
            other => Err(anyhow::anyhow!(
                "unknown dev action \"{other}\": use up or run"
            )),
        },
        Command::Test {
            file,
            contacts,
            events,
            speed,
            until,
            start,
            json,
        } => parse_start(start.as_deref()).and_then(|start| {
            embedded::test(
                &file,
                &contacts,
                events.as_deref(),
                speed,
                &until,
                start,
                json,
            )
        }),
        Command::Validate {
            file,
            json,
            messages,
        } => validate_cmd(&file, json, messages.as_deref()),
        Command::Graph { file, format, db } => graph_cmd(&file, &format, db.as_deref()),
        Command::Schema { events } => schema_cmd(events),
        Command::Simulate {
            file,
            contacts,
            events,
            start,
            until,
            journal,
            policy,
            messages,
        } => simulate_cmd(
            &file,
            &contacts,
            events.as_deref(),
            start.as_deref(),
            &until,
            journal,
            (policy.as_deref(), messages.as_deref()),
        ),
    };
    match result {
        Ok(code) => code,
        // `relance ... | head` closing the pipe is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn check(path: &Path) -> Result<Report> {
    check_with(path, None)
}

/// Checks a scenario file, its send steps also finding the messages of a shared message
/// store file (`--messages`).
fn check_with(path: &Path, messages: Option<&Path>) -> Result<Report> {
    let text = read(path)?;
    let shared = messages
        .map(|m| {
            relance_core::scenario::parse_shared_messages(&read(m)?).map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                anyhow::anyhow!("{}:\n  {}", m.display(), lines.join("\n  "))
            })
        })
        .transpose()?;
    Ok(validate::check_text_with_messages(
        &text,
        Format::from_path(&path.to_string_lossy()),
        shared.as_ref(),
    ))
}

fn print_problems(path: &Path, report: &Report, out: &mut dyn Write) -> Result<()> {
    for p in &report.problems {
        writeln!(out, "{}: {p}", path.display())?;
    }
    let (errors, warnings) = validate::summary(&report.problems);
    match (errors, warnings) {
        (0, 0) => writeln!(out, "{}: no problem found", path.display())?,
        (0, w) => writeln!(
            out,
            "{}: no problem found ({w} warning{} above)",
            path.display(),
            plural(w)
        )?,
        (e, w) => writeln!(
            out,
            "{}: {e} error{}, {w} warning{}",
            path.display(),
            plural(e),
            plural(w)
        )?,
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn validate_cmd(path: &Path, json: bool, messages: Option<&Path>) -> Result<ExitCode> {
    let report = check_with(path, messages)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report.problems)?;
        writeln!(out)?;
    } else {
        print_problems(path, &report, &mut out)?;
    }
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn schema_cmd(events: bool) -> Result<ExitCode> {
    let schema = if events {
        relance_core::wire::detail_schemas()
    } else {
        relance_core::schema::scenario_schema()
    };
    outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

fn parse_start(start: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    start
        .map(|s| {
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("--start: \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })?;
            relance_core::instant::check(t).with_context(|| "--start")
        })
        .transpose()
}

fn new_cmd(
    template: Option<&str>,
    id: Option<&str>,
    name: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let Some(template) = template else {
        outln!("templates (relance new --template NAME --id ID):");
        for (name, what, _) in templates::TEMPLATES {
            outln!("  {name:<24} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some((_, _, text)) = templates::TEMPLATES.iter().find(|(n, _, _)| *n == template) else {
        let names: Vec<&str> = templates::TEMPLATES.iter().map(|(n, _, _)| *n).collect();
        bail!("no template \"{template}\"; there are {}", names.join(", "));
    };
    let id = id.unwrap_or(template);
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--id: \"{id}\" is not a valid id: use lowercase letters, digits and dashes");
    }
    let text = templates::instantiate(text, id, name);
    let default_out = PathBuf::from(format!("{id}.yaml"));
    let out = out.unwrap_or(&default_out);
    if out == Path::new("-") {
        out!("{text}");
    } else {
        if out.exists() {
            bail!("{} exists: choose another --out or --id", out.display());
        }
        fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        outln!("wrote {} from template {template}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn graph_cmd(path: &Path, format: &str, db: Option<&Path>) -> Result<ExitCode> {
    let report = check(path)?;
    let Some(scenario) = report.scenario else {
        print_problems(path, &report, &mut std::io::stderr())?;
        return Ok(ExitCode::from(1));
    };
    let counts = match db {
        Some(db) => Some(embedded::counts(
            &embedded::Backend::Sqlite(db.to_path_buf()),
            &scenario.id,
        )?),
        None => None,
    };
    match format {
        "mermaid" => out!(
            "{}",
            relance_core::graph::mermaid(&scenario, counts.as_ref())
        ),
        "dot" => out!("{}", relance_core::graph::dot(&scenario, counts.as_ref())),
        "svg" => out!(
            "{}",
            svg(&relance_core::graph::dot(&scenario, counts.as_ref()))?
        ),
        other => bail!("--format: \"{other}\" is not mermaid, dot or svg"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Lays a DOT graph out and draws it as SVG with layout-rs.
fn svg(dot: &str) -> Result<String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let graph = DotParser::new(dot)
        .process()
        .map_err(|e| anyhow::anyhow!("internal DOT did not parse: {e}"))?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

fn load_contacts(path: &Path) -> Result<Vec<Contact>> {
    let text = read(path)?;
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array", path.display()))?;
        let mut errors = Vec::new();
        let contacts: Vec<Contact> = values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                Contact::from_json(v)
                    .map_err(|e| errors.push(format!("[{i}]: {e}")))
                    .ok()
            })
            .collect();
        if !errors.is_empty() {
            bail!("{}:\n  {}", path.display(), errors.join("\n  "));
        }
        return Ok(contacts);
    }
    script::contacts_from_json_lines(&text)
        .map_err(|errors| anyhow::anyhow!("{}:\n  {}", path.display(), errors.join("\n  ")))
}

/// Reads a workspace policy file (YAML or JSON), its problems named with their paths.
pub(crate) fn load_policy(path: &Path) -> Result<relance_core::Policy> {
    let text = read(path)?;
    let format = if path.extension().is_some_and(|e| e == "json") {
        relance_core::Format::Json
    } else {
        relance_core::Format::Yaml
    };
    relance_core::Policy::parse(&text, format).map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    if p.path.is_empty() { "(top)" } else { &p.path },
                    p.message
                )
            })
            .collect();
        anyhow::anyhow!("{}:\n  {}", path.display(), lines.join("\n  "))
    })
}

fn simulate_cmd(
    path: &Path,
    contacts: &Path,
    events: Option<&Path>,
    start: Option<&str>,
    until: &str,
    journal: bool,
    (policy, messages): (Option<&Path>, Option<&Path>),
) -> Result<ExitCode> {
    // Checked here so a bad file is named with its paths; the runtime is given the text.
    let policy = policy
        .map(|p| load_policy(p).and_then(|_| read(p)))
        .transpose()?;
    let report = check_with(path, messages)?;
    let Some(scenario) = report.scenario else {
        print_problems(path, &report, &mut std::io::stderr())?;
        return Ok(ExitCode::from(1));
    };
    let messages = messages.map(read).transpose()?;
    let start: DateTime<Utc> = match start {
        Some(s) => relance_core::instant::check(
            DateTime::parse_from_rfc3339(s)
                .with_context(|| {
                    format!("--start: \"{s}\" is not an RFC 3339 time such as 2026-12-01T09:00:00Z")
                })?
                .with_timezone(&Utc),
        )
        .context("--start")?,
        None => Utc::now().trunc_subsecs(0),
    };
    let until: IsoDuration = until.parse().context("--until")?;
    let contacts = load_contacts(contacts)?;
    let events = match events {
        Some(p) => script::events_from_json_lines(&read(p)?)
            .map_err(|errors| anyhow::anyhow!("{}:\n  {}", p.display(), errors.join("\n  ")))?,
        None => Vec::new(),
    };
    let text = read(path)?;
    let format = match Format::from_path(&path.to_string_lossy()) {
        Format::Json => SourceFormat::Json,
        Format::Yaml => SourceFormat::Yaml,
    };
    let id = scenario.id.clone();
    let mut simulation = Simulation::new(scenario, &text, format, start, until);
    simulation.policy = policy.as_deref();
    simulation.messages = messages.as_deref();
    simulation.contacts = contacts;
    simulation.events = events;
    let stdout = std::io::stdout();
    let mut sink = JsonLines {
        out: BufWriter::new(stdout.lock()),
        counts: journal.then(JournalCounts::default),
        failure: None,
    };
    let end = simulation.run(&mut sink)?.end;
    let JsonLines {
        mut out,
        counts,
        failure,
    } = sink;
    if let Some(e) = failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    if let Some(counts) = counts {
        let line = serde_json::json!({"at": end, "contact": null, "kind": "journal", "scenario": id, "counts": counts});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The simulate output: each journal record as a JSON line (without the enrollment id and
/// the arrival flag), counted for `--journal`; the first write failure stops the writing.
struct JsonLines<W> {
    out: W,
    counts: Option<JournalCounts>,
    failure: Option<std::io::Error>,
}

impl<W: Write> Sink for JsonLines<W> {
    fn record(&mut self, _scenario: &str, r: &Record) {
        if let Some(counts) = &mut self.counts {
            counts.add(r);
        }
        if self.failure.is_none() {
            let mut shown = r.clone();
            shown.arrival = false;
            shown.enrollment = None;
            if let Err(e) = serde_json::to_writer(&mut self.out, &shown)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
            {
                self.failure = Some(e);
            }
        }
    }

    fn refused(&mut self, error: RuntimeError) -> Result<(), RuntimeError> {
        eprintln!("event skipped: {error}");
        Ok(())
    }
}
