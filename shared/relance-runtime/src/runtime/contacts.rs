//! Contacts and what they do: contact writes, activity events, engagement, consent and
//! unsubscribes, scripted events and the history a play starts from.

use chrono::{DateTime, Utc};
use relance_core::consent::{self, ConsentEvent, ConsentRequest, source};
use relance_core::contact::{ActivityEvent, Contact, Engagement, EngagementKind};
use relance_core::engine::{Input, profile_changes};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{ContactChange, InactivityCheck, Status, Store};
use relance_core::scenario::Launch;
use relance_core::schedule::inactivity_deadline;
use relance_core::script::{Happening, ScriptedEvent};
use relance_core::unsubscribe::UnsubscribeClaim;
use relance_core::wire::{ActivityDetail, ContactDetail, EngagementDetail};

use super::error::{bad_key, check_profile_addresses, input_at};
use super::{LaunchReport, Runtime, RuntimeError, Unit, engine, history_for, store_err};

/// Whether an input is recorded once under its key (an API or queue input that may come
/// twice), or played every time (a script's line: two identical lines are two events, as a
/// simulation has always played them).
#[derive(Debug, Clone, Copy)]
enum Dedup {
    ByKey,
    Never,
}

/// How many times one row of an import is merged when its put keeps losing to concurrent
/// writers of the contact.
const ROW_ATTEMPTS: u32 = 3;

