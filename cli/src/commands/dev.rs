//! `relance dev up|run`: local AWS development against an endpoint (LocalStack, the emulator).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use relance_aws::bridge::Bridge;
use relance_aws::channels::{SenderConfig, Senders};
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::eventbridge::EventBus;
use relance_aws::resources::{self, Names};
use relance_aws::sqs::SqsQueues;
use relance_runtime::runtime::Runtime;

use crate::aws::{clients, sdk, tokio};

/// `relance dev up`: creates the tables, queues (with their DLQs), bus and rule.
pub fn dev_up(endpoint: Option<&str>, prefix: &str, shards: u32) -> Result<ExitCode> {
    let tokio = tokio()?;
    let config = sdk(&tokio, endpoint);
    let deployed = tokio
        .block_on(resources::create_all(
            &clients(&config),
            &Names::new(prefix),
            shards,
        ))
        .context("dev up")?;
    outln!("# resources ready; the functions read:");
    for (k, v) in deployed.env() {
        outln!("export {k}={v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `relance dev run`: every handler in this process, polling the queues, ticking every
/// `tick_every`, until Ctrl-C.
pub fn dev_run(
    endpoint: Option<&str>,
    prefix: &str,
    from_email: &str,
    tick_every: Duration,
) -> Result<ExitCode> {
    let tokio = tokio()?;
    let config = sdk(&tokio, endpoint);
    let names = Names::new(prefix);
    let deployed = tokio
        .block_on(resources::create_all(&clients(&config), &names, 4))
        .context("dev run: resources")?;
    let bridge = Bridge::new(tokio.handle().clone());
    let queues = SqsQueues::new(aws_sdk_sqs::Client::new(&config), bridge.clone());
    let bus = deployed.config.event_bus.clone().unwrap_or_default();
    let store_config = relance_aws::config::AwsConfig {
        muted_events: relance_aws::config::AwsConfig::muted_events_from_env()?,
        informational: relance_aws::config::Informational::from_env()?,
        ..deployed.config.clone()
    };
    let mut store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        store_config,
        bridge.clone(),
    )
    .with_dispatch(
        AwsDispatch::new(queues.clone(), deployed.config.queues.clone()).with_bus(EventBus::new(
            aws_sdk_eventbridge::Client::new(&config),
            bus,
            bridge.clone(),
        )),
    );
    store.set_auto_flush(false);
    let ses = aws_sdk_sesv2::Client::new(&config);
    // SES sends only from a verified identity (as the AWS sandbox does): verify it, in dev.
    let _ = tokio.block_on(
        ses.create_email_identity()
            .email_identity(from_email)
            .send(),
    );
    let senders = Senders::new(
        ses,
        aws_sdk_sns::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
        deployed.config.state_table.clone(),
        SenderConfig {
            from_email: from_email.to_string(),
            ses_v1: std::env::var("RELANCE_EMAIL_API")
                .is_ok_and(|v| v.eq_ignore_ascii_case("ses-v1")),
            // Emulators lack the provider-list calls; the send rate is `RELANCE_SEND_RATE`.
            check_provider_lists: false,
            send_rate: std::env::var("RELANCE_SEND_RATE")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|r| *r > 0),
            unsubscribe: crate::links::unsubscribe_links("http://localhost:8080/unsubscribe")?,
            ..SenderConfig::new(from_email)
        },
        bridge.clone(),
    )
    .with_ses_v1(aws_sdk_ses::Client::new(&config));
    // Web push when VAPID keys are in the environment.
    let senders = if std::env::var("RELANCE_VAPID_PRIVATE_KEY").is_ok_and(|k| !k.is_empty()) {
        let vapid = relance_aws::webpush::WebPushConfig::from_env()?;
        senders.with_web_push(relance_aws::webpush::WebPushSender::new(vapid)?)
    } else {
        senders
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        flag.store(true, Ordering::Relaxed);
    });
    outln!(
        "relance dev run: polling {} queues on {}, ticking every {:?}; Ctrl-C stops",
        deployed.queues.len(),
        endpoint.unwrap_or("AWS"),
        tick_every
    );
    let webhooks = relance_aws::dev::webhook_sender(&config, &deployed, &bridge)?;
    let mut host = relance_aws::dev::DevHost {
        runtime: Runtime::new(store),
        queues,
        senders,
        deployed,
        webhooks,
        bridge,
    };
    relance_aws::dev::run(&mut host, tick_every, &stop);
    Ok(ExitCode::SUCCESS)
}
