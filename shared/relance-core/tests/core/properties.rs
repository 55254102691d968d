//! Calendar properties of the schedule functions: recurring occurrences sorted, unique and
//! on their days; delays never before their base; durations displayed as written; message
//! variants sharing the sends as their percents say, the same way every time; `at: best`
//! picking a most engaged hour, the earliest of them. (The engine's invariants over played
//! scripts are in relance-runtime's tests.)

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use relance_core::IsoDuration;
use relance_core::schedule::{
    Delay, LocalTime, Recurrence, RecurringSchedule, local_date, resolve_local,
};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 25, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn recurring_occurrences_are_sorted_unique_and_on_their_days(
        days in proptest::collection::vec(1u32..=31, 1..4),
        last_day in any::<bool>(),
        hour in 0u32..24,
        minute in prop_oneof![Just(0u32), Just(30u32)],
        zone in prop_oneof![Just(chrono_tz::Europe::Paris), Just(chrono_tz::America::New_York), Just(chrono_tz::Australia::Sydney), Just(chrono_tz::Australia::Lord_Howe), Just(chrono_tz::Asia::Kolkata)],
        offset_days in 0i64..730,
    ) {
        let time = LocalTime(chrono::NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or_default());
        let schedule = RecurringSchedule { recurrence: Recurrence::Monthly { days: days.clone(), last_day }, times: vec![time] };
        let from = start() + Duration::days(offset_days);
        let to = from + Duration::days(120);
        let got = schedule.occurrences(zone, from, to);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(got.iter().all(|t| *t >= from && *t <= to));
        // At most one per month-day: nothing runs twice on one local date.
        let mut dates: Vec<NaiveDate> = got.iter().map(|t| local_date(zone, *t)).collect();
        dates.dedup();
        prop_assert_eq!(dates.len(), got.len());
        for d in &dates {
            prop_assert!(schedule.runs_on(*d) || schedule.runs_on(d.pred_opt().unwrap_or(*d)), "{d} is not a run day");
        }
        // next_after agrees with the list.
        if let Some(first) = got.first() {
            prop_assert_eq!(schedule.next_after(zone, from - Duration::seconds(1)), Some(*first));
        }
    }

    #[test]
    fn delays_never_run_before_their_base_and_at_times_land_on_the_wall_clock(
        base_minutes in 0i64..(3 * 365 * 24 * 60),
        days in 0u64..10,
        hour in 0u32..24,
        zone in prop_oneof![Just(chrono_tz::Europe::Paris), Just(chrono_tz::America::New_York), Just(chrono_tz::Australia::Sydney), Just(chrono_tz::UTC)],
    ) {
        let base = start() + Duration::minutes(base_minutes);
        let at = LocalTime(chrono::NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or_default());
        let delay = Delay { after: Some(format!("P{days}D").parse().unwrap_or_else(|_| IsoDuration::from_seconds(0))), at: Some(at), ..Delay::default() };
        let due = delay.due(base, zone);
        prop_assert!(due > base || (days == 0 && due >= base));
        let local = due.with_timezone(&zone);
        // The wall clock shows `at`, unless `at` fell in a DST gap (then it is shifted forward).
        let exists = resolve_local(zone, local.date_naive().and_time(at.0)) == due;
        prop_assert!(exists);
    }

    #[test]
    fn durations_display_as_written(days in 0u64..400, hours in 0u64..48, months in 0u32..24) {
        let text = format!("P{months}M{days}DT{hours}H");
        let d: IsoDuration = text.parse().unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(d.to_string(), text);
        prop_assert_eq!((d.months(), d.days(), d.seconds()), (months, days, hours * 3600));
    }
}

/// The variants of a send step with these shares (percent), for the engine to pick among.
fn variants_engine(shares: &[u32]) -> relance_core::Engine {
    let messages: String = (0..shares.len())
        .map(|i| format!("  m{i}: {{channel: email, subject: \"Subject {i}\", text: \"Hi\"}}\n"))
        .collect();
    let variants: Vec<String> = shares
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{message: m{i}, percent: {p}}}"))
        .collect();
    let yaml = format!(
        "id: exp\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n{messages}steps:\n  - id: ab\n    send: {{variants: [{}]}}\n    next: done\n  - {{id: done, end: success}}\n",
        variants.join(", ")
    );
    match relance_core::validate::parse(&yaml, relance_core::Format::Yaml) {
        Ok((scenario, _)) => relance_core::Engine::new(scenario),
        Err(problems) => panic!("{yaml}\n{problems:#?}"),
    }
}

