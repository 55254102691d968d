//! Counting AWS requests by service and operation, with an SDK interceptor: the tests use it
//! to state the cost of a contact-step from counts, not guesses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// Request counts by `Service.Operation`, shared by every client built with its interceptor.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
    /// DynamoDB capacity units, estimated from sizes: (write units, read units).
    units: Arc<Mutex<(u64, u64)>>,
    /// DynamoDB write units by DynamoDB's own rule (see [`Meter::dynamodb_item_write_units`]),
    /// and the last size written of each item (`table pk sk`), for the "before" of the next
    /// write of the same item.
    item_units: Arc<Mutex<(u64, HashMap<String, u64>)>>,
}

/// An item's size as DynamoDB bills it, from its wire form (`{"name": {"S": "..."}, ...}`):
/// the attribute names' UTF-8 bytes plus each value's: a string its UTF-8 bytes, a binary
/// its raw bytes (sent as base64), a number one byte per two significant digits plus one, a
/// Boolean or null one byte, a list or map 3 bytes plus one per element plus the elements
/// (and a map's names). From "DynamoDB item sizes and formats" in the developer guide.
pub fn item_size(item: &serde_json::Map<String, serde_json::Value>) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &serde_json::Value) -> u64 {
    use serde_json::Value;
    let Some((kind, v)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let number = |n: &str| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        let significant = digits.trim_start_matches('0').trim_end_matches('0').len() as u64;
        significant.div_ceil(2) + 1
    };
    let binary = |b: &str| {
        let padding = b.bytes().rev().take_while(|&c| c == b'=').count() as u64;
        (b.len() as u64 / 4 * 3).saturating_sub(padding)
    };
    let strings: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match kind.as_str() {
        "S" => v.as_str().map_or(0, |s| s.len() as u64),
        "N" => v.as_str().map_or(0, number),
        "B" => v.as_str().map_or(0, binary),
        "BOOL" | "NULL" => 1,
        "SS" => strings.iter().map(|s| s.len() as u64).sum(),
        "NS" => strings.iter().map(|n| number(n)).sum(),
        "BS" => strings.iter().map(|b| binary(b)).sum(),
        "L" => v
            .as_array()
            .map_or(3, |a| 3 + a.iter().map(|e| 1 + value_size(e)).sum::<u64>()),
        "M" => v.as_object().map_or(3, |m| {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() as u64 + value_size(e))
                .sum::<u64>()
        }),
        _ => 0,
    }
}

/// The item a write names: `table pk sk` (Relance's tables key every item by `pk` and `sk`).
fn item_key(table: &str, key: &serde_json::Value) -> String {
    let part = |name: &str| {
        key[name]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{table} {} {}", part("pk"), part("sk"))
}

/// The sizes a write changed, each key with its size before (none: unseen or deleted), so a
/// write DynamoDB refused (a failed condition) can be taken back: it is billed all the same,
/// but the item did not change.
#[derive(Debug, Clone, Default)]
struct SizeUndo(Vec<(String, Option<u64>)>);

impl Storable for SizeUndo {
    type Storer = StoreReplace<Self>;
}

impl SizeUndo {
    /// Sets `key`'s size (none: deleted), remembering the one before; returns it.
    fn set(&mut self, sizes: &mut HashMap<String, u64>, key: String, size: Option<u64>) -> u64 {
        let before = match size {
            Some(n) => sizes.insert(key.clone(), n),
            None => sizes.remove(&key),
        };
        self.0.push((key, before));
        before.unwrap_or(0)
    }

    /// Restores the sizes as they were before the write.
    fn undo(&self, sizes: &mut HashMap<String, u64>) {
        for (key, before) in self.0.iter().rev() {
            match before {
                Some(n) => sizes.insert(key.clone(), *n),
                None => sizes.remove(key),
            };
        }
    }

    /// The units of putting `item` (wire form) in `table`: by the larger of it and the item
    /// it replaces; `None` when it is not an item.
    fn put(
        &mut self,
        sizes: &mut HashMap<String, u64>,
        table: &str,
        item: &serde_json::Value,
    ) -> Option<u64> {
        let after = item_size(item.as_object()?);
        let before = self.set(sizes, item_key(table, item), Some(after));
        Some(units(after.max(before)))
    }

    /// The units of deleting the item `key` names in `table`: by the item it removes.
    fn delete(
        &mut self,
        sizes: &mut HashMap<String, u64>,
        table: &str,
        key: &serde_json::Value,
    ) -> u64 {
        units(self.set(sizes, item_key(table, key), None))
    }
}

/// Write units for an item of `bytes`: one per started KB, at least one.
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(1024).max(1)
}

