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

/// Instants written as chrono writes them (RFC 3339 in UTC with `Z`, a fraction of 3, 6 or 9
/// digits only when there is one), without going through `Display`: chrono's serializer
/// formats one character at a time through `collect_str`, about 5% of the embedded runner's
/// time, as every journal record, enrollment and outbox message carries instants. The bytes
/// are the same (a property test compares them with chrono's). Reading the same text back
/// likewise skips chrono's general parser ([`rfc3339::parse`]). For
/// `#[serde(serialize_with = ..., deserialize_with = ...)]` on the hot fields.
pub mod rfc3339 {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, Timelike, Utc};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Deserializer, Serialize, de};

    /// The text of `t` as chrono's serializer writes it, when it is a common instant (a year
    /// of four digits, not a leap second); `None` otherwise, for chrono to write.
    fn text(t: &DateTime<Utc>, out: &mut [u8; 30]) -> Option<usize> {
        // A transition writes the same instant (its `now`) into most of its records, its
        // enrollment and its message: the last text is kept, per thread.
        /// An instant, its text and the text's length.
        type Written = (DateTime<Utc>, [u8; 30], usize);
        thread_local! {
            static LAST: std::cell::Cell<Option<Written>> = const { std::cell::Cell::new(None) };
        }
        if let Some((last, text, len)) = LAST.get()
            && last == *t
        {
            *out = text;
            return Some(len);
        }
        let len = write_text(t, out)?;
        LAST.set(Some((*t, *out, len)));
        Some(len)
    }

    /// [`text`], computed.
    fn write_text(t: &DateTime<Utc>, out: &mut [u8; 30]) -> Option<usize> {
        // The date and the time once: each accessor of a `DateTime` converts it to local
        // time again (a third of this function's cost when there were six of them).
        let naive = t.naive_utc();
        let (date, time) = (naive.date(), naive.time());
        let year = date.year();
        let nano = time.nanosecond();
        if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
            return None;
        }
        let put2 = |out: &mut [u8; 30], at: usize, v: u32| {
            out[at] = b'0' + (v / 10) as u8;
            out[at + 1] = b'0' + (v % 10) as u8;
        };
        let year = year as u32;
        put2(out, 0, year / 100);
        put2(out, 2, year % 100);
        out[4] = b'-';
        put2(out, 5, date.month());
        out[7] = b'-';
        put2(out, 8, date.day());
        out[10] = b'T';
        put2(out, 11, time.hour());
        out[13] = b':';
        put2(out, 14, time.minute());
        out[16] = b':';
        put2(out, 17, time.second());
        let (mut fraction, digits) = if nano == 0 {
            (0, 0)
        } else if nano.is_multiple_of(1_000_000) {
            (nano / 1_000_000, 3)
        } else if nano.is_multiple_of(1_000) {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        let mut len = 19;
        if digits > 0 {
            out[19] = b'.';
            for i in (0..digits).rev() {
                out[20 + i] = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            len = 20 + digits;
        }
        out[len] = b'Z';
        Some(len + 1)
    }

    /// Serializes one instant.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match text(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
            Some(text) => s.serialize_str(text),
            None => t.serialize(s),
        }
    }

    /// Appends `t` to `out` as a JSON string, the bytes [`serialize`] gives serde_json (for
    /// writers that build JSON text without a serializer, [`crate::journal::Record::write_json`]).
    pub fn push_json(t: &DateTime<Utc>, out: &mut String) {
        let mut buf = [0u8; 30];
        match text(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
            Some(text) => {
                // RFC 3339 text has nothing to escape.
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            None => out.push_str(&serde_json::to_string(t).unwrap_or_else(|_| "null".into())),
        }
    }

    /// An instant in a field or a map value.
    struct Fast<'a>(&'a DateTime<Utc>);

    impl Serialize for Fast<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }

    /// Serializes an optional instant.
    pub fn option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Fast(t)),
            None => s.serialize_none(),
        }
    }

    /// Reads the text [`serialize`] writes (`YYYY-MM-DDTHH:MM:SS`, a fraction of 1 to 9
    /// digits or none, `Z`) with a few comparisons; `None` for any other form (an offset, a
    /// lowercase separator, a leap second, an impossible date), which chrono then reads.
    fn fast(s: &[u8]) -> Option<DateTime<Utc>> {
        let n = s.len();
        if !(20..=30).contains(&n)
            || s[4] != b'-'
            || s[7] != b'-'
            || s[10] != b'T'
            || s[13] != b':'
            || s[16] != b':'
            || s[n - 1] != b'Z'
        {
            return None;
        }
        let digits = |from: usize, count: usize| -> Option<u32> {
            s.get(from..from + count)?.iter().try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
        };
        let nano = match n {
            20 => 0,
            21 => return None,
            _ if s[19] != b'.' => return None,
            _ => {
                let count = n - 21;
                digits(20, count)? * 10u32.pow(9 - count as u32)
            }
        };
        let second = digits(17, 2)?;
        if second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(digits(0, 4)? as i32, digits(5, 2)?, digits(8, 2)?)?;
        let time = NaiveTime::from_hms_nano_opt(digits(11, 2)?, digits(14, 2)?, second, nano)?;
        Some(date.and_time(time).and_utc())
    }

    /// Reads an instant as chrono's `Deserialize` does (RFC 3339 with any offset, into UTC;
    /// the same error otherwise), the common text first without chrono's general parser (about
    /// 1,600 instructions an instant, a third of reading an enrollment). A property test
    /// compares the two on written and mangled texts.
    pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        match fast(text.as_bytes()) {
            Some(t) => Ok(t),
            None => text
                .parse::<DateTime<FixedOffset>>()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    struct Visit;

    impl de::Visitor<'_> for Visit {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            // chrono's words (0.4.45), so that an error reads the same as before.
            f.write_str("an RFC 3339 formatted date and time string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            parse(text).map_err(E::custom)
        }
    }

    /// Deserializes one instant (see [`parse`]): `#[serde(deserialize_with = ...)]`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(Visit)
    }

    /// An instant as a map value.
    struct Read(DateTime<Utc>);

    impl<'de> Deserialize<'de> for Read {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Read, D::Error> {
            deserialize(d).map(Read)
        }
    }

    struct VisitMap;

    impl<'de> de::Visitor<'de> for VisitMap {
        type Value = BTreeMap<String, DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, Read(v))) = access.next_entry::<String, Read>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }

    /// Deserializes a map of instants (see [`parse`]).
    pub fn deserialize_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, DateTime<Utc>>, D::Error> {
        d.deserialize_map(VisitMap)
    }

    /// Serializes a map of instants.
    pub fn map<S: Serializer>(
        m: &BTreeMap<String, DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            out.serialize_entry(k, &Fast(v))?;
        }
        out.end()
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

    /// chrono's own text of an instant, as its serializer writes it.
    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap_or_default()
    }

    fn fast_text(t: &DateTime<Utc>) -> String {
        let mut s = serde_json::Serializer::new(Vec::new());
        let _ = rfc3339::serialize(t, &mut s);
        String::from_utf8(s.into_inner()).unwrap_or_default()
    }

    #[test]
    fn the_fast_text_is_chronos_at_the_edges_and_for_each_fraction() {
        let cases = [
            (0, 0),                                // the epoch, no fraction
            (MAX_MICROS / 1_000_000, 999_999_000), // the last instant
            (1_764_763_679, 543_482_000),          // microseconds
            (1_764_763_679, 543_000_000),          // milliseconds
            (1_764_763_679, 543_482_123),          // nanoseconds
            (1_764_763_679, 1_500_000_000),        // a leap second: chrono's own text
            (-62_135_596_800, 0),                  // year 1
            (-62_167_219_200, 0),                  // year 0 (1 BC)
            (253_402_300_800, 0),                  // year 10000: chrono's own text
            (-62_167_219_201, 0),                  // year -1: chrono's own text
        ];
        for (secs, nanos) in cases {
            let t = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            assert_eq!(fast_text(&t), chrono_text(&t), "{secs} {nanos}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_text_is_chronos(
            micros in MIN_MICROS..=MAX_MICROS,
            extra_nanos in proptest::prop_oneof![proptest::strategy::Just(0u32), 0u32..1000],
            round in 0u8..3,
        ) {
            // Whole seconds, whole milliseconds and microseconds all occur.
            let micros = match round { 0 => micros - micros % 1_000_000, 1 => micros - micros % 1000, _ => micros };
            let t = DateTime::from_timestamp_micros(micros).unwrap_or_default()
                + chrono::TimeDelta::nanoseconds(i64::from(extra_nanos));
            proptest::prop_assert_eq!(fast_text(&t), chrono_text(&t));
            let map: std::collections::BTreeMap<String, DateTime<Utc>> = [("k".to_string(), t)].into();
            let mut s = serde_json::Serializer::new(Vec::new());
            let _ = rfc3339::map(&map, &mut s);
            proptest::prop_assert_eq!(String::from_utf8(s.into_inner()).unwrap_or_default(), serde_json::to_string(&map).unwrap_or_default());
            let mut s = serde_json::Serializer::new(Vec::new());
            let _ = rfc3339::option(&Some(t), &mut s);
            proptest::prop_assert_eq!(String::from_utf8(s.into_inner()).unwrap_or_default(), chrono_text(&t));
            // Read back: the same instant, as chrono reads it.
            let text = fast_text(&t);
            proptest::prop_assert_eq!(rfc3339::parse(text.trim_matches('"')).ok(), Some(t));
            let read: DateTime<Utc> = serde_json::from_str(&text).unwrap_or_default();
            proptest::prop_assert_eq!(read, t);
        }

        /// Any text near the written form (other separators, offsets, fractions of 0 to 11
        /// digits, impossible dates and times, leap seconds) reads as chrono reads it, or
        /// fails as it fails.
        #[test]
        fn reading_is_chronos(
            text in "[0-9]{4}-(0[0-9]|1[0-3])-([0-3][0-9])[Tt ]([0-2][0-9]):[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?(Z|z|[+-][01][0-9]:[0-5][0-9])",
        ) {
            let chrono = text.parse::<DateTime<chrono::FixedOffset>>().map(|t| t.with_timezone(&Utc));
            let ours = rfc3339::parse(&text);
            proptest::prop_assert_eq!(ours.as_ref().ok(), chrono.as_ref().ok());
            proptest::prop_assert_eq!(ours.err().map(|e| e.to_string()), chrono.err().map(|e| e.to_string()));
        }
    }

    #[test]
    fn reading_the_written_form_is_chronos_at_the_edges() {
        for text in [
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2026-12-03T16:45:08.3Z",
            "2026-12-03T16:45:08.Z",
            "2026-12-03T16:45:08.1234567890Z",
            "2026-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2026-12-03T23:59:60Z",
            "2026-12-03T23:59:60.5Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03t16:45:08Z",
            "2026-12-03T16:45:08z",
            "2026-12-03T16:45:08+01:00",
            "2026-12-03 16:45:08Z",
            "+10000-01-01T00:00:00Z",
            "2026-1a-03T16:45:08Z",
            "",
        ] {
            let chrono = text
                .parse::<DateTime<chrono::FixedOffset>>()
                .map(|t| t.with_timezone(&Utc));
            let ours = rfc3339::parse(text);
            assert_eq!(ours.as_ref().ok(), chrono.as_ref().ok(), "{text}");
            assert_eq!(
                ours.err().map(|e| e.to_string()),
                chrono.err().map(|e| e.to_string()),
                "{text}"
            );
            // Through serde, the error reads as chrono's did.
            let json = format!("\"{text}\"");
            let via_chrono =
                serde_json::from_str::<DateTime<Utc>>(&json).map_err(|e| e.to_string());
            let mut d = serde_json::Deserializer::from_str(&json);
            let via_ours = rfc3339::deserialize(&mut d).map_err(|e| e.to_string());
            assert_eq!(via_ours, via_chrono, "{text}");
        }
        // A value that is not text fails with chrono's words too.
        for json in ["5", "null", "true", "[]", "{}", "1.5"] {
            let via_chrono = serde_json::from_str::<DateTime<Utc>>(json).map_err(|e| e.to_string());
            let mut d = serde_json::Deserializer::from_str(json);
            let via_ours = rfc3339::deserialize(&mut d).map_err(|e| e.to_string());
            assert_eq!(via_ours, via_chrono, "{json}");
            assert!(via_ours.is_err(), "{json}");
        }
    }
}
