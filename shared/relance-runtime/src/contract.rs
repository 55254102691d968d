//! The port contract suite: one function per written contract of `relance_core::ports`, generic
//! over a factory of empty stores, so every store (memory, SQLite, DynamoDB) is held to the
//! same rules. Each function panics on the first broken rule, naming it.
//!
//! The suite drives the stores the way the runtime does: an entry reads the running
//! enrollment and the entry mark, records the entry and commits the entering transition in
//! one unit of work; sends come with the transition that made them
//! (`commit_transition`). [`all`] runs every contract that holds for every store, DynamoDB
//! included. Two groups ask more, of the stores that can give it: [`transactional`] (units of
//! work are transactions, the running lock is checked when an enrollment is saved, purge
//! deletes: memory, SQLite) and [`next_due_exact`] (`next_due` is the earliest pending item,
//! for a runner that sleeps until it: memory, SQLite).
//!
//! The functions are synchronous like the ports. The factory gives a store no other test
//! writes to (a fresh database, or fresh table names).

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, TimeDelta, Utc};
use relance_core::consent::{ConsentEvent, ConsentState};
use relance_core::contact::{ActivityEvent, Contact, Engagement, EngagementKind, HistoryNeeds};
use relance_core::engine::{
    Effect, Enrollment, EnrollmentState, Hold, Recipient, Send, Transition, Wake,
};
use relance_core::journal::{Record, RecordKind};
use relance_core::policy::Retained;
use relance_core::ports::{
    ContactChange, ConversionWatch, Due, InactivityCheck, SourceFormat, Status, StepWrite, Store,
};
use relance_core::render::Rendered;
use relance_core::scenario::Channel;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_112_000, 0).unwrap_or_default() // 2026-12-01T08:00:00Z
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(minutes)
}

/// Unwraps a port call, naming the contract it served.
fn ok<T, E: Debug>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: the store failed: {e:?}"))
}

/// Stores scenario `id` (a version of any text) with `status`.
fn scenario<S: Store>(store: &mut S, id: &str, status: Status)
where
    S::Fault: Debug,
{
    let v = ok(
        "put_version",
        store.put_version(id, SourceFormat::Yaml, &format!("id: {id}\n"), t0()),
    );
    ok("set_status", store.set_status(id, status, Some(v), t0()));
}

fn enrollment(scenario: &str, contact: &str, n: u32, version: u64) -> Enrollment {
    Enrollment {
        id: format!("{scenario}:{contact}:{n}"),
        scenario: scenario.into(),
        contact: contact.into(),
        version,
        entered_at: t0(),
        state: EnrollmentState::Due {
            step: "first".into(),
            at: at(60),
            hold: Hold::Delay,
        },
        sent: BTreeMap::new(),
    }
}

fn ended(mut e: Enrollment) -> Enrollment {
    e.version += 1;
    e.state = EnrollmentState::Ended {
        outcome: relance_core::engine::Outcome::Exited,
        at: at(1),
    };
    e
}

fn wake(e: &Enrollment, step: &str, minutes: i64) -> Wake {
    Wake {
        enrollment: e.id.clone(),
        contact: e.contact.clone(),
        step: step.into(),
        at: at(minutes),
    }
}

fn ready<T: Debug>(due: Vec<Due<T>>) -> Vec<T> {
    due.into_iter()
        .map(|d| match d {
            Due::Ready(t) => t,
            Due::Unreadable(row) => {
                panic!("a row written through the ports does not read: {row:?}")
            }
        })
        .collect()
}

fn send(e: &Enrollment, step: &str) -> Send {
    Send {
        enrollment: e.id.clone(),
        contact: e.contact.clone(),
        step: step.into(),
        message: "m".into(),
        channel: Channel::Email,
        communication_type: "marketing".into(),
        to: Recipient::Email("ada@example.com".into()),
        content: Rendered {
            subject: Some("Hello".into()),
            text: Some("Hello".into()),
            ..Rendered::default()
        },
        idempotency_key: format!("{}:{step}", e.id),
    }
}

/// Enters `contact` in `scenario` at `now` as the runtime does, in one unit of work: reads the
/// running enrollment (one runs: no entry, None, as the engine answers `already_running`) and
/// the entry mark, records the entry, then commits the entering transition, whose enrollment
/// is numbered after the mark and sends `steps` (each in its `sent` map and as a send
/// effect).
fn enter<S: Store>(
    store: &mut S,
    scenario: &str,
    contact: &str,
    now: DateTime<Utc>,
    steps: &[&str],
) -> Option<Enrollment>
where
    S::Fault: Debug,
{
    let unit = store.atomically(|s| -> Result<Option<Enrollment>, S::Fault> {
        if s.running_enrollment(scenario, contact)?.is_some() {
            return Ok(None);
        }
        let n = s
            .entry_mark(scenario, contact)?
            .map_or(1, |m| m.entries + 1);
        let mut e = enrollment(scenario, contact, n, 0);
        e.entered_at = now;
        let mut effects = Vec::new();
        for step in steps {
            e.sent.insert((*step).to_string(), now);
            effects.push(Effect::Send(send(&e, step)));
        }
        s.mark_entry(scenario, contact, now)?;
        let t = Transition {
            enrollment: e.clone(),
            contact: None,
            contact_read: None,
            effects,
        };
        s.commit_transition(scenario, 1, None, &t, now)?;
        Ok(Some(e))
    });
    ok("enter", ok("atomically", unit))
}

/// Ends a running enrollment as the runtime does: a transition committed on its version.
fn end<S: Store>(store: &mut S, e: &Enrollment)
where
    S::Fault: Debug,
{
    let t = Transition {
        enrollment: ended(e.clone()),
        contact: None,
        contact_read: None,
        effects: Vec::new(),
    };
    let unit =
        store.atomically(|s| s.commit_transition(&e.scenario, 1, Some(e.version), &t, at(1)));
    ok("end", ok("atomically", unit));
}

/// Checks `next_due` against the earliest pending item (None: nothing pending): a store
/// answers None, or a time no later than that item, and never a time when nothing is
/// pending.
fn next_due_bound<S: Store>(store: &mut S, earliest: Option<DateTime<Utc>>, what: &str)
where
    S::Fault: Debug,
{
    match (ok("next_due", store.next_due()), earliest) {
        (None, _) => {}
        (Some(t), Some(e)) => assert!(
            t <= e,
            "{what}: next_due says {t}, after the earliest pending item ({e})"
        ),
        (Some(t), None) => panic!("{what}: next_due says {t} with nothing pending"),
    }
}

