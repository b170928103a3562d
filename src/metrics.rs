//! Prometheus metrics: what happened to deliveries and runs, how long runs,
//! steps and fetches take, queue depth, config reloads, build info.
//!
//! Code records through the `metrics` facade with the small functions below
//! (so names and labels live in one place); the daemon installs one global
//! Prometheus recorder at start-up ([`install`]) and `GET /metrics` renders it
//! ([`render`]). Without an installed recorder (unit tests, CLI verbs) every
//! call is a no-op.
//!
//! Invariant: label values are bounded sets — configured source and pipeline
//! names, step names of loaded pipelines, fixed outcome and status words —
//! never request text, so a sender cannot grow the series count.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Label value used for deliveries to a source name that is not configured.
pub const UNKNOWN_SOURCE: &str = "(unknown)";

/// Histogram buckets (seconds) of run and step durations: 100 ms to 1 h.
const RUN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Histogram buckets (seconds) of git fetches: 10 ms to 2 min.
const FETCH_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter refused its configuration or a recorder was already installed.
    #[error("cannot install the prometheus recorder: {0}")]
    Install(String),
}

/// What became of one webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Stored (202, or 200 for pings).
    Accepted,
    /// The provider's delivery id was seen before (200).
    Duplicate,
    /// Authentication failed (401).
    Unauthorized,
    /// The body could not be read in time or parsed, or the method is
    /// wrong (400, 405, 408).
    Malformed,
    /// Larger than `max_body_bytes` (413).
    TooLarge,
    /// No source of that name (404).
    UnknownSource,
    /// The store could not take it, or the body budget was spent (503).
    Unavailable,
}

impl DeliveryOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnknownSource => "unknown_source",
            Self::Unavailable => "unavailable",
        }
    }
}

fn builder() -> Result<PrometheusBuilder, MetricsError> {
    let err = |e: metrics_exporter_prometheus::BuildError| MetricsError::Install(e.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("hookd_git_fetch_duration_seconds".into()),
            FETCH_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), RUN_BUCKETS)
        .map_err(err)
}

