//! The consent log port on DynamoDB: append-only events in the contact's partition.

use aws_sdk_dynamodb::types::AttributeValue;
use relance_core::instant;

use super::DynamoStore;
use super::item::{Item, get_s, n, s};
use crate::error::StoreError;
use crate::keys;

impl relance_core::ports::ConsentStore for DynamoStore {
    type Error = StoreError;

    /// Written only if absent (the log is append-only; a redone unit lands on the same key).
    fn append_consent(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
    ) -> Result<(), StoreError> {
        let micros = instant::to_micros(e.at);
        let kept = if e.kept { "kept" } else { "" };
        let sk = keys::consent(
            e.at,
            &[
                &e.subject,
                e.state.as_str(),
                &e.source,
                &e.actor,
                e.reason.as_deref().unwrap_or(""),
                kept,
            ],
        );
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(&e.contact)));
        item.insert(keys::SK.into(), s(sk));
        item.insert("subject".into(), s(&e.subject));
        item.insert("state".into(), s(e.state.as_str()));
        item.insert("source".into(), s(&e.source));
        item.insert("actor".into(), s(&e.actor));
        item.insert("at".into(), n(micros));
        if let Some(r) = &e.reason {
            item.insert("reason".into(), s(r));
        }
        item.insert("kept".into(), AttributeValue::Bool(e.kept));
        self.put_new(item)?;
        Ok(())
    }

    fn consent_trail(
        &mut self,
        contact: &str,
    ) -> Result<Vec<relance_core::consent::ConsentEvent>, StoreError> {
        use relance_core::consent::{ConsentEvent, ConsentState};
        let pk = keys::contact(contact);
        let mut trail = Vec::new();
        for item in self.query(&self.config.state_table, &pk, keys::CONSENT_PREFIX)? {
            let text = |k: &str| get_s(&item, k).unwrap_or_default().to_string();
            let state = ConsentState::parse(&text("state")).ok_or(StoreError::Corrupt {
                what: "consent state",
                why: text("state"),
            })?;
            let at = item
                .get("at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(instant::from_micros)
                .ok_or(StoreError::Corrupt {
                    what: "consent instant",
                    why: text("sk"),
                })?;
            trail.push(ConsentEvent {
                contact: contact.to_string(),
                subject: text("subject"),
                state,
                source: text("source"),
                actor: text("actor"),
                at,
                reason: get_s(&item, "reason").map(str::to_string),
                kept: item
                    .get("kept")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
            });
        }
        Ok(trail)
    }
}
