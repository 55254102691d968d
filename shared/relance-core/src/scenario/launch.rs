//! Reading a scenario's `launch`: its type and schedule, written flat or nested.

use chrono::Weekday;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::load::{known_keys, typed};
use super::*;
use crate::condition::{Condition, Op};
use crate::problem::Problem;
use crate::schedule::{DateTimeSpec, LocalTime, Recurrence, RecurringSchedule};

/// The keys of a launch (the JSON Schema lists the same).
pub const LAUNCH_KEYS: [&str; 15] = [
    "type",
    "event",
    "where",
    "pages",
    "inactivity_minutes",
    "frequency",
    "times",
    "time",
    "days",
    "last_day",
    "dates",
    "contacts",
    "recurring",
    "fixed_dates",
    "after_import",
];

/// The launch types.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum LaunchType {
    Manual,
    Recurring,
    FixedDates,
    AfterImport,
    Trigger,
}

/// How often a recurring launch runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Frequency {
    Daily,
    Weekly,
    Monthly,
}

/// A weekday name (mon..sun) or a day of the month (1..31).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum DayRef {
    Number(i64),
    Name(String),
}

/// A recurring schedule, nested under `recurring`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Recurring")]
struct RawRecurring {
    /// daily, weekly or monthly.
    frequency: Option<Frequency>,
    /// Times of day ("09:00"), at most 5 for daily.
    times: Option<Vec<LocalTime>>,
    /// One time of day.
    time: Option<LocalTime>,
    /// Weekdays (weekly) or days of the month (monthly).
    days: Option<Vec<DayRef>>,
    /// monthly: also run on the month's last day.
    last_day: Option<bool>,
}

/// How contacts enter: exactly one type, its fields flat or nested under its name. The
/// loader reads it in one piece, after reporting unknown keys.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Launch",
    description = "How contacts enter: exactly one type, its fields flat or nested under its name."
)]
pub(super) struct RawLaunch {
    #[serde(rename = "type")]
    kind: LaunchType,
    /// trigger: contact.created|updated|subscribed|unsubscribed, page.visited, product.viewed,
    /// cart.abandoned, or a custom event name.
    event: Option<String>,
    /// trigger: a condition over the event's properties (`{field, op, value}` clauses
    /// combined with all, any, not); the event must match to enter.
    #[serde(rename = "where")]
    #[schemars(with = "Option<Condition>")]
    filter: Option<Value>,
    /// page.visited: URL patterns (`*` matches anything).
    pages: Option<Vec<String>>,
    /// product.viewed / cart.abandoned: 10 to 720.
    #[schemars(range(min = 10, max = 720))]
    inactivity_minutes: Option<i64>,
    /// recurring: daily, weekly or monthly.
    frequency: Option<Frequency>,
    /// recurring: times of day ("09:00"), at most 5 for daily.
    times: Option<Vec<LocalTime>>,
    /// recurring: one time of day.
    time: Option<LocalTime>,
    /// recurring: weekdays (weekly) or days of the month (monthly).
    days: Option<Vec<DayRef>>,
    /// monthly: also run on the month's last day.
    last_day: Option<bool>,
    /// fixed_dates: at most 10 date-times.
    dates: Option<Vec<DateTimeSpec>>,
    /// after_import: all, added or modified.
    contacts: Option<ImportSubset>,
    /// recurring, nested form.
    recurring: Option<RawRecurring>,
    /// fixed_dates, nested form.
    fixed_dates: Option<RawDates>,
    /// after_import, nested form.
    after_import: Option<RawImport>,
}

/// Fixed dates, nested under `fixed_dates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FixedDates")]
struct RawDates {
    /// At most 10 date-times.
    dates: Vec<DateTimeSpec>,
}

/// An after-import launch, nested under `after_import`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AfterImport")]
struct RawImport {
    /// all, added or modified.
    contacts: ImportSubset,
}

