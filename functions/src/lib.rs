//! What every Relance Lambda function shares: logging, clients built once from the
//! environment (failing fast on a missing setting), secrets read once from Secrets Manager
//! before serving, and the runtime over DynamoDB (emitting on the bus when one is set).
//! One binary, `bootstrap` (`src/main.rs`), serves every function: the function is the
//! `_HANDLER` Lambda sets from the template's `Handler`, each a few lines around a handler of
//! `relance_aws::handlers`.
//!
//! # Layout
//! - this file: [`Function`], what every function builds once per container (the runtime
//!   over DynamoDB, the dispatch port, the settings), logging and secrets.
//! - [`emf`]: the metrics of DESIGN §9 as CloudWatch embedded metric format lines on stdout,
//!   flushed after every invocation ([`serve`] runs a handler so).
//! - [`permissions`]: re-exported from relance-aws: the IAM grants each function needs.
//! - [`handler`]: the functions by name (`trigger`, `tick`, `step-executor`, `launch`,
//!   `email-sender`, `sms-sender`, `push-sender`, `web-push-sender`, `webhook-sender`,
//!   `engagement`, `unsubscribe`) and the loop serving each.
//! - `src/main.rs`: the `bootstrap` binary, dispatching on `_HANDLER`.
//! - `tests/permissions.rs`: the SAM template's roles hold exactly the table's grants.
//! - `benches/aws_timers.rs`: timers through the tick on the emulator.

/// The table of calls each function makes, as IAM grants (kept beside the handlers that make
/// them, in relance-aws).
pub use relance_aws::permissions;

pub mod emf;
pub mod handler;
pub use emf::{install_metrics, serve};

use std::sync::{Arc, Mutex};

use lambda_runtime::Error;
use relance_aws::bridge::Bridge;
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::sqs::SqsQueues;
use relance_runtime::runtime::Runtime;

/// What a function holds between invocations.
#[derive(Debug, Clone)]
pub struct Function {
    /// The runtime over DynamoDB (one invocation at a time per container).
    pub runtime: Arc<Mutex<Runtime<DynamoStore>>>,
    /// Where the tick puts timers and the trigger puts launch pages (the queues the
    /// configuration names), and the bus whose listeners the tick checks.
    pub dispatch: AwsDispatch,
    /// The settings.
    pub config: AwsConfig,
}

/// Sets up logging (JSON, level from `RUST_LOG`), the metrics collector ([`install_metrics`];
/// run the handler with [`serve`] so that they are flushed) and the clients, from the
/// environment.
pub async fn from_env() -> Result<Function, Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time()
        .init();
    install_metrics()?;
    let config = AwsConfig::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let bridge = Bridge::new(tokio::runtime::Handle::current());
    let queues = SqsQueues::new(aws_sdk_sqs::Client::new(&sdk), bridge.clone());
    let mut dispatch = AwsDispatch::new(queues, config.queues.clone());
    // The bus, whose listeners the tick checks (`relance_aws::listeners`).
    if let Some(bus) = config.event_bus.clone() {
        dispatch = dispatch.with_bus(relance_aws::eventbridge::EventBus::new(
            aws_sdk_eventbridge::Client::new(&sdk),
            bus,
            bridge.clone(),
        ));
    }
    // The same store as the operating commands build: sends to the channel queues, events
    // on the bus when RELANCE_EVENT_BUS names one.
    let mut store = DynamoStore::from_config(&sdk, config.clone(), bridge);
    // Every handler flushes at the end of its batch: the batch's sends go ten per
    // SendMessageBatch and its journal items 25 per BatchWriteItem (the cost budget in
    // BENCHMARKS.md counts requests this way).
    store.set_auto_flush(false);
    Ok(Function {
        runtime: Arc::new(Mutex::new(Runtime::new(store))),
        dispatch,
        config,
    })
}

/// The secret `name`, once, at start: from Secrets Manager by the ARN in `<name>_ARN` (the
/// template's way), else the plain `<name>` (dev only), else none.
pub async fn secret(name: &str) -> Result<Option<String>, Error> {
    let sdk = aws_config::load_from_env().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    Ok(relance_aws::secrets::from_env(&client, name).await?)
}

/// The unsubscribe key (`RELANCE_UNSUBSCRIBE_SECRET_ARN`, or `RELANCE_UNSUBSCRIBE_SECRET` in
/// dev), refused when shorter than 32 bytes; none leaves one-click links off.
pub async fn unsubscribe_secret() -> Result<Option<Vec<u8>>, Error> {
    let sdk = aws_config::load_from_env().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    Ok(relance_aws::secrets::unsubscribe_key(&client).await?)
}

