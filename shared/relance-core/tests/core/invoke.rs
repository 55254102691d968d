//! The invoke step (DESIGN §9, issue 14): how it reads and validates (located problems), and
//! what the engine does with it — one queued invoke carrying the contact's fields, an `action`
//! record, and on to `next` without waiting; the refusal a store without Lambda reports.

use chrono::{DateTime, TimeZone, Utc};
use relance_core::engine::{Effect, Entry, EntryRequest};
use relance_core::scenario::Action;
use relance_core::validate::check_text;
use relance_core::{Contact, Engine, Format, History, RecordKind, Severity, validate};

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:crm-sync";

fn scenario(invoke: &str) -> String {
    format!(
        "id: sync\nlaunch: {{type: manual}}\naudience: {{all: true}}\nsteps:\n  - id: crm\n    invoke: {invoke}\n    next: done\n  - {{id: done, end: success}}\n"
    )
}

fn errors(text: &str) -> Vec<(String, String, Option<String>)> {
    check_text(text, Format::Yaml)
        .problems
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| (p.path, p.message, p.step))
        .collect()
}

#[test]
fn an_invoke_step_validates_with_an_arn_or_a_name() {
    for function in [
        ARN,
        "crm-sync",
        "arn:aws:lambda:eu-west-3:123456789012:function:f:live",
    ] {
        let r = check_text(
            &scenario(&format!("{{function: \"{function}\"}}")),
            Format::Yaml,
        );
        assert_eq!(r.errors(), 0, "{function}: {:?}", r.problems);
        let s = r.scenario.unwrap_or_else(|| panic!("a scenario"));
        assert!(matches!(
            &s.steps[0].kind,
            relance_core::scenario::StepKind::Action { action: Action::Invoke(i), next }
                if i.function == function && next == "done"
        ));
    }
}

#[test]
fn bad_invokes_are_located() {
    let e = errors(&scenario(
        "{function: \"arn:aws:sns:us-east-1:123456789012:topic\"}",
    ));
    assert!(
        e.iter().any(|(p, m, s)| p == "steps[0].invoke.function"
            && m.contains("not a Lambda function ARN")
            && s.as_deref() == Some("crm")),
        "{e:?}"
    );
    let e = errors(&scenario("{function: \"crm sync\"}"));
    assert!(
        e.iter().any(|(p, _, _)| p == "steps[0].invoke.function"),
        "{e:?}"
    );
    let e = errors(&scenario("{function: \"crm-sync\", payload: {}}"));
    assert!(
        e.iter().any(|(p, _, _)| p.starts_with("steps[0].invoke")),
        "{e:?}"
    );
    // The engine's snapshot of the contact is not written in a scenario.
    let e = errors(&scenario("{function: \"crm-sync\", contact: {id: x}}"));
    assert!(
        e.iter()
            .any(|(p, m, _)| p == "steps[0].invoke.contact" && m.contains("remove")),
        "{e:?}"
    );
    // A step of its own, not an action; and it needs `next`.
    let under_action = "id: sync\nlaunch: {type: manual}\naudience: {all: true}\nsteps:\n  - id: crm\n    action: {invoke: {function: crm-sync}}\n    next: done\n  - {id: done, end: success}\n";
    let e = errors(under_action);
    assert!(
        e.iter()
            .any(|(p, m, _)| p == "steps[0].action.invoke" && m.contains("step of its own")),
        "{e:?}"
    );
    let no_next = "id: sync\nlaunch: {type: manual}\naudience: {all: true}\nsteps:\n  - id: crm\n    invoke: {function: crm-sync}\n  - {id: done, end: success}\n";
    let e = errors(no_next);
    assert!(
        e.iter()
            .any(|(_, m, _)| m.contains("an invoke step needs \"next\"")),
        "{e:?}"
    );
}

#[test]
fn the_engine_queues_one_invoke_with_the_contact_and_goes_on() {
    let (s, _) = validate::parse(&scenario(&format!("{{function: \"{ARN}\"}}")), Format::Yaml)
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        relance_core::invoke::embedded_refusals(&s)
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect::<Vec<_>>(),
        [("steps[0].invoke", relance_core::invoke::EMBEDDED_REFUSAL)]
    );
    let engine = Engine::new(s);
    let contact = Contact::from_json(serde_json::json!({"id": "c1", "email": "c1@example.com"}))
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
    let invokes: Vec<_> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Action {
                step,
                action: Action::Invoke(i),
                ..
            } => Some((step.clone(), i.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(invokes.len(), 1, "{:?}", t.effects);
    assert_eq!(invokes[0].0, "crm");
    assert_eq!(invokes[0].1.function, ARN);
    assert_eq!(
        invokes[0].1.contact.as_ref().and_then(|c| c.get("email")),
        Some(&serde_json::json!("c1@example.com"))
    );
    // The effect reads back (DynamoDB keeps effects for recovery).
    let effect = t
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Action { .. }))
        .cloned()
        .unwrap_or_else(|| panic!("no action"));
    let text = serde_json::to_string(&effect).unwrap_or_default();
    let back: Effect = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(back, effect);
    assert!(
        t.records()
            .any(|r| r.kind == RecordKind::Action && r.action.as_deref() == Some("invoke"))
    );
    assert!(
        t.records()
            .any(|r| r.kind == RecordKind::Ended && r.end.as_deref() == Some("success")),
        "the step does not wait for the invoke"
    );
}
