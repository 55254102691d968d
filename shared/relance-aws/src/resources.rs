//! The one source of truth for the names and keys of Relance's AWS resources: tables, queues
//! (each with its dead-letter queue), the event bus and its rule. `relance dev up` creates
//! them on any AWS-compatible endpoint; the SAM template declares the same (a test compares).

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::config::{AwsConfig, QueueUrls};
use crate::dynamodb::{AwsError, DynamoStore};

/// The queues, by role.
pub const QUEUES: [&str; 8] = [
    "trigger",
    "step",
    "email",
    "sms",
    "push",
    "web-push",
    "launch",
    "engagement",
];

/// How many receives before a message goes to its dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// The `detail-type`s the trigger rule routes to the trigger function (or, in dev, its queue).
pub const TRIGGER_DETAIL_TYPES: [&str; 5] = [
    "relance.contact",
    "relance.activity",
    "relance.engagement",
    "relance.launch",
    "LaunchScenario",
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

    /// The trigger rule's event pattern.
    pub fn trigger_pattern() -> String {
        serde_json::json!({"detail-type": TRIGGER_DETAIL_TYPES}).to_string()
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

fn err(op: &'static str) -> impl Fn(String) -> AwsError {
    move |message| AwsError::Dynamo { op, message }
}

/// Creates (or finds) every resource; safe to run again.
pub async fn create_all(
    clients: &Clients,
    names: &Names,
    timer_shards: u32,
) -> Result<Deployed, AwsError> {
    let mut config = AwsConfig::with_prefix(&names.prefix, timer_shards);
    DynamoStore::create_tables(&clients.dynamo, &config).await?;
    let mut queues = BTreeMap::new();
    for role in QUEUES {
        let dlq = clients
            .sqs
            .create_queue()
            .queue_name(names.dlq(role))
            .send()
            .await
            .map_err(|e| err("SQS CreateQueue")(format!("{e:?}")))?;
        let dlq_url = dlq.queue_url.unwrap_or_default();
        let dlq_arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| err("SQS GetQueueAttributes")(format!("{e:?}")))?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES.to_string()}).to_string();
        let q = clients
            .sqs
            .create_queue()
            .queue_name(names.queue(role))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .map_err(|e| err("SQS CreateQueue")(format!("{e:?}")))?;
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
        return Err(err("EventBridge CreateEventBus")(format!("{e:?}")));
    }
    clients
        .eventbridge
        .put_rule()
        .name(names.trigger_rule())
        .event_bus_name(&bus)
        .event_pattern(Names::trigger_pattern())
        .send()
        .await
        .map_err(|e| err("EventBridge PutRule")(format!("{e:?}")))?;
    let trigger_url = queues.get("trigger").cloned().unwrap_or_default();
    let trigger_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&trigger_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| err("SQS GetQueueAttributes")(format!("{e:?}")))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let target = Target::builder()
        .id("trigger-queue")
        .arn(trigger_arn)
        .build()
        .map_err(|e| err("EventBridge target")(e.to_string()))?;
    clients
        .eventbridge
        .put_targets()
        .rule(names.trigger_rule())
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| err("EventBridge PutTargets")(format!("{e:?}")))?;
    config.event_bus = Some(bus);
    config.queues = QueueUrls {
        step: queues.get("step").cloned(),
        email: queues.get("email").cloned(),
        sms: queues.get("sms").cloned(),
        push: queues.get("push").cloned(),
        web_push: queues.get("web-push").cloned(),
        launch: queues.get("launch").cloned(),
    };
    Ok(Deployed { config, queues })
}
