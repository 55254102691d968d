//! engagement: SES feedback (delivered, opened, clicked, bounced, complained, unsubscribed),
//! through SNS into SQS, into engagement records that wake the enrollments waiting on them.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sqs(relance_aws::handlers::engagement).await
}
