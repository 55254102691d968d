//! Every DynamoDB key Relance writes or reads, in one place: the store
//! ([`crate::dynamodb`]) and the senders' ledger ([`crate::ledger`]) build their keys here and
//! nowhere else. The shapes are the stored format: items written by earlier builds must still
//! be found, so a shape changes only with a reader for the old one.
//!
//! State table (`pk`, `sk`):
//! | item | pk | sk |
//! |---|---|---|
//! | scenario status | `scenario#{id}` | `meta` |
//! | scenario version | `scenario#{id}` | `v#{version:08}` |
//! | scenario registry | `registry` | `scenario#{id}` |
//! | setting | `settings` | `{name}` |
//! | contact | `contact#{id}` | `profile` |
//! | activity / engagement / recorded send | `contact#{id}` | `a#…` / `e#{scenario}#…` / `s#{scenario}#{idempotency key}` |
//! | entry mark and running lock, with the enrollment of the latest entry | `contact#{id}` | `entry#{scenario}` |
//! | pending inactivity check | `contact#{id}` | `inactivity#{scenario}` |
//! | consent event (append-only) | `contact#{id}` | `consent#{at µs, 18 digits}#p{place, 6 digits}` (hash in `hash`) |
//! | input seen | `input#{key}` | `input` |
//! | enrollment a later entry replaced, or of earlier builds | `enrollment#{id}` | `state` |
//! | journal record (shard `h`, see [`journal`]) | `journal#{scenario}#{h}` | `{at}#{enrollment}#{hash}` |
//! | journal record, earlier builds (still read) | `journal#{scenario}` | as above |
//! | a batch's journal part (records of many transitions; shard by part id) | `journal#{scenario}#{h}` | `part#{batch}.{n}` |
//! | outbox (an action, once per key) | `outbox` | `{idempotency key}` |
//! | launch | `launch` | `{scenario}#{zone}` |
//! | timer cursor | `tick` | `cursor` |
//! | dead letter | `dead` | `{at}#{kind}#{hash}` |
//! | send claim (ledger; shard `h`, see [`sent`]) | `sent#{h}` | `{idempotency key}` |
//! | send claim, earlier builds (read in a window, see [`crate::ledger`]) | `sent` | `{idempotency key}` |
//! | the window of earlier builds' claims (ledger) | `settings` | `legacy_claims` |
//! | from when entries keep their enrollment in the entry item | `settings` | `entry_enrollments` |
//! | from when a batch writes its journal records in parts | `settings` | `journal_parts` |
//! | send rate slot (ledger) | `rate#{channel}` | `{second since the epoch}` |
//! | SMS message id → send (ledger) | `sms#{message id}` | `send` |
//!
//! Timer table: `pk` = `{minute}#{shard}`, `sk` = `{due}#{enrollment}#{step}` (or
//! `{due}#inactivity#{scenario}#{contact}`), so a tick reads a few partitions per minute and
//! no partition runs hot. `{due}` is 18 fixed-width digits of microseconds since the epoch
//! ([`instant::to_key`]); earlier builds wrote RFC 3339 text there, which is still read.
//! Other instants in keys (activity, journal, dead letters) are RFC 3339 with microseconds
//! ([`text`]): fixed width within 1970..9999, the only range inputs may have.
//!
//! Two partitions every contact shares are split in [`SHARDS`] by a hash, so that neither
//! bounds the table's throughput (BENCHMARKS.md, "AWS throughput model"): the send claims by
//! their idempotency key, a scenario's journal by enrollment. `{h}` is the shard's number in
//! decimal (`0`..`15`). Earlier builds wrote both unsplit (`sent`, `journal#{scenario}`):
//! the journal's readers read that partition too, the ledger reads the old claims for as
//! long as a message an earlier build's sender saw can still be delivered.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use relance_core::engine::Wake;
use relance_core::instant;
use relance_core::ports::InactivityCheck;

/// The partition key attribute.
pub const PK: &str = "pk";
/// The sort key attribute.
pub const SK: &str = "sk";

/// An instant as RFC 3339 text with microseconds (keys and attributes that are not compared
/// as numbers).
pub fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// FNV-1a, for short deterministic key suffixes (idempotent re-writes land on the same item).
pub fn hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

// ---- Scenarios and settings.

