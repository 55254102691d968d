//! The consent log port on DynamoDB: append-only events in the contact's partition, read
//! back oldest first and, within one instant, in the order appended (a place in the key).

use aws_sdk_dynamodb::types::AttributeValue;
use relance_core::instant;

use super::DynamoStore;
use super::item::{Item, get_s, n, s};
use crate::error::StoreError;
use crate::keys;

/// How many times an append reads the instant again after a concurrent one took its place.
const APPEND_ATTEMPTS: usize = 8;

impl relance_core::ports::ConsentStore for DynamoStore {
    type Error = StoreError;

    /// Written after the events already at its instant (its place ends the key, keeping the
    /// order appended), unless an event with its hash is there: a redone unit changes nothing.
    /// Two concurrent appends at one instant cannot take the same place (the key is the same,
    /// the put is conditional): the loser reads again and takes the next.
    fn append_consent(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
    ) -> Result<(), StoreError> {
        self.append_consent_checked(e, None)
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

impl DynamoStore {
    /// Appends `e`; with `seen` (the profile's `doc` as the unit read it), only while the
    /// profile is still that one, in one `TransactWriteItems` (a condition check of the
    /// profile and the conditional put of the event).
    pub(super) fn append_consent_checked(
        &mut self,
        e: &relance_core::consent::ConsentEvent,
        seen: Option<&str>,
    ) -> Result<(), StoreError> {
        // An entry of this contact waiting for its enrollment's put is written first: a unit
        // that loses the entry to a concurrent one fails before it appends to the log.
        self.write_marked_entries_of(&e.contact)?;
        let micros = instant::to_micros(e.at);
        let kept = if e.kept { "kept" } else { "" };
        let hash = keys::hash(&[
            &e.subject,
            e.state.as_str(),
            &e.source,
            &e.actor,
            e.reason.as_deref().unwrap_or(""),
            kept,
        ]);
        let pk = keys::contact(&e.contact);
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(&pk));
        item.insert("subject".into(), s(&e.subject));
        item.insert("state".into(), s(e.state.as_str()));
        item.insert("source".into(), s(&e.source));
        item.insert("actor".into(), s(&e.actor));
        item.insert("at".into(), n(micros));
        if let Some(r) = &e.reason {
            item.insert("reason".into(), s(r));
        }
        item.insert("kept".into(), AttributeValue::Bool(e.kept));
        item.insert(keys::CONSENT_HASH.into(), s(&hash));
        for _ in 0..APPEND_ATTEMPTS {
            let same_instant =
                self.query(&self.config.state_table, &pk, &keys::consent_instant(e.at))?;
            if same_instant.iter().any(|i| {
                get_s(i, keys::CONSENT_HASH)
                    .or_else(|| get_s(i, keys::SK).and_then(keys::legacy_consent_hash))
                    == Some(hash.as_str())
            }) {
                return Ok(());
            }
            let sk = keys::consent(e.at, same_instant.len());
            item.insert(keys::SK.into(), s(sk));
            let placed = match seen {
                None => self.put_new(item.clone())?,
                Some(doc) => self.put_new_if_profile(item.clone(), &e.contact, doc)?,
            };
            if placed {
                return Ok(());
            }
        }
        Err(StoreError::Conflict(format!(
            "consent of {} at {}",
            e.contact,
            keys::text(e.at)
        )))
    }

    /// Puts `item` (a new key in `contact`'s partition) if its key is free and the profile's
    /// `doc` is `seen`, both or neither: false when the key was taken (as [`DynamoStore::put_new`]),
    /// a conflict when the profile changed.
    fn put_new_if_profile(
        &self,
        item: Item,
        contact: &str,
        seen: &str,
    ) -> Result<bool, StoreError> {
        let pk = keys::contact(contact);
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
        let built = |e: aws_sdk_dynamodb::error::BuildError| {
            StoreError::Dynamo(crate::error::DynamoError::new(
                "TransactWriteItems",
                e.to_string(),
            ))
        };
        let check = ConditionCheck::builder()
            .table_name(&self.config.state_table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(keys::PROFILE))
            .condition_expression("doc = :seen")
            .expression_attribute_values(":seen", s(seen))
            .build()
            .map_err(built)?;
        let put = Put::builder()
            .table_name(&self.config.state_table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(built)?;
        self.before_restated_append.run();
        let sent = self.bridge.block(
            self.client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().condition_check(check).build())
                .transact_items(TransactWriteItem::builder().put(put).build())
                .send(),
        );
        match sent {
            Ok(_) => {
                self.unit_reads.wrote(&item);
                Ok(true)
            }
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    // Refused on its condition, or on another transaction writing the item
                    // at the same moment: either way someone else wrote it.
                    let failed = |i: usize| {
                        matches!(
                            c.cancellation_reasons().get(i).and_then(|r| r.code()),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        )
                    };
                    if failed(0) {
                        return Err(super::contacts::contact_conflict(contact));
                    }
                    if failed(1) {
                        // Read the instant again, not the unit's copy of the partition.
                        if let Some(sk) = get_s(&item, keys::SK) {
                            self.unit_reads.forget(&pk, sk);
                        }
                        return Ok(false);
                    }
                }
                Err(super::item::dynamo("TransactWriteItems")(e))
            }
        }
    }
}
