//! One call wires a service: [`monitor_database`] returns the metrics, the tracked pool and the
//! health checker of one pool, from one service name and one pool label.

use crate::drivers::{DefaultPool, HealthCheckable};
use crate::error::Error;
use crate::health::checker::DatabaseHealthChecker;
use crate::metrics::{DatabaseMetrics, DatabaseMetricsBuilder};
use crate::pool::tracked::TrackedPool;

/// What a service needs to observe one pool: from [`monitor_database`] or
/// [`DatabaseMetricsBuilder::build_monitored`]. Every field was made from the same service name
/// and pool label. Cheap to clone.
#[derive(Clone, Debug)]
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub struct MonitoredDatabase<P: HealthCheckable = DefaultPool> {
    /// What tracked calls record into: give it to the repositories (`#[metrics]` field).
    pub metrics: DatabaseMetrics,
    /// The pool, with its checkouts counted and timed: what the repositories should use.
    pub pool: TrackedPool<P>,
    /// The health checks of the pool and its database (`/healthz`, `/health/detailed`).
    pub health: DatabaseHealthChecker,
}

/// Sets up everything for one pool of `service` in one call: its metrics (every metric
/// described, the pool gauges polled), a [`TrackedPool`] (checkouts counted and timed) and a
/// [`DatabaseHealthChecker`], all under the service name `service` and the pool label
/// `"default"`. Needs a Tokio runtime (it starts the pool poller).
///
/// The same as `DatabaseMetrics::builder(pool, service).build_monitored()`; the builder has
/// the options (pool label, poll interval, health settings, the `function` label).
///
/// ```no_run
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # async fn run(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let db = dbmetrics::monitor_database(&pool, "content_service")?;
/// let client = db.pool.get().await?; // counted and timed, pool="default"
/// client.query("SELECT 1", &[]).await?;
/// let summary = db.health.get_health_summary().await;
/// # let _ = (summary, db.metrics);
/// # Ok(()) }
/// ```
///
/// # Errors
/// The errors of [`setup_database_monitoring`](crate::setup_database_monitoring):
/// [`Error::InvalidName`], [`Error::NoRuntime`], [`Error::DuplicatePool`],
/// [`Error::ConflictingSetup`].
pub fn monitor_database<P: HealthCheckable>(
    pool: &P,
    service: &str,
) -> Result<MonitoredDatabase<P>, Error> {
    DatabaseMetrics::builder(pool, service).build_monitored()
}

impl<P: HealthCheckable> DatabaseMetricsBuilder<P> {
    /// Builds the metrics ([`build`](Self::build)), and with them the tracked pool under the
    /// same pool label and the health checker (with
    /// [`health_config`](Self::health_config)) under the same service name.
    ///
    /// # Errors
    /// Those of [`build`](Self::build), and [`Error::HealthConfig`] for invalid health
    /// settings (checked first: nothing is started then).
    pub fn build_monitored(self) -> Result<MonitoredDatabase<P>, Error> {
        // Validated before anything starts.
        let checker = DatabaseHealthChecker::with_config(
            self.pool.clone(),
            self.service(),
            self.health.clone(),
        )?;
        let pool = self.pool.clone();
        let pool_name = self.pool_name.clone();
        let metrics = self.build()?;
        let tracked = TrackedPool::new(pool, &metrics, &pool_name);
        Ok(MonitoredDatabase {
            metrics,
            pool: tracked,
            health: checker,
        })
    }
}
