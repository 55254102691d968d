//! The timer port on DynamoDB: timers and inactivity checks in the sharded timer table, the
//! tick's cursor, launches; items of earlier builds re-keyed as they are read.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Wake;
use relance_core::ports::{
    Due, InactivityCheck, LaunchTime, ScenarioStore, Status, TimerStore, UnreadableRow,
};

use super::DynamoStore;
use super::item::{
    Item, dynamo, from_json, get_s, is_conditional, micros, n, need_s, read_instant, s, unreadable,
};
use super::layouts::Layout;
use super::timer_parts;
use crate::error::StoreError;
use crate::keys;

impl DynamoStore {
    fn active_scenarios(&mut self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .scenarios(Some(Status::Active))?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// Timer items of one bucket due at or before `now`, and those whose `due` does not read
    /// (the caller dead-letters them). The whole minute is read and filtered here: sort keys
    /// of earlier builds (RFC 3339 text) and of this one (digits) do not order together.
    pub(super) fn query_bucket(
        &self,
        bucket: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Item>, StoreError> {
        let items = self.query_all(
            self.client
                .query()
                .table_name(&self.config.timers_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(bucket))
                .consistent_read(true),
        )?;
        Ok(items
            .into_iter()
            .filter(|i| {
                read_instant(i, "due").is_ok_and(|d| d <= now) || read_instant(i, "due").is_err()
            })
            .collect())
    }

    pub(super) fn shard(&self, key: &str) -> u32 {
        keys::shard(key, self.config.timer_shards)
    }

    pub(super) fn put_timer_item(
        &mut self,
        due: DateTime<Utc>,
        sk: String,
        shard_key: &str,
        mut attrs: Item,
        deferrable: bool,
    ) -> Result<(), StoreError> {
        let bucket = keys::bucket(keys::minute(due), self.shard(shard_key));
        attrs.insert(keys::PK.into(), s(bucket));
        attrs.insert(keys::SK.into(), s(sk));
        attrs.insert("due".into(), micros(due));
        attrs.insert(
            "expires_at".into(),
            n(due
                .checked_add_signed(TimeDelta::days(30))
                .unwrap_or(due)
                .timestamp()),
        );
        // A wake timer may wait for the flush; an inactivity check is written now (its
        // replacement deletes the previous one at once, which a deferred put would undo).
        let deferred = deferrable && self.defers();
        if deferred {
            self.deferred_timers.push(super::TimerWrite::Put(attrs));
        } else {
            self.bridge
                .block(
                    self.client
                        .put_item()
                        .table_name(&self.config.timers_table)
                        .set_item(Some(attrs))
                        .send(),
                )
                .map_err(dynamo("PutItem"))?;
        }
        self.cursor_for(due, deferred)
    }

    /// Keeps the tick's cursor at or before the minute of a timer armed for `due` (when the
    /// timer is `deferred`, once it is written, at the flush).
    fn cursor_for(&mut self, due: DateTime<Utc>, deferred: bool) -> Result<(), StoreError> {
        // The tick starts from the earliest minute that may hold timers. The cursor never
        // passes the minute of the tick's `now`, so a timer two minutes past the latest `now`
        // this store was given needs no update once a cursor exists (one write less per
        // timer); with no `now` yet, the cursor is updated. Nor when this store set the
        // cursor later than the timer: a first timer due in two days puts the cursor there,
        // and one armed next for tomorrow must move it back.
        let minute = keys::minute(due);
        if self.cursor_at_most.is_some_and(|c| minute >= c)
            && self
                .now
                .is_some_and(|now| minute >= keys::minute(now) + TimeDelta::minutes(2))
        {
            return Ok(());
        }
        if deferred {
            // Moved once the timer is written, at the flush.
            self.deferred_cursor = Some(self.deferred_cursor.map_or(minute, |c| c.min(minute)));
            return Ok(());
        }
        self.move_cursor_back(minute)
    }

    /// Moves the tick's cursor back to `minute` if it is later (or sets it).
    pub(super) fn move_cursor_back(&mut self, minute: DateTime<Utc>) -> Result<(), StoreError> {
        self.write_cursor_back(minute)?;
        // Set to `minute`, or already at or before it.
        self.cursor_at_most = Some(self.cursor_at_most.map_or(minute, |c| c.min(minute)));
        Ok(())
    }

    /// The conditional write of [`DynamoStore::move_cursor_back`].
    fn write_cursor_back(&self, minute: DateTime<Utc>) -> Result<(), StoreError> {
        // A number: DynamoDB compares it as one. (`cursor_at`, RFC 3339 text, is the cursor
        // of earlier builds; `due_items` takes the earlier of the two until it moves on.)
        let r = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.config.state_table)
                .key(keys::PK, s(keys::TICK))
                .key(keys::SK, s(keys::CURSOR))
                .update_expression("SET cursor_min = :m")
                .condition_expression("attribute_not_exists(cursor_min) OR cursor_min > :m")
                .expression_attribute_values(":m", micros(minute))
                .send(),
        );
        self.unit_reads.forget(keys::TICK, keys::CURSOR);
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Ok(()),
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
    }

