//! The unit's read cache: the state-table items a unit of work has read or written, so a
//! second read of the same key within the unit costs no request.
//!
//! Why it stays correct: it lives only inside one unit of work (`Store::atomically` turns it
//! on and empties it on the way out), so it never carries an item from one input to the next,
//! nor from one attempt of an input to its retry. Within the unit it is a snapshot of what the
//! unit first read, updated by every write the store makes (a put stores the item it wrote,
//! a delete stores its absence, an update or a refused conditional write forgets the key, to
//! be read again). A concurrent writer is caught, as before, by the conditional writes the
//! unit makes (the enrollment's version, the entry mark's count, the input key): a unit that
//! read a stale item fails its commit and is retried with an empty cache.
//!
//! A contact's partition (profile, entry marks, activity, engagement, watches, inactivity
//! checks, consent) is read whole, by one `Query`, the first time the unit needs any of it:
//! the profile, the entry mark, the activity and the engagement a transition reads were four
//! requests. The partition is then known complete: a key of it not in the cache is absent,
//! and a prefix of it is served from the cache, until an update the cache cannot follow
//! (`forget`) makes it incomplete again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::item::{Item, get_s};
use crate::keys;

/// What the current unit knows of state-table items: `Some(item)`, or `None` for a key known
/// to be absent.
#[derive(Default)]
struct Known {
    active: bool,
    items: HashMap<(String, String), Option<Item>>,
    /// Partitions read whole in this unit and kept whole since.
    complete: HashSet<String>,
}

/// The cache, behind a lock since the store's reads take `&self`.
#[derive(Default)]
pub(super) struct UnitReads(Mutex<Known>);

impl std::fmt::Debug for UnitReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|k| k.items.len()).unwrap_or(0);
        write!(f, "UnitReads({n} items)")
    }
}

/// A copy of the store starts with nothing known: a cache belongs to one unit of one store.
impl Clone for UnitReads {
    fn clone(&self) -> UnitReads {
        UnitReads::default()
    }
}

impl UnitReads {
    /// Starts a unit (forgetting anything left); returns whether one was already running.
    pub(super) fn begin(&self) -> bool {
        match self.0.lock() {
            Ok(mut k) => {
                let nested = k.active;
                if !nested {
                    k.items.clear();
                    k.complete.clear();
                }
                k.active = true;
                nested
            }
            Err(_) => true,
        }
    }

    /// Ends the unit: nothing is kept for the next one.
    pub(super) fn end(&self) {
        if let Ok(mut k) = self.0.lock() {
            k.active = false;
            k.items.clear();
            k.complete.clear();
        }
    }

    /// What the unit knows of `(pk, sk)`: `Some(Some(item))`, `Some(None)` (known absent), or
    /// `None` (not known: read it).
    pub(super) fn get(&self, pk: &str, sk: &str) -> Option<Option<Item>> {
        let k = self.0.lock().ok()?;
        if !k.active {
            return None;
        }
        match k.items.get(&(pk.to_string(), sk.to_string())) {
            Some(known) => Some(known.clone()),
            None if k.complete.contains(pk) => Some(None),
            None => None,
        }
    }

    /// Whether a unit is running (and so worth reading a whole partition for).
    pub(super) fn active(&self) -> bool {
        self.0.lock().is_ok_and(|k| k.active)
    }

