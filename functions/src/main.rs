//! bootstrap: every Relance Lambda function in one binary, built and packaged once; the
//! function it serves is the `_HANDLER` Lambda sets from the template's `Handler`
//! (`trigger`, `tick`, `step-executor`, ...), or the first argument when run by hand.

use relance_functions::handler::Handler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let name = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("_HANDLER").ok())
        .ok_or(
            "_HANDLER: not set (the template's Handler names the function: trigger, tick, ...)",
        )?;
    let handler: Handler = name.parse()?;
    handler.serve().await
}
