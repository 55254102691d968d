//! unsubscribe: the one-click unsubscribe endpoint (RFC 8058) behind the function's URL;
//! tokens are checked against `RELANCE_UNSUBSCRIBE_SECRET`.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let f = relance_functions::from_env().await?;
    let secret = std::env::var("RELANCE_UNSUBSCRIBE_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(String::into_bytes);
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
