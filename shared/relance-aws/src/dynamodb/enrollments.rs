//! The enrollment port on DynamoDB: enrollments written conditionally on their version (with
//! their pending effects at the commit point), entry marks claimed optimistically.
//!
//! A contact's latest enrollment in a scenario lives in its entry item (`contact#{id}`,
//! `entry#{scenario}`), beside the entry mark: the entry and the enrollment's first write are
//! one conditional put (on the entry count, so two entries cannot both succeed), each later
//! transition a put conditional on the enrollment's version and id, and a contact's partition
//! (read whole once per unit of work) brings its enrollments with its profile. An entry that
//! takes the place of an earlier enrollment first copies that one to its own item
//! (`enrollment#{id}`), where enrollments of earlier builds also are: an enrollment is looked
//! for in its entry item, then there. Until `ENTRY_LAYOUT_DELAY` after this build first
//! enters a contact on a table it did not create, and whenever the tick's heartbeat has been
//! silent too long (see `layouts`), entries keep their enrollment in its own item, as earlier
//! builds (which may still run during a deployment) did.

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Enrollment;
use relance_core::ports::{ConversionWatch, EnrollmentStore, EntryMark};
use serde::Deserialize;

use super::item::{
    Item, document_text, dynamo, from_json, get_n, get_s, is_conditional, n, packed_json, parse_ts,
    s, to_json,
};
use super::layouts::Layout;
use super::{DynamoStore, Pending};
use crate::error::StoreError;
use crate::keys;

impl EnrollmentStore for DynamoStore {
    type Error = StoreError;

    fn running_enrollment(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let Some(entry) = self.get(&keys::contact(contact), &keys::entry(scenario))? else {
            return Ok(None);
        };
        let Some(id) = get_s(&entry, "running").map(str::to_string) else {
            return Ok(None);
        };
        // A claim whose enrollment never got written, or that has ended, is not running.
        Ok(self.read_enrollment(&id)?.filter(|(e, _)| e.is_running()))
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<(Enrollment, u32)>, StoreError> {
        self.read_enrollment(id)
    }

    fn save_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
    ) -> Result<(), StoreError> {
        self.write_enrollment(expected, scenario_version, e, None)
    }

    fn entry_mark(
        &mut self,
        scenario: &str,
        contact: &str,
    ) -> Result<Option<EntryMark>, StoreError> {
        let item = self.get(&keys::contact(contact), &keys::entry(scenario))?;
        let mark = match item.as_ref().and_then(|i| {
            get_s(i, "last_entered_at").map(|at| (at, get_n(i, "entries").unwrap_or(0)))
        }) {
            Some((at, entries)) => Some(EntryMark {
                last_entered_at: parse_ts(at)?,
                entries: entries as u32,
            }),
            None => None,
        };
        self.entries_seen.insert(
            (scenario.to_string(), contact.to_string()),
            mark.map_or(0, |m| m.entries),
        );
        Ok(mark)
    }

    /// Recorded with the enrollment's first write, one put (see the module docs): kept until
    /// then, or written alone before the unit appends to the contact's consent log, or at the
    /// end of the unit of work if no enrollment follows it. Written at once while the layout's
    /// delay runs (`ENTRY_LAYOUT_DELAY`), outside a unit of work, and past the contact's
    /// `MAX_ENTRY_ENROLLMENTS`.
    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let seen = self
            .entries_seen
            .get(&(scenario.to_string(), contact.to_string()))
            .copied()
            .unwrap_or(0);
        let id = keys::enrollment_id(scenario, contact, u64::from(seen) + 1);
        let fold = self.unit_reads.active()
            && self.entry_layout_open(at)?
            && self.room_in_entry_items(contact, scenario)?;
        self.entries_marked.insert(
            id.clone(),
            MarkedEntry {
                scenario: scenario.to_string(),
                contact: contact.to_string(),
                at,
                seen,
                fold,
                written: false,
            },
        );
        if !fold {
            self.write_mark(&id)?;
        }
        Ok(())
    }

    fn watch_conversion(&mut self, watch: &ConversionWatch) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(&watch.contact)));
        item.insert(
            keys::SK.into(),
            s(keys::conversion_watch(&watch.enrollment)),
        );
        item.insert("watch".into(), s(to_json(watch)));
        self.put(item)
    }

    fn conversion_watches(&mut self, contact: &str) -> Result<Vec<ConversionWatch>, StoreError> {
        let table = self.config.state_table.clone();
        let mut out = Vec::new();
        for item in self.query(&table, &keys::contact(contact), keys::WATCH_PREFIX)? {
            let text = get_s(&item, "watch").unwrap_or_default();
            out.push(from_json::<ConversionWatch>("conversion watch", text)?);
        }
        out.sort_by(|a, b| (a.entered_at, &a.enrollment).cmp(&(b.entered_at, &b.enrollment)));
        Ok(out)
    }

    fn end_conversion_watch(&mut self, watch: &ConversionWatch) -> Result<(), StoreError> {
        let table = self.config.state_table.clone();
        self.delete(
            &table,
            &keys::contact(&watch.contact),
            &keys::conversion_watch(&watch.enrollment),
        )
    }
}

