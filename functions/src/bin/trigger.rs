//! trigger: EventBridge contact, activity and engagement events, and `LaunchScenario` commands.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    run(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let f = f.clone();
        async move {
            let now = event.payload.time.unwrap_or_else(chrono::Utc::now);
            // Large launches fan out in pages when the launch queue is configured.
            let fanout: Option<&dyn relance_aws::dispatch::Dispatch> = Some(&f.dispatch);
            relance_aws::handlers::trigger(
                &mut relance_functions::lock(&f),
                fanout,
                &event.payload,
                now,
            )?;
            Ok::<(), Error>(())
        }
    }))
    .await
}
