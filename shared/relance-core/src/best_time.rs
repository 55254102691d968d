//! Send-time optimisation (`delay: {…, at: best, default_at: "10:00"}`, DESIGN §3.1): the
//! hour of day a contact engages most, from its opens and clicks in every scenario. Pure:
//! the caller hands the engagement ([`crate::contact::History::contact_engagement`]) and the
//! moment the step is reached.

use std::borrow::Cow;

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

use crate::contact::{Engagement, EngagementKind};
use crate::local::local_naive;
use crate::schedule::{Delay, LocalTime};

/// How far back engagement counts: 90 days (of 24 hours) before the step is reached.
pub const WINDOW_DAYS: i64 = 90;

/// Below this many opens and clicks in the window, `default_at` is used: one or two events
/// say little about a contact's habits.
pub const MIN_EVENTS: usize = 3;

/// The time of day an `at: best` delay runs at: `HH:00`, HH the hour (in `tz`, the zone `at`
/// is read in) with the most opens and clicks in `[reached − 90 days, reached]`, both ends
/// included (ties: the earliest hour); `default_at` with fewer than [`MIN_EVENTS`] of them.
///
/// Only opens and clicks count, of whatever scenario; other engagement kinds are ignored.
/// Engagement after `reached` is ignored too, so a runtime that reads history late decides as
/// `simulate` does.
pub fn best_time<'a>(
    engagement: impl IntoIterator<Item = &'a Engagement>,
    reached: DateTime<Utc>,
    tz: Tz,
    default_at: LocalTime,
) -> LocalTime {
    // Checked: at the start of chrono's range there is no 90 days before, and every
    // engagement is in the window.
    let from = reached
        .checked_sub_signed(TimeDelta::days(WINDOW_DAYS))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut per_hour = [0usize; 24];
    let mut total = 0;
    for e in engagement {
        if !matches!(e.kind, EngagementKind::Opened | EngagementKind::Clicked)
            || e.at < from
            || e.at > reached
        {
            continue;
        }
        // An instant at the very ends of chrono's range has no local time: it cannot count.
        let Some(local) = local_naive(tz, e.at) else {
            continue;
        };
        per_hour[local.hour() as usize] += 1;
        total += 1;
    }
    if total < MIN_EVENTS {
        return default_at;
    }
    // `max_by_key` keeps the last maximum: scan from the latest hour so the earliest wins ties.
    let hour = (0..24u32)
        .rev()
        .max_by_key(|h| per_hour[*h as usize])
        .unwrap_or(0);
    NaiveTime::from_hms_opt(hour, 0, 0).map_or(default_at, LocalTime)
}

