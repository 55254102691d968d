//! Reading and writing DynamoDB attributes: strings, numbers, instants (numbers of
//! microseconds, or RFC 3339 text from earlier builds), JSON documents, paged reads, and a due
//! item that does not read, kept whole so the runtime can dead-letter it.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use relance_core::instant;
use relance_core::ports::UnreadableRow;
use serde::{Deserialize, Serialize};

use crate::error::{DynamoError, StoreError};
use crate::keys;

pub(super) type Item = HashMap<String, AttributeValue>;

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
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}
