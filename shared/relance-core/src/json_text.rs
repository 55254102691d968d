//! JSON text written by hand for the hottest records (journal records, enrollments), with
//! the bytes serde_json writes: property tests beside each writer compare the two.

/// `,"name":` then `value` as a JSON string.
pub(crate) fn push_field(name: &str, value: &str, out: &mut String) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    push_str(value, out);
}

/// `value` as a JSON string, escaped as serde_json escapes it. The common string (an id, a
/// step, a reason) has nothing to escape; the test for that looks at every byte without
/// stopping early, which the compiler turns into a few wide comparisons, where serde_json's
/// loop looks each byte up in a table.
pub(crate) fn push_str(value: &str, out: &mut String) {
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

/// `value` in decimal, as serde_json writes an unsigned integer.
pub(crate) fn push_u64(value: u64, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(value));
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

        #[test]
        fn a_number_is_written_as_serde_json_writes_it(n in any::<u64>()) {
            let mut ours = String::new();
            push_u64(n, &mut ours);
            prop_assert_eq!(ours, serde_json::to_string(&n).unwrap_or_default());
        }
    }
}
