//! [`setup_database_monitoring`] and its options, [`DatabaseMetricsBuilder`].

use std::time::Duration;

use super::handle::{DatabaseMetrics, Parts};
use super::registry;
use crate::catalog::Catalog;
use crate::drivers::DefaultPool;
use crate::error::Error;
use crate::intern::intern;
use crate::naming::Naming;
use crate::pool::MonitoredPool;

/// Sets up monitoring of `pool` for `service`: describes every metric of the catalog, registers
/// the pool's series and starts the pool poller on the current Tokio runtime.
///
/// Equivalent to `DatabaseMetrics::builder(pool, service).build()`; see
/// [`DatabaseMetricsBuilder`] for the options (poll interval, pool name, slow-query log).
///
/// # Errors
/// - [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*`;
/// - [`Error::NoRuntime`] outside a Tokio runtime;
/// - [`Error::DuplicatePool`] when the service already monitors another (open) pool under the
///   same pool name.
///
/// Setting up the same service and the same pool twice returns the existing handle (one poller,
/// the options of the first call); when the second call names another pool label, the pool's
/// series move to that label (one pool is published under one label). A pool name whose pool
/// was closed or dropped can be given to a new pool. The poller stops when the pool is closed (gauges set to 0) or when the last
/// handle is dropped; see [`crate::pool`].
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub fn setup_database_monitoring<P: MonitoredPool>(
    pool: &P,
    service: &str,
) -> Result<DatabaseMetrics, Error> {
    DatabaseMetrics::builder(pool, service).build()
}

impl DatabaseMetrics {
    /// Starts configuring monitoring of `pool` for `service`.
    pub fn builder<P: MonitoredPool>(pool: &P, service: &str) -> DatabaseMetricsBuilder<P> {
        DatabaseMetricsBuilder::new(pool.clone(), service)
    }
}

impl DatabaseMetrics {
    /// Series for the pool label `name` of this service without a poller (no gauges are
    /// set) and outside the registry: what a tracked pool records into when its pool cannot be
    /// monitored (no Tokio runtime, or `name` labels another open pool of the service).
    pub(crate) fn without_poller(&self, name: &str) -> DatabaseMetrics {
        let metrics = DatabaseMetrics::from_parts(Parts {
            catalog: self.catalog().clone(),
            pool_name: Some(intern(name)),
            counts_created: self.counts_created(),
            poll_interval: self.poll_interval(),
            slow_query_threshold: None,
            label_limit: 0,
            recorder: None,
        });
        let _series = metrics.pool_series();
        metrics
    }
}

/// Options of [`setup_database_monitoring`].
#[derive(Debug)]
#[must_use = "call .build() to start monitoring"]
pub struct DatabaseMetricsBuilder<P: MonitoredPool = DefaultPool> {
    pool: P,
    service: String,
    pool_name: String,
    poll_interval: Duration,
    slow_query_threshold: Option<Duration>,
    label_limit: usize,
    naming: Naming,
}

impl<P: MonitoredPool> DatabaseMetricsBuilder<P> {
    fn new(pool: P, service: &str) -> Self {
        Self {
            pool,
            service: service.to_owned(),
            pool_name: DatabaseMetrics::DEFAULT_POOL_NAME.to_owned(),
            poll_interval: DatabaseMetrics::DEFAULT_POLL_INTERVAL,
            slow_query_threshold: Some(DatabaseMetrics::DEFAULT_SLOW_QUERY_THRESHOLD),
            label_limit: DatabaseMetrics::DEFAULT_LABEL_LIMIT,
            naming: Naming::Service,
        }
    }

    /// Which names the metrics are recorded under: [`Naming::Service`] (the default,
    /// `{service}_database_*`) or [`Naming::OpenTelemetry`] (`db.client.operation.duration`,
    /// `db.client.connection.*`; see [`crate::catalog`]).
    ///
    /// Setting up a service and pool that are already monitored returns the existing handle,
    /// with the naming it was set up with ([`DatabaseMetrics::naming`] tells which).
    pub fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// How often the poller reads the pool status (default 1 s, so a change shows within
    /// about a second; minimum 10 ms). Each tick costs the same whatever the pool's size.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The `pool` label (default `"default"`); tell several pools of one service apart.
    pub fn pool_name(mut self, name: &str) -> Self {
        self.pool_name = name.to_owned();
        self
    }

    /// Log tracked calls at least this slow (`WARN`, target `dbmetrics::slow_query`, no SQL
    /// text); `None` turns the log off. Default 1 s.
    pub fn slow_query_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_query_threshold = threshold;
        self
    }

    /// How many distinct names given at run time this service admits as label values, of each
    /// kind: tables (tracker, middleware), transaction names (`track_transaction`,
    /// `transaction::run`), and function names (middleware methods). Default
    /// [`DatabaseMetrics::DEFAULT_LABEL_LIMIT`] (1000). Further names record under
    /// `table="_overflow"` (`transaction="_overflow"`), with one warning (target `dbmetrics`), and
    /// every call is still counted once; series and memory stay bounded. Names written in
    /// attributes (`#[track_query(select, "content")]`) are bounded by the code and never capped.
    pub fn label_limit(mut self, limit: usize) -> Self {
        self.label_limit = limit;
        self
    }

    /// Validates the names, describes the catalog, registers the pool series and starts the
    /// poller.
    ///
    /// # Errors
    /// See [`setup_database_monitoring`].
    pub fn build(self) -> Result<DatabaseMetrics, Error> {
        let catalog = Catalog::with_naming(&self.service, self.naming)?;
        let pool = self.pool;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "setup_database_monitoring",
            task: "the pool poller",
        })?;

        let mut active = registry::lock();
        match active.find(&self.service, &self.pool_name, &pool) {
            registry::Found::OtherPool => {
                return Err(Error::DuplicatePool {
                    service: self.service,
                    pool: self.pool_name,
                });
            }
            registry::Found::Same(metrics) => {
                if !metrics.poller_runs() {
                    // The poller is gone while the pool is open and the handle alive: the
                    // runtime it ran on was shut down. Start it again on this one.
                    metrics.spawn_poller(&runtime, &pool);
                }
                return Ok(metrics);
            }
            registry::Found::Nothing => {}
        }
        // One pool is published under one label (two would count its connections twice in
        // every sum): a pool this service already monitors moves to the name given now.
        if let Some(metrics) = active.relabel(&self.service, &pool, &self.pool_name) {
            return Ok(metrics);
        }

        // Pool names are few and live as long as the process's metrics; a static str keeps
        // the recording path free of reference counting.
        let metrics = DatabaseMetrics::from_parts(Parts {
            catalog,
            pool_name: Some(intern(&self.pool_name)),
            counts_created: P::COUNTS_CREATED,
            poll_interval: self.poll_interval,
            slow_query_threshold: self.slow_query_threshold,
            label_limit: self.label_limit,
            recorder: None,
        });
        // Describes the catalog and registers the pool series, so that they render at once.
        let _series = metrics.pool_series();
        metrics.spawn_poller(&runtime, &pool);
        active.register(self.service, self.pool_name, &pool, &metrics);
        Ok(metrics)
    }
}
