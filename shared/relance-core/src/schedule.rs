//! Pure calendar arithmetic: local times in a time zone (DST included), recurring launch
//! occurrences, delay due times, quiet-hour ends and inactivity deadlines.
//! Nothing here reads a clock: every function takes the instant it reasons from.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::IsoDuration;
// Kept reachable here, where callers have always found them.
pub use crate::local::{local_date, local_naive, resolve_local};

/// A wall-clock time of day written `HH:MM` or `HH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(pub NaiveTime);

/// Why a time of day or a date did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not `HH:MM`.
    #[error("\"{0}\" is not a time of day such as \"09:00\"")]
    Time(String),
    /// Not a date or date-time.
    #[error(
        "\"{0}\" is not a date-time such as \"2026-12-01T09:00\" (an offset such as Z or +01:00 is optional)"
    )]
    DateTime(String),
    /// Not an IANA zone.
    #[error("\"{0}\" is not an IANA time zone such as \"Europe/Paris\"")]
    Zone(String),
}

impl FromStr for LocalTime {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_shape = matches!(s.len(), 5 | 8) && s.as_bytes()[2] == b':';
        let parsed = if s.len() == 5 {
            NaiveTime::parse_from_str(s, "%H:%M")
        } else {
            NaiveTime::parse_from_str(s, "%H:%M:%S")
        };
        match parsed {
            Ok(t) if ok_shape => Ok(LocalTime(t)),
            _ => Err(TimeError::Time(s.to_string())),
        }
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

/// Written as a string in scenario files (the JSON Schema says so; the parser checks the rest).
impl schemars::JsonSchema for LocalTime {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LocalTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for LocalTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IANA time zone as written in a scenario (`Europe/Paris`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub Tz);

impl Default for Zone {
    fn default() -> Self {
        Zone(chrono_tz::UTC)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_zone(&s).map(Zone).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// Parses an IANA zone name.
pub fn parse_zone(s: &str) -> Result<Tz, TimeError> {
    s.parse::<Tz>().map_err(|_| TimeError::Zone(s.to_string()))
}

/// A date-time as written in a scenario: with an offset it is an instant; without one it is
/// a local time in the scenario's zone; a bare date is its midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateTimeSpec {
    /// Written with an offset (`Z`, `+01:00`).
    Instant(DateTime<FixedOffset>),
    /// Written without an offset.
    Local(NaiveDateTime),
}

impl DateTimeSpec {
    /// The instant this names when local times are read in `tz`.
    pub fn resolve(&self, tz: Tz) -> DateTime<Utc> {
        match self {
            DateTimeSpec::Instant(t) => t.with_timezone(&Utc),
            DateTimeSpec::Local(l) => resolve_local(tz, *l),
        }
    }
}

impl FromStr for DateTimeSpec {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(DateTimeSpec::Instant(t));
        }
        for f in [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(l) = NaiveDateTime::parse_from_str(s, f) {
                return Ok(DateTimeSpec::Local(l));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(DateTimeSpec::Local(d.and_time(NaiveTime::MIN)));
        }
        Err(TimeError::DateTime(s.to_string()))
    }
}

/// Written as a string in scenario files (the JSON Schema says so; the parser checks the rest).
impl schemars::JsonSchema for DateTimeSpec {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DateTimeSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl<'de> Deserialize<'de> for DateTimeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for DateTimeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DateTimeSpec::Instant(t) => s.serialize_str(&t.to_rfc3339()),
            DateTimeSpec::Local(l) => s.collect_str(&l.format("%Y-%m-%dT%H:%M:%S")),
        }
    }
}

/// Which local days a recurring launch runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recurrence {
    /// Every day.
    Daily,
    /// On these weekdays.
    Weekly(Vec<Weekday>),
    /// On these days of the month (29–31 skipped in shorter months), and on the month's last
    /// day when `last_day` is set; a day named twice runs once.
    Monthly { days: Vec<u32>, last_day: bool },
}