    /// Due items of the timer table (timers and inactivity checks, and items whose `due` does
    /// not read), advancing the cursor past minutes found empty.
    pub(super) fn due_items(&self, now: DateTime<Utc>) -> Result<Vec<Item>, StoreError> {
        let Some(item) = self.get(keys::TICK, keys::CURSOR)? else {
            return Ok(Vec::new());
        };
        // The earlier of this build's cursor and an earlier build's, when both are there.
        let ours = item
            .contains_key("cursor_min")
            .then(|| read_instant(&item, "cursor_min"));
        let theirs = item
            .contains_key("cursor_at")
            .then(|| read_instant(&item, "cursor_at"));
        let mut m = match (ours, theirs) {
            (None, None) => return Ok(Vec::new()),
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.and_then(|a| b.map(|b| a.min(b))),
        }
        .map_err(|why| StoreError::Corrupt {
            what: "timer cursor",
            why,
        })?;
        let start = m;
        let last = keys::minute(now);
        let mut items = Vec::new();
        let mut first_busy: Option<DateTime<Utc>> = None;
        while m <= last {
            let mut found = false;
            for shard in 0..self.config.timer_shards {
                let got = self.query_bucket(&keys::bucket(m, shard), now)?;
                found |= !got.is_empty();
                items.extend(got);
            }
            if found && first_busy.is_none() {
                first_busy = Some(m);
            }
            m += TimeDelta::minutes(1);
        }
        // Minutes before the first one still holding items are done: move the cursor on.
        let new_cursor = first_busy.unwrap_or(last);
        if new_cursor > start {
            let mut update = self
                .client
                .update_item()
                .table_name(&self.config.state_table)
                .key(keys::PK, s(keys::TICK))
                .key(keys::SK, s(keys::CURSOR))
                .update_expression("SET cursor_min = :m REMOVE cursor_at")
                .expression_attribute_values(":m", micros(new_cursor));
            // Only if no timer moved the cursor back meanwhile.
            update = match item.get("cursor_min") {
                Some(old) => update
                    .condition_expression("cursor_min = :old")
                    .expression_attribute_values(":old", old.clone()),
                None => update.condition_expression("attribute_not_exists(cursor_min)"),
            };
            let moved = self.bridge.block(update.send()).is_ok();
            self.unit_reads.forget(keys::TICK, keys::CURSOR);
            // A timer written into a skipped minute while it was read, whose own move of the
            // cursor came before this one (its condition then held nothing back), would be
            // passed for good: read the skipped minutes again and move the cursor back to the
            // first that holds one. A write landing after this read moves it back itself.
            if moved {
                let mut m = start;
                'skipped: while m < new_cursor {
                    for shard in 0..self.config.timer_shards {
                        if !self.query_bucket(&keys::bucket(m, shard), now)?.is_empty() {
                            self.write_cursor_back(m)?;
                            break 'skipped;
                        }
                    }
                    m += TimeDelta::minutes(1);
                }
            }
        }
        // A timer this batch consumed is not due again (its deletion waits for the flush).
        items.retain(|i| {
            !self.timer_deferred_deleted(
                get_s(i, keys::PK).unwrap_or(""),
                get_s(i, keys::SK).unwrap_or(""),
            )
        });
        // Items an earlier build wrote (an RFC 3339 sort key) move to this build's key, so
        // `cancel` and the consuming unit find them by it.
        for item in &mut items {
            self.rekey_legacy(item)?;
        }
        // Time order; an unreadable `due` last (the runtime dead-letters it).
        items.sort_by_cached_key(|i| {
            (
                read_instant(i, "due").unwrap_or(DateTime::<Utc>::MAX_UTC),
                get_s(i, keys::SK).unwrap_or("").to_string(),
            )
        });
        Ok(items)
    }

    /// Rewrites a readable timer-table item whose sort key does not start with 18 digits
    /// (RFC 3339 text, from an earlier build) under this build's key: a copy is written with
    /// the digits and a numeric `due`, then the old item is deleted (a crash in between
    /// leaves both: the copy fires, the old one is then stale and changes nothing).
    pub(super) fn rekey_legacy(&self, item: &mut Item) -> Result<(), StoreError> {
        let Some(sk) = get_s(item, keys::SK) else {
            return Ok(());
        };
        let Ok(due) = read_instant(item, "due") else {
            return Ok(());
        };
        let Some(new_sk) = keys::rekeyed_timer(sk, due) else {
            return Ok(());
        };
        let old_sk = sk.to_string();
        let mut copy = item.clone();
        copy.insert(keys::SK.into(), s(new_sk));
        copy.insert("due".into(), micros(due));
        self.bridge
            .block(
                self.client
                    .put_item()
                    .table_name(&self.config.timers_table)
                    .set_item(Some(copy.clone()))
                    .send(),
            )
            .map_err(dynamo("PutItem"))?;
        let pk = get_s(item, keys::PK).unwrap_or("").to_string();
        self.delete(&self.config.timers_table, &pk, &old_sk)?;
        *item = copy;
        Ok(())
    }
}

