//! The contact port on DynamoDB: profiles, activity, engagement, inputs seen, and the sends a
//! contact received (read from its enrollments).

use relance_core::contact::{
    ActivityEvent, Contact, Engagement, EngagementKind, History, HistoryNeeds, SendMark,
};
use relance_core::engine::Enrollment;
use relance_core::policy::Retained;
use relance_core::ports::{ContactChange, ContactStore};

use super::DynamoStore;
use super::item::{Item, from_json, get_n, get_s, parse_ts, s, to_json};
use super::reads::ProfileBasis;
use crate::error::StoreError;
use crate::keys;
use chrono::{DateTime, Utc};

/// How many of a contact's latest enrollments in a scenario `history` reads for its sends
/// (frequency-cap windows are short; older ones cannot matter).
const MAX_ENROLLMENTS_READ: usize = 5;

impl ContactStore for DynamoStore {
    type Error = StoreError;

    fn contact(&mut self, id: &str) -> Result<Option<Contact>, StoreError> {
        match self.get(&keys::contact(id), keys::PROFILE)? {
            Some(item) => contact_of(&item).map(Some),
            None => Ok(None),
        }
    }

    fn put_contact(
        &mut self,
        contact: &Contact,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, StoreError> {
        let pk = keys::contact(contact.id());
        let current = self.get(&pk, keys::PROFILE)?;
        let change = match &current {
            None => ContactChange::Added,
            Some(item) => match contact_of(item) {
                Ok(c) if &c == contact => return Ok(ContactChange::Unchanged),
                _ => ContactChange::Modified,
            },
        };
        // Conditional on the profile the contact was computed from: as this unit first read
        // it (or last wrote it), not as a later read in the unit found it; outside a unit, as
        // it is now. So a contact changed by a concurrent writer since (an opt-out, another
        // event's fields, a push service's gone subscription removed) is never overwritten
        // by a change computed from the older read: the put is refused and the unit fails
        // (`Conflict`), to be run again from a fresh read.
        let expected = match self.unit_reads.profile_basis(&pk) {
            Some(ProfileBasis::Stale) => {
                return Err(contact_conflict(contact.id()));
            }
            Some(ProfileBasis::Doc(doc)) => doc,
            None => current
                .as_ref()
                .and_then(|i| get_s(i, "doc"))
                .map(str::to_string),
        };
        if !self.put_profile(contact, now, expected.as_deref())? {
            return Err(contact_conflict(contact.id()));
        }
        Ok(change)
    }

    fn contact_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let items = self.scan_all("sk = :p", &[(":p", "profile")], Some("pk"))?;
        let mut ids: Vec<String> = items
            .iter()
            .filter_map(|i| {
                get_s(i, keys::PK)
                    .and_then(keys::contact_id)
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn append_activity(&mut self, contact: &str, event: &ActivityEvent) -> Result<(), StoreError> {
        let props = to_json(&event.properties);
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(contact)));
        item.insert(
            keys::SK.into(),
            s(keys::activity(event.at, &event.name, &props)),
        );
        item.insert("name".into(), s(&event.name));
        item.insert("properties".into(), s(props));
        item.insert("at".into(), s(keys::text(event.at)));
        self.expire(&mut item, Retained::Activity, event.at);
        self.put(item)
    }

    fn append_engagement(
        &mut self,
        contact: &str,
        scenario: &str,
        e: &Engagement,
    ) -> Result<(), StoreError> {
        let tags = to_json(&e.link_tags);
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(contact)));
        item.insert(
            keys::SK.into(),
            s(keys::engagement(
                scenario,
                e.at,
                &[
                    &e.step,
                    e.kind.as_str(),
                    e.url.as_deref().unwrap_or(""),
                    &tags,
                ],
            )),
        );
        item.insert("step".into(), s(&e.step));
        item.insert("kind".into(), s(e.kind.as_str()));
        item.insert("at".into(), s(keys::text(e.at)));
        if let Some(u) = &e.url {
            item.insert("url".into(), s(u));
        }
        item.insert("link_tags".into(), s(tags));
        self.expire(&mut item, Retained::Engagement, e.at);
        self.put(item)
    }

    fn input_seen(&mut self, key: &str) -> Result<bool, StoreError> {
        let pk = keys::input(key);
        // Recorded by an earlier input of this batch, waiting for the flush: seen.
        let waiting = self
            .deferred_markers
            .iter()
            .any(|m| get_s(m, keys::PK) == Some(pk.as_str()));
        Ok(waiting || self.get(&pk, keys::INPUT)?.is_some())
    }

    fn record_input(&mut self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::input(key)));
        item.insert(keys::SK.into(), s(keys::INPUT));
        item.insert("at".into(), s(keys::text(now)));
        if self.defers() {
            // In a batch, with the journal items at the flush (the key is recorded last, as
            // here: an input whose flush fails is redelivered and redone, idempotently). A
            // repeat never gets here (`input_seen`, which reads the waiting keys too), so an
            // unconditional put keeps the first record as the conditional one does.
            self.deferred_markers.push(item);
            return Ok(());
        }
        // Conditional: the first record of a key stays; a repeat changes nothing.
        self.put_new(item).map(|_| ())
    }

    fn history(
        &mut self,
        contact: &str,
        scenario: &str,
        needs: HistoryNeeds,
    ) -> Result<History, StoreError> {
        let pk = keys::contact(contact);
        let mut h = History::default();
        if needs.events {
            for item in self.query(&self.config.state_table, &pk, keys::ACTIVITY_PREFIX)? {
                h.events.push(ActivityEvent {
                    at: parse_ts(get_s(&item, "at").unwrap_or(""))?,
                    name: get_s(&item, "name").unwrap_or("").to_string(),
                    properties: from_json(
                        "activity properties",
                        get_s(&item, "properties").unwrap_or("{}"),
                    )?,
                });
            }
        }
        if needs.engagement {
            let prefix = keys::engagement_prefix(scenario);
            for item in self.query(&self.config.state_table, &pk, &prefix)? {
                h.engagement.push(engagement_from(&item)?);
            }
        }
        // The scenario's earlier sends to the contact (for frequency caps) are in its
        // enrollments' `sent` maps: no separate write per send.
        if needs.sends {
            h.sends = self.scenario_sends(contact, scenario)?;
        }
        h.events.sort_by_key(|e| e.at);
        h.engagement.sort_by_key(|e| e.at);
        Ok(h)
    }

    fn contact_sends(&mut self, contact: &str) -> Result<Vec<SendMark>, StoreError> {
        let pk = keys::contact(contact);
        let mut sends = Vec::new();
        for item in self.query(&self.config.state_table, &pk, keys::ENTRY_PREFIX)? {
            let scenario = get_s(&item, keys::SK)
                .and_then(keys::entry_scenario)
                .unwrap_or("")
                .to_string();
            sends.extend(self.scenario_sends(contact, &scenario)?);
        }
        sends.sort_by_key(|m| m.at);
        Ok(sends)
    }

    fn contact_engagement(&mut self, contact: &str) -> Result<Vec<Engagement>, StoreError> {
        // One Query on the contact's partition: every scenario's engagement shares the `e#`
        // prefix (keys::ENGAGEMENT_PREFIX); the kinds are picked here.
        let pk = keys::contact(contact);
        let mut out = Vec::new();
        for item in self.query(&self.config.state_table, &pk, keys::ENGAGEMENT_PREFIX)? {
            let e = engagement_from(&item)?;
            if matches!(e.kind, EngagementKind::Opened | EngagementKind::Clicked) {
                out.push(e);
            }
        }
        out.sort_by_key(|e| e.at);
        Ok(out)
    }
}