/// Runs every contract that holds for every store.
pub fn all<S: Store>(mut new: impl FnMut() -> S)
where
    S::Fault: Debug,
{
    scenario_versions(new());
    contacts_and_history(new());
    engagement_across_scenarios(new());
    conditional_saves(new());
    one_running_enrollment(new());
    entry_marks(new());
    due_order(new());
    timer_fires_once(new());
    timers_armed_out_of_order(new());
    paused_scenarios_hold_their_due_items(new());
    inactivity_checks(new());
    launches(new());
    outbox_once_per_key(new());
    input_keys(new());
    consent_log(new());
    journal_in_order(new());
    conversion_watches(new());
    entries_in_bulk(new());
    steps_in_bulk(new());
}

/// Versions are numbered from 1, immutable; a new scenario is a draft; status writes stick.
pub fn scenario_versions<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    let v1 = ok(
        "put_version",
        store.put_version("welcome", SourceFormat::Yaml, "v1", t0()),
    );
    let v2 = ok(
        "put_version",
        store.put_version("welcome", SourceFormat::Json, "v2", t0()),
    );
    assert_eq!(
        (v1, v2),
        (1, 2),
        "versions count from 1, one more each time"
    );
    let entry = ok("scenario", store.scenario("welcome")).expect("a stored scenario reads back");
    assert_eq!(entry.status, Status::Draft, "a new scenario is a draft");
    assert_eq!(entry.latest_version, 2);
    let first = ok("scenario_source", store.scenario_source("welcome", 1)).expect("version 1");
    assert_eq!(
        (first.text.as_str(), first.format),
        ("v1", SourceFormat::Yaml),
        "versions are immutable"
    );
    ok(
        "set_status",
        store.set_status("welcome", Status::Active, Some(2), t0()),
    );
    let entry = ok("scenario", store.scenario("welcome")).expect("stored");
    assert_eq!(
        (entry.status, entry.active_version),
        (Status::Active, Some(2))
    );
    ok(
        "set_status",
        store.set_status("welcome", Status::Paused, None, t0()),
    );
    let entry = ok("scenario", store.scenario("welcome")).expect("stored");
    assert_eq!(
        (entry.status, entry.active_version),
        (Status::Paused, Some(2)),
        "no version given keeps the active one"
    );
    assert_eq!(
        ok("scenarios", store.scenarios(Some(Status::Active))).len(),
        0
    );
    assert_eq!(ok("scenarios", store.scenarios(None)).len(), 1);
    assert!(ok("scenario", store.scenario("other")).is_none());
    ok("put_setting", store.put_setting("policy", "a: 1", t0()));
    ok("put_setting", store.put_setting("policy", "a: 2", t0()));
    assert_eq!(
        ok("setting", store.setting("policy")).as_deref(),
        Some("a: 2"),
        "a setting is replaced"
    );
}

/// A contact write says how it changed; history is oldest first (in no particular order
/// within one instant), engagement and sends per scenario, the sends those committed with
/// the contact's enrollments.
pub fn contacts_and_history<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    scenario(&mut store, "other", Status::Active);
    let mut ada = Contact::bare("ada");
    assert_eq!(
        ok("put_contact", store.put_contact(&ada, t0())),
        ContactChange::Added
    );
    assert_eq!(
        ok("put_contact", store.put_contact(&ada, t0())),
        ContactChange::Unchanged
    );
    ada.merge(
        &serde_json::from_value(serde_json::json!({"first_name": "Ada"})).unwrap_or_default(),
    );
    assert_eq!(
        ok("put_contact", store.put_contact(&ada, t0())),
        ContactChange::Modified
    );
    assert_eq!(
        ok("contact", store.contact("ada")),
        Some(ada.clone()),
        "a contact reads back whole"
    );
    ok(
        "put_contact",
        store.put_contact(&Contact::bare("bob"), t0()),
    );
    let mut ids = ok("contact_ids", store.contact_ids());
    ids.sort();
    assert_eq!(ids, ["ada", "bob"], "every contact id");
    assert!(ok("contact_exists", store.contact_exists("ada")));
    assert!(!ok("contact_exists", store.contact_exists("nobody")));
    for (minutes, name) in [(5, "later"), (1, "earlier"), (5, "later-again")] {
        let event = ActivityEvent {
            at: at(minutes),
            name: name.into(),
            properties: Default::default(),
        };
        ok("append_activity", store.append_activity("ada", &event));
    }
    let engagement = |minutes, step: &str| Engagement {
        at: at(minutes),
        step: step.into(),
        kind: EngagementKind::Opened,
        url: None,
        link_tags: Vec::new(),
    };
    ok(
        "append_engagement",
        store.append_engagement("ada", "welcome", &engagement(3, "second")),
    );
    ok(
        "append_engagement",
        store.append_engagement("ada", "welcome", &engagement(2, "first")),
    );
    ok(
        "append_engagement",
        store.append_engagement("ada", "other", &engagement(1, "x")),
    );
    enter(&mut store, "welcome", "ada", at(4), &["first"]).expect("nothing runs");
    enter(&mut store, "other", "ada", at(2), &["first"]).expect("nothing runs");
    let h = ok(
        "history",
        store.history("ada", "welcome", HistoryNeeds::ALL),
    );
    let names: Vec<&str> = h.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[0], "earlier", "activity oldest first");
    let mut same_instant = names[1..].to_vec();
    same_instant.sort_unstable();
    assert_eq!(
        same_instant,
        ["later", "later-again"],
        "every event of one instant, in any order"
    );
    assert!(
        h.events.windows(2).all(|w| w[0].at <= w[1].at),
        "activity oldest first"
    );
    let steps: Vec<&str> = h.engagement.iter().map(|e| e.step.as_str()).collect();
    assert_eq!(
        steps,
        ["first", "second"],
        "the scenario's engagement only, oldest first"
    );
    assert_eq!(
        h.sends.iter().map(|s| s.at).collect::<Vec<_>>(),
        [at(4)],
        "the scenario's sends only"
    );
    // Only the parts asked for are read; the others are empty.
    fn part<T: Clone>(asked: bool, all: &[T]) -> Vec<T> {
        if asked { all.to_vec() } else { Vec::new() }
    }
    for asked in 0..3 {
        let needs = HistoryNeeds {
            events: asked == 0,
            engagement: asked == 1,
            sends: asked == 2,
        };
        let p = ok("history", store.history("ada", "welcome", needs));
        assert_eq!(p.events, part(needs.events, &h.events), "{needs:?}");
        assert_eq!(
            p.engagement,
            part(needs.engagement, &h.engagement),
            "{needs:?}"
        );
        assert_eq!(p.sends, part(needs.sends, &h.sends), "{needs:?}");
    }
    let all = ok("contact_sends", store.contact_sends("ada"));
    assert_eq!(
        all.iter().map(|s| s.at).collect::<Vec<_>>(),
        [at(2), at(4)],
        "every scenario's sends, oldest first"
    );
}

