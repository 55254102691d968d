//! The SAM template's IAM against the table of calls (`relance_functions::permissions`, kept
//! in `shared/relance-aws/src/permissions.rs`): every function's policy statements equal its
//! grants (no action or resource more, none less), the internet-facing unsubscribe function
//! cannot scan or delete state, the SMS sender cannot publish to a topic, SES sends only from
//! the sending identity, service principals carry source conditions, no secret sits in an
//! environment, and the bus rule ignores Relance's own events. Reads `infra/template.yaml` (CloudFormation short tags as `Value::Tagged`).

use std::collections::BTreeSet;

use relance_functions::permissions::{self, FUNCTIONS};
use serde_yaml::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn template_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A resource as the table names it: `!GetAtt X.Arn` and `!Ref X` are `X`, a `!Sub` is its
/// text (the first element of the list form), a plain string itself.
fn resource_name(v: &Value) -> String {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            match (tag.as_str(), &t.value) {
                ("!GetAtt", Value::String(s)) => s.trim_end_matches(".Arn").to_string(),
                ("!Ref", Value::String(s)) => s.clone(),
                ("!Sub", Value::String(s)) => s.clone(),
                ("!Sub", Value::Sequence(parts)) => parts
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                (other, value) => panic!("unexpected {other} {value:?} as a resource"),
            }
        }
        Value::String(s) => s.clone(),
        other => panic!("unexpected resource {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(resource_name).collect(),
        Value::Null => Vec::new(),
        one => vec![resource_name(one)],
    }
}

/// A condition block as `Operator key value[,value]` lines.
fn condition(v: &Value) -> Option<String> {
    let m = v.as_mapping()?;
    let mut parts = Vec::new();
    for (op, keys) in m {
        for (key, values) in keys.as_mapping().into_iter().flatten() {
            parts.push(format!(
                "{} {} {}",
                op.as_str().unwrap_or(""),
                key.as_str().unwrap_or(""),
                strings(values).join(",")
            ));
        }
    }
    parts.sort();
    Some(parts.join(" & "))
}

/// (effect, action, resource, condition) of every statement of a function's policies.
type Line = (String, String, String, Option<String>);

fn template_lines(function: &Value) -> BTreeSet<Line> {
    let mut out = BTreeSet::new();
    for policy in function["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for st in policy["Statement"].as_sequence().into_iter().flatten() {
            // A statement present only under a condition (`!If [Cond, statement,
            // !Ref AWS::NoValue]`: a grant on a parameter list that may be empty) counts as
            // granted: the table lists it.
            let st = match st {
                Value::Tagged(t) if t.tag == "!If" => match &t.value {
                    Value::Sequence(parts) if parts.len() == 3 => &parts[1],
                    other => panic!("unexpected !If {other:?} as a statement"),
                },
                st => st,
            };
            let effect = st["Effect"].as_str().unwrap_or("").to_string();
            let cond = condition(&st["Condition"]);
            for action in strings(&st["Action"]) {
                for resource in strings(&st["Resource"]) {
                    out.insert((effect.clone(), action.clone(), resource, cond.clone()));
                }
            }
        }
    }
    out
}

fn table_lines(resource: &str) -> BTreeSet<Line> {
    let f = permissions::of(resource)
        .unwrap_or_else(|| panic!("{resource} is not in shared/relance-aws/src/permissions.rs"));
    let mut out = BTreeSet::new();
    for g in f.grants {
        for action in g.actions {
            for r in g.resources {
                out.insert((
                    g.effect.as_str().to_string(),
                    action.to_string(),
                    r.to_string(),
                    g.condition.map(str::to_string),
                ));
            }
        }
    }
    out
}

fn functions(t: &Value) -> Vec<(String, Value)> {
    t["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(k, r)| (k.as_str().unwrap_or("").to_string(), r.clone()))
        .collect()
}

fn allowed(t: &Value, function: &str) -> BTreeSet<Line> {
    template_lines(&t["Resources"][function])
        .into_iter()
        .filter(|l| l.0 == "Allow")
        .collect()
}

#[test]
fn hostile_template_grants_match_the_calls_table() {
    let t = template();
    let in_template: BTreeSet<String> = functions(&t).into_iter().map(|(k, _)| k).collect();
    let in_table: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.resource.to_string()).collect();
    assert_eq!(
        in_template, in_table,
        "every function is in the table, and only those"
    );
    for (name, function) in functions(&t) {
        let table = permissions::of(&name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            function["Metadata"]["BuildProperties"]["Binary"].as_str(),
            Some("bootstrap"),
            "{name}: every function is the one bootstrap binary"
        );
        assert_eq!(
            function["Properties"]["Handler"].as_str(),
            Some(table.handler),
            "{name}: the handler the bootstrap serves"
        );
        assert!(
            table
                .handler
                .parse::<relance_functions::handler::Handler>()
                .is_ok(),
            "{name}: the bootstrap knows its handler {:?}",
            table.handler
        );
        let template = template_lines(&function);
        let expected = table_lines(&name);
        let extra: Vec<_> = template.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&template).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{name}: granted beyond the table: {extra:#?}\nin the table but not granted: {missing:#?}"
        );
    }
}

