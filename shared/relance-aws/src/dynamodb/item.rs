//! Reading and writing DynamoDB attributes: strings, numbers, instants (numbers of
//! microseconds, or RFC 3339 text from earlier builds), JSON documents (text, or packed with
//! DEFLATE), paged reads, and a due item that does not read, kept whole so the runtime can
//! dead-letter it.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use relance_core::instant;
use relance_core::ports::UnreadableRow;
use serde::{Deserialize, Serialize};

use crate::error::{DynamoError, StoreError};
use crate::keys;

pub type Item = HashMap<String, AttributeValue>;

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: "timestamp",
            why: e.to_string(),
        })
}

/// A compared instant as stored: a number of microseconds since the epoch.
pub(super) fn micros(t: DateTime<Utc>) -> AttributeValue {
    n(instant::to_micros(t))
}

/// Reads a compared instant: a number of microseconds (this build), 18 digits (a timer's
/// sort key) or RFC 3339 text (earlier builds), within 1970..9999; else why not.
pub(super) fn read_instant(item: &Item, key: &str) -> Result<DateTime<Utc>, String> {
    let t = match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok().and_then(instant::from_micros),
        Some(AttributeValue::S(v)) => instant::from_key(v).or_else(|| {
            DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| instant::in_range(*t))
        }),
        Some(other) => return Err(format!("{key}: not an instant ({other:?})")),
        None => return Err(format!("{key}: missing")),
    };
    t.ok_or_else(|| {
        format!(
            "{key}: {:?} is not an instant within {}",
            item.get(key),
            instant::RANGE_TEXT
        )
    })
}

/// A string attribute a due item needs, or why it does not read.
pub(super) fn need_s(item: &Item, key: &str) -> Result<String, String> {
    match get_s(item, key) {
        Some(v) => Ok(v.to_string()),
        None => Err(format!("{key}: missing or not a string")),
    }
}

/// A due item that does not read, with what deletes it (`table`, `pk`, `sk`).
pub(super) fn unreadable(kind: &str, table: &str, item: &Item, reason: String) -> UnreadableRow {
    let raw: serde_json::Map<String, serde_json::Value> = item
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::S(x) | AttributeValue::N(x) => serde_json::Value::from(x.as_str()),
                other => serde_json::Value::from(format!("{other:?}")),
            };
            (k.clone(), v)
        })
        .collect();
    let locator = serde_json::json!({
        "table": table,
        "pk": get_s(item, keys::PK).unwrap_or(""),
        "sk": get_s(item, keys::SK).unwrap_or(""),
    });
    UnreadableRow {
        kind: kind.to_string(),
        locator: locator.to_string(),
        raw: serde_json::Value::Object(raw).to_string(),
        reason,
    }
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(super) fn get_n(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The most bytes a packed document may inflate to: far past any transition's effects (a
/// send's content is in them; an item holds at most 400 KB packed), so anything past this is
/// not a document this store wrote.
const PACKED_MAX: usize = 16 << 20;

/// What starts a packed document's text (`packed_json`): never the start of a JSON document.
const PACKED_PREFIX: &str = "deflate:";

/// A JSON document packed: raw DEFLATE (RFC 1951) in base64, after [`PACKED_PREFIX`], in a
/// string attribute. DynamoDB bills a write per started KB of the item, and a transition's
/// pending effects repeat the enrollment, contact and instant in every effect, so they deflate
/// about three times (996 bytes to 322 on the reference drip, 430 in base64), which brings its
/// enrollment item under 1 KB. Text, not a binary attribute, so that a build from before
/// packing, reading it as JSON, fails loudly (its unit is retried, then dead-lettered with
/// the reason) where a binary attribute would look to it like no pending effects at all.
pub(super) fn packed_json<T: Serialize>(v: &T) -> AttributeValue {
    use base64::Engine as _;
    let packed = deflated_json(v);
    let mut attr = String::with_capacity(PACKED_PREFIX.len() + packed.len().div_ceil(3) * 4);
    attr.push_str(PACKED_PREFIX);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode_string(&packed, &mut attr);
    AttributeValue::S(attr)
}

/// A JSON document packed in a binary attribute: raw DEFLATE, without the base64 of
/// [`packed_json`] (a third fewer bytes billed). For items no earlier build reads (a batch's
/// journal part); [`document_text`] reads both.
pub(super) fn packed_binary<T: Serialize>(v: &T) -> AttributeValue {
    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(deflated_json(v)))
}

/// The name of a handler's current batch, drawn at random (sixteen key-safe characters) when
/// its first part is made: the parts a batch writes are named after it (`{batch}.{n}`), so no
/// two batches write one part.
#[derive(Debug, Default)]
pub(super) struct BatchName(Option<String>);

