//! [`TrackedPool`] and [`TrackedConnection`]: checkouts counted and timed under a pool label.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::series::Checkouts;
use super::{LeakWatch, MonitoredPool, PoolActivity, PoolStatus, Waiter};
use crate::drivers::DefaultPool;
use crate::metrics::DatabaseMetrics;

/// A pool whose checkouts are counted and timed under a `pool` label.
///
/// Made by [`crate::InfrastructureEnhancer::enhance_pool`]:
///
/// - [`TrackedPool::get`] counts `connections_acquired_total` and records
///   `connection_wait_seconds` for each successful checkout, and counts
///   `connections_created_total` when the connection was newly opened for it;
/// - dropping the returned [`TrackedConnection`] counts `connections_released_total` and
///   records `connection_use_seconds`, on every path: normal drop, `?`, the holding task
///   being cancelled or panicking;
/// - a failed checkout counts `connection_timeouts_total{stage}` when it is a pool timeout
///   (stage `wait`, `create` or `recycle`) and nothing else; a checkout whose future is
///   dropped while it waits (a `tokio::time::timeout` around `get`) counts
///   `connection_acquire_cancelled_total` and nothing else;
/// - with [`TrackedPool::leak_threshold`] set, a connection held longer than the threshold is
///   logged once (`WARN`, target `dbmetrics`, with the source location of the `get()` call that
///   checked it out) and counted in `connection_leaks_total`: when it is released, or by the
///   pool poller's next tick while it is still held (so within the threshold plus the poll
///   interval).
///
/// So at any quiet moment `acquired_total == released_total` and the wait histogram's count
/// equals `acquired_total`.
///
/// Callers inside [`TrackedPool::get`] are counted as waiting: for drivers that do not count
/// waiting callers themselves (sqlx, bb8), that count is the `connections_overflow` gauge, and
/// checkouts made on the pool directly, not through the tracked pool, are not seen in it.
///
/// The pool label also gets the five gauges: enhancing the pool that the metrics already
/// monitor shares that poller, and when `name` differs from the label it was set up with, the
/// pool's series move to `name` (one pool is published under one label; the old label's gauges
/// drop to 0). Another pool starts a poller of its own (like
/// [`crate::DatabaseMetricsBuilder::build`] with `.pool_name(name)`, same interval), which
/// lives as long as this tracked pool's clones or the pool. Cheap to clone.
///
/// ```no_run
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// use dbmetrics::{create_infrastructure_enhancer, setup_database_monitoring};
///
/// let metrics = setup_database_monitoring(&pool, "batch_service")?;
/// let enhancer = create_infrastructure_enhancer(metrics.clone());
/// let tracked = enhancer.enhance_pool(pool.clone(), "default");
///
/// let client = tracked.get().await?; // acquired_total +1, wait time recorded
/// let rows = client.query("SELECT 1", &[]).await?; // derefs to the deadpool client
/// assert_eq!(rows.len(), 1);
/// drop(client); // released_total +1, use time recorded
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TrackedPool<P: MonitoredPool = DefaultPool> {
    pool: P,
    // The metrics of this pool label: its series, and its poller kept running while the pool
    // is used.
    monitor: DatabaseMetrics,
    // Waiting callers and watched checkouts of the label (shared with its poller).
    activity: Arc<PoolActivity>,
    leak_threshold: Option<Duration>,
}

impl<P: MonitoredPool> std::fmt::Debug for TrackedPool<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedPool")
            .field("pool", &self.monitor.pool_name())
            .field("status", &self.pool.status())
            .field("leak_threshold", &self.leak_threshold)
            .finish()
    }
}

