//! The journal port on DynamoDB: journal records, the outbox (recorded sends, actions), dead
//! letters.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use relance_core::engine::Send;
use relance_core::journal::Record;
use relance_core::policy::Retained;
use relance_core::ports::JournalStore;
use relance_core::scenario::Action;

use super::DynamoStore;
use super::item::{Item, from_json, get_s, s, to_json};
use crate::error::StoreError;
use crate::keys;

impl JournalStore for DynamoStore {
    type Error = StoreError;

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), StoreError> {
        let json = to_json(record);
        let mut item = Item::new();
        // An enrollment's records share its shard; a record of no enrollment goes by contact.
        let spread = record.enrollment.as_deref().unwrap_or(&record.contact);
        item.insert(keys::PK.into(), s(keys::journal(scenario, spread)));
        item.insert(
            keys::SK.into(),
            s(keys::journal_record(
                record.at,
                record.enrollment.as_deref(),
                &json,
            )),
        );
        item.insert("contact".into(), s(&record.contact));
        item.insert("record".into(), s(json));
        if self.defers() {
            // In a batch, with the transitions' journal items (an unconditional put of a
            // deterministic key; `records` reads the waiting ones too).
            self.deferred_markers.push(item);
            return Ok(());
        }
        self.put(item)
    }

    fn outbox_send(
        &mut self,
        scenario: &str,
        send: &Send,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = relance_core::ports::send_message_text(scenario, send, at).map_err(|e| {
            StoreError::Corrupt {
                what: "send message",
                why: e.to_string(),
            }
        })?;
        self.channel_ready(send.channel)?;
        if !self.record_sends {
            // The channel queue is the outbox: the sender records each key once (its claim).
            // Replays enqueue again; the claim keeps the send single.
            self.deferred_messages.push((send.channel, payload));
            return Ok(());
        }
        // Recording sends (tests, benches): in the contact's partition, once per key (the
        // first stays, as the senders' claim keeps the first on AWS).
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(&send.contact)));
        item.insert(
            keys::SK.into(),
            s(keys::recorded_send(scenario, &send.idempotency_key)),
        );
        item.insert("at".into(), s(keys::text(at)));
        item.insert("payload".into(), s(payload));
        self.put_new(item).map(|_| ())
    }

    fn outbox_action(
        &mut self,
        scenario: &str,
        enrollment: &str,
        contact: &str,
        step: &str,
        action: &Action,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (key, payload) =
            relance_core::ports::action_message(scenario, enrollment, contact, step, action, at);
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::OUTBOX));
        item.insert(keys::SK.into(), s(key));
        item.insert("payload".into(), s(payload.to_string()));
        self.put_new(item).map(|_| ())
    }

    fn records(
        &mut self,
        scenario: &str,
        contact: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        // The scenario's shards and the unsplit partition of earlier builds: one query each
        // (a journal read, not a contact-step's), merged by sort key below.
        let partitions = keys::journal_partitions(scenario);
        let mut items = Vec::new();
        for pk in &partitions {
            items.extend(self.query(&self.config.state_table, pk, "")?);
        }
        // Read your own writes: a batch's transition items wait for `flush` (see
        // `set_auto_flush`), and a read within the batch must see them too (the winner check
        // run by a tick just after a launch due at the same instant counts that launch's
        // sends, as every other store does).
        let stored: BTreeSet<(&str, &str)> = items
            .iter()
            .filter_map(|i| Some((get_s(i, keys::PK)?, get_s(i, keys::SK)?)))
            .collect();
        let waiting: Vec<Item> = self
            .deferred_markers
            .iter()
            .filter(|m| get_s(m, keys::PK).is_some_and(|pk| partitions.iter().any(|p| p == pk)))
            .filter(|m| {
                !stored.contains(&(
                    get_s(m, keys::PK).unwrap_or(""),
                    get_s(m, keys::SK).unwrap_or(""),
                ))
            })
            .cloned()
            .collect();
        items.extend(waiting);
        items.sort_by(|a, b| get_s(a, keys::SK).cmp(&get_s(b, keys::SK)));
        // A sort key names one record (its instant, enrollment and version or content hash):
        // found in two partitions (an earlier build's and a shard), it is one record.
        items.dedup_by(|a, b| get_s(a, keys::SK) == get_s(b, keys::SK));
        let mut out = Vec::new();
        for item in items {
            if contact.is_some_and(|c| get_s(&item, "contact") != Some(c)) {
                continue;
            }
            match get_s(&item, "records") {
                Some(list) => out.extend(from_json::<Vec<Record>>("journal records", list)?),
                None => out.push(from_json::<Record>(
                    "journal record",
                    get_s(&item, "record").unwrap_or("null"),
                )?),
            }
        }
        Ok(out)
    }

    /// Items expire by the table's TTL (`expires_at`, stamped when written, see
    /// `DynamoStore::expire`): nothing to delete here. Journal items are kept, since each
    /// also proves its transition's effects were applied (see the module docs).
    fn purge(
        &mut self,
        _kind: Retained,
        _before: DateTime<Utc>,
        _limit: usize,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn dead_letter(
        &mut self,
        kind: &str,
        payload: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::DEAD));
        item.insert(keys::SK.into(), s(keys::dead_letter(at, kind, payload)));
        item.insert("kind".into(), s(kind));
        item.insert("payload".into(), s(payload));
        item.insert("reason".into(), s(reason));
        self.expire(&mut item, Retained::DeadLetters, at);
        self.put(item)
    }
}
