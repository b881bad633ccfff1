//! The metric catalog: every metric dbmetrics records, with its kind, unit, labels and HELP text.
//!
//! Names are `{service}_{suffix}`; the service name is validated once, here, so that every
//! name built from it is a valid Prometheus metric name.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `{service}_database_connections_active` | gauge | pool | connections checked out: open - idle |
//! | `{service}_database_connections_idle` | gauge | pool | idle connections |
//! | `{service}_database_connections_open` | gauge | pool | open connections, idle or checked out |
//! | `{service}_database_connections_max` | gauge | pool | configured maximum |
//! | `{service}_database_connections_overflow` | gauge | pool | callers waiting for a connection (deadpool `waiting`; sqlx and bb8: counted by the tracked pool) |
//! | `{service}_database_connections_acquired_total` | counter | pool | successful checkouts through a `TrackedPool` |
//! | `{service}_database_connections_released_total` | counter | pool | checked-out connections returned (dropped) |
//! | `{service}_database_connections_created_total` | counter | pool | checkouts that got a newly opened connection (deadpool only: `Object::metrics`, never recycled; not published for sqlx and bb8, which do not say) |
//! | `{service}_database_connection_wait_seconds` | histogram | pool | time to acquire a connection |
//! | `{service}_database_connection_use_seconds` | histogram | pool | time a connection was held |
//! | `{service}_database_connection_timeouts_total` | counter | pool, stage | pool timeouts by stage: `wait`, `create`, `recycle` |
//! | `{service}_database_connection_leaks_total` | counter | pool | connections held longer than the tracked pool's leak threshold (off unless set) |
//! | `{service}_database_connection_acquire_cancelled_total` | counter | pool | checkouts whose future was dropped before it got a connection |
//! | `{service}_database_query_duration_seconds` | histogram | operation, table, result (+ function, with `function_label(true)`) | one tracked query |
//! | `{service}_database_transaction_duration_seconds` | histogram | transaction, result | one tracked transaction |
//! | `{service}_database_transactions_total` | counter | transaction, result | tracked transactions |
//! | `{service}_database_errors_total` | counter | operation, table, error_type | failed tracked queries and transactions |

use std::collections::BTreeMap;

use metrics::{KeyName, SharedString, Unit};
use serde::Serialize;

use crate::error::Error;

/// The kind of a metric, as Prometheus renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations in buckets (exported as a Prometheus histogram).
    Histogram,
}

/// One metric of the catalog: what [`crate::DatabaseMetrics::get_metrics`] returns, keyed by
/// [`MetricInfo::name`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricInfo {
    /// Full metric name, e.g. `content_service_database_query_duration_seconds`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The HELP text rendered by the exporter.
    pub help: &'static str,
    /// The unit (`"seconds"`, `"count"`), if any.
    pub unit: Option<&'static str>,
    /// The label names every series of this metric carries.
    pub labels: &'static [&'static str],
}

/// Identifies one metric of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub(crate) enum Metric {
    /// `{service}_database_connections_active`
    ConnectionsActive,
    /// `{service}_database_connections_idle`
    ConnectionsIdle,
    /// `{service}_database_connections_open`
    ConnectionsOpen,
    /// `{service}_database_connections_max`
    ConnectionsMax,
    /// `{service}_database_connections_overflow`
    ConnectionsOverflow,
    /// `{service}_database_connections_acquired_total`
    ConnectionsAcquired,
    /// `{service}_database_connections_released_total`
    ConnectionsReleased,
    /// `{service}_database_connections_created_total`
    ConnectionsCreated,
    /// `{service}_database_connection_wait_seconds`
    ConnectionWait,
    /// `{service}_database_connection_use_seconds`
    ConnectionUse,
    /// `{service}_database_connection_timeouts_total`
    ConnectionTimeouts,
    /// `{service}_database_connection_leaks_total`
    ConnectionLeaks,
    /// `{service}_database_connection_acquire_cancelled_total`
    ConnectionAcquireCancelled,
    /// `{service}_database_query_duration_seconds`
    QueryDuration,
    /// `{service}_database_transaction_duration_seconds`
    TransactionDuration,
    /// `{service}_database_transactions_total`
    Transactions,
    /// `{service}_database_errors_total`
    Errors,
}

