//! Counting AWS requests by service and operation, with an SDK interceptor: the tests use it
//! to state the cost of a contact-step from counts, not guesses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Request counts by `Service.Operation`, shared by every client built with its interceptor.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
    /// DynamoDB capacity units, estimated from sizes: (write units, read units).
    units: Arc<Mutex<(u64, u64)>>,
}

/// The write units of one DynamoDB write request, from its body: one per started KB of the
/// request (an upper bound of the item's size); a `BatchWriteItem` is billed per item, so
/// each of its puts and deletes counts on its own, one unit per started KB of it.
fn write_units(op: &str, body: &str) -> u64 {
    let whole = (body.len() as u64).div_ceil(1024).max(1);
    if op != "BatchWriteItem" {
        return whole;
    }
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(body) else {
        return whole;
    };
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
const WRITES: [&str; 4] = ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"];
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
    /// consumed capacity: a write costs one unit per started KB of its request (an upper
    /// bound of the item's size; each item of a `BatchWriteItem` on its own), a read one unit per started 4 KB of its response (strongly
    /// consistent). Returns (write units, read units).
    pub fn dynamodb_units(&self) -> (u64, u64) {
        self.units.lock().map(|u| *u).unwrap_or_default()
    }

    /// Forgets the counts and the recorded requests.
    pub fn reset(&self) {
        if let Ok(mut u) = self.units.lock() {
            *u = (0, 0);
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
    use super::write_units;

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
}
