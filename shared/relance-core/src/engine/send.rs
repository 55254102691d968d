//! The send step: [`decide_send`] decides from plain facts (no effects, no records), and
//! the running transition applies the decision (a hold, a skip or failure record, a send).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::run::{Flow, Run};
use super::{Effect, Hold, Recipient, Send};
use crate::contact::{Contact, History, SendMark};
use crate::journal::RecordKind;
use crate::policy::Policy;
use crate::scenario::{Channel, Consent, FrequencyCap, Message, Scenario, Step};

/// What a send step knows when it runs.
#[derive(Debug, Clone, Copy)]
pub struct SendFacts<'s, 'c> {
    /// The scenario (its messages, quiet hours, cap, consent rule and zone).
    pub scenario: &'s Scenario,
    /// The workspace policy.
    pub policy: &'s Policy,
    /// The contact, as it stands in this transition.
    pub contact: &'c Contact,
    /// Its history (the sends the caps count).
    pub history: &'c History,
    /// True when this enrollment already sent this step.
    pub already_sent: bool,
    /// Sends made earlier in the same transition (not yet in the history).
    pub sends_now: usize,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What a send step does.
#[derive(Debug, Clone, PartialEq)]
pub enum SendDecision<'a> {
    /// Quiet hours: run the step again at this instant.
    Hold(DateTime<Utc>),
    /// Do not send; go on (the reason is journaled: `unsubscribed`, `frequency_cap`, ...).
    Skip(&'static str),
    /// The step cannot send (the reason is journaled); go on.
    Fail(String),
    /// Send this message there (rendering follows; it may still fail).
    Send {
        /// The message.
        message: &'a Message,
        /// The communication type consent was checked against.
        communication_type: &'a str,
        /// Where it goes.
        to: Recipient,
    },
}

/// Decides a send of `message_id`, checking in order: already sent, the message exists, the
/// global control group, quiet hours, the scenario's cap, the policy's cap, a recipient that is not suppressed,
/// then consent.
pub fn decide_send<'s>(message_id: &str, facts: &SendFacts<'s, '_>) -> SendDecision<'s> {
    let SendFacts {
        scenario,
        policy,
        contact,
        history,
        already_sent,
        sends_now,
        now,
    } = *facts;
    if already_sent {
        return SendDecision::Skip("already_sent");
    }
    let Some(message) = scenario.messages.get(message_id) else {
        return SendDecision::Fail(format!("unknown message \"{message_id}\""));
    };
    let kind = message.communication_type();
    let exempt = policy.exempts(kind);
    // The global control group is sent nothing but exempt (transactional) messages.
    if !exempt
        && let Some(group) = &policy.holdout
        && group.holds(contact.id())
    {
        return SendDecision::Skip("global_holdout");
    }
    // The scenario's own quiet hours replace the policy's; both are the recipient's
    // night, read in its own zone when it has one.
    let quiet = match (&scenario.quiet_hours, &policy.quiet_hours) {
        (Some(own), _) => Some((own, scenario.timezone)),
        (None, Some(global)) if !exempt => Some((global, policy.timezone)),
        _ => None,
    };
    if let Some((quiet, default_tz)) = quiet {
        let tz = contact.timezone().unwrap_or(default_tz);
        if let Some(end) = quiet.ends_after(now, tz) {
            return SendDecision::Hold(end);
        }
    }
    let capped = |cap: &FrequencyCap, earlier: &[SendMark], tz: Tz| {
        let from = cap.per.sub_from(now, tz);
        let before = earlier
            .iter()
            .filter(|s| s.at > from && s.at <= now)
            .count();
        before + sends_now >= cap.max as usize
    };
    if let Some(cap) = &scenario.frequency_cap
        && capped(cap, &history.sends, scenario.timezone)
    {
        return SendDecision::Skip("frequency_cap");
    }
    if let Some(cap) = policy.frequency_cap.as_ref().filter(|_| !exempt) {
        let tz = contact.timezone().unwrap_or(policy.timezone);
        if capped(cap, &history.contact_sends, tz) {
            return SendDecision::Skip("policy_frequency_cap");
        }
    }
    let to = match message.channel {
        Channel::Email => contact.email().map(|e| Recipient::Email(e.to_string())),
        Channel::Sms => contact.phone().map(|p| Recipient::Phone(p.to_string())),
        Channel::Push => {
            let endpoints = contact.push_endpoints();
            (!endpoints.is_empty()).then(|| {
                Recipient::Push(
                    endpoints
                        .into_iter()
                        .map(|(p, e)| (p.to_string(), e.to_string()))
                        .collect(),
                )
            })
        }
        Channel::WebPush => {
            let subs = contact.web_push_subscriptions();
            (!subs.is_empty()).then(|| Recipient::WebPush(subs.into_iter().cloned().collect()))
        }
    };
    let suppressed = match &to {
        Some(Recipient::Email(a) | Recipient::Phone(a)) => contact.is_suppressed(a),
        _ => false,
    };
    if suppressed {
        return SendDecision::Skip("suppressed");
    }
    let Some(to) = to else {
        return SendDecision::Skip(match message.channel {
            Channel::Email => "no_email",
            Channel::Sms => "no_phone",
            Channel::Push => "no_push_endpoint",
            Channel::WebPush => "no_web_push_subscription",
        });
    };
    match (contact.subscription(kind), scenario.consent) {
        (Some(false), _) => SendDecision::Skip("unsubscribed"),
        (None, Consent::Explicit) => SendDecision::Skip("no_opt_in"),
        _ => SendDecision::Send {
            message,
            communication_type: kind,
            to,
        },
    }
}

impl Run<'_> {
    /// Runs a send step: applies [`decide_send`], renders and emits the send. A variant send
    /// (`variant`) journals `assigned` with the chosen message just before `sent`, only when it
    /// does send, so a send held by quiet hours is assigned once.
    pub(super) fn send(
        &mut self,
        step: &Step,
        message_id: &str,
        variant: bool,
        arrival: bool,
    ) -> Flow {
        let engine = self.engine;
        let scenario = &engine.scenario;
        let facts = SendFacts {
            scenario,
            policy: &engine.policy,
            contact: &self.contact,
            history: self.history,
            already_sent: self.en.sent.contains_key(&step.id),
            sends_now: self.sends_now,
            now: self.now,
        };
        let (message, kind, to) = match decide_send(message_id, &facts) {
            SendDecision::Hold(end) => {
                self.hold(step, end, Hold::QuietHours, arrival);
                return Flow::Hold;
            }
            SendDecision::Skip(reason) => return self.skip_send(step, reason, arrival),
            SendDecision::Fail(reason) => return self.fail_step(step, reason, arrival),
            SendDecision::Send {
                message,
                communication_type,
                to,
            } => (message, communication_type, to),
        };
        let content =
            match engine
                .templates
                .render(message_id, message, &self.contact, &scenario.id)
            {
                Ok(c) => c,
                Err(e) => return self.fail_step(step, format!("render: {e}"), arrival),
            };
        if variant {
            self.record(RecordKind::Assigned, Some(&step.id)).message =
                Some(message_id.to_string());
        }
        self.effects.push(Effect::Send(Send {
            enrollment: self.en.id.clone(),
            contact: self.en.contact.clone(),
            step: step.id.clone(),
            message: message_id.to_string(),
            channel: message.channel,
            communication_type: kind.to_string(),
            to,
            content,
            idempotency_key: [self.en.id.as_str(), ":", step.id.as_str()].concat(),
        }));
        self.en.sent.insert(step.id.clone(), self.now);
        self.sends_now += 1;
        let r = self.record(RecordKind::Sent, Some(&step.id));
        r.channel = Some(message.channel);
        r.message = Some(message_id.to_string());
        r.arrival = arrival;
        Flow::Next
    }

