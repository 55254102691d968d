//! Issue 11, finding 4: the operating commands on AWS (`relance launch --endpoint`,
//! `relance contacts import --endpoint`) build the same store as the functions, so a launch
//! from the CLI hands its emails to the email queue and the email sender delivers them; and
//! where no queue can take a send, the command fails naming the variable to set and the
//! journal shows no `sent`. Runs on the local AWS emulator (`./scripts/test` starts one and
//! sets `AWS_ENDPOINT_URL`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use relance_aws::bridge::Bridge;
use relance_aws::channels::{SenderConfig, Senders};
use relance_aws::config::AwsConfig;
use relance_aws::dynamodb::DynamoStore;

use crate::common::emulator::{emulator_read, endpoint};

/// Runs the CLI with none of the functions' `RELANCE_*` settings inherited: what it uses
/// is what it found for the prefix.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relance"));
    for (name, _) in std::env::vars() {
        if name.starts_with("RELANCE_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn relance(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "relance {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The emails the emulator holds for an address.
fn emails_to(address: &str) -> Vec<serde_json::Value> {
    let v = emulator_read("/_ministack/ses/messages");
    v["messages"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|l| l.as_array().into_iter().flatten())
        .filter(|m| {
            m["To"]
                .as_array()
                .is_some_and(|to| to.iter().any(|t| t == address))
        })
        .cloned()
        .collect()
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A scenario (one email) and a contact for it, in a directory of their own.
fn files(prefix: &str, address: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("relance-aws-launch-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let scenario = dir.join("hello.yaml");
    std::fs::write(
        &scenario,
        "id: cli-hello\nlaunch: {type: manual}\nmessages:\n  hi: {channel: email, subject: \"Hello {{ contact.first_name }} from the CLI\", text: \"Hello\"}\nsteps:\n  - {id: hi, send: hi, next: done}\n  - {id: done, end: success}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let contacts = dir.join("contacts.jsonl");
    std::fs::write(
        &contacts,
        format!("{{\"id\": \"ana\", \"email\": \"{address}\", \"first_name\": \"Ana\"}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (scenario, contacts)
}

fn put_import_activate(url: &str, prefix: &str, scenario: &Path, contacts: &Path) {
    let at = ["--endpoint", url, "--prefix", prefix];
    let scenario = scenario.to_string_lossy();
    let contacts = contacts.to_string_lossy();
    relance(&[&["scenario", "put", &*scenario][..], &at].concat());
    relance(&[&["scenario", "activate", "cli-hello"][..], &at].concat());
    relance(&[&["contacts", "import", &*contacts][..], &at].concat());
}

/// The email sender function's handler, in process, over what the email queue holds.
fn run_email_sender(tokio: &tokio::runtime::Runtime, prefix: &str) -> usize {
    let sdk = tokio.block_on(aws_config::load_from_env());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = tokio
        .block_on(
            sqs.get_queue_url()
                .queue_name(format!("{prefix}email"))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .queue_url
        .unwrap_or_default();
    let mut records = Vec::new();
    loop {
        let got = tokio
            .block_on(
                sqs.receive_message()
                    .queue_url(&queue)
                    .max_number_of_messages(10)
                    .wait_time_seconds(0)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if let Some(h) = &m.receipt_handle {
                let _ = tokio.block_on(
                    sqs.delete_message()
                        .queue_url(&queue)
                        .receipt_handle(h)
                        .send(),
                );
            }
            let record: SqsMessage = serde_json::from_value(serde_json::json!({
                "messageId": m.message_id.unwrap_or_default(),
                "body": m.body.unwrap_or_default(),
                "attributes": {}, "messageAttributes": {}
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            records.push(record);
        }
    }
    let from = "news@example.com";
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    // SES, like the AWS sandbox, sends only from a verified identity.
    let _ = tokio.block_on(ses.create_email_identity().email_identity(from).send());
    let bridge = Bridge::new(tokio.handle().clone());
    let mut config = AwsConfig::with_prefix(prefix, 4);
    config.state_table = format!("{prefix}state");
    let senders = Senders::new(
        ses,
        aws_sdk_sns::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        config.state_table.clone(),
        SenderConfig {
            // The emulator lacks the provider-list calls.
            check_provider_lists: false,
            ..SenderConfig::new(from)
        },
        bridge.clone(),
    );
    let mut store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), config, bridge);
    let n = records.len();
    let mut event = SqsEvent::default();
    event.records = records;
    let response =
        relance_aws::handlers::channel_sender(&senders, &mut store, &event, chrono::Utc::now());
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    n
}

#[test]
fn hostile_launch_from_the_cli_on_aws_reaches_the_inbox() {
    let Some(url) = endpoint() else {
        return;
    };
    let prefix = format!("cl{}-", std::process::id());
    relance(&["dev", "up", "--endpoint", &url, "--prefix", &prefix]);
    let address = format!("{prefix}ana@example.com");
    let (scenario, contacts) = files(&prefix, &address);
    put_import_activate(&url, &prefix, &scenario, &contacts);
    relance(&[
        "launch",
        "cli-hello",
        "--contact",
        "ana",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    // The report reads the same journal on DynamoDB: one entry, one send.
    let report = relance(&[
        "report",
        "cli-hello",
        "--json",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(report["total"]["entries"], 1, "{report}");
    assert_eq!(report["steps"][0]["step"], "hi", "{report}");
    assert_eq!(report["steps"][0]["sent"], 1, "{report}");
    assert_eq!(report["holdout"], serde_json::Value::Null, "{report}");
    let unknown = run(&["report", "nope", "--endpoint", &url, "--prefix", &prefix]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("scenario \"nope\" not found"),
        "{}",
        text(&unknown)
    );
    let tokio = tokio();
    assert_eq!(
        run_email_sender(&tokio, &prefix),
        1,
        "the launch put one message on the email queue"
    );
    let mails = emails_to(&address);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].to_string().contains("Hello Ana from the CLI"),
        "{mails:?}"
    );
}

#[test]
fn hostile_launch_without_an_email_queue_fails_naming_it_and_journals_no_sent() {
    let Some(url) = endpoint() else {
        return;
    };
    let prefix = format!("cn{}-", std::process::id());
    // The tables only: no queue, no bus.
    let tokio = tokio();
    let sdk = tokio.block_on(aws_config::load_from_env());
    let config = AwsConfig::with_prefix(&prefix, 4);
    tokio
        .block_on(DynamoStore::create_tables(
            &aws_sdk_dynamodb::Client::new(&sdk),
            &config,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let address = format!("{prefix}ana@example.com");
    let (scenario, contacts) = files(&prefix, &address);
    put_import_activate(&url, &prefix, &scenario, &contacts);
    let o = run(&[
        "launch",
        "cli-hello",
        "--contact",
        "ana",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("RELANCE_EMAIL_QUEUE_URL"), "{out}");
    let journal = relance(&[
        "journal",
        "cli-hello",
        "--json",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    let counts: serde_json::Value =
        serde_json::from_str(&journal).unwrap_or_else(|e| panic!("{e}: {journal}"));
    assert_eq!(
        counts["steps"]["hi"]["sent"].as_u64().unwrap_or(0),
        0,
        "{journal}"
    );
    let path = relance(&[
        "journal",
        "cli-hello",
        "--contact",
        "ana",
        "--json",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    let path: serde_json::Value =
        serde_json::from_str(&path).unwrap_or_else(|e| panic!("{e}: {path}"));
    assert!(
        path.as_array()
            .into_iter()
            .flatten()
            .all(|r| r["kind"] != "sent"),
        "{path}"
    );
    assert!(emails_to(&address).is_empty());
}
