//! Testing your own instrumented repositories (feature `testing`).
//!
//! Three stand-ins for the `DatabaseMetrics` of production, by what the test wants to know:
//!
//! | use | when | answers |
//! |---|---|---|
//! | [`MetricsCapture`] | the repository holds a `DatabaseMetrics` (the usual case) | the series it emitted, by name and labels: counts, error classes, durations |
//! | [`InMemoryMetrics`](crate::InMemoryMetrics) | the repository's metrics field is generic or `Arc<dyn QueryMetrics>` | every call, in order, with its function name and outcome |
//! | [`NoopMetrics`](crate::NoopMetrics) | the test is not about metrics | nothing: records nothing |
//!
//! # Parallel tests
//!
//! The `metrics` crate has one global recorder per process, shared by every test of a test
//! binary, and its local recorders follow a thread, not a task. A [`MetricsCapture`] owns a
//! recorder, and the `DatabaseMetrics` it hands out ([`MetricsCapture::metrics`]) carries it:
//! each time that handle records, it makes its recorder the current one for that moment, on
//! whichever thread the call finishes, so every series it registers lands in the capture.
//! Each test makes its own capture; parallel tests, multi-threaded
//! `#[tokio::test]`s and a Prometheus recorder installed in the same process do not see each
//! other's samples, even under the same service name.
//!
//! ```
//! # extern crate dbmetrics_runtime as dbmetrics;
//! use dbmetrics::testing::MetricsCapture;
//! use dbmetrics::{CallResult, Operation, QueryPerformanceTracker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dbmetrics::Error> {
//! let capture = MetricsCapture::new("content_service")?;
//! // give `capture.metrics()` to the repository under test; here, a tracker stands in for it
//! let tracker = QueryPerformanceTracker::new(capture.metrics());
//! let found: Result<Option<i64>, tokio_postgres::Error> =
//!     tracker.track_query(Operation::Select, "content", async { Ok(Some(1)) }).await;
//! assert!(found.is_ok());
//!
//! assert_eq!(capture.query_count(Operation::Select, "content", CallResult::Success), 1);
//! assert_eq!(capture.query_count(Operation::Select, "content", CallResult::Error), 0);
//! assert!(capture.query_errors(Operation::Select, "content").is_empty());
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! - Only calls recorded through the capture's handle (or its clones) are captured: a
//!   repository built with another `DatabaseMetrics` records there.
//! - The capture's handle monitors no pool: pool gauges, checkout counters and timeouts
//!   (`setup_database_monitoring`, `TrackedPool`) go to the process's recorder.
//! - Nothing captured reaches the process's recorder: a Prometheus scrape does not show it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

use crate::catalog::Metric;
use crate::error::Error;
use crate::metrics::DatabaseMetrics;
use crate::record::{CallResult, Operation};

/// A recorder of its own and a `DatabaseMetrics` that records into it: what a repository
/// under test emitted, read without parsing text. Cheap to clone (clones share the capture).
///
/// `result` arguments are typed: [`CallResult::Success`], [`CallResult::Error`],
/// [`CallResult::Cancelled`] (the `result` label values `success`, `error`, `cancelled`).
#[derive(Clone)]
pub struct MetricsCapture {
    metrics: DatabaseMetrics,
    recorder: Arc<CaptureRecorder>,
}

impl std::fmt::Debug for MetricsCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCapture")
            .field("service", &self.metrics.service())
            .field("series", &self.series().len())
            .finish()
    }
}

