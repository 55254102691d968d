//! The connection to AWS or an AWS-compatible endpoint (LocalStack, the emulator): the SDK
//! configuration and the runtime over DynamoDB the operating commands use.

use anyhow::{Context, Result};
use relance_aws::bridge::Bridge;
use relance_aws::config::{AwsConfig, QueueUrls};
use relance_aws::dynamodb::DynamoStore;
use relance_aws::resources::{self, Clients, Names};
use relance_runtime::runtime::Runtime;

/// The SDK configuration: the endpoint when given (LocalStack, the emulator), else the
/// environment's (`AWS_ENDPOINT_URL`, or AWS itself).
pub fn sdk(tokio: &tokio::runtime::Runtime, endpoint: Option<&str>) -> aws_config::SdkConfig {
    tokio.block_on(async {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        let loader = match endpoint {
            Some(url) => loader.endpoint_url(url),
            None => loader,
        };
        loader.load().await
    })
}

pub fn tokio() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The runtime the operating commands (`launch`, `contacts import`, `scenario`, `journal`)
/// use on AWS: the same store as the functions, so a send is handed to its channel queue
/// exactly as the step executor hands it (the tokio runtime must outlive it). The settings
/// are the functions' own when `RELANCE_STATE_TABLE` is set (`AwsConfig::from_env`: tables,
/// shards, `RELANCE_*_QUEUE_URL`, `RELANCE_EVENT_BUS`, `RELANCE_MUTED_EVENTS`); otherwise the
/// resources named after `prefix` (what `relance dev up` and the SAM template create), each
/// queue URL and the bus taken from the environment when set, else looked up by name, and the
/// muted events from `RELANCE_MUTED_EVENTS` (a stack's `MutedEvents` is its functions'
/// setting: set the same value here). A send whose channel has no
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

pub fn operating_config(
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
        muted_events: AwsConfig::muted_events_from_env()?,
        informational: relance_aws::config::Informational::from_env()?,
        ..found
    })
}

pub fn clients(config: &aws_config::SdkConfig) -> Clients {
    Clients {
        dynamo: aws_sdk_dynamodb::Client::new(config),
        sqs: aws_sdk_sqs::Client::new(config),
        eventbridge: aws_sdk_eventbridge::Client::new(config),
    }
}