/// `contact_engagement` is the contact's opens and clicks with every scenario, oldest first
/// (in no particular order within one instant), and nothing else: no other kind, no other
/// contact.
pub fn engagement_across_scenarios<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    scenario(&mut store, "other", Status::Active);
    ok(
        "put_contact",
        store.put_contact(&Contact::bare("ada"), t0()),
    );
    assert!(
        ok("contact_engagement", store.contact_engagement("ada")).is_empty(),
        "no engagement yet"
    );
    let engagement = |minutes, step: &str, kind| Engagement {
        at: at(minutes),
        step: step.into(),
        kind,
        url: (kind == EngagementKind::Clicked).then(|| "https://example.com/a".into()),
        link_tags: Vec::new(),
    };
    for (contact, scenario, e) in [
        (
            "ada",
            "welcome",
            engagement(30, "second", EngagementKind::Clicked),
        ),
        ("ada", "other", engagement(10, "x", EngagementKind::Opened)),
        (
            "ada",
            "welcome",
            engagement(20, "first", EngagementKind::Opened),
        ),
        (
            "ada",
            "welcome",
            engagement(20, "first", EngagementKind::Delivered),
        ),
        ("ada", "other", engagement(40, "x", EngagementKind::Bounced)),
        ("ada", "third", engagement(30, "y", EngagementKind::Opened)),
        (
            "bob",
            "welcome",
            engagement(15, "first", EngagementKind::Opened),
        ),
    ] {
        ok(
            "append_engagement",
            store.append_engagement(contact, scenario, &e),
        );
    }
    let got = ok("contact_engagement", store.contact_engagement("ada"));
    assert!(
        got.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first: {got:?}"
    );
    let mut seen: Vec<(DateTime<Utc>, &str, EngagementKind, Option<&str>)> = got
        .iter()
        .map(|e| (e.at, e.step.as_str(), e.kind, e.url.as_deref()))
        .collect();
    seen.sort_by_key(|(at, step, ..)| (*at, *step));
    assert_eq!(
        seen,
        [
            (at(10), "x", EngagementKind::Opened, None),
            (at(20), "first", EngagementKind::Opened, None),
            (
                at(30),
                "second",
                EngagementKind::Clicked,
                Some("https://example.com/a")
            ),
            (at(30), "y", EngagementKind::Opened, None),
        ],
        "every scenario's opens and clicks of the contact, and only those"
    );
    assert_eq!(
        ok("contact_engagement", store.contact_engagement("bob")).len(),
        1,
        "another contact's engagement is its own"
    );
    assert!(
        ok("contact_engagement", store.contact_engagement("nobody")).is_empty(),
        "an unknown contact has none"
    );
}

/// `save_enrollment` writes only on the expected version.
pub fn conditional_saves<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let e = enrollment("welcome", "ada", 1, 0);
    ok("save_enrollment", store.save_enrollment(None, 1, &e));
    assert!(
        store.save_enrollment(None, 1, &e).is_err(),
        "a second first write is a conflict"
    );
    let mut next = e.clone();
    next.version = 1;
    ok("save_enrollment", store.save_enrollment(Some(0), 1, &next));
    assert!(
        store.save_enrollment(Some(0), 1, &next).is_err(),
        "a stale version is a conflict"
    );
    let (stored, version) = ok("enrollment", store.enrollment(&e.id)).expect("saved");
    assert_eq!(
        (stored, version),
        (next.clone(), 1),
        "the enrollment and its scenario version read back"
    );
    let missing = enrollment("welcome", "bob", 1, 4);
    assert!(
        store.save_enrollment(Some(3), 1, &missing).is_err(),
        "no stored enrollment: a conflict"
    );
    assert!(ok("enrollment", store.enrollment(&missing.id)).is_none());
}

/// At most one running enrollment per (scenario, contact): an entry made as the runtime makes
/// it sees the running one (and does not enter), and the next entry after its end runs.
pub fn one_running_enrollment<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let first = enter(&mut store, "welcome", "ada", at(0), &[]).expect("nothing runs: entered");
    let running = ok(
        "running_enrollment",
        store.running_enrollment("welcome", "ada"),
    );
    assert_eq!(
        running.map(|(e, v)| (e.id, v)),
        Some((first.id.clone(), 1)),
        "the entered enrollment runs, on its scenario version"
    );
    let (id, version, read) = ok(
        "running_enrollment_id",
        store.running_enrollment_id("welcome", "ada"),
    )
    .expect("the running enrollment's id");
    assert_eq!((id.as_str(), version), (first.id.as_str(), 1));
    let (running, mark) = ok("entry_state", store.entry_state("welcome", "ada"));
    assert!(running, "entry_state sees the running enrollment");
    assert_eq!(
        mark.map(|m| (m.entries, m.last_entered_at)),
        Some((1, at(0)))
    );
    if let Some(read) = read {
        assert_eq!(
            read, first,
            "an enrollment given with its id is the one running"
        );
    }
    assert!(
        enter(&mut store, "welcome", "ada", at(1), &[]).is_none(),
        "a second entry sees the running enrollment"
    );
    end(&mut store, &first);
    assert!(
        ok(
            "running_enrollment",
            store.running_enrollment("welcome", "ada")
        )
        .is_none(),
        "an ended enrollment does not run"
    );
    let (running, mark) = ok("entry_state", store.entry_state("welcome", "ada"));
    assert!(!running, "entry_state: an ended enrollment does not run");
    assert_eq!(mark.map(|m| m.entries), Some(1), "its entry still counted");
    assert!(
        ok(
            "running_enrollment_id",
            store.running_enrollment_id("welcome", "ada")
        )
        .is_none(),
        "nor is its id given"
    );
    let second = enter(&mut store, "welcome", "ada", at(2), &[]).expect("none runs: entered");
    assert_ne!(second.id, first.id, "each entry is a new enrollment");
    let running = ok(
        "running_enrollment",
        store.running_enrollment("welcome", "ada"),
    );
    assert_eq!(
        running.map(|(e, _)| e.id),
        Some(second.id),
        "a new entry after the end"
    );
    assert!(
        ok(
            "running_enrollment",
            store.running_enrollment("other", "ada")
        )
        .is_none()
    );
}

/// The entering transition of `contact` in `scenario` at `now`, numbered `n`: its records,
/// a send of step "first" and a timer for step "check" an hour later.
fn entering(scenario: &str, contact: &str, n: u32, now: DateTime<Utc>) -> Transition {
    let mut e = enrollment(scenario, contact, n, 0);
    e.entered_at = now;
    e.sent.insert("first".into(), now);
    let effects = vec![
        Effect::Record(Record::new(now, contact, RecordKind::Entered)),
        Effect::Send(send(&e, "first")),
        Effect::Record(Record::new(now, contact, RecordKind::Sent)),
        Effect::ScheduleWake(Wake {
            at: now + TimeDelta::hours(1),
            ..wake(&e, "check", 0)
        }),
    ];
    Transition {
        enrollment: e,
        contact: None,
        contact_read: None,
        effects,
    }
}

