//! Series handles: registering them with the recorder, and the handles of one call site.

use std::sync::{Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata};

use crate::catalog::{Catalog, Metric};
use crate::classify::sqlstate_code;
use crate::naming::Naming;
use crate::record::{Outcome, Sample, SiteKind};

static METADATA: Metadata<'static> = Metadata::new("dbmetrics", Level::INFO, Some(module_path!()));

/// A histogram of `name` (a no-op handle when the naming has no such metric).
pub(crate) fn register_histogram(name: Option<&KeyName>, labels: Vec<Label>) -> Histogram {
    let Some(name) = name else {
        return Histogram::noop();
    };
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
}

/// A counter of `name` (a no-op handle when the naming has no such metric).
pub(crate) fn register_counter(name: Option<&KeyName>, labels: Vec<Label>) -> Counter {
    let Some(name) = name else {
        return Counter::noop();
    };
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
}

/// A gauge of `name` (a no-op handle when the naming has no such metric).
pub(crate) fn register_gauge(name: Option<&KeyName>, labels: Vec<Label>) -> Gauge {
    let Some(name) = name else {
        return Gauge::noop();
    };
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_gauge(&key, &METADATA))
}

/// Handles of one call site in one `DatabaseMetrics`: resolved once, then reused.
pub(crate) struct SiteHandles {
    /// The table these handles are labelled with.
    pub(crate) table: &'static str,
    /// By result, in [`Outcome::RESULTS`] order (the OpenTelemetry naming records errors
    /// through `errors`, by class: its `error` handle is a no-op).
    duration: [Histogram; 3],
    transactions: Option<[Counter; 3]>,
    errors: ErrorSeries,
}

impl SiteHandles {
    pub(crate) fn new(catalog: &Catalog, sample: &Sample) -> Self {
        match catalog.naming() {
            Naming::Service => Self::service(catalog, sample),
            Naming::OpenTelemetry => Self::opentelemetry(catalog, sample),
        }
    }

    /// `{service}_database_*`: durations by `result`, errors counted by `error_type`.
    fn service(catalog: &Catalog, sample: &Sample) -> Self {
        match sample.site.kind() {
            SiteKind::Query { operation, .. } => {
                let name = catalog.name(Metric::QueryDuration);
                let function = catalog.function_label().then(|| sample.site.name());
                let duration = Outcome::RESULTS.map(|result| {
                    let mut labels = vec![
                        Label::from_static_parts("operation", operation.as_str()),
                        Label::from_static_parts("table", sample.table),
                        Label::from_static_parts("result", result),
                    ];
                    if let Some(function) = function {
                        labels.push(Label::from_static_parts("function", function));
                    }
                    register_histogram(name, labels)
                });
                Self {
                    table: sample.table,
                    duration,
                    transactions: None,
                    errors: ErrorSeries::counters(catalog, operation.as_str(), sample.table),
                }
            }
            SiteKind::Transaction { name: transaction } => {
                let labels = |result| {
                    vec![
                        Label::from_static_parts("transaction", transaction),
                        Label::from_static_parts("result", result),
                    ]
                };
                let duration_name = catalog.name(Metric::TransactionDuration);
                let total_name = catalog.name(Metric::Transactions);
                Self {
                    table: sample.table,
                    duration: Outcome::RESULTS
                        .map(|r| register_histogram(duration_name, labels(r))),
                    transactions: Some(
                        Outcome::RESULTS.map(|r| register_counter(total_name, labels(r))),
                    ),
                    errors: ErrorSeries::counters(catalog, "transaction", transaction),
                }
            }
        }
    }

    /// `db.client.operation.duration` (`dbmetrics.transaction.duration`): a success has no
    /// `error.type`, a cancelled call has `error.type="cancelled"`, an error its class (and
    /// the SQLSTATE of a server error). With the function label, every query series also has
    /// `code.function.name`.
    fn opentelemetry(catalog: &Catalog, sample: &Sample) -> Self {
        let (metric, base) = match sample.site.kind() {
            SiteKind::Query { operation, .. } => {
                let mut labels = vec![
                    Label::from_static_parts("db.system.name", "postgresql"),
                    Label::from_static_parts("db.operation.name", operation.sql_keyword()),
                    Label::from_static_parts("db.collection.name", sample.table),
                ];
                // `function_label(true)`: every series of the operation, failures included.
                if catalog.function_label() {
                    labels.push(Label::from_static_parts(
                        "code.function.name",
                        sample.site.name(),
                    ));
                }
                (Metric::QueryDuration, labels)
            }
            SiteKind::Transaction { name } => (
                Metric::TransactionDuration,
                vec![Label::from_static_parts("dbmetrics.transaction.name", name)],
            ),
        };
        let name = catalog.name(metric);
        let mut cancelled = base.clone();
        cancelled.push(Label::from_static_parts(
            "error.type",
            Outcome::Cancelled.result(),
        ));
        Self {
            table: sample.table,
            duration: [
                register_histogram(name, base.clone()),
                Histogram::noop(),
                register_histogram(name, cancelled),
            ],
            transactions: None,
            errors: ErrorSeries {
                name: name.cloned(),
                base,
                naming: Naming::OpenTelemetry,
                by_type: Mutex::new(Vec::new()),
            },
        }
    }

