//! Installing the Prometheus exporter (`metrics-exporter-prometheus`) with dbmetrics' buckets.
//!
//! Order does not matter: monitoring set up, and tracked calls made, before the recorder is
//! installed here reach it from then on (descriptions; pool gauges, set at the install from each
//! monitored pool's status; every call site's series).
//! A recorder installed by other means (`metrics::set_global_recorder`, another exporter's
//! `install`) gets only what is set up or first called after it: install it first.
//!
//! Every dbmetrics duration is exported as a Prometheus **histogram** (never a summary), in
//! seconds, with [`DEFAULT_BUCKETS`] from 100 µs to 30 s, fine enough for sub-millisecond
//! loopback queries. Only dbmetrics' own histograms get these buckets; other histograms of the
//! process keep the exporter's defaults unless you configure them on the builder returned by
//! [`ExporterConfig::prometheus_builder`].
//!
//! Names are rendered with Prometheus' recommended naming
//! ([`PrometheusBuilder::with_recommended_naming`]): dots become `_`, a counter ends in
//! `_total`, and a metric described with a unit ends in it (`_seconds`). The service naming's
//! names have these suffixes already and render unchanged; the OpenTelemetry naming's
//! `db.client.operation.duration` renders as `db_client_operation_duration_seconds`,
//! `db.client.connection.timeouts` as `db_client_connection_timeouts_total`. Your own
//! counters through this recorder get `_total` too, as Prometheus expects.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

use crate::catalog::{histogram_suffixes, opentelemetry_histogram_names};
use crate::error::Error;

pub use metrics_exporter_prometheus::PrometheusHandle;

/// The name this handle had before [`PrometheusHandle`]; the same type.
pub type Handle = PrometheusHandle;

/// Default histogram bucket bounds, in seconds.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// How often the installed recorder drains histogram samples when nobody scrapes it.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's global `metrics` recorder, with
/// [`DEFAULT_BUCKETS`]; render it with [`PrometheusHandle::render`] (or serve it with
/// `dbmetrics::axum::router`).
///
/// # Errors
/// [`Error::RecorderAlreadyInstalled`] when a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, Error> {
    ExporterConfig::default().install_recorder()
}

/// Installs the recorder and serves `GET /metrics` (any path, in fact) on `addr`, on the
/// current Tokio runtime.
///
/// # Errors
/// [`Error::NoRuntime`] outside a Tokio runtime, [`Error::Exporter`] when `addr` cannot be
/// bound, [`Error::RecorderAlreadyInstalled`] when a recorder is already installed.
pub fn install_exporter(addr: SocketAddr) -> Result<PrometheusHandle, Error> {
    ExporterConfig::default().install_exporter(addr)
}

/// Exporter options: histogram buckets.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    buckets: Vec<f64>,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            buckets: DEFAULT_BUCKETS.to_vec(),
        }
    }
}

impl ExporterConfig {
    /// The defaults: [`DEFAULT_BUCKETS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Bucket upper bounds (seconds) for every dbmetrics histogram.
    pub fn buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets = buckets.to_vec();
        self
    }

    /// A `PrometheusBuilder` with dbmetrics' buckets set, to configure further yourself.
    ///
    /// # Errors
    /// [`Error::Config`] when the buckets are empty, not finite and positive, or not strictly
    /// increasing.
    pub fn prometheus_builder(&self) -> Result<PrometheusBuilder, Error> {
        validate_buckets(&self.buckets)?;
        let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
        let matchers = histogram_suffixes()
            .map(|suffix| Matcher::Suffix(format!("_{suffix}")))
            .chain(opentelemetry_histogram_names().map(|name| Matcher::Full(name.to_owned())));
        for matcher in matchers {
            builder = builder
                .set_buckets_for_metric(matcher, &self.buckets)
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        Ok(builder)
    }

    /// See [`install_recorder`].
    ///
    /// # Errors
    /// As [`install_recorder`], and [`Error::Config`] for bad buckets.
    pub fn install_recorder(&self) -> Result<PrometheusHandle, Error> {
        let handle = self
            .prometheus_builder()?
            .install_recorder()
            .map_err(build_error)?;
        crate::metrics::recorder_installed();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("dbmetrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|e| Error::Exporter(e.to_string()))?;
        Ok(handle)
    }

    /// See [`install_exporter`].
    ///
    /// # Errors
    /// As [`install_exporter`], and [`Error::Config`] for bad buckets.
    pub fn install_exporter(&self, addr: SocketAddr) -> Result<PrometheusHandle, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "install_exporter",
            task: "the HTTP listener",
        })?;
        let builder = self.prometheus_builder()?.with_http_listener(addr);
        let (recorder, exporter) = {
            let _enter = runtime.enter();
            builder.build().map_err(build_error)?
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
        crate::metrics::recorder_installed();
        runtime.spawn(exporter);
        Ok(handle)
    }
}

fn build_error(e: BuildError) -> Error {
    match e {
        BuildError::FailedToSetGlobalRecorder(_) => Error::RecorderAlreadyInstalled,
        other => Error::Exporter(other.to_string()),
    }
}

fn validate_buckets(buckets: &[f64]) -> Result<(), Error> {
    if buckets.is_empty() {
        return Err(Error::Config("histogram buckets are empty".into()));
    }
    if let Some(b) = buckets.iter().find(|b| !b.is_finite() || **b <= 0.0) {
        return Err(Error::Config(format!(
            "histogram bucket {b} is not a finite positive number of seconds"
        )));
    }
    if let Some(w) = buckets.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::Config(format!(
            "histogram buckets must increase strictly, but {} is followed by {}",
            w[0], w[1]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_buckets_are_errors() {
        for (buckets, needle) in [
            (&[][..], "empty"),
            (&[0.1, 0.1][..], "increase strictly"),
            (&[-1.0][..], "finite positive"),
            (&[f64::NAN][..], "finite positive"),
        ] {
            let err = ExporterConfig::new()
                .buckets(buckets)
                .prometheus_builder()
                .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn opentelemetry_names_render_with_unit_and_total_suffixes() {
        let recorder = ExporterConfig::new()
            .prometheus_builder()
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(
                "db.client.operation.duration",
                metrics::Unit::Seconds,
                "Duration of database client operations."
            );
            metrics::histogram!("db.client.operation.duration", "db.system.name" => "postgresql")
                .record(0.0003);
            metrics::describe_counter!(
                "db.client.connection.timeouts",
                metrics::Unit::Count,
                "Timeouts."
            );
            metrics::counter!("db.client.connection.timeouts").increment(2);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE db_client_operation_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "db_client_operation_duration_seconds_bucket{db_system_name=\"postgresql\",le=\"0.0005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("db_client_connection_timeouts_total 2\n"),
            "{text}"
        );
    }

    #[test]
    fn durations_render_as_histograms_with_the_default_buckets() {
        let recorder = ExporterConfig::new()
            .prometheus_builder()
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("svc_database_query_duration_seconds").record(0.0003);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE svc_database_query_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("svc_database_query_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("svc_database_query_duration_seconds_bucket{le=\"0.00025\"} 0"),
            "{text}"
        );
    }
}