#[test]
fn hostile_unsubscribe_function_cannot_scan_or_delete_state() {
    let t = template();
    let lines = allowed(&t, "UnsubscribeFunction");
    for action in [
        "dynamodb:Scan",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ] {
        assert!(
            !lines.iter().any(|l| l.1 == action && l.2 == "StateTable"),
            "the internet-facing unsubscribe function holds {action} on the state table"
        );
    }
    // Scan (listing the audience) is the trigger's and the tick's alone, and an unconditional
    // DeleteItem on the state table too.
    for (name, _) in functions(&t) {
        let lines = allowed(&t, &name);
        let scans = lines.iter().any(|l| l.1 == "dynamodb:Scan");
        let deletes = lines
            .iter()
            .any(|l| l.1 == "dynamodb:DeleteItem" && l.2 == "StateTable" && l.3.is_none());
        let listing = ["TriggerFunction", "TickFunction"].contains(&name.as_str());
        assert_eq!(scans, listing, "{name}: Scan");
        assert_eq!(deletes, listing, "{name}: DeleteItem on the state table");
    }
}

#[test]
fn no_action_on_every_resource_but_the_listed_ones() {
    let t = template();
    // SNS and SES name no resource for these calls, nor EventBridge for listing rules and
    // archives (the tick's check of who reads the bus); everything else names its ARN.
    let star_ok = [
        "ses:GetSuppressedDestination",
        "sns:Publish",
        "sns:CheckIfPhoneNumberIsOptedOut",
        "events:ListRules",
        "events:ListArchives",
    ];
    for (name, _) in functions(&t) {
        for l in allowed(&t, &name) {
            if l.2 == "*" {
                assert!(
                    star_ok.contains(&l.1.as_str()),
                    "{name}: {} on {}",
                    l.1,
                    l.2
                );
            }
            assert!(!l.1.ends_with(":*"), "{name}: wildcard action {}", l.1);
        }
    }
}

#[test]
fn hostile_sms_sender_cannot_publish_to_topics() {
    let t = template();
    let lines = template_lines(&t["Resources"]["SmsSenderFunction"]);
    assert!(
        lines.contains(&(
            "Deny".into(),
            "sns:Publish".into(),
            "arn:aws:sns:*:*:*".into(),
            None
        )),
        "the SMS sender's publish on `*` must be denied on every topic and endpoint ARN: {lines:#?}"
    );
    // No other function may publish on `*`.
    for (name, _) in functions(&t) {
        if name != "SmsSenderFunction" {
            assert!(
                !allowed(&t, &name)
                    .iter()
                    .any(|l| l.1 == "sns:Publish" && l.2 == "*"),
                "{name}: sns:Publish on *"
            );
        }
    }
}

#[test]
fn hostile_ses_send_is_limited_to_the_sending_identity() {
    let t = template();
    for (name, _) in functions(&t) {
        for l in allowed(&t, &name) {
            if l.1.starts_with("ses:Send") {
                assert!(
                    l.2.ends_with(":identity/${EmailIdentity}")
                        || l.2.ends_with(":identity/${Domain}")
                        || l.2.ends_with(":configuration-set/${ConfigurationSetName}"),
                    "{name}: {} on {}",
                    l.1,
                    l.2
                );
            }
        }
    }
    // The domain is the sending address's own.
    let statement = t["Resources"]["EmailSenderFunction"]["Properties"]["Policies"][0]["Statement"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|s| strings(&s["Action"]) == ["ses:SendEmail"])
        .cloned()
        .unwrap_or(Value::Null);
    let domain = serde_yaml::to_string(&statement["Resource"][1]).unwrap_or_default();
    assert!(
        domain.contains("!Split") && domain.contains("'@'") && domain.contains("EmailIdentity"),
        "{domain}"
    );
}