/// How long after this build first enters a contact on a table (unless it created the table)
/// entries start keeping their enrollment in the entry item: the time for a deployment to
/// replace every function of an earlier build, which would not find an enrollment there (it
/// would take a running contact for not running, and drop its timers). Until then entries
/// keep their enrollment in its own item, as earlier builds did; both layouts are always read.
/// The same delay, counted from this build's first batch, holds for a batch's journal parts
/// (see `journal`), which earlier builds do not read either; a heartbeat back after a silence
/// starts it again (see `layouts`).
pub const ENTRY_LAYOUT_DELAY: TimeDelta = TimeDelta::hours(1);

/// The most enrollments a contact's entry items hold (a re-entry's own scenario not
/// counted; the next entries keep theirs in its own item). An ended enrollment stays in its
/// entry item until the contact enters that scenario again, and the contact's partition is
/// read whole at each step: each one held there adds about 750 bytes to every such read (a
/// read unit per 4 KB), where the write it saves is paid once. Three bound that to about
/// 2.3 KB, whatever the number of scenarios a contact goes through (BENCHMARKS.md, "The latest
/// enrollment in its entry item").
pub const MAX_ENTRY_ENROLLMENTS: usize = 3;

/// An entry recorded by `mark_entry`, waiting for the first write of its enrollment.
#[derive(Debug, Clone)]
pub(super) struct MarkedEntry {
    scenario: String,
    contact: String,
    at: DateTime<Utc>,
    /// The entry count the unit read (the put's condition).
    seen: u32,
    /// Whether its enrollment goes in the entry item (else in its own item, as earlier
    /// builds did: during the layout's delay, or past `MAX_ENTRY_ENROLLMENTS`).
    fold: bool,
    /// Already written alone (before a consent append, or while the layout's delay runs): the
    /// enrollment's first write then only fills the entry item.
    written: bool,
}

/// What an enrollment's put in its entry item is conditional on.
enum Condition {
    /// Its first write, with its entry: the entry count the unit read.
    Entry(MarkedEntry),
    /// Its first write, its entry written alone before in this unit: that entry.
    Marked,
    /// A later transition: the enrollment's version (and id).
    Version(u64),
}

/// The attributes of an enrollment, in its entry item and in its own item alike.
const ENROLLMENT_ATTRIBUTES: [&str; 4] = ["doc", "version", "scenario_version", "pending"];

/// The id field of an enrollment document (the rest is not parsed).
#[derive(Deserialize)]
struct DocId {
    id: String,
}

/// Whether an entry item holds the enrollment `id`: its document's id, and the entry's
/// `running` (the enrollment of the latest entry) both name it. Earlier builds' entry items
/// have no `doc`; one of their entries over ours moves `running` and leaves the document of
/// the enrollment before, which then is not taken for the new one.
fn holds(entry: &Item, id: &str) -> bool {
    get_s(entry, "running") == Some(id)
        && get_s(entry, "doc")
            .and_then(|doc| serde_json::from_str::<DocId>(doc).ok())
            .is_some_and(|doc| doc.id == id)
}

/// Sets an enrollment's attributes on `item` (its entry item or its own).
fn set_enrollment(
    item: &mut Item,
    e: &Enrollment,
    scenario_version: u32,
    pending: Option<&Pending>,
) {
    item.insert("doc".into(), s(to_json(e)));
    item.insert("version".into(), n(e.version));
    item.insert("scenario_version".into(), n(scenario_version));
    match pending {
        Some(p) => item.insert("pending".into(), packed_json(p)),
        None => item.remove("pending"),
    };
}

