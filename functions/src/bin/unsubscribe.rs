//! unsubscribe: the one-click unsubscribe endpoint (RFC 8058) behind the function's URL;
//! tokens are checked against the key read at start from Secrets Manager
//! (`RELANCE_UNSUBSCRIBE_SECRET_ARN`; `RELANCE_UNSUBSCRIBE_SECRET` in dev).

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    // Internet-facing: its role holds no BatchWriteItem (which could delete), so each of its
    // transitions writes its journal item alone, as it happens (one request: nothing to batch).
    relance_functions::lock(&f).store().set_auto_flush(true);
    // Once per cold start, before serving: from Secrets Manager by ARN (at least 32 bytes).
    let secret = relance_functions::unsubscribe_secret().await?;
    run(service_fn(
        |event: LambdaEvent<LambdaFunctionUrlRequest>| {
            let (f, secret) = (f.clone(), secret.clone());
            async move {
                let mut rt = relance_functions::lock(&f);
                Ok::<LambdaFunctionUrlResponse, Error>(relance_aws::handlers::unsubscribe(
                    &mut rt,
                    secret.as_deref(),
                    &event.payload,
                    chrono::Utc::now(),
                ))
            }
        },
    ))
    .await
}
