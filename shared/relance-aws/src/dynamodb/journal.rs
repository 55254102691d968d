//! The journal port on DynamoDB: journal records, the outbox (recorded sends, actions), dead
//! letters.
//!
//! # A batch's journal parts
//! A handler's batch (a store that flushes once per batch) writes the records of the
//! transitions it applies, and of the engagements it records, in a few items, its *parts*
//! (`journal#{scenario}#{h}` / `part#{batch}.{n}`, one or more per scenario, packed), instead
//! of one item per transition: DynamoDB bills a write per started KB of each item, and a
//! transition's records (about 500 bytes) took a whole unit. A part is written once, at the
//! flush, after every other effect of its transitions, and never changes afterwards. Each
//! transition's pending effects name its part, so the part is also the proof that the
//! transition was applied, as the transition's own journal item is: the check reads the part
//! and looks for the transition in it (a unit that failed after its commit point left its
//! transition out of a part the rest of its batch wrote). A transition re-applied after a
//! crash gets its own journal item, as before: its part's key belongs to a batch that may
//! still be writing it, and a second writer of a part could drop the records the first put
//! there. A reader merges parts, transition items and single records by sort key (a
//! transition found in both is one).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use relance_core::engine::Send;
use relance_core::journal::Record;
use relance_core::policy::Retained;
use relance_core::ports::JournalStore;
use relance_core::scenario::Action;
use serde::{Deserialize, Serialize};

use super::DynamoStore;
use super::item::{BatchName, Item, document_text, from_json, get_s, packed_binary, s, to_json};
use super::layouts::Layout;
use crate::error::StoreError;
use crate::keys;

/// How many bytes of records (JSON, before packing) a part takes before the batch starts
/// another: about twenty transitions of a drip, packed in about 1.4 KB (unit test), so that
/// reading a part (the applied check) costs one read unit and writing it two write units.
const PART_RECORDS_MAX: usize = 12 * 1024;

/// A part's records of one transition (or of one recorded engagement): under the sort key
/// its own item would have, so a transition in a part and in its own item is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PartEntry {
    sk: String,
    contact: String,
    records: Vec<Record>,
}

impl PartEntry {
    pub(super) fn new(sk: String, contact: &str, records: Vec<Record>) -> PartEntry {
        PartEntry {
            sk,
            contact: contact.to_string(),
            records,
        }
    }

    /// The records, when the entry goes in an item of its own.
    pub(super) fn into_records(self) -> Vec<Record> {
        self.records
    }
}

/// One part of the current batch, waiting for the flush.
#[derive(Debug, Clone)]
struct Part {
    scenario: String,
    id: String,
    bytes: usize,
    entries: Vec<PartEntry>,
}

/// The journal parts of the current batch, and the transitions found in parts already
/// written (they never change, so what was found stays true). A clone starts with no batch:
/// two copies of one batch would write the same part with different entries.
#[derive(Debug, Default)]
pub(super) struct JournalParts {
    /// The current batch's name (random), once it has a part.
    batch: BatchName,
    parts: Vec<Part>,
    /// Parts read (by key): the sort keys of the transitions each holds.
    written: HashMap<(String, String), HashSet<String>>,
}

impl Clone for JournalParts {
    fn clone(&self) -> JournalParts {
        JournalParts {
            batch: BatchName::default(),
            parts: Vec::new(),
            written: self.written.clone(),
        }
    }
}

/// How many parts' contents [`JournalParts::written`] keeps before it starts over.
const PARTS_REMEMBERED: usize = 256;

impl JournalParts {
    /// The part of the current batch that takes `scenario`'s next records.
    fn part_for(&mut self, scenario: &str) -> Result<String, StoreError> {
        if let Some(part) = self
            .parts
            .iter()
            .rev()
            .find(|p| p.scenario == scenario && p.bytes < PART_RECORDS_MAX)
        {
            return Ok(part.id.clone());
        }
        // Part names are in every pending effects: short (`BatchName`).
        let id = self.batch.part_id(self.parts.len())?;
        self.parts.push(Part {
            scenario: scenario.to_string(),
            id: id.clone(),
            bytes: 0,
            entries: Vec::new(),
        });
        Ok(id)
    }

