//! The invoke step (DESIGN §9, Pinpoint's custom channel): `invoke: {function: ARN}` calls a
//! Lambda function asynchronously, once per contact, with the contact and the step as its
//! event, and goes on to `next` at once. Like a webhook it travels as an outbox action (one
//! per `{enrollment}:{step}` key) and is retried by the same rules (throttling and service
//! errors with backoff for 24 h, then dead-lettered; a refusal is a permanent failure).
//!
//! It runs on AWS only: the function is named by its ARN (or its name, in the deployment's
//! account and region), and the stack grants `lambda:InvokeFunction` on the functions its
//! `InvocableFunctionArns` parameter lists. `relance run` has no Lambda to call: it refuses a
//! scenario with an invoke step ([`EMBEDDED_REFUSAL`]); `relance simulate` journals the
//! action and calls nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Why `relance run` refuses an invoke step.
pub const EMBEDDED_REFUSAL: &str =
    "invoke runs on AWS only (an asynchronous Lambda invocation); use a webhook here";

/// The invoke steps of `scenario`, each refused with [`EMBEDDED_REFUSAL`], located at its
/// `steps[i].invoke`: what a store without Lambda reports
/// ([`crate::ports::Store::unsupported`]).
pub fn embedded_refusals(scenario: &crate::scenario::Scenario) -> Vec<crate::problem::Problem> {
    use crate::scenario::{Action, StepKind};
    scenario
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches!(
                &s.kind,
                StepKind::Action {
                    action: Action::Invoke(_),
                    ..
                }
            )
        })
        .map(|(i, s)| {
            crate::problem::Problem::error(format!("steps[{i}].invoke"), EMBEDDED_REFUSAL)
                .in_step(&s.id)
        })
        .collect()
}

/// `{function}`: the Lambda function to invoke asynchronously.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Invoke")]
pub struct Invoke {
    /// A Lambda function ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:ALIAS]`) or its
    /// name.
    pub function: String,
    /// In a queued call (the outbox), the contact's fields as the step saw them; never
    /// written in a scenario (validation refuses it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub contact: Option<serde_json::Map<String, Value>>,
}

/// Checks a function reference: a Lambda function ARN (optionally with a version or alias),
/// or a function name (letters, digits, `-` and `_`, at most 64).
pub fn check_function(function: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let qualifier_ok = |q: &str| {
        !q.is_empty()
            && q.len() <= 128
            && q.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$')
    };
    if function.trim().is_empty() {
        return Err("name the Lambda function: its ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME) or its name".into());
    }
    if let Some(rest) = function.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.split(':').collect();
        let ok = matches!(parts.as_slice(),
            [partition, "lambda", region, account, "function", name, qualifier @ ..]
                if partition.starts_with("aws")
                    && !region.is_empty()
                    && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && account.len() == 12
                    && account.chars().all(|c| c.is_ascii_digit())
                    && name_ok(name)
                    && qualifier.len() <= 1
                    && qualifier.iter().all(|q| qualifier_ok(q)));
        if ok {
            return Ok(());
        }
        return Err(format!(
            "\"{function}\" is not a Lambda function ARN: write arn:aws:lambda:REGION:ACCOUNT:function:NAME"
        ));
    }
    if name_ok(function) {
        Ok(())
    } else {
        Err(format!(
            "\"{function}\" is neither a Lambda function ARN nor a function name (letters, digits, - and _, at most 64)"
        ))
    }
}

/// The event the function receives: `{contact, step, scenario, enrollment, idempotency_key}`
/// (`contact` is the contact's fields as the step saw them; the key is `{enrollment}:{step}`,
/// the same on every attempt).
pub fn event(contact: &Value, step: &str, scenario: &str, enrollment: &str) -> Value {
    json!({
        "contact": contact,
        "step": step,
        "scenario": scenario,
        "enrollment": enrollment,
        "idempotency_key": crate::webhook::idempotency_key(enrollment, step),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_arns_or_names() {
        for ok in [
            "arn:aws:lambda:us-east-1:123456789012:function:crm-sync",
            "arn:aws:lambda:eu-west-3:123456789012:function:crm_sync:live",
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:f:$LATEST",
            "crm-sync",
        ] {
            assert_eq!(check_function(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "arn:aws:sns:us-east-1:123456789012:topic",
            "arn:aws:lambda:us-east-1:1234:function:f",
            "arn:aws:lambda:us-east-1:123456789012:function:",
            "arn:aws:lambda:us-east-1:123456789012:function:f:a:b",
            "https://example.com/hook",
            "crm sync",
        ] {
            assert!(check_function(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_event_carries_the_contact_step_and_key() {
        let e = event(&json!({"id": "c1"}), "sync", "s", "s:c1:1");
        assert_eq!(e["contact"]["id"], "c1");
        assert_eq!(e["idempotency_key"], "s:c1:1:sync");
        assert_eq!(e["scenario"], "s");
    }
}
