//! Counting AWS requests by service and operation, with an SDK interceptor: the tests use it
//! to state the cost of a contact-step from counts, not guesses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Request counts by `Service.Operation`, shared by every client built with its interceptor.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
}

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

    /// Forgets the counts and the recorded requests.
    pub fn reset(&self) {
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
        let key = cfg.load::<Metadata>().map_or_else(
            || "unknown.unknown".to_string(),
            |m| format!("{}.{}", m.service(), m.name()),
        );
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
        let key = cfg.load::<Metadata>().map_or_else(
            || "unknown.unknown".to_string(),
            |m| format!("{}.{}", m.service(), m.name()),
        );
        let body = context
            .request()
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if let Ok(mut b) = self.meter.bodies.lock() {
            b.push((key, body));
        }
        Ok(())
    }
}
