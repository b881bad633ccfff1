//! [`Naming`]: which names a `DatabaseMetrics` records under.

/// Which metric names a [`DatabaseMetrics`](crate::DatabaseMetrics) records under, chosen with
/// [`DatabaseMetricsBuilder::naming`](crate::DatabaseMetricsBuilder::naming).
///
/// Both namings come from one table ([`catalog`](crate::catalog)): the same calls, checkouts
/// and pool numbers, named two ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Naming {
    /// `{service}_database_*` with the labels `operation`, `table`, `result`, `pool`, ...
    /// (the default; the catalog of the README).
    #[default]
    Service,
    /// The OpenTelemetry database client conventions: `db.client.operation.duration` (seconds)
    /// with `db.system.name`, `db.operation.name`, `db.collection.name` and, on failure,
    /// `error.type` and `db.response.status_code`; `db.client.connection.*` for the pool.
    /// The service is in no name: it comes from the scrape target or the OpenTelemetry
    /// resource. A recorder that keeps dotted names (an OpenTelemetry bridge) sees these
    /// names; the Prometheus exporter of `dbmetrics::exporter` renders them the
    /// OpenTelemetry-to-Prometheus way (`db_client_operation_duration_seconds`, ...).
    OpenTelemetry,
}