/// `commit_entries` writes what `mark_entry` and `commit_transition` write for each contact,
/// one after the other: each enrollment runs, each mark counts its entry, each send and timer
/// is kept, and the journal reads back in the order of the entries. Forty contacts, more
/// than one statement of a store that writes many per statement holds, one of them entered
/// before.
pub fn entries_in_bulk<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let before = enter(&mut store, "welcome", "c05", at(0), &[]).expect("nothing runs");
    end(&mut store, &before);
    let contacts: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    let now = at(1);
    let unit = store.atomically(|s| -> Result<Vec<Transition>, S::Fault> {
        let mut entering_all = Vec::new();
        for c in &contacts {
            let n = s.entry_mark("welcome", c)?.map_or(1, |m| m.entries + 1);
            entering_all.push(entering("welcome", c, n, now));
        }
        s.commit_entries("welcome", 1, &entering_all, now)?;
        Ok(entering_all)
    });
    let written = ok("commit_entries", ok("atomically", unit));
    for t in &written {
        let c = &t.enrollment.contact;
        let running = ok("running_enrollment", store.running_enrollment("welcome", c));
        assert_eq!(
            running,
            Some((t.enrollment.clone(), 1)),
            "{c}: the enrollment written runs, on its scenario version"
        );
        let mark = ok("entry_mark", store.entry_mark("welcome", c)).expect("marked");
        let entries = if c == "c05" { 2 } else { 1 };
        assert_eq!(
            (mark.entries, mark.last_entered_at),
            (entries, now),
            "{c}: the entry counted at its instant"
        );
        let h = ok("history", store.history(c, "welcome", HistoryNeeds::ALL));
        assert_eq!(
            h.sends.iter().map(|m| m.at).collect::<Vec<_>>(),
            [now],
            "{c}: its send kept"
        );
    }
    let mut due: Vec<Wake> = ready(ok("due_timers", store.due_timers(at(61), 100)));
    due.sort_by(|a, b| a.contact.cmp(&b.contact));
    let armed: Vec<Wake> = written
        .iter()
        .flat_map(|t| &t.effects)
        .filter_map(|e| match e {
            Effect::ScheduleWake(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(due, armed, "every timer armed, once");
    let journal = ok("records", store.records("welcome", None));
    let expected: Vec<Record> = written.iter().flat_map(|t| t.records().cloned()).collect();
    assert_eq!(journal, expected, "the journal in the order of the entries");
}

/// Forty contacts entered (each with a timer for step "check"), and the step each timer
/// makes: a send of step "second" and a record, then the end for the even ones, a timer for
/// step "last" for the others.
fn forty_checks<S: Store>(store: &mut S) -> (Vec<Wake>, Vec<Transition>)
where
    S::Fault: Debug,
{
    scenario(store, "welcome", Status::Active);
    let entering_all: Vec<Transition> = (0..40)
        .map(|i| entering("welcome", &format!("c{i:02}"), 1, at(1)))
        .collect();
    let unit = store.atomically(|s| s.commit_entries("welcome", 1, &entering_all, at(1)));
    ok("commit_entries", ok("atomically", unit));
    let wakes: Vec<Wake> = entering_all
        .iter()
        .map(|t| Wake {
            at: at(61),
            ..wake(&t.enrollment, "check", 0)
        })
        .collect();
    let steps = entering_all
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = t.enrollment.clone();
            e.version += 1;
            e.sent.insert("second".into(), at(61));
            let mut effects = vec![
                Effect::Send(send(&e, "second")),
                Effect::Record(Record::new(at(61), &e.contact, RecordKind::Sent)),
            ];
            if i % 2 == 0 {
                e.state = EnrollmentState::Ended {
                    outcome: relance_core::engine::Outcome::Exited,
                    at: at(61),
                };
            } else {
                e.state = EnrollmentState::Due {
                    step: "last".into(),
                    at: at(120),
                    hold: Hold::Delay,
                };
                effects.push(Effect::ScheduleWake(Wake {
                    at: at(120),
                    ..wake(&e, "last", 0)
                }));
            }
            Transition {
                enrollment: e,
                contact: None,
                contact_read: None,
                effects,
            }
        })
        .collect();
    (wakes, steps)
}

fn step_writes(steps: &[Transition]) -> Vec<StepWrite<'_>> {
    steps
        .iter()
        .map(|t| StepWrite {
            scenario: "welcome",
            scenario_version: 1,
            expected: t.enrollment.version - 1,
            transition: t,
        })
        .collect()
}

/// `commit_steps` writes what `cancel` and `commit_transition` write for each timer, one
/// after the other: each timer consumed, each enrollment saved at its new version (ended, or
/// waiting on a new timer), each send kept, and the journal in the order of the steps.
pub fn steps_in_bulk<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    let (wakes, steps) = forty_checks(&mut store);
    let due = ready(ok("due_timers", store.due_timers(at(61), 100)));
    assert_eq!(due.len(), 40, "forty checks due");
    let before = ok("records", store.records("welcome", None)).len();
    let writes = step_writes(&steps);
    let unit = store.atomically(|s| s.commit_steps(&wakes, &writes, at(61)));
    ok("commit_steps", ok("atomically", unit));
    assert!(
        ready(ok("due_timers", store.due_timers(at(61), 100))).is_empty(),
        "every check consumed"
    );
    let last = ready(ok("due_timers", store.due_timers(at(120), 100)));
    assert_eq!(last.len(), 20, "a new timer for each odd contact");
    assert!(last.iter().all(|w| w.step == "last"), "{last:?}");
    for (i, t) in steps.iter().enumerate() {
        let c = &t.enrollment.contact;
        let running = ok("running_enrollment", store.running_enrollment("welcome", c));
        if i % 2 == 0 {
            assert!(running.is_none(), "{c}: ended");
        } else {
            assert_eq!(running, Some((t.enrollment.clone(), 1)), "{c}: saved");
        }
        let h = ok("history", store.history(c, "welcome", HistoryNeeds::ALL));
        assert_eq!(
            h.sends.iter().map(|m| m.at).collect::<Vec<_>>(),
            [at(1), at(61)],
            "{c}: both sends kept"
        );
    }
    let journal = ok("records", store.records("welcome", None));
    let expected: Vec<Record> = steps.iter().flat_map(|t| t.records().cloned()).collect();
    assert_eq!(
        journal[before..],
        expected[..],
        "the journal in the order of the steps"
    );
}