    /// The items of partition `pk` whose sort key starts with `prefix`, in sort-key order, when
    /// the partition is known whole; else `None` (query it).
    pub(super) fn partition(&self, pk: &str, prefix: &str) -> Option<Vec<Item>> {
        let k = self.0.lock().ok()?;
        if !k.active || !k.complete.contains(pk) {
            return None;
        }
        let mut found: Vec<(&String, &Item)> = k
            .items
            .iter()
            .filter(|((p, sk), _)| p == pk && sk.starts_with(prefix))
            .filter_map(|((_, sk), item)| item.as_ref().map(|i| (sk, i)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(b.0));
        Some(found.into_iter().map(|(_, i)| i.clone()).collect())
    }

    /// Partition `pk` was just read whole: these are all its items.
    pub(super) fn know_partition(&self, pk: &str, items: &[Item]) {
        if let Ok(mut k) = self.0.lock()
            && k.active
        {
            k.items.retain(|(p, _), _| p != pk);
            for item in items {
                if let Some(sk) = get_s(item, keys::SK) {
                    k.items
                        .insert((pk.to_string(), sk.to_string()), Some(item.clone()));
                }
            }
            k.complete.insert(pk.to_string());
        }
    }

    /// The item at `(pk, sk)` is now `item` (read, or written whole by a put), or absent.
    pub(super) fn know(&self, pk: &str, sk: &str, item: Option<&Item>) {
        if let Ok(mut k) = self.0.lock()
            && k.active
        {
            k.items
                .insert((pk.to_string(), sk.to_string()), item.cloned());
        }
    }

    /// A put of `item` succeeded: the item is what it wrote.
    pub(super) fn wrote(&self, item: &Item) {
        if let (Some(pk), Some(sk)) = (get_s(item, keys::PK), get_s(item, keys::SK)) {
            self.know(pk, sk, Some(item));
        }
    }

    /// The item at `(pk, sk)` changed in a way not known here (an update, a refused
    /// conditional write): read it again next time.
    pub(super) fn forget(&self, pk: &str, sk: &str) {
        if let Ok(mut k) = self.0.lock() {
            k.items.remove(&(pk.to_string(), sk.to_string()));
            k.complete.remove(pk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn item(pk: &str, sk: &str, v: &str) -> Item {
        let mut i = Item::new();
        i.insert(keys::PK.into(), AttributeValue::S(pk.into()));
        i.insert(keys::SK.into(), AttributeValue::S(sk.into()));
        i.insert("v".into(), AttributeValue::S(v.into()));
        i
    }

    #[test]
    fn outside_a_unit_nothing_is_kept() {
        let c = UnitReads::default();
        c.wrote(&item("a", "b", "1"));
        assert_eq!(c.get("a", "b"), None);
    }

    #[test]
    fn a_unit_sees_its_reads_and_writes_and_the_next_unit_starts_empty() {
        let c = UnitReads::default();
        assert!(!c.begin());
        c.know("a", "b", None);
        assert_eq!(c.get("a", "b"), Some(None));
        c.wrote(&item("a", "b", "2"));
        assert_eq!(c.get("a", "b"), Some(Some(item("a", "b", "2"))));
        c.forget("a", "b");
        assert_eq!(c.get("a", "b"), None);
        c.wrote(&item("a", "b", "3"));
        c.end();
        assert!(!c.begin());
        assert_eq!(c.get("a", "b"), None);
    }

    #[test]
    fn a_partition_read_whole_answers_its_keys_and_prefixes_until_an_update() {
        let c = UnitReads::default();
        c.begin();
        assert_eq!(c.partition("p", "a#"), None);
        c.know_partition("p", &[item("p", "a#2", "x"), item("p", "a#1", "y")]);
        c.wrote(&item("p", "e#1", "z"));
        let a = c.partition("p", "a#").unwrap_or_default();
        assert_eq!(a, vec![item("p", "a#1", "y"), item("p", "a#2", "x")]);
        assert_eq!(c.get("p", "profile"), Some(None));
        assert_eq!(c.partition("p", "").map(|v| v.len()), Some(3));
        c.know("p", "a#1", None);
        assert_eq!(c.partition("p", "a#").map(|v| v.len()), Some(1));
        c.forget("p", "entry#s");
        assert_eq!(c.partition("p", ""), None);
        assert_eq!(c.get("p", "profile"), None);
        assert_eq!(c.get("p", "e#1"), Some(Some(item("p", "e#1", "z"))));
    }

    #[test]
    fn a_copy_of_the_store_knows_nothing() {
        let c = UnitReads::default();
        c.begin();
        c.wrote(&item("a", "b", "1"));
        assert_eq!(c.clone().get("a", "b"), None);
    }
}
