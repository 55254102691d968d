//! JSON text written by hand for the hottest records (journal records, enrollments, outbox
//! messages), with the bytes serde_json writes: property tests beside each writer compare the
//! two.

use chrono::{DateTime, Utc};

/// One JSON object being written into a string: its fields in the order given, separated by
/// commas, closed by [`Object::end`]. Field names are written as they are (the callers' are
/// plain snake_case); values are escaped as serde_json escapes them.
pub(crate) struct Object<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    #[inline]
    pub(crate) fn open(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, empty: true }
    }

    /// The comma before every field but the first.
    #[inline]
    fn comma(&mut self) {
        if !std::mem::take(&mut self.empty) {
            self.out.push(',');
        }
    }

    /// `"name":`, for the value that follows.
    #[inline]
    fn name(&mut self, name: &str) -> &mut String {
        self.comma();
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    /// A string field.
    #[inline]
    pub(crate) fn str(&mut self, name: &str, value: &str) {
        push_str(value, self.name(name));
    }

    /// A string field, left out when `None` (`skip_serializing_if = "Option::is_none"`).
    #[inline]
    pub(crate) fn opt_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }

    /// A field whose value is JSON text already (a number, `true`, `null`, a nested value
    /// serde_json wrote).
    #[inline]
    pub(crate) fn raw(&mut self, name: &str, json: &str) {
        self.name(name).push_str(json);
    }

    /// A string field whose value has nothing to escape (an enum's snake_case name).
    #[inline]
    pub(crate) fn plain(&mut self, name: &str, value: &str) {
        let out = self.name(name);
        out.push('"');
        out.push_str(value);
        out.push('"');
    }

    /// An instant field, as [`crate::instant::rfc3339::serialize`] writes it.
    #[inline]
    pub(crate) fn instant(&mut self, name: &str, value: &DateTime<Utc>) {
        crate::instant::rfc3339::push_json(value, self.name(name));
    }

    /// An instant under a key of a map: the key is escaped, as any string.
    #[inline]
    pub(crate) fn instant_at_key(&mut self, key: &str, value: &DateTime<Utc>) {
        self.comma();
        push_str(key, self.out);
        self.out.push(':');
        crate::instant::rfc3339::push_json(value, self.out);
    }

    /// A field whose value the caller writes next into the string returned (an array).
    #[inline]
    pub(crate) fn value(&mut self, name: &str) -> &mut String {
        self.name(name)
    }

    /// A nested object field, written until its own [`Object::end`].
    #[inline]
    pub(crate) fn object(&mut self, name: &str) -> Object<'_> {
        Object::open(self.name(name))
    }

    /// Closes the object.
    #[inline]
    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it. The common string (an id, a
/// step, a reason) has nothing to escape; the test for that looks at every byte without
/// stopping early, which the compiler turns into a few wide comparisons, where serde_json's
/// loop looks each byte up in a table.
fn push_str(value: &str, out: &mut String) {
    let needs_escape = value.bytes().fold(false, |any, b| any | escapes(b));
    out.push('"');
    if needs_escape {
        push_escaped(value, out);
    } else {
        out.push_str(value);
    }
    out.push('"');
}

/// True for the bytes JSON text cannot hold as they are.
fn escapes(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// The contents of `value` with serde_json's escapes: the two-character forms where JSON has
/// one, `\u00XX` (lowercase hex) for the other control characters.
fn push_escaped(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, b) in value.bytes().enumerate() {
        if !escapes(b) {
            continue;
        }
        // Escaped bytes are ASCII, so `run..i` and what follows are whole characters.
        out.push_str(&value[run..i]);
        run = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\x08' => out.push_str("\\b"),
            b'\x0c' => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out.push_str(&value[run..]);
}

/// Strategies for the writers' property tests.
#[cfg(test)]
pub(crate) mod strategies {
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    /// Text with what JSON escapes (quotes, backslashes, control characters) and what it does
    /// not (non-ASCII, DEL, markup).
    pub(crate) fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9:_@.+-]{0,24}",
            "[\\x00-\\x1f\"\\\\<>a-z\u{7f}é€😀]{0,16}",
            any::<String>(),
        ]
    }

    /// Instants: common ones, round fractions, and years chrono writes in its own way (five
    /// digits, negative).
    pub(crate) fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            (0i64..4_102_444_800, 0u32..1_000_000_000)
                .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap_or_default()),
            (
                0i64..1_000_000,
                prop_oneof![Just(0u32), Just(123_000_000), Just(456_789)]
            )
                .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap_or_default()),
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
        ]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_string_is_written_as_serde_json_writes_it(s in prop_oneof!["[\\x00-\\x1f\"\\\\a-z\u{7f}é€😀]{0,40}", any::<String>()]) {
            let mut ours = String::new();
            push_str(&s, &mut ours);
            prop_assert_eq!(ours, serde_json::to_string(&s).unwrap_or_default());
        }
    }
}