    /// Adds `entry` to the current batch's part `id`; false when there is no such part (it
    /// belongs to another batch).
    fn add(&mut self, id: &str, entry: PartEntry) -> Result<(), PartEntry> {
        match self.parts.iter_mut().find(|p| p.id == id) {
            Some(part) => {
                part.bytes += entry.sk.len()
                    + entry.contact.len()
                    + entry
                        .records
                        .iter()
                        .map(|r| to_json(r).len())
                        .sum::<usize>();
                part.entries.push(entry);
                Ok(())
            }
            None => Err(entry),
        }
    }

    /// Whether the current batch's part `id` holds the transition `sk` (applied, waiting for
    /// the flush).
    fn waiting_holds(&self, id: &str, sk: &str) -> bool {
        self.parts
            .iter()
            .any(|p| p.id == id && p.entries.iter().any(|e| e.sk == sk))
    }

    /// The entries of `scenario` waiting for the flush.
    fn waiting(&self, scenario: &str) -> impl Iterator<Item = &PartEntry> {
        self.parts
            .iter()
            .filter(move |p| p.scenario == scenario)
            .flat_map(|p| p.entries.iter())
    }

    /// The current batch's parts as items (the batch ends: the next part starts another).
    fn take_items(&mut self) -> Vec<Item> {
        self.batch.end();
        std::mem::take(&mut self.parts)
            .into_iter()
            .filter(|p| !p.entries.is_empty())
            .map(|p| {
                Item::from([
                    (keys::PK.to_string(), s(keys::journal(&p.scenario, &p.id))),
                    (keys::SK.to_string(), s(keys::journal_part(&p.id))),
                    ("entries".to_string(), packed_binary(&p.entries)),
                ])
            })
            .collect()
    }
}

/// The entries of a part item.
fn part_entries(item: &Item) -> Result<Vec<PartEntry>, StoreError> {
    match document_text(item, "entries") {
        Some(text) => from_json("journal part", &text?),
        None => Ok(Vec::new()),
    }
}

impl DynamoStore {
    /// The part that takes the records of a transition of `scenario` committed now, when
    /// this store writes them by batch (see the module docs): in a batch, once the layout is
    /// in force (`enrollments::ENTRY_LAYOUT_DELAY`: an earlier build reads no part, and would
    /// take a transition proven by one for not applied).
    pub(super) fn journal_part_for(
        &mut self,
        scenario: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        if !self.defers() || !self.layout_open(Layout::JournalParts, now)? {
            return Ok(None);
        }
        self.journal_parts.part_for(scenario).map(Some)
    }

    /// Puts `entry` in the current batch's part `part`; gives it back when there is none
    /// (its records then go in an item of their own).
    pub(super) fn add_to_part(
        &mut self,
        part: Option<&str>,
        entry: PartEntry,
    ) -> Option<PartEntry> {
        match part {
            Some(id) => self.journal_parts.add(id, entry).err(),
            None => Some(entry),
        }
    }

    /// Whether the transition `sk` of `scenario`, whose pending effects name the part `part`,
    /// is recorded there: waiting in this batch, or in the part as written.
    pub(super) fn part_holds(
        &mut self,
        scenario: &str,
        part: &str,
        sk: &str,
    ) -> Result<bool, StoreError> {
        if self.journal_parts.waiting_holds(part, sk) {
            return Ok(true);
        }
        let key = (keys::journal(scenario, part), keys::journal_part(part));
        if let Some(known) = self.journal_parts.written.get(&key) {
            return Ok(known.contains(sk));
        }
        let Some(item) = self.get_uncached(&key.0, &key.1)? else {
            // Not written (yet): never remembered, it may be written later.
            return Ok(false);
        };
        let held: HashSet<String> = part_entries(&item)?.into_iter().map(|e| e.sk).collect();
        let holds = held.contains(sk);
        if self.journal_parts.written.len() >= PARTS_REMEMBERED {
            self.journal_parts.written.clear();
        }
        self.journal_parts.written.insert(key, held);
        Ok(holds)
    }

