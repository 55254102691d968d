//! email-sender: the email queue → SESv2, once per idempotency key.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sender().await
}