/// The channel senders, for the email, sms and push functions (`RELANCE_FROM_EMAIL` and the
/// other sender settings from the environment; the unsubscribe and VAPID keys from Secrets
/// Manager when their `_ARN` is set).
pub async fn senders_from_env(f: &Function) -> Result<relance_aws::channels::Senders, Error> {
    let sdk = aws_config::load_from_env().await;
    let unsubscribe = secret("RELANCE_UNSUBSCRIBE_SECRET").await?;
    let mut senders = relance_aws::channels::Senders::new(
        aws_sdk_sesv2::Client::new(&sdk),
        aws_sdk_sns::Client::new(&sdk),
        aws_sdk_dynamodb::Client::new(&sdk),
        f.config.state_table.clone(),
        relance_aws::channels::SenderConfig::from_env_with_secret(unsubscribe)?,
        Bridge::new(tokio::runtime::Handle::current()),
    )
    .with_ses_v1(aws_sdk_ses::Client::new(&sdk));
    // Web push needs its VAPID keys; the other senders do not.
    if let Some(key) = secret("RELANCE_VAPID_PRIVATE_KEY").await? {
        let config = relance_aws::webpush::WebPushConfig::from_env_with_key(key)?;
        senders = senders.with_web_push(relance_aws::webpush::WebPushSender::new(config)?);
    }
    Ok(senders)
}

/// Runs a channel sender function (the same code for email, SMS and push; each is deployed
/// with only the permission its provider needs).
pub async fn run_sender() -> Result<(), Error> {
    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use lambda_runtime::{LambdaEvent, service_fn};
    let f = from_env().await?;
    let senders = senders_from_env(&f).await?;
    serve(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (f, senders) = (f.clone(), senders.clone());
        async move {
            let mut rt = lock(&f);
            let response = relance_aws::handlers::channel_sender(
                &senders,
                rt.store(),
                &event.payload,
                chrono::Utc::now(),
            );
            Ok::<SqsBatchResponse, Error>(response)
        }
    }))
    .await
}

/// Runs the webhook sender: the guarded HTTP client, the Lambda client of invoke steps, the
/// webhook secrets read once from Secrets Manager, the ledger, and the runtime (a `save` is a
/// contact update).
pub async fn run_webhook_sender() -> Result<(), Error> {
    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use lambda_runtime::{LambdaEvent, service_fn};
    let f = from_env().await?;
    let sdk = aws_config::load_from_env().await;
    let secrets =
        relance_aws::secrets::webhook_secrets(&aws_sdk_secretsmanager::Client::new(&sdk)).await?;
    let bridge = Bridge::new(tokio::runtime::Handle::current());
    let queue_url = f
        .config
        .queues
        .webhook
        .clone()
        .ok_or("RELANCE_WEBHOOK_QUEUE_URL: not set")?;
    let sender = relance_aws::callout::WebhookSender::new(
        Arc::new(relance_aws::webhook::HttpTransport::from_env()?),
        secrets,
        relance_aws::ledger::Ledger::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            f.config.state_table.clone(),
            bridge.clone(),
        ),
        SqsQueues::new(aws_sdk_sqs::Client::new(&sdk), bridge.clone()),
        queue_url,
        f.config.queues.webhook_dlq.clone(),
        bridge,
    )
    .with_invoker(Arc::new(relance_aws::callout::LambdaInvoker::new(
        aws_sdk_lambda::Client::new(&sdk),
    )));
    serve(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (f, sender) = (f.clone(), sender.clone());
        async move {
            Ok::<SqsBatchResponse, Error>(relance_aws::callout::webhook_sender(
                &mut lock(&f),
                &sender,
                &event.payload,
                chrono::Utc::now(),
            ))
        }
    }))
    .await
}

/// Runs an SQS-triggered function whose handler takes the runtime (step executor, launch
/// pages, engagement): decode the batch, call the handler, report partial batch failures.
pub async fn run_sqs(
    handler: fn(
        &mut Runtime<DynamoStore>,
        &aws_lambda_events::event::sqs::SqsEvent,
        chrono::DateTime<chrono::Utc>,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse,
) -> Result<(), Error> {
    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use lambda_runtime::{LambdaEvent, service_fn};
    let f = from_env().await?;
    serve(service_fn(|event: LambdaEvent<SqsEvent>| {
        let f = f.clone();
        async move {
            Ok::<SqsBatchResponse, Error>(handler(
                &mut lock(&f),
                &event.payload,
                chrono::Utc::now(),
            ))
        }
    }))
    .await
}

/// Locks the runtime (a poisoned lock only means an earlier invocation panicked).
pub fn lock(f: &Function) -> std::sync::MutexGuard<'_, Runtime<DynamoStore>> {
    f.runtime.lock().unwrap_or_else(|e| e.into_inner())
}