    /// The current batch's journal parts, to be written at the flush.
    pub(super) fn take_journal_parts(&mut self) -> Vec<Item> {
        self.journal_parts.take_items()
    }
}

impl JournalStore for DynamoStore {
    type Error = StoreError;

    fn journal(&mut self, scenario: &str, record: &Record) -> Result<(), StoreError> {
        let json = to_json(record);
        let sk = keys::journal_record(record.at, record.enrollment.as_deref(), &json);
        if self.defers() {
            // In a batch, in its part for the scenario (or, while an earlier build may run,
            // in an item of its own at the flush, with the transitions' journal items);
            // `records` reads the waiting ones too. The layout's gate reads the real clock
            // (`layouts`); the instant given counts only on simulated time.
            let part = self.journal_part_for(scenario, self.now.unwrap_or(record.at))?;
            let entry = PartEntry::new(sk.clone(), &record.contact, vec![record.clone()]);
            if self.add_to_part(part.as_deref(), entry).is_none() {
                return Ok(());
            }
        }
        let mut item = Item::new();
        // An enrollment's records share its shard; a record of no enrollment goes by contact.
        let spread = record.enrollment.as_deref().unwrap_or(&record.contact);
        item.insert(keys::PK.into(), s(keys::journal(scenario, spread)));
        item.insert(keys::SK.into(), s(sk));
        item.insert("contact".into(), s(&record.contact));
        item.insert("record".into(), s(json));
        if self.defers() {
            // An unconditional put of a deterministic key, written at the flush.
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
        // Read your own writes: a batch's transition items and parts wait for `flush` (see
        // `set_auto_flush`), and a read within the batch must see them too (the winner check
        // run by a tick just after a launch due at the same instant counts that launch's
        // sends, as every other store does).
        items.extend(
            self.deferred_markers
                .iter()
                .filter(|m| get_s(m, keys::PK).is_some_and(|pk| partitions.iter().any(|p| p == pk)))
                .cloned(),
        );
        let mut entries: Vec<PartEntry> = Vec::new();
        for item in &items {
            if item.contains_key("entries") {
                entries.extend(part_entries(item)?);
                continue;
            }
            let records = match get_s(item, "records") {
                Some(list) => from_json::<Vec<Record>>("journal records", list)?,
                None => vec![from_json::<Record>(
                    "journal record",
                    get_s(item, "record").unwrap_or("null"),
                )?],
            };
            entries.push(PartEntry::new(
                get_s(item, keys::SK).unwrap_or("").to_string(),
                get_s(item, "contact").unwrap_or(""),
                records,
            ));
        }
        entries.extend(self.journal_parts.waiting(scenario).cloned());
        // A sort key names one transition or record (its instant, enrollment and version or
        // content hash): found twice (an earlier build's partition and a shard, a part and
        // the item of its re-application, a written item and the batch's waiting copy), it
        // is one. The sort is stable: the first found stays.
        entries.sort_by(|a, b| a.sk.cmp(&b.sk));
        entries.dedup_by(|a, b| a.sk == b.sk);
        Ok(entries
            .into_iter()
            .filter(|e| contact.is_none_or(|c| e.contact == c))
            .flat_map(PartEntry::into_records)
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn record(contact: &str) -> Record {
        serde_json::from_value(serde_json::json!({
            "at": "2026-12-01T09:00:00Z", "contact": contact, "kind": "entered"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn entry(sk: &str) -> PartEntry {
        PartEntry::new(sk.into(), "ana", vec![record("ana")])
    }

    #[test]
    fn a_batch_fills_one_part_per_scenario_until_it_is_full() {
        let mut parts = JournalParts::default();
        let welcome = parts.part_for("welcome").unwrap_or_else(|e| panic!("{e}"));
        let other = parts.part_for("other").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(welcome, other);
        // One batch: one name, numbered parts.
        assert_eq!(
            welcome.split_once('.').map(|(b, _)| b),
            other.split_once('.').map(|(b, _)| b)
        );
        assert!(parts.add(&welcome, entry("t1")).is_ok());
        assert_eq!(parts.part_for("welcome").ok(), Some(welcome.clone()));
        // Full: the next transition goes to another part.
        while parts.parts[0].bytes < PART_RECORDS_MAX {
            assert!(parts.add(&welcome, entry("t")).is_ok());
        }
        let next = parts.part_for("welcome").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(next, welcome);
        assert!(parts.waiting_holds(&welcome, "t1"));
        assert!(!parts.waiting_holds(&next, "t1"));
        // A part of another batch is not here: the entry comes back.
        assert!(parts.add("elsewhere.0", entry("t2")).is_err());
        assert_eq!(parts.waiting("welcome").filter(|e| e.sk == "t1").count(), 1);
        // The flush takes the parts with entries (empty ones are not written) and ends the batch.
        let items = parts.take_items();
        assert_eq!(items.len(), 1);
        assert_eq!(
            get_s(&items[0], keys::SK),
            Some(keys::journal_part(&welcome).as_str())
        );
        assert_eq!(
            get_s(&items[0], keys::PK),
            Some(keys::journal("welcome", &welcome).as_str())
        );
        let back = part_entries(&items[0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back[0].sk, "t1");
        assert_eq!(back[0].records, vec![record("ana")]);
        let after = parts.part_for("welcome").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            after.split_once('.').map(|(b, _)| b),
            welcome.split_once('.').map(|(b, _)| b)
        );
    }

    #[test]
    fn a_full_part_packs_into_one_read_unit() {
        // Records as a drip writes them: each contact's, with its own enrollment, steps,
        // channels, message ids and instants.
        let mut parts = JournalParts::default();
        let id = parts.part_for("welcome").unwrap_or_else(|e| panic!("{e}"));
        let mut raw = 0;
        let mut i = 0u64;
        while parts.parts[0].bytes < PART_RECORDS_MAX {
            let contact = format!("contact-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let enrollment = format!("welcome:{contact}:1");
            let at = format!(
                "2026-12-01T09:{:02}:{:02}.{:06}Z",
                i / 60 % 60,
                i % 60,
                i * 7919 % 1_000_000
            );
            let message = format!("{:016x}", i.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let records: Vec<Record> = [
                serde_json::json!({"at": at, "contact": contact, "kind": "entered",
                    "enrollment": enrollment}),
                serde_json::json!({"at": at, "contact": contact, "kind": "sent",
                    "step": "first-email", "channel": "email", "message": message,
                    "enrollment": enrollment}),
                serde_json::json!({"at": at, "contact": contact, "kind": "waiting",
                    "step": "wait-two-days", "enrollment": enrollment}),
            ]
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
            .collect();
            raw += to_json(&records).len();
            let sk = format!("{at}#{enrollment}#1");
            assert!(
                parts
                    .add(&id, PartEntry::new(sk, &contact, records))
                    .is_ok()
            );
            i += 1;
        }
        let items = parts.take_items();
        let Some(AttributeValue::B(packed)) = items[0].get("entries") else {
            panic!("entries are packed in a binary attribute");
        };
        // A strongly consistent read unit is 4 KB: the applied check reads a part whole.
        let size = packed.as_ref().len();
        assert!(
            size <= 4096,
            "{i} transitions, {raw} bytes of records packed in {size}"
        );
    }
}