impl DynamoStore {
    /// Whether the last listing of due timers found `w` in a timer part: the tick queues it
    /// (whatever it queued before: a listed timer is still in the table, so it was not
    /// handed on) and then takes it out of its part. `Some(true)` when it has no item of its
    /// own (the tick marks its message: the step executor has nothing to delete), `Some(false)`
    /// when it also has one (armed again across the layout's start: the executor deletes it).
    pub fn wake_in_part(&self, w: &Wake) -> Option<bool> {
        self.listed_parts
            .holds(w)
            .then(|| !self.listed_parts.has_item(w))
    }

    /// The step executor fires `w` from a part: there is no item of it to delete.
    pub fn wake_without_item(&mut self, w: &Wake) {
        self.wakes_without_item.insert(keys::timer(w));
    }

    /// The tick queued `wakes` (a round of its listing): the parts every listed timer of
    /// which is now queued are rewritten without them, in place (or deleted), 25 per request.
    pub fn timers_handed_on(&mut self, wakes: &[Wake]) -> Result<(), StoreError> {
        let changes: Vec<timer_parts::Change> = wakes
            .iter()
            .filter_map(|w| self.listed_parts.hand_on(w))
            .flatten()
            .collect();
        self.write_part_changes(changes)
    }

    /// Writes the changes of parts all of whose listed timers are handed on; each part
    /// leaves the listing only once its change is written (a failed write is tried again
    /// when its timers are).
    fn write_part_changes(&mut self, changes: Vec<timer_parts::Change>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let writes = changes
            .iter()
            .map(|change| match &change.rewrite {
                Some(item) => super::TimerWrite::Put(item.clone()),
                None => super::TimerWrite::Delete(change.key.0.clone(), change.key.1.clone()),
            })
            .collect();
        self.write_timers(writes)?;
        for change in &changes {
            self.listed_parts.applied(&change.key);
        }
        Ok(())
    }

