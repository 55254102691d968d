//! The webhook step (DESIGN §9, issue 14): how it reads and validates (located problems), and
//! what the engine does with it — one queued call with the body rendered for the contact, an
//! `action` record, and on to `next` without waiting.

use chrono::{DateTime, TimeZone, Utc};
use relance_core::engine::{Effect, Entry, EntryRequest};
use relance_core::scenario::Action;
use relance_core::validate::{Report, check_text};
use relance_core::webhook::Method;
use relance_core::{Contact, Engine, Format, History, RecordKind, Severity, validate};

fn scenario(webhook: &str) -> String {
    format!(
        "id: hook\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: notify\n    webhook: {webhook}\n    next: done\n  - {{id: done, end: success}}\n"
    )
}

fn problems(r: &Report, severity: Severity) -> Vec<(String, String)> {
    r.problems
        .iter()
        .filter(|p| p.severity == severity)
        .map(|p| (p.path.clone(), p.message.clone()))
        .collect()
}

/// The one error at `path`, whose message contains `needle`.
fn assert_error(webhook: &str, path: &str, needle: &str) {
    let r = check_text(&scenario(webhook), Format::Yaml);
    let errors = problems(&r, Severity::Error);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected an error at {path} mentioning {needle:?} for {webhook}, got {errors:?}"
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.path == path)
        .map(|p| p.step.clone());
    assert_eq!(p, Some(Some("notify".to_string())), "located in the step");
}

#[test]
fn a_full_webhook_step_validates() {
    let r = check_text(
        &scenario(
            "{url: \"https://hooks.example.com/crm?src=relance\", method: PUT, headers: {X-Source: relance}, body: '{\"id\": \"{{ contact.id }}\"}', secret: crm-key, save: {tier: /data/tier}}",
        ),
        Format::Yaml,
    );
    assert_eq!(r.errors(), 0, "{:?}", r.problems);
    assert!(
        problems(&r, Severity::Warning).is_empty(),
        "{:?}",
        r.problems
    );
    let s = r.scenario.unwrap_or_else(|| panic!("a scenario"));
    let relance_core::scenario::StepKind::Action {
        action: Action::Webhook(w),
        next,
    } = &s.steps[0].kind
    else {
        panic!("a webhook step reads as a webhook action: {:?}", s.steps[0]);
    };
    assert_eq!(next, "done");
    assert_eq!(w.method, Method::Put);
    assert_eq!(w.secret.as_deref(), Some("crm-key"));
    assert_eq!(w.save.get("tier").map(String::as_str), Some("/data/tier"));
    // The graph says where the data goes.
    let mermaid = relance_core::graph::mermaid(&s, None);
    assert!(
        mermaid.contains("notify: webhook PUT hooks.example.com"),
        "{mermaid}"
    );
    let dot = relance_core::graph::dot(&s, None);
    assert!(
        dot.contains("notify: webhook PUT hooks.example.com"),
        "{dot}"
    );
}

#[test]
fn bad_webhooks_are_refused_where_they_are_wrong() {
    assert_error(
        "{url: \"http://hooks.example.com/\"}",
        "steps[0].webhook.url",
        "https://",
    );
    assert_error(
        "{url: \"https://10.0.0.8/\"}",
        "steps[0].webhook.url",
        "private",
    );
    assert_error(
        "{url: \"https://169.254.169.254/latest/meta-data\"}",
        "steps[0].webhook.url",
        "link-local",
    );
    assert_error(
        "{url: \"https://[fd12::1]/\"}",
        "steps[0].webhook.url",
        "unique-local",
    );
    assert_error(
        "{url: \"https://u:p@hooks.example.com/\"}",
        "steps[0].webhook.url",
        "credentials",
    );
    assert_error(
        "{url: \"https://example.com/\", method: TRACE}",
        "steps[0].webhook.method",
        "TRACE",
    );
    assert_error(
        "{url: \"https://example.com/\", headers: {Relance-Signature: forged}}",
        "steps[0].webhook.headers.Relance-Signature",
        "set by Relance",
    );
    assert_error(
        "{url: \"https://example.com/\", headers: {Idempotency-Key: x}}",
        "steps[0].webhook.headers.Idempotency-Key",
        "set by Relance",
    );
    assert_error(
        "{url: \"https://example.com/\", secret: \"sk_live 0123456789abcdef0123\"}",
        "steps[0].webhook.secret",
        "not a secret name",
    );
    assert_error(
        "{url: \"https://example.com/\", save: {tier: data.tier}}",
        "steps[0].webhook.save.tier",
        "JSON pointer",
    );
    assert_error(
        "{url: \"https://example.com/\", save: {id: /id}}",
        "steps[0].webhook.save.id",
        "any but id",
    );
    assert_error(
        "{url: \"https://example.com/\", body: \"{{ contact.id \"}",
        "steps[0].webhook.body",
        "template",
    );
    assert_error(
        "{url: \"https://example.com/\", method: GET, body: x}",
        "steps[0].webhook.body",
        "GET",
    );
    assert_error(
        "{url: \"https://example.com/\", retries: 3}",
        "steps[0].webhook.retries",
        "unknown field",
    );
}

