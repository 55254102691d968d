//! engagement: SES feedback (delivered, opened, clicked, bounced, complained, unsubscribed),
//! through SNS into SQS, into engagement records that wake the enrollments waiting on them.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let f = f.clone();
        async move {
            let response = relance_aws::handlers::engagement(
                &mut relance_functions::lock(&f),
                &event.payload,
                chrono::Utc::now(),
            );
            Ok::<SqsBatchResponse, Error>(response)
        }
    }))
    .await
}