impl<P: MonitoredPool> TrackedPool<P> {
    pub(crate) fn new(pool: P, metrics: &DatabaseMetrics, name: &str) -> Self {
        // The registry of monitored pools answers: the metrics' own (label, pool) gives back
        // the same handle and poller; the same pool under another label moves to `name` (one
        // pool, one label); a new pool starts a poller.
        let monitor = DatabaseMetrics::builder(&pool, metrics.service())
            .pool_name(name)
            .defaults_from(metrics)
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(
                    target: "dbmetrics",
                    service = metrics.service(),
                    pool = name,
                    %error,
                    "no pool gauges for this tracked pool; its checkouts are still counted"
                );
                metrics.without_poller(name)
            });
        let activity = monitor
            .pool_activity()
            .cloned()
            .unwrap_or_else(|| Arc::new(PoolActivity::new(metrics.service())));
        Self {
            pool,
            monitor,
            activity,
            leak_threshold: None,
        }
    }

    /// Logs and counts connections held longer than `threshold` (off by default): one
    /// `WARN` (target `dbmetrics`) per such checkout, naming the source location of the
    /// [`get`](TrackedPool::get) call that made it, and
    /// `{service}_database_connection_leaks_total{pool}` +1. Checked when the connection is
    /// released and on every tick of the pool poller while it is held. `None` turns it off.
    ///
    /// Costs one short mutex per checkout and release while set; nothing when off.
    pub fn leak_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.leak_threshold = threshold.into();
        self
    }

    /// Checks a connection out of the pool, counting and timing it.
    ///
    /// Cancel-safe: if this future is dropped before it completes, no connection is held and
    /// only `connection_acquire_cancelled_total` is counted.
    ///
    /// # Errors
    /// The pool's own error, unchanged; a timeout is counted under its stage first.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<TrackedConnection<P>, P::Error>> + Send + '_ {
        self.get_at(Location::caller())
    }

    /// [`TrackedPool::get`], for a checkout made on behalf of the code at `location`.
    pub(crate) async fn get_at(
        &self,
        location: &'static Location<'static>,
    ) -> Result<TrackedConnection<P>, P::Error> {
        let start = Instant::now();
        let series = self.monitor.pool_series();
        let checkouts = series.as_ref().map(|s| &*s.checkouts);
        let waiter = Waiter::new(&self.activity, checkouts);
        let result = self.pool.checkout().await;
        // No await from here on: the counts and the guard that undoes them appear together.
        waiter.done();
        let Some(checkouts) = series.as_ref().map(|s| &s.checkouts) else {
            // Not reached: a tracked pool's metrics always monitor a pool label.
            return result.map(|connection| TrackedConnection {
                connection,
                checkouts: None,
                acquired_at: Instant::now(),
                leak: None,
            });
        };
        match result {
            Ok(connection) => {
                let acquired_at = Instant::now();
                let created = P::is_new(&connection);
                let leak = self.leak_threshold.map(|threshold| {
                    LeakWatch::start(self.activity.clone(), threshold, location, acquired_at)
                });
                let connection = TrackedConnection {
                    connection,
                    checkouts: Some(checkouts.clone()),
                    acquired_at,
                    leak,
                };
                checkouts.acquired.increment(1);
                checkouts
                    .wait
                    .record(acquired_at.duration_since(start).as_secs_f64());
                if created && let Some(counter) = &checkouts.created {
                    counter.increment(1);
                }
                Ok(connection)
            }
            Err(err) => {
                if let Some(stage) = P::timeout_stage(&err) {
                    checkouts.count_timeout(stage);
                }
                Err(err)
            }
        }
    }

    /// The underlying pool (checkouts through it are not counted; the gauges still see them).
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// The `pool` label of this pool's metrics.
    pub fn name(&self) -> &str {
        self.monitor.pool_name()
    }

    /// The pool's numbers now (`None` once it is closed).
    pub fn status(&self) -> Option<PoolStatus> {
        self.pool.status()
    }
}

/// A connection checked out of a [`TrackedPool`]; derefs to the driver's connection (deadpool:
/// the `Object`, so `client.query(..)` reads as without dbmetrics).
///
/// Dropping it returns the connection to the pool and records the release, also when the task
/// holding it is cancelled or panics.
pub struct TrackedConnection<P: MonitoredPool = DefaultPool> {
    connection: P::Connection,
    checkouts: Option<Arc<Checkouts>>,
    acquired_at: Instant,
    leak: Option<LeakWatch>,
}

impl<P: MonitoredPool> std::fmt::Debug for TrackedConnection<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedConnection")
            .field("held_for", &self.acquired_at.elapsed())
            .finish_non_exhaustive()
    }
}

impl<P: MonitoredPool> Deref for TrackedConnection<P> {
    type Target = P::Target;

    fn deref(&self) -> &P::Target {
        P::target(&self.connection)
    }
}

impl<P: MonitoredPool> DerefMut for TrackedConnection<P> {
    fn deref_mut(&mut self) -> &mut P::Target {
        P::target_mut(&mut self.connection)
    }
}

impl<P: MonitoredPool> Drop for TrackedConnection<P> {
    fn drop(&mut self) {
        if let Some(checkouts) = &self.checkouts {
            checkouts.released.increment(1);
            checkouts
                .use_time
                .record(self.acquired_at.elapsed().as_secs_f64());
        }
        if let Some(leak) = self.leak.take() {
            leak.release(self.checkouts.as_deref());
        }
    }
}
