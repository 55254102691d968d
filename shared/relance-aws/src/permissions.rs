//! What each function's code calls, as IAM grants: the table `infra/template.yaml` is held
//! to (`functions/tests/permissions.rs` compares every policy statement with it, and the
//! emulator test `tests/aws/permissions.rs` records the calls each handler makes and checks
//! them against it). It lives beside the handlers whose calls it lists, so that emulator test
//! (this crate's) reads it without depending on the functions crate. Change a handler's calls, change this table, then the template. A grant Lambda uses
//! itself with the function's role (`by_lambda`: the async dead-letter queue, decrypting the
//! environment or a queue's messages with the stack's key) is no call of the code, so the
//! emulator never records it.
//!
//! Resources are named as the template names them: a logical id (`StateTable`, whose
//! `!GetAtt …Arn` or `!Ref` the statement takes), `*`, or the text of a `!Sub` ARN.

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Allow.
    Allow,
    /// Deny (wins over any allow).
    Deny,
}

impl Effect {
    /// As IAM spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

/// One statement: actions on resources, with an optional condition.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// Allow or deny.
    pub effect: Effect,
    /// `service:Action`, as IAM names them.
    pub actions: &'static [&'static str],
    /// Logical ids, `*`, or `!Sub` ARN texts.
    pub resources: &'static [&'static str],
    /// The condition as `Operator key value[,value]` (none: unconditional).
    pub condition: Option<&'static str>,
    /// The calls that need it.
    pub why: &'static str,
    /// Used by Lambda itself with the function's role (the asynchronous-invocation
    /// dead-letter queue, the environment's decryption, the event source's receive), not by
    /// an SDK call of the code: the emulator test never sees it made.
    pub by_lambda: bool,
}

/// A function (its template resource and its handler) and its grants.
#[derive(Debug, Clone, Copy)]
pub struct FunctionGrants {
    /// The `AWS::Serverless::Function` logical id.
    pub resource: &'static str,
    /// The function the one `bootstrap` binary serves (the template's `Handler`, which Lambda
    /// passes as `_HANDLER`).
    pub handler: &'static str,
    /// Every statement of its policy.
    pub grants: &'static [Grant],
}

const fn allow(
    actions: &'static [&'static str],
    resources: &'static [&'static str],
    why: &'static str,
) -> Grant {
    Grant {
        effect: Effect::Allow,
        actions,
        resources,
        condition: None,
        why,
        by_lambda: false,
    }
}

/// A grant Lambda uses with the function's role, not a call of the code.
const fn by_lambda(
    actions: &'static [&'static str],
    resources: &'static [&'static str],
    why: &'static str,
) -> Grant {
    Grant {
        by_lambda: true,
        ..allow(actions, resources, why)
    }
}

/// The state table's reads and writes of a runtime function that moves enrollments but
/// never lists the audience nor deletes from the state table.
const STATE_RUNTIME: Grant = allow(
    &[
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:Query",
    ],
    &["StateTable"],
    "scenarios, contacts, history, enrollments (conditional puts), entry marks, journal (a batch's items in BatchWriteItem), tick cursor; a consent restatement held to the contact as read (TransactWriteItems: ConditionCheckItem and PutItem)",
);

/// The state table of the internet-facing unsubscribe function: as [`STATE_RUNTIME`] but no
/// BatchWriteItem, which can delete (its store writes each journal item alone: it flushes as
/// it goes).
const STATE_INTERNET: Grant = allow(
    &[
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    ],
    &["StateTable"],
    "scenarios, contacts, history, enrollments (conditional puts), entry marks, journal; a consent restatement held to the contact as read (TransactWriteItems: ConditionCheckItem and PutItem)",
);

/// The state table of the trigger and the tick: also Scan (a launch to a whole audience lists
/// the contacts) and DeleteItem (inactivity checks cleared or fired, one-off launches done).
/// The tick's heartbeat of the stored layouts (`settings`, GetItem and UpdateItem) is made
/// by the function around the handler, so the emulator test does not record it.
const STATE_LISTING: Grant = allow(
    &[
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:Scan",
    ],
    &["StateTable"],
    "as the others (a consent restatement in TransactWriteItems included), plus contact_ids (Scan) for audience launches and remove_inactivity / set_launch (DeleteItem)",
);