/// A scenario's partition.
pub fn scenario(id: &str) -> String {
    format!("scenario#{id}")
}

/// The sort key of a scenario's status item.
pub const SCENARIO_META: &str = "meta";

/// The sort key of a scenario's version `version`.
pub fn scenario_version(version: u32) -> String {
    format!("v#{version:08}")
}

/// The registry's partition (one item per scenario, sort key [`scenario`]).
pub const REGISTRY: &str = "registry";

/// The prefix of the registry's sort keys.
pub const REGISTRY_PREFIX: &str = "scenario#";

/// The scenario id of a registry sort key.
pub fn registry_scenario(sk: &str) -> Option<&str> {
    sk.strip_prefix(REGISTRY_PREFIX)
}

/// The settings' partition (sort key: the setting's name).
pub const SETTINGS: &str = "settings";

// ---- Contacts.

/// A contact's partition.
pub fn contact(id: &str) -> String {
    format!("contact#{id}")
}

/// The contact id of a contact's partition key.
pub fn contact_id(pk: &str) -> Option<&str> {
    pk.strip_prefix("contact#")
}

/// The sort key of a contact's profile.
pub const PROFILE: &str = "profile";

/// The prefix of a contact's activity events.
pub const ACTIVITY_PREFIX: &str = "a#";

/// The sort key of an activity event.
pub fn activity(at: DateTime<Utc>, name: &str, properties_json: &str) -> String {
    format!("a#{}#{}", text(at), hash(&[name, properties_json]))
}

/// The prefix of a contact's engagement with every scenario.
pub const ENGAGEMENT_PREFIX: &str = "e#";

/// The prefix of a contact's engagement with one scenario.
pub fn engagement_prefix(scenario: &str) -> String {
    format!("{ENGAGEMENT_PREFIX}{scenario}#")
}

/// The sort key of an engagement (`parts` identify it within its instant).
pub fn engagement(scenario: &str, at: DateTime<Utc>, parts: &[&str]) -> String {
    format!("e#{scenario}#{}#{}", text(at), hash(parts))
}

/// The prefix of the sends recorded in contacts' partitions (tests and benches).
pub const SEND_PREFIX: &str = "s#";

/// The sort key of a send recorded in the contact's partition: one per idempotency key, as
/// the senders' claim keeps a send single on AWS (its instant is an attribute).
pub fn recorded_send(scenario: &str, idempotency_key: &str) -> String {
    format!("s#{scenario}#{idempotency_key}")
}

/// The prefix of a contact's entry marks.
pub const ENTRY_PREFIX: &str = "entry#";

/// The sort key of a contact's entry mark in a scenario.
pub fn entry(scenario: &str) -> String {
    format!("entry#{scenario}")
}

/// The scenario of an entry mark's sort key.
pub fn entry_scenario(sk: &str) -> Option<&str> {
    sk.strip_prefix(ENTRY_PREFIX)
}

/// The prefix of a contact's conversion watches.
pub const WATCH_PREFIX: &str = "watch#";

/// The sort key of an entry's conversion watch in its contact's partition (one per entry:
/// the enrollment id names the scenario and the entry).
pub fn conversion_watch(enrollment: &str) -> String {
    format!("watch#{enrollment}")
}

/// The prefix of a contact's pending inactivity checks.
pub const INACTIVITY_PREFIX: &str = "inactivity#";

/// The sort key of a contact's pending inactivity check in a scenario.
pub fn inactivity(scenario: &str) -> String {
    format!("inactivity#{scenario}")
}

/// The scenario of a pending inactivity check's sort key.
pub fn inactivity_scenario(sk: &str) -> Option<&str> {
    sk.strip_prefix(INACTIVITY_PREFIX)
}

/// The prefix of a contact's consent log.
pub const CONSENT_PREFIX: &str = "consent#";

/// The prefix of a contact's consent events at one instant.
pub fn consent_instant(at: DateTime<Utc>) -> String {
    format!("consent#{}#", instant::to_key(at))
}

/// The sort key of a consent event: its instant, then its place among the events of that
/// instant (`p` and six digits), so the log reads back in the order appended (the later event
/// decides the state). The place ends the key, so two concurrent appends taking one place
/// collide on the conditional put and the loser reads again. The [`hash`] of what identifies
/// the event is an attribute ([`CONSENT_HASH`]): a redone append finds it by that. Earlier
/// builds wrote the hash in the key and no place (`consent#{at}#{hash}`): such a key still
/// reads, and sorts before the placed keys of its instant (`p` sorts after every hex digit),
/// as it was written before them.
pub fn consent(at: DateTime<Utc>, place: usize) -> String {
    format!("consent#{}#p{place:06}", instant::to_key(at))
}