/// A recurring launch: days, times of day, read in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringSchedule {
    /// The days it runs on.
    pub recurrence: Recurrence,
    /// The times of day, sorted, without duplicates.
    pub times: Vec<LocalTime>,
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_next
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

impl RecurringSchedule {
    /// True when the schedule runs on this local date.
    pub fn runs_on(&self, date: NaiveDate) -> bool {
        match &self.recurrence {
            Recurrence::Daily => true,
            Recurrence::Weekly(days) => days.contains(&date.weekday()),
            Recurrence::Monthly { days, last_day } => {
                days.contains(&date.day()) || (*last_day && date.day() == last_day_of_month(date))
            }
        }
    }

    /// Every occurrence in `[from, to]`, in order, each once.
    pub fn occurrences(
        &self,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let (Some(mut date), Some(last)) = (
            local_date(tz, from).pred_opt(),
            local_date(tz, to).succ_opt(),
        ) else {
            return out;
        };
        while date <= last {
            if self.runs_on(date) {
                for time in &self.times {
                    let t = resolve_local(tz, date.and_time(time.0));
                    if t >= from && t <= to && out.last() != Some(&t) {
                        out.push(t);
                    }
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        out.sort();
        out.dedup();
        out
    }

    /// The first occurrence strictly after `after`, looking at most about 14 months ahead.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut date = local_date(tz, after).pred_opt()?;
        for _ in 0..430 {
            if self.runs_on(date) {
                let mut candidates: Vec<_> = self
                    .times
                    .iter()
                    .map(|t| resolve_local(tz, date.and_time(t.0)))
                    .filter(|t| *t > after)
                    .collect();
                candidates.sort();
                if let Some(first) = candidates.first() {
                    return Some(*first);
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// The next instant at or after `from` whose local time in `tz` is `at`.
pub fn next_local_time(tz: Tz, from: DateTime<Utc>, at: LocalTime) -> DateTime<Utc> {
    let mut date = local_date(tz, from);
    loop {
        let t = resolve_local(tz, date.and_time(at.0));
        if t >= from {
            return t;
        }
        match date.succ_opt() {
            Some(next) => date = next,
            None => return from,
        }
    }
}

/// A step's delay, as written: `{after: P2D}`, `{after: P2D, at: "09:00"}`, `{at: "09:00"}`
/// or `{until: "2026-12-24T10:00"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delay {
    /// Wait this long after the previous step ran.
    pub after: Option<IsoDuration>,
    /// Run at this local time.
    pub at: Option<LocalTime>,
    /// Run at this date-time.
    pub until: Option<DateTimeSpec>,
    /// Read `at` in the contact's zone instead of the scenario's (overrides the scenario).
    pub local_time: Option<bool>,
    /// Set for `at: best` (then `at` is none): the time of day used when the contact has too
    /// little engagement to pick its best hour (see [`crate::best_time`]).
    pub default_at: Option<LocalTime>,
}

impl Delay {
    /// True when the delay always holds a contact for some time (validation's "loop without a delay").
    pub fn holds(&self) -> bool {
        // Only a positive `after` always lets time pass: `at` alone runs at once when it is that
        // time already, and `until` runs at once once its date has passed, so a loop held only
        // by them would spin.
        self.after.as_ref().is_some_and(|a| !a.is_zero())
    }

    /// True for `at: best`: the engine picks the time of day ([`crate::best_time`]).
    pub fn is_best(&self) -> bool {
        self.default_at.is_some()
    }

    /// The same delay at a fixed time of day: what `at: best` becomes once its hour is
    /// picked.
    pub fn at_time(&self, at: LocalTime) -> Delay {
        Delay {
            at: Some(at),
            default_at: None,
            ..self.clone()
        }
    }

    /// When the step is due, given the moment the previous step ran.
    ///
    /// An `at: best` delay not resolved first ([`Delay::at_time`]) runs at its `default_at`.
    ///
    /// - `after` alone: `base + after`.
    /// - `after` of whole days (or months) with `at`: the local calendar date of `base` plus
    ///   that many days, at `at` (DST included); if that is not later than `base`, the next
    ///   day's `at`.
    /// - `after` with hours or minutes, and `at`: the first `at` at or after `base + after`.
    /// - `at` alone: the first `at` at or after `base`.
    /// - `until`: that instant (or `base` if it has passed).
    ///
    /// Arithmetic past chrono's range gives `DateTime::<Utc>::MAX_UTC`, never a panic; the
    /// engine refuses any due time past [`crate::instant::max`].
    pub fn due(&self, base: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        if let Some(until) = &self.until {
            return until.resolve(tz).max(base);
        }
        match (&self.after, self.at.or(self.default_at)) {
            (None, None) => base,
            (Some(after), None) => after.add_to(base, tz),
            (None, Some(at)) => next_local_time(tz, base, at),
            (Some(after), Some(at)) if !after.has_time_part() => {
                let Some(local) = local_naive(tz, base) else {
                    return DateTime::<Utc>::MAX_UTC;
                };
                let moved = local
                    .checked_add_months(chrono::Months::new(after.months()))
                    .unwrap_or(local);
                let Some(date) = moved.date().checked_add_days(Days::new(after.days())) else {
                    return DateTime::<Utc>::MAX_UTC;
                };
                let t = resolve_local(tz, date.and_time(at.0));
                if t > base {
                    t
                } else {
                    match base.checked_add_signed(TimeDelta::seconds(1)) {
                        Some(next) => next_local_time(tz, next, at),
                        None => DateTime::<Utc>::MAX_UTC,
                    }
                }
            }
            (Some(after), Some(at)) => next_local_time(tz, after.add_to(base, tz), at),
        }
    }
}

/// Quiet hours: a daily local period (`from` → `to`, possibly across midnight) during which
/// sends are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Start of the quiet period.
    pub from: LocalTime,
    /// End of the quiet period (exclusive).
    pub to: LocalTime,
}

impl QuietHours {
    /// If `now` falls inside the quiet period (in `tz`), the instant it ends.
    pub fn ends_after(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = local_naive(tz, now)?.time();
        let (from, to) = (self.from.0, self.to.0);
        let inside = if from <= to {
            local >= from && local < to
        } else {
            local >= from || local < to
        };
        if !inside || from == to {
            return None;
        }
        Some(next_local_time(tz, now, self.to))
    }
}

/// When an inactivity trigger (product.viewed, cart.abandoned) fires after the contact's last
/// qualifying event, if no other event of the contact comes before. `None` when that falls
/// past 9999-12-31 (an event at 9999-12-31T23:30 with a 60-minute trigger): no such check
/// can be stored, and the caller refuses the event or skips the check with that reason.
pub fn inactivity_deadline(last_event: DateTime<Utc>, minutes: u32) -> Option<DateTime<Utc>> {
    last_event
        .checked_add_signed(TimeDelta::minutes(i64::from(minutes)))
        .filter(|t| crate::instant::in_range(*t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Australia, Europe};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }
    fn time(s: &str) -> LocalTime {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }
    fn dur(s: &str) -> IsoDuration {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }
    fn delay(after: Option<&str>, at: Option<&str>) -> Delay {
        Delay {
            after: after.map(dur),
            at: at.map(time),
            ..Delay::default()
        }
    }

    #[test]
    fn design_example_after_two_days_at_nine_in_paris_across_spring_forward() {
        let due = delay(Some("P2D"), Some("09:00")).due(utc("2026-03-27T15:00:00Z"), Europe::Paris);
        assert_eq!(due, utc("2026-03-29T07:00:00Z"));
    }

    #[test]
    fn at_times_across_fall_back_in_new_york() {
        // 2026-11-01: EDT (-4) ends, EST (-5) begins.
        let due =
            delay(Some("P1D"), Some("09:00")).due(utc("2026-10-31T14:00:00Z"), America::New_York);
        assert_eq!(due, utc("2026-11-01T14:00:00Z"));
        let before =
            delay(Some("P1D"), Some("09:00")).due(utc("2026-10-30T14:00:00Z"), America::New_York);
        assert_eq!(before, utc("2026-10-31T13:00:00Z"));
    }

    #[test]
    fn southern_hemisphere_sydney_dst_starts_in_october() {
        // 2026-10-04 02:00 AEST -> 03:00 AEDT.
        let due =
            delay(Some("P1D"), Some("10:00")).due(utc("2026-10-03T00:00:00Z"), Australia::Sydney);
        assert_eq!(due, utc("2026-10-03T23:00:00Z"));
    }

    #[test]
    fn half_hour_dst_on_lord_howe() {
        // 2026-10-04 02:00 +10:30 -> 02:30 +11:00; 02:10 does not exist and becomes 02:40.
        let t = resolve_local(
            Australia::Lord_Howe,
            NaiveDate::from_ymd_opt(2026, 10, 4)
                .and_then(|d| d.and_hms_opt(2, 10, 0))
                .unwrap_or_default(),
        );
        assert_eq!(t, utc("2026-10-03T15:40:00Z"));
    }

    #[test]
    fn nonexistent_and_repeated_local_times() {
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .unwrap_or_default();
        assert_eq!(
            resolve_local(Europe::Paris, gap),
            utc("2026-03-29T01:30:00Z")
        );
        let twice = NaiveDate::from_ymd_opt(2026, 10, 25)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .unwrap_or_default();
        assert_eq!(
            resolve_local(Europe::Paris, twice),
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn zones_without_dst_are_plain_offsets() {
        let due = delay(Some("P2D"), Some("09:30")).due(utc("2026-03-27T15:00:00Z"), Asia::Kolkata);
        assert_eq!(due, utc("2026-03-29T04:00:00Z"));
    }

    #[test]
    fn at_alone_is_today_if_still_ahead_else_tomorrow() {
        let d = delay(None, Some("09:00"));
        assert_eq!(
            d.due(utc("2026-12-01T08:00:00Z"), chrono_tz::UTC),
            utc("2026-12-01T09:00:00Z")
        );
        assert_eq!(
            d.due(utc("2026-12-01T09:00:00Z"), chrono_tz::UTC),
            utc("2026-12-01T09:00:00Z")
        );
        assert_eq!(
            d.due(utc("2026-12-01T10:00:00Z"), chrono_tz::UTC),
            utc("2026-12-02T09:00:00Z")
        );
    }

    #[test]
    fn after_with_hours_and_at_takes_the_next_at() {
        let d = delay(Some("PT6H"), Some("09:00"));
        assert_eq!(
            d.due(utc("2026-12-01T08:00:00Z"), chrono_tz::UTC),
            utc("2026-12-02T09:00:00Z")
        );
    }

    #[test]
    fn until_in_the_past_is_now() {
        let d = Delay {
            until: Some("2026-12-24T10:00".parse().unwrap_or_else(|e| panic!("{e}"))),
            ..Delay::default()
        };
        assert_eq!(
            d.due(utc("2026-12-01T00:00:00Z"), Europe::Paris),
            utc("2026-12-24T09:00:00Z")
        );
        assert_eq!(
            d.due(utc("2026-12-25T00:00:00Z"), Europe::Paris),
            utc("2026-12-25T00:00:00Z")
        );
    }

    #[test]
    fn monthly_on_31_and_last_day_runs_once_per_month() {
        let s = RecurringSchedule {
            recurrence: Recurrence::Monthly {
                days: vec![31],
                last_day: true,
            },
            times: vec![time("08:00")],
        };
        let got = s.occurrences(
            chrono_tz::UTC,
            utc("2027-01-15T00:00:00Z"),
            utc("2027-04-15T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                utc("2027-01-31T08:00:00Z"),
                utc("2027-02-28T08:00:00Z"),
                utc("2027-03-31T08:00:00Z")
            ]
        );
    }

    #[test]
    fn monthly_day_31_without_last_day_skips_short_months_and_leap_february() {
        let s = RecurringSchedule {
            recurrence: Recurrence::Monthly {
                days: vec![29, 31],
                last_day: false,
            },
            times: vec![time("08:00")],
        };
        let got = s.occurrences(
            chrono_tz::UTC,
            utc("2028-02-01T00:00:00Z"),
            utc("2028-05-01T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                utc("2028-02-29T08:00:00Z"),
                utc("2028-03-29T08:00:00Z"),
                utc("2028-03-31T08:00:00Z"),
                utc("2028-04-29T08:00:00Z")
            ]
        );
    }

    #[test]
    fn daily_times_follow_local_time_across_dst() {
        let s = RecurringSchedule {
            recurrence: Recurrence::Daily,
            times: vec![time("09:00"), time("18:00")],
        };
        let got = s.occurrences(
            Europe::Paris,
            utc("2026-03-28T00:00:00Z"),
            utc("2026-03-29T23:59:00Z"),
        );
        assert_eq!(
            got,
            vec![
                utc("2026-03-28T08:00:00Z"),
                utc("2026-03-28T17:00:00Z"),
                utc("2026-03-29T07:00:00Z"),
                utc("2026-03-29T16:00:00Z")
            ]
        );
    }

    #[test]
    fn weekly_and_next_after() {
        let s = RecurringSchedule {
            recurrence: Recurrence::Weekly(vec![Weekday::Mon, Weekday::Thu]),
            times: vec![time("09:00")],
        };
        // 2026-12-01 is a Tuesday.
        assert_eq!(
            s.next_after(America::New_York, utc("2026-12-01T00:00:00Z")),
            Some(utc("2026-12-03T14:00:00Z"))
        );
        assert_eq!(
            s.next_after(America::New_York, utc("2026-12-03T14:00:00Z")),
            Some(utc("2026-12-07T14:00:00Z"))
        );
    }

    #[test]
    fn recurring_at_a_nonexistent_time_runs_after_the_gap() {
        let s = RecurringSchedule {
            recurrence: Recurrence::Daily,
            times: vec![time("02:30")],
        };
        let got = s.occurrences(
            America::New_York,
            utc("2026-03-08T00:00:00Z"),
            utc("2026-03-08T23:00:00Z"),
        );
        assert_eq!(got, vec![utc("2026-03-08T07:30:00Z")]); // 03:30 EDT
    }

    #[test]
    fn quiet_hours_across_midnight() {
        let q = QuietHours {
            from: time("21:00"),
            to: time("08:00"),
        };
        assert_eq!(
            q.ends_after(utc("2026-12-01T22:00:00Z"), chrono_tz::UTC),
            Some(utc("2026-12-02T08:00:00Z"))
        );
        assert_eq!(
            q.ends_after(utc("2026-12-01T07:00:00Z"), chrono_tz::UTC),
            Some(utc("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            q.ends_after(utc("2026-12-01T08:00:00Z"), chrono_tz::UTC),
            None
        );
        assert_eq!(
            q.ends_after(utc("2026-12-01T12:00:00Z"), Europe::Paris),
            None
        );
    }

    #[test]
    fn times_and_dates_parse_or_explain() {
        assert!("9:00".parse::<LocalTime>().is_err());
        assert!("24:00".parse::<LocalTime>().is_err());
        assert!("09:60".parse::<LocalTime>().is_err());
        assert!("2026-13-01T09:00".parse::<DateTimeSpec>().is_err());
        assert_eq!(
            "2026-12-01"
                .parse::<DateTimeSpec>()
                .map(|d| d.resolve(chrono_tz::UTC))
                .ok(),
            Some(utc("2026-12-01T00:00:00Z"))
        );
        assert!(parse_zone("Europe/Atlantis").is_err());
    }

    #[test]
    fn inactivity_is_minutes_after_the_last_event() {
        assert_eq!(
            inactivity_deadline(utc("2026-12-01T10:00:00Z"), 30),
            Some(utc("2026-12-01T10:30:00Z"))
        );
        assert_eq!(
            inactivity_deadline(utc("9999-12-31T23:30:00Z"), 60),
            None,
            "past 9999-12-31"
        );
    }
}
