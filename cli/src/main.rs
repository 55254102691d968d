//! The `relance` command: a thin layer over `relance-core` and the runtimes that reads
//! files, calls the engine and prints. Exit status: 0 fine, 1 the scenario has errors, 2 bad
//! usage or input.
//!
//! # Layout
//! - [`args`]: the command line as clap reads it (nested subcommands such as
//!   `scenario put|activate|...`).
//! - [`commands`]: one module per command (validate, simulate, run, scenario, ...).
//! - [`files`]: reading files, checking scenario files, printing problems.
//! - [`backend`]: where operating commands act (SQLite or DynamoDB) and their shared helpers.
//! - [`aws`]: the AWS connection (SDK configuration, the runtime over DynamoDB).
//! - [`links`]: one-click unsubscribe links, shared by `run` and `dev run`.
//! - [`templates`]: the built-in scenario templates of `relance new`.

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

mod args;
mod aws;
mod backend;
mod commands;
mod delivery;
mod files;
mod links;
mod templates;

/// The allocator: mimalloc, for less time in `malloc` and `free` (a sixth of the runner's
/// samples under glibc's, more where one thread frees what another allocated); measured in
/// BENCHMARKS.md, round ten.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{
    Cli, Command, ConsentCommand, ContactsCommand, DevCommand, ImportCommand, MessagesCommand,
    PolicyCommand, ScenarioCommand, TokenCommand,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELANCE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        args::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The fields of the event and of the spans it is in (the send's enrollment, scenario,
        // step and idempotency key) at the top level of each line.
        args::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    match dispatch(cli.command) {
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

/// Runs one command.
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    use commands::*;
    match command {
        Command::Run {
            db,
            listen,
            outbox,
            scenarios,
            contacts,
            allowed_hosts,
            delivery,
        } => run::run(
            &db,
            listen,
            &outbox,
            &scenarios,
            contacts.as_deref(),
            allowed_hosts,
            &delivery,
        ),
        Command::Token {
            action: TokenCommand::New { db },
        } => run::token_new(&db),
        Command::Scenario { action } => match action {
            ScenarioCommand::Put { file, store } => scenario::put(&store.backend(), &file),
            ScenarioCommand::Activate { id, store } => {
                scenario::set_status(&store.backend(), &id, relance_core::ports::Status::Active)
            }
            ScenarioCommand::Pause { id, store } => {
                scenario::set_status(&store.backend(), &id, relance_core::ports::Status::Paused)
            }
            ScenarioCommand::Archive { id, store } => {
                scenario::set_status(&store.backend(), &id, relance_core::ports::Status::Archived)
            }
            ScenarioCommand::List { store } => scenario::list(&store.backend()),
        },
        Command::Policy { action } => match action {
            PolicyCommand::Set { file, store } => policy::policy_set(&store.backend(), &file),
            PolicyCommand::Show { store } => policy::policy_show(&store.backend()),
        },
        Command::Messages { action } => match action {
            MessagesCommand::Put { file, store } => policy::messages_put(&store.backend(), &file),
            MessagesCommand::Show { store } => policy::messages_show(&store.backend()),
        },
        Command::Launch {
            scenario,
            contacts,
            store,
        } => contacts::launch(&store.backend(), &scenario, contacts),
        Command::Contacts {
            action: ContactsCommand::Import { file, store },
        } => contacts::contacts_import(&store.backend(), &file),
        Command::Import {
            action: ImportCommand::Pinpoint { file, out },
        } => import::pinpoint(&file, out.as_deref()),
        Command::Consent { action } => match action {
            ConsentCommand::Show { contact, store } => consent::show(&store.backend(), &contact),
            ConsentCommand::Set {
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
                consent::set(&store.backend(), &request)
            }
        },
        Command::Journal {
            scenario,
            contact,
            json,
            store,
        } => journal::journal(&store.backend(), &scenario, contact.as_deref(), json),
        Command::Report {
            scenario,
            json,
            store,
        } => report::report(&store.backend(), &scenario, json),
        Command::New {
            template,
            id,
            name,
            out,
        } => new::new_cmd(
            template.as_deref(),
            id.as_deref(),
            name.as_deref(),
            out.as_deref(),
        ),
        Command::Clone { from, to, store } => scenario::clone(&store.backend(), &from, &to),
        Command::Dev { action } => match action {
            DevCommand::Up { at, shards } => {
                dev::dev_up(at.endpoint.as_deref(), &at.prefix, shards)
            }
            DevCommand::Run {
                at,
                from,
                tick_every,
            } => dev::dev_run(
                at.endpoint.as_deref(),
                &at.prefix,
                &from,
                std::time::Duration::from_secs(tick_every.max(1)),
            ),
        },
        Command::Test {
            file,
            contacts,
            events,
            speed,
            until,
            start,
            json,
        } => files::parse_start(start.as_deref()).and_then(|start| {
            test::test(
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
        } => validate::validate_cmd(&file, json, messages.as_deref()),
        Command::Graph { file, format, db } => graph::graph_cmd(&file, &format, db.as_deref()),
        Command::Schema { events } => schema::schema_cmd(events),
        Command::Simulate {
            file,
            contacts,
            events,
            start,
            until,
            journal,
            policy,
            messages,
        } => simulate::simulate_cmd(
            &file,
            &contacts,
            events.as_deref(),
            start.as_deref(),
            &until,
            journal,
            (policy.as_deref(), messages.as_deref()),
        ),
    }
}
