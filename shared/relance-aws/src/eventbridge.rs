//! `EventBus`: the events Relance emits on its EventBridge bus, one PutEvents call per
//! transition: `relance.enrollment.ended` (with the end or `exited`), `relance.goal.reached`
//! for a custom goal, and the actions meant for other systems (`relance.task`,
//! `relance.lead`, `relance.export`, or the name a scenario's `event` action gives). Each
//! detail carries an idempotency key: EventBridge delivers at least once, consumers dedupe.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use relance_core::engine::{Effect, Outcome};
use relance_core::scenario::{Action, EndKind};
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::error::EventBridgeError;

/// The `source` of every event Relance emits.
pub const SOURCE: &str = "relance";

/// A bus to emit on.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    bus: String,
    bridge: Bridge,
    /// The bus's ARN, once described (its archives name it; it never changes).
    arn: std::sync::Arc<std::sync::OnceLock<String>>,
}

/// The events a transition's effects emit: (detail-type, detail). Relance's informational
/// events named in `muted` (see `config::MUTABLE_EVENTS`) are left out; a scenario's own
/// `event` action goes out whatever its name.
pub fn events_of(scenario: &str, effects: &[Effect], muted: &[String]) -> Vec<(String, Value)> {
    let informs = |detail_type: &str| !muted.iter().any(|m| m == detail_type);
    let mut out = Vec::new();
    for effect in effects {
        match effect {
            Effect::Ended {
                enrollment,
                contact,
                outcome,
                at,
            } => {
                let end = match outcome {
                    Outcome::End(e) => e.as_str().to_string(),
                    Outcome::Exited => "exited".to_string(),
                    Outcome::HeldOut => relance_core::experiment::HELD_OUT_END.to_string(),
                };
                if informs("relance.enrollment.ended") {
                    out.push((
                        "relance.enrollment.ended".to_string(),
                        json!({"scenario": scenario, "enrollment": enrollment, "contact": contact, "end": end, "at": at,
                               "idempotency_key": format!("{enrollment}:ended")}),
                    ));
                }
                if let Outcome::End(EndKind::Goal(goal)) = outcome
                    && informs("relance.goal.reached")
                {
                    out.push((
                        "relance.goal.reached".to_string(),
                        json!({"scenario": scenario, "enrollment": enrollment, "contact": contact, "goal": goal, "at": at,
                               "idempotency_key": format!("{enrollment}:goal")}),
                    ));
                }
            }
            Effect::Action {
                enrollment,
                contact,
                step,
                action,
            } => {
                let key = relance_core::ports::action_key(enrollment, step);
                let base = json!({"scenario": scenario, "enrollment": enrollment, "contact": contact, "step": step, "idempotency_key": key});
                let (detail_type, extra) = match action {
                    Action::Task(t) => ("relance.task".to_string(), json!({"task": t})),
                    Action::CreateLead(fields) => {
                        ("relance.lead".to_string(), json!({"lead": fields}))
                    }
                    Action::Export(e) => ("relance.export".to_string(), json!({"export": e})),
                    Action::Event(e) => (e.name.clone(), json!({"detail": e.detail})),
                    // The queued call, whole: the dispatch port puts it on the webhook queue
                    // (or, without one, on the bus, where a rule can route it).
                    Action::Webhook(w) => {
                        (crate::callout::WEBHOOK.to_string(), json!({"webhook": w}))
                    }
                    // An invoke, with the contact's fields its event carries.
                    Action::Invoke(i) => (crate::callout::INVOKE.to_string(), json!({"invoke": i})),
                    // Tags, groups and profile updates change the contact; nothing to emit.
                    Action::Tag(_) | Action::Group(_) | Action::UpdateProfile(_) => continue,
                };
                let mut detail = base;
                if let (Some(d), Some(x)) = (detail.as_object_mut(), extra.as_object()) {
                    d.extend(x.clone());
                }
                out.push((detail_type, detail));
            }
            _ => {}
        }
    }
    out
}

