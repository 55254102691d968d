//! Wall-clock times and instants in a time zone, DST included: the base both ISO-8601
//! durations ([`crate::duration`]) and schedules ([`crate::schedule`]) build on, so neither
//! depends on the other for it.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant a local wall-clock time names in `tz`.
///
/// DST rules: a time that occurs twice (clocks go back) is its first occurrence; a time that
/// does not exist (clocks go forward) is shifted by the length of the gap, as a wall clock
/// that kept running would show it (02:30 on a spring-forward night in Paris is 03:30 CEST).
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // The offset in force a day earlier is the one before the gap.
            // Checked: at the very ends of chrono's range there is no day before or offset to
            // take, and the local time read as UTC is the closest answer.
            let before = local
                .checked_sub_signed(TimeDelta::days(1))
                .unwrap_or(local);
            let offset = tz.offset_from_utc_datetime(&before);
            let fixed = chrono::Offset::fix(&offset);
            let utc = local
                .checked_sub_signed(TimeDelta::seconds(i64::from(fixed.local_minus_utc())))
                .unwrap_or(local);
            Utc.from_utc_datetime(&utc)
        }
    }
}

/// The local wall-clock time of an instant in `tz`; `None` at the very ends of chrono's
/// range, where adding the zone's offset overflows (`with_timezone` would panic there).
pub fn local_naive(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = chrono::Offset::fix(&tz.offset_from_utc_datetime(&t.naive_utc()));
    t.naive_utc().checked_add_offset(offset)
}

/// The local calendar date of an instant in `tz` (the UTC date where the local one does not
/// exist, at the ends of chrono's range).
pub fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    local_naive(tz, t).map_or(t.date_naive(), |l| l.date())
}
