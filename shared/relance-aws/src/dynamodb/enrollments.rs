//! The enrollment port on DynamoDB: enrollments written conditionally on their version (with
//! their pending effects at the commit point), entry marks claimed optimistically.

use aws_sdk_dynamodb::types::AttributeValue;
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

    fn mark_entry(
        &mut self,
        scenario: &str,
        contact: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Optimistic claim: only if no other entry happened since this unit read the mark, so
        // concurrent triggers cannot both enter (the loser retries and sees already_running).
        let seen = self
            .entries_seen
            .get(&(scenario.to_string(), contact.to_string()))
            .copied()
            .unwrap_or(0);
        let id = keys::enrollment_id(scenario, contact, u64::from(seen) + 1);
        let r = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.config.state_table)
                .key(keys::PK, s(keys::contact(contact)))
                .key(keys::SK, s(keys::entry(scenario)))
                .update_expression("SET last_entered_at = :at, entries = :next, running = :id")
                .condition_expression("attribute_not_exists(entries) OR entries = :seen")
                .expression_attribute_values(":at", s(keys::text(at)))
                .expression_attribute_values(":next", n(seen + 1))
                .expression_attribute_values(":seen", n(seen))
                .expression_attribute_values(":id", s(id))
                .send(),
        );
        // Updated in place (or refused): the unit reads the mark again if it needs it.
        self.unit_reads
            .forget(&keys::contact(contact), &keys::entry(scenario));
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Err(StoreError::Conflict(format!(
                "entry of {contact} in {scenario}"
            ))),
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
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

impl DynamoStore {
    pub(super) fn write_enrollment(
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
        item.insert("scenario".into(), s(&e.scenario));
        item.insert("contact".into(), s(&e.contact));
        item.insert("running".into(), AttributeValue::Bool(e.is_running()));
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

    pub(super) fn read_enrollment(
        &mut self,
        id: &str,
    ) -> Result<Option<(Enrollment, u32)>, StoreError> {
        let Some(item) = self.get(&keys::enrollment(id), keys::ENROLLMENT_STATE)? else {
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