/// `mark_entry`, after `entry_mark` in the same unit of work, counts entries and keeps the
/// last instant.
pub fn entry_marks<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    assert!(ok("entry_mark", store.entry_mark("welcome", "ada")).is_none());
    for minutes in [1, 9] {
        let unit = store.atomically(|s| -> Result<(), S::Fault> {
            s.entry_mark("welcome", "ada")?;
            s.mark_entry("welcome", "ada", at(minutes))
        });
        ok("mark_entry", ok("atomically", unit));
    }
    let mark = ok("entry_mark", store.entry_mark("welcome", "ada")).expect("marked");
    assert_eq!((mark.entries, mark.last_entered_at), (2, at(9)));
    assert!(ok("entry_mark", store.entry_mark("welcome", "bob")).is_none());
    let (running, mark) = ok("entry_state", store.entry_state("welcome", "ada"));
    assert!(!running, "marks alone: nothing runs");
    assert_eq!(
        mark.map(|m| (m.entries, m.last_entered_at)),
        Some((2, at(9))),
        "entry_state reads the mark"
    );
    let (running, mark) = ok("entry_state", store.entry_state("welcome", "bob"));
    assert!(!running && mark.is_none(), "nothing of bob");
}

/// Due timers come out in due-time order, only those due, at most `limit`; `next_due` is no
/// later than the earliest.
pub fn due_order<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let mut wakes = Vec::new();
    for (n, minutes) in [(1, 30), (2, 10), (3, 20), (4, 90)] {
        let e = enrollment("welcome", &format!("c{n}"), 1, 0);
        ok("save_enrollment", store.save_enrollment(None, 1, &e));
        let w = wake(&e, "first", minutes);
        ok("schedule", store.schedule(&w));
        wakes.push(w);
    }
    next_due_bound(&mut store, Some(at(10)), "four timers");
    let due = ready(ok("due_timers", store.due_timers(at(30), 100)));
    let times: Vec<_> = due.iter().map(|w| w.at).collect();
    assert_eq!(
        times,
        [at(10), at(20), at(30)],
        "due timers oldest first, none not yet due"
    );
    let due = ready(ok("due_timers", store.due_timers(at(30), 2)));
    assert_eq!(
        due.iter().map(|w| w.at).collect::<Vec<_>>(),
        [at(10), at(20)],
        "at most limit"
    );
    assert!(ready(ok("due_timers", store.due_timers(at(9), 100))).is_empty());
}

/// A timer armed after a later one is due at its own time: the first timer a store ever
/// holds does not hide an earlier one armed next (as `at: best` arms them, an hour per
/// contact).
pub fn timers_armed_out_of_order<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    // A tick first: the store has seen a `now`.
    assert!(ready(ok("due_timers", store.due_timers(at(0), 100))).is_empty());
    let mut wakes = Vec::new();
    for (n, minutes) in [(1, 120), (2, 60)] {
        let e = enrollment("welcome", &format!("c{n}"), 1, 0);
        ok("save_enrollment", store.save_enrollment(None, 1, &e));
        let w = wake(&e, "first", minutes);
        ok("schedule", store.schedule(&w));
        wakes.push(w);
    }
    next_due_bound(&mut store, Some(at(60)), "two timers");
    let due = ready(ok("due_timers", store.due_timers(at(60), 100)));
    assert_eq!(
        due.iter().map(|w| w.at).collect::<Vec<_>>(),
        [at(60)],
        "the timer armed second, due first, is due at its time"
    );
    let due = ready(ok("due_timers", store.due_timers(at(120), 100)));
    assert_eq!(
        due.iter().map(|w| w.at).collect::<Vec<_>>(),
        [at(60), at(120)],
        "both, oldest first"
    );
}

/// A timer cancelled (or consumed) never fires again; arming one twice keeps one.
pub fn timer_fires_once<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let e = enrollment("welcome", "ada", 1, 0);
    ok("save_enrollment", store.save_enrollment(None, 1, &e));
    let w = wake(&e, "first", 10);
    ok("schedule", store.schedule(&w));
    ok("schedule", store.schedule(&w));
    let due = ready(ok("due_timers", store.due_timers(at(10), 100)));
    assert_eq!(due, std::slice::from_ref(&w), "armed twice, due once");
    ok("cancel", store.cancel(&w));
    assert!(
        ready(ok("due_timers", store.due_timers(at(100), 100))).is_empty(),
        "a consumed timer never fires again"
    );
    next_due_bound(&mut store, None, "the only timer consumed");
    ok("cancel", store.cancel(&w));
}

/// A paused scenario's timers, checks and launches wait; they come back when it is active.
pub fn paused_scenarios_hold_their_due_items<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let e = enrollment("welcome", "ada", 1, 0);
    ok("save_enrollment", store.save_enrollment(None, 1, &e));
    ok("schedule", store.schedule(&wake(&e, "first", 10)));
    let check = InactivityCheck {
        scenario: "welcome".into(),
        contact: "ada".into(),
        due: at(5),
    };
    ok("set_inactivity", store.set_inactivity(&check));
    ok("set_launch", store.set_launch("welcome", "", Some(at(7))));
    ok(
        "set_status",
        store.set_status("welcome", Status::Paused, None, t0()),
    );
    assert!(
        ready(ok("due_timers", store.due_timers(at(100), 100))).is_empty(),
        "paused: no timer"
    );
    assert!(
        ready(ok("due_inactivity", store.due_inactivity(at(100), 100))).is_empty(),
        "paused: no check"
    );
    assert!(
        ready(ok("due_launches", store.due_launches(at(100)))).is_empty(),
        "paused: no launch"
    );
    next_due_bound(&mut store, None, "paused: nothing due");
    ok(
        "set_status",
        store.set_status("welcome", Status::Active, None, t0()),
    );
    assert_eq!(
        ready(ok("due_timers", store.due_timers(at(100), 100))).len(),
        1,
        "active again: the timer"
    );
    next_due_bound(&mut store, Some(at(5)), "active again");
}

/// One inactivity check per (scenario, contact), replaced by a new one, cleared but for
/// `keep`, removed once handled.
pub fn inactivity_checks<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "viewed", Status::Active);
    scenario(&mut store, "cart", Status::Active);
    let check = |scenario: &str, contact: &str, minutes| InactivityCheck {
        scenario: scenario.into(),
        contact: contact.into(),
        due: at(minutes),
    };
    ok(
        "set_inactivity",
        store.set_inactivity(&check("viewed", "ada", 30)),
    );
    ok(
        "set_inactivity",
        store.set_inactivity(&check("viewed", "ada", 40)),
    );
    ok(
        "set_inactivity",
        store.set_inactivity(&check("cart", "ada", 20)),
    );
    ok(
        "set_inactivity",
        store.set_inactivity(&check("viewed", "bob", 10)),
    );
    let due = ready(ok("due_inactivity", store.due_inactivity(at(60), 100)));
    assert_eq!(
        due,
        [
            check("viewed", "bob", 10),
            check("cart", "ada", 20),
            check("viewed", "ada", 40)
        ],
        "oldest first; a new check replaces the old"
    );
    ok(
        "clear_inactivity",
        store.clear_inactivity("ada", &["cart".to_string()]),
    );
    let due = ready(ok("due_inactivity", store.due_inactivity(at(60), 100)));
    assert_eq!(
        due,
        [check("viewed", "bob", 10), check("cart", "ada", 20)],
        "cleared but for keep"
    );
    ok(
        "remove_inactivity",
        store.remove_inactivity(&check("viewed", "bob", 10)),
    );
    next_due_bound(&mut store, Some(at(20)), "one check left");
    let due = ready(ok("due_inactivity", store.due_inactivity(at(60), 100)));
    assert_eq!(due, [check("cart", "ada", 20)], "removed once handled");
}

