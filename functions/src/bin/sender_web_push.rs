//! web-push-sender: the web push queue → browser push services (VAPID, RFC 8291), once per
//! idempotency key; expired subscriptions are removed from the contact.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_sender().await
}