    #[inline]
    pub(crate) fn record(&self, sample: &Sample) {
        let i = sample.outcome.index();
        let seconds = sample.elapsed.as_secs_f64();
        self.duration[i].record(seconds);
        if let Some(total) = &self.transactions {
            total[i].increment(1);
        }
        if let Outcome::Error { error_type } = sample.outcome {
            self.errors.record(error_type, seconds);
        }
    }
}

/// The series of one site's failures, by error class (registered on first occurrence):
/// `errors_total` counters in the service naming, the duration histogram with `error.type`
/// in the OpenTelemetry naming.
struct ErrorSeries {
    name: Option<KeyName>,
    /// The labels every failure series of the site has, before the error class.
    base: Vec<Label>,
    naming: Naming,
    by_type: Mutex<Vec<(&'static str, ErrorHandle)>>,
}

enum ErrorHandle {
    Counter(Counter),
    Histogram(Histogram),
}

impl ErrorSeries {
    /// `errors_total{operation, table, error_type}`.
    fn counters(catalog: &Catalog, operation: &'static str, table: &'static str) -> Self {
        Self {
            name: catalog.name(Metric::Errors).cloned(),
            base: vec![
                Label::from_static_parts("operation", operation),
                Label::from_static_parts("table", table),
            ],
            naming: Naming::Service,
            by_type: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, error_type: &'static str, seconds: f64) {
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = match by_type.iter().position(|(t, _)| *t == error_type) {
            Some(i) => &by_type[i].1,
            None => {
                let mut labels = self.base.clone();
                let handle = match self.naming {
                    Naming::Service => {
                        labels.push(Label::from_static_parts("error_type", error_type));
                        ErrorHandle::Counter(register_counter(self.name.as_ref(), labels))
                    }
                    Naming::OpenTelemetry => {
                        labels.push(Label::from_static_parts("error.type", error_type));
                        if let Some(code) = sqlstate_code(error_type) {
                            labels.push(Label::from_static_parts("db.response.status_code", code));
                        }
                        ErrorHandle::Histogram(register_histogram(self.name.as_ref(), labels))
                    }
                };
                by_type.push((error_type, handle));
                &by_type[by_type.len() - 1].1
            }
        };
        match handle {
            ErrorHandle::Counter(counter) => counter.increment(1),
            ErrorHandle::Histogram(histogram) => histogram.record(seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics::Unit;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::record::{CallSite, Operation};

    /// What a recorder that keeps dotted names (an OpenTelemetry bridge) receives.
    #[test]
    fn the_opentelemetry_naming_records_dotted_names_in_seconds() {
        static SITE: CallSite =
            crate::record::private::query_site(Operation::Select, Some("content"), "get", "m");
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let catalog = Catalog::with_naming("svc", Naming::OpenTelemetry).unwrap();
            catalog.describe();
            let sample = |outcome| Sample {
                site: &SITE,
                table: "content",
                outcome,
                elapsed: Duration::from_micros(300),
            };
            let handles = SiteHandles::new(&catalog, &sample(Outcome::Success));
            handles.record(&sample(Outcome::Success));
            handles.record(&sample(Outcome::Error {
                error_type: "undefined_table",
            }));
            handles.record(&sample(Outcome::Error {
                error_type: "pool_timeout",
            }));
            handles.record(&sample(Outcome::Cancelled));
        });
        let mut series: Vec<(String, Vec<String>, Option<&str>, usize)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, unit, _, value)| match value {
                DebugValue::Histogram(values) => Some((
                    key.key().name().to_owned(),
                    key.key()
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect(),
                    unit.map(|u| u.as_str()),
                    values.len(),
                )),
                _ => None,
            })
            .collect();
        series.sort();
        let base = [
            "db.system.name=postgresql",
            "db.operation.name=SELECT",
            "db.collection.name=content",
        ];
        let with = |extra: &[&str]| -> Vec<String> {
            base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
        };
        let name = "db.client.operation.duration".to_owned();
        let seconds = Some(Unit::Seconds.as_str());
        let mut expected = vec![
            (name.clone(), with(&[]), seconds, 1),
            (
                name.clone(),
                with(&[
                    "error.type=undefined_table",
                    "db.response.status_code=42P01",
                ]),
                seconds,
                1,
            ),
            (name.clone(), with(&["error.type=pool_timeout"]), seconds, 1),
            (name, with(&["error.type=cancelled"]), seconds, 1),
        ];
        expected.sort();
        assert_eq!(series, expected);
    }
}
