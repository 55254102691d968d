//! A batch's timers in parts: the wake timers a handler's batch arms go in a few timer-table
//! items (one per scenario and due minute, up to [`PART_WAKES_MAX`] timers, packed) instead of
//! an item each; the tick deletes a part once it has queued every timer in it.
//!
//! A timer item cost two write units (its put, and its deletion by the step executor that
//! fired it); a part of twenty costs about two for all of them. The timer's durability moves
//! with it: in the table until the tick hands it to the step queue, then in the queue (and its
//! dead-letter queue, alarmed, after five failed receives), as the channel messages already
//! are. So the step executor has no item to delete for a timer from a part: the tick marks its
//! message (`"stored": "part"`). A part's timer cancelled before it fires (an enrollment that
//! left its wait early) stays in the part and fires stale: the engine finds the enrollment no
//! longer waits for it and changes nothing. A part of a paused scenario is neither queued nor
//! deleted, as its timers would not be. Earlier builds do not read parts: they are written
//! under their own layout setting (`layouts`, `settings`/`timer_parts`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Wake;
use serde::{Deserialize, Serialize};

use super::item::{Item, batch_name, document_text, from_json, get_s, micros, n, packed_binary, s};
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
    batch: Option<String>,
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
        if let Some(part) = self.parts.iter_mut().rev().find(|p| {
            p.scenario == scenario && p.minute == minute && p.wakes.len() < PART_WAKES_MAX
        }) {
            part.wakes.retain(|x| x != w);
            part.wakes.push(w.clone());
            return Ok(());
        }
        let batch = match &self.batch {
            Some(b) => b.clone(),
            None => {
                let name = batch_name()?;
                self.batch = Some(name.clone());
                name
            }
        };
        let id = format!("{batch}.{}", self.parts.len());
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
        self.batch = None;
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
    let latest = wakes.iter().map(|w| w.at).max()?;
    let bucket = keys::bucket(keys::minute(earliest), keys::shard(id, shards));
    let packed: Vec<PartWake> = wakes.iter().map(PartWake::of).collect();
    Some(Item::from([
        (keys::PK.to_string(), s(bucket)),
        (keys::SK.to_string(), s(keys::timer_part(earliest, id))),
        ("kind".to_string(), s(KIND)),
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

/// The timers of a part item due at or before `now`, each as the item of a timer of its own
/// would read (`kind` timer), naming its part (`part_sk`, `part_size`); an item whose timers
/// do not read comes back as it is, with the reason (`unreadable`).
pub(super) fn expand(item: Item, now: DateTime<Utc>) -> Vec<Item> {
    let wakes = match document_text(&item, "wakes") {
        Some(text) => text.and_then(|t| from_json::<Vec<PartWake>>("timer part", &t)),
        None => Ok(Vec::new()),
    }
    .map_err(|e| e.to_string())
    .and_then(|ws| ws.iter().map(PartWake::wake).collect::<Result<Vec<_>, _>>());
    let wakes = match wakes {
        Ok(w) => w,
        Err(why) => {
            let mut item = item;
            item.insert("unreadable".into(), s(why));
            return vec![item];
        }
    };
    let pk = get_s(&item, keys::PK).unwrap_or_default().to_string();
    let part_sk = get_s(&item, keys::SK).unwrap_or_default().to_string();
    let size = wakes.len();
    wakes
        .into_iter()
        .filter(|w| w.at <= now)
        .map(|w| {
            Item::from([
                (keys::PK.to_string(), s(&pk)),
                (keys::SK.to_string(), s(keys::timer(&w))),
                ("kind".to_string(), s("timer")),
                ("due".to_string(), micros(w.at)),
                ("enrollment".to_string(), s(&w.enrollment)),
                ("contact".to_string(), s(&w.contact)),
                ("step".to_string(), s(&w.step)),
                ("part_sk".to_string(), s(&part_sk)),
                ("part_size".to_string(), n(size)),
            ])
        })
        .collect()
}

/// What the last listing of due timers found of a part.
#[derive(Debug, Clone)]
struct Listed {
    /// Timers in the part.
    size: usize,
    /// Timers listed (due, of an active scenario, within the listing's limit).
    listed: usize,
    /// The latest listed.
    latest: Option<DateTime<Utc>>,
    /// Every timer seen is of an active scenario.
    active: bool,
    /// The listed timers not consumed yet in this process (by key).
    pending: HashSet<String>,
}

impl Listed {
    /// Every timer of the part was listed.
    fn whole(&self) -> bool {
        self.active && self.listed == self.size
    }
}

/// What the last listing of due timers found in parts: the tick deletes the parts it queued
/// whole; a runtime firing timers in process deletes a part once it consumed every timer of
/// it.
#[derive(Debug, Clone, Default)]
pub(super) struct Listing {
    /// By part key (pk, sk).
    parts: HashMap<(String, String), Listed>,
    /// The part of each timer listed, by timer key.
    wakes: HashMap<String, (String, String)>,
}

impl Listing {
    /// Notes a timer of the part (`pk`, `part_sk`, `size` timers) listed, or left out because
    /// its scenario is not active.
    pub(super) fn note(&mut self, pk: &str, part_sk: &str, size: usize, w: &Wake, active: bool) {
        let key = (pk.to_string(), part_sk.to_string());
        let entry = self.parts.entry(key.clone()).or_insert(Listed {
            size,
            listed: 0,
            latest: None,
            active: true,
            pending: HashSet::new(),
        });
        if active {
            entry.listed += 1;
            entry.latest = entry.latest.max(Some(w.at));
            entry.pending.insert(keys::timer(w));
            self.wakes.insert(keys::timer(w), key);
        } else {
            entry.active = false;
        }
    }

    /// Whether `w` was listed from a part all of whose timers were listed (the tick queues
    /// them all, then deletes the part).
    pub(super) fn holds_whole(&self, w: &Wake) -> bool {
        self.wakes
            .get(&keys::timer(w))
            .and_then(|key| self.parts.get(key))
            .is_some_and(Listed::whole)
    }

    /// `w`, listed from a part, is consumed (fired or dropped) in this process: `None` when
    /// it was not listed from a part; `Some` with the part's key once every timer of the part
    /// is consumed (the part can go), `Some(None)` before.
    pub(super) fn consume(&mut self, w: &Wake) -> Option<Option<(String, String)>> {
        let key = self.wakes.get(&keys::timer(w))?.clone();
        let Some(part) = self.parts.get_mut(&key) else {
            return Some(None);
        };
        part.pending.remove(&keys::timer(w));
        if part.whole() && part.pending.is_empty() {
            self.parts.remove(&key);
            return Some(Some(key));
        }
        Some(None)
    }

    /// The parts whose every timer was listed, all due by `covered` (the tick queued them);
    /// the listing is emptied.
    pub(super) fn take_queued(&mut self, covered: DateTime<Utc>) -> Vec<(String, String)> {
        self.wakes.clear();
        std::mem::take(&mut self.parts)
            .into_iter()
            .filter(|(_, p)| p.whole() && p.latest.is_some_and(|l| l <= covered))
            .map(|(key, _)| key)
            .collect()
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
        let all = expand(
            first.clone(),
            "2026-12-02T09:01:00Z".parse().unwrap_or_default(),
        );
        assert_eq!(all.len(), 2, "a armed twice is one timer");
        assert_eq!(
            all[0]
                .get("part_size")
                .and_then(|v| v.as_n().ok())
                .map(String::as_str),
            Some("2")
        );
        let due = expand(first, "2026-12-02T09:00:30Z".parse().unwrap_or_default());
        assert_eq!(due.len(), 1, "only what is due");
        assert_eq!(get_s(&due[0], "enrollment"), Some("s:c1:1"));
        assert_eq!(get_s(&due[0], keys::SK), Some(keys::timer(&a).as_str()));
    }

    #[test]
    fn a_part_is_queued_once_every_timer_of_an_active_scenario_was_listed() {
        let a = wake("s:c1:1", "2026-12-02T09:00:10Z");
        let b = wake("s:c2:1", "2026-12-02T09:00:50Z");
        let covered: DateTime<Utc> = "2026-12-02T09:01:00Z".parse().unwrap_or_default();
        let mut listing = Listing::default();
        listing.note("p", "one", 2, &a, true);
        listing.note("p", "two", 2, &a, true);
        listing.note("p", "two", 2, &b, true);
        listing.note("p", "paused", 1, &a, false);
        assert!(listing.holds_whole(&b));
        assert!(!listing.holds_whole(&wake("s:c9:1", "2026-12-02T09:00:10Z")));
        assert_eq!(
            listing.take_queued(covered),
            [("p".to_string(), "two".to_string())]
        );
        assert!(!listing.holds_whole(&b), "emptied");
        listing.note("p", "two", 2, &a, true);
        listing.note("p", "two", 2, &b, true);
        assert!(
            listing
                .take_queued("2026-12-02T09:00:30Z".parse().unwrap_or_default())
                .is_empty(),
            "b is after what the tick queued"
        );
    }

    #[test]
    fn a_part_fired_in_process_goes_once_every_timer_of_it_is_consumed() {
        let a = wake("s:c1:1", "2026-12-02T09:00:10Z");
        let b = wake("s:c2:1", "2026-12-02T09:00:50Z");
        let mut listing = Listing::default();
        listing.note("p", "two", 2, &a, true);
        listing.note("p", "two", 2, &b, true);
        assert_eq!(
            listing.consume(&wake("s:c9:1", "2026-12-02T09:00:10Z")),
            None
        );
        assert_eq!(listing.consume(&a), Some(None));
        assert_eq!(listing.consume(&a), Some(None), "consumed twice is once");
        assert_eq!(
            listing.consume(&b),
            Some(Some(("p".to_string(), "two".to_string())))
        );
        // Listed in part only (the limit cut it): consumed, the part stays.
        let mut listing = Listing::default();
        listing.note("p", "two", 2, &a, true);
        assert_eq!(listing.consume(&a), Some(None));
    }

    #[test]
    fn a_part_whose_timers_do_not_read_comes_back_with_the_reason() {
        let mut item =
            part_item("x.0", &[wake("s:c1:1", "2026-12-02T09:00:10Z")], 1).unwrap_or_default();
        item.insert("wakes".into(), s("not packed"));
        let back = expand(item, "2026-12-02T09:01:00Z".parse().unwrap_or_default());
        assert_eq!(back.len(), 1);
        assert_eq!(get_s(&back[0], "kind"), Some(KIND));
        assert!(get_s(&back[0], "unreadable").is_some_and(|w| w.contains("timer part")));
    }
}