/// The delay as it runs for this contact: an `at: best` delay becomes the same delay at its
/// best time ([`best_time`], from the moment the step is `reached`); any other delay is
/// returned as it is.
pub fn resolve<'d, 'a>(
    delay: &'d Delay,
    engagement: impl IntoIterator<Item = &'a Engagement>,
    reached: DateTime<Utc>,
    tz: Tz,
) -> Cow<'d, Delay> {
    match delay.default_at {
        Some(default_at) if delay.at.is_none() => {
            Cow::Owned(delay.at_time(best_time(engagement, reached, tz, default_at)))
        }
        _ => Cow::Borrowed(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe, UTC};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn time(s: &str) -> LocalTime {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(kind: EngagementKind, at: &str) -> Engagement {
        Engagement {
            at: utc(at),
            step: "s".into(),
            kind,
            url: None,
            link_tags: Vec::new(),
        }
    }

    fn opens(ats: &[&str]) -> Vec<Engagement> {
        ats.iter()
            .map(|at| event(EngagementKind::Opened, at))
            .collect()
    }

    const NOW: &str = "2026-06-15T12:00:00Z";

    #[test]
    fn the_hour_with_most_opens_and_clicks_wins() {
        let mut list = opens(&[
            "2026-06-01T18:10:00Z",
            "2026-06-02T18:50:00Z",
            "2026-06-03T07:00:00Z",
        ]);
        list.push(event(EngagementKind::Clicked, "2026-06-04T18:20:00Z"));
        assert_eq!(
            best_time(&list, utc(NOW), UTC, time("10:00")),
            time("18:00")
        );
    }

    #[test]
    fn ties_go_to_the_earliest_hour() {
        let list = opens(&[
            "2026-06-01T20:00:00Z",
            "2026-06-02T20:30:00Z",
            "2026-06-03T06:00:00Z",
            "2026-06-04T06:59:59Z",
            "2026-06-05T13:00:00Z",
        ]);
        assert_eq!(
            best_time(&list, utc(NOW), UTC, time("10:00")),
            time("06:00")
        );
    }

    #[test]
    fn fewer_than_three_events_use_default_at() {
        let two = opens(&["2026-06-01T18:00:00Z", "2026-06-02T18:00:00Z"]);
        assert_eq!(best_time(&two, utc(NOW), UTC, time("10:30")), time("10:30"));
        assert_eq!(best_time(&[], utc(NOW), UTC, time("10:30")), time("10:30"));
    }

    #[test]
    fn only_opens_and_clicks_count() {
        let mut list = opens(&["2026-06-01T18:00:00Z", "2026-06-02T18:00:00Z"]);
        for kind in [
            EngagementKind::Delivered,
            EngagementKind::Bounced,
            EngagementKind::Complained,
            EngagementKind::Unsubscribed,
        ] {
            list.push(event(kind, "2026-06-03T07:00:00Z"));
        }
        assert_eq!(
            best_time(&list, utc(NOW), UTC, time("10:00")),
            time("10:00"),
            "two opens and other kinds are fewer than three events"
        );
    }

    #[test]
    fn the_window_is_the_90_days_before_the_step_both_ends_included() {
        // 2026-06-15T12:00Z − 90 × 24 h = 2026-03-17T12:00Z.
        let edge = opens(&[
            "2026-03-17T12:00:00Z",
            "2026-03-18T12:30:00Z",
            "2026-06-15T12:00:00Z",
        ]);
        assert_eq!(
            best_time(&edge, utc(NOW), UTC, time("10:00")),
            time("12:00"),
            "exactly 90 days before and the moment itself count"
        );
        let outside = opens(&[
            "2026-03-17T11:59:59Z",
            "2026-03-18T12:30:00Z",
            "2026-06-15T12:00:01Z",
        ]);
        assert_eq!(
            best_time(&outside, utc(NOW), UTC, time("10:00")),
            time("10:00"),
            "a second before the window and a second after the step do not"
        );
    }

    #[test]
    fn hours_are_read_in_the_zone() {
        // Winter: Paris is UTC+1, so 07:30Z is 08:30 local.
        let list = opens(&[
            "2026-01-05T07:30:00Z",
            "2026-01-06T07:10:00Z",
            "2026-01-07T07:45:00Z",
        ]);
        let now = utc("2026-01-20T12:00:00Z");
        assert_eq!(
            best_time(&list, now, Europe::Paris, time("10:00")),
            time("08:00")
        );
        assert_eq!(best_time(&list, now, UTC, time("10:00")), time("07:00"));
        assert_eq!(
            best_time(&list, now, America::New_York, time("10:00")),
            time("02:00")
        );
    }

    #[test]
    fn dst_moves_the_local_hour_of_the_same_utc_time() {
        // Paris: 17:30Z is 18:30 in winter (UTC+1) and 19:30 in summer (UTC+2); the clocks
        // went forward on 2026-03-29.
        let list = opens(&[
            "2026-03-27T17:30:00Z",
            "2026-03-28T17:30:00Z",
            "2026-03-30T17:30:00Z",
            "2026-03-31T17:30:00Z",
            "2026-04-01T17:30:00Z",
        ]);
        assert_eq!(
            best_time(
                &list,
                utc("2026-04-02T00:00:00Z"),
                Europe::Paris,
                time("10:00")
            ),
            time("19:00"),
            "three summer opens at 19:xx beat two winter ones at 18:xx"
        );
    }

    #[test]
    fn resolve_turns_best_into_the_chosen_time_and_keeps_other_delays() {
        let best = Delay {
            after: Some("P1D".parse().unwrap_or_else(|e| panic!("{e}"))),
            default_at: Some(time("10:00")),
            ..Delay::default()
        };
        let list = opens(&[
            "2026-06-01T18:00:00Z",
            "2026-06-02T18:00:00Z",
            "2026-06-03T18:00:00Z",
        ]);
        let r = resolve(&best, &list, utc(NOW), UTC);
        assert_eq!((r.at, r.default_at), (Some(time("18:00")), None));
        assert_eq!(r.after, best.after);
        // Exactly as `at: "18:00"`: the next day at 18:00.
        assert_eq!(r.due(utc(NOW), UTC), utc("2026-06-16T18:00:00Z"));
        let r = resolve(&best, &list[..2], utc(NOW), UTC);
        assert_eq!(r.due(utc(NOW), UTC), utc("2026-06-16T10:00:00Z"));
        let fixed = best.at_time(time("09:00"));
        assert!(matches!(
            resolve(&fixed, &list, utc(NOW), UTC),
            Cow::Borrowed(_)
        ));
    }
}
