//! `relance schema`: the JSON Schema of scenario files, or of the events applications send.

use std::process::ExitCode;

use anyhow::Result;

pub fn schema_cmd(events: bool) -> Result<ExitCode> {
    let schema = if events {
        relance_core::wire::detail_schemas()
    } else {
        relance_core::schema::scenario_schema()
    };
    outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}