/// The contact a profile item holds.
pub(super) fn contact_of(item: &Item) -> Result<Contact, StoreError> {
    let v: serde_json::Value = from_json("contact", get_s(item, "doc").unwrap_or("null"))?;
    Contact::from_stored(v).map_err(|e| StoreError::Corrupt {
        what: "contact",
        why: e.to_string(),
    })
}

/// A contact's profile changed since the unit read it (a conditional put refused).
pub(super) fn contact_conflict(id: &str) -> StoreError {
    StoreError::Conflict(format!("contact {id}"))
}

impl DynamoStore {
    /// Puts `contact`'s profile if its `doc` is still `expected` (`None`: if there is no
    /// profile, or one without a `doc`); false when a concurrent writer changed it.
    pub(super) fn put_profile(
        &self,
        contact: &Contact,
        now: DateTime<Utc>,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.put_profile_doc(contact.id(), &to_json(contact), now, expected)
    }

    /// [`DynamoStore::put_profile`] of a profile already in its stored form, `doc`.
    pub(super) fn put_profile_doc(
        &self,
        id: &str,
        doc: &str,
        now: DateTime<Utc>,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::contact(id)));
        item.insert(keys::SK.into(), s(keys::PROFILE));
        item.insert("doc".into(), s(doc));
        item.insert("updated_at".into(), s(keys::text(now)));
        self.before_profile_put.run();
        match expected {
            // No profile read (or one without its `doc`, which this put repairs): created
            // only while there is still none.
            None => self.put_if(item, "attribute_not_exists(doc)", Vec::new()),
            Some(doc) => self.put_if(item, "doc = :seen", vec![(":seen", s(doc))]),
        }
    }

    /// Changes a contact's profile outside a unit of work, with one read of the profile and no
    /// read of the rest of its partition (a function whose role reads only the profile):
    /// `change` applied to the profile as read now, put conditionally on that read, read again
    /// and redone when a concurrent writer changed it (up to `CONTACT_ATTEMPTS`
    /// times). False when the contact does not exist.
    pub fn change_contact(
        &self,
        id: &str,
        now: DateTime<Utc>,
        mut change: impl FnMut(&mut Contact),
    ) -> Result<bool, StoreError> {
        let pk = keys::contact(id);
        for _ in 0..super::CONTACT_ATTEMPTS {
            let Some(item) = self.get_uncached(&pk, keys::PROFILE)? else {
                return Ok(false);
            };
            let stored = contact_of(&item)?;
            let mut changed = stored.clone();
            change(&mut changed);
            if changed == stored || self.put_profile(&changed, now, get_s(&item, "doc"))? {
                return Ok(true);
            }
        }
        Err(contact_conflict(id))
    }
}

