//! launch: the launch queue; each message is a page of a large launch.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sqs(relance_aws::handlers::launch_page).await
}
