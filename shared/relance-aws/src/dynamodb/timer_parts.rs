//! A batch's timers in parts: the wake timers a handler's batch arms go in a few timer-table
//! items (one per scenario and due minute, up to [`PART_WAKES_MAX`] timers, packed) instead of
//! an item each; each timer the tick lists leaves its part once queued.
//!
//! A timer item cost two write units (its put, and its deletion by the step executor that
//! fired it); a part of twenty costs about two for all of them. The timer's durability moves
//! with it: in the table until the tick hands it to the step queue, then in the queue (kept 14
//! days, twenty receives, then its dead-letter queue, alarmed), as the channel messages
//! already are. So every timer the tick lists from a part is queued (still in the table, it
//! was not handed on before), and once every timer listed from a part is queued (ten per
//! request, the parts changed after each), they leave the part: it is rewritten in place with
//! the rest (not due yet, or cut by the listing's limit), or deleted ([`Change`]), so every
//! tick makes progress, however it is cut short. The step executor has no item to delete for
//! a timer from a part: the tick marks its message (`"stored": "part"`). A part's timer
//! cancelled before it fires (an enrollment that left its wait early) stays in the part and
//! fires stale: the engine finds the enrollment no longer waits for it and changes nothing. A
//! part of a paused scenario is not listed, so it stays as it is. A runtime firing timers in
//! process takes them out of their parts the same way as it consumes them. Earlier builds do
//! not read parts: they are written under their own layout setting (`layouts`,
//! `settings`/`timer_parts`, which needs the tick's heartbeat).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Wake;
use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::item::get_s;
use super::item::{BatchName, Item, document_text, from_json, micros, n, packed_binary, s};
use crate::error::StoreError;
use crate::keys;

/// How many timers a part takes before the batch starts another: about 1.5 KB packed for
/// twenty timers of a drip, two write units to put it and two to delete it.
pub(super) const PART_WAKES_MAX: usize = 40;

/// A timer as a part keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartWake {
    /// The enrollment.
    e: String,
    /// The contact.
    c: String,
    /// The step.
    s: String,
    /// When it is due, in microseconds since the epoch.
    a: i64,
}

impl PartWake {
    fn of(w: &Wake) -> PartWake {
        PartWake {
            e: w.enrollment.clone(),
            c: w.contact.clone(),
            s: w.step.clone(),
            a: w.at.timestamp_micros(),
        }
    }

    fn wake(&self) -> Result<Wake, String> {
        Ok(Wake {
            enrollment: self.e.clone(),
            contact: self.c.clone(),
            step: self.s.clone(),
            at: DateTime::from_timestamp_micros(self.a)
                .ok_or_else(|| format!("{} is no instant", self.a))?,
        })
    }
}

/// One part of the current batch, waiting for the flush.
#[derive(Debug, Clone)]
struct Part {
    scenario: String,
    minute: DateTime<Utc>,
    id: String,
    wakes: Vec<Wake>,
}

/// The timer parts of the current batch. A clone starts with no batch (two copies would
/// write one part twice).
#[derive(Debug, Default)]
pub(super) struct TimerParts {
    batch: BatchName,
    parts: Vec<Part>,
}

impl Clone for TimerParts {
    fn clone(&self) -> TimerParts {
        TimerParts::default()
    }
}

impl TimerParts {
    /// Puts `w` in the part of its scenario and due minute.
    pub(super) fn add(&mut self, w: &Wake) -> Result<(), StoreError> {
        let scenario = scenario_of(w);
        let minute = keys::minute(w.at);
        // Armed again in this batch: one copy, in the part it goes to now.
        self.remove(w);
        if let Some(part) = self.parts.iter_mut().rev().find(|p| {
            p.scenario == scenario && p.minute == minute && p.wakes.len() < PART_WAKES_MAX
        }) {
            part.wakes.push(w.clone());
            return Ok(());
        }
        let id = self.batch.part_id(self.parts.len())?;
        self.parts.push(Part {
            scenario: scenario.to_string(),
            minute,
            id,
            wakes: vec![w.clone()],
        });
        Ok(())
    }