/// The message the engine sends `contact` on entry.
fn sent_message(engine: &relance_core::Engine, contact: &str) -> String {
    use relance_core::engine::{Entry, EntryRequest};
    let c = relance_core::Contact::from_json(
        serde_json::json!({"id": contact, "email": format!("{contact}@example.com")}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let history = relance_core::History::default();
    let entry = engine.enter(EntryRequest {
        contact: &c,
        history: &history,
        running: false,
        last_entered_at: None,
        enrollment_id: "e",
        now: start(),
    });
    let Entry::Entered(t) = entry else {
        panic!("{contact} did not enter")
    };
    let sent: Vec<String> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            relance_core::Effect::Send(s) => Some(s.message.clone()),
            _ => None,
        })
        .collect();
    // Exactly one send, announced by an `assigned` record naming the same message.
    let assigned: Vec<Option<String>> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            relance_core::Effect::Record(r) if r.kind == relance_core::RecordKind::Assigned => {
                Some(r.message.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1, "{contact}: {sent:?}");
    assert_eq!(assigned, [Some(sent[0].clone())], "{contact}");
    sent[0].clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    /// 10,000 generated contacts through a variants send: each variant's share of the sends
    /// is within ±2 points of its percent, and a second pass sends everyone the same variant.
    #[test]
    fn variants_match_their_percents_and_are_stable(
        first in 5u32..60,
        second in 5u32..35,
        seed in any::<u32>(),
    ) {
        let shares = [first, second, 100 - first - second];
        let engine = variants_engine(&shares);
        let ids: Vec<String> = (0..10_000).map(|i| format!("c-{seed}-{i}")).collect();
        let once: Vec<String> = ids.iter().map(|id| sent_message(&engine, id)).collect();
        for (i, share) in shares.iter().enumerate() {
            let got = once.iter().filter(|m| **m == format!("m{i}")).count() as f64 / 100.0;
            prop_assert!((got - f64::from(*share)).abs() <= 2.0, "m{i}: {got} vs {share}");
        }
        for (id, m) in ids.iter().zip(&once).step_by(7) {
            prop_assert_eq!(&sent_message(&engine, id), m);
        }
    }

    #[test]
    fn at_best_picks_the_earliest_of_the_most_engaged_hours_or_default_at(
        events in proptest::collection::vec((0i64..(120 * 24 * 60), 0usize..6), 0..12),
        zone in prop_oneof![Just(chrono_tz::Europe::Paris), Just(chrono_tz::America::New_York), Just(chrono_tz::Asia::Kolkata), Just(chrono_tz::UTC)],
    ) {
        use relance_core::{Engagement, EngagementKind};
        use chrono::Timelike;
        let reached = start() + Duration::days(100);
        let list: Vec<Engagement> = events
            .iter()
            .map(|(minutes, kind)| Engagement {
                at: start() + Duration::minutes(*minutes),
                step: "s".into(),
                kind: EngagementKind::ALL[*kind],
                url: None,
                link_tags: Vec::new(),
            })
            .collect();
        let default_at = LocalTime(chrono::NaiveTime::from_hms_opt(10, 30, 0).unwrap_or_default());
        let got = relance_core::best_time::best_time(&list, reached, zone, default_at);
        // The counts, computed the plain way.
        let mut per_hour = [0usize; 24];
        for e in &list {
            let counted = matches!(e.kind, EngagementKind::Opened | EngagementKind::Clicked)
                && e.at >= reached - Duration::days(90)
                && e.at <= reached;
            if counted {
                per_hour[e.at.with_timezone(&zone).hour() as usize] += 1;
            }
        }
        let total: usize = per_hour.iter().sum();
        if total < 3 {
            prop_assert_eq!(got, default_at);
        } else {
            prop_assert_eq!(got.0.minute(), 0);
            let hour = got.0.hour() as usize;
            let max = per_hour.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(per_hour[hour], max);
            prop_assert!(per_hour[..hour].iter().all(|n| *n < max), "an earlier hour ties: {:?}", per_hour);
        }
        // And the delay runs exactly as `at` at that time would.
        let best = Delay { after: Some("P1D".parse().unwrap_or_else(|_| IsoDuration::from_seconds(0))), default_at: Some(default_at), ..Delay::default() };
        let resolved = relance_core::best_time::resolve(&best, &list, reached, zone);
        let fixed = Delay { after: best.after.clone(), at: Some(got), ..Delay::default() };
        prop_assert_eq!(resolved.due(reached, zone), fixed.due(reached, zone));
    }
}