/// Another entry of `contact` in `scenario` came first.
fn entry_conflict(contact: &str, scenario: &str) -> StoreError {
    StoreError::Conflict(format!("entry of {contact} in {scenario}"))
}

impl DynamoStore {
    /// Whether the contact's entry items have room for one more enrollment (see
    /// [`MAX_ENTRY_ENROLLMENTS`]; `scenario`'s own entry item, which an entry reuses, not
    /// counted): read from the contact's partition, which the unit has read whole.
    fn room_in_entry_items(&self, contact: &str, scenario: &str) -> Result<bool, StoreError> {
        let own = keys::entry(scenario);
        let held = self
            .query(
                &self.config.state_table,
                &keys::contact(contact),
                keys::ENTRY_PREFIX,
            )?
            .iter()
            .filter(|i| get_s(i, keys::SK) != Some(own.as_str()) && i.contains_key("doc"))
            .count();
        Ok(held < MAX_ENTRY_ENROLLMENTS)
    }

    /// Whether entries keep their enrollment in the entry item at `now` (see
    /// [`DynamoStore::layout_open`]).
    pub(super) fn entry_layout_open(&self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.layout_open(Layout::EntryEnrollments, now)
    }

    /// Writes the entries marked in this unit and not yet written, alone (entries whose
    /// enrollment was not written), at the unit's end: every mark then leaves the store,
    /// written or not (a failure here fails the unit: none is left for the next one).
    pub(super) fn write_marked_entries(&mut self) -> Result<(), StoreError> {
        let ids: Vec<String> = self.entries_marked.keys().cloned().collect();
        let written = ids.iter().try_for_each(|id| self.write_mark(id));
        self.entries_marked.clear();
        written
    }