#[test]
fn hostile_service_principals_carry_source_conditions() {
    let t = template();
    let resources = t["Resources"].as_mapping().cloned().unwrap_or_default();
    let mut seen = 0;
    for (name, r) in &resources {
        let name = name.as_str().unwrap_or("");
        let kind = r["Type"].as_str().unwrap_or("");
        let p = &r["Properties"];
        let statements: Vec<Value> = match kind {
            "AWS::SQS::QueuePolicy" | "AWS::SNS::TopicPolicy" => p["PolicyDocument"]["Statement"]
                .as_sequence()
                .cloned()
                .unwrap_or_default(),
            "AWS::IAM::Role" => p["AssumeRolePolicyDocument"]["Statement"]
                .as_sequence()
                .cloned()
                .unwrap_or_default(),
            "AWS::Lambda::Permission" => {
                if p["Principal"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(".amazonaws.com"))
                {
                    seen += 1;
                    assert!(
                        !p["SourceAccount"].is_null() && !p["SourceArn"].is_null(),
                        "{name}: a service may invoke the function for any account or resource"
                    );
                }
                continue;
            }
            _ => continue,
        };
        for st in statements {
            if st["Principal"]["Service"].is_null() {
                continue;
            }
            seen += 1;
            let cond = condition(&st["Condition"]).unwrap_or_default();
            assert!(
                cond.contains("aws:SourceAccount") && cond.contains("aws:SourceArn"),
                "{name}: a service principal without aws:SourceAccount and aws:SourceArn ({cond})"
            );
        }
    }
    // The engagement queue's policy, the SMS delivery role's trust, two Lambda permissions.
    assert!(seen >= 4, "{seen} service grants found");
}

#[test]
fn hostile_no_secret_in_a_function_environment() {
    let t = template();
    assert!(
        !template_text().contains("{{resolve:"),
        "a dynamic reference puts the secret's plaintext in the resource's configuration"
    );
    let mut envs = vec![t["Globals"]["Function"]["Environment"]["Variables"].clone()];
    envs.extend(
        functions(&t)
            .into_iter()
            .map(|(_, f)| f["Properties"]["Environment"]["Variables"].clone()),
    );
    for vars in envs {
        for (k, v) in vars.as_mapping().into_iter().flatten() {
            let k = k.as_str().unwrap_or("");
            if k.contains("SECRET") || k.contains("PRIVATE_KEY") {
                if k.ends_with("_ARNS") {
                    // A list of ARNs: the ARN list parameter, joined.
                    let joined = serde_yaml::to_string(v).unwrap_or_default();
                    assert!(
                        matches!(v, Value::Tagged(tag) if tag.tag == "!Join")
                            && joined.contains("!Ref")
                            && !joined.contains("{{resolve"),
                        "{k}: {v:?}"
                    );
                    continue;
                }
                assert!(k.ends_with("_ARN"), "{k} holds a secret in the environment");
                // An ARN, by reference to the secret resource or the ARN parameter.
                assert!(
                    matches!(v, Value::Tagged(tag) if tag.tag == "!Ref"),
                    "{k}: {v:?}"
                );
            }
        }
    }
    let params = &t["Parameters"];
    assert!(
        params["VapidPrivateKey"].is_null(),
        "the VAPID key is a secret's ARN, not a parameter"
    );
}

#[test]
fn hostile_bus_rule_ignores_relance_events() {
    let t = template();
    let mut rules = 0;
    for (name, f) in functions(&t) {
        for (_, e) in f["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if e["Type"] == "EventBridgeRule" {
                rules += 1;
                assert_eq!(
                    e["Properties"]["Pattern"]["source"][0]["anything-but"].as_str(),
                    Some(relance_aws::eventbridge::SOURCE),
                    "{name}: the rule would take Relance's own events back"
                );
            }
        }
    }
    for (name, r) in t["Resources"].as_mapping().into_iter().flatten() {
        assert_ne!(
            r["Type"].as_str(),
            Some("AWS::Events::Rule"),
            "{name:?}: a rule this test does not check"
        );
    }
    assert_eq!(rules, 1);
}