/// Who and how a contact write came: the consent log's source and actor for its changes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin<'a> {
    pub(super) source: &'a str,
    pub(super) actor: &'a str,
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Creates or updates a contact (fields are merged), then runs the matching contact
    /// event (`contact.created`, `contact.updated`, or the action given) through the scenarios.
    pub fn upsert_contact(
        &mut self,
        detail: ContactDetail,
        now: DateTime<Utc>,
    ) -> Result<ContactChange, RuntimeError> {
        let at = input_at(detail.at, now)?;
        let incoming = Contact::from_json(serde_json::Value::Object(detail.contact.clone()))
            .map_err(|e| RuntimeError::BadInput {
                field: "contact".into(),
                message: e.to_string(),
            })?;
        self.unit(now, |u| {
            let origin = Origin {
                source: source::API,
                actor: u.actor,
            };
            let (contact, change, _) = u.merge_contact(&incoming, origin)?;
            let name = match (detail.action, change) {
                (Some(action), _) => action.event_name(),
                (None, ContactChange::Added) => "contact.created",
                (None, ContactChange::Modified) => "contact.updated",
                (None, ContactChange::Unchanged) => return Ok(change),
            };
            let event = ActivityEvent {
                at,
                name: name.to_string(),
                properties: serde_json::Map::new(),
            };
            u.activity(contact, event)?;
            Ok(change)
        })
    }

    /// Records an activity event and runs it through the scenarios: exits, waits, triggers
    /// and inactivity clocks.
    pub fn activity(
        &mut self,
        detail: ActivityDetail,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        self.activity_with(detail, Dedup::ByKey, now)
    }

    fn activity_with(
        &mut self,
        detail: ActivityDetail,
        dedup: Dedup,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        if detail.event.trim().is_empty() {
            return Err(RuntimeError::BadInput {
                field: "event".into(),
                message: "must name the event".into(),
            });
        }
        if detail.contact.trim().is_empty() {
            return Err(RuntimeError::BadInput {
                field: "contact".into(),
                message: "must be a contact id".into(),
            });
        }
        // A profile update an event carries is a contact write: its addresses are checked.
        if let Some(changes) = profile_changes(&detail.event, &detail.properties) {
            check_profile_addresses(changes)?;
        }
        let key = match dedup {
            Dedup::ByKey => detail.dedup_key().map_err(bad_key)?,
            Dedup::Never => None,
        };
        self.unit(now, |u| {
            // A repeat of a recorded event changes nothing: no second row, no second wake.
            if let Some(k) = &key
                && u.store.input_seen(k).map_err(store_err)?
            {
                return Ok(());
            }
            let contact = match u.store.contact(&detail.contact).map_err(store_err)? {
                Some(c) => c,
                // An event may come before the contact: it is created bare.
                None => {
                    let c = Contact::bare(&detail.contact);
                    u.store.put_contact(&c, now).map_err(store_err)?;
                    c
                }
            };
            let event = ActivityEvent {
                at: input_at(detail.at, now)?,
                name: detail.event.clone(),
                properties: detail.properties.clone(),
            };
            u.activity(contact, event)?;
            // Recorded last: an input that failed half-way is retried in full (DynamoDB has
            // no transaction around the unit; SQLite makes it all one).
            if let Some(k) = &key {
                u.store.record_input(k, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// A one-click unsubscribe whose token was verified: the contact is unsubscribed from the
    /// token's communication type, and the `unsubscribed` engagement is recorded against the
    /// send (waking an enrollment that waits for it). Repeating it changes nothing more.
    pub fn unsubscribe(
        &mut self,
        claim: &UnsubscribeClaim,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let already = self
            .store
            .contact(&claim.contact)
            .map_err(store_err)?
            .ok_or_else(|| RuntimeError::BadInput {
                field: "token".into(),
                message: format!("no contact \"{}\"", claim.contact),
            })?
            .subscription(&claim.communication_type)
            == Some(false);
        if already {
            return Ok(());
        }
        let detail = EngagementDetail {
            idempotency_key: None,
            contact: claim.contact.clone(),
            scenario: claim.scenario.clone(),
            step: claim.step.clone(),
            kind: EngagementKind::Unsubscribed,
            url: None,
            link_tags: Vec::new(),
            at: Some(now),
        };
        let link = Origin {
            source: source::UNSUBSCRIBE_LINK,
            actor: "contact",
        };
        match self.engagement_from(detail, Some(link), Dedup::ByKey, now) {
            // The scenario may have been deleted since: the consent still changes.
            Ok(()) | Err(RuntimeError::UnknownScenario(_)) => {}
            Err(e) => return Err(e),
        }
        self.unit(now, |u| {
            let Some(mut contact) = u.store.contact(&claim.contact).map_err(store_err)? else {
                return Ok(());
            };
            if contact.subscription(&claim.communication_type) != Some(false) {
                let change = consent::Change {
                    subject: claim.communication_type.clone(),
                    state: consent::ConsentState::Unsubscribed,
                };
                let event = change.event(contact.id(), source::UNSUBSCRIBE_LINK, "contact", u.now);
                u.store.append_consent(&event).map_err(store_err)?;
                consent::apply_change(&mut contact, &change);
                u.store.put_contact(&contact, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// An explicit consent call: the only way to re-subscribe a contact after an opt-out
    /// (with a source) and to lift a suppression (with a reason). Answers the events appended
    /// (none when the contact already was in the state asked for).
    pub fn consent(
        &mut self,
        request: &ConsentRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConsentEvent>, RuntimeError> {
        request.check().map_err(|e| RuntimeError::BadInput {
            field: e.field.into(),
            message: e.message,
        })?;
        self.unit(now, |u| {
            let mut contact = u
                .store
                .contact(&request.contact)
                .map_err(store_err)?
                .ok_or_else(|| RuntimeError::BadInput {
                    field: "contact".into(),
                    message: format!("no contact \"{}\"", request.contact),
                })?;
            let (changes, applied) =
                request
                    .apply_to(&contact)
                    .map_err(|e| RuntimeError::BadInput {
                        field: e.field.into(),
                        message: e.message,
                    })?;
            let mut events = Vec::with_capacity(applied.len());
            for c in &applied {
                let mut event = c.event(contact.id(), &request.source, u.actor, u.now);
                event.reason = request.reason.clone();
                u.store.append_consent(&event).map_err(store_err)?;
                events.push(event);
            }
            if !applied.is_empty() {
                contact.merge(&changes);
                u.store.put_contact(&contact, u.now).map_err(store_err)?;
            }
            Ok(events)
        })
    }

    /// A contact's consent trail, oldest first (`relance consent show`).
    pub fn consent_trail(&mut self, contact: &str) -> Result<Vec<ConsentEvent>, RuntimeError> {
        self.store.consent_trail(contact).map_err(store_err)
    }

    /// Records engagement with a send and wakes the enrollment waiting on it; the consent
    /// changes it implies (unsubscribe, complaint, hard bounce, SMS opt-out) go to the log.
    pub fn engagement(
        &mut self,
        detail: EngagementDetail,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        self.engagement_from(detail, None, Dedup::ByKey, now)
    }

    /// [`Runtime::engagement`], with the consent source and actor forced (the one-click link).
    fn engagement_from(
        &mut self,
        detail: EngagementDetail,
        origin: Option<Origin<'_>>,
        dedup: Dedup,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        let key = match dedup {
            Dedup::ByKey => detail.dedup_key().map_err(bad_key)?,
            Dedup::Never => None,
        };
        self.unit(now, |u| {
            // A repeat of a recorded reaction changes nothing: no second row, no second wake.
            if let Some(k) = &key
                && u.store.input_seen(k).map_err(store_err)?
            {
                return Ok(());
            }
            let entry = u.entry(&detail.scenario)?;
            let no_contact = || RuntimeError::BadInput {
                field: "contact".into(),
                message: format!("no contact \"{}\"", detail.contact),
            };
            let contact_id = detail.contact.as_str();
            // The running enrollment's id and version, and the enrollment if the store has it
            // at hand: SQLite leaves it to be read below, when its scenario has something that
            // may react (a wait_for, exit_when). Parsing it was a quarter of recording an open.
            let running = u
                .store
                .running_enrollment_id(&entry.id, contact_id)
                .map_err(store_err)?;
            // The contact's fields are read (parsed) only when something reads them: a consent
            // change, or an enrollment the engagement may move. An open or a click usually
            // needs neither, and the parse was a tenth of recording it. A running enrollment
            // says the contact is there (contacts are never deleted), without a read.
            let mut contact = if detail.kind.may_change_consent() {
                Some(
                    u.store
                        .contact(&detail.contact)
                        .map_err(store_err)?
                        .ok_or_else(no_contact)?,
                )
            } else if running.is_some()
                || u.store.contact_exists(&detail.contact).map_err(store_err)?
            {
                None
            } else {
                return Err(no_contact());
            };
            let engagement = Engagement {
                at: input_at(detail.at, now)?,
                step: detail.step.clone(),
                kind: detail.kind,
                url: detail.url.clone(),
                link_tags: detail.link_tags.clone(),
            };
            u.store
                .append_engagement(contact_id, &entry.id, &engagement)
                .map_err(store_err)?;
            // The journal counts engagement per step (the report, the winner rule): joined
            // with the `sent` records on contact and step, it tells which variant engaged.
            let mut record = Record::new(
                engagement.at,
                contact_id,
                RecordKind::of_engagement(engagement.kind),
            )
            .step(&engagement.step);
            record.enrollment = running.as_ref().map(|(id, _, _)| id.clone());
            u.record(&entry.id, record)?;
            let version = running
                .as_ref()
                .map(|(_, v, _)| *v)
                .or(entry.active_version)
                .unwrap_or(entry.latest_version);
            let engine = engine(u.store, u.engines, &entry.id, version)?;
            if let Some(contact) = contact.as_mut() {
                let changes = engine.consent_changes(contact, &engagement);
                for (change, from) in &changes {
                    let (from, actor) = match origin {
                        Some(o) => (o.source, o.actor),
                        None => (*from, "provider"),
                    };
                    let event = change.event(contact_id, from, actor, u.now);
                    u.store.append_consent(&event).map_err(store_err)?;
                    consent::apply_change(contact, change);
                }
                if !changes.is_empty() {
                    u.store.put_contact(contact, now).map_err(store_err)?;
                }
            }
            // Held (paused) and retired (archived) scenarios record the reaction but do not
            // move; nor does an enrollment that cannot react to it (no history read then).
            let reacting = match running {
                Some((id, version, read))
                    if entry.status == Status::Active && engine.may_ever_react() =>
                {
                    let enrollment = match read {
                        Some(enrollment) => Some(enrollment),
                        None => u.store.enrollment(&id).map_err(store_err)?.map(|(e, _)| e),
                    };
                    enrollment
                        .filter(|e| engine.may_react(e))
                        .map(|e| (e, version))
                }
                _ => None,
            };
            if let Some((enrollment, version)) = reacting {
                let contact = match contact {
                    Some(contact) => contact,
                    None => u
                        .store
                        .contact(contact_id)
                        .map_err(store_err)?
                        .ok_or_else(no_contact)?,
                };
                let history = history_for(u.store, &engine, contact_id, &entry.id)?;
                let t = engine.handle(
                    &enrollment,
                    &contact,
                    &history,
                    Input::Engagement(&engagement),
                    now,
                );
                u.apply(&entry.id, version, Some(enrollment.version), t)?;
            }
            if let Some(k) = &key {
                u.store.record_input(k, now).map_err(store_err)?;
            }
            Ok(())
        })
    }

    /// Applies one line of an events file at `now`: an activity event, or engagement with a
    /// send of `scenario` (the player drives the runtime with them). Each line is an input of
    /// its own: two identical lines are two events, not a repeat to deduplicate.
    pub fn scripted(
        &mut self,
        scenario: &str,
        event: ScriptedEvent,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        match event.what {
            Happening::Activity(a) => self.activity_with(
                ActivityDetail {
                    idempotency_key: None,
                    contact: event.contact,
                    event: a.name,
                    properties: a.properties,
                    at: Some(a.at),
                },
                Dedup::Never,
                now,
            ),
            Happening::Engagement(g) => self.engagement_from(
                EngagementDetail {
                    idempotency_key: None,
                    contact: event.contact,
                    scenario: scenario.to_string(),
                    step: g.step,
                    kind: g.kind,
                    url: g.url,
                    link_tags: g.link_tags,
                    at: Some(g.at),
                },
                None,
                Dedup::Never,
                now,
            ),
        }
    }

    /// Records an event from before a play's start as history only: the contact's profile
    /// and consent change and conditions see the event later, but nothing is triggered,
    /// woken or entered (`relance simulate` reads the past of its events file so). An
    /// engagement counts against `scenario`'s sends; an unknown contact is created bare.
    pub fn record_past(
        &mut self,
        scenario: &str,
        event: ScriptedEvent,
        now: DateTime<Utc>,
    ) -> Result<(), RuntimeError> {
        self.unit(now, |u| {
            let mut contact = match u.store.contact(&event.contact).map_err(store_err)? {
                Some(c) => c,
                None => {
                    let c = Contact::bare(&event.contact);
                    u.store.put_contact(&c, u.now).map_err(store_err)?;
                    c
                }
            };
            match event.what {
                Happening::Activity(a) => {
                    if let Some(changes) = profile_changes(&a.name, &a.properties) {
                        let screened = consent::screen(Some(&contact), changes);
                        let origin = Origin {
                            source: source::PROFILE_UPDATE,
                            actor: u.actor,
                        };
                        u.log_screened(contact.id(), &screened, origin)?;
                        contact.merge(&screened.changes);
                        u.store.put_contact(&contact, u.now).map_err(store_err)?;
                    }
                    u.store
                        .append_activity(contact.id(), &a)
                        .map_err(store_err)?;
                }
                Happening::Engagement(g) => {
                    let version = u.entry(scenario)?.latest_version;
                    let engine = u.engine(scenario, version)?;
                    let changes = engine.consent_changes(&contact, &g);
                    for (change, from) in &changes {
                        let event = change.event(contact.id(), from, "provider", u.now);
                        u.store.append_consent(&event).map_err(store_err)?;
                        consent::apply_change(&mut contact, change);
                    }
                    if !changes.is_empty() {
                        u.store.put_contact(&contact, u.now).map_err(store_err)?;
                    }
                    u.store
                        .append_engagement(contact.id(), scenario, &g)
                        .map_err(store_err)?;
                }
            }
            Ok(())
        })
    }
}

impl<S> Unit<'_, S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// Merges an incoming contact into the stored one through the consent rule; answers the
    /// contact, how it changed, and how many consent values were kept from changing.
    /// [`Unit::merge_contact`], redone from a fresh read of the contact when its put lost to
    /// a concurrent writer (a store without transactions; up to [`ROW_ATTEMPTS`] times), so
    /// an import of many rows is not failed half-way by one contact changing meanwhile.
    pub(super) fn merge_contact_redone_on_conflict(
        &mut self,
        incoming: &Contact,
        origin: Origin<'_>,
    ) -> Result<(Contact, ContactChange, usize), RuntimeError> {
        let mut attempt = 1;
        loop {
            match self.merge_contact(incoming, origin) {
                Err(RuntimeError::Store(e))
                    if attempt < ROW_ATTEMPTS
                        && e.downcast_ref::<S::Fault>().is_some_and(S::is_conflict) =>
                {
                    tracing::info!(contact = incoming.id(), attempt, error = %e, "a concurrent writer changed the contact; merging the row again");
                    self.store.reread_contact(incoming.id());
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(super) fn merge_contact(
        &mut self,
        incoming: &Contact,
        origin: Origin<'_>,
    ) -> Result<(Contact, ContactChange, usize), RuntimeError> {
        let existing = self.store.contact(incoming.id()).map_err(store_err)?;
        let screened = consent::screen(existing.as_ref(), incoming.fields());
        let kept = screened.kept.len();
        self.log_screened(incoming.id(), &screened, origin)?;
        let merged = match existing {
            Some(mut existing) => {
                existing.merge(&screened.changes);
                existing
            }
            None => {
                let mut c = Contact::bare(incoming.id());
                c.merge(&screened.changes);
                c
            }
        };
        let change = self
            .store
            .put_contact(&merged, self.now)
            .map_err(store_err)?;
        Ok((merged, change, kept))
    }

    /// Appends the consent events of a screened update: the changes that apply, and a
    /// `kept` entry for each one refused.
    fn log_screened(
        &mut self,
        contact: &str,
        screened: &consent::Screened,
        origin: Origin<'_>,
    ) -> Result<(), RuntimeError> {
        // The opt-out (or suppression) that keeps a change is written again where the trail
        // does not end on it, so the trail says what the contact holds: only a state the
        // contact still holds (on a store without transactions, a contact changed since the
        // read makes the unit run again), confirmed before anything of this change is logged.
        let restated = if screened.kept.is_empty() {
            Vec::new()
        } else {
            let trail = self.store.consent_state(contact).map_err(store_err)?;
            consent::restatements(&screened.kept, &trail)
        };
        if !restated.is_empty() {
            self.store
                .confirm_contact_read(contact)
                .map_err(store_err)?;
        }
        for c in restated {
            let mut event = c.event(contact, source::RESTATED, "relance", self.now);
            event.reason = Some(
                "the contact holds this; its trail said otherwise (an earlier change that did not land, or a contact older than the log)"
                    .into(),
            );
            // Written only while the contact still holds it (a change landing since the
            // confirmation above makes the unit run again).
            self.store
                .append_consent_as_read(&event)
                .map_err(store_err)?;
        }
        // The restatements first (they concern the kept changes' subjects, not these): one that
        // finds the contact changed fails the unit before any of its changes is logged.
        for c in &screened.applied {
            let event = c.event(contact, origin.source, origin.actor, self.now);
            self.store.append_consent(&event).map_err(store_err)?;
        }
        for c in &screened.kept {
            tracing::info!(contact, subject = %c.subject, source = origin.source, "consent_kept");
            let event = c.kept(contact, origin.source, origin.actor, self.now);
            self.store.append_consent(&event).map_err(store_err)?;
        }
        Ok(())
    }

    /// The activity flow shared by events and contact changes; the same order as the
    /// simulator: history, inactivity clocks, running enrollments, then triggers.
    fn activity(&mut self, mut contact: Contact, event: ActivityEvent) -> Result<(), RuntimeError> {
        if let Some(changes) = profile_changes(&event.name, &event.properties) {
            let screened = consent::screen(Some(&contact), changes);
            let origin = Origin {
                source: source::PROFILE_UPDATE,
                actor: self.actor,
            };
            self.log_screened(contact.id(), &screened, origin)?;
            contact.merge(&screened.changes);
            self.store
                .put_contact(&contact, self.now)
                .map_err(store_err)?;
        }
        self.store
            .append_activity(contact.id(), &event)
            .map_err(store_err)?;
        let active = self.active()?;
        // Conversions first: an entry made by this very event does not convert on it.
        if active
            .iter()
            .any(|(_, _, e)| e.scenario().conversion.is_some())
        {
            self.convert(contact.id(), &event)?;
        }
        let mut keep = Vec::new();
        for (id, _, engine) in &active {
            if let Launch::Trigger(t) = &engine.scenario().launch
                && let (Some(source), Some(minutes)) = (t.inactivity_source(), t.inactivity_minutes)
                && source == event.name
            {
                let due = inactivity_deadline(event.at, minutes).ok_or_else(|| {
                    RuntimeError::BadInput {
                        field: "at".into(),
                        message: format!(
                            "{}: the inactivity check of scenario \"{id}\" ({minutes} minutes later) would fall past 9999-12-31",
                            event.at.to_rfc3339()
                        ),
                    }
                })?;
                self.store
                    .set_inactivity(&InactivityCheck {
                        scenario: id.clone(),
                        contact: contact.id().to_string(),
                        due,
                    })
                    .map_err(store_err)?;
                keep.push(id.clone());
            }
        }
        // Any other event of the contact cancels its pending inactivity triggers.
        self.store
            .clear_inactivity(contact.id(), &keep)
            .map_err(store_err)?;
        for (id, _, _) in &active {
            if let Some((enrollment, version)) = self
                .store
                .running_enrollment(id, contact.id())
                .map_err(store_err)?
            {
                let engine = self.engine(id, version)?;
                if !engine.may_react(&enrollment) {
                    continue;
                }
                let history = history_for(self.store, &engine, contact.id(), id)?;
                let t = engine.handle(
                    &enrollment,
                    &contact,
                    &history,
                    Input::Event(&event),
                    self.now,
                );
                if let Some(c) = self.apply(id, version, Some(enrollment.version), t)? {
                    // The next transition starts from the contact as stored now: on a store
                    // without transactions the write may have merged another writer's change
                    // (an opt-out the next step's send must see).
                    contact = self
                        .store
                        .contact(contact.id())
                        .map_err(store_err)?
                        .unwrap_or(c);
                }
            }
        }
        for (id, version, engine) in &active {
            if let Launch::Trigger(t) = &engine.scenario().launch
                && t.fires_on(&event.name, &event.properties)
            {
                self.try_enter(id, *version, &contact, &mut LaunchReport::default())?;
            }
        }
        Ok(())
    }
}
