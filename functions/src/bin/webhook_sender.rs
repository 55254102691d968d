//! webhook-sender: the webhook queue → HTTP calls (signed, on the outbound rule), once per
//! key; retried with backoff for 24 h, then dead-lettered; `save` applied to the contact.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relance_functions::run_webhook_sender().await
}
