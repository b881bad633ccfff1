//! [`TrackedPool`] and [`TrackedConnection`]: checkouts counted and timed under a pool label.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cleanup::Cleanup;
use super::series::Checkouts;
use super::{LeakWatch, MonitoredPool, PoolActivity, PoolStatus, Waiter};
use crate::drivers::DefaultPool;
use crate::metrics::DatabaseMetrics;
use crate::record::unfinished::dropping_unfinished;

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
/// **Cancellation cleans up.** A connection dropped by a tracked call that did not finish (its
/// future dropped: a timeout, a client gone; or a panic) may still run a statement on the
/// server. It is not handed to the next caller as it is: a task checks it with an empty query
/// (at most 250 ms), returns it to the pool when it answers (it was idle), and otherwise takes
/// it out of the pool, sends the driver's cancel request and closes it, counting
/// `connections_discarded_total{reason}` and `queries_cancelled_on_server_total` (sqlx has no
/// cancel request; bb8 cannot take a connection out of its pool and drains it instead). See the
/// README ("Reliability") for what is covered and what is not, and
/// [`TrackedPool::cancel_on_drop`] to turn it off.
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
    cancel_on_drop: bool,
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
            .field("cancel_on_drop", &self.cancel_on_drop)
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
            cancel_on_drop: true,
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

    /// Whether connections left by cancelled or panicking calls are checked, their statements
    /// cancelled on the server, and busy ones closed (the default, `true`); `false` returns
    /// them to the pool as they are, for code that handles cancellation itself.
    ///
    /// ```no_run
    /// # extern crate dbmetrics_runtime as dbmetrics;
    /// # fn demo(pool: deadpool_postgres::Pool, metrics: dbmetrics::DatabaseMetrics) {
    /// let tracked = dbmetrics::create_infrastructure_enhancer(metrics)
    ///     .enhance_pool(pool, "default")
    ///     .cancel_on_drop(false);
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_on_drop(mut self, on: bool) -> Self {
        self.cancel_on_drop = on;
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
        let result = self.checkout().await;
        // No await from here on: the counts and the guard that undoes them appear together.
        waiter.done();
        let Some(checkouts) = series.as_ref().map(|s| &s.checkouts) else {
            // Not reached: a tracked pool's metrics always monitor a pool label.
            return result.map(|connection| TrackedConnection {
                connection: Some(connection),
                checkouts: None,
                acquired_at: Instant::now(),
                leak: None,
                cancel_on_drop: self.cancel_on_drop,
                unfinished: None,
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
                    connection: Some(connection),
                    checkouts: Some(checkouts.clone()),
                    acquired_at,
                    cancel_on_drop: self.cancel_on_drop,
                    unfinished: None,
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

    /// The pool's checkout, inside a `pool.acquire` span with the feature `tracing`.
    #[cfg(feature = "tracing")]
    async fn checkout(&self) -> Result<P::Connection, P::Error> {
        let span = crate::record::acquire_span(self.name());
        let result = tracing::Instrument::instrument(self.pool.checkout(), span.clone()).await;
        if let Err(err) = &result {
            crate::record::record_error(&span, P::error_type(err));
        }
        result
    }

    /// The pool's checkout.
    #[cfg(not(feature = "tracing"))]
    fn checkout(&self) -> impl std::future::Future<Output = Result<P::Connection, P::Error>> {
        self.pool.checkout()
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
/// holding it is cancelled or panics. Dropped by a tracked call that did not finish, or while a
/// panic unwinds, it is checked before anyone else gets it (see [`TrackedPool`],
/// "Cancellation cleans up").
pub struct TrackedConnection<P: MonitoredPool = DefaultPool> {
    // `Some` until dropped.
    connection: Option<P::Connection>,
    checkouts: Option<Arc<Checkouts>>,
    acquired_at: Instant,
    cancel_on_drop: bool,
    // Raised by a call that borrowed it and did not finish (`transaction::run`).
    unfinished: Option<Arc<AtomicBool>>,
    leak: Option<LeakWatch>,
}

impl<P: MonitoredPool> TrackedConnection<P> {
    fn connection(&self) -> &P::Connection {
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("a TrackedConnection holds its connection until it is dropped"),
        }
    }

    /// A flag that a call borrowing the connection raises when it does not finish, so that
    /// dropping the connection checks it even when that drop is an ordinary one.
    #[cfg(any(feature = "deadpool", feature = "sqlx", feature = "bb8"))]
    pub(crate) fn unfinished_flag(&mut self) -> Arc<AtomicBool> {
        self.unfinished.get_or_insert_with(Arc::default).clone()
    }
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
        P::target(self.connection())
    }
}

impl<P: MonitoredPool> DerefMut for TrackedConnection<P> {
    fn deref_mut(&mut self) -> &mut P::Target {
        match &mut self.connection {
            Some(connection) => P::target_mut(connection),
            None => unreachable!("a TrackedConnection holds its connection until it is dropped"),
        }
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
        if let Some(connection) = self.connection.take() {
            let flagged = (self.unfinished.as_ref()).is_some_and(|f| f.load(Ordering::Relaxed));
            if self.cancel_on_drop && (flagged || dropping_unfinished()) {
                P::release_unfinished(connection, Cleanup::new(self.checkouts.take()));
            }
            // else dropped here: back to the pool
        }
    }
}
