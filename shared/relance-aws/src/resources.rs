//! The one source of truth for the names and keys of Relance's AWS resources: tables, queues
//! (each with its dead-letter queue), the event bus and its rule. `relance dev up` creates
//! them on any AWS-compatible endpoint; the SAM template declares the same (a test compares).

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::config::{AwsConfig, QueueUrls};
use crate::dynamodb::DynamoStore;
use crate::error::{EventBridgeError, ResourceError, SqsError};

/// The queues, by role.
pub const QUEUES: [&str; 9] = [
    "trigger",
    "step",
    "email",
    "sms",
    "push",
    "web-push",
    "launch",
    "engagement",
    "webhook",
];

/// How many receives before a message goes to its dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// The `detail-type`s the trigger rule routes to the trigger function (or, in dev, its queue).
pub const TRIGGER_DETAIL_TYPES: [&str; 6] = [
    "relance.contact",
    "relance.activity",
    "relance.engagement",
    "relance.launch",
    "LaunchScenario",
    "relance.consent",
];

/// The names of every resource, from a prefix (`relance-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix.
    pub prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
        }
    }

    /// The state table.
    pub fn state_table(&self) -> String {
        format!("{}state", self.prefix)
    }

    /// The timer table.
    pub fn timers_table(&self) -> String {
        format!("{}timers", self.prefix)
    }

    /// A queue by role.
    pub fn queue(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// A queue's dead-letter queue.
    pub fn dlq(&self, role: &str) -> String {
        format!("{}{role}-dlq", self.prefix)
    }

    /// The event bus.
    pub fn bus(&self) -> String {
        format!("{}bus", self.prefix)
    }

    /// The rule sending contact, activity, engagement and launch events to the trigger.
    pub fn trigger_rule(&self) -> String {
        format!("{}trigger", self.prefix)
    }

    /// The trigger rule's event pattern: the trigger's detail-types, from any source but
    /// Relance's own, so nothing Relance emits loops back into it.
    pub fn trigger_pattern() -> String {
        serde_json::json!({
            "source": [{"anything-but": crate::eventbridge::SOURCE}],
            "detail-type": TRIGGER_DETAIL_TYPES,
        })
        .to_string()
    }
}

/// What `create_all` made: the adapters' configuration and every queue URL by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The configuration the functions read from the environment.
    pub config: AwsConfig,
    /// Queue URLs by role.
    pub queues: BTreeMap<String, String>,
}

impl Deployed {
    /// The environment variables the functions (and `relance dev run`) read.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "RELANCE_STATE_TABLE".to_string(),
                self.config.state_table.clone(),
            ),
            (
                "RELANCE_TIMERS_TABLE".to_string(),
                self.config.timers_table.clone(),
            ),
            (
                "RELANCE_TIMER_SHARDS".to_string(),
                self.config.timer_shards.to_string(),
            ),
        ];
        if let Some(bus) = &self.config.event_bus {
            env.push(("RELANCE_EVENT_BUS".into(), bus.clone()));
        }
        if let Some(dlq) = &self.config.queues.webhook_dlq {
            env.push(("RELANCE_WEBHOOK_DLQ_URL".into(), dlq.clone()));
        }
        for (role, url) in &self.queues {
            if role != "trigger" {
                env.push((
                    format!(
                        "RELANCE_{}_QUEUE_URL",
                        role.replace('-', "_").to_uppercase()
                    ),
                    url.clone(),
                ));
            }
        }
        env
    }
}

/// The clients `create_all` needs.
#[derive(Debug, Clone)]
pub struct Clients {
    /// DynamoDB.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// EventBridge.
    pub eventbridge: aws_sdk_eventbridge::Client,
}

/// A queue's ARN (what redrive policies and rule targets name).
async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, SqsError> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| SqsError::new("GetQueueAttributes", format!("{e:?}")))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

/// Creates (or finds) every resource; safe to run again.
pub async fn create_all(
    clients: &Clients,
    names: &Names,
    timer_shards: u32,
) -> Result<Deployed, ResourceError> {
    let mut config = AwsConfig::with_prefix(&names.prefix, timer_shards);
    DynamoStore::create_tables(&clients.dynamo, &config).await?;
    let mut queues = BTreeMap::new();
    let mut webhook_dlq = None;
    for role in QUEUES {
        let dlq = clients
            .sqs
            .create_queue()
            .queue_name(names.dlq(role))
            .send()
            .await
            .map_err(|e| SqsError::new("CreateQueue", format!("{e:?}")))?;
        let dlq_url = dlq.queue_url.unwrap_or_default();
        let dlq_arn = queue_arn(&clients.sqs, &dlq_url).await?;
        if role == "webhook" {
            // The webhook sender dead-letters a call itself once its 24 h are over.
            webhook_dlq = Some(dlq_url.clone());
        }
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES.to_string()}).to_string();
        let q = clients
            .sqs
            .create_queue()
            .queue_name(names.queue(role))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .map_err(|e| SqsError::new("CreateQueue", format!("{e:?}")))?;
        queues.insert(role.to_string(), q.queue_url.unwrap_or_default());
    }
    let bus = names.bus();
    if let Err(e) = clients
        .eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        && !format!("{e:?}").contains("AlreadyExists")
    {
        return Err(EventBridgeError::new("CreateEventBus", format!("{e:?}")).into());
    }
    clients
        .eventbridge
        .put_rule()
        .name(names.trigger_rule())
        .event_bus_name(&bus)
        .event_pattern(Names::trigger_pattern())
        .send()
        .await
        .map_err(|e| EventBridgeError::new("PutRule", format!("{e:?}")))?;
    let trigger_url = queues.get("trigger").cloned().unwrap_or_default();
    let trigger_arn = queue_arn(&clients.sqs, &trigger_url).await?;
    let target = Target::builder()
        .id("trigger-queue")
        .arn(trigger_arn)
        .build()
        .map_err(|e| EventBridgeError::new("target", e.to_string()))?;
    clients
        .eventbridge
        .put_targets()
        .rule(names.trigger_rule())
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| EventBridgeError::new("PutTargets", format!("{e:?}")))?;
    config.event_bus = Some(bus);
    config.queues = QueueUrls {
        step: queues.get("step").cloned(),
        email: queues.get("email").cloned(),
        sms: queues.get("sms").cloned(),
        push: queues.get("push").cloned(),
        web_push: queues.get("web-push").cloned(),
        launch: queues.get("launch").cloned(),
        webhook: queues.get("webhook").cloned(),
        webhook_dlq,
    };
    Ok(Deployed { config, queues })
}

