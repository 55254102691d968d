//! The functions' metrics: the runtime's series (DESIGN §9, [`relance_runtime::metrics`]) as
//! CloudWatch embedded metric format (EMF) lines on stdout, which Lambda ships to CloudWatch
//! Logs and CloudWatch turns into metrics: no PutMetricData call on the hot path.
//!
//! Namespace [`NAMESPACE`]; each series' labels are its dimensions (scenario, step, channel,
//! result, reason, path, source), so a series is one CloudWatch metric per label set. The
//! collector is flushed after every invocation by [`serve`].

use std::fmt::Debug;
use std::future::Future;
use std::sync::OnceLock;

use lambda_runtime::{Diagnostic, Error, LambdaEvent, Service};
use metrics_cloudwatch_embedded::Collector;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The CloudWatch namespace of every Relance metric.
pub const NAMESPACE: &str = "Relance";

/// The installed collector, or why it could not be installed.
static COLLECTOR: OnceLock<Result<&'static Collector, String>> = OnceLock::new();

/// Installs the EMF collector as the process's metrics recorder (the first call; later calls
/// hand back the same collector) and has the runtime count its series. Fails when another
/// recorder was installed first.
pub fn install_metrics() -> Result<&'static Collector, Error> {
    let installed = COLLECTOR.get_or_init(|| {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            // Each document names the invocation it was flushed after.
            .with_lambda_request_id("RequestId")
            .init()
            .map_err(|e| format!("cannot install the CloudWatch metrics collector: {e}"))?;
        relance_runtime::metrics::enable();
        // The template's alarms read plain metrics: failed sends by `result` alone, dead
        // letters without dimensions.
        relance_runtime::metrics::enable_rollups();
        Ok(collector)
    });
    installed.as_ref().copied().map_err(|e| e.as_str().into())
}

/// Runs a Lambda handler (a `tower` service, as `lambda_runtime::service_fn` makes) like
/// `lambda_runtime::run`, with the metrics collector ([`install_metrics`]) flushed to stdout
/// after every invocation.
pub async fn serve<A, F, R>(handler: F) -> Result<(), Error>
where
    F: Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<Diagnostic> + Debug,
    A: DeserializeOwned,
    R: Serialize,
{
    let collector = install_metrics()?;
    metrics_cloudwatch_embedded::lambda::service::run(collector, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use relance_core::journal::{Record, RecordKind};
    use relance_core::scenario::Channel;
    use serde_json::Value;

    /// The documents a flush writes, one JSON object per line.
    fn flushed(collector: &Collector) -> Result<Vec<Value>, Error> {
        let mut out = Vec::new();
        collector.flush(&mut out)?;
        Ok(String::from_utf8(out)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?)
    }

    #[test]
    fn counts_flush_as_emf_documents_in_the_relance_namespace() -> Result<(), Error> {
        let collector = install_metrics()?;
        assert!(std::ptr::eq(collector, install_metrics()?));
        let at = chrono::DateTime::UNIX_EPOCH;
        let mut sent = Record::new(at, "ada", RecordKind::Sent).step("mail");
        sent.channel = Some(Channel::Email);
        relance_runtime::metrics::journaled("emf-test", &sent);
        relance_runtime::metrics::journaled("emf-test", &sent);
        let skipped = Record::new(at, "bob", RecordKind::Skipped).reason("once_per");
        relance_runtime::metrics::journaled("emf-test", &skipped);
        relance_runtime::metrics::timer_lateness(1.5);

        let docs = flushed(collector)?;
        // The series (labelled with the scenario), not the roll-ups.
        let find = |metric: &str| {
            docs.iter()
                .find(|d| d.get(metric).is_some() && d.get("scenario").is_some())
                .unwrap_or_else(|| panic!("no {metric} in {docs:#?}"))
        };
        let rollup = |metric: &str| {
            docs.iter()
                .find(|d| d.get(metric).is_some() && d.get("scenario").is_none())
                .unwrap_or_else(|| panic!("no {metric} roll-up in {docs:#?}"))
        };

        let sends = find("relance_sends_total");
        let meta = &sends["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Namespace"], "Relance", "{sends}");
        assert_eq!(
            meta["Dimensions"][0],
            serde_json::json!(["scenario", "step", "channel", "result"]),
            "{sends}"
        );
        assert_eq!(meta["Metrics"][0]["Name"], "relance_sends_total");
        assert_eq!(meta["Metrics"][0]["Unit"], "Count");
        assert_eq!(sends["relance_sends_total"], 2, "{sends}");
        assert_eq!(
            [
                &sends["scenario"],
                &sends["step"],
                &sends["channel"],
                &sends["result"]
            ],
            ["emf-test", "mail", "email", "sent"]
        );

        // The roll-up the send failures alarm reads: by result alone.
        let by_result = rollup("relance_sends_total");
        assert_eq!(
            by_result["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["result"]),
            "{by_result}"
        );
        assert_eq!(by_result["result"], "sent");
        assert_eq!(by_result["relance_sends_total"], 2, "{by_result}");

        let skips = find("relance_skips_total");
        assert_eq!(
            skips["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["scenario", "reason"])
        );
        assert_eq!(skips["reason"], "once_per");
        assert_eq!(skips["relance_skips_total"], 1);
        let entries = find("relance_entries_total");
        assert!(
            docs.iter()
                .filter(|d| d.get("relance_entries_total").is_some())
                .all(|d| d.get("scenario").is_some()),
            "entries have no roll-up: {docs:#?}"
        );
        assert_eq!(entries["result"], "skipped");

        // A histogram flushes its values; CloudWatch computes the percentiles.
        let lateness = docs
            .iter()
            .find(|d| d.get("relance_timer_lateness_seconds").is_some())
            .unwrap_or_else(|| panic!("no lateness in {docs:#?}"));
        assert_eq!(
            lateness["relance_timer_lateness_seconds"],
            serde_json::json!([1.5])
        );
        assert_eq!(
            lateness["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Seconds"
        );

        // Flushed counts start again from zero: nothing is sent twice.
        let mut again = Vec::new();
        collector.flush(&mut again)?;
        assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));

        // The roll-up the dead letters alarm reads: without dimensions.
        relance_runtime::metrics::dead_letter("step");
        let docs = flushed(collector)?;
        let all = docs
            .iter()
            .find(|d| d.get("relance_dead_letters_total").is_some() && d.get("source").is_none())
            .unwrap_or_else(|| panic!("no dead letters roll-up in {docs:#?}"));
        assert_eq!(all["relance_dead_letters_total"], 1, "{all}");
        assert!(
            docs.iter()
                .any(|d| d.get("relance_dead_letters_total").is_some() && d["source"] == "step"),
            "{docs:#?}"
        );

        Ok(())
    }
}