/// The attribute holding a consent event's hash.
pub const CONSENT_HASH: &str = "hash";

/// The hash in an earlier build's consent sort key (`consent#{at}#{hash}`); None for a
/// placed key, whose hash is the [`CONSENT_HASH`] attribute.
pub fn legacy_consent_hash(sk: &str) -> Option<&str> {
    let last = sk.strip_prefix(CONSENT_PREFIX)?.rsplit('#').next()?;
    (!last.starts_with('p')).then_some(last)
}

/// An input's partition (its sort key is [`INPUT`]).
pub fn input(key: &str) -> String {
    format!("input#{key}")
}

/// The sort key of an input seen.
pub const INPUT: &str = "input";

// ---- Enrollments and journal.

/// The id of a contact's `n`-th enrollment in a scenario (it starts with the scenario id,
/// which has no `:`).
pub fn enrollment_id(scenario: &str, contact: &str, n: u64) -> String {
    format!("{scenario}:{contact}:{n}")
}

/// The scenario of an enrollment id.
pub fn enrollment_scenario(id: &str) -> &str {
    id.split(':').next().unwrap_or("")
}

/// The scenario, contact and number of an enrollment id made by [`enrollment_id`] (the
/// contact id may hold `:`; the scenario id and the number do not). `None` for another shape.
pub fn enrollment_parts(id: &str) -> Option<(&str, &str, u64)> {
    let (scenario, rest) = id.split_once(':')?;
    let (contact, number) = rest.rsplit_once(':')?;
    let number = number.parse().ok().filter(|n| *n > 0)?;
    (!scenario.is_empty() && !contact.is_empty()).then_some((scenario, contact, number))
}

/// An enrollment's own partition (its sort key is [`ENROLLMENT_STATE`]): where an enrollment
/// goes once a later entry of its contact takes its place in the entry item, and where earlier
/// builds kept every enrollment (see [`crate::dynamodb`]).
pub fn enrollment(id: &str) -> String {
    format!("enrollment#{id}")
}

/// The sort key of an enrollment's state.
pub const ENROLLMENT_STATE: &str = "state";

/// How many partitions the send claims and each scenario's journal are split into.
pub const SHARDS: u32 = 16;

/// The journal partition of a record of `scenario` about `enrollment` (or, for a record of
/// no enrollment, its contact): one of [`SHARDS`], by a hash of it, so every record of an
/// enrollment lands in one partition (the pending-effects check reads one item) and a
/// scenario's records spread over all of them.
pub fn journal(scenario: &str, enrollment: &str) -> String {
    format!("journal#{scenario}#{}", shard(enrollment, SHARDS))
}

/// Every journal partition of `scenario`, the old one last: what a reader of its records
/// queries (and merges by sort key).
pub fn journal_partitions(scenario: &str) -> Vec<String> {
    (0..SHARDS)
        .map(|h| format!("journal#{scenario}#{h}"))
        .chain([legacy_journal(scenario)])
        .collect()
}

/// The unsplit journal partition earlier builds wrote (still read).
pub fn legacy_journal(scenario: &str) -> String {
    format!("journal#{scenario}")
}

/// The sort key of one journal record.
pub fn journal_record(at: DateTime<Utc>, enrollment: Option<&str>, record_json: &str) -> String {
    format!(
        "{}#{}#{}",
        text(at),
        enrollment.unwrap_or("-"),
        hash(&[record_json])
    )
}

/// The sort key of a batch's journal part `part` (`{batch}.{n}`), in the partition
/// `journal(scenario, part)`: the records of the transitions and engagements one handler's
/// batch applied, in one item (see `dynamodb::journal`).
pub fn journal_part(part: &str) -> String {
    format!("part#{part}")
}

/// The sort key of a transition's journal item, which also says its effects are applied.
pub fn journal_transition(at: DateTime<Utc>, enrollment: &str, version: u64) -> String {
    format!("{}#{enrollment}#{version}", text(at))
}