    /// Takes `w` out of the current batch's parts; true when it was there (armed, then
    /// cancelled or fired, in one batch: nothing to write for it).
    pub(super) fn remove(&mut self, w: &Wake) -> bool {
        let mut found = false;
        for part in &mut self.parts {
            let before = part.wakes.len();
            part.wakes.retain(|x| x != w);
            found |= part.wakes.len() != before;
        }
        found
    }

    /// The current batch's parts as timer-table items, on `shards` shards (the batch ends).
    pub(super) fn take_items(&mut self, shards: u32) -> Vec<Item> {
        self.batch.end();
        std::mem::take(&mut self.parts)
            .into_iter()
            .filter_map(|p| part_item(&p.id, &p.wakes, shards))
            .collect()
    }
}

/// A part's item: in the bucket of its minute and of a shard its name picks, sorted by its
/// earliest timer; `None` for no timer.
fn part_item(id: &str, wakes: &[Wake], shards: u32) -> Option<Item> {
    let earliest = wakes.iter().map(|w| w.at).min()?;
    let key = (
        keys::bucket(keys::minute(earliest), keys::shard(id, shards)),
        keys::timer_part(earliest, id),
    );
    part_item_at(&key, wakes)
}

/// The item of the part `key` holding `wakes`; `None` for no timer.
fn part_item_at(key: &Key, wakes: &[Wake]) -> Option<Item> {
    let earliest = wakes.iter().map(|w| w.at).min()?;
    let latest = wakes.iter().map(|w| w.at).max()?;
    let packed: Vec<PartWake> = wakes.iter().map(PartWake::of).collect();
    Some(Item::from([
        (keys::PK.to_string(), s(&key.0)),
        (keys::SK.to_string(), s(&key.1)),
        ("kind".to_string(), s(KIND)),
        // The earliest timer it holds: the tick's query reads a part from then on.
        ("due".to_string(), micros(earliest)),
        ("wakes".to_string(), packed_binary(&packed)),
        (
            "expires_at".to_string(),
            n(latest
                .checked_add_signed(TimeDelta::days(30))
                .unwrap_or(latest)
                .timestamp()),
        ),
    ]))
}

/// A part item's `kind`.
pub(super) const KIND: &str = "timers";

/// The scenario of a timer (enrollment ids start with their scenario id, which has no ':').
pub(super) fn scenario_of(w: &Wake) -> &str {
    w.enrollment.split(':').next().unwrap_or("")
}

/// A part's key in the timer table: (pk, sk).
pub(super) type Key = (String, String);

/// The timers of a part item, or why they do not read (a missing list included).
pub(super) fn read(item: &Item) -> Result<Vec<Wake>, String> {
    let text = document_text(item, "wakes")
        .ok_or_else(|| "a timer part without its timers".to_string())?
        .map_err(|e| e.to_string())?;
    from_json::<Vec<PartWake>>("timer part", &text)
        .map_err(|e| e.to_string())?
        .iter()
        .map(PartWake::wake)
        .collect()
}

/// A part's timer as the item of a timer of its own would read (`kind` timer), naming its
/// part (its partition, and `part_sk`).
pub(super) fn wake_item(part: &Key, w: &Wake) -> Item {
    Item::from([
        (keys::PK.to_string(), s(&part.0)),
        (keys::SK.to_string(), s(keys::timer(w))),
        ("kind".to_string(), s("timer")),
        ("due".to_string(), micros(w.at)),
        ("enrollment".to_string(), s(&w.enrollment)),
        ("contact".to_string(), s(&w.contact)),
        ("step".to_string(), s(&w.step)),
        ("part_sk".to_string(), s(&part.1)),
    ])
}

/// What a listing did to a part: its timers handed on leave it, in place (same key, so the
/// part never moves out of the minute and shard the tick reads): the part rewritten with the
/// rest, or deleted when nothing is left. Two writers at once (two ticks) each write what
/// they did not hand on, so whichever lands last still holds every timer not handed on.
#[derive(Debug, Clone)]
pub(super) struct Change {
    /// The part.
    pub key: Key,
    /// Its new item, or `None` to delete it.
    pub rewrite: Option<Item>,
}

