//! The embedded mode's metrics: the Prometheus recorder (installed once per process) whose
//! text the API serves at `/metrics`, behind the API token like every route but the open ones.
//!
//! The series are the runtime's ([`relance_runtime::metrics`], DESIGN §9). The recorder has
//! no listener of its own: one port, one token.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use relance_runtime::metrics::TIMER_LATENESS;

/// The content type of Prometheus's text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The buckets of the timer lateness histogram, in seconds: a tick's second up to a day.
const LATENESS_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86_400.0,
];

/// Why the recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot install the Prometheus metrics recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder (the first call; later
/// calls hand back the same handle) and has the runtime count its series. Fails when another
/// recorder was installed first.
pub fn install() -> Result<&'static PrometheusHandle, MetricsError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TIMER_LATENESS.into()), &LATENESS_BUCKETS)
                .map_err(|e| MetricsError(e.to_string()))?
                .install_recorder()
                .map_err(|e| MetricsError(e.to_string()))?;
            relance_runtime::metrics::enable();
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The metrics in Prometheus's text format (installing the recorder if need be).
pub fn render() -> Result<String, MetricsError> {
    let handle = install()?;
    // The recorder's housekeeping (draining histogram samples) is ours to run: at each scrape.
    handle.run_upkeep();
    Ok(handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_renders_the_runtime_series() -> Result<(), MetricsError> {
        let first = install()?;
        let second = install()?;
        assert!(std::ptr::eq(first, second));
        assert!(relance_runtime::metrics::enabled());
        relance_runtime::metrics::dead_letter("metrics-unit-test");
        let text = render()?;
        assert!(
            text.contains(r#"relance_dead_letters_total{source="metrics-unit-test"} 1"#),
            "{text}"
        );
        Ok(())
    }
}