/// Timers written and consumed by a transition, one request each (the internet-facing
/// unsubscribe function, which flushes as it goes).
const TIMERS_WRITE: Grant = allow(
    &["dynamodb:PutItem", "dynamodb:DeleteItem"],
    &["TimersTable"],
    "schedule (PutItem) and cancel (DeleteItem) of durable timers and inactivity checks",
);

/// Timers written and consumed by the transitions of a batch: also together at its flush.
const TIMERS_BATCH: Grant = allow(
    &[
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ],
    &["TimersTable"],
    "schedule (PutItem) and cancel (DeleteItem) of durable timers and inactivity checks; a batch's timers together at its flush (BatchWriteItem)",
);

/// The channel queues a transition's sends go to, and the webhook queue its webhook calls.
const CHANNEL_QUEUES: &[&str] = &[
    "EmailQueue",
    "SmsQueue",
    "PushQueue",
    "WebPushQueue",
    "WebhookQueue",
    "TriggerDeadLetterQueue",
];

const EVENTS: Grant = allow(
    &["events:PutEvents"],
    &["EventBus"],
    "Relance's events (ends, goals, tasks, leads, exports) on its bus",
);

/// The asynchronous-invocation dead-letter queue, written by Lambda with the function's role.
const DLQ: Grant = by_lambda(
    &["sqs:SendMessage"],
    &["TriggerDeadLetterQueue"],
    "Lambda's dead-letter queue for failed asynchronous invocations (sent with the function's role)",
);

/// A sender's own records: the idempotency claim, the shared send-rate counter, the outcome,
/// the journal line of a skip or failure, a dead letter.
const SENDER_STATE: Grant = allow(
    &["dynamodb:PutItem", "dynamodb:UpdateItem"],
    &["StateTable"],
    "claim (PutItem, conditional), rate slot and outcome (UpdateItem), journal and dead letters (PutItem)",
);

/// A claim released after a transient failure, so the queue's retry may send, and a claim read
/// by a duplicate delivery for the outcome of a send settled unsent: only in the claims'
/// partitions (`sent#0` to `sent#15`, [`crate::keys::sent`]).
const SENDER_RELEASE: Grant = Grant {
    effect: Effect::Allow,
    actions: &["dynamodb:DeleteItem", "dynamodb:GetItem"],
    resources: &["StateTable"],
    condition: Some(
        "ForAllValues:StringEquals dynamodb:LeadingKeys sent#0,sent#1,sent#2,sent#3,sent#4,sent#5,sent#6,sent#7,sent#8,sent#9,sent#10,sent#11,sent#12,sent#13,sent#14,sent#15",
    ),
    why: "Senders::settle releases the claim (pk = sent#{h}) on a transient failure; Ledger::unsent reads it for a duplicate delivery",
    by_lambda: false,
};

/// The claims earlier builds made (`sent`) and the window in which they are read
/// (`settings`/`legacy_claims`): read by the ledger before it claims ([`crate::ledger`]).
const SENDER_LEGACY_CLAIMS: Grant = Grant {
    effect: Effect::Allow,
    actions: &["dynamodb:GetItem", "dynamodb:Query"],
    resources: &["StateTable"],
    condition: Some("ForAllValues:StringEquals dynamodb:LeadingKeys sent,settings"),
    why: "Ledger::claim reads an earlier build's claim (pk = sent) within the window kept in settings",
    by_lambda: false,
};

/// The stack's customer managed key (`RelanceKey`): Lambda decrypts the function's
/// environment with the execution role when `KmsKeyArn` is set.
const ENV_KEY: Grant = by_lambda(
    &["kms:Decrypt"],
    &["RelanceKey"],
    "Lambda decrypts the environment (KmsKeyArn, the stack's key) with the function's role",
);

