//! sms-sender: the SMS queue → SNS Publish to a phone number, once per idempotency key.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sender().await
}