/// The outbox partition (actions, once per idempotency key: the sort key).
pub const OUTBOX: &str = "outbox";

/// The dead letters' partition.
pub const DEAD: &str = "dead";

/// The sort key of a dead letter.
pub fn dead_letter(at: DateTime<Utc>, kind: &str, payload: &str) -> String {
    format!("{}#{kind}#{}", text(at), hash(&[payload]))
}

// ---- Launches and the timer table.

/// The launches' partition.
pub const LAUNCH: &str = "launch";

/// The sort key of a scenario's next launch in a zone.
pub fn launch(scenario: &str, zone: &str) -> String {
    format!("{scenario}#{zone}")
}

/// The timer cursor's partition (sort key [`CURSOR`]).
pub const TICK: &str = "tick";

/// The timer cursor's sort key.
pub const CURSOR: &str = "cursor";

/// The minute bucket of an instant.
pub fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// The timer-table partition of minute `m` (see [`minute`]) and `shard`.
pub fn bucket(m: DateTime<Utc>, shard: u32) -> String {
    format!("{}#{shard}", m.format("%Y-%m-%dT%H:%M"))
}

/// The shard of a timer-table item, from what spreads it (`shard_key`).
pub fn shard(shard_key: &str, shards: u32) -> u32 {
    let h = u64::from_str_radix(&hash(&[shard_key]), 16).unwrap_or(0);
    (h % u64::from(shards)) as u32
}

/// What spreads an inactivity check over the shards.
pub fn inactivity_shard_key(check: &InactivityCheck) -> String {
    format!("{}:{}", check.scenario, check.contact)
}

/// The timer-table sort key of a timer.
pub fn timer(w: &Wake) -> String {
    format!("{}#{}#{}", instant::to_key(w.at), w.enrollment, w.step)
}

/// The timer-table sort key of an inactivity check.
pub fn inactivity_timer(check: &InactivityCheck) -> String {
    format!(
        "{}#inactivity#{}#{}",
        instant::to_key(check.due),
        check.scenario,
        check.contact
    )
}

/// The sort key an earlier build gave an inactivity check (RFC 3339 text first).
pub fn legacy_inactivity_timer(check: &InactivityCheck) -> String {
    format!(
        "{}#inactivity#{}#{}",
        text(check.due),
        check.scenario,
        check.contact
    )
}

/// A timer-table sort key with its instant prefix (before the first `#`) replaced by this
/// build's 18 digits of `due`, or none when it already has them or has no prefix.
pub fn rekeyed_timer(sk: &str, due: DateTime<Utc>) -> Option<String> {
    let hash_at = sk.find('#')?;
    if instant::from_key(&sk[..hash_at]).is_some() {
        return None;
    }
    Some(format!("{}{}", instant::to_key(due), &sk[hash_at..]))
}

// ---- The senders' ledger.

/// The claims' partition of a send (sort key: its idempotency key): one of [`SHARDS`], by a
/// hash of the key. Only point requests touch the claims (nothing queries them).
pub fn sent(idempotency_key: &str) -> String {
    format!("sent#{}", shard(idempotency_key, SHARDS))
}

/// The unsplit claims' partition earlier builds wrote (see [`crate::ledger`]).
pub const LEGACY_SENT: &str = "sent";

/// The sort key, in [`SETTINGS`], of the instant until which the ledger also reads the
/// claims of [`LEGACY_SENT`].
pub const LEGACY_CLAIMS: &str = "legacy_claims";

/// The sort key, in [`SETTINGS`], of the instant from which entries keep their enrollment in
/// the entry item (see [`crate::dynamodb`]).
pub const ENTRY_ENROLLMENTS: &str = "entry_enrollments";

/// The setting: from when a handler's batch writes its journal records in parts.
pub const JOURNAL_PARTS: &str = "journal_parts";

/// The setting: from when a handler's batch writes its timers in parts.
pub const TIMER_PARTS: &str = "timer_parts";

/// The timer-table sort key of a batch's timer part `id`, due first at `earliest` (the
/// digits first, as a timer's, so the part reads as this build's key).
pub fn timer_part(earliest: DateTime<Utc>, id: &str) -> String {
    format!("{}#part#{id}", instant::to_key(earliest))
}

/// The setting: which informational events no rule or archive on the bus could receive, as
/// the tick last found (see [`crate::listeners`]).
pub const HEARD_EVENTS: &str = "heard_events";

