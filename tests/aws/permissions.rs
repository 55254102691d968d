//! The roles against the calls actually made: every function's handler runs on the emulator
//! with clients whose every request is recorded (an SDK interceptor), and each request's
//! action and the table, queue, bus or secret it touched must be granted to that function by
//! `relance_aws::permissions` (the table `infra/template.yaml` is held to), its
//! conditions met (a sender deletes only in the claims' partitions `sent#{h}`) and no deny matched (the
//! SMS sender never publishes to an ARN), the webhook sender's retry, visibility change,
//! save and dead letter included. The secrets: read at start from Secrets Manager by
//! ARN, a short unsubscribe key or an unreadable secret refused with the setting named.

use crate::support::{at, create_queue, sample};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{TimeDelta, Utc};
use relance_aws::bridge::Bridge;
use relance_aws::channels::{SenderConfig, Senders};
use relance_aws::config::AwsConfig;
use relance_aws::dispatch::AwsDispatch;
use relance_aws::dynamodb::DynamoStore;
use relance_aws::handlers;
use relance_aws::permissions::{self, Effect};
use relance_aws::secrets::{self, SecretError};
use relance_aws::sqs::SqsQueues;
use relance_core::Contact;
use relance_core::ports::{SourceFormat, Status};
use relance_core::unsubscribe::UnsubscribeClaim;
use relance_runtime::runtime::Runtime;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

type Clients = crate::support::Metered;

/// Clients on the emulator, every request recorded by one meter (one set per test: the
/// tests run in parallel, and each reads only its own requests).
fn clients() -> Clients {
    crate::support::metered()
}

/// Where the test's resources are, to name what a request touched as the template does.
struct Deployment {
    config: AwsConfig,
    step_queue: String,
    launch_queue: String,
    bus: String,
    unsubscribe_secret_arn: String,
}

/// One action a recorded request needs: (action, resource as the table names it, the
/// DynamoDB partition key when the request names one).
type Need = (String, String, Option<String>);

/// The table a DynamoDB request (or transaction item) names, as the template names it.
fn table_of(d: &Deployment, op: &str, table: Option<&str>) -> String {
    match table {
        Some(t) if t == d.config.state_table => "StateTable".to_string(),
        Some(t) if t == d.config.timers_table => "TimersTable".to_string(),
        other => panic!("{op} on an unknown table {other:?}"),
    }
}

/// What one recorded request needs: one action, or for a `TransactWriteItems` one per item
/// (IAM authorizes each item as the single-item operation it stands for, on its own table
/// and partition).
fn needs(d: &Deployment, op: &str, body: &str) -> Vec<Need> {
    if op == "DynamoDB.TransactWriteItems" {
        let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let items = json["TransactItems"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!items.is_empty(), "{op} with no items: {body}");
        return items
            .iter()
            .flat_map(|item| item.as_object().cloned().unwrap_or_default())
            .map(|(kind, request)| {
                let action = permissions::transact_item_action(&kind)
                    .unwrap_or_else(|| panic!("{op}: an item {kind} IAM does not name"));
                let table = table_of(d, op, request["TableName"].as_str());
                let pk = request["Key"]["pk"]["S"]
                    .as_str()
                    .or_else(|| request["Item"]["pk"]["S"].as_str())
                    .map(str::to_string);
                (action.to_string(), table, pk)
            })
            .collect();
    }
    vec![single_need(d, op, body)]
}