    fn skip_send(&mut self, step: &Step, reason: &str, arrival: bool) -> Flow {
        let r = self.record(RecordKind::Skipped, Some(&step.id));
        r.reason = Some(reason.to_string());
        r.arrival = arrival;
        Flow::Next
    }

    fn fail_step(&mut self, step: &Step, reason: String, arrival: bool) -> Flow {
        let r = self.record(RecordKind::Failed, Some(&step.id));
        r.reason = Some(reason);
        r.arrival = arrival;
        Flow::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    const SCENARIO: &str = r#"
id: t
launch: {type: manual}
messages:
  mail: {channel: email, type: news, subject: Hi, text: Hi}
  text: {channel: sms, text: Hi}
  ping: {channel: push, title: Hi, body: Hi}
  web: {channel: web_push, title: Hi, body: Hi}
steps:
  - {id: a, send: mail, next: b}
  - {id: b, end: success}
"#;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn scenario(extra: &str) -> Scenario {
        let doc =
            crate::scenario::parse_document(&format!("{SCENARIO}{extra}"), crate::Format::Yaml)
                .unwrap_or_default();
        crate::scenario::from_value(&doc)
            .map(|l| l.scenario)
            .unwrap_or_else(|p| panic!("{p}"))
    }

    fn contact(fields: serde_json::Value) -> Contact {
        let mut c = Contact::bare("c");
        if let Some(map) = fields.as_object() {
            for (k, v) in map {
                c.set_field(k, v.clone());
            }
        }
        c
    }