/// The partition of a channel's shared send rate (sort key [`rate_second`]).
pub fn rate(channel: &str) -> String {
    format!("rate#{channel}")
}

/// The sort key of one second's slots.
pub fn rate_second(second: u64) -> String {
    second.to_string()
}

/// The partition remembering whose send an SMS message id was (sort key [`SMS_SEND`]).
pub fn sms(message_id: &str) -> String {
    format!("sms#{message_id}")
}

/// The sort key of an SMS message id's send.
pub const SMS_SEND: &str = "send";

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc)
    }

    /// The stored shapes, spelled out: a change here strands the items already written.
    #[test]
    fn keys_keep_their_stored_shapes() {
        let t = at("2026-12-01T09:00:00.5Z");
        assert_eq!(scenario("welcome"), "scenario#welcome");
        assert_eq!(scenario_version(3), "v#00000003");
        assert_eq!(contact("ana"), "contact#ana");
        assert_eq!(contact_id("contact#ana"), Some("ana"));
        assert_eq!(entry("welcome"), "entry#welcome");
        assert_eq!(inactivity("welcome"), "inactivity#welcome");
        let placed = consent(t, 2);
        assert_eq!(placed, "consent#001796115600500000#p000002");
        assert!(placed.starts_with(&consent_instant(t)));
        assert_eq!(legacy_consent_hash(&placed), None);
        // An earlier build's key: the hash, no place; it sorts before the placed keys of its
        // instant (it was written before them), whatever its hash.
        let legacy = "consent#001796115600500000#ffff";
        assert_eq!(legacy_consent_hash(legacy), Some("ffff"));
        assert!(legacy < consent(t, 0).as_str());
        assert!(consent(t, 9) < consent(t, 10));
        assert_eq!(enrollment_id("welcome", "ana", 2), "welcome:ana:2");
        assert_eq!(enrollment_scenario("welcome:ana:2"), "welcome");
        assert_eq!(
            enrollment_parts(&enrollment_id("welcome", "ana:x", 12)),
            Some(("welcome", "ana:x", 12))
        );
        for bad in [
            "welcome",
            "welcome:ana",
            "welcome:ana:",
            "welcome:ana:0",
            ":ana:1",
            "welcome::1",
            "welcome:ana:x",
        ] {
            assert_eq!(enrollment_parts(bad), None, "{bad}");
        }
        assert_eq!(enrollment("welcome:ana:2"), "enrollment#welcome:ana:2");
        let journal_pk = journal("welcome", "welcome:ana:2");
        assert_eq!(
            journal_pk,
            format!("journal#welcome#{}", shard("welcome:ana:2", SHARDS))
        );
        assert_eq!(legacy_journal("welcome"), "journal#welcome");
        let all = journal_partitions("welcome");
        assert_eq!(all.len(), SHARDS as usize + 1);
        assert!(all.contains(&journal_pk));
        assert_eq!(all.last(), Some(&legacy_journal("welcome")));
        assert_eq!(sent("k"), format!("sent#{}", shard("k", SHARDS)));
        assert_eq!(LEGACY_SENT, "sent");
        assert_eq!(
            journal_transition(t, "welcome:ana:2", 4),
            "2026-12-01T09:00:00.500000Z#welcome:ana:2#4"
        );
        assert_eq!(recorded_send("welcome", "k"), "s#welcome#k");
        assert_eq!(launch("welcome", "Europe/Paris"), "welcome#Europe/Paris");
        assert_eq!(bucket(minute(t), 2), "2026-12-01T09:00#2");
        assert_eq!(input("k"), "input#k");
        assert_eq!(rate("email"), "rate#email");
        assert_eq!(sms("m-1"), "sms#m-1");
        assert_eq!(hash(&["a", "b"]).len(), 16);
        let w = Wake {
            at: t,
            contact: "ana".into(),
            step: "wait".into(),
            enrollment: "welcome:ana:2".into(),
        };
        assert_eq!(
            timer(&w),
            format!("{}#welcome:ana:2#wait", instant::to_key(t))
        );
        let legacy = format!("{}#welcome:ana:2#wait", text(t));
        assert_eq!(rekeyed_timer(&legacy, t), Some(timer(&w)));
        assert_eq!(rekeyed_timer(&timer(&w), t), None);
    }
}