/// The write units of one DynamoDB write request by DynamoDB's rule: one per started KB of
/// the larger of the item before and after the write. The item after is exact for a put (it
/// is in the request); the item before is the last size this meter saw written under the
/// same key (none: zero, which undercounts a write over an item written outside the meter).
/// An update's result is not in the request: it is taken as the item before plus the whole
/// request, an upper bound. A delete is billed by the item it removes. Records the sizes
/// written in `undo`.
fn item_write_units(
    op: &str,
    body: &str,
    sizes: &mut HashMap<String, u64>,
    undo: &mut SizeUndo,
) -> u64 {
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(body) else {
        return write_units(op, body);
    };
    let table = parsed["TableName"].as_str().unwrap_or("");
    match op {
        "PutItem" => undo
            .put(sizes, table, &parsed["Item"])
            .unwrap_or_else(|| write_units(op, body)),
        "UpdateItem" => {
            let key = item_key(table, &parsed["Key"]);
            let before = sizes.get(&key).copied().unwrap_or(0);
            let after = before + body.len() as u64;
            undo.set(sizes, key, Some(after));
            units(after)
        }
        "DeleteItem" => undo.delete(sizes, table, &parsed["Key"]),
        "BatchWriteItem" => {
            let mut total = 0;
            for (table, writes) in parsed["RequestItems"].as_object().into_iter().flatten() {
                for w in writes.as_array().into_iter().flatten() {
                    total += match undo.put(sizes, table, &w["PutRequest"]["Item"]) {
                        Some(n) => n,
                        None => undo.delete(sizes, table, &w["DeleteRequest"]["Key"]),
                    };
                }
            }
            total.max(1)
        }
        _ => write_units(op, body),
    }
}

/// The write units of one DynamoDB write request, from its body: one per started KB of the
/// request (standing for the item's size); a `BatchWriteItem` is billed per item, so
/// each of its puts and deletes counts on its own, one unit per started KB of it.
fn write_units(op: &str, body: &str) -> u64 {
    let whole = (body.len() as u64).div_ceil(1024).max(1);
    if op != "BatchWriteItem" && op != "TransactWriteItems" {
        return whole;
    }
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(body) else {
        return whole;
    };
    if op == "TransactWriteItems" {
        // A transaction bills two units per started KB of each of its items, condition
        // checks included.
        let per_item: u64 = parsed["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| 2 * (w.to_string().len() as u64).div_ceil(1024).max(1))
            .sum();
        return per_item.max(2);
    }
    let per_item: u64 = parsed["RequestItems"]
        .as_object()
        .into_iter()
        .flat_map(|tables| tables.values())
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .map(|w| (w.to_string().len() as u64).div_ceil(1024).max(1))
        .sum();
    per_item.max(1)
}

/// DynamoDB operations that write, and those that read.
const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];
const READS: [&str; 4] = ["GetItem", "Query", "Scan", "BatchGetItem"];