    /// The listing of due timers is over (the tick ends, or failed): nothing more is handed
    /// on from it.
    pub fn end_timer_listing(&mut self) {
        self.listed_parts = timer_parts::Listing::default();
    }

    /// `w`, listed from a part, is handed on; once every timer listed from its part is, the
    /// part is rewritten at once (in a batch too: a runtime ticking in process reads the
    /// table again before any flush). False when `w` was not listed from a part.
    fn hand_on(&mut self, w: &Wake) -> Result<bool, StoreError> {
        let Some(changes) = self.listed_parts.hand_on(w) else {
            return Ok(false);
        };
        self.write_part_changes(changes)?;
        Ok(true)
    }
}

impl TimerStore for DynamoStore {
    type Error = StoreError;

    fn schedule(&mut self, w: &Wake) -> Result<(), StoreError> {
        // In a batch, in one of its timer parts (once earlier builds are gone: `layouts`).
        if self.defers()
            && self.layout_open(Layout::TimerParts, self.now.unwrap_or_else(Utc::now))?
        {
            self.timer_parts.add(w)?;
            return self.cursor_for(w.at, true);
        }
        let mut attrs = Item::new();
        attrs.insert("kind".into(), s("timer"));
        attrs.insert("enrollment".into(), s(&w.enrollment));
        attrs.insert("contact".into(), s(&w.contact));
        attrs.insert("step".into(), s(&w.step));
        self.put_timer_item(w.at, keys::timer(w), &w.enrollment, attrs, true)
    }

    fn cancel(&mut self, w: &Wake) -> Result<(), StoreError> {
        // Fired from a part (the tick deleted the part), or armed in this batch's parts.
        if self.wakes_without_item.contains(&keys::timer(w)) || self.timer_parts.remove(w) {
            return Ok(());
        }
        // Listed from a part and fired in this process: the listed timers leave their part
        // with the last of them.
        if self.hand_on(w)? {
            return Ok(());
        }
        let bucket = keys::bucket(keys::minute(w.at), self.shard(&w.enrollment));
        if self.defers() {
            self.deferred_timers
                .push(super::TimerWrite::Delete(bucket, keys::timer(w)));
            return Ok(());
        }
        self.delete(&self.config.timers_table.clone(), &bucket, &keys::timer(w))
    }

