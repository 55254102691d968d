//! The range of instants Relance accepts, stores and computes: 1970-01-01T00:00:00Z ..=
//! 9999-12-31T23:59:59.999999Z. Inputs outside it are refused where they enter; stores keep
//! instants as integers (microseconds since the Unix epoch) and read back only this range;
//! calendar arithmetic that would leave it yields `None` instead of saturating or panicking.
//!
//! Why these bounds: every store format and the RFC 3339 text of the API have four-digit
//! years, and no marketing event happens before the epoch; an instant past 9999 once sorted
//! before every other timer (`+10000-…` < `2026-…` as text) and failed to read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// The earliest accepted instant, in microseconds since the epoch.
pub const MIN_MICROS: i64 = 0;
/// The latest accepted instant (9999-12-31T23:59:59.999999Z), in microseconds since the epoch.
pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// The range as people read it, for messages.
pub const RANGE_TEXT: &str = "1970-01-01..9999-12-31";

/// The earliest accepted instant.
pub fn min() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest accepted instant.
pub fn max() -> DateTime<Utc> {
    // The literal is in chrono's range; the fallback only keeps this free of unwrap.
    DateTime::from_timestamp_micros(MAX_MICROS).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// True when `t` is within the accepted range.
pub fn in_range(t: DateTime<Utc>) -> bool {
    (MIN_MICROS..=MAX_MICROS).contains(&t.timestamp_micros())
}

/// An instant outside the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is outside {RANGE_TEXT}")]
pub struct OutOfRange(pub String);

/// `t` itself when within range, else why not.
pub fn check(t: DateTime<Utc>) -> Result<DateTime<Utc>, OutOfRange> {
    if in_range(t) {
        Ok(t)
    } else {
        Err(OutOfRange(t.to_rfc3339()))
    }
}

/// The storage form: microseconds since the epoch (fixed meaning, numeric order).
/// Callers store only checked instants; an out-of-range one still maps to a number (chrono's
/// whole range fits in an `i64` of microseconds) that [`from_micros`] refuses on read.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Reads the storage form back; `None` outside the accepted range.
pub fn from_micros(micros: i64) -> Option<DateTime<Utc>> {
    if (MIN_MICROS..=MAX_MICROS).contains(&micros) {
        DateTime::from_timestamp_micros(micros)
    } else {
        None
    }
}

/// Fixed-width decimal text of the storage form (18 digits), for stores whose keys are
/// strings (DynamoDB sort keys): text order is then numeric order, hence time order.
pub fn to_key(t: DateTime<Utc>) -> String {
    format!("{:018}", to_micros(t).clamp(MIN_MICROS, MAX_MICROS))
}

/// Reads [`to_key`] text back; `None` when it is not 18 digits within range.
pub fn from_key(text: &str) -> Option<DateTime<Utc>> {
    if text.len() != 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    from_micros(text.parse().ok()?)
}

/// Serde helper for an optional input instant (`at` of the wire details): RFC 3339, within
/// range, or the field's error says which and why.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let t = Option::<DateTime<Utc>>::deserialize(d)?;
    match t {
        Some(t) => check(t).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip_and_outside_is_refused() {
        assert_eq!(to_micros(max()), MAX_MICROS);
        assert_eq!(from_micros(MAX_MICROS), Some(max()));
        assert_eq!(from_micros(0), Some(min()));
        assert_eq!(from_micros(MAX_MICROS + 1), None);
        assert_eq!(from_micros(-1), None);
        assert_eq!(from_micros(i64::MAX), None);
        assert_eq!(from_micros(i64::MIN), None);
        assert!(check(DateTime::<Utc>::MAX_UTC).is_err());
        assert!(check(min() - chrono::TimeDelta::microseconds(1)).is_err());
        let e = check(max() + chrono::TimeDelta::seconds(1)).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("+10000-01-01T00:00:00.999999+00:00 is outside 1970-01-01..9999-12-31".into())
        );
    }

    #[test]
    fn keys_are_fixed_width_and_sort_as_time() {
        let a = to_key(min());
        let b = to_key(DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap_or(min()));
        let c = to_key(max());
        assert_eq!((a.len(), b.len(), c.len()), (18, 18, 18));
        assert!(a < b && b < c);
        assert_eq!(from_key(&c), Some(max()));
        assert_eq!(from_key("+10000-01-01T00:00"), None);
        assert_eq!(from_key("999999999999999999"), None);
    }
}