impl MetricsCapture {
    /// An empty capture for `service` (the prefix of every metric name, as in production).
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*` or starts
    /// with `__`.
    pub fn new(service: &str) -> Result<Self, Error> {
        let recorder = Arc::new(CaptureRecorder {
            registry: Registry::atomic(),
        });
        let metrics = DatabaseMetrics::with_recorder(service, recorder.clone())?;
        Ok(Self { metrics, recorder })
    }

    /// The handle to give the code under test: a `DatabaseMetrics` (no pool) whose query,
    /// transaction and error series are recorded into this capture only.
    pub fn metrics(&self) -> DatabaseMetrics {
        self.metrics.clone()
    }

    /// How many queries of `operation` on `table` ended with `result` (the sample count of
    /// `{service}_database_query_duration_seconds{operation, table, result}`).
    pub fn query_count(&self, operation: Operation, table: &str, result: CallResult) -> u64 {
        self.query_durations(operation, table, result).len() as u64
    }

    /// The durations, in seconds and in recording order, of the queries of `operation` on
    /// `table` that ended with `result`.
    pub fn query_durations(
        &self,
        operation: Operation,
        table: &str,
        result: CallResult,
    ) -> Vec<f64> {
        self.histogram(
            self.name(Metric::QueryDuration),
            &[
                ("operation", operation.as_str()),
                ("table", table),
                ("result", result.as_str()),
            ],
        )
    }

    /// The failed queries of `operation` on `table`, by `error_type`
    /// (`{service}_database_errors_total{operation, table, error_type}`).
    pub fn query_errors(&self, operation: Operation, table: &str) -> BTreeMap<String, u64> {
        self.errors(operation.as_str(), table)
    }

    /// How many transactions called `name` ended with `result`
    /// (`{service}_database_transactions_total{transaction, result}`).
    pub fn transaction_count(&self, name: &str, result: CallResult) -> u64 {
        self.counter(
            self.name(Metric::Transactions),
            &[("transaction", name), ("result", result.as_str())],
        )
    }

    /// The durations, in seconds, of the transactions called `name` that ended with `result`.
    pub fn transaction_durations(&self, name: &str, result: CallResult) -> Vec<f64> {
        self.histogram(
            self.name(Metric::TransactionDuration),
            &[("transaction", name), ("result", result.as_str())],
        )
    }

    /// The failed transactions called `name`, by `error_type`
    /// (`errors_total{operation="transaction", table=<name>, error_type}`).
    pub fn transaction_errors(&self, name: &str) -> BTreeMap<String, u64> {
        self.errors("transaction", name)
    }

    /// The value of the counter `name` with exactly these labels (0 when there is none).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        self.recorder.registry.visit_counters(|key, value| {
            if is(key, name, labels) {
                total += value.load(Ordering::Acquire);
            }
        });
        total
    }

    /// The value of the gauge `name` with exactly these labels, if it was registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        self.recorder.registry.visit_gauges(|key, value| {
            if is(key, name, labels) {
                found = Some(f64::from_bits(value.load(Ordering::Acquire)));
            }
        });
        found
    }

    /// The samples of the histogram `name` with exactly these labels, in recording order
    /// (empty when there is none).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut values = Vec::new();
        self.recorder.registry.visit_histograms(|key, bucket| {
            if is(key, name, labels) {
                values.extend(bucket.data());
            }
        });
        values
    }

    /// Every series recorded so far, sorted by name and labels.
    pub fn series(&self) -> Vec<Series> {
        let mut all = Vec::new();
        let registry = &self.recorder.registry;
        registry.visit_counters(|key, value| {
            all.push(Series::new(
                key,
                Value::Counter(value.load(Ordering::Acquire)),
            ));
        });
        registry.visit_gauges(|key, value| {
            all.push(Series::new(
                key,
                Value::Gauge(f64::from_bits(value.load(Ordering::Acquire))),
            ));
        });
        registry.visit_histograms(|key, bucket| {
            all.push(Series::new(key, Value::Histogram(bucket.data())));
        });
        all.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        all
    }

    fn name(&self, metric: Metric) -> &str {
        // A capture records in the service naming, which names every metric.
        self.metrics
            .catalog()
            .name(metric)
            .map_or("", metrics::KeyName::as_str)
    }

    fn errors(&self, operation: &str, table: &str) -> BTreeMap<String, u64> {
        let name = self.name(Metric::Errors);
        let mut by_type = BTreeMap::new();
        self.recorder.registry.visit_counters(|key, value| {
            if key.name() != name || key.labels().count() != 3 {
                return;
            }
            let label = |k: &str| key.labels().find(|l| l.key() == k).map(|l| l.value());
            if label("operation") == Some(operation)
                && label("table") == Some(table)
                && let Some(error_type) = label("error_type")
            {
                let count = value.load(Ordering::Acquire);
                if count > 0 {
                    *by_type.entry(error_type.to_owned()).or_insert(0) += count;
                }
            }
        });
        by_type
    }
}

/// One recorded series, as [`MetricsCapture::series`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The full metric name, e.g. `content_service_database_transactions_total`.
    pub name: String,
    /// The labels, by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: Value,
}

impl Series {
    fn new(key: &Key, value: Value) -> Self {
        Self {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            value,
        }
    }
}

/// The value of a [`Series`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's current value.
    Gauge(f64),
    /// Every sample of a histogram, in recording order.
    Histogram(Vec<f64>),
}

fn is(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && key.labels().count() == labels.len()
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The capture's recorder: metrics-util's registry with atomic storage, read without draining
/// (unlike `DebuggingRecorder`, whose snapshots reset counters).
struct CaptureRecorder {
    registry: Registry<Key, AtomicStorage>,
}

impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueryPerformanceTracker;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_captures_of_one_service_stay_apart() {
        let a = MetricsCapture::new("svc").unwrap();
        let b = MetricsCapture::new("svc").unwrap();
        let (ta, tb) = (
            QueryPerformanceTracker::new(a.metrics()),
            QueryPerformanceTracker::new(b.metrics()),
        );
        for _ in 0..3 {
            let _: Result<(), std::io::Error> =
                ta.track_query("insert", "t", async { Ok(()) }).await;
        }
        let _: Result<(), std::io::Error> = tb
            .track_query("insert", "t", async {
                Err(std::io::ErrorKind::Other.into())
            })
            .await;
        assert_eq!(
            a.query_count(Operation::Insert, "t", CallResult::Success),
            3
        );
        assert_eq!(a.query_count(Operation::Insert, "t", CallResult::Error), 0);
        assert_eq!(
            b.query_count(Operation::Insert, "t", CallResult::Success),
            0
        );
        assert_eq!(b.query_count(Operation::Insert, "t", CallResult::Error), 1);
        assert_eq!(
            b.query_errors(Operation::Insert, "t"),
            BTreeMap::from([("connection".to_owned(), 1)])
        );
        assert!(a.query_errors(Operation::Insert, "t").is_empty());
        // Reading does not drain.
        assert_eq!(
            a.query_count(Operation::Insert, "t", CallResult::Success),
            3
        );
        assert_eq!(
            a.series()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["svc_database_query_duration_seconds"; 3],
            "one histogram per result, registered at the site's first call"
        );
    }

    #[test]
    fn a_bad_service_name_is_an_error() {
        let err = MetricsCapture::new("content-service").unwrap_err();
        assert!(err.to_string().contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{err}");
    }
}
