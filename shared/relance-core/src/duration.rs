//! ISO-8601 durations (`P30D`, `PT2H`, `P1Y2M3W4DT5H6M7S`) as scenario files write them.
//! Years, months, weeks and days are calendar units in a zone (P1D is the same wall-clock time
//! the next day, as in RFC 5545, so it spans 23 or 25 hours across a DST change); hours,
//! minutes and seconds are exact.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Months, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::local::{local_naive, resolve_local};

/// A non-negative ISO-8601 duration, kept with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsoDuration {
    months: u32,
    days: u64,
    seconds: u64,
    text: String,
}

/// The longest duration accepted anywhere (delays, waits, windows, `once_per`, caps): 100
/// years, measured as [`IsoDuration::approx_seconds`] does (a month as 31 days), so `P100Y`,
/// `P1200M` and `P37200D` pass and anything longer is refused. A timer due beyond 9999-12-31
/// could not be stored, and nothing a marketing scenario waits for takes a century.
pub const MAX_DURATION_SECONDS: u64 = 1200 * 31 * 86_400;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct DurationError {
    text: String,
    why: &'static str,
}

impl DurationError {
    fn message(&self) -> String {
        if self.why == TOO_LONG {
            format!(
                "\"{}\" is too long: at most 100 years (P100Y), so that no timer falls past 9999-12-31",
                self.text
            )
        } else {
            format!(
                "\"{}\" is not an ISO-8601 duration such as P2D, PT6H or P1M ({})",
                self.text, self.why
            )
        }
    }
}

const TOO_LONG: &str = "too long";

impl IsoDuration {
    /// Calendar months (years count as 12).
    pub fn months(&self) -> u32 {
        self.months
    }

    /// Whole days (weeks count as 7).
    pub fn days(&self) -> u64 {
        self.days
    }

    /// The sub-day part in seconds.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// True when the duration is zero.
    pub fn is_zero(&self) -> bool {
        self.months == 0 && self.days == 0 && self.seconds == 0
    }

    /// True when the duration has hours, minutes or seconds.
    pub fn has_time_part(&self) -> bool {
        self.seconds != 0
    }