/// What the last listing of due timers found of a part.
#[derive(Debug, Clone)]
struct Listed {
    /// Every timer in the part.
    wakes: Vec<Wake>,
    /// The timers listed (due, of an active scenario, within the listing's limit), by key.
    listed: HashSet<String>,
    /// The listed timers handed on (queued by the tick, consumed in process), by key.
    handed: HashSet<String>,
}

impl Listed {
    /// The part without its listed timers.
    fn change(&self, key: &Key) -> Change {
        let left: Vec<Wake> = self
            .wakes
            .iter()
            .filter(|w| !self.listed.contains(&keys::timer(w)))
            .cloned()
            .collect();
        Change {
            key: key.clone(),
            rewrite: part_item_at(key, &left),
        }
    }
}

/// What the last listing of due timers found in parts. Each timer listed is handed on (the
/// tick queues it; a runtime firing in process consumes it); once every timer listed from a
/// part is, they leave the part ([`Change`]). So every listing makes progress, and a timer is
/// in the table until it is handed on.
#[derive(Debug, Clone, Default)]
pub(super) struct Listing {
    parts: HashMap<Key, Listed>,
    /// The parts of each timer listed, by timer key (one timer can be in two parts: a batch
    /// whose flush failed after its parts were written is done again into new ones).
    wakes: HashMap<String, Vec<Key>>,
    /// The timers listed as items of their own, by key.
    items: HashSet<String>,
}

impl Listing {
    /// A part read by the listing, with every timer it holds.
    pub(super) fn add_part(&mut self, key: Key, wakes: Vec<Wake>) {
        self.parts.insert(
            key,
            Listed {
                wakes,
                listed: HashSet::new(),
                handed: HashSet::new(),
            },
        );
    }

    /// `w`, of the part `key`, is listed.
    pub(super) fn note(&mut self, key: &Key, w: &Wake) {
        if let Some(part) = self.parts.get_mut(key) {
            part.listed.insert(keys::timer(w));
            let parts = self.wakes.entry(keys::timer(w)).or_default();
            if !parts.contains(key) {
                parts.push(key.clone());
            }
        }
    }

    /// `w` is listed as an item of its own.
    pub(super) fn note_item(&mut self, w: &Wake) {
        self.items.insert(keys::timer(w));
    }

    /// Whether `w` was listed from a part.
    pub(super) fn holds(&self, w: &Wake) -> bool {
        self.wakes.contains_key(&keys::timer(w))
    }

    /// Whether `w` was also listed as an item of its own.
    pub(super) fn has_item(&self, w: &Wake) -> bool {
        self.items.contains(&keys::timer(w))
    }

    /// `w`, listed from parts, is handed on: `None` when it was not listed from a part;
    /// else the changes of the parts every timer listed from which is now handed on (none
    /// yet: empty). A part stays listed until [`Listing::applied`].
    pub(super) fn hand_on(&mut self, w: &Wake) -> Option<Vec<Change>> {
        let keys = self.wakes.get(&keys::timer(w))?.clone();
        let mut changes = Vec::new();
        for key in keys {
            let Some(part) = self.parts.get_mut(&key) else {
                continue;
            };
            part.handed.insert(keys::timer(w));
            if part.handed.len() == part.listed.len() {
                changes.push(part.change(&key));
            }
        }
        Some(changes)
    }

