//! A scenario as a picture: a Mermaid flowchart of its steps (`relance graph`), which
//! GitHub and most Markdown viewers draw.

use std::fmt::Write as _;

use crate::condition::Condition;
use crate::journal::JournalCounts;
use crate::scenario::{Launch, Scenario, StepKind};

fn node_id(step: &str) -> String {
    let cleaned: String = step
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("s_{cleaned}")
}

fn label(text: &str) -> String {
    text.replace('"', "'")
}

fn describe(c: &Condition) -> String {
    match c {
        Condition::All(list) => list.iter().map(describe).collect::<Vec<_>>().join(" and "),
        Condition::Any(list) => list.iter().map(describe).collect::<Vec<_>>().join(" or "),
        Condition::Not(inner) => format!("not {}", describe(inner)),
        Condition::Profile(p) => format!("{} {:?} {}", p.field, p.op, p.value).to_lowercase(),
        Condition::InGroups(g) => format!("in {}", g.join(", ")),
        Condition::Persona(p) => format!("persona {}", p.join(", ")),
        Condition::Tag(t) => format!("tag {t}"),
        Condition::Engagement(e) => format!("{} {}", e.kind.as_str(), e.step),
        Condition::Event { name, within } => match within {
            Some(w) => format!("{name} within {w}"),
            None => name.clone(),
        },
    }
}

fn counts_line(counts: Option<&JournalCounts>, step: &str, is_end: bool, end: &str) -> String {
    let Some(c) = counts else {
        return String::new();
    };
    if is_end {
        return format!("<br/>{} ended", c.ends.get(end).copied().unwrap_or(0));
    }
    let Some(sc) = c.steps.get(step) else {
        return "<br/>0 entered".into();
    };
    let mut parts = vec![format!("{} entered", sc.entered)];
    if sc.sent > 0 {
        parts.push(format!("{} sent", sc.sent));
    }
    let skipped: u64 = sc.skipped.values().sum();
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    if sc.failed > 0 {
        parts.push(format!("{} failed", sc.failed));
    }
    format!("<br/>{}", parts.join(", "))
}

/// The Mermaid flowchart of a scenario, with the journal's counts on each step when given.
pub fn mermaid(s: &Scenario, counts: Option<&JournalCounts>) -> String {
    let mut out = String::from("flowchart TD\n");
    let launch = launch_label(s);
    let _ = writeln!(out, "  start([\"{}\"])", label(&launch));
    if let Some(first) = s.steps.first() {
        let _ = writeln!(out, "  start --> {}", node_id(&first.id));
    }
    for step in &s.steps {
        let id = node_id(&step.id);
        let delay = step.delay.as_ref().map(|d| {
            let mut parts = Vec::new();
            if let Some(a) = &d.after {
                parts.push(format!("after {a}"));
            }
            if let Some(at) = &d.at {
                parts.push(format!("at {at}"));
            }
            if let Some(default_at) = &d.default_at {
                parts.push(format!("at best (default {default_at})"));
            }
            if d.until.is_some() {
                parts.push("until a date".into());
            }
            format!("⏱ {}<br/>", parts.join(" "))
        });
        let delay = delay.unwrap_or_default();
        let shape = match &step.kind {
            StepKind::Send {
                message, variants, ..
            } => {
                format!(
                    "[\"{delay}{}: send {}\"]",
                    step.id,
                    label(&sent(message, variants))
                )
            }
            StepKind::WaitFor {
                condition, timeout, ..
            } => {
                format!(
                    "{{{{\"{delay}{}: wait for {} (up to {timeout})\"}}}}",
                    step.id,
                    label(&describe(condition))
                )
            }
            StepKind::If { condition, .. } => format!(
                "{{\"{delay}{}: {}?\"}}",
                step.id,
                label(&describe(condition))
            ),
            StepKind::Branches { .. } => format!("{{\"{delay}{}: branches\"}}", step.id),
            StepKind::Split { .. } => format!("{{\"{delay}{}: split\"}}", step.id),
            StepKind::Action { action, .. } => {
                format!(
                    "[/\"{delay}{}: {}\"/]",
                    step.id,
                    label(&action_label(action))
                )
            }
            StepKind::End { end } => format!("([\"{delay}end: {}\"])", end.as_str()),
            StepKind::Pass { .. } => format!("[\"{delay}{}\"]", step.id),
        };
        let (is_end, end_name) = match &step.kind {
            StepKind::End { end } => (true, end.as_str()),
            _ => (false, ""),
        };
        let mut shape = shape;
        if let Some(quote) = shape.rfind('"') {
            shape.insert_str(quote, &counts_line(counts, &step.id, is_end, end_name));
        }
        let _ = writeln!(out, "  {id}{shape}");
        let edges: Vec<(String, &str)> = match &step.kind {
            StepKind::WaitFor {
                on_event,
                on_timeout,
                ..
            } => vec![
                ("event".into(), on_event.as_str()),
                ("timeout".into(), on_timeout.as_str()),
            ],
            StepKind::If {
                then, otherwise, ..
            } => vec![
                ("yes".into(), then.as_str()),
                ("no".into(), otherwise.as_str()),
            ],
            StepKind::Branches {
                branches,
                otherwise,
            } => branches
                .iter()
                .map(|b| (label(&describe(&b.when)), b.next.as_str()))
                .chain([("otherwise".to_string(), otherwise.as_str())])
                .collect(),
            StepKind::Split { paths } => paths
                .iter()
                .map(|p| {
                    (
                        format!("{}%", crate::experiment::percent_text(p.basis_points)),
                        p.next.as_str(),
                    )
                })
                .collect(),
            other => other
                .targets()
                .into_iter()
                .map(|(_, t)| (String::new(), t))
                .collect(),
        };
        for (text, target) in edges {
            if target.is_empty() {
                continue;
            }
            if text.is_empty() {
                let _ = writeln!(out, "  {id} --> {}", node_id(target));
            } else {
                let _ = writeln!(out, "  {id} -->|\"{text}\"| {}", node_id(target));
            }
        }
    }
    out
}