/// An engagement as `append_engagement` wrote it.
fn engagement_from(item: &Item) -> Result<Engagement, StoreError> {
    let kind = get_s(item, "kind").unwrap_or("");
    let kind = EngagementKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or(StoreError::Corrupt {
            what: "engagement kind",
            why: kind.to_string(),
        })?;
    Ok(Engagement {
        at: parse_ts(get_s(item, "at").unwrap_or(""))?,
        step: get_s(item, "step").unwrap_or("").to_string(),
        kind,
        url: get_s(item, "url").map(str::to_string),
        link_tags: from_json("link tags", get_s(item, "link_tags").unwrap_or("[]"))?,
    })
}

impl DynamoStore {
    /// Whose send an SMS message id was: (contact, scenario, step), as the SMS sender
    /// recorded it for a week.
    pub fn sms_send(
        &self,
        message_id: &str,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        Ok(self
            .get_uncached(&keys::sms(message_id), keys::SMS_SEND)?
            .map(|item| {
                let field = |k: &str| get_s(&item, k).unwrap_or("").to_string();
                (field("contact"), field("scenario"), field("step"))
            }))
    }

    /// One scenario's sends to a contact, from its latest enrollments' `sent` maps.
    pub(super) fn scenario_sends(
        &self,
        contact: &str,
        scenario: &str,
    ) -> Result<Vec<SendMark>, StoreError> {
        let pk = keys::contact(contact);
        let entries = self
            .get(&pk, &keys::entry(scenario))?
            .and_then(|e| get_n(&e, "entries"))
            .unwrap_or(0);
        let mut sends = Vec::new();
        for n in (1..=entries).rev().take(MAX_ENROLLMENTS_READ) {
            if let Some(item) = self.enrollment_item(&keys::enrollment_id(scenario, contact, n))? {
                let e: Enrollment = from_json("enrollment", get_s(&item, "doc").unwrap_or("null"))?;
                sends.extend(e.sent.values().map(|at| SendMark { at: *at }));
            }
        }
        sends.sort_by_key(|m| m.at);
        Ok(sends)
    }
}