/// Describes every metric (HELP text) and sets the ones known at start-up.
fn describe() {
    describe_counter!(
        "hookd_deliveries_total",
        "Webhook requests by source and outcome (accepted, duplicate, unauthorized, malformed, too_large, unknown_source, unavailable)."
    );
    describe_counter!(
        "hookd_runs_total",
        "Runs that ended, by pipeline and final status."
    );
    describe_histogram!(
        "hookd_run_duration_seconds",
        metrics::Unit::Seconds,
        "Wall time of ended runs from start to final status, by pipeline and status."
    );
    describe_histogram!(
        "hookd_step_duration_seconds",
        metrics::Unit::Seconds,
        "Wall time of steps, by pipeline, step and status."
    );
    describe_histogram!(
        "hookd_git_fetch_duration_seconds",
        metrics::Unit::Seconds,
        "Time to fetch and check out a run's commit."
    );
    describe_gauge!("hookd_queue_depth", "Runs waiting in the queue.");
    describe_gauge!("hookd_runs_running", "Runs executing now.");
    describe_gauge!("hookd_pipelines", "Pipelines loaded.");
    describe_counter!(
        "hookd_config_reloads_total",
        "Pipeline reloads (SIGHUP or a change in pipelines_dir), by result (success, failure)."
    );
    describe_gauge!(
        "hookd_config_last_reload_successful",
        "1 if the last pipeline reload succeeded, 0 if it failed and the previous set is still serving."
    );
    describe_gauge!(
        "hookd_config_last_reload_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "Unix time of the last successful pipeline load."
    );
    describe_gauge!(
        "hookd_build_info",
        "Always 1; the version label says which hookd runs."
    );
    gauge!("hookd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Installs the global recorder (once per process) and describes the metrics.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let recorder = builder()?.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Install(e.to_string()))?;
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

/// The Prometheus text exposition of every metric (empty before [`install`]).
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Housekeeping of the recorder's histograms; call it every few seconds.
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

/// One webhook request ended so.
pub fn delivery(source: &str, outcome: DeliveryOutcome) {
    counter!("hookd_deliveries_total", "source" => source.to_string(), "outcome" => outcome.as_str())
        .increment(1);
}

/// A run reached its final status after `took` (when it ran at all).
pub fn run_finished(pipeline: &str, status: &'static str, took: Option<Duration>) {
    counter!("hookd_runs_total", "pipeline" => pipeline.to_string(), "status" => status)
        .increment(1);
    if let Some(t) = took {
        histogram!("hookd_run_duration_seconds", "pipeline" => pipeline.to_string(), "status" => status)
            .record(t.as_secs_f64());
    }
}

/// A step ended with `status` after `took`.
pub fn step_finished(pipeline: &str, step: &str, status: &'static str, took: Duration) {
    histogram!(
        "hookd_step_duration_seconds",
        "pipeline" => pipeline.to_string(),
        "step" => step.to_string(),
        "status" => status
    )
    .record(took.as_secs_f64());
}

/// A fetch and checkout took `took`.
pub fn git_fetch(took: Duration) {
    histogram!("hookd_git_fetch_duration_seconds").record(took.as_secs_f64());
}

/// Current queue depth, running count and pipeline count.
pub fn set_load(queued: u64, running: u64, pipelines: usize) {
    gauge!("hookd_queue_depth").set(queued as f64);
    gauge!("hookd_runs_running").set(running as f64);
    gauge!("hookd_pipelines").set(pipelines as f64);
}

/// A pipeline (re)load ended; `at_ms` is its Unix time in ms. `counted`
/// is false for the initial load at start-up, which is not a reload.
pub fn config_loaded(success: bool, at_ms: i64, counted: bool) {
    if counted {
        let result = if success { "success" } else { "failure" };
        counter!("hookd_config_reloads_total", "result" => result).increment(1);
    }
    gauge!("hookd_config_last_reload_successful").set(if success { 1.0 } else { 0.0 });
    if success {
        gauge!("hookd_config_last_reload_success_timestamp_seconds").set(at_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_as_prometheus_text_with_help_and_buckets() {
        let recorder = builder().expect("builder").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            delivery("github", DeliveryOutcome::Accepted);
            delivery("github", DeliveryOutcome::Accepted);
            delivery(UNKNOWN_SOURCE, DeliveryOutcome::UnknownSource);
            run_finished("deploy", "succeeded", Some(Duration::from_millis(1500)));
            run_finished("deploy", "failed", None);
            step_finished("deploy", "plan", "succeeded", Duration::from_millis(20));
            git_fetch(Duration::from_millis(30));
            set_load(3, 1, 2);
            config_loaded(false, 1_700_000_000_000, true);
        });
        let text = handle.render();
        for expected in [
            "# HELP hookd_deliveries_total Webhook requests",
            "# TYPE hookd_deliveries_total counter",
            "hookd_deliveries_total{source=\"github\",outcome=\"accepted\"} 2",
            "hookd_deliveries_total{source=\"(unknown)\",outcome=\"unknown_source\"} 1",
            "hookd_runs_total{pipeline=\"deploy\",status=\"failed\"} 1",
            "# TYPE hookd_run_duration_seconds histogram",
            "hookd_run_duration_seconds_bucket{pipeline=\"deploy\",status=\"succeeded\",le=\"2.5\"} 1",
            "hookd_step_duration_seconds_count{pipeline=\"deploy\",step=\"plan\",status=\"succeeded\"} 1",
            "hookd_git_fetch_duration_seconds_bucket{le=\"0.05\"} 1",
            "hookd_queue_depth 3",
            "hookd_runs_running 1",
            "hookd_config_reloads_total{result=\"failure\"} 1",
            "hookd_config_last_reload_successful 0",
            &format!("hookd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn nothing_renders_before_install() {
        // The global recorder is never installed by unit tests.
        assert_eq!(render(), "");
    }
}
