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
//! | `{service}_database_connections_discarded_total` | counter | pool, reason | connections a cancelled or panicking call left, closed instead of returned: `busy` (still running a statement), `broken`, `no_runtime` |
//! | `{service}_database_queries_cancelled_on_server_total` | counter | pool | statements stopped on the server by a cancel request after their call was cancelled |
//! | `{service}_database_query_duration_seconds` | histogram | operation, table, result (+ function, with `function_label(true)`) | one tracked query |
//! | `{service}_database_transaction_duration_seconds` | histogram | transaction, result | one tracked transaction |
//! | `{service}_database_transactions_total` | counter | transaction, result | tracked transactions |
//! | `{service}_database_errors_total` | counter | operation, table, error_type | failed tracked queries and transactions |
//!
//! # OpenTelemetry naming
//!
//! With [`Naming::OpenTelemetry`] the same table names its metrics after the OpenTelemetry
//! database client conventions (dotted names, as a recorder receives them; the Prometheus
//! exporter of `dbmetrics::exporter` turns dots into `_` and adds the unit and `_total`):
//!
//! | name | Prometheus | kind | labels |
//! |---|---|---|---|
//! | `db.client.operation.duration` | `db_client_operation_duration_seconds` | histogram | `db.system.name`, `db.operation.name`, `db.collection.name`; on failure `error.type` and, for server errors, `db.response.status_code` |
//! | `db.client.connection.count` | `db_client_connection_count` | gauge | `db.client.connection.pool.name`, `db.client.connection.state` (`idle`, `used`) |
//! | `db.client.connection.max` | `db_client_connection_max` | gauge | `db.client.connection.pool.name` |
//! | `db.client.connection.pending_requests` | `db_client_connection_pending_requests` | gauge | `db.client.connection.pool.name` |
//! | `db.client.connection.timeouts` | `db_client_connection_timeouts_total` | counter | `db.client.connection.pool.name` (every stage) |
//! | `db.client.connection.wait_time` | `db_client_connection_wait_time_seconds` | histogram | `db.client.connection.pool.name` |
//! | `db.client.connection.use_time` | `db_client_connection_use_time_seconds` | histogram | `db.client.connection.pool.name` |
//! | `dbmetrics.transaction.duration` | `dbmetrics_transaction_duration_seconds` | histogram | `dbmetrics.transaction.name`; on failure `error.type`, `db.response.status_code` |
//!
//! `error.type` is the class `errors_total` counts (`unique_violation`, `pool_timeout`, ...),
//! or `cancelled` for a call whose future was dropped. Transactions have no OpenTelemetry
//! convention: `dbmetrics.transaction.duration` is dbmetrics' own. The counters of checkouts
//! (`acquired`, `released`, `created`, `acquire_cancelled`, `leaks`), the cleanup after
//! cancelled calls (`connections_discarded`, `queries_cancelled_on_server`), `errors_total`,
//! `transactions_total` and `connections_open` have no OpenTelemetry counterpart (`wait_time`'s count is the acquisitions; `count` summed over states is the
//! open connections); `db.client.connection.create_time` is not recorded, since no supported
//! pool lets the creation of a connection be timed from outside.

use std::collections::BTreeMap;

use metrics::{KeyName, Label, SharedString, Unit};
use serde::Serialize;

use crate::error::Error;
use crate::naming::Naming;

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
    /// `{service}_database_connections_discarded_total`
    ConnectionsDiscarded,
    /// `{service}_database_queries_cancelled_on_server_total`
    QueriesCancelledOnServer,
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
    /// The name of this metric in [`Naming::OpenTelemetry`]; `None`: not recorded there.
    otel: Option<Otel>,
}

/// A metric's OpenTelemetry name (same kind and unit as the service naming).
struct Otel {
    name: &'static str,
    labels: &'static [&'static str],
    /// The `db.client.connection.state` of the pool gauges that count connections.
    state: Option<&'static str>,
    help: &'static str,
}

const POOL: &[&str] = &["pool"];