    /// Writes the entry marked for enrollment `id` alone, unless it is already written. An
    /// enrollment the entry item held moves to its own item first, and leaves the entry item
    /// (which then holds none until the new enrollment's first write).
    fn write_mark(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(mark) = self.entries_marked.get(id).filter(|m| !m.written).cloned() else {
            return Ok(());
        };
        let pk = keys::contact(&mark.contact);
        let sk = keys::entry(&mark.scenario);
        let update = self
            .client
            .update_item()
            .table_name(&self.config.state_table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(&sk))
            .update_expression(
                "SET last_entered_at = :at, entries = :next, running = :id \
                 REMOVE doc, version, scenario_version, pending",
            )
            .expression_attribute_values(":at", s(keys::text(mark.at)))
            .expression_attribute_values(":next", n(mark.seen + 1))
            .expression_attribute_values(":seen", n(mark.seen))
            .expression_attribute_values(":id", s(id));
        // The enrollment the entry item holds moves to its own item first; the update then
        // removes it only as it was read (no later version of it is lost).
        let update = match self.get(&pk, &sk)? {
            Some(entry) if entry.contains_key("doc") => {
                if let Some(previous) = get_s(&entry, "running")
                    && holds(&entry, previous)
                {
                    self.archive_enrollment(previous, &entry)?;
                }
                let version = entry.get("version").cloned().unwrap_or(n(0));
                update
                    .condition_expression(
                        "(attribute_not_exists(entries) OR entries = :seen) \
                         AND (attribute_not_exists(doc) OR version = :held)",
                    )
                    .expression_attribute_values(":held", version)
            }
            _ => update.condition_expression("attribute_not_exists(entries) OR entries = :seen"),
        };
        let r = self.bridge.block(update.send());
        self.unit_reads.forget(&pk, &sk);
        match r {
            Ok(_) => {
                if let Some(m) = self.entries_marked.get_mut(id) {
                    m.written = true;
                }
                Ok(())
            }
            Err(e) if is_conditional(&e) => {
                self.entries_marked.remove(id);
                Err(entry_conflict(&mark.contact, &mark.scenario))
            }
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
    }

    /// Writes, before a consent append for `contact`, the entries of that contact marked in
    /// this unit: a concurrent entry that wins makes this unit fail here, before it appends to
    /// the log (as when `mark_entry` wrote at once), not at its enrollment's put, after.
    pub(super) fn write_marked_entries_of(&mut self, contact: &str) -> Result<(), StoreError> {
        let ids: Vec<String> = self
            .entries_marked
            .iter()
            .filter(|(_, mark)| mark.contact == contact && !mark.written)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().try_for_each(|id| self.write_mark(id))
    }

    pub(super) fn write_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
        pending: Option<&Pending>,
    ) -> Result<(), StoreError> {
        let entry_pk = keys::contact(&e.contact);
        let entry_sk = keys::entry(&e.scenario);
        let marked = match expected {
            None => self.entries_marked.remove(&e.id),
            Some(_) => None,
        };
        let current = self.get(&entry_pk, &entry_sk)?;
        // Where the enrollment goes: with its entry (just marked, or already there), or in its
        // own item (an earlier build's, one a later entry replaced, or every enrollment while
        // the layout's delay runs).
        let condition = match (&marked, expected) {
            (Some(mark), _) if mark.fold && !mark.written => Condition::Entry(mark.clone()),
            // Its entry was written alone in this unit: the entry item, still naming it (else
            // another entry came since, and this one must not go on).
            (Some(mark), _) if mark.fold => {
                if current
                    .as_ref()
                    .is_some_and(|c| get_s(c, "running") == Some(e.id.as_str()))
                {
                    Condition::Marked
                } else {
                    return Err(entry_conflict(&e.contact, &e.scenario));
                }
            }
            (None, Some(v)) if current.as_ref().is_some_and(|c| holds(c, &e.id)) => {
                Condition::Version(v)
            }
            (None, None) if current.as_ref().is_some_and(|c| holds(c, &e.id)) => {
                return Err(StoreError::Conflict(format!("enrollment {}", e.id)));
            }
            _ => return self.write_own_enrollment(expected, scenario_version, e, pending),
        };
        let mut item = current.clone().unwrap_or_default();
        item.insert(keys::PK.into(), s(&entry_pk));
        item.insert(keys::SK.into(), s(&entry_sk));
        set_enrollment(&mut item, e, scenario_version, pending);
        let (condition, values) = match condition {
            Condition::Entry(mark) => {
                // The enrollment this entry replaces keeps its state in its own item first.
                if let Some(previous) = &current
                    && let Some(previous_id) = get_s(previous, "running")
                    && holds(previous, previous_id)
                {
                    self.archive_enrollment(previous_id, previous)?;
                }
                item.insert("last_entered_at".into(), s(keys::text(mark.at)));
                item.insert("entries".into(), n(mark.seen + 1));
                item.insert("running".into(), s(&e.id));
                (
                    "attribute_not_exists(entries) OR entries = :seen",
                    vec![(":seen", n(mark.seen))],
                )
            }
            // Its entry was written alone in this unit (the item holds no enrollment).
            Condition::Marked => (
                "running = :id AND attribute_not_exists(doc)",
                vec![(":id", s(&e.id))],
            ),
            Condition::Version(v) => (
                "version = :v AND running = :id",
                vec![(":v", n(v)), (":id", s(&e.id))],
            ),
        };
        if self.put_if(item, condition, values)? {
            Ok(())
        } else if marked.is_some() {
            Err(entry_conflict(&e.contact, &e.scenario))
        } else {
            Err(StoreError::Conflict(format!("enrollment {}", e.id)))
        }
    }

