//! Series handles: registering them with the recorder, and the handles of one call site.

use std::sync::{Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata};

use crate::catalog::{Catalog, Metric};
use crate::record::{Outcome, Sample, SiteKind};

static METADATA: Metadata<'static> = Metadata::new("dbmetrics", Level::INFO, Some(module_path!()));

pub(crate) fn register_histogram(name: &KeyName, labels: Vec<Label>) -> Histogram {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
}

pub(crate) fn register_counter(name: &KeyName, labels: Vec<Label>) -> Counter {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
}

pub(crate) fn register_gauge(name: &KeyName, labels: Vec<Label>) -> Gauge {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_gauge(&key, &METADATA))
}

/// Handles of one call site in one `DatabaseMetrics`: resolved once, then reused.
pub(crate) struct SiteHandles {
    /// The table these handles are labelled with.
    pub(crate) table: &'static str,
    /// By result, in [`Outcome::RESULTS`] order.
    duration: [Histogram; 3],
    transactions: Option<[Counter; 3]>,
    errors: ErrorCounters,
}

impl SiteHandles {
    pub(crate) fn new(catalog: &Catalog, sample: &Sample) -> Self {
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
                    errors: ErrorCounters::new(catalog, operation.as_str(), sample.table),
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
                    errors: ErrorCounters::new(catalog, "transaction", transaction),
                }
            }
        }
    }

    #[inline]
    pub(crate) fn record(&self, sample: &Sample) {
        let i = sample.outcome.index();
        self.duration[i].record(sample.elapsed.as_secs_f64());
        if let Some(total) = &self.transactions {
            total[i].increment(1);
        }
        if let Outcome::Error { error_type } = sample.outcome {
            self.errors.increment(error_type);
        }
    }
}

/// `errors_total` counters of one site, by error class (registered on first occurrence).
struct ErrorCounters {
    name: KeyName,
    operation: &'static str,
    table: &'static str,
    by_type: Mutex<Vec<(&'static str, Counter)>>,
}

impl ErrorCounters {
    fn new(catalog: &Catalog, operation: &'static str, table: &'static str) -> Self {
        Self {
            name: catalog.name(Metric::Errors).clone(),
            operation,
            table,
            by_type: Mutex::new(Vec::new()),
        }
    }

    fn increment(&self, error_type: &'static str) {
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = by_type.iter().find(|(t, _)| *t == error_type) {
            counter.increment(1);
            return;
        }
        let counter = register_counter(
            &self.name,
            vec![
                Label::from_static_parts("operation", self.operation),
                Label::from_static_parts("table", self.table),
                Label::from_static_parts("error_type", error_type),
            ],
        );
        counter.increment(1);
        by_type.push((error_type, counter));
    }
}