/// The OpenTelemetry label of the pool name.
pub(crate) const OTEL_POOL_NAME: &str = "db.client.connection.pool.name";
const OTEL_POOL: &[&str] = &[OTEL_POOL_NAME];
const OTEL_COUNT: Otel = Otel {
    name: "db.client.connection.count",
    labels: &[OTEL_POOL_NAME, "db.client.connection.state"],
    state: None,
    help: "The number of connections that are currently in the state described by the state attribute.",
};

/// The catalog, in [`Metric`] order.
const SPECS: [Spec; 19] = [
    Spec {
        suffix: "database_connections_active",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Connections checked out of the pool: open - idle.",
        otel: Some(Otel {
            state: Some("used"),
            ..OTEL_COUNT
        }),
    },
    Spec {
        suffix: "database_connections_idle",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Idle connections ready in the pool.",
        otel: Some(Otel {
            state: Some("idle"),
            ..OTEL_COUNT
        }),
    },
    Spec {
        suffix: "database_connections_open",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Open connections in the pool, idle or in use.",
        otel: None,
    },
    Spec {
        suffix: "database_connections_max",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Configured maximum pool size.",
        otel: Some(Otel {
            name: "db.client.connection.max",
            labels: OTEL_POOL,
            state: None,
            help: "The maximum number of open connections allowed.",
        }),
    },
    Spec {
        suffix: "database_connections_overflow",
        kind: MetricKind::Gauge,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Callers waiting for a connection: queued for a slot, or for a new connection being opened (deadpool: its waiting count; sqlx and bb8: callers inside TrackedPool::get).",
        otel: Some(Otel {
            name: "db.client.connection.pending_requests",
            labels: OTEL_POOL,
            state: None,
            help: "The number of current pending requests for an open connection.",
        }),
    },
    Spec {
        suffix: "database_connections_acquired_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Successful connection checkouts through a tracked pool.",
        otel: None,
    },
    Spec {
        suffix: "database_connections_released_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checked-out connections returned (dropped) to a tracked pool.",
        otel: None,
    },
    Spec {
        suffix: "database_connections_created_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checkouts through a tracked pool that got a newly opened connection (deadpool only: Object::metrics, never recycled).",
        otel: None,
    },
    Spec {
        suffix: "database_connection_wait_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: POOL,
        help: "Time to acquire a connection from a tracked pool.",
        otel: Some(Otel {
            name: "db.client.connection.wait_time",
            labels: OTEL_POOL,
            state: None,
            help: "The time it took to obtain an open connection from the pool.",
        }),
    },
    Spec {
        suffix: "database_connection_use_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: POOL,
        help: "Time a connection from a tracked pool was held before it was returned.",
        otel: Some(Otel {
            name: "db.client.connection.use_time",
            labels: OTEL_POOL,
            state: None,
            help: "The time between borrowing a connection and returning it to the pool.",
        }),
    },
    Spec {
        suffix: "database_connection_timeouts_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["pool", "stage"],
        help: "Pool timeouts by stage: wait (no free slot), create (new connection), recycle (health check of an idle connection).",
        otel: Some(Otel {
            name: "db.client.connection.timeouts",
            labels: OTEL_POOL,
            state: None,
            help: "The number of connection timeouts that have occurred trying to obtain a connection from the pool.",
        }),
    },
    Spec {
        suffix: "database_connection_leaks_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Connections from a tracked pool held longer than its leak threshold (off unless set); each is also logged once with the source location of its checkout.",
        otel: None,
    },
    Spec {
        suffix: "database_connection_acquire_cancelled_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Checkouts from a tracked pool whose caller gave up (the future was dropped, e.g. a timeout) before it got a connection.",
        otel: None,
    },
    Spec {
        suffix: "database_connections_discarded_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["pool", "reason"],
        help: "Connections of a tracked pool left by a cancelled or panicking call and closed instead of returned: busy (still running a statement; a cancel request was sent), broken (failed its check), no_runtime (no Tokio runtime to check it).",
        otel: None,
    },
    Spec {
        suffix: "database_queries_cancelled_on_server_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: POOL,
        help: "Statements stopped on the server by a cancel request after their tracked call was cancelled or panicked (the connection answered again after the request).",
        otel: None,
    },
    Spec {
        suffix: "database_query_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["operation", "table", "result"],
        help: "Duration of one tracked query; result is success, error or cancelled.",
        otel: Some(Otel {
            name: "db.client.operation.duration",
            labels: &[
                "db.system.name",
                "db.operation.name",
                "db.collection.name",
                "error.type",
                "db.response.status_code",
            ],
            state: None,
            help: "Duration of database client operations.",
        }),
    },
    Spec {
        suffix: "database_transaction_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["transaction", "result"],
        help: "Duration of one tracked transaction; result is success, error or cancelled.",
        otel: Some(Otel {
            name: "dbmetrics.transaction.duration",
            labels: &[
                "dbmetrics.transaction.name",
                "error.type",
                "db.response.status_code",
            ],
            state: None,
            help: "Duration of one tracked transaction (dbmetrics' own; OpenTelemetry has no convention for transactions).",
        }),
    },
    Spec {
        suffix: "database_transactions_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["transaction", "result"],
        help: "Tracked transactions by result.",
        otel: None,
    },
    Spec {
        suffix: "database_errors_total",
        kind: MetricKind::Counter,
        unit: Some(Unit::Count),
        labels: &["operation", "table", "error_type"],
        help: "Failed tracked queries and transactions by error class (PostgreSQL condition name or a dbmetrics class).",
        otel: None,
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

/// Every metric name of [`Naming::OpenTelemetry`], dotted (`db.client.operation.duration`),
/// in catalog order, each once.
pub fn opentelemetry_names() -> impl Iterator<Item = &'static str> {
    SPECS
        .iter()
        .filter_map(|s| s.otel.as_ref().map(|o| o.name))
        .enumerate()
        .filter(|&(i, name)| {
            // the two connection-count gauges share a name
            SPECS
                .iter()
                .filter_map(|s| s.otel.as_ref().map(|o| o.name))
                .position(|n| n == name)
                == Some(i)
        })
        .map(|(_, name)| name)
}

/// The histogram names of [`Naming::OpenTelemetry`], dotted, for exporter bucket configuration.
pub fn opentelemetry_histogram_names() -> impl Iterator<Item = &'static str> {
    SPECS
        .iter()
        .filter(|s| s.kind == MetricKind::Histogram)
        .filter_map(|s| s.otel.as_ref().map(|o| o.name))
}

