//! step-executor: the step queue; one due timer per message, partial batch failures.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sqs(relance_aws::handlers::step_executor).await
}
