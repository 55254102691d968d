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

/// What a unit's puts of a contact's profile are conditional on (see `put_contact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProfileBasis {
    /// The profile's `doc` as the unit first read it, or as its own latest put wrote it
    /// (`None`: absent). A later read (after a refused write elsewhere in the partition)
    /// does not move it: what the unit computed came from this one.
    Doc(Option<String>),
    /// A repair of a pending transition wrote the profile in this unit, after the unit may
    /// have read it: a contact the unit computed from its read is stale.
    Stale,
}

/// What the current unit knows of state-table items: `Some(item)`, or `None` for a key known
/// to be absent.
#[derive(Default)]
struct Known {
    active: bool,
    items: HashMap<(String, String), Option<Item>>,
    /// Partitions read whole in this unit and kept whole since.
    complete: HashSet<String>,
    /// Per contact partition, what the unit's puts of the profile are conditional on.
    profiles: HashMap<String, ProfileBasis>,
}

impl Known {
    fn clear(&mut self) {
        self.items.clear();
        self.complete.clear();
        self.profiles.clear();
    }

    /// The unit read `(pk, sk)`: a profile read for the first time is the unit's basis.
    fn read(&mut self, pk: &str, sk: &str, item: Option<&Item>) {
        if sk == keys::PROFILE && !self.profiles.contains_key(pk) {
            let doc = item.and_then(|i| get_s(i, "doc")).map(str::to_string);
            self.profiles.insert(pk.to_string(), ProfileBasis::Doc(doc));
        }
    }
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
                    k.clear();
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
            k.clear();
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
            if keys::contact_id(pk).is_some() {
                let profile = items
                    .iter()
                    .find(|i| get_s(i, keys::SK) == Some(keys::PROFILE));
                k.read(pk, keys::PROFILE, profile);
            }
        }
    }

    /// The item at `(pk, sk)` was read: it is `item`, or absent.
    pub(super) fn know(&self, pk: &str, sk: &str, item: Option<&Item>) {
        if let Ok(mut k) = self.0.lock()
            && k.active
        {
            k.items
                .insert((pk.to_string(), sk.to_string()), item.cloned());
            k.read(pk, sk, item);
        }
    }

    /// A put of `item` succeeded: the item is what it wrote (and a profile's basis, unless
    /// a repair made it stale).
    pub(super) fn wrote(&self, item: &Item) {
        let (Some(pk), Some(sk)) = (get_s(item, keys::PK), get_s(item, keys::SK)) else {
            return;
        };
        if let Ok(mut k) = self.0.lock()
            && k.active
        {
            k.items
                .insert((pk.to_string(), sk.to_string()), Some(item.clone()));
            if sk == keys::PROFILE && k.profiles.get(pk) != Some(&ProfileBasis::Stale) {
                let doc = get_s(item, "doc").map(str::to_string);
                k.profiles.insert(pk.to_string(), ProfileBasis::Doc(doc));
            }
        }
    }

    /// What the unit's puts of the profile in `pk` are conditional on; `None` outside a unit
    /// or before the unit read it.
    pub(super) fn profile_basis(&self, pk: &str) -> Option<ProfileBasis> {
        let k = self.0.lock().ok()?;
        if !k.active {
            return None;
        }
        k.profiles.get(pk).cloned()
    }

    /// The unit redoes work on the profile in `pk` from a fresh read: forget it and its basis.
    pub(super) fn reread_profile(&self, pk: &str) {
        if let Ok(mut k) = self.0.lock() {
            k.items.remove(&(pk.to_string(), keys::PROFILE.to_string()));
            k.complete.remove(pk);
            k.profiles.remove(pk);
        }
    }

    /// A repair wrote the profile in `pk`: the unit's own view of it is stale (its later puts
    /// of a contact computed before are refused, and the unit is run again).
    pub(super) fn profile_stale(&self, pk: &str) {
        if let Ok(mut k) = self.0.lock()
            && k.active
        {
            k.profiles.insert(pk.to_string(), ProfileBasis::Stale);
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

    fn profile(pk: &str, doc: &str) -> Item {
        let mut i = item(pk, keys::PROFILE, "");
        i.insert("doc".into(), AttributeValue::S(doc.into()));
        i
    }

    /// A unit's puts of a profile are conditional on what it computed from: its first read,
    /// then its own puts; not a later read (after a refused write in the partition), and
    /// never again once a repair wrote the profile.
    #[test]
    fn a_profiles_basis_is_the_units_first_read_or_own_put_until_a_repair() {
        let pk = keys::contact("a");
        let c = UnitReads::default();
        assert_eq!(c.profile_basis(&pk), None, "outside a unit");
        c.begin();
        assert_eq!(c.profile_basis(&pk), None, "not read yet");
        c.know_partition(&pk, &[profile(&pk, "P0"), item(&pk, "entry#s", "e")]);
        let p0 = ProfileBasis::Doc(Some("P0".into()));
        assert_eq!(c.profile_basis(&pk), Some(p0.clone()));
        c.forget(&pk, keys::PROFILE);
        c.know_partition(&pk, &[profile(&pk, "P1")]);
        c.know(&pk, keys::PROFILE, Some(&profile(&pk, "P2")));
        assert_eq!(
            c.profile_basis(&pk),
            Some(p0),
            "a later read does not move it"
        );
        c.wrote(&profile(&pk, "P3"));
        assert_eq!(
            c.profile_basis(&pk),
            Some(ProfileBasis::Doc(Some("P3".into())))
        );
        c.profile_stale(&pk);
        c.wrote(&profile(&pk, "P4"));
        assert_eq!(c.profile_basis(&pk), Some(ProfileBasis::Stale));
        c.end();
        c.begin();
        c.know(&pk, keys::PROFILE, None);
        assert_eq!(
            c.profile_basis(&pk),
            Some(ProfileBasis::Doc(None)),
            "absent"
        );
    }

    #[test]
    fn a_copy_of_the_store_knows_nothing() {
        let c = UnitReads::default();
        c.begin();
        c.wrote(&item("a", "b", "1"));
        assert_eq!(c.clone().get("a", "b"), None);
    }
}