struct Spec {
    suffix: &'static str,
    kind: MetricKind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
}

const POOL: &[&str] = &["pool"];

/// The catalog, in [`Metric`] order.
const SPECS: [Spec; 17] = [
    Spec {
        suffix: "database_connections_active",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Connections checked out of the pool: open - idle.",
    },
    Spec {
        suffix: "database_connections_idle",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Idle connections ready in the pool.",
    },
    Spec {
        suffix: "database_connections_open",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Open connections in the pool, idle or in use.",
    },
    Spec {
        suffix: "database_connections_max",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Configured maximum pool size.",
    },
    Spec {
        suffix: "database_connections_overflow",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Callers waiting for a connection: queued for a slot, or for a new connection being opened (deadpool: its waiting count; sqlx and bb8: callers inside TrackedPool::get).",
    },
    Spec {
        suffix: "database_connections_acquired_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Successful connection checkouts through a tracked pool.",
    },
    Spec {
        suffix: "database_connections_released_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checked-out connections returned (dropped) to a tracked pool.",
    },
    Spec {
        suffix: "database_connections_created_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checkouts through a tracked pool that got a newly opened connection (deadpool only: Object::metrics, never recycled).",
    },
    Spec {
        suffix: "database_connection_wait_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: POOL,
        help: "Time to acquire a connection from a tracked pool.",
    },
    Spec {
        suffix: "database_connection_use_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: POOL,
        help: "Time a connection from a tracked pool was held before it was returned.",
    },
    Spec {
        suffix: "database_connection_timeouts_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["pool", "stage"],
        help: "Pool timeouts by stage: wait (no free slot), create (new connection), recycle (health check of an idle connection).",
    },
    Spec {
        suffix: "database_connection_leaks_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Connections from a tracked pool held longer than its leak threshold (off unless set); each is also logged once with the source location of its checkout.",
    },
    Spec {
        suffix: "database_connection_acquire_cancelled_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checkouts from a tracked pool whose caller gave up (the future was dropped, e.g. a timeout) before it got a connection.",
    },
    Spec {
        suffix: "database_query_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["operation", "table", "result"],
        help: "Duration of one tracked query; result is success, error or cancelled.",
    },
    Spec {
        suffix: "database_transaction_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["transaction", "result"],
        help: "Duration of one tracked transaction; result is success, error or cancelled.",
    },
    Spec {
        suffix: "database_transactions_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["transaction", "result"],
        help: "Tracked transactions by result.",
    },
    Spec {
        suffix: "database_errors_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["operation", "table", "error_type"],
        help: "Failed tracked queries and transactions by error class (PostgreSQL condition name or a dbmetrics class).",
    },
];

/// Every metric suffix, in catalog order (without the `{service}_` prefix).
pub fn suffixes() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.suffix)
}

/// The suffixes of the histogram metrics, for exporter bucket configuration.
pub fn histogram_suffixes() -> impl Iterator<Item = &'static str> {
    SPECS
        .iter()
        .filter(|s| s.kind == MetricKind::Histogram)
        .map(|s| s.suffix)
}

/// The labels of `query_duration_seconds` with the optional `function` label.
const QUERY_LABELS_WITH_FUNCTION: &[&str] = &["operation", "table", "result", "function"];

/// The metric names of one service.
#[derive(Clone, Debug)]
pub(crate) struct Catalog {
    service: SharedString,
    names: Vec<KeyName>,
    /// `query_duration_seconds` carries a `function` label.
    function_label: bool,
}

impl Catalog {
    /// Builds the catalog of `service`, or says why the name cannot prefix a metric name.
    pub(crate) fn new(service: &str) -> Result<Self, Error> {
        validate_name("service", service)?;
        let names = SPECS
            .iter()
            .map(|s| KeyName::from(format!("{service}_{}", s.suffix)))
            .collect();
        Ok(Self {
            service: SharedString::from(service.to_owned()),
            names,
            function_label: false,
        })
    }