    /// The change of the part `key` is written: the part leaves the listing.
    pub(super) fn applied(&mut self, key: &Key) {
        if let Some(part) = self.parts.remove(key) {
            for w in part.listed {
                if let Some(parts) = self.wakes.get_mut(&w) {
                    parts.retain(|k| k != key);
                    if parts.is_empty() {
                        self.wakes.remove(&w);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake(enrollment: &str, at: &str) -> Wake {
        Wake {
            enrollment: enrollment.into(),
            contact: "c".into(),
            step: "check".into(),
            at: at.parse().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn key(item: &Item) -> Key {
        (
            get_s(item, keys::PK).unwrap_or_default().to_string(),
            get_s(item, keys::SK).unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn a_batch_groups_its_timers_by_scenario_and_minute_and_reads_them_back() {
        let mut parts = TimerParts::default();
        let a = wake("s:c1:1", "2026-12-02T09:00:10Z");
        let b = wake("s:c2:1", "2026-12-02T09:00:50Z");
        let other_minute = wake("s:c3:1", "2026-12-02T09:01:00Z");
        let other_scenario = wake("t:c1:1", "2026-12-02T09:00:10Z");
        for w in [&a, &b, &other_minute, &other_scenario, &a] {
            parts.add(w).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(parts.remove(&other_minute));
        assert!(!parts.remove(&other_minute));
        let items = parts.take_items(4);
        assert_eq!(items.len(), 2, "the emptied part is not written");
        assert!(parts.take_items(4).is_empty(), "the batch ended");
        let first = items
            .iter()
            .find(|i| {
                get_s(i, keys::SK)
                    .is_some_and(|sk| sk.starts_with(&relance_core::instant::to_key(a.at)))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no part sorted by its earliest timer"));
        assert_eq!(get_s(&first, "kind"), Some(KIND));
        let read_back = read(&first).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_back,
            [b, a.clone()],
            "a armed twice is one timer (the last)"
        );
        let item = wake_item(&key(&first), &a);
        assert_eq!(get_s(&item, keys::SK), Some(keys::timer(&a).as_str()));
        assert_eq!(get_s(&item, "part_sk"), Some(key(&first).1.as_str()));
    }

    #[test]
    fn a_part_keeps_in_place_what_was_not_handed_on() {
        let a = wake("s:c1:1", "2026-12-02T09:00:10Z");
        let b = wake("s:c2:1", "2026-12-02T09:00:50Z");
        let c = wake("s:c3:1", "2026-12-02T09:00:55Z");
        let part = part_item("x.0", &[a.clone(), b.clone(), c.clone()], 4).unwrap_or_default();
        let k = key(&part);
        let mut listing = Listing::default();
        listing.add_part(k.clone(), vec![a.clone(), b.clone(), c.clone()]);
        listing.note(&k, &a);
        listing.note(&k, &b);
        assert!(listing.holds(&a) && listing.holds(&b) && !listing.holds(&c));
        listing.note_item(&b);
        assert!(listing.has_item(&b) && !listing.has_item(&a));
        assert!(
            listing
                .hand_on(&wake("s:c9:1", "2026-12-02T09:00:10Z"))
                .is_none()
        );
        assert_eq!(listing.hand_on(&a).map(|c| c.len()), Some(0));
        assert_eq!(
            listing.hand_on(&a).map(|c| c.len()),
            Some(0),
            "twice is once"
        );
        let changes = listing.hand_on(&b).unwrap_or_default();
        assert_eq!(
            changes.len(),
            1,
            "the last listed timer handed on changes the part"
        );
        let change = changes[0].clone();
        assert_eq!(change.key, k);
        let rewrite = change.rewrite.clone().unwrap_or_default();
        assert_eq!(key(&rewrite), k, "rewritten in place");
        assert_eq!(
            read(&rewrite).ok(),
            Some(vec![c.clone()]),
            "c was not listed"
        );
        assert_eq!(
            rewrite.get("due"),
            Some(&micros(c.at)),
            "read from its earliest timer left"
        );
        assert!(listing.holds(&a), "listed until the change is written");
        listing.applied(&k);
        assert!(!listing.holds(&a) && listing.hand_on(&b).is_none());
        // Every timer listed: the part goes. One timer in two parts: handed on to both.
        let other: Key = ("q".into(), "2#part#y.0".into());
        let mut listing = Listing::default();
        listing.add_part(k.clone(), vec![a.clone()]);
        listing.add_part(other.clone(), vec![a.clone()]);
        listing.note(&k, &a);
        listing.note(&other, &a);
        let changes = listing.hand_on(&a).unwrap_or_default();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.rewrite.is_none()));
        listing.applied(&k);
        assert!(listing.holds(&a), "still listed from the other part");
        listing.applied(&other);
        assert!(!listing.holds(&a));
    }

    #[test]
    fn a_part_whose_timers_do_not_read_says_why() {
        let mut item =
            part_item("x.0", &[wake("s:c1:1", "2026-12-02T09:00:10Z")], 1).unwrap_or_default();
        item.insert("wakes".into(), s("not packed"));
        assert!(read(&item).is_err_and(|why| why.contains("timer part")));
        item.remove("wakes");
        assert_eq!(
            read(&item),
            Err("a timer part without its timers".to_string())
        );
    }
}
