//! engagement: SES feedback (delivered, opened, clicked, bounced, complained, unsubscribed),
//! through SNS into SQS, and SNS SMS delivery status from CloudWatch Logs, into engagement
//! records that wake the enrollments waiting on them.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    run(service_fn(|event: LambdaEvent<Value>| {
        let f = f.clone();
        async move {
            let mut rt = relance_functions::lock(&f);
            Ok::<Value, Error>(relance_aws::handlers::engagement_any(
                &mut rt,
                event.payload,
                chrono::Utc::now(),
            )?)
        }
    }))
    .await
}