    /// This catalog, with or without the `function` label on `query_duration_seconds`.
    pub(crate) fn with_function_label(mut self, on: bool) -> Self {
        self.function_label = on;
        self
    }

    /// Whether `query_duration_seconds` carries a `function` label.
    pub(crate) fn function_label(&self) -> bool {
        self.function_label
    }

    /// The service name every metric is prefixed with.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The full name of `metric` for this service.
    pub(crate) fn name(&self, metric: Metric) -> &KeyName {
        &self.names[metric as usize]
    }

    /// Describes every metric to the installed recorder (HELP text and unit).
    pub(crate) fn describe(&self) {
        metrics::with_recorder(|recorder| {
            for (spec, name) in SPECS.iter().zip(&self.names) {
                let help = SharedString::const_str(spec.help);
                match spec.kind {
                    MetricKind::Counter => recorder.describe_counter(name.clone(), spec.unit, help),
                    MetricKind::Gauge => recorder.describe_gauge(name.clone(), spec.unit, help),
                    MetricKind::Histogram => {
                        recorder.describe_histogram(name.clone(), spec.unit, help)
                    }
                }
            }
        });
    }

    /// Every metric of the catalog keyed by its full name.
    pub(crate) fn entries(&self) -> BTreeMap<String, MetricInfo> {
        SPECS
            .iter()
            .zip(&self.names)
            .enumerate()
            .map(|(i, (spec, name))| {
                let labels = if self.function_label && i == Metric::QueryDuration as usize {
                    QUERY_LABELS_WITH_FUNCTION
                } else {
                    spec.labels
                };
                let info = MetricInfo {
                    name: name.as_str().to_owned(),
                    kind: spec.kind,
                    help: spec.help,
                    unit: spec.unit.map(|u| u.as_str()),
                    labels,
                };
                (info.name.clone(), info)
            })
            .collect()
    }
}

/// Checks that `value` matches `[a-zA-Z_][a-zA-Z0-9_]*`; `what` names the value in the error.
pub(crate) fn validate_name(what: &'static str, value: &str) -> Result<(), Error> {
    let reason = match value
        .chars()
        .enumerate()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
    {
        _ if value.is_empty() => "it is empty".to_owned(),
        Some((0, c)) => format!("it starts with {c:?}{}", suggestion(value)),
        Some((i, c)) => format!("it contains {c:?} at position {i}{}", suggestion(value)),
        None => return Ok(()),
    };
    Err(Error::InvalidName {
        what,
        name: value.to_owned(),
        reason,
    })
}

/// ` (did you mean "my_service"?)` for `my-service`: every other character made `_`.
fn suggestion(value: &str) -> String {
    let mut fixed: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if fixed.starts_with(|c: char| c.is_ascii_digit()) {
        fixed.insert(0, '_');
    }
    format!(" (did you mean {fixed:?}?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_by_the_service() {
        let catalog = Catalog::new("content_service").unwrap();
        assert_eq!(
            catalog.name(Metric::QueryDuration).as_str(),
            "content_service_database_query_duration_seconds"
        );
        let entries = catalog.entries();
        assert_eq!(entries.len(), 17);
        let errors = &entries["content_service_database_errors_total"];
        assert_eq!(errors.kind, MetricKind::Counter);
        assert_eq!(errors.labels, &["operation", "table", "error_type"]);
        let query = "content_service_database_query_duration_seconds";
        assert_eq!(entries[query].labels, &["operation", "table", "result"]);
        let with_function = catalog.with_function_label(true).entries();
        assert_eq!(
            with_function[query].labels,
            &["operation", "table", "result", "function"]
        );
    }

    #[test]
    fn invalid_service_names_say_why() {
        for (name, reason) in [
            ("", "it is empty"),
            ("9lives", "it starts with '9' (did you mean \"_9lives\"?)"),
            (
                "content-service",
                "it contains '-' at position 7 (did you mean \"content_service\"?)",
            ),
            ("café", "it contains 'é' at position 3"),
        ] {
            let err = Catalog::new(name).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(reason), "{text}");
            assert!(text.contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{text}");
        }
        assert!(Catalog::new("_svc2").is_ok());
    }
}