/// What a request that is not a transaction needs.
fn single_need(d: &Deployment, op: &str, body: &str) -> Need {
    let (service, operation) = op.split_once('.').unwrap_or((op, ""));
    let action = permissions::iam_action(service, operation)
        .unwrap_or_else(|| panic!("{op}: a call the permissions table does not know"));
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let resource = match service {
        // A batch names its table as the key of its requests (one table per batch here).
        "DynamoDB" => table_of(
            d,
            op,
            json["TableName"].as_str().or_else(|| {
                json["RequestItems"]
                    .as_object()
                    .and_then(|tables| tables.keys().next())
                    .map(String::as_str)
            }),
        ),
        "SQS" => {
            let url = json["QueueUrl"].as_str().unwrap_or_default();
            let q = &d.config.queues;
            let named = [
                (q.email.as_deref(), "EmailQueue"),
                (q.sms.as_deref(), "SmsQueue"),
                (q.push.as_deref(), "PushQueue"),
                (q.web_push.as_deref(), "WebPushQueue"),
                (Some(d.step_queue.as_str()), "StepQueue"),
                (Some(d.launch_queue.as_str()), "LaunchQueue"),
                (q.webhook.as_deref(), "WebhookQueue"),
                (q.webhook_dlq.as_deref(), "WebhookDeadLetterQueue"),
            ];
            named
                .iter()
                .find(|(u, _)| *u == Some(url))
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| panic!("{op} on an unknown queue {url}"))
        }
        "EventBridge" => match operation {
            "PutEvents" => {
                let bus = json["Entries"][0]["EventBusName"].as_str().unwrap_or("");
                assert_eq!(bus, d.bus, "{op} on another bus");
                "EventBus".to_string()
            }
            "DescribeEventBus" => {
                assert_eq!(json["Name"].as_str(), Some(d.bus.as_str()), "{op}");
                "EventBus".to_string()
            }
            // Listing names no resource; the rules listed are this bus's.
            "ListRules" => {
                assert_eq!(json["EventBusName"].as_str(), Some(d.bus.as_str()), "{op}");
                "*".to_string()
            }
            "ListArchives" => "*".to_string(),
            "DescribeArchive" => {
                "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:archive/*"
                    .to_string()
            }
            other => panic!("EventBridge {other}: a call this test does not name"),
        },
        "SESv2" if operation == "SendEmail" => {
            "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${EmailIdentity}"
                .to_string()
        }
        "SNS" if operation == "Publish" => {
            // A query-protocol form: a target or topic ARN, or a phone number (no resource).
            let arn = body.split('&').find_map(|kv| {
                kv.strip_prefix("TargetArn=")
                    .or_else(|| kv.strip_prefix("TopicArn="))
            });
            match arn {
                Some(a) => a.replace("%3A", ":").replace("%2F", "/"),
                None => "*".to_string(),
            }
        }
        "Secrets Manager" | "SecretsManager" => {
            let id = json["SecretId"].as_str().unwrap_or_default();
            assert_eq!(id, d.unsubscribe_secret_arn, "{op} on another secret");
            "UnsubscribeSecret".to_string()
        }
        _ => "*".to_string(),
    };
    // A batch's partition key, when all its items share one (a leading-keys condition
    // must hold for every item).
    let batch_pk = || {
        let pks: BTreeSet<&str> = json["RequestItems"]
            .as_object()?
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .map(|w| {
                w["PutRequest"]["Item"]["pk"]["S"]
                    .as_str()
                    .or_else(|| w["DeleteRequest"]["Key"]["pk"]["S"].as_str())
                    .unwrap_or_default()
            })
            .collect();
        (pks.len() == 1).then(|| pks.into_iter().next().unwrap_or_default())
    };
    let pk = json["Key"]["pk"]["S"]
        .as_str()
        .or_else(|| json["Item"]["pk"]["S"].as_str())
        // A query's partition key is its key condition's value (every query here names it
        // `:pk`).
        .or_else(|| json["ExpressionAttributeValues"][":pk"]["S"].as_str())
        .or_else(batch_pk)
        .map(str::to_string);
    (action, resource, pk)
}

/// Does a table resource cover the one a request touched?
fn covers(granted: &str, touched: &str) -> bool {
    granted == touched
        || granted == "*"
        || granted
            .strip_suffix('*')
            .is_some_and(|prefix| touched.starts_with(prefix) && prefix.contains(':'))
}