#[test]
fn a_webhook_needs_next_and_does_only_one_thing() {
    let r = check_text(
        "id: hook\nlaunch: {type: manual}\nsteps:\n  - id: notify\n    webhook: {url: \"https://example.com/\"}\n",
        Format::Yaml,
    );
    assert!(
        problems(&r, Severity::Error)
            .iter()
            .any(|(p, m)| p == "steps[0].next" && m.contains("a webhook step needs \"next\"")),
        "{:?}",
        r.problems
    );
    let r = check_text(
        "id: hook\nlaunch: {type: manual}\nsteps:\n  - id: notify\n    webhook: {url: \"https://example.com/\"}\n    action: {tag: {add: [x]}}\n    next: done\n  - {id: done, end: success}\n",
        Format::Yaml,
    );
    assert!(
        problems(&r, Severity::Error)
            .iter()
            .any(|(_, m)| m.contains("action and webhook")),
        "{:?}",
        r.problems
    );
    // `webhook` is a step kind, never an action.
    let r = check_text(
        "id: hook\nlaunch: {type: manual}\nsteps:\n  - id: notify\n    action: {webhook: {url: \"https://example.com/\"}}\n    next: done\n  - {id: done, end: success}\n",
        Format::Yaml,
    );
    assert!(
        problems(&r, Severity::Error)
            .iter()
            .any(|(p, m)| p == "steps[0].action.webhook" && m.contains("a step of its own")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_loopback_url_is_for_local_tests_and_credentials_are_never_inline() {
    // Loopback validates (the outbound rule refuses it at call time unless a local test turns
    // its escape hatches on), so a scenario can be run against a local receiver.
    let r = check_text(
        &scenario("{url: \"http://127.0.0.1:8080/hook\"}"),
        Format::Yaml,
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_error(
        "{url: \"https://example.com/\", headers: {Authorization: Bearer abc}}",
        "steps[0].webhook.headers.Authorization",
        "secrets are named, not inline",
    );
    assert_error(
        "{url: \"https://example.com/\", headers: {x-api-key: abc}}",
        "steps[0].webhook.headers.x-api-key",
        "secrets are named, not inline",
    );
}

#[test]
fn a_queued_call_reads_back_from_its_effect() {
    // Stores that keep effects for recovery (DynamoDB) read them back.
    let effect = Effect::Action {
        enrollment: "e1".into(),
        contact: "c1".into(),
        step: "notify".into(),
        action: Action::Webhook(relance_core::webhook::Webhook {
            url: "https://hooks.example.com/x".into(),
            method: Method::Patch,
            headers: [("X-A".to_string(), "1".to_string())].into(),
            body: Some("{}".into()),
            secret: Some("crm".into()),
            save: [("tier".to_string(), "/tier".to_string())].into(),
        }),
    };
    let text = serde_json::to_string(&effect).unwrap_or_else(|e| panic!("{e}"));
    let back: Effect = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(back, effect);
}

#[test]
fn the_engine_queues_one_call_with_the_rendered_body_and_goes_on() {
    let yaml = scenario(
        "{url: \"https://hooks.example.com/x\", body: '{\"id\": \"{{ contact.id }}\", \"name\": \"{{ contact.first_name }}\"}', secret: crm}",
    );
    let (s, _) = validate::parse(&yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let engine = Engine::new(s);
    let contact = Contact::from_json(serde_json::json!({"id": "c1", "first_name": "Ada"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let now: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
        .single()
        .unwrap_or_default();
    let t = match engine.enter(EntryRequest {
        contact: &contact,
        history: &History::default(),
        running: false,
        last_entered_at: None,
        enrollment_id: "e1",
        now,
    }) {
        Entry::Entered(t) => t,
        Entry::Skipped { reason, .. } => panic!("skipped: {reason:?}"),
    };
    let calls: Vec<_> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Action {
                enrollment,
                step,
                action: Action::Webhook(w),
                ..
            } => Some((enrollment.clone(), step.clone(), w.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{:?}", t.effects);
    let (enrollment, step, w) = &calls[0];
    assert_eq!((enrollment.as_str(), step.as_str()), ("e1", "notify"));
    assert_eq!(
        w.body.as_deref(),
        Some("{\"id\": \"c1\", \"name\": \"Ada\"}")
    );
    let kinds: Vec<(RecordKind, Option<String>)> =
        t.records().map(|r| (r.kind, r.action.clone())).collect();
    assert!(
        kinds.contains(&(RecordKind::Action, Some("webhook".into()))),
        "{kinds:?}"
    );
    assert!(
        t.records()
            .any(|r| r.kind == RecordKind::Ended && r.end.as_deref() == Some("success")),
        "the step does not wait for the answer"
    );

    // A body that does not render for this contact fails the step (journaled) and goes on.
    let no_name =
        Contact::from_json(serde_json::json!({"id": "c2"})).unwrap_or_else(|e| panic!("{e}"));
    let t = match engine.enter(EntryRequest {
        contact: &no_name,
        history: &History::default(),
        running: false,
        last_entered_at: None,
        enrollment_id: "e2",
        now,
    }) {
        Entry::Entered(t) => t,
        Entry::Skipped { reason, .. } => panic!("skipped: {reason:?}"),
    };
    assert!(
        !t.effects.iter().any(|e| matches!(
            e,
            Effect::Action {
                action: Action::Webhook(_),
                ..
            }
        )),
        "nothing is queued"
    );
    let failed = t
        .records()
        .find(|r| r.kind == RecordKind::Failed)
        .unwrap_or_else(|| panic!("a failed record: {:?}", t.effects));
    assert_eq!(failed.action.as_deref(), Some("webhook"));
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("webhook body"),
        "{failed:?}"
    );
}