/// The scenario as a Graphviz DOT digraph (for SVG rendering), with counts when given.
pub fn dot(s: &Scenario, counts: Option<&JournalCounts>) -> String {
    let esc = |t: &str| t.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("digraph scenario {\n  node [shape=box];\n");
    let _ = writeln!(
        out,
        "  start [label=\"{}\", shape=ellipse];",
        esc(&launch_label(s))
    );
    if let Some(first) = s.steps.first() {
        let _ = writeln!(out, "  start -> {};", node_id(&first.id));
    }
    for step in &s.steps {
        let (is_end, end_name) = match &step.kind {
            StepKind::End { end } => (true, end.as_str()),
            _ => (false, ""),
        };
        let what = match &step.kind {
            StepKind::Send {
                message, variants, ..
            } => {
                format!("{}: send {}", step.id, sent(message, variants))
            }
            StepKind::WaitFor {
                condition, timeout, ..
            } => {
                format!(
                    "{}: wait for {} (up to {timeout})",
                    step.id,
                    describe(condition)
                )
            }
            StepKind::If { condition, .. } => format!("{}: {}?", step.id, describe(condition)),
            StepKind::Branches { .. } => format!("{}: branches", step.id),
            StepKind::Split { paths } => format!(
                "{}: split {}",
                step.id,
                paths
                    .iter()
                    .map(|p| format!("{}%", crate::experiment::percent_text(p.basis_points)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
            StepKind::Action { action, .. } => format!("{}: {}", step.id, action_label(action)),
            StepKind::End { end } => format!("end: {}", end.as_str()),
            StepKind::Pass { .. } => step.id.clone(),
        };
        let n = counts_line(counts, &step.id, is_end, end_name).replace("<br/>", " / ");
        let shape = if is_end { ", shape=ellipse" } else { "" };
        let _ = writeln!(
            out,
            "  {} [label=\"{}{}\"{shape}];",
            node_id(&step.id),
            esc(&what),
            esc(&n)
        );
        for (field, target) in step.kind.targets() {
            if !target.is_empty() {
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{}\"];",
                    node_id(&step.id),
                    node_id(target),
                    esc(&field)
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

fn launch_label(s: &Scenario) -> String {
    match &s.launch {
        Launch::Manual => "manual launch".to_string(),
        Launch::Recurring(_) => "recurring launch".to_string(),
        Launch::FixedDates(d) => format!("{} fixed dates", d.len()),
        Launch::AfterImport(_) => "after import".to_string(),
        Launch::Trigger(t) => format!("on {}", t.event),
    }
}

/// What a send step sends: its message, or its variants with their shares
/// (`subject-a 50% / subject-b 50%`).
fn sent(message: &str, variants: &[crate::scenario::Variant]) -> String {
    if variants.is_empty() {
        return message.to_string();
    }
    variants
        .iter()
        .map(|v| {
            format!(
                "{} {}%",
                v.message,
                crate::experiment::percent_text(v.basis_points)
            )
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// An action as drawn: its name, and for a webhook its method and host (`webhook POST
/// hooks.example.com`), so that the graph says where contacts' data goes.
fn action_label(action: &crate::scenario::Action) -> String {
    match action {
        crate::scenario::Action::Webhook(w) => {
            let host = w
                .url
                .split_once("://")
                .map_or(w.url.as_str(), |(_, rest)| rest)
                .split(['/', '?', '#'])
                .next()
                .unwrap_or("");
            format!("webhook {} {host}", w.method.as_str())
        }
        crate::scenario::Action::Invoke(i) => {
            // The function's name, not its whole ARN.
            let name = i.function.split(":function:").nth(1).unwrap_or(&i.function);
            format!("invoke {name}")
        }
        other => other.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn draws_every_step_and_edge() {
        let yaml = "id: g\nlaunch: {type: trigger, event: purchase}\nmessages: {m: {channel: sms, text: hi}}\nsteps:\n  - {id: a, send: m, next: w}\n  - {id: w, wait_for: {opened: a, timeout: P1D}, on_event: done, on_timeout: done}\n  - {id: done, end: success}\n";
        let (s, _) = crate::validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
        let m = mermaid(&s, None);
        assert!(
            m.starts_with("flowchart TD\n  start([\"on purchase\"])\n  start --> s_a\n"),
            "{m}"
        );
        assert!(
            m.contains("s_w -->|\"event\"| s_done") && m.contains("s_w -->|\"timeout\"| s_done"),
            "{m}"
        );
        assert!(m.contains("s_done([\"end: success\"])"), "{m}");
        let mut counts = JournalCounts::default();
        counts.ends.insert("success".into(), 3);
        assert!(mermaid(&s, Some(&counts)).contains("end: success<br/>3 ended"));
        let d = dot(&s, Some(&counts));
        assert!(
            d.starts_with("digraph scenario {")
                && d.contains("s_w -> s_done [label=\"on_event\"];"),
            "{d}"
        );
        assert!(d.contains("end: success / 3 ended"), "{d}");
    }

    #[test]
    fn a_split_shows_its_percents() {
        let yaml = "id: g\nlaunch: {type: manual}\nsteps:\n  - id: ab\n    split: [{percent: 12.5, next: a}, {percent: 87.5, next: b}]\n  - {id: a, end: success}\n  - {id: b, end: failure}\n";
        let (s, _) = crate::validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
        let m = mermaid(&s, None);
        assert!(m.contains("s_ab{\"ab: split\"}"), "{m}");
        assert!(m.contains("s_ab -->|\"12.5%\"| s_a"), "{m}");
        assert!(m.contains("s_ab -->|\"87.5%\"| s_b"), "{m}");
        let d = dot(&s, None);
        assert!(d.contains("ab: split 12.5% / 87.5%"), "{d}");
        assert!(d.contains("-> s_b [label=\"split[1].next\"]"), "{d}");
    }

    #[test]
    fn a_variants_send_shows_its_messages_and_shares() {
        let yaml = "id: g\nlaunch: {type: manual}\nmessages:\n  a: {channel: sms, text: A}\n  b: {channel: sms, text: B}\nsteps:\n  - id: ab\n    send: {variants: [{message: a, percent: 12.5}, {message: b, percent: 87.5}]}\n    next: done\n  - {id: done, end: success}\n";
        let (s, _) = crate::validate::parse(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
        let m = mermaid(&s, None);
        assert!(m.contains("s_ab[\"ab: send a 12.5% / b 87.5%\"]"), "{m}");
        let d = dot(&s, None);
        assert!(d.contains("ab: send a 12.5% / b 87.5%"), "{d}");
    }
}