#[test]
fn hostile_stack_key_encrypts_environments_feedback_topic_and_engagement_queue() {
    let t = template();
    let key = &t["Resources"]["RelanceKey"];
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
    let is_key = |v: &Value| matches!(v, Value::Tagged(_)) && resource_name(v) == "RelanceKey";
    // Every function's environment, through Globals (none overrides it).
    assert!(
        is_key(&t["Globals"]["Function"]["KmsKeyArn"]),
        "Globals.Function.KmsKeyArn is not the stack's key"
    );
    for (name, f) in functions(&t) {
        assert!(
            f["Properties"]["KmsKeyArn"].is_null(),
            "{name} overrides the stack's key"
        );
        // Lambda decrypts the environment with the role: kms:Decrypt on the key, nothing more.
        let lines = allowed(&t, &name);
        assert!(
            lines
                .iter()
                .any(|l| l.1 == "kms:Decrypt" && l.2 == "RelanceKey" && l.3.is_none()),
            "{name} cannot decrypt its environment"
        );
        for l in lines.iter().filter(|l| l.1.starts_with("kms:")) {
            assert!(
                l.1 == "kms:Decrypt" && l.2 == "RelanceKey",
                "{name}: {} on {}",
                l.1,
                l.2
            );
        }
        // And the table says no code calls it.
        let table = permissions::of(&name).unwrap_or_else(|| panic!("{name}"));
        for g in table.grants {
            if g.actions.iter().any(|a| a.starts_with("kms:")) {
                assert!(
                    g.by_lambda,
                    "{name}: a kms grant marked as a call of the code"
                );
            }
        }
    }
    // SES publishes to the topic, SNS delivers to the queue: both under the stack's key, whose
    // policy grants those two services, each for this account only.
    assert!(is_key(
        &t["Resources"]["FeedbackTopic"]["Properties"]["KmsMasterKeyId"]
    ));
    assert!(is_key(
        &t["Resources"]["EngagementQueue"]["Properties"]["KmsMasterKeyId"]
    ));
    let mut services = BTreeSet::new();
    for st in key["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        if let Some(service) = st["Principal"]["Service"].as_str() {
            services.insert(service.to_string());
            let cond = condition(&st["Condition"]).unwrap_or_default();
            assert!(
                cond.contains("StringEquals aws:SourceAccount AWS::AccountId"),
                "{service} may use the key for any account ({cond})"
            );
            let mut actions = strings(&st["Action"]);
            actions.sort();
            assert_eq!(
                actions,
                ["kms:Decrypt", "kms:GenerateDataKey*"],
                "{service}"
            );
        }
    }
    assert_eq!(
        services,
        BTreeSet::from([
            "ses.amazonaws.com".to_string(),
            "sns.amazonaws.com".to_string()
        ])
    );
}

/// A function fed by a queue has no more pollers than it may run at once: Lambda counts a
/// delivery it throttles as a receive, so a herd against a smaller reserved concurrency would
/// move messages to the dead-letter queue unprocessed. Both are `FunctionConcurrency` (as a
/// number, through the `Concurrency` mapping), whose every value the mapping holds as itself.
#[test]
fn every_queue_fed_function_polls_with_no_more_than_its_reserved_concurrency() {
    let t = template();
    let expected: Value =
        serde_yaml::from_str("!FindInMap [Concurrency, !Ref FunctionConcurrency, Executions]")
            .unwrap_or_else(|e| panic!("{e}"));
    let mut fed = 0;
    for (name, function) in functions(&t) {
        let reserved = &function["Properties"]["ReservedConcurrentExecutions"];
        for (event, source) in function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if source["Type"].as_str() != Some("SQS") {
                continue;
            }
            fed += 1;
            let pollers = &source["Properties"]["ScalingConfig"]["MaximumConcurrency"];
            assert_eq!(
                (reserved, pollers),
                (&expected, &expected),
                "{name}.Events.{}: its reserved concurrency and its pollers",
                event.as_str().unwrap_or("")
            );
        }
    }
    assert_eq!(
        fed, 8,
        "the step, launch, engagement, four channel and webhook queues"
    );
    let allowed = t["Parameters"]["FunctionConcurrency"]["AllowedValues"]
        .as_sequence()
        .unwrap_or_else(|| panic!("FunctionConcurrency: no AllowedValues"));
    for value in allowed {
        let text = value.as_str().unwrap_or_default();
        let number = t["Mappings"]["Concurrency"][text]["Executions"].as_u64();
        assert_eq!(number.map(|n| n.to_string()).as_deref(), Some(text));
        // SQS event sources take a maximum of 2 to 1,000; nine functions reserve it and
        // Lambda keeps 100 of the default 1,000 unreserved (20 go to the tick and unsubscribe).
        assert!(number.is_some_and(|n| (2..=90).contains(&n)), "{text}");
    }
}
