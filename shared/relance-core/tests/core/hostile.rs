//! Issue 11, finding 2 ("one input stops every timer"), in the pure core: instants outside
//! 1970-01-01..9999-12-31 are refused wherever input enters (API and EventBridge details,
//! events files, SES feedback); durations past a century do not parse; a due time past
//! 9999-12-31 ends the enrollment with its reason (played in relance-runtime's tests); the
//! calendar arithmetic never panics.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use relance_core::schedule::{Delay, LocalTime, inactivity_deadline};
use relance_core::script::ScriptedEvent;
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail};
use relance_core::{IsoDuration, inbound, instant};
use serde_json::json;

#[test]
fn hostile_wire_instants_out_of_range_are_refused_naming_at() {
    for bad in [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "1970-01-01T00:30:00+01:00",
    ] {
        let body = json!({"contact": "c1", "event": "purchase", "at": bad}).to_string();
        let e = wire::decode::<ActivityDetail>(body.as_bytes()).err();
        let e = e.unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(e.field, "at", "{bad}");
        assert!(
            e.message.contains("is outside 1970-01-01..9999-12-31"),
            "{bad}: {}",
            e.message
        );
        let body = json!({"contact": {"id": "c1"}, "at": bad}).to_string();
        let e = wire::decode::<ContactDetail>(body.as_bytes()).err();
        assert_eq!(e.map(|e| e.field), Some("at".to_string()), "{bad}");
        let v = json!({"contact": "c1", "scenario": "s", "step": "a", "kind": "opened", "at": bad});
        let e = inbound::decode::<EngagementDetail>(&v).err();
        assert!(
            e.is_some_and(|e| e.0.starts_with("at: ")),
            "the AWS trigger decoder refuses it too"
        );
    }
    // The bounds themselves are fine.
    for good in ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        let body = json!({"contact": "c1", "event": "purchase", "at": good}).to_string();
        assert!(
            wire::decode::<ActivityDetail>(body.as_bytes()).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn hostile_events_file_instants_out_of_range_are_refused() {
    let e = ScriptedEvent::from_json(
        json!({"at": "1900-01-01T00:00:00Z", "contact": "c1", "event": "x"}),
    )
    .err();
    assert_eq!(
        e,
        Some("\"at\": \"1900-01-01T00:00:00Z\" is outside 1970-01-01..9999-12-31".to_string())
    );
    assert!(
        ScriptedEvent::from_json(
            json!({"at": "9999-12-31T23:30:00Z", "contact": "c1", "event": "x"})
        )
        .is_ok()
    );
}

#[test]
fn hostile_ses_timestamp_out_of_range_is_refused() {
    let event = json!({
        "eventType": "Open",
        "mail": {"timestamp": "1900-01-01T00:00:00Z", "tags": {
            "relance_contact": ["c1"], "relance_scenario": ["s"], "relance_step": ["a"]}},
        "open": {"timestamp": "1900-01-01T00:00:00Z"}
    });
    let e = inbound::ses_engagement(&event.to_string()).err();
    assert!(
        e.is_some_and(|e| e.0.contains("outside 1970-01-01..9999-12-31")),
        "refused"
    );
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (instant::MIN_MICROS..=instant::MAX_MICROS)
            .prop_map(|m| DateTime::from_timestamp_micros(m).unwrap_or(DateTime::<Utc>::MIN_UTC)),
        Just(instant::max()),
        Just(instant::min()),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(DateTime::<Utc>::MIN_UTC),
    ]
}

proptest! {
    /// Schedule arithmetic at any instant, even chrono's extremes, with any accepted
    /// duration, never panics, and a stored timer's time always reads back.
    #[test]
    fn schedule_arithmetic_never_panics_at_the_extremes(
        t in any_instant(),
        months in 0u32..=1200,
        days in 0u64..=37_200,
        hours in 0u64..=48,
        at in proptest::option::of((0u32..24, 0u32..60)),
        minutes in 10u32..=720,
        zone in prop_oneof![Just(chrono_tz::UTC), Just(chrono_tz::Europe::Paris), Just(chrono_tz::Pacific::Kiritimati), Just(chrono_tz::America::St_Johns)],
    ) {
        let text = format!("P{months}M{days}DT{hours}H");
        let after = text.parse::<IsoDuration>();
        if let Ok(after) = after {
            let delay = Delay {
                after: Some(after.clone()),
                at: at.and_then(|(h, m)| chrono::NaiveTime::from_hms_opt(h, m, 0)).map(LocalTime),
                until: None,
                local_time: None,
                default_at: None,
            };
            let due = delay.due(t, zone);
            prop_assert!(due >= t || !instant::in_range(due) || due == t);
            let _ = after.add_to(t, zone);
            let _ = after.sub_from(t, zone);
        }
        if let Some(d) = inactivity_deadline(t, minutes) {
            prop_assert!(instant::in_range(d));
            prop_assert_eq!(d - t, TimeDelta::minutes(i64::from(minutes)));
        }
        let key = instant::to_key(t);
        prop_assert_eq!(key.len(), 18);
        if instant::in_range(t) {
            prop_assert_eq!(instant::from_micros(instant::to_micros(t)), Some(t));
            prop_assert_eq!(instant::from_key(&key), Some(t));
        }
    }
}