/// Every request recorded since the last call must be granted to `function`; returns the
/// (action, resource) pairs it made.
fn check(c: &Clients, d: &Deployment, function: &str) -> BTreeSet<(String, String)> {
    let grants = permissions::of(function)
        .unwrap_or_else(|| panic!("{function} is not in the table"))
        .grants;
    let mut made = BTreeSet::new();
    let needed = c.meter.requests().into_iter().flat_map(|(op, body)| {
        needs(d, &op, &body)
            .into_iter()
            .map(move |n| (op.clone(), n))
    });
    for (op, (action, resource, pk)) in needed {
        let allowed = grants.iter().any(|g| {
            g.effect == Effect::Allow
                && g.actions.contains(&action.as_str())
                && g.resources.iter().any(|r| covers(r, &resource))
                && match g.condition {
                    None => true,
                    Some(cond) => cond
                        .strip_prefix("ForAllValues:StringEquals dynamodb:LeadingKeys ")
                        .is_some_and(|keys| {
                            pk.as_deref()
                                .is_some_and(|pk| keys.split(',').any(|k| k == pk))
                        }),
                }
        });
        assert!(
            allowed,
            "{function} called {op} ({action} on {resource}, pk {pk:?}), which its role does not allow"
        );
        let denied = grants.iter().any(|g| {
            g.effect == Effect::Deny
                && g.actions.contains(&action.as_str())
                && g.resources.iter().any(|r| {
                    r.strip_suffix(":*:*:*")
                        .is_some_and(|p| resource.starts_with(p))
                })
        });
        assert!(!denied, "{function}: {action} on {resource} is denied");
        made.insert((action, resource));
    }
    c.meter.reset();
    made
}