/// One next launch per (scenario, zone); None removes it.
pub fn launches<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "weekly", Status::Active);
    ok(
        "set_launch",
        store.set_launch("weekly", "Europe/Paris", Some(at(20))),
    );
    ok(
        "set_launch",
        store.set_launch("weekly", "America/New_York", Some(at(20))),
    );
    ok("set_launch", store.set_launch("weekly", "", Some(at(50))));
    ok("set_launch", store.set_launch("weekly", "", Some(at(10))));
    next_due_bound(&mut store, Some(at(10)), "three launches");
    let due = ready(ok("due_launches", store.due_launches(at(20))));
    let got: Vec<_> = due.iter().map(|l| (l.zone.as_str(), l.at)).collect();
    assert_eq!(
        got,
        [
            ("", at(10)),
            ("America/New_York", at(20)),
            ("Europe/Paris", at(20))
        ],
        "oldest first, one per zone, replaced"
    );
    ok("set_launch", store.set_launch("weekly", "", None));
    assert_eq!(
        ready(ok("due_launches", store.due_launches(at(100)))).len(),
        2,
        "None removes it"
    );
    // A step's winner check is a due slot of its own beside the zones.
    ok(
        "set_launch",
        store.set_launch("weekly", "winner#mail", Some(at(30))),
    );
    let due = ready(ok("due_launches", store.due_launches(at(100))));
    assert!(
        due.iter()
            .any(|l| l.zone == "winner#mail" && l.at == at(30)),
        "a slot named winner#mail reads back: {due:?}"
    );
}

/// An entry's conversion watch is kept once, read back by contact in entry order across
/// scenarios, and removed idempotently.
pub fn conversion_watches<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    let watch = |scenario: &str, contact: &str, entered: i64| ConversionWatch {
        scenario: scenario.into(),
        version: 2,
        contact: contact.into(),
        enrollment: format!("{scenario}:{contact}:1"),
        entered_at: at(entered),
        until: at(entered + 60 * 24 * 7),
    };
    let (late, early, other) = (
        watch("later", "ada", 5),
        watch("sooner", "ada", 1),
        watch("later", "bob", 0),
    );
    for w in [&late, &early, &late, &other] {
        ok("watch_conversion", store.watch_conversion(w));
    }
    assert_eq!(
        ok("conversion_watches", store.conversion_watches("ada")),
        [early.clone(), late.clone()],
        "one per entry, in entry order, every scenario"
    );
    assert_eq!(
        ok("conversion_watches", store.conversion_watches("bob")),
        std::slice::from_ref(&other)
    );
    assert!(ok("conversion_watches", store.conversion_watches("nobody")).is_empty());
    ok("end_conversion_watch", store.end_conversion_watch(&early));
    ok("end_conversion_watch", store.end_conversion_watch(&early));
    assert_eq!(
        ok("conversion_watches", store.conversion_watches("ada")),
        [late],
        "an ended watch is gone, and ending it again changes nothing"
    );
}

/// A send is kept at most once per idempotency key: applied again (a unit of work redone
/// after a crash, a step sent again), it changes nothing; actions are not sends.
pub fn outbox_once_per_key<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let e = enter(&mut store, "welcome", "ada", at(1), &["first"]).expect("nothing runs");
    let s = send(&e, "first");
    ok("outbox_send", store.outbox_send("welcome", &s, at(1)));
    ok("outbox_send", store.outbox_send("welcome", &s, at(2)));
    let h = ok(
        "history",
        store.history("ada", "welcome", HistoryNeeds::ALL),
    );
    assert_eq!(
        h.sends.iter().map(|m| m.at).collect::<Vec<_>>(),
        [at(1)],
        "one send per key"
    );
    let action = relance_core::scenario::Action::CreateLead(serde_json::Map::new());
    ok(
        "outbox_action",
        store.outbox_action("welcome", &e.id, "ada", "call", &action, at(1)),
    );
    ok(
        "outbox_action",
        store.outbox_action("welcome", &e.id, "ada", "call", &action, at(1)),
    );
    assert_eq!(
        ok("contact_sends", store.contact_sends("ada")).len(),
        1,
        "actions are not sends"
    );
}

/// An input key, once recorded, is seen; recording it again changes nothing.
pub fn input_keys<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    assert!(!ok("input_seen", store.input_seen("k1")));
    ok("record_input", store.record_input("k1", t0()));
    ok("record_input", store.record_input("k1", t0()));
    assert!(ok("input_seen", store.input_seen("k1")));
    assert!(!ok("input_seen", store.input_seen("k2")));
}

/// The consent log is append-only and read oldest first (by instant, then as appended); the
/// retention purge never touches it.
pub fn consent_log<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    let event = |minutes, state, source: &str| ConsentEvent {
        contact: "ada".into(),
        subject: "marketing".into(),
        state,
        source: source.into(),
        actor: "test".into(),
        at: at(minutes),
        reason: None,
        kept: false,
    };
    let trail = [
        event(5, ConsentState::Subscribed, "form"),
        event(1, ConsentState::Unsubscribed, "link"),
        event(5, ConsentState::Unsubscribed, "api"),
    ];
    for e in &trail {
        ok("append_consent", store.append_consent(e));
    }
    let got = ok("consent_trail", store.consent_trail("ada"));
    assert_eq!(
        got,
        [trail[1].clone(), trail[0].clone(), trail[2].clone()],
        "oldest first, then as appended"
    );
    for kind in Retained::ALL {
        ok("purge", store.purge(kind, at(1000), 1000));
    }
    assert_eq!(
        ok("consent_trail", store.consent_trail("ada")).len(),
        3,
        "the consent log is never purged"
    );
    assert!(ok("consent_trail", store.consent_trail("cy")).is_empty());
    let state = ok("consent_state", store.consent_state("ada"));
    assert_eq!(
        state,
        relance_core::consent::Derived::from_trail(&got),
        "the state is the trail's"
    );
    // The same two events of one instant, appended the other way round for bob: each trail
    // keeps its own append order (the later event decides the state), whatever keys they
    // have.
    let bob = [trail[2].clone(), trail[0].clone()].map(|e| ConsentEvent {
        contact: "bob".into(),
        ..e
    });
    for e in &bob {
        ok("append_consent", store.append_consent(e));
    }
    assert_eq!(
        ok("consent_trail", store.consent_trail("bob")),
        bob,
        "one instant: as appended"
    );
    assert_ne!(
        ok("consent_state", store.consent_state("bob")),
        state,
        "the order decides the state"
    );
}