impl EventBus {
    /// Emits on the bus named `bus`.
    pub fn new(client: Client, bus: String, bridge: Bridge) -> EventBus {
        EventBus {
            client,
            bus,
            bridge,
            arn: std::sync::Arc::default(),
        }
    }

    /// Puts the events of a transition (ten per call).
    pub fn emit(&self, events: &[(String, Value)]) -> Result<(), EventBridgeError> {
        for chunk in events.chunks(10) {
            let entries = chunk
                .iter()
                .map(|(detail_type, detail)| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(detail_type)
                        .detail(detail.to_string())
                        .build()
                })
                .collect::<Vec<_>>();
            let out = self
                .bridge
                .block(self.client.put_events().set_entries(Some(entries)).send())
                .map_err(|e| EventBridgeError::new("PutEvents", format!("{e:?}")))?;
            if out.failed_entry_count > 0 {
                return Err(EventBridgeError::new(
                    "PutEvents",
                    format!("{} entries failed", out.failed_entry_count),
                ));
            }
        }
        Ok(())
    }
}

impl EventBus {
    /// What reads this bus (see `crate::listeners`): the pattern of each rule not disabled
    /// and of each archive of its events not disabled or failed (`None`: an archive with no
    /// pattern). Rules without a pattern (schedules) receive no event and are left out.
    pub fn listeners(&self) -> Result<crate::listeners::Listeners, EventBridgeError> {
        use aws_sdk_eventbridge::types::{ArchiveState, RuleState};
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .bridge
                .block(
                    self.client
                        .list_rules()
                        .event_bus_name(&self.bus)
                        .set_next_token(token)
                        .send(),
                )
                .map_err(|e| EventBridgeError::new("ListRules", format!("{e:?}")))?;
            for rule in page.rules() {
                if rule.state() == Some(&RuleState::Disabled) {
                    continue;
                }
                if let Some(pattern) = rule.event_pattern() {
                    out.push(Some(pattern.to_string()));
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let arn = match self.arn.get() {
            Some(arn) => arn.clone(),
            None => {
                let described = self
                    .bridge
                    .block(self.client.describe_event_bus().name(&self.bus).send())
                    .map_err(|e| EventBridgeError::new("DescribeEventBus", format!("{e:?}")))?;
                let arn = described.arn().unwrap_or_default().to_string();
                self.arn.get_or_init(|| arn).clone()
            }
        };
        let mut token = None;
        loop {
            let page = self
                .bridge
                .block(
                    self.client
                        .list_archives()
                        .event_source_arn(&arn)
                        .set_next_token(token)
                        .send(),
                )
                .map_err(|e| EventBridgeError::new("ListArchives", format!("{e:?}")))?;
            for archive in page.archives() {
                if matches!(
                    archive.state(),
                    Some(ArchiveState::Disabled | ArchiveState::CreateFailed)
                ) {
                    continue;
                }
                let Some(name) = archive.archive_name() else {
                    continue;
                };
                let described = self
                    .bridge
                    .block(self.client.describe_archive().archive_name(name).send())
                    .map_err(|e| EventBridgeError::new("DescribeArchive", format!("{e:?}")))?;
                out.push(described.event_pattern().map(str::to_string));
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use relance_core::scenario::StaffTask;

    #[test]
    fn ends_goals_and_actions_become_events_with_keys() {
        let at = Utc::now();
        let effects = vec![
            Effect::Action {
                enrollment: "s:c:1".into(),
                contact: "c".into(),
                step: "call".into(),
                action: Action::Task(StaffTask {
                    title: "Call them".into(),
                    assignee: Some("sales".into()),
                    note: None,
                }),
            },
            Effect::Ended {
                enrollment: "s:c:1".into(),
                contact: "c".into(),
                outcome: Outcome::End(EndKind::Goal("signed".into())),
                at,
            },
        ];
        let events = events_of("s", &effects, &[]);
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "relance.task",
                "relance.enrollment.ended",
                "relance.goal.reached"
            ]
        );
        assert_eq!(events[0].1["task"]["title"], "Call them");
        assert_eq!(events[1].1["end"], "signed");
        assert_eq!(events[2].1["idempotency_key"], "s:c:1:goal");
    }
}
