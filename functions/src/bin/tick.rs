//! tick: the `rate(1 minute)` schedule; `now` is the scheduled event's time.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    // Fail at start, not at the first tick, when the step queue is not configured.
    f.config
        .queues
        .step
        .as_ref()
        .ok_or("RELANCE_STEP_QUEUE_URL: not set")?;
    run(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let f = f.clone();
        async move {
            let now = event.payload.time.unwrap_or_else(chrono::Utc::now);
            let summary =
                relance_aws::handlers::tick(&mut relance_functions::lock(&f), &f.dispatch, now)?;
            Ok::<_, Error>(serde_json::to_value(summary)?)
        }
    }))
    .await
}