/// The journal reads back per scenario in the order written, one contact's when asked.
pub fn journal_in_order<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    let records = [
        Record::new(at(1), "ada", RecordKind::Entered),
        Record::new(at(2), "bob", RecordKind::Entered),
        Record::new(at(3), "ada", RecordKind::Exited),
    ];
    for r in &records {
        ok("journal", store.journal("welcome", r));
    }
    ok("journal", store.journal("other", &records[0]));
    assert_eq!(
        ok("records", store.records("welcome", None)),
        records,
        "in the order written"
    );
    assert_eq!(
        ok("records", store.records("welcome", Some("ada"))),
        [records[0].clone(), records[2].clone()]
    );
}

/// Contracts of stores whose units of work are transactions (memory, SQLite): a unit that
/// fails leaves no write behind, one that succeeds keeps them all; the running lock is
/// checked when an enrollment is saved; and the retention purge deletes what is older than
/// the cutoff, at most `limit` at a time.
pub fn transactional<S: Store>(mut new: impl FnMut() -> S)
where
    S::Fault: Debug,
{
    units_are_all_or_nothing(new());
    saves_hold_the_running_lock(new());
    // One contact in conflict among the rows of one statement, then among the rest.
    entries_in_bulk_hold_the_running_lock(new(), "c20");
    entries_in_bulk_hold_the_running_lock(new(), "c35");
    steps_in_bulk_hold_their_versions(new(), 20);
    steps_in_bulk_hold_their_versions(new(), 35);
    retention_purge(new());
}

/// A transactional store refuses `commit_steps` when one step's enrollment is not at the
/// version the step was computed from (the one at `moved`, among forty), naming that
/// enrollment, and the unit leaves nothing: every timer still due, every enrollment as it
/// was, no send, no record.
pub fn steps_in_bulk_hold_their_versions<S: Store>(mut store: S, moved: usize)
where
    S::Fault: Debug,
{
    let (wakes, steps) = forty_checks(&mut store);
    let before = ok("records", store.records("welcome", None));
    let mut writes = step_writes(&steps);
    writes[moved].expected += 7;
    let unit = store.atomically(|s| s.commit_steps(&wakes, &writes, at(61)));
    let refused = ok("atomically", unit).expect_err("a step on a version that moved is refused");
    let id = &steps[moved].enrollment.id;
    assert!(
        format!("{refused:?}").contains(id.as_str()),
        "the refusal names {id}: {refused:?}"
    );
    assert_eq!(
        ready(ok("due_timers", store.due_timers(at(61), 100))).len(),
        40,
        "every check still due"
    );
    for t in &steps {
        let c = &t.enrollment.contact;
        let running = ok("running_enrollment", store.running_enrollment("welcome", c));
        assert_eq!(running.map(|(e, _)| e.version), Some(0), "{c}: as it was");
        assert_eq!(
            ok("contact_sends", store.contact_sends(c)).len(),
            1,
            "{c}: only the first send"
        );
    }
    assert_eq!(
        ok("records", store.records("welcome", None)),
        before,
        "nothing journaled"
    );
}

/// A transactional store refuses `commit_entries` when an enrollment already runs for one of
/// its contacts (`running`, among forty), naming the enrollment refused, and the unit leaves
/// nothing of any contact's entry.
pub fn entries_in_bulk_hold_the_running_lock<S: Store>(mut store: S, running: &str)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let first = enter(&mut store, "welcome", running, at(0), &[]).expect("nothing runs");
    let contacts: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    let all: Vec<Transition> = contacts
        .iter()
        .map(|c| entering("welcome", c, if c == running { 2 } else { 1 }, at(1)))
        .collect();
    let unit = store.atomically(|s| s.commit_entries("welcome", 1, &all, at(1)));
    let refused = ok("atomically", unit).expect_err("a second running enrollment is refused");
    let second = format!("welcome:{running}:2");
    assert!(
        format!("{refused:?}").contains(&second),
        "the refusal names {second}: {refused:?}"
    );
    for c in &contacts {
        let expected = (c == running).then(|| first.id.clone());
        let runs = ok("running_enrollment", store.running_enrollment("welcome", c));
        assert_eq!(runs.map(|(e, _)| e.id), expected, "{c}: nothing entered");
        let marks = ok("entry_mark", store.entry_mark("welcome", c)).map(|m| m.entries);
        assert_eq!(marks, (c == running).then_some(1), "{c}: no entry counted");
        assert!(
            ok("contact_sends", store.contact_sends(c)).is_empty(),
            "{c}: nothing sent"
        );
    }
    assert!(
        ready(ok("due_timers", store.due_timers(at(120), 100))).is_empty(),
        "no timer armed"
    );
    assert!(
        ok("records", store.records("welcome", None)).is_empty(),
        "nothing journaled"
    );
}

/// A transactional store refuses, at the save, a new running enrollment while another runs
/// for the same (scenario, contact), however it was written (DynamoDB holds the lock on the
/// entry claim instead: see [`one_running_enrollment`]).
pub fn saves_hold_the_running_lock<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let first = enrollment("welcome", "ada", 1, 0);
    ok("save_enrollment", store.save_enrollment(None, 1, &first));
    let second = enrollment("welcome", "ada", 2, 0);
    assert!(
        store.save_enrollment(None, 1, &second).is_err(),
        "a second running enrollment is refused"
    );
    ok(
        "save_enrollment",
        store.save_enrollment(Some(0), 1, &ended(first)),
    );
    ok("save_enrollment", store.save_enrollment(None, 1, &second));
    let running = ok(
        "running_enrollment",
        store.running_enrollment("welcome", "ada"),
    );
    assert_eq!(running.map(|(e, _)| e.id), Some(second.id));
}