    fn policy(yaml: &str) -> Policy {
        if yaml.is_empty() {
            return Policy::default();
        }
        Policy::parse(yaml, crate::Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn sends(hours: &[u32]) -> History {
        History {
            sends: hours.iter().map(|&h| SendMark { at: at(h) }).collect(),
            ..History::default()
        }
    }

    /// One case: the decision, in short (`send email`, `skip unsubscribed`, `hold 07:00`).
    #[allow(clippy::too_many_arguments)]
    fn case(
        extra: &str,
        policy_yaml: &str,
        message: &str,
        fields: serde_json::Value,
        history: History,
        already_sent: bool,
        sends_now: usize,
        hour: u32,
    ) -> String {
        let scenario = scenario(extra);
        let policy = policy(policy_yaml);
        let contact = contact(fields);
        let facts = SendFacts {
            scenario: &scenario,
            policy: &policy,
            contact: &contact,
            history: &history,
            already_sent,
            sends_now,
            now: at(hour),
        };
        match decide_send(message, &facts) {
            SendDecision::Hold(t) => format!("hold {}", t.format("%d %H:%M")),
            SendDecision::Skip(r) => format!("skip {r}"),
            SendDecision::Fail(r) => format!("fail {r}"),
            SendDecision::Send {
                communication_type,
                to,
                ..
            } => format!(
                "send {communication_type} {}",
                serde_json::to_string(&to).unwrap_or_default()
            ),
        }
    }

    #[test]
    fn decide_send_table() {
        let ana = || json!({"email": "ana@example.com"});
        let none = History::default;
        let quiet = "quiet_hours: {from: \"22:00\", to: \"07:00\"}\n";
        let cap = "frequency_cap: {max: 2, per: P1D}\n";
        #[rustfmt::skip]
        let cases: Vec<(String, &str)> = vec![
            (case("", "", "mail", ana(), none(), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
            (case("", "", "mail", ana(), none(), true, 0, 12), "skip already_sent"),
            (case("", "", "nope", ana(), none(), false, 0, 12), "fail unknown message \"nope\""),
            (case(quiet, "", "mail", ana(), none(), false, 0, 23), "hold 03 07:00"),
            (case(quiet, "", "mail", ana(), none(), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
            (case("", quiet, "mail", ana(), none(), false, 0, 23), "hold 03 07:00"),
            (case("", &format!("{quiet}exempt: [news]\n"), "mail", ana(), none(), false, 0, 23), r#"send news {"email":"ana@example.com"}"#),
            (case(quiet, "", "mail", json!({"email": "ana@example.com", "timezone": "Asia/Tokyo"}), none(), false, 0, 14), "hold 02 22:00"),
            (case(cap, "", "mail", ana(), sends(&[9, 10]), false, 0, 12), "skip frequency_cap"),
            (case(cap, "", "mail", ana(), sends(&[9]), false, 1, 12), "skip frequency_cap"),
            (case(cap, "", "mail", ana(), sends(&[9]), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
            (case("", cap, "mail", ana(), History { contact_sends: sends(&[9, 10]).sends, ..History::default() }, false, 0, 12), "skip policy_frequency_cap"),
            (case("", "", "mail", json!({"email": "ana@example.com", "suppressed": ["ana@example.com"]}), none(), false, 0, 12), "skip suppressed"),
            (case("", "", "mail", json!({}), none(), false, 0, 12), "skip no_email"),
            (case("", "", "text", ana(), none(), false, 0, 12), "skip no_phone"),
            (case("", "", "ping", ana(), none(), false, 0, 12), "skip no_push_endpoint"),
            (case("", "", "web", ana(), none(), false, 0, 12), "skip no_web_push_subscription"),
            (case("", "", "text", json!({"phone": "+33600000001"}), none(), false, 0, 12), r#"send sms {"phone":"+33600000001"}"#),
            (case("", "", "mail", json!({"email": "ana@example.com", "subscriptions": {"news": false}}), none(), false, 0, 12), "skip unsubscribed"),
            (case("consent: explicit\n", "", "mail", ana(), none(), false, 0, 12), "skip no_opt_in"),
            // Contact "c" has the global bucket 3831 with seed s2 (python3: int.from_bytes(hashlib.sha256(b"holdout:s2:c").digest()[:8], "big") % 10000).
            (case("", "holdout: {percent: 40, seed: s2}\n", "mail", ana(), none(), false, 0, 12), "skip global_holdout"),
            (case("", "holdout: {percent: 38, seed: s2}\n", "mail", ana(), none(), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
            (case("", "holdout: {percent: 40, seed: s2}\nexempt: [news]\n", "mail", ana(), none(), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
            (case("", "holdout: {percent: 40, seed: s2}\n", "mail", ana(), none(), true, 0, 12), "skip already_sent"),
            (case("consent: explicit\n", "", "mail", json!({"email": "ana@example.com", "subscriptions": {"news": true}}), none(), false, 0, 12), r#"send news {"email":"ana@example.com"}"#),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