    /// Copies the enrollment an entry item holds to its own item, before a later entry takes
    /// its place: an unconditional put of what the unit read (an ended enrollment is not
    /// written again; a retry writes the same).
    fn archive_enrollment(&mut self, id: &str, entry: &Item) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::enrollment(id)));
        item.insert(keys::SK.into(), s(keys::ENROLLMENT_STATE));
        for name in ENROLLMENT_ATTRIBUTES {
            if let Some(value) = entry.get(name) {
                item.insert(name.into(), value.clone());
            }
        }
        let version = get_n(entry, "version").unwrap_or(0);
        // Never over a later state of the same enrollment (a copy made before, then written
        // again by a retry with an older read): refused, the later copy stays.
        self.put_if(
            item,
            "attribute_not_exists(pk) OR version <= :v",
            vec![(":v", n(version))],
        )
        .map(|_| ())
    }

    /// An enrollment in its own item (`enrollment#{id}`), as earlier builds kept them all.
    fn write_own_enrollment(
        &mut self,
        expected: Option<u64>,
        scenario_version: u32,
        e: &Enrollment,
        pending: Option<&Pending>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::enrollment(&e.id)));
        item.insert(keys::SK.into(), s(keys::ENROLLMENT_STATE));
        set_enrollment(&mut item, e, scenario_version, pending);
        let written = match expected {
            None => self.put_new(item)?,
            Some(v) => self.put_if(item, "version = :v", vec![(":v", n(v))])?,
        };
        if written {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("enrollment {}", e.id)))
        }
    }

    /// The item holding enrollment `id`: its entry item while it is the contact's latest in
    /// the scenario, else its own.
    pub(super) fn enrollment_item(&self, id: &str) -> Result<Option<Item>, StoreError> {
        if let Some((scenario, contact, _)) = keys::enrollment_parts(id)
            && let Some(entry) = self.get(&keys::contact(contact), &keys::entry(scenario))?
            && holds(&entry, id)
        {
            return Ok(Some(entry));
        }
        self.get(&keys::enrollment(id), keys::ENROLLMENT_STATE)
    }

    /// Whether the transition `pending` of `enrollment` is applied: its records are in the
    /// batch part it names (see `journal`), or in its own journal item (in the enrollment's
    /// shard, or, written by an earlier build, in the unsplit partition, read only when the
    /// shard has none), either waiting for this store's flush or written.
    fn transition_applied(
        &mut self,
        pending: &Pending,
        enrollment: &Enrollment,
    ) -> Result<bool, StoreError> {
        let sk = Self::journal_sk(pending, enrollment);
        if let Some(part) = &pending.part
            && self.part_holds(&pending.scenario, part, &sk)?
        {
            return Ok(true);
        }
        let shard = keys::journal(&pending.scenario, &enrollment.id);
        if self.deferred_markers.iter().any(|m| {
            get_s(m, keys::PK) == Some(shard.as_str()) && get_s(m, keys::SK) == Some(sk.as_str())
        }) {
            return Ok(true);
        }
        if self.get(&shard, &sk)?.is_some() {
            return Ok(true);
        }
        // A transition with a part never had an item in the unsplit partition.
        Ok(pending.part.is_none()
            && self
                .get(&keys::legacy_journal(&pending.scenario), &sk)?
                .is_some())
    }

    pub(super) fn read_enrollment(
        &mut self,
        id: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let Some(item) = self.enrollment_item(id)? else {
            return Ok(None);
        };
        let enrollment: Enrollment =
            from_json("enrollment", get_s(&item, "doc").unwrap_or("null"))?;
        let version = get_n(&item, "scenario_version").unwrap_or(1) as u32;
        if let Some(p) = document_text(&item, "pending") {
            // A crash left effects unapplied: apply them now (every one is idempotent).
            let pending: Pending = p
                .and_then(|text| from_json("pending effects", &text))
                .map_err(|e| match e {
                    StoreError::Corrupt { what, why } => StoreError::Corrupt {
                        what,
                        why: format!("enrollment {id}: {why}"),
                    },
                    other => other,
                })?;
            if !self.transition_applied(&pending, &enrollment)? {
                self.apply_pending(&pending, &enrollment, true)?;
            }
        }
        Ok(Some((enrollment, version)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(running: &str, doc_id: Option<&str>) -> Item {
        let mut item = Item::from([("running".to_string(), s(running))]);
        if let Some(id) = doc_id {
            item.insert("doc".into(), s(format!(r#"{{"id":"{id}","version":3}}"#)));
        }
        item
    }

    #[test]
    fn an_entry_item_holds_the_enrollment_its_running_and_its_document_both_name() {
        assert!(holds(&entry("s:a:2", Some("s:a:2")), "s:a:2"));
        // An earlier build's mark over ours moved `running`: the document is the one before.
        assert!(!holds(&entry("s:a:2", Some("s:a:1")), "s:a:2"));
        assert!(!holds(&entry("s:a:2", Some("s:a:1")), "s:a:1"));
        // An earlier build's bare mark, or a document that does not read.
        assert!(!holds(&entry("s:a:2", None), "s:a:2"));
        let mut bad = entry("s:a:2", None);
        bad.insert("doc".into(), s("not json"));
        assert!(!holds(&bad, "s:a:2"));
    }
}