/// For stores that tell when the next item is due (memory, SQLite: the embedded runner and
/// `relance simulate` sleep until it): `next_due` is exactly the earliest pending timer,
/// inactivity check or launch of an active scenario, None when there is none.
pub fn next_due_exact<S: Store>(mut new: impl FnMut() -> S)
where
    S::Fault: Debug,
{
    let mut store = new();
    assert_eq!(ok("next_due", store.next_due()), None, "an empty store");
    scenario(&mut store, "welcome", Status::Active);
    let e = enrollment("welcome", "ada", 1, 0);
    ok("save_enrollment", store.save_enrollment(None, 1, &e));
    let (late, early) = (wake(&e, "first", 30), wake(&e, "second", 10));
    ok("schedule", store.schedule(&late));
    ok("schedule", store.schedule(&early));
    assert_eq!(
        ok("next_due", store.next_due()),
        Some(at(10)),
        "the earliest timer"
    );
    let check = InactivityCheck {
        scenario: "welcome".into(),
        contact: "ada".into(),
        due: at(20),
    };
    ok("set_inactivity", store.set_inactivity(&check));
    ok("set_launch", store.set_launch("welcome", "", Some(at(5))));
    assert_eq!(ok("next_due", store.next_due()), Some(at(5)), "the launch");
    ok(
        "set_status",
        store.set_status("welcome", Status::Paused, None, t0()),
    );
    assert_eq!(
        ok("next_due", store.next_due()),
        None,
        "paused: nothing due"
    );
    ok(
        "set_status",
        store.set_status("welcome", Status::Active, None, t0()),
    );
    assert_eq!(
        ok("next_due", store.next_due()),
        Some(at(5)),
        "active again"
    );
    ok("set_launch", store.set_launch("welcome", "", None));
    assert_eq!(ok("next_due", store.next_due()), Some(at(10)));
    ok("cancel", store.cancel(&early));
    assert_eq!(ok("next_due", store.next_due()), Some(at(20)), "the check");
    ok("remove_inactivity", store.remove_inactivity(&check));
    assert_eq!(ok("next_due", store.next_due()), Some(at(30)));
    ok("cancel", store.cancel(&late));
    assert_eq!(
        ok("next_due", store.next_due()),
        None,
        "every item consumed"
    );
}

/// A unit of work that fails leaves nothing; one that succeeds keeps everything.
pub fn units_are_all_or_nothing<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    scenario(&mut store, "welcome", Status::Active);
    let e = enrollment("welcome", "ada", 1, 0);
    let w = wake(&e, "first", 10);
    let result = ok(
        "atomically",
        store.atomically(|s| -> Result<(), &'static str> {
            ok("put_contact", s.put_contact(&Contact::bare("ada"), t0()));
            ok("save_enrollment", s.save_enrollment(None, 1, &e));
            ok("schedule", s.schedule(&w));
            ok("mark_entry", s.mark_entry("welcome", "ada", t0()));
            ok(
                "journal",
                s.journal("welcome", &Record::new(t0(), "ada", RecordKind::Entered)),
            );
            ok(
                "outbox_send",
                s.outbox_send("welcome", &send(&e, "first"), t0()),
            );
            ok("record_input", s.record_input("k", t0()));
            ok("put_setting", s.put_setting("policy", "x", t0()));
            ok("set_launch", s.set_launch("welcome", "", Some(at(5))));
            ok(
                "set_status",
                s.set_status("welcome", Status::Paused, None, t0()),
            );
            Err("the work failed")
        }),
    );
    assert_eq!(
        result,
        Err("the work failed"),
        "the work's error is handed back"
    );
    assert!(
        ok("contact", store.contact("ada")).is_none(),
        "rolled back: no contact"
    );
    assert!(
        ok("contact_ids", store.contact_ids()).is_empty(),
        "rolled back: no contact id"
    );
    assert!(
        ok("enrollment", store.enrollment(&e.id)).is_none(),
        "rolled back: no enrollment"
    );
    assert!(
        ok(
            "running_enrollment",
            store.running_enrollment("welcome", "ada")
        )
        .is_none()
    );
    assert!(
        ok("entry_mark", store.entry_mark("welcome", "ada")).is_none(),
        "rolled back: no mark"
    );
    assert!(
        ok("records", store.records("welcome", None)).is_empty(),
        "rolled back: no record"
    );
    assert!(
        ok("contact_sends", store.contact_sends("ada")).is_empty(),
        "rolled back: no send"
    );
    assert!(
        !ok("input_seen", store.input_seen("k")),
        "rolled back: no input key"
    );
    assert!(
        ok("setting", store.setting("policy")).is_none(),
        "rolled back: no setting"
    );
    assert_eq!(
        ok("scenario", store.scenario("welcome")).map(|s| s.status),
        Some(Status::Active),
        "rolled back: the status"
    );
    assert_eq!(
        ok("next_due", store.next_due()),
        None,
        "rolled back: no timer, no launch"
    );
    let done = ok(
        "atomically",
        store.atomically(|s| -> Result<u32, &'static str> {
            ok("put_contact", s.put_contact(&Contact::bare("ada"), t0()));
            ok("save_enrollment", s.save_enrollment(None, 1, &e));
            ok("schedule", s.schedule(&w));
            Ok(7)
        }),
    );
    assert_eq!(done, Ok(7));
    assert!(ok("contact", store.contact("ada")).is_some(), "committed");
    assert_eq!(
        ready(ok("due_timers", store.due_timers(at(10), 10))),
        [w],
        "committed"
    );
    // A later failed unit undoes only its own writes.
    let _ = ok(
        "atomically",
        store.atomically(|s| -> Result<(), ()> {
            ok("cancel", s.cancel(&wake(&e, "first", 10)));
            ok(
                "save_enrollment",
                s.save_enrollment(Some(0), 1, &ended(e.clone())),
            );
            Err(())
        }),
    );
    assert_eq!(
        ready(ok("due_timers", store.due_timers(at(10), 10))).len(),
        1,
        "the cancel is undone"
    );
    assert!(
        ok(
            "running_enrollment",
            store.running_enrollment("welcome", "ada")
        )
        .is_some(),
        "the save is undone"
    );
}

/// The retention purge deletes items older than the cutoff, at most `limit`, and says how
/// many.
pub fn retention_purge<S: Store>(mut store: S)
where
    S::Fault: Debug,
{
    for minutes in [1, 2, 3, 50] {
        let event = ActivityEvent {
            at: at(minutes),
            name: "viewed".into(),
            properties: Default::default(),
        };
        ok("append_activity", store.append_activity("ada", &event));
        ok(
            "journal",
            store.journal(
                "welcome",
                &Record::new(at(minutes), "ada", RecordKind::Entered),
            ),
        );
    }
    assert_eq!(
        ok("purge", store.purge(Retained::Activity, at(10), 2)),
        2,
        "at most limit"
    );
    assert_eq!(
        ok("purge", store.purge(Retained::Activity, at(10), 100)),
        1,
        "the rest before the cutoff"
    );
    assert_eq!(ok("purge", store.purge(Retained::Activity, at(10), 100)), 0);
    let h = ok(
        "history",
        store.history("ada", "welcome", HistoryNeeds::ALL),
    );
    assert_eq!(
        h.events.iter().map(|e| e.at).collect::<Vec<_>>(),
        [at(50)],
        "newer activity stays"
    );
    assert_eq!(ok("purge", store.purge(Retained::Journal, at(10), 100)), 3);
    assert_eq!(
        ok("records", store.records("welcome", None)).len(),
        1,
        "newer records stay"
    );
}