impl BatchName {
    /// The name of the batch's part number `n`.
    pub(super) fn part_id(&mut self, n: usize) -> Result<String, StoreError> {
        let batch = match &self.0 {
            Some(b) => b,
            None => {
                use base64::Engine as _;
                let mut bytes = [0u8; 12];
                getrandom::getrandom(&mut bytes)
                    .map_err(|e| StoreError::NoRandom(e.to_string()))?;
                self.0
                    .insert(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
            }
        };
        Ok(format!("{batch}.{n}"))
    }

    /// The batch ends: the next part starts another.
    pub(super) fn end(&mut self) {
        self.0 = None;
    }
}

/// `v` as JSON, in raw DEFLATE (RFC 1951).
fn deflated_json<T: Serialize>(v: &T) -> Vec<u8> {
    use std::io::Write;
    let text = to_json(v);
    let mut out = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(text.len() / 2),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    out.write_all(text.as_bytes())
        .and_then(|()| out.finish())
        .unwrap_or_default()
}

/// Inflates raw DEFLATE into text, refusing more than `max` bytes.
fn inflate(packed: &[u8], max: usize) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    let read = flate2::read::DeflateDecoder::new(packed)
        .take(max as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if read > max {
        return Err(format!("inflates past {max} bytes"));
    }
    Ok(text)
}

/// The JSON text of a document attribute: as written (JSON text: earlier builds' pending
/// effects, every other document), or packed (`packed_json`; a binary attribute of raw
/// DEFLATE is read too). `None` when the attribute is absent.
pub fn document_text(item: &Item, key: &str) -> Option<Result<String, StoreError>> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: "packed document",
        why: format!("{key}: {why}"),
    };
    Some(match item.get(key)? {
        AttributeValue::S(text) => match text.strip_prefix(PACKED_PREFIX) {
            None => Ok(text.clone()),
            Some(b64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b64.trim_end_matches('='))
                    .map_err(|e| format!("not base64: {e}"))
                    .and_then(|packed| inflate(&packed, PACKED_MAX))
                    .map_err(corrupt)
            }
        },
        AttributeValue::B(blob) => inflate(blob.as_ref(), PACKED_MAX).map_err(corrupt),
        other => Err(corrupt(format!("neither text nor packed ({other:?})"))),
    })
}

pub(super) fn from_json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    v: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(v).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

/// Every item of a paged read: `page` is called with the key to start from (none first) and
/// answers one page's items and the key after its last one.
pub(super) fn paged(
    mut page: impl FnMut(Option<Item>) -> Result<(Vec<Item>, Option<Item>), StoreError>,
) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let (items, next) = page(start.take())?;
        out.extend(items);
        match next {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

pub(super) fn dynamo<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E>) -> StoreError {
    move |e| StoreError::Dynamo(DynamoError::sdk(op)(e))
}

pub(super) fn is_conditional<E: ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    // A put refused because a transaction (a restatement's check of the profile) holds the
    // item at that moment is, like a refused condition, another writer's: read again, redo.
    matches!(
        e.as_service_error().and_then(|s| s.code()),
        Some("ConditionalCheckFailedException" | "TransactionConflictException")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item_with(v: AttributeValue) -> Item {
        Item::from([("doc".to_string(), v)])
    }

    fn deflated(text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        out.write_all(text).unwrap_or_else(|e| panic!("{e}"));
        out.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_packed_document_reads_back_as_its_json_and_is_smaller() {
        let effects: Vec<serde_json::Value> = (0..5)
            .map(|i| {
                serde_json::json!({"effect": "record", "at": "2026-12-01T09:00:00Z",
                    "contact": "c000", "enrollment": "drip:c000:1", "step": format!("s{i}")})
            })
            .collect();
        let packed = packed_json(&effects);
        let AttributeValue::S(attr) = &packed else {
            panic!("not text: {packed:?}")
        };
        let text = to_json(&effects);
        assert!(attr.starts_with(PACKED_PREFIX), "{attr}");
        assert!(attr.len() * 2 < text.len(), "{} bytes", attr.len());
        // A build from before packing reads it as JSON, and fails: never as no effects.
        assert!(serde_json::from_str::<serde_json::Value>(attr).is_err());
        let read = document_text(&item_with(packed), "doc");
        assert_eq!(read.map(|r| r.ok()), Some(Some(text.clone())));
        // The same bytes as a binary attribute read too.
        let blob = aws_sdk_dynamodb::primitives::Blob::new(deflated(text.as_bytes()));
        let read = document_text(&item_with(AttributeValue::B(blob)), "doc");
        assert_eq!(read.map(|r| r.ok()), Some(Some(text)));
    }

    #[test]
    fn a_text_document_of_an_earlier_build_reads_as_is() {
        let read = document_text(&item_with(s(r#"{"a":1}"#)), "doc");
        assert_eq!(read.map(|r| r.ok()), Some(Some(r#"{"a":1}"#.to_string())));
        assert!(document_text(&item_with(s("x")), "other").is_none());
    }

    #[test]
    fn a_damaged_or_mistyped_document_is_an_error_naming_its_attribute() {
        let garbage = AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0xff; 8]));
        let not_base64 = s(format!("{PACKED_PREFIX}%%%"));
        let not_deflate = s(format!("{PACKED_PREFIX}////////"));
        for bad in [garbage, not_base64, not_deflate, n(3)] {
            match document_text(&item_with(bad.clone()), "doc") {
                Some(Err(StoreError::Corrupt { what, why })) => {
                    assert_eq!(what, "packed document");
                    assert!(why.starts_with("doc: "), "{why}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_document_inflating_past_the_limit_is_refused() {
        let packed = deflated(&[b' '; 5000]);
        assert_eq!(inflate(&packed, 5000).map(|t| t.len()), Ok(5000));
        assert_eq!(
            inflate(&packed, 4999),
            Err("inflates past 4999 bytes".into())
        );
    }
}