fn event(detail_type: &str, detail: Value, time: &str) -> EventBridgeEvent<Value> {
    serde_json::from_value(
        json!({"detail-type": detail_type, "source": "com.example.shop", "time": time, "detail": detail}),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn take(url: &str) -> SqsEvent {
    crate::support::sqs_event(&crate::support::drain(url))
}

const NEWS: &str = "id: news\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  first: {channel: email, type: newsletter, subject: News, text: x}\nsteps:\n  - {id: first, send: first, next: wait}\n  - id: wait\n    wait_for: {unsubscribed: first, timeout: P2D}\n    on_event: gone\n    on_timeout: done\n  - {id: gone, end: abandon}\n  - {id: done, end: success}\n";

#[test]
fn hostile_each_handler_calls_only_what_its_role_allows() {
    if crate::support::offline() {
        return;
    }
    let c = clients();
    let prefix = format!("perm{}-", std::process::id());
    let mut config = AwsConfig::with_prefix(&prefix, 2);
    c.runtime
        .block_on(DynamoStore::create_tables(&c.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    config.queues.email = Some(create_queue(&format!("{prefix}email")));
    config.queues.sms = Some(create_queue(&format!("{prefix}sms")));
    let step_queue = create_queue(&format!("{prefix}step"));
    let launch_queue = create_queue(&format!("{prefix}launch"));
    config.queues.step = Some(step_queue.clone());
    config.queues.launch = Some(launch_queue.clone());
    crate::support::verify_identity("perm@example.com");
    let bus = format!("{prefix}bus");
    c.runtime
        .block_on(c.eb.create_event_bus().name(&bus).send())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let key = "k".repeat(48);
    let secret_arn = c
        .runtime
        .block_on(
            c.secrets
                .create_secret()
                .name(format!("{prefix}unsubscribe-key"))
                .secret_string(&key)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .arn
        .unwrap_or_default();
    let d = Deployment {
        config: config.clone(),
        step_queue: step_queue.clone(),
        launch_queue: launch_queue.clone(),
        bus: bus.clone(),
        unsubscribe_secret_arn: secret_arn.clone(),
    };
    let bridge = Bridge::new(c.runtime.handle().clone());
    let queues = SqsQueues::new(c.sqs.clone(), bridge.clone());
    let store = DynamoStore::new(c.dynamo.clone(), config.clone(), bridge.clone()).with_dispatch(
        AwsDispatch::new(queues.clone(), config.queues.clone()).with_bus(
            relance_aws::eventbridge::EventBus::new(c.eb.clone(), bus, bridge.clone()),
        ),
    );
    let mut rt = Runtime::new(store);
    rt.store().set_auto_flush(false);
    let t0 = at("2026-12-01T09:00:00Z");
    let contacts: Vec<Contact> = (0..12)
        .map(|i| Contact::from_json(json!({"id": format!("p{i:02}"), "email": format!("p{i}@example.com"), "phone": format!("+3361000{i:04}"), "first_name": "Ana"})).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    rt.import(&contacts, t0, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    for yaml in [include_str!("../../examples/reference-drip.yaml"), NEWS] {
        let put = rt
            .put_scenario(yaml, SourceFormat::Yaml, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        rt.set_status(&put.id, Status::Active, t0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A contact opted out in its fields whose trail lacks the opt-out (stored before the log):
    // a contact update opting it in is kept out, and the opt-out restated in a transaction.
    {
        use relance_core::ports::ContactStore;
        let old = Contact::from_json(
            json!({"id": "old", "email": "old@example.com", "subscriptions": {"news": false}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        rt.store()
            .put_contact(&old, t0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    c.meter.reset();
    let mut made: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();

    // trigger: a contact, an activity event, and two whole-audience launches fanned out.
    let launch_dispatch = crate::support::dispatch(&queues, None, Some(&launch_queue));
    let fanout: Option<&dyn relance_aws::dispatch::Dispatch> = Some(&launch_dispatch);
    let contact = event(
        "relance.contact",
        json!({"contact": {"id": "zed", "email": "zed@example.com"}}),
        "2026-12-01T09:00:00Z",
    );
    let activity = event(
        "relance.activity",
        json!({"contact": "p01", "event": "page.viewed"}),
        "2026-12-01T09:00:00Z",
    );
    let opt_in = event(
        "relance.contact",
        json!({"contact": {"id": "old", "subscriptions": {"news": true}}}),
        "2026-12-01T09:00:00Z",
    );
    for e in [contact, activity, opt_in] {
        handlers::trigger(&mut rt, fanout, &e, t0).unwrap_or_else(|e| panic!("{e}"));
    }
    let trail = rt.consent_trail("old").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        trail
            .iter()
            .any(|e| e.source == relance_core::consent::source::RESTATED),
        "the opt-out restated: {trail:?}"
    );
    for scenario in ["drip", "news"] {
        let launch = event(
            "relance.launch",
            json!({"scenario": scenario}),
            "2026-12-01T09:00:00Z",
        );
        handlers::trigger(&mut rt, fanout, &launch, t0).unwrap_or_else(|e| panic!("{e}"));
    }
    made.insert("TriggerFunction", check(&c, &d, "TriggerFunction"));

    // launch: the pages.
    let pages = take(&launch_queue);
    assert!(!pages.records.is_empty());
    let r = handlers::launch_page(&mut rt, &pages, t0);
    assert!(r.batch_item_failures.is_empty());
    made.insert("LaunchFunction", check(&c, &d, "LaunchFunction"));

    // email sender: its key from Secrets Manager at start, then the first emails.
    let lookup =
        |name: &str| (name == "RELANCE_UNSUBSCRIBE_SECRET_ARN").then(|| secret_arn.clone());
    let read = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, lookup))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.as_deref(), Some(key.as_bytes()));
    let mut sender = SenderConfig::new("perm@example.com");
    sender.check_provider_lists = true;
    sender.send_rate = Some(100);
    let senders = Senders::new(
        c.ses.clone(),
        c.sns.clone(),
        c.dynamo.clone(),
        config.state_table.clone(),
        sender,
        bridge.clone(),
    );
    let email_url = config.queues.email.clone().unwrap_or_default();
    let emails = take(&email_url);
    assert!(emails.records.len() >= 24, "{}", emails.records.len());
    for batch in emails.records.chunks(10) {
        let mut e = SqsEvent::default();
        e.records = batch.to_vec();
        assert!(
            handlers::channel_sender(&senders, rt.store(), &e, t0)
                .batch_item_failures
                .is_empty()
        );
    }
    made.insert("EmailSenderFunction", check(&c, &d, "EmailSenderFunction"));

    // engagement: a third open the first email (SES feedback through SQS).
    let opens: Vec<(String, String)> = (0..12)
        .step_by(3)
        .map(|i| {
            let ses = json!({"eventType": "Open", "mail": {"timestamp": "2026-12-01T09:00:01Z", "tags": {"relance_contact": [format!("p{i:02}")], "relance_scenario": ["drip"], "relance_step": ["first"]}}, "open": {"timestamp": "2026-12-01T10:00:00Z"}});
            (format!("o{i}"), ses.to_string())
        })
        .collect();
    let r = handlers::engagement(
        &mut rt,
        &crate::support::sqs_event(&opens),
        t0 + TimeDelta::hours(1),
    );
    assert!(r.batch_item_failures.is_empty());
    made.insert("EngagementFunction", check(&c, &d, "EngagementFunction"));

    // unsubscribe: its key at start, then a one-click POST that resumes a waiting enrollment.
    let secret = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, lookup))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let token = UnsubscribeClaim {
        contact: "p02".into(),
        communication_type: "newsletter".into(),
        scenario: "news".into(),
        step: "first".into(),
    }
    .sign(&secret)
    .unwrap_or_default();
    let mut post: LambdaFunctionUrlRequest = sample("unsubscribe.url-post.json");
    post.request_context.http.method = Some("POST".into());
    post.query_string_parameters.insert("token".into(), token);
    // As the function runs it (functions/src/handler.rs): flushing as it goes, since its role
    // holds no BatchWriteItem.
    rt.store().set_auto_flush(true);
    let done = handlers::unsubscribe(&mut rt, Some(&secret), &post, t0 + TimeDelta::hours(2));
    assert_eq!(done.status_code, 200, "{:?}", done.body);
    made.insert("UnsubscribeFunction", check(&c, &d, "UnsubscribeFunction"));

    // tick, a day later: the checks to the step queue; then the step executor runs them.
    let day = t0 + TimeDelta::days(1);
    // As the function runs it: which informational events nothing on the bus could receive.
    // A consumer's rule hears the ends (and an archive keeps some events), so they go out.
    let eb = relance_aws::eventbridge::EventBus::new(c.eb.clone(), d.bus.clone(), bridge.clone());
    crate::support::listen_on_bus(&d.bus, r#"{"detail-type":["relance.enrollment.ended"]}"#);
    assert_eq!(
        relance_aws::listeners::check(rt.store(), &eb, Utc::now()).map_err(|e| e.to_string()),
        Ok(vec!["relance.goal.reached"])
    );
    let summary = handlers::tick(
        &mut rt,
        &crate::support::dispatch(&queues, Some(&step_queue), None),
        day,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.queued >= 12, "{summary:?}");
    made.insert("TickFunction", check(&c, &d, "TickFunction"));
    let steps = take(&step_queue);
    for batch in steps.records.chunks(10) {
        let mut e = SqsEvent::default();
        e.records = batch.to_vec();
        assert!(
            handlers::step_executor(&mut rt, &e, day)
                .batch_item_failures
                .is_empty()
        );
    }
    made.insert(
        "StepExecutorFunction",
        check(&c, &d, "StepExecutorFunction"),
    );

    // sms sender: the openers' SMS.
    let sms = take(config.queues.sms.as_deref().unwrap_or_default());
    assert_eq!(sms.records.len(), 4);
    assert!(
        handlers::channel_sender(&senders, rt.store(), &sms, day)
            .batch_item_failures
            .is_empty()
    );
    made.insert("SmsSenderFunction", check(&c, &d, "SmsSenderFunction"));
    c.meter.reset();

    // What each function was seen to call (the table may hold calls of paths not run here).
    for (function, calls) in &made {
        println!("{function}:");
        for (action, resource) in calls {
            println!("  {action} on {resource}");
        }
    }
    let seen = |f: &str, action: &str| made[f].iter().any(|(a, _)| a == action);
    assert!(
        seen("TriggerFunction", "dynamodb:Scan"),
        "the fan-out lists the audience"
    );
    assert!(seen("TriggerFunction", "sqs:SendMessage"));
    assert!(
        seen("TriggerFunction", "dynamodb:ConditionCheckItem"),
        "a restatement is held to the contact as read"
    );
    assert!(seen("EmailSenderFunction", "secretsmanager:GetSecretValue"));
    assert!(seen("EmailSenderFunction", "ses:SendEmail"));
    assert!(seen("UnsubscribeFunction", "secretsmanager:GetSecretValue"));
    assert!(seen("TickFunction", "dynamodb:Query"));
    assert!(seen("SmsSenderFunction", "sns:Publish"));
    assert!(
        seen("StepExecutorFunction", "events:PutEvents"),
        "ends are emitted"
    );
}

#[test]
fn hostile_launch_page_without_contacts_is_refused_not_scanned() {
    if crate::support::offline() {
        return;
    }
    let c = clients();
    let prefix = format!("permlp{}-", std::process::id());
    let config = AwsConfig::with_prefix(&prefix, 2);
    c.runtime
        .block_on(DynamoStore::create_tables(&c.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    let bridge = Bridge::new(c.runtime.handle().clone());
    let mut rt = Runtime::new(DynamoStore::new(c.dynamo.clone(), config, bridge));
    let t0 = at("2026-12-01T09:00:00Z");
    let put = rt
        .put_scenario(NEWS, SourceFormat::Yaml, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    rt.set_status(&put.id, Status::Active, t0)
        .unwrap_or_else(|e| panic!("{e}"));
    c.meter.reset();
    let page = crate::support::sqs_event(&[("m1".into(), json!({"scenario": "news"}).to_string())]);
    let r = handlers::launch_page(&mut rt, &page, t0);
    assert_eq!(r.batch_item_failures.len(), 1, "refused, left to the DLQ");
    let scans = c.meter.total("DynamoDB", &["Scan"]);
    c.meter.reset();
    assert_eq!(scans, 0, "the launch function's role may not scan");
}

fn secret(c: &Clients, name: &str, value: &str) -> String {
    c.runtime
        .block_on(
            c.secrets
                .create_secret()
                .name(format!("{name}{}", std::process::id()))
                .secret_string(value)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .arn
        .unwrap_or_default()
}

#[test]
fn hostile_secrets_are_read_by_arn_and_a_plain_value_is_ignored() {
    if crate::support::offline() {
        return;
    }
    let c = clients();
    let key = "s".repeat(40);
    let arn = secret(&c, "relance-key-", &key);
    // The ARN wins over a plain value left in the environment.
    let get = |name: &str| match name {
        "RELANCE_UNSUBSCRIBE_SECRET_ARN" => Some(arn.clone()),
        "RELANCE_UNSUBSCRIBE_SECRET" => Some("p".repeat(40)),
        _ => None,
    };
    let read = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, get))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.as_deref(), Some(key.as_bytes()));
    // The VAPID key the same way.
    let vapid = secret(&c, "relance-vapid-", "vapid-private-key");
    let get = |name: &str| (name == "RELANCE_VAPID_PRIVATE_KEY_ARN").then(|| vapid.clone());
    let read = c
        .runtime
        .block_on(secrets::from_lookup(
            &c.secrets,
            "RELANCE_VAPID_PRIVATE_KEY",
            get,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.as_deref(), Some("vapid-private-key"));
    // Neither set: none (one-click links off); the plain value alone: the dev path.
    let none = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, |_| None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(none, None);
}

#[test]
fn hostile_short_or_unreadable_secret_stops_the_start() {
    if crate::support::offline() {
        return;
    }
    let c = clients();
    let arn = secret(&c, "relance-short-", "too-short");
    let get = |name: &str| (name == "RELANCE_UNSUBSCRIBE_SECRET_ARN").then(|| arn.clone());
    let refused = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, get));
    assert!(
        matches!(&refused, Err(SecretError::Invalid { var, why }) if var == "RELANCE_UNSUBSCRIBE_SECRET" && why.contains("at least 32")),
        "{refused:?}"
    );
    // The dev path's plain value is held to the same length.
    let plain = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, |n| {
            (n == "RELANCE_UNSUBSCRIBE_SECRET").then(|| "short".to_string())
        }));
    assert!(
        matches!(plain, Err(SecretError::Invalid { .. })),
        "{plain:?}"
    );
    let missing = "arn:aws:secretsmanager:us-east-1:000000000000:secret:relance-none-000000";
    let gone = c
        .runtime
        .block_on(secrets::unsubscribe_key_from(&c.secrets, |n| {
            (n == "RELANCE_UNSUBSCRIBE_SECRET_ARN").then(|| missing.to_string())
        }));
    let text = gone
        .as_ref()
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string());
    assert!(
        matches!(gone, Err(SecretError::Fetch { .. }))
            && text.contains("RELANCE_UNSUBSCRIBE_SECRET_ARN")
            && text.contains(missing),
        "{text}"
    );
    c.meter.reset();
}

#[test]
fn hostile_webhook_sender_calls_only_what_its_role_allows() {
    if crate::support::offline() {
        return;
    }
    let c = clients();
    let (base, _stub) = crate::webhook::receiver();
    let prefix = format!("pw{}-", std::process::id());
    let crate::webhook::HookDeployment {
        config,
        queue,
        bridge,
        queues,
        mut rt,
        ..
    } = crate::webhook::hook_deployment(
        &c.runtime,
        &c.dynamo,
        &c.sqs,
        &prefix,
        &format!("{base}/hook/flaky"),
        &["c1"],
    );
    let d = Deployment {
        config: config.clone(),
        step_queue: String::new(),
        launch_queue: String::new(),
        bus: String::new(),
        unsubscribe_secret_arn: String::new(),
    };
    let first = take(&queue);
    assert_eq!(first.records.len(), 1);
    c.meter.reset();
    let sender = crate::webhook::local_sender(&c.dynamo, &queues, &config, &bridge);
    // A 500: the claim, its release, the retry's copy.
    let t1 = chrono::Utc::now();
    relance_aws::callout::webhook_sender(&mut rt, &sender, &first, t1);
    // The copy, early: a visibility change; then at its time, the 200 and its save (a
    // contact update through the runtime).
    let copy = crate::webhook::receive_after(&queue, 40);
    let early = relance_aws::callout::webhook_sender(&mut rt, &sender, &copy, t1);
    assert_eq!(early.batch_item_failures.len(), 1);
    let done = relance_aws::callout::webhook_sender(&mut rt, &sender, &copy, chrono::Utc::now());
    assert!(done.batch_item_failures.is_empty());
    // A call out of its 24 h: dead-lettered.
    let mut late: relance_aws::callout::CallMessage =
        serde_json::from_str(first.records[0].body.as_deref().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}"));
    late.enrollment = "hook:c9:1".into();
    late.contact = "c9".into();
    if let Some(w) = late.webhook.as_mut() {
        w.url = format!("{base}/hook/down");
    }
    late.first_at = Some(chrono::Utc::now() - TimeDelta::hours(24));
    relance_aws::callout::webhook_sender(
        &mut rt,
        &sender,
        &crate::webhook::event_of(&late),
        chrono::Utc::now(),
    );
    let made = check(&c, &d, "WebhookSenderFunction");
    let seen = |action: &str, resource: &str| made.contains(&(action.into(), resource.into()));
    assert!(seen("sqs:SendMessage", "WebhookQueue"), "{made:?}");
    assert!(
        seen("sqs:SendMessage", "WebhookDeadLetterQueue"),
        "{made:?}"
    );
    assert!(
        seen("sqs:ChangeMessageVisibility", "WebhookQueue"),
        "{made:?}"
    );
    assert!(seen("dynamodb:DeleteItem", "StateTable"), "{made:?}");
    assert!(seen("dynamodb:PutItem", "StateTable"), "{made:?}");
}
