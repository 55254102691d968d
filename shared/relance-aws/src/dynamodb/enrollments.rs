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
//! for in its entry item, then there.

use chrono::{DateTime, Utc};
use relance_core::engine::Enrollment;
use relance_core::ports::{ConversionWatch, EnrollmentStore, EntryMark};

use super::item::{
    Item, document_text, dynamo, from_json, get_n, get_s, is_conditional, n, packed_json, parse_ts,
    s, to_json,
};
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
    /// then, or written alone at the end of the unit of work if no enrollment follows it.
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
        self.entries_marked.insert(
            keys::enrollment_id(scenario, contact, u64::from(seen) + 1),
            MarkedEntry {
                scenario: scenario.to_string(),
                contact: contact.to_string(),
                at,
                seen,
            },
        );
        // Outside a unit of work nothing would write it later.
        if !self.unit_reads.active() {
            self.write_marked_entries()?;
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

/// An entry recorded by `mark_entry`, waiting for the first write of its enrollment.
#[derive(Debug, Clone)]
pub(super) struct MarkedEntry {
    scenario: String,
    contact: String,
    at: DateTime<Utc>,
    /// The entry count the unit read (the put's condition).
    seen: u32,
}

/// The attributes of an enrollment, in its entry item and in its own item alike.
const ENROLLMENT_ATTRIBUTES: [&str; 4] = ["doc", "version", "scenario_version", "pending"];

/// Whether an entry item holds the enrollment `id` (the entry's `running` names the enrollment
/// of the latest entry; earlier builds' entry items have no `doc`).
fn holds(entry: &Item, id: &str) -> bool {
    get_s(entry, "running") == Some(id) && entry.contains_key("doc")
}

impl DynamoStore {
    /// Writes the entry marks no enrollment took with it in this unit of work (an entry whose
    /// first transition was not written), as `mark_entry` did before it waited.
    pub(super) fn write_marked_entries(&mut self) -> Result<(), StoreError> {
        for (id, mark) in std::mem::take(&mut self.entries_marked) {
            let r = self.bridge.block(
                self.client
                    .update_item()
                    .table_name(&self.config.state_table)
                    .key(keys::PK, s(keys::contact(&mark.contact)))
                    .key(keys::SK, s(keys::entry(&mark.scenario)))
                    .update_expression("SET last_entered_at = :at, entries = :next, running = :id")
                    .condition_expression("attribute_not_exists(entries) OR entries = :seen")
                    .expression_attribute_values(":at", s(keys::text(mark.at)))
                    .expression_attribute_values(":next", n(mark.seen + 1))
                    .expression_attribute_values(":seen", n(mark.seen))
                    .expression_attribute_values(":id", s(id))
                    .send(),
            );
            self.unit_reads
                .forget(&keys::contact(&mark.contact), &keys::entry(&mark.scenario));
            match r {
                Ok(_) => {}
                Err(e) if is_conditional(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "entry of {} in {}",
                        mark.contact, mark.scenario
                    )));
                }
                Err(e) => return Err(dynamo("UpdateItem")(e)),
            }
        }
        Ok(())
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
        // Where the enrollment goes: with its entry (just marked, or already there), or in its
        // own item (an earlier build's, or one a later entry replaced).
        let entry = match (&marked, expected) {
            (Some(_), _) => self.get(&entry_pk, &entry_sk)?,
            (None, Some(_)) => self
                .get(&entry_pk, &entry_sk)?
                .filter(|item| holds(item, &e.id)),
            (None, None) => None,
        };
        // The put's condition: the entry count it read (a first write, with its entry), or
        // the version and id of the enrollment the entry item holds.
        let condition = match (&marked, expected, &entry) {
            (Some(mark), _, _) => Ok(mark.clone()),
            (None, Some(v), Some(_)) => Err(v),
            _ => return self.write_own_enrollment(expected, scenario_version, e, pending),
        };
        let mut item = entry.clone().unwrap_or_default();
        item.insert(keys::PK.into(), s(&entry_pk));
        item.insert(keys::SK.into(), s(&entry_sk));
        item.insert("doc".into(), s(to_json(e)));
        item.insert("version".into(), n(e.version));
        item.insert("scenario_version".into(), n(scenario_version));
        match pending {
            Some(p) => item.insert("pending".into(), packed_json(p)),
            None => item.remove("pending"),
        };
        let put = self.client.put_item().table_name(&self.config.state_table);
        let put = match condition {
            Ok(mark) => {
                // The enrollment this entry replaces keeps its state in its own item first.
                if let Some(previous) = &entry
                    && let Some(previous_id) = get_s(previous, "running")
                    && holds(previous, previous_id)
                {
                    self.archive_enrollment(previous_id, previous)?;
                }
                item.insert("last_entered_at".into(), s(keys::text(mark.at)));
                item.insert("entries".into(), n(mark.seen + 1));
                item.insert("running".into(), s(&e.id));
                put.condition_expression("attribute_not_exists(entries) OR entries = :seen")
                    .expression_attribute_values(":seen", n(mark.seen))
            }
            Err(v) => put
                .condition_expression("version = :v AND running = :id")
                .expression_attribute_values(":v", n(v))
                .expression_attribute_values(":id", s(&e.id)),
        };
        match self.bridge.block(put.set_item(Some(item.clone())).send()) {
            Ok(_) => {
                self.unit_reads.wrote(&item);
                Ok(())
            }
            Err(err) if is_conditional(&err) => {
                self.unit_reads.forget(&entry_pk, &entry_sk);
                Err(StoreError::Conflict(match marked {
                    Some(_) => format!("entry of {} in {}", e.contact, e.scenario),
                    None => format!("enrollment {}", e.id),
                }))
            }
            Err(err) => Err(dynamo("PutItem")(err)),
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
        self.put(item)
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
        item.insert("doc".into(), s(to_json(e)));
        item.insert("version".into(), n(e.version));
        item.insert("scenario_version".into(), n(scenario_version));
        if let Some(p) = pending {
            item.insert("pending".into(), packed_json(p));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.config.state_table)
            .set_item(Some(item.clone()));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        match self.bridge.block(put.send()) {
            Ok(_) => {
                self.unit_reads.wrote(&item);
                Ok(())
            }
            Err(err) if is_conditional(&err) => {
                self.unit_reads
                    .forget(&keys::enrollment(&e.id), keys::ENROLLMENT_STATE);
                Err(StoreError::Conflict(format!("enrollment {}", e.id)))
            }
            Err(err) => Err(dynamo("PutItem")(err)),
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
            let sk = Self::journal_sk(&pending, &enrollment);
            // Applied by this store and waiting for its flush: no need to read the journal.
            let shard = keys::journal(&pending.scenario, &enrollment.id);
            let deferred = self.deferred_markers.iter().any(|m| {
                get_s(m, keys::PK) == Some(shard.as_str())
                    && get_s(m, keys::SK) == Some(sk.as_str())
            });
            // Its journal item is in the enrollment's shard, or, written by an earlier build,
            // in the unsplit partition: read only when the shard has none (after a crash, or
            // for an enrollment an earlier build moved), so it costs nothing per step.
            if !deferred
                && self.get(&shard, &sk)?.is_none()
                && self
                    .get(&keys::legacy_journal(&pending.scenario), &sk)?
                    .is_none()
            {
                self.apply_pending(&pending, &enrollment, true)?;
            }
        }
        Ok(Some((enrollment, version)))
    }
}