/// Finds the resources named after `names.prefix` that exist (the queues by name, the bus):
/// what the operating commands hand sends to when the environment does not name them.
/// A queue or bus that does not exist is left out (a send for it is then refused).
pub async fn find(
    clients: &Clients,
    names: &Names,
    timer_shards: u32,
) -> Result<AwsConfig, ResourceError> {
    let mut config = AwsConfig::with_prefix(&names.prefix, timer_shards);
    let mut urls = BTreeMap::new();
    for role in QUEUES {
        match clients
            .sqs
            .get_queue_url()
            .queue_name(names.queue(role))
            .send()
            .await
        {
            Ok(out) => {
                if let Some(url) = out.queue_url {
                    urls.insert(role, url);
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) => {}
            Err(e) => return Err(SqsError::new("GetQueueUrl", format!("{e:?}")).into()),
        }
    }
    config.queues = QueueUrls {
        step: urls.get("step").cloned(),
        email: urls.get("email").cloned(),
        sms: urls.get("sms").cloned(),
        push: urls.get("push").cloned(),
        web_push: urls.get("web-push").cloned(),
        launch: urls.get("launch").cloned(),
        webhook: urls.get("webhook").cloned(),
        webhook_dlq: None,
    };
    let bus = names.bus();
    config.event_bus = match clients
        .eventbridge
        .describe_event_bus()
        .name(&bus)
        .send()
        .await
    {
        Ok(_) => Some(bus),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(EventBridgeError::new("DescribeEventBus", format!("{e:?}")).into()),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    fn template() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The text of a `!Sub "..."` (or a plain string).
    fn sub(v: &Value) -> String {
        match v {
            Value::Tagged(t) => t.value.as_str().unwrap_or("").to_string(),
            other => other.as_str().unwrap_or("").to_string(),
        }
    }

    fn names_of(t: &Value, kind: &str, field: &str) -> Vec<String> {
        let mut out: Vec<String> = t["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter(|(_, r)| r["Type"].as_str() == Some(kind))
            .map(|(_, r)| sub(&r["Properties"][field]))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_template_declares_the_resources_dev_up_creates() {
        let t = template();
        let names = Names::new("${NamePrefix}");
        assert_eq!(
            names_of(&t, "AWS::DynamoDB::Table", "TableName"),
            [names.state_table(), names.timers_table()]
        );
        for table in ["StateTable", "TimersTable"] {
            let keys = &t["Resources"][table]["Properties"]["KeySchema"];
            assert_eq!(keys[0]["AttributeName"], "pk", "{table}");
            assert_eq!(keys[1]["AttributeName"], "sk", "{table}");
        }
        assert_eq!(
            t["Resources"]["TimersTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"],
            "expires_at"
        );
        let mut queues: Vec<String> = QUEUES
            .iter()
            .flat_map(|r| [names.queue(r), names.dlq(r)])
            .collect();
        queues.sort();
        assert_eq!(names_of(&t, "AWS::SQS::Queue", "QueueName"), queues);
        assert_eq!(names_of(&t, "AWS::Events::EventBus", "Name"), [names.bus()]);
        let pattern = &t["Resources"]["TriggerFunction"]["Properties"]["Events"]["FromBus"]["Properties"]
            ["Pattern"]["detail-type"];
        let types: Vec<&str> = pattern
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(types, TRIGGER_DETAIL_TYPES);
        let source = &t["Resources"]["TriggerFunction"]["Properties"]["Events"]["FromBus"]["Properties"]
            ["Pattern"]["source"];
        assert_eq!(
            source[0]["anything-but"].as_str(),
            Some(crate::eventbridge::SOURCE),
            "the rule must ignore Relance's own events"
        );
        let pattern: serde_json::Value =
            serde_json::from_str(&Names::trigger_pattern()).unwrap_or_default();
        assert_eq!(
            pattern["source"][0]["anything-but"],
            crate::eventbridge::SOURCE
        );
        // Every SQS-triggered function reports partial batch failures.
        for (name, r) in t["Resources"].as_mapping().into_iter().flatten() {
            for (_, e) in r["Properties"]["Events"].as_mapping().into_iter().flatten() {
                if e["Type"] == "SQS" {
                    assert_eq!(
                        e["Properties"]["FunctionResponseTypes"][0], "ReportBatchItemFailures",
                        "{name:?}"
                    );
                }
            }
        }
    }
}