    fn due_timers(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<Wake>>, StoreError> {
        self.saw(now);
        let active = self.active_scenarios()?;
        let table = self.config.timers_table.clone();
        let mut out = Vec::new();
        // A batch's timer part stands for its timers: each due one reads as an item of its
        // own naming its part, in the same order (due time, then key).
        let mut listing = timer_parts::Listing::default();
        let mut items = Vec::new();
        for item in self.due_items(now)? {
            if get_s(&item, "kind") != Some(timer_parts::KIND) {
                items.push(item);
                continue;
            }
            match timer_parts::read(&item) {
                Ok(wakes) => {
                    let key = (
                        get_s(&item, keys::PK).unwrap_or_default().to_string(),
                        get_s(&item, keys::SK).unwrap_or_default().to_string(),
                    );
                    items.extend(
                        wakes
                            .iter()
                            .filter(|w| w.at <= now)
                            .map(|w| timer_parts::wake_item(&key, w)),
                    );
                    listing.add_part(key, wakes);
                }
                Err(why) => out.push(Due::Unreadable(unreadable("timer", &table, &item, why))),
            }
        }
        items.sort_by_cached_key(|i| {
            (
                read_instant(i, "due").unwrap_or(DateTime::<Utc>::MAX_UTC),
                get_s(i, keys::SK).unwrap_or("").to_string(),
            )
        });
        for item in items {
            if get_s(&item, "kind") != Some("timer") {
                continue;
            }
            let read = || -> Result<Wake, String> {
                Ok(Wake {
                    at: read_instant(&item, "due")?,
                    contact: need_s(&item, "contact")?,
                    step: need_s(&item, "step")?,
                    enrollment: need_s(&item, "enrollment")?,
                })
            };
            match read() {
                Ok(wake) => {
                    if !active.contains(timer_parts::scenario_of(&wake)) {
                        continue;
                    }
                    match get_s(&item, "part_sk") {
                        Some(part_sk) => {
                            let pk = get_s(&item, keys::PK).unwrap_or_default();
                            listing.note(&(pk.to_string(), part_sk.to_string()), &wake);
                        }
                        None => listing.note_item(&wake),
                    }
                    out.push(Due::Ready(wake));
                }
                Err(why) => out.push(Due::Unreadable(unreadable("timer", &table, &item, why))),
            }
            if out.len() >= limit {
                break;
            }
        }
        self.listed_parts = listing;
        Ok(out)
    }

    fn set_inactivity(&mut self, check: &InactivityCheck) -> Result<(), StoreError> {
        let pk = keys::contact(&check.contact);
        let sk = keys::inactivity(&check.scenario);
        if let Some(old) = self.get(&pk, &sk)?
            && let Ok(due) = read_instant(&old, "due")
        {
            let old = InactivityCheck {
                due,
                ..check.clone()
            };
            self.remove_inactivity(&old)?;
        }
        let mut attrs = Item::new();
        attrs.insert("kind".into(), s("inactivity"));
        attrs.insert("scenario".into(), s(&check.scenario));
        attrs.insert("contact".into(), s(&check.contact));
        let key = keys::inactivity_shard_key(check);
        self.put_timer_item(check.due, keys::inactivity_timer(check), &key, attrs, false)?;
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(pk));
        item.insert(keys::SK.into(), s(sk));
        item.insert("due".into(), micros(check.due));
        self.put(item)
    }

    fn clear_inactivity(&mut self, contact: &str, keep: &[String]) -> Result<(), StoreError> {
        for item in self.query(
            &self.config.state_table,
            &keys::contact(contact),
            keys::INACTIVITY_PREFIX,
        )? {
            let Some(scenario) = get_s(&item, keys::SK).and_then(keys::inactivity_scenario) else {
                continue;
            };
            if keep.iter().any(|k| k == scenario) {
                continue;
            }
            let due = read_instant(&item, "due").map_err(|why| StoreError::Corrupt {
                what: "inactivity check",
                why,
            })?;
            self.remove_inactivity(&InactivityCheck {
                scenario: scenario.to_string(),
                contact: contact.to_string(),
                due,
            })?;
        }
        Ok(())
    }

