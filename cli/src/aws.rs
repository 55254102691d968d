//! The commands against AWS or an AWS-compatible endpoint (LocalStack, the emulator):
//! the runtime over DynamoDB for the operating commands, `dev up` and `dev run`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use relance_aws::bridge::Bridge;
use relance_aws::channels::{SenderConfig, Senders};
use relance_aws::config::{AwsConfig, QueueUrls};
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::eventbridge::EventBus;
use relance_aws::resources::{self, Clients, Names};
use relance_aws::sqs::SqsQueues;
use relance_runtime::runtime::Runtime;

/// The SDK configuration: the endpoint when given (LocalStack, the emulator), else the
/// environment's (`AWS_ENDPOINT_URL`, or AWS itself).
fn sdk(tokio: &tokio::runtime::Runtime, endpoint: Option<&str>) -> aws_config::SdkConfig {
    tokio.block_on(async {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        let loader = match endpoint {
            Some(url) => loader.endpoint_url(url),
            None => loader,
        };
        loader.load().await
    })
}

fn tokio() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The runtime the operating commands (`launch`, `contacts import`, `scenario`, `journal`)
/// use on AWS: the same store as the functions, so a send is handed to its channel queue
/// exactly as the step executor hands it (the tokio runtime must outlive it). The settings
/// are the functions' own when `RELANCE_STATE_TABLE` is set (`AwsConfig::from_env`: tables,
/// shards, `RELANCE_*_QUEUE_URL`, `RELANCE_EVENT_BUS`); otherwise the resources named after
/// `prefix` (what `relance dev up` and the SAM template create), each queue URL and the bus
/// taken from the environment when set, else looked up by name. A send whose channel has no
/// queue is refused before anything is committed, naming the variable to set.
pub fn runtime(
    endpoint: Option<&str>,
    prefix: &str,
) -> Result<(tokio::runtime::Runtime, Runtime<DynamoStore>)> {
    let tokio = tokio()?;
    let config = sdk(&tokio, endpoint);
    let aws = operating_config(&tokio, &config, prefix)?;
    let store = DynamoStore::from_config(&config, aws, Bridge::new(tokio.handle().clone()));
    Ok((tokio, Runtime::new(store)))
}

fn operating_config(
    tokio: &tokio::runtime::Runtime,
    config: &aws_config::SdkConfig,
    prefix: &str,
) -> Result<AwsConfig> {
    if std::env::var("RELANCE_STATE_TABLE").is_ok_and(|t| !t.is_empty()) {
        return Ok(AwsConfig::from_env()?);
    }
    let shards = AwsConfig::timer_shards_from_env(4)?;
    let found = tokio
        .block_on(resources::find(
            &clients(config),
            &Names::new(prefix),
            shards,
        ))
        .with_context(|| format!("looking up the resources named {prefix}*"))?;
    Ok(AwsConfig {
        queues: QueueUrls::from_env().or(found.queues.clone()),
        event_bus: std::env::var("RELANCE_EVENT_BUS")
            .ok()
            .filter(|b| !b.is_empty())
            .or(found.event_bus.clone()),
        ..found
    })
}

fn clients(config: &aws_config::SdkConfig) -> Clients {
    Clients {
        dynamo: aws_sdk_dynamodb::Client::new(config),
        sqs: aws_sdk_sqs::Client::new(config),
        eventbridge: aws_sdk_eventbridge::Client::new(config),
    }
}

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
    let mut store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        deployed.config.clone(),
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
            unsubscribe: crate::embedded::unsubscribe_links("http://localhost:8080/unsubscribe")?,
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
    let mut host = relance_aws::dev::DevHost {
        runtime: Runtime::new(store),
        queues,
        senders,
        deployed,
        bridge,
    };
    relance_aws::dev::run(&mut host, tick_every, &stop);
    Ok(ExitCode::SUCCESS)
}