/// The labels of `query_duration_seconds` with the optional `function` label.
const QUERY_LABELS_WITH_FUNCTION: &[&str] = &["operation", "table", "result", "function"];

/// The labels of `db.client.operation.duration` with the optional `code.function.name` label.
const OTEL_QUERY_LABELS_WITH_FUNCTION: &[&str] = &[
    "db.system.name",
    "db.operation.name",
    "db.collection.name",
    "error.type",
    "db.response.status_code",
    "code.function.name",
];

/// The metric names of one service, in one naming.
#[derive(Clone, Debug)]
pub(crate) struct Catalog {
    service: SharedString,
    naming: Naming,
    /// By [`Metric`]; `None`: not recorded in this naming.
    names: Vec<Option<KeyName>>,
    /// `query_duration_seconds` carries a `function` label (`code.function.name` in the
    /// OpenTelemetry naming).
    function_label: bool,
}

impl Catalog {
    /// Builds the catalog of `service` in the service naming, or says why the name cannot
    /// prefix a metric name.
    pub(crate) fn new(service: &str) -> Result<Self, Error> {
        Self::with_naming(service, Naming::Service)
    }

    /// Builds the catalog of `service` in `naming`. The service name is validated in both:
    /// it names the service in logs and in the registry of monitored pools.
    pub(crate) fn with_naming(service: &str, naming: Naming) -> Result<Self, Error> {
        validate_name("service", service)?;
        let names = SPECS
            .iter()
            .map(|s| match naming {
                Naming::Service => Some(KeyName::from(format!("{service}_{}", s.suffix))),
                Naming::OpenTelemetry => s.otel.as_ref().map(|o| KeyName::from_const_str(o.name)),
            })
            .collect();
        Ok(Self {
            service: SharedString::from(service.to_owned()),
            naming,
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

    /// The naming of this catalog.
    pub(crate) fn naming(&self) -> Naming {
        self.naming
    }

    /// The full name of `metric` in this catalog's naming; `None` when the naming has no such
    /// metric (its handles are then no-ops).
    pub(crate) fn name(&self, metric: Metric) -> Option<&KeyName> {
        self.names[metric as usize].as_ref()
    }

    /// The labels of a pool series of `metric` for the pool label `pool`: `pool` (and `stage`
    /// for timeouts) in the service naming; `db.client.connection.pool.name` (and
    /// `db.client.connection.state` for the connection counts) in the OpenTelemetry naming,
    /// whose timeouts count every stage together.
    pub(crate) fn pool_labels(
        &self,
        metric: Metric,
        pool: &'static str,
        stage: Option<&'static str>,
    ) -> Vec<Label> {
        match self.naming {
            Naming::Service => {
                let mut labels = vec![Label::from_static_parts("pool", pool)];
                if let Some(stage) = stage {
                    labels.push(Label::from_static_parts("stage", stage));
                }
                labels
            }
            Naming::OpenTelemetry => {
                let mut labels = vec![Label::from_static_parts(OTEL_POOL_NAME, pool)];
                if let Some(state) = SPECS[metric as usize].otel.as_ref().and_then(|o| o.state) {
                    labels.push(Label::from_static_parts(
                        "db.client.connection.state",
                        state,
                    ));
                }
                labels
            }
        }
    }

    /// Describes every metric to the installed recorder (HELP text and unit).
    pub(crate) fn describe(&self) {
        metrics::with_recorder(|recorder| {
            for (spec, name) in SPECS.iter().zip(&self.names) {
                let Some(name) = name else { continue };
                let help = SharedString::const_str(match (self.naming, &spec.otel) {
                    (Naming::OpenTelemetry, Some(otel)) => otel.help,
                    _ => spec.help,
                });
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
            .filter_map(|(i, (spec, name))| {
                let name = name.as_ref()?;
                let (help, labels) = match (self.naming, &spec.otel) {
                    (Naming::OpenTelemetry, Some(otel)) => (otel.help, otel.labels),
                    _ => (spec.help, spec.labels),
                };
                let labels = match self.naming {
                    _ if !(self.function_label && i == Metric::QueryDuration as usize) => labels,
                    Naming::Service => QUERY_LABELS_WITH_FUNCTION,
                    Naming::OpenTelemetry => OTEL_QUERY_LABELS_WITH_FUNCTION,
                };
                let info = MetricInfo {
                    name: name.as_str().to_owned(),
                    kind: spec.kind,
                    help,
                    unit: spec.unit.map(|u| u.as_str()),
                    labels,
                };
                Some((info.name.clone(), info))
            })
            .collect()
    }
}

/// Checks that `value` matches `[a-zA-Z_][a-zA-Z0-9_]*` and does not start with `__` (which
/// Prometheus reserves for its own names); `what` names the value in the error.
pub(crate) fn validate_name(what: &'static str, value: &str) -> Result<(), Error> {
    let reason = match value
        .chars()
        .enumerate()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
    {
        _ if value.is_empty() => "it is empty".to_owned(),
        Some((0, c)) => format!("it starts with {c:?}{}", suggestion(value)),
        Some((i, c)) => format!("it contains {c:?} at position {i}{}", suggestion(value)),
        None if value.starts_with("__") => {
            let trimmed = value.trim_start_matches('_');
            let hint = if trimmed.starts_with(|c: char| c.is_ascii_alphabetic()) {
                format!(" (did you mean {trimmed:?}?)")
            } else {
                String::new()
            };
            format!("it starts with \"__\", which Prometheus reserves for its own names{hint}")
        }
        None => return Ok(()),
    };
    Err(Error::InvalidName {
        what,
        name: value.to_owned(),
        reason,
    })
}

/// ` (did you mean "my_service"?)` for `my-service`: every other character made `_`. Nothing
/// for a name with a non-ASCII letter or digit (`ïnv`, `café`): a `_` in its place would not be
/// the name meant, and no spelling of it is sure to be.
fn suggestion(value: &str) -> String {
    if value.chars().any(|c| !c.is_ascii() && c.is_alphanumeric()) {
        return " (only ASCII letters, digits and underscores are allowed)".to_owned();
    }
    let mut fixed: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if fixed.starts_with(|c: char| c.is_ascii_digit()) {
        fixed.insert(0, '_');
    }
    if fixed.starts_with("__") {
        // `-x` would become `_x`, but `--x` a reserved `__x`: keep one underscore.
        fixed = format!("_{}", fixed.trim_start_matches('_'));
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
            catalog.name(Metric::QueryDuration).unwrap().as_str(),
            "content_service_database_query_duration_seconds"
        );
        let entries = catalog.entries();
        assert_eq!(entries.len(), 19);
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
    fn the_opentelemetry_naming_names_what_it_records() {
        let catalog = Catalog::with_naming("content_service", Naming::OpenTelemetry).unwrap();
        assert_eq!(
            catalog.name(Metric::QueryDuration).unwrap().as_str(),
            "db.client.operation.duration"
        );
        assert_eq!(catalog.name(Metric::Errors), None);
        assert_eq!(catalog.name(Metric::ConnectionsOpen), None);
        let entries = catalog.entries();
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "db.client.connection.count",
                "db.client.connection.max",
                "db.client.connection.pending_requests",
                "db.client.connection.timeouts",
                "db.client.connection.use_time",
                "db.client.connection.wait_time",
                "db.client.operation.duration",
                "dbmetrics.transaction.duration",
            ]
        );
        let mut listed: Vec<&str> = opentelemetry_names().collect();
        listed.sort_unstable();
        assert_eq!(listed, names);
        let duration = &entries["db.client.operation.duration"];
        assert_eq!(duration.kind, MetricKind::Histogram);
        assert_eq!(duration.unit, Some("seconds"));
        assert_eq!(
            catalog.pool_labels(Metric::ConnectionsActive, "main", None),
            vec![
                Label::new("db.client.connection.pool.name", "main"),
                Label::new("db.client.connection.state", "used"),
            ]
        );
        assert_eq!(
            catalog.pool_labels(Metric::ConnectionTimeouts, "main", Some("wait")),
            vec![Label::new("db.client.connection.pool.name", "main")]
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
            (
                "café",
                "it contains 'é' at position 3 (only ASCII letters, digits and underscores \
                 are allowed)",
            ),
            (
                "ïnv",
                "it starts with 'ï' (only ASCII letters, digits and underscores are allowed)",
            ),
            (
                "my-ïnv",
                "it contains '-' at position 2 (only ASCII letters, digits and underscores \
                 are allowed)",
            ),
            (
                "__svc",
                "it starts with \"__\", which Prometheus reserves for its own names \
                 (did you mean \"svc\"?)",
            ),
            (
                "__",
                "it starts with \"__\", which Prometheus reserves for its own names;",
            ),
            (
                "__9",
                "it starts with \"__\", which Prometheus reserves for its own names;",
            ),
            ("--svc", "it starts with '-' (did you mean \"_svc\"?)"),
        ] {
            let err = Catalog::new(name).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(reason), "{text}");
            assert!(text.contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{text}");
        }
        assert!(Catalog::new("_svc2").is_ok());
        assert!(Catalog::new("_").is_ok());
        assert!(Catalog::new("a__b").is_ok());
    }
}