impl Meter {
    /// The interceptor to add to a client's configuration.
    pub fn interceptor(&self) -> MeterInterceptor {
        MeterInterceptor {
            meter: self.clone(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// DynamoDB capacity units, estimated from sizes since an emulator does not report
    /// consumed capacity: a write costs one unit per started KB of its request (its size
    /// standing for the item's; each item of a `BatchWriteItem` on its own), a read one unit per started 4 KB of its response (strongly
    /// consistent). Returns (write units, read units).
    pub fn dynamodb_units(&self) -> (u64, u64) {
        self.units.lock().map(|u| *u).unwrap_or_default()
    }

    /// DynamoDB write units by DynamoDB's billing rule, where [`Meter::dynamodb_units`] takes
    /// the request's size: one unit per started KB of the larger of the
    /// item before and after each write, with an item's size counted as the developer guide
    /// says (a binary attribute by its raw bytes, not its base64 text; names and values, not
    /// the request's JSON around them). See `item_write_units` for what stands in for the
    /// sizes the requests do not show.
    pub fn dynamodb_item_write_units(&self) -> u64 {
        self.item_units.lock().map(|u| u.0).unwrap_or_default()
    }

    /// Forgets the counts and the recorded requests (not the items' sizes: the items are
    /// still there, and the next write of one is billed by the larger of it and the new).
    pub fn reset(&self) {
        if let Ok(mut u) = self.units.lock() {
            *u = (0, 0);
        }
        if let Ok(mut u) = self.item_units.lock() {
            u.0 = 0;
        }
        if let Ok(mut c) = self.counts.lock() {
            c.clear();
        }
        if let Ok(mut b) = self.bodies.lock() {
            b.clear();
        }
    }

    /// The bodies of the requests sent for `Service.Operation` (`SESv2.SendEmail`), in order,
    /// as they went on the wire: the tests read the request shape of each channel from them.
    pub fn bodies(&self, operation: &str) -> Vec<String> {
        self.bodies
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|(op, _)| op.eq_ignore_ascii_case(operation))
                    .map(|(_, body)| body.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every request sent so far, in order: (`Service.Operation`, body). The permissions
    /// test reads from them which table, queue or secret each call touched.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The sum of the counts whose key starts with `service.` and whose operation is one of `ops`
    /// (all operations of the service when `ops` is empty).
    pub fn total(&self, service: &str, ops: &[&str]) -> u64 {
        self.counts()
            .iter()
            .filter(|(k, _)| {
                let (s, op) = k.split_once('.').unwrap_or((k, ""));
                s.eq_ignore_ascii_case(service) && (ops.is_empty() || ops.contains(&op))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// `Service.Operation` of the call in progress.
fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map_or_else(
        || "unknown.unknown".to_string(),
        |m| format!("{}.{}", m.service(), m.name()),
    )
}

/// Counts each request as it starts.
#[derive(Debug, Clone)]
pub struct MeterInterceptor {
    meter: Meter,
}

impl Intercept for MeterInterceptor {
    fn name(&self) -> &'static str {
        "RelanceMeter"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Once per attempt sequence: retries of one call count once, as they are billed once
        // only when they succeed.
        let key = operation(cfg);
        if let Ok(mut c) = self.meter.counts.lock() {
            *c.entry(key).or_default() += 1;
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = operation(cfg);
        let body = context
            .request()
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if let Some(op) = key.strip_prefix("DynamoDB.")
            && WRITES.contains(&op)
            && let Ok(mut u) = self.meter.units.lock()
        {
            u.0 += write_units(op, &body);
            if let Ok(mut by_item) = self.meter.item_units.lock() {
                let (total, sizes) = &mut *by_item;
                let mut undo = SizeUndo::default();
                *total += item_write_units(op, &body, sizes, &mut undo);
                cfg.interceptor_state().store_put(undo);
            }
        }
        if let Ok(mut b) = self.meter.bodies.lock() {
            b.push((key, body));
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(m) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        // A refused write (a failed condition) is billed, but changed no item.
        if !context.response().status().is_success()
            && let Some(undo) = cfg.load::<SizeUndo>()
            && let Ok(mut by_item) = self.meter.item_units.lock()
        {
            undo.undo(&mut by_item.1);
        }
        if m.service() == "DynamoDB"
            && READS.contains(&m.name())
            && let Some(bytes) = context.response().body().bytes()
            && let Ok(mut u) = self.meter.units.lock()
        {
            u.1 += (bytes.len() as u64).div_ceil(4096).max(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{SizeUndo, item_size, item_write_units, write_units};

    /// A `PutItem` body of the item (`p`, `s`) with `n` bytes of data.
    fn put(n: usize) -> String {
        format!(
            r#"{{"TableName":"t","Item":{{"pk":{{"S":"p"}},"sk":{{"S":"s"}},"d":{{"S":"{}"}}}}}}"#,
            "x".repeat(n)
        )
    }

    fn size(json: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        item_size(v.as_object().unwrap_or_else(|| panic!("not an item")))
    }

    #[test]
    fn an_items_size_follows_the_developer_guide() {
        // Names and values: "pk" + "ab", "n" + 1000 (one significant digit: 1 + 1 byte).
        assert_eq!(
            size(r#"{"pk": {"S": "ab"}, "n": {"N": "1000"}}"#),
            4 + 1 + 2
        );
        // 12345.6: six significant digits, 3 + 1 bytes; -0.5: one, 1 + 1.
        assert_eq!(
            size(r#"{"a": {"N": "12345.6"}, "b": {"N": "-0.5"}}"#),
            1 + 4 + 1 + 2
        );
        // A binary by its raw bytes: "AAEC" is 3 bytes, "AA==" one.
        assert_eq!(
            size(r#"{"b": {"B": "AAEC"}, "c": {"B": "AA=="}}"#),
            1 + 3 + 1 + 1
        );
        assert_eq!(size(r#"{"t": {"BOOL": true}, "z": {"NULL": true}}"#), 2 + 2);
        // A list: 3 + one per element + the elements; a map also counts its names.
        assert_eq!(
            size(r#"{"l": {"L": [{"S": "ab"}, {"N": "7"}]}}"#),
            1 + 3 + 3 + 3
        );
        assert_eq!(
            size(r#"{"m": {"M": {"k": {"S": "ab"}}}}"#),
            1 + 3 + 1 + 1 + 2
        );
        // Accents are counted in UTF-8 bytes.
        assert_eq!(size(r#"{"s": {"S": "é"}}"#), 1 + 2);
    }

    #[test]
    fn a_write_is_billed_by_the_larger_of_the_item_before_and_after() {
        let mut sizes = HashMap::new();
        // 2,000 bytes: two units; then 10 bytes over it: still two (the item before).
        assert_eq!(
            item_write_units("PutItem", &put(2000), &mut sizes, &mut SizeUndo::default()),
            2
        );
        assert_eq!(
            item_write_units("PutItem", &put(10), &mut sizes, &mut SizeUndo::default()),
            2
        );
        assert_eq!(
            item_write_units("PutItem", &put(10), &mut sizes, &mut SizeUndo::default()),
            1
        );
        // A request of 1,500 bytes around a 600-byte item: one unit by the item.
        let padded = format!(
            r#"{{"TableName":"t","ConditionExpression":"{}","Item":{{"pk":{{"S":"q"}},"sk":{{"S":"s"}},"d":{{"S":"{}"}}}}}}"#,
            " ".repeat(900),
            "x".repeat(600)
        );
        assert_eq!(write_units("PutItem", &padded), 2);
        assert_eq!(
            item_write_units("PutItem", &padded, &mut sizes, &mut SizeUndo::default()),
            1
        );
        // A delete is billed by the item it removes; an update at least by its request.
        let key = r#"{"TableName":"t","Key":{"pk":{"S":"q"},"sk":{"S":"s"}}}"#;
        assert_eq!(
            item_write_units("DeleteItem", key, &mut sizes, &mut SizeUndo::default()),
            1
        );
        assert_eq!(
            item_write_units("UpdateItem", key, &mut sizes, &mut SizeUndo::default()),
            1
        );
        // A batch: each put and delete on its own.
        let batch = format!(
            r#"{{"RequestItems":{{"t":[{{"PutRequest":{{"Item":{{"pk":{{"S":"a"}},"sk":{{"S":"s"}},"d":{{"S":"{}"}}}}}}}},{{"DeleteRequest":{{"Key":{{"pk":{{"S":"p"}},"sk":{{"S":"s"}}}}}}}}]}}}}"#,
            "x".repeat(1500)
        );
        assert_eq!(
            item_write_units(
                "BatchWriteItem",
                &batch,
                &mut sizes,
                &mut SizeUndo::default()
            ),
            2 + 1
        );
    }

    #[test]
    fn a_batch_write_is_billed_per_item_and_a_put_by_its_size() {
        assert_eq!(write_units("PutItem", "{}"), 1);
        assert_eq!(write_units("PutItem", &"x".repeat(1025)), 2);
        let item = |n: usize| {
            format!(
                r#"{{"PutRequest":{{"Item":{{"pk":{{"S":"{}"}}}}}}}}"#,
                "p".repeat(n)
            )
        };
        let body = format!(
            r#"{{"RequestItems":{{"t":[{},{},{}]}}}}"#,
            item(10),
            item(10),
            item(1500)
        );
        // Three items: two under a KB, one over; the whole request is under 2 KB.
        assert_eq!(write_units("BatchWriteItem", &body), 4);
    }

    #[test]
    fn a_refused_write_leaves_the_sizes_as_they_were() {
        let mut sizes = HashMap::new();
        let _ = item_write_units("PutItem", &put(100), &mut sizes, &mut SizeUndo::default());
        let mut undo = SizeUndo::default();
        // Billed by its own size, then taken back: the item is still the 100-byte one.
        assert_eq!(
            item_write_units("PutItem", &put(3000), &mut sizes, &mut undo),
            3
        );
        undo.undo(&mut sizes);
        assert_eq!(
            item_write_units("PutItem", &put(10), &mut sizes, &mut SizeUndo::default()),
            1
        );
        let mut undo = SizeUndo::default();
        let key = r#"{"TableName":"t","Key":{"pk":{"S":"p"},"sk":{"S":"s"}}}"#;
        let _ = item_write_units("DeleteItem", key, &mut sizes, &mut undo);
        assert!(sizes.is_empty());
        undo.undo(&mut sizes);
        assert_eq!(sizes.len(), 1);
    }
}