fn weekday(name: &str) -> Option<Weekday> {
    match name.to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

/// The launch limits of DESIGN §3.
pub const MAX_DAILY_TIMES: usize = 5;
/// At most this many fixed dates.
pub const MAX_FIXED_DATES: usize = 10;
/// Inactivity triggers wait between these many minutes.
pub const INACTIVITY_MINUTES: std::ops::RangeInclusive<i64> = 10..=720;
/// At most this many steps.
pub const MAX_STEPS: usize = 1000;
/// At most this many goals.
pub const MAX_GOALS: usize = 100;

pub(super) fn parse_launch(v: &Value, problems: &mut Vec<Problem>) -> Option<Launch> {
    // Schedules may be written flat (`{type: recurring, frequency: daily, ...}`) or nested
    // (`{type: recurring, recurring: {frequency: daily, ...}}`); both read the same.
    let mut v = known_keys("launch", v, &LAUNCH_KEYS, "a launch", problems);
    if let Some(nested) = v.get("recurring").filter(|n| n.is_object()).cloned() {
        let nested = known_keys(
            "launch.recurring",
            &nested,
            &["frequency", "times", "time", "days", "last_day"],
            "a recurring schedule",
            problems,
        );
        v["recurring"] = nested;
    }
    let raw: RawLaunch = typed("launch", &v, problems)?;
    let before = problems.len();
    let err = |problems: &mut Vec<Problem>, path: &str, msg: String| {
        problems.push(Problem::error(format!("launch.{path}"), msg))
    };
    let not_for = |problems: &mut Vec<Problem>, present: bool, key: &str, kind: &str| {
        if present {
            err(
                problems,
                key,
                format!("\"{key}\" does not apply to a {kind} launch"),
            );
        }
    };
    let kind_name = match raw.kind {
        LaunchType::Manual => "manual",
        LaunchType::Recurring => "recurring",
        LaunchType::FixedDates => "fixed_dates",
        LaunchType::AfterImport => "after_import",
        LaunchType::Trigger => "trigger",
    };
    let is = |k: &str| k == kind_name;
    not_for(
        problems,
        raw.event.is_some() && !is("trigger"),
        "event",
        kind_name,
    );
    not_for(
        problems,
        raw.filter.is_some() && !is("trigger"),
        "where",
        kind_name,
    );
    not_for(
        problems,
        raw.pages.is_some() && !is("trigger"),
        "pages",
        kind_name,
    );
    not_for(
        problems,
        raw.inactivity_minutes.is_some() && !is("trigger"),
        "inactivity_minutes",
        kind_name,
    );
    let flat_recurring = raw.frequency.is_some()
        || raw.times.is_some()
        || raw.time.is_some()
        || raw.days.is_some()
        || raw.last_day.is_some();
    not_for(
        problems,
        (flat_recurring || raw.recurring.is_some()) && !is("recurring"),
        "frequency",
        kind_name,
    );
    not_for(
        problems,
        (raw.dates.is_some() || raw.fixed_dates.is_some()) && !is("fixed_dates"),
        "dates",
        kind_name,
    );
    not_for(
        problems,
        (raw.contacts.is_some() || raw.after_import.is_some()) && !is("after_import"),
        "contacts",
        kind_name,
    );
    let launch = match raw.kind {
        LaunchType::Manual => Launch::Manual,
        LaunchType::Recurring => {
            let (r, base) = match raw.recurring {
                Some(nested) => {
                    if flat_recurring {
                        err(problems, "recurring", "write the schedule either inside \"recurring\" or flat in launch, not both".into());
                    }
                    (nested, "recurring.")
                }
                None => (
                    RawRecurring {
                        frequency: raw.frequency,
                        times: raw.times,
                        time: raw.time,
                        days: raw.days,
                        last_day: raw.last_day,
                    },
                    "",
                ),
            };
            let mut times = r.times.unwrap_or_default();
            times.extend(r.time);
            times.sort();
            times.dedup();
            if times.is_empty() {
                err(
                    problems,
                    &format!("{base}time"),
                    "a recurring launch needs a time (\"09:00\") or times".into(),
                );
            }
            let days = r.days.unwrap_or_default();
            let recurrence = match r.frequency {
                None => {
                    err(
                        problems,
                        &format!("{base}frequency"),
                        "a recurring launch needs a frequency: daily, weekly or monthly".into(),
                    );
                    Recurrence::Daily
                }
                Some(Frequency::Daily) => {
                    if times.len() > MAX_DAILY_TIMES {
                        err(
                            problems,
                            &format!("{base}times"),
                            format!(
                                "a daily launch runs at most {MAX_DAILY_TIMES} times a day, found {}",
                                times.len()
                            ),
                        );
                    }
                    if !days.is_empty() {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a daily launch runs every day: remove days".into(),
                        );
                    }
                    Recurrence::Daily
                }
                Some(Frequency::Weekly) => {
                    let mut list = Vec::new();
                    for (i, d) in days.iter().enumerate() {
                        match d {
                            DayRef::Name(n) if weekday(n).is_some() && n.len() >= 3 => {
                                list.extend(weekday(n))
                            }
                            _ => err(
                                problems,
                                &format!("{base}days[{i}]"),
                                "not a weekday: use mon, tue, wed, thu, fri, sat or sun".into(),
                            ),
                        }
                    }
                    if days.is_empty() {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a weekly launch needs days, such as [mon, thu]".into(),
                        );
                    }
                    Recurrence::Weekly(list)
                }
                Some(Frequency::Monthly) => {
                    let mut list = Vec::new();
                    for (i, d) in days.iter().enumerate() {
                        match d {
                            DayRef::Number(n) if (1..=31).contains(n) => list.push(*n as u32),
                            _ => err(
                                problems,
                                &format!("{base}days[{i}]"),
                                "not a day of the month: use 1 to 31".into(),
                            ),
                        }
                    }
                    let last_day = r.last_day.unwrap_or(false);
                    if days.is_empty() && !last_day {
                        err(
                            problems,
                            &format!("{base}days"),
                            "a monthly launch needs days (1 to 31) or last_day: true".into(),
                        );
                    }
                    Recurrence::Monthly {
                        days: list,
                        last_day,
                    }
                }
            };
            if r.last_day.is_some() && !matches!(recurrence, Recurrence::Monthly { .. }) {
                err(
                    problems,
                    &format!("{base}last_day"),
                    "last_day applies to monthly launches only".into(),
                );
            }
            Launch::Recurring(RecurringSchedule { recurrence, times })
        }
        LaunchType::FixedDates => {
            let (dates, path) = match (raw.dates, raw.fixed_dates) {
                (Some(d), None) => (d, "dates"),
                (None, Some(n)) => (n.dates, "fixed_dates.dates"),
                (Some(d), Some(_)) => {
                    err(
                        problems,
                        "fixed_dates",
                        "write the dates either inside \"fixed_dates\" or flat in launch, not both"
                            .into(),
                    );
                    (d, "dates")
                }
                (None, None) => {
                    err(problems, "dates", "a fixed_dates launch needs dates".into());
                    (Vec::new(), "dates")
                }
            };
            if dates.len() > MAX_FIXED_DATES {
                err(
                    problems,
                    path,
                    format!(
                        "a fixed_dates launch has at most {MAX_FIXED_DATES} dates, found {}",
                        dates.len()
                    ),
                );
            }
            if dates.is_empty() && path != "dates" {
                err(
                    problems,
                    path,
                    "a fixed_dates launch needs at least one date".into(),
                );
            }
            Launch::FixedDates(dates)
        }
        LaunchType::AfterImport => {
            let subset = raw
                .contacts
                .or(raw.after_import.map(|a| a.contacts))
                .unwrap_or(ImportSubset::All);
            Launch::AfterImport(subset)
        }
        LaunchType::Trigger => {
            let event = raw.event.unwrap_or_default();
            if event.trim().is_empty() {
                err(problems, "event", "a trigger launch needs an event (contact.created, page.visited, purchase, ...)".into());
            }
            let mut trigger = Trigger {
                event,
                filter: None,
                pages: raw.pages.unwrap_or_default(),
                inactivity_minutes: None,
                zone: chrono_tz::UTC,
            };
            let inactive = trigger.inactivity_source().is_some();
            if let Some(w) = raw.filter.as_ref().filter(|w| !w.is_null()) {
                trigger.filter = parse_where(w, problems);
                if inactive {
                    err(
                        problems,
                        "where",
                        format!(
                            "where applies to the event that launches; a {} trigger fires on \
                             silence, not on an event",
                            trigger.event
                        ),
                    );
                }
            }
            if trigger.event == "page.visited" && trigger.pages.is_empty() {
                err(
                    problems,
                    "pages",
                    "a page.visited trigger needs pages, such as [\"/pricing*\"]".into(),
                );
            }
            if trigger.event != "page.visited" && !trigger.pages.is_empty() {
                err(
                    problems,
                    "pages",
                    "pages applies to page.visited triggers only".into(),
                );
            }
            let minutes = match (inactive, raw.inactivity_minutes) {
                (true, None) => {
                    err(
                        problems,
                        "inactivity_minutes",
                        format!(
                            "a {} trigger needs inactivity_minutes (10 to 720)",
                            trigger.event
                        ),
                    );
                    None
                }
                (true, Some(m)) if !INACTIVITY_MINUTES.contains(&m) => {
                    err(
                        problems,
                        "inactivity_minutes",
                        format!("inactivity_minutes must be between 10 and 720, found {m}"),
                    );
                    None
                }
                (true, Some(m)) => Some(m as u32),
                (false, Some(_)) => {
                    err(problems, "inactivity_minutes", "inactivity_minutes applies to product.viewed and cart.abandoned triggers only".into());
                    None
                }
                (false, None) => None,
            };
            Launch::Trigger(Trigger {
                inactivity_minutes: minutes,
                ..trigger
            })
        }
    };
    (problems.len() == before).then_some(launch)
}

/// `launch.where`: profile clauses over the event's properties, combined with all, any, not.
/// Clauses that read the clock (`within_last`, `anniversary`) are refused: a trigger is
/// matched on the event alone.
fn parse_where(w: &Value, problems: &mut Vec<Problem>) -> Option<Condition> {
    let c = typed::<Condition>("launch.where", w, problems)?;
    let mut fits = true;
    c.walk(&mut |c| {
        fits &= match c {
            Condition::All(_) | Condition::Any(_) | Condition::Not(_) => true,
            Condition::Profile(p) => !matches!(p.op, Op::WithinLast | Op::Anniversary),
            _ => false,
        };
    });
    if !fits {
        problems.push(Problem::error(
            "launch.where",
            "only {field, op, value} clauses (combined with all, any, not; no within_last or \
             anniversary) apply to the event's properties",
        ));
        return None;
    }
    Some(c)
}