/// Every function, as the template declares it.
pub const FUNCTIONS: &[FunctionGrants] = &[
    FunctionGrants {
        resource: "TriggerFunction",
        handler: "trigger",
        grants: &[
            STATE_LISTING,
            TIMERS_BATCH,
            allow(
                &["sqs:SendMessage"],
                &[
                    "LaunchQueue",
                    "EmailQueue",
                    "SmsQueue",
                    "PushQueue",
                    "WebPushQueue",
                    "WebhookQueue",
                    "TriggerDeadLetterQueue",
                ],
                "launch pages (fan-out), sends and webhook calls; the dead-letter queue of async invocations",
            ),
            EVENTS,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "TickFunction",
        handler: "tick",
        grants: &[
            STATE_LISTING,
            allow(
                &[
                    "dynamodb:PutItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:Query",
                ],
                &["TimersTable"],
                "due_items (Query of minute buckets), schedule and cancel",
            ),
            allow(
                &["sqs:SendMessage"],
                &[
                    "StepQueue",
                    "EmailQueue",
                    "SmsQueue",
                    "PushQueue",
                    "WebPushQueue",
                    "WebhookQueue",
                    "TriggerDeadLetterQueue",
                ],
                "due timers to the step queue (SendMessageBatch), sends and webhook calls of launches; the dead-letter queue",
            ),
            EVENTS,
            allow(
                &["events:ListRules", "events:ListArchives"],
                &["*"],
                "which rules and archives read the bus (listeners::check), once a minute; listing names no resource",
            ),
            allow(
                &["events:DescribeEventBus"],
                &["EventBus"],
                "the bus's ARN, which its archives name",
            ),
            allow(
                &["events:DescribeArchive"],
                &["arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:archive/*"],
                "each archive's pattern",
            ),
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "StepExecutorFunction",
        handler: "step-executor",
        grants: &[
            STATE_RUNTIME,
            TIMERS_BATCH,
            allow(
                &["sqs:SendMessage"],
                CHANNEL_QUEUES,
                "sends; the dead-letter queue",
            ),
            EVENTS,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "LaunchFunction",
        handler: "launch",
        grants: &[
            STATE_RUNTIME,
            TIMERS_BATCH,
            allow(
                &["sqs:SendMessage"],
                CHANNEL_QUEUES,
                "sends; the dead-letter queue",
            ),
            EVENTS,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "EngagementFunction",
        handler: "engagement",
        grants: &[
            STATE_RUNTIME,
            TIMERS_BATCH,
            allow(
                &["sqs:SendMessage"],
                CHANNEL_QUEUES,
                "sends; the dead-letter queue",
            ),
            EVENTS,
            by_lambda(
                &["kms:Decrypt"],
                &["RelanceKey"],
                "Lambda decrypts the environment, and the engagement queue's messages (SNS delivers them under the stack's key) as the event source receives them, with the function's role",
            ),
        ],
    },
    FunctionGrants {
        resource: "EmailSenderFunction",
        handler: "email-sender",
        grants: &[
            SENDER_STATE,
            SENDER_RELEASE,
            SENDER_LEGACY_CLAIMS,
            allow(
                &["ses:GetSuppressedDestination"],
                &["*"],
                "the account suppression list (SES names no resource for it)",
            ),
            allow(
                &["ses:SendEmail"],
                &[
                    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${EmailIdentity}",
                    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${Domain}",
                    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${ConfigurationSetName}",
                ],
                "SESv2 SendEmail from the sending address (or its domain's identity), with the configuration set",
            ),
            allow(
                &["secretsmanager:GetSecretValue"],
                &["UnsubscribeSecret"],
                "the unsubscribe links' key, once at start",
            ),
            DLQ,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "SmsSenderFunction",
        handler: "sms-sender",
        grants: &[
            SENDER_STATE,
            SENDER_RELEASE,
            SENDER_LEGACY_CLAIMS,
            allow(
                &["sns:Publish", "sns:CheckIfPhoneNumberIsOptedOut"],
                &["*"],
                "Publish to a phone number and the opt-out check (SNS names no resource for them)",
            ),
            Grant {
                effect: Effect::Deny,
                actions: &["sns:Publish"],
                resources: &["arn:aws:sns:*:*:*"],
                condition: None,
                why: "the publish on `*` never reaches a topic or a platform endpoint",
                by_lambda: false,
            },
            DLQ,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "PushSenderFunction",
        handler: "push-sender",
        grants: &[
            SENDER_STATE,
            SENDER_RELEASE,
            SENDER_LEGACY_CLAIMS,
            allow(
                &["sns:Publish"],
                &["arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:endpoint/*"],
                "Publish to the contacts' platform endpoints",
            ),
            DLQ,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "WebPushSenderFunction",
        handler: "web-push-sender",
        grants: &[
            allow(
                &[
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                ],
                &["StateTable"],
                "as the other senders, plus the contact read and written back without its expired subscriptions",
            ),
            SENDER_RELEASE,
            SENDER_LEGACY_CLAIMS,
            allow(
                &["secretsmanager:GetSecretValue"],
                &["VapidPrivateKeySecretArn"],
                "the VAPID private key, once at start",
            ),
            DLQ,
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "WebhookSenderFunction",
        handler: "webhook-sender",
        grants: &[
            // A `save` is a contact update through the runtime (it may start or move
            // enrollments); the claim, its release and a failure mark are the ledger's.
            STATE_RUNTIME,
            SENDER_RELEASE,
            SENDER_LEGACY_CLAIMS,
            TIMERS_BATCH,
            allow(
                &["sqs:SendMessage"],
                &[
                    "EmailQueue",
                    "SmsQueue",
                    "PushQueue",
                    "WebPushQueue",
                    "WebhookQueue",
                    "WebhookDeadLetterQueue",
                    "TriggerDeadLetterQueue",
                ],
                "a retry's copy (webhook queue), a call dead-lettered after 24 h, sends and calls of enrollments a save moves; the dead-letter queue",
            ),
            allow(
                &["sqs:ChangeMessageVisibility"],
                &["WebhookQueue"],
                "a retry's copy that arrives before its backoff waits out the rest",
            ),
            EVENTS,
            allow(
                &["secretsmanager:GetSecretValue"],
                &["WebhookSecretArns"],
                "the webhook signing secrets the stack names, once at start",
            ),
            allow(
                &["lambda:InvokeFunction"],
                &["InvocableFunctionArns"],
                "invoke steps: only the functions the stack lists (asynchronous Invoke)",
            ),
            ENV_KEY,
        ],
    },
    FunctionGrants {
        resource: "UnsubscribeFunction",
        handler: "unsubscribe",
        grants: &[
            STATE_INTERNET,
            TIMERS_WRITE,
            allow(
                &["sqs:SendMessage"],
                &[
                    "EmailQueue",
                    "SmsQueue",
                    "PushQueue",
                    "WebPushQueue",
                    "WebhookQueue",
                ],
                "sends and webhook calls of an enrollment the unsubscribed engagement resumes",
            ),
            EVENTS,
            allow(
                &["secretsmanager:GetSecretValue"],
                &["UnsubscribeSecret"],
                "the unsubscribe links' key, once at start",
            ),
            ENV_KEY,
        ],
    },
];

/// The IAM action an SDK operation needs (`DynamoDB`, `GetItem` → `dynamodb:GetItem`), as the
/// meter names operations; none for one Relance's functions never call.
pub fn iam_action(service: &str, operation: &str) -> Option<String> {
    let prefix = match service {
        "DynamoDB" => "dynamodb",
        "SQS" => "sqs",
        "SESv2" | "SES" => "ses",
        "SNS" => "sns",
        "EventBridge" => "events",
        "Secrets Manager" | "SecretsManager" => "secretsmanager",
        "Lambda" => "lambda",
        _ => return None,
    };
    // A batch send is authorized as SendMessage; SES v1's raw send is its own action.
    let action = match (prefix, operation) {
        ("sqs", "SendMessageBatch") => "SendMessage",
        ("lambda", "Invoke") => "InvokeFunction",
        (_, op) => op,
    };
    Some(format!("{prefix}:{action}"))
}

/// The IAM action an item of a DynamoDB `TransactWriteItems` needs, by the item's kind
/// (`ConditionCheck`, `Put`, `Update`, `Delete`): the request has no action of its own, IAM
/// authorizes each item as the single-item operation it stands for.
pub fn transact_item_action(kind: &str) -> Option<&'static str> {
    match kind {
        "ConditionCheck" => Some("dynamodb:ConditionCheckItem"),
        "Put" => Some("dynamodb:PutItem"),
        "Update" => Some("dynamodb:UpdateItem"),
        "Delete" => Some("dynamodb:DeleteItem"),
        _ => None,
    }
}

/// The grants of the function `resource`, if the table has it.
pub fn of(resource: &str) -> Option<&'static FunctionGrants> {
    FUNCTIONS.iter().find(|f| f.resource == resource)
}
