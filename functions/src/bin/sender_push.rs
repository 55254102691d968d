//! push-sender: the push queue → SNS platform endpoints (Android, Apple), once per key.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sender().await
}