    /// The exact part (hours, minutes, seconds) as a `TimeDelta`.
    pub fn exact(&self) -> TimeDelta {
        TimeDelta::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX / 2))
    }

    /// An upper bound of the duration in seconds (months taken as 31 days), for limits and windows.
    pub fn approx_seconds(&self) -> u64 {
        (u64::from(self.months) * 31 * 86_400)
            .saturating_add(self.days.saturating_mul(86_400))
            .saturating_add(self.seconds)
    }

    /// `t + self`: months and days are added on the local calendar of `tz` (the day clamped
    /// to the month's end, DST resolved as [`resolve_local`] does), then hours, minutes and
    /// seconds as exact time.
    pub fn add_to(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let mut out = t;
        if self.months > 0 || self.days > 0 {
            let Some(local) = local_naive(tz, t) else {
                return DateTime::<Utc>::MAX_UTC;
            };
            let moved = local
                .checked_add_months(Months::new(self.months))
                .and_then(|l| l.checked_add_days(Days::new(self.days)));
            out = match moved {
                Some(m) => resolve_local(tz, m),
                None => return DateTime::<Utc>::MAX_UTC,
            };
        }
        out.checked_add_signed(self.exact())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// `t - self`, the mirror of [`IsoDuration::add_to`], for "within the last" windows.
    pub fn sub_from(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let mut out = t;
        if self.months > 0 || self.days > 0 {
            let Some(local) = local_naive(tz, t) else {
                return DateTime::<Utc>::MIN_UTC;
            };
            let moved = local
                .checked_sub_months(Months::new(self.months))
                .and_then(|l| l.checked_sub_days(Days::new(self.days)));
            out = match moved {
                Some(m) => resolve_local(tz, m),
                None => return DateTime::<Utc>::MIN_UTC,
            };
        }
        out.checked_sub_signed(self.exact())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// A duration of whole seconds, for code that builds durations (tests, shortened waits).
    pub fn from_seconds(seconds: u64) -> Self {
        IsoDuration {
            months: 0,
            days: 0,
            seconds,
            text: format!("PT{seconds}S"),
        }
    }
}

impl FromStr for IsoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            text: text.to_string(),
            why,
        };
        let rest = text
            .strip_prefix('P')
            .ok_or_else(|| err("it must start with P"))?;
        if rest.is_empty() {
            return Err(err("nothing follows P"));
        }
        let (date_part, time_part) = match rest.split_once('T') {
            Some((_, "")) => return Err(err("nothing follows T")),
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        let (mut months, mut days, mut seconds) = (0u64, 0u64, 0u64);
        let mut parse_part =
            |part: &str, units: &[(char, u64, bool)]| -> Result<(), DurationError> {
                let mut number = String::new();
                let mut last_unit = 0usize;
                for c in part.chars() {
                    if c.is_ascii_digit() {
                        number.push(c);
                        continue;
                    }
                    let pos = units
                        .iter()
                        .position(|(u, _, _)| *u == c)
                        .ok_or_else(|| err("unknown unit letter"))?;
                    if pos < last_unit || number.is_empty() {
                        return Err(err("units out of order or without a number"));
                    }
                    last_unit = pos + 1;
                    let n: u64 = number.parse().map_err(|_| err("number too large"))?;
                    number.clear();
                    let (_, factor, is_month) = units[pos];
                    let add = n
                        .checked_mul(factor)
                        .ok_or_else(|| err("number too large"))?;
                    let (slot, add) = if is_month {
                        (&mut months, add)
                    } else if factor >= 86_400 && units.len() == 4 {
                        (&mut days, add / 86_400)
                    } else {
                        (&mut seconds, add)
                    };
                    *slot = slot
                        .checked_add(add)
                        .ok_or_else(|| err("number too large"))?;
                }
                if !number.is_empty() {
                    return Err(err("a number without a unit"));
                }
                Ok(())
            };
        parse_part(
            date_part,
            &[
                ('Y', 12, true),
                ('M', 1, true),
                ('W', 7 * 86_400, false),
                ('D', 86_400, false),
            ],
        )?;
        if let Some(t) = time_part {
            parse_part(t, &[('H', 3600, false), ('M', 60, false), ('S', 1, false)])?;
        }
        let too_long = months
            .saturating_mul(31 * 86_400)
            .saturating_add(days.saturating_mul(86_400))
            .saturating_add(seconds)
            > MAX_DURATION_SECONDS;
        if too_long {
            return Err(err(TOO_LONG));
        }
        Ok(IsoDuration {
            // At most 1,200 here (checked just above).
            months: u32::try_from(months).map_err(|_| err(TOO_LONG))?,
            days,
            seconds,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Written as a string in scenario files (the JSON Schema says so; the parser checks the rest).
impl schemars::JsonSchema for IsoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IsoDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(s: &str) -> IsoDuration {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(d("P30D").days(), 30);
        assert_eq!(d("P2W").days(), 14);
        assert_eq!(d("PT2H").seconds(), 7200);
        assert_eq!(d("PT90M").seconds(), 5400);
        let full = d("P1Y2M3W4DT5H6M7S");
        assert_eq!(
            (full.months(), full.days(), full.seconds()),
            (14, 25, 5 * 3600 + 6 * 60 + 7)
        );
        assert_eq!(d("P1D").to_string(), "P1D");
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "", "P", "2D", "P2", "PT", "P2X", "PD", "P1D2Y", "-P1D", "P1.5D", "PT1D",
        ] {
            assert!(
                bad.parse::<IsoDuration>().is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn months_are_calendar_months_clamped_to_month_end() {
        let t = Utc.with_ymd_and_hms(2027, 1, 31, 8, 0, 0).unwrap();
        assert_eq!(
            d("P1M").add_to(t, chrono_tz::UTC),
            Utc.with_ymd_and_hms(2027, 2, 28, 8, 0, 0).unwrap()
        );
        assert_eq!(
            d("P1M").sub_from(
                Utc.with_ymd_and_hms(2027, 3, 31, 8, 0, 0).unwrap(),
                chrono_tz::UTC
            ),
            Utc.with_ymd_and_hms(2027, 2, 28, 8, 0, 0).unwrap()
        );
    }

    #[test]
    fn days_are_calendar_days_across_dst() {
        let t = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        // 13:00 CET + P1D = 13:00 CEST the next day: 23 hours.
        assert_eq!(
            d("P1D").add_to(t, chrono_tz::Europe::Paris),
            Utc.with_ymd_and_hms(2026, 3, 29, 11, 0, 0).unwrap()
        );
        assert_eq!(
            d("PT24H").add_to(t, chrono_tz::Europe::Paris),
            Utc.with_ymd_and_hms(2026, 3, 29, 12, 0, 0).unwrap()
        );
        assert_eq!(
            d("P1D").sub_from(
                Utc.with_ymd_and_hms(2026, 3, 29, 11, 0, 0).unwrap(),
                chrono_tz::Europe::Paris
            ),
            t
        );
        assert_eq!(
            d("P1D").add_to(t, chrono_tz::UTC),
            Utc.with_ymd_and_hms(2026, 3, 29, 12, 0, 0).unwrap()
        );
    }

    #[test]
    fn huge_numbers_are_refused_not_overflowed() {
        assert!("PT5124095576030431H15M".parse::<IsoDuration>().is_err());
        assert!("P99999999999999999999D".parse::<IsoDuration>().is_err());
        // Issue 11 caps durations at 100 years (this test used to add P999999D).
        let big: IsoDuration = "P100Y".parse().unwrap_or_else(|e| panic!("{e}"));
        let t = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        assert!(big.add_to(t, chrono_tz::UTC) > t);
    }

    #[test]
    fn hostile_durations_past_a_century_are_refused() {
        for ok in ["P100Y", "P1200M", "P37200D", "PT892800H", "P99Y11M30D"] {
            assert!(ok.parse::<IsoDuration>().is_ok(), "{ok}");
        }
        for long in [
            "P8000Y", "P101Y", "P1201M", "P37201D", "P100YT1S", "P999999D",
        ] {
            let e = long.parse::<IsoDuration>().err().map(|e| e.to_string());
            assert_eq!(
                e,
                Some(format!(
                    "\"{long}\" is too long: at most 100 years (P100Y), so that no timer falls past 9999-12-31"
                ))
            );
        }
    }
}