    fn due_inactivity(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due<InactivityCheck>>, StoreError> {
        self.saw(now);
        let active = self.active_scenarios()?;
        let table = self.config.timers_table.clone();
        let mut out = Vec::new();
        for item in self.due_items(now)? {
            if get_s(&item, "kind") != Some("inactivity") {
                continue;
            }
            let read = || -> Result<InactivityCheck, String> {
                Ok(InactivityCheck {
                    scenario: need_s(&item, "scenario")?,
                    contact: need_s(&item, "contact")?,
                    due: read_instant(&item, "due")?,
                })
            };
            match read() {
                Ok(check) if !active.contains(&check.scenario) => continue,
                Ok(check) => out.push(Due::Ready(check)),
                Err(why) => out.push(Due::Unreadable(unreadable(
                    "inactivity",
                    &table,
                    &item,
                    why,
                ))),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn remove_inactivity(&mut self, check: &InactivityCheck) -> Result<(), StoreError> {
        let key = keys::inactivity_shard_key(check);
        let bucket = keys::bucket(keys::minute(check.due), self.shard(&key));
        let table = self.config.timers_table.clone();
        self.delete(&table, &bucket, &keys::inactivity_timer(check))?;
        // A check written by an earlier build has an RFC 3339 sort key.
        self.delete(&table, &bucket, &keys::legacy_inactivity_timer(check))?;
        let r = self.bridge.block(
            self.client
                .delete_item()
                .table_name(&self.config.state_table)
                .key(keys::PK, s(keys::contact(&check.contact)))
                .key(keys::SK, s(keys::inactivity(&check.scenario)))
                .condition_expression("due IN (:d, :t)")
                .expression_attribute_values(":d", micros(check.due))
                .expression_attribute_values(":t", s(keys::text(check.due)))
                .send(),
        );
        self.unit_reads.forget(
            &keys::contact(&check.contact),
            &keys::inactivity(&check.scenario),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conditional(&e) => Ok(()),
            Err(e) => Err(dynamo("DeleteItem")(e)),
        }
    }

    fn set_launch(
        &mut self,
        scenario: &str,
        zone: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let sk = keys::launch(scenario, zone);
        match at {
            Some(at) => {
                let mut item = Item::new();
                item.insert(keys::PK.into(), s(keys::LAUNCH));
                item.insert(keys::SK.into(), s(sk));
                item.insert("scenario".into(), s(scenario));
                item.insert("zone".into(), s(zone));
                item.insert("next_at".into(), micros(at));
                self.put(item)
            }
            None => {
                let table = self.config.state_table.clone();
                self.delete(&table, keys::LAUNCH, &sk)
            }
        }
    }

    fn due_launches(&mut self, now: DateTime<Utc>) -> Result<Vec<Due<LaunchTime>>, StoreError> {
        self.saw(now);
        let active = self.active_scenarios()?;
        let table = self.config.state_table.clone();
        let mut ready = Vec::new();
        let mut out = Vec::new();
        for item in self.query(&self.config.state_table, keys::LAUNCH, "")? {
            let read = || -> Result<LaunchTime, String> {
                Ok(LaunchTime {
                    scenario: need_s(&item, "scenario")?,
                    zone: need_s(&item, "zone")?,
                    at: read_instant(&item, "next_at")?,
                })
            };
            match read() {
                Ok(l) if l.at <= now && active.contains(&l.scenario) => ready.push(l),
                Ok(_) => {}
                Err(why) => out.push(Due::Unreadable(unreadable("launch", &table, &item, why))),
            }
        }
        ready.sort_by(|a, b| (a.at, &a.scenario, &a.zone).cmp(&(b.at, &b.scenario, &b.zone)));
        out.splice(0..0, ready.into_iter().map(Due::Ready));
        Ok(out)
    }

    fn remove_unreadable(&mut self, row: &UnreadableRow) -> Result<(), StoreError> {
        let locator: serde_json::Value = from_json("unreadable row locator", &row.locator)?;
        let (Some(table), Some(pk), Some(sk)) = (
            locator["table"].as_str(),
            locator["pk"].as_str(),
            locator["sk"].as_str(),
        ) else {
            return Err(StoreError::Corrupt {
                what: "unreadable row locator",
                why: row.locator.clone(),
            });
        };
        // Only the two tables this store owns.
        if table != self.config.timers_table && table != self.config.state_table {
            return Err(StoreError::Corrupt {
                what: "unreadable row locator",
                why: row.locator.clone(),
            });
        }
        self.delete(table, pk, sk)
    }

    /// None: this store cannot tell (the port allows it). The AWS tick runs on a schedule, so
    /// nothing sleeps until a due time, and finding the earliest item would read every minute
    /// bucket from the cursor on.
    fn next_due(&mut self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(None)
    }
}
