//! Pool monitoring: the poller that mirrors `Pool::status()` into gauges, and [`TrackedPool`],
//! whose checkouts count acquisitions, releases, wait and use time, and timeouts.
//!
//! Mapping from deadpool's [`deadpool_postgres::Status`]:
//!
//! | gauge | deadpool |
//! |---|---|
//! | `connections_active` | `size - available` (connections checked out) |
//! | `connections_idle` | `available` |
//! | `connections_total` | `size` |
//! | `connections_max` | `max_size` |
//! | `connections_overflow` | `waiting` (callers queued because every slot is taken) |
//!
//! deadpool has no SQLAlchemy-style overflow connections beyond `max_size`; the nearest honest
//! meaning of "overflow" is demand beyond capacity, which is what `waiting` counts.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError, Status};
use metrics::{Counter, Gauge, Histogram, Label};

use crate::catalog::{Catalog, Metric};
use crate::classify::timeout_stage;
use crate::monitor::{
    DatabaseMetrics, Inner, intern, register_counter, register_gauge, register_histogram,
};

/// The registered series of one pool label.
pub(crate) struct PoolHandles {
    active: Gauge,
    idle: Gauge,
    total: Gauge,
    max: Gauge,
    overflow: Gauge,
    acquired: Counter,
    released: Counter,
    created: Counter,
    wait: Histogram,
    use_time: Histogram,
    timeouts: [Counter; 3],
}

impl PoolHandles {
    /// Registers every pool series of `pool` (so they render at once, before any sample).
    pub(crate) fn new(catalog: &Catalog, pool: &'static str) -> Arc<Self> {
        let labels = || vec![Label::from_static_parts("pool", pool)];
        let gauge = |m| register_gauge(catalog.name(m), labels());
        let counter = |m| {
            let c = register_counter(catalog.name(m), labels());
            c.increment(0);
            c
        };
        let histogram = |m| register_histogram(catalog.name(m), labels());
        let timeouts = ["wait", "create", "recycle"].map(|stage| {
            let c = register_counter(
                catalog.name(Metric::ConnectionTimeouts),
                vec![
                    Label::from_static_parts("pool", pool),
                    Label::from_static_parts("stage", stage),
                ],
            );
            c.increment(0);
            c
        });
        Arc::new(Self {
            active: gauge(Metric::ConnectionsActive),
            idle: gauge(Metric::ConnectionsIdle),
            total: gauge(Metric::ConnectionsTotal),
            max: gauge(Metric::ConnectionsMax),
            overflow: gauge(Metric::ConnectionsOverflow),
            acquired: counter(Metric::ConnectionsAcquired),
            released: counter(Metric::ConnectionsReleased),
            created: counter(Metric::ConnectionsCreated),
            wait: histogram(Metric::ConnectionWait),
            use_time: histogram(Metric::ConnectionUse),
            timeouts,
        })
    }

    fn set_status(&self, status: Status) {
        self.active
            .set(status.size.saturating_sub(status.available) as f64);
        self.idle.set(status.available as f64);
        self.total.set(status.size as f64);
        self.max.set(status.max_size as f64);
        self.overflow.set(status.waiting as f64);
    }

    fn set_closed(&self) {
        for gauge in [
            &self.active,
            &self.idle,
            &self.total,
            &self.max,
            &self.overflow,
        ] {
            gauge.set(0.0);
        }
    }

    fn count_timeout(&self, err: &PoolError) {
        if let PoolError::Timeout(kind) = err {
            let i = match timeout_stage(*kind) {
                "wait" => 0,
                "create" => 1,
                _ => 2,
            };
            self.timeouts[i].increment(1);
        }
    }
}

/// The poller task: one per monitored pool.
pub(crate) struct PoolMonitor;

impl PoolMonitor {
    pub(crate) fn spawn(
        runtime: &tokio::runtime::Handle,
        pool: &Pool,
        metrics: &DatabaseMetrics,
        interval: Duration,
    ) {
        let Some(handles) = metrics.inner.pool.clone() else {
            return;
        };
        // Set the gauges now, so they are right before the first tick.
        handles.set_status(pool.status());
        let weak_pool = pool.weak();
        let weak_metrics: Weak<Inner> = metrics.downgrade();
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if weak_metrics.strong_count() == 0 {
                    // Nobody can read these metrics through dbmetrics any more; leave the
                    // last values and stop.
                    return;
                }
                match weak_pool.upgrade() {
                    Some(pool) if !pool.is_closed() => handles.set_status(pool.status()),
                    _ => {
                        handles.set_closed();
                        return;
                    }
                }
            }
        });
    }
}

/// A deadpool-postgres pool whose checkouts are counted and timed under a `pool` label.
///
/// Made by [`crate::InfrastructureEnhancer::enhance_pool`]. `get()` counts
/// `connections_acquired_total` and records `connection_wait_seconds`; dropping the returned
/// [`TrackedConnection`] counts `connections_released_total` and records
/// `connection_use_seconds`. Pool timeouts count `connection_timeouts_total{stage}`; a checkout
/// cancelled while waiting counts nothing. Cheap to clone.
#[derive(Clone)]
pub struct TrackedPool {
    pool: Pool,
    name: &'static str,
    handles: Arc<PoolHandles>,
    // Keeps the service's metrics (and so its poller) alive as long as the pool is used.
    _metrics: DatabaseMetrics,
}

impl std::fmt::Debug for TrackedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedPool")
            .field("pool", &self.name)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl TrackedPool {
    pub(crate) fn new(pool: Pool, metrics: DatabaseMetrics, name: &str) -> Self {
        let name = intern(name);
        let handles = match &metrics.inner.pool {
            Some(h) if metrics.pool_name() == name => h.clone(),
            _ => PoolHandles::new(metrics.catalog(), name),
        };
        Self {
            pool,
            name,
            handles,
            _metrics: metrics,
        }
    }

    /// Checks a connection out of the pool, counting and timing it.
    ///
    /// # Errors
    /// The pool's own error, unchanged; timeouts are counted by stage first.
    pub async fn get(&self) -> Result<TrackedConnection, PoolError> {
        let start = Instant::now();
        match self.pool.get().await {
            Ok(object) => {
                let acquired_at = Instant::now();
                self.handles.acquired.increment(1);
                self.handles
                    .wait
                    .record(acquired_at.duration_since(start).as_secs_f64());
                let m = Object::metrics(&object);
                if m.recycle_count == 0 && m.recycled.is_none() {
                    self.handles.created.increment(1);
                }
                Ok(TrackedConnection {
                    object,
                    handles: self.handles.clone(),
                    acquired_at,
                })
            }
            Err(err) => {
                self.handles.count_timeout(&err);
                Err(err)
            }
        }
    }

    /// The underlying deadpool pool (checkouts through it are not counted).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The `pool` label of this pool's metrics.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The pool's status, as deadpool reports it.
    pub fn status(&self) -> Status {
        self.pool.status()
    }
}

/// A connection checked out of a [`TrackedPool`]; derefs to the deadpool client.
///
/// Dropping it returns the connection to the pool and records the release, also when the task
/// holding it is cancelled or panics.
pub struct TrackedConnection {
    object: Object,
    handles: Arc<PoolHandles>,
    acquired_at: Instant,
}

impl std::fmt::Debug for TrackedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedConnection")
            .field("held_for", &self.acquired_at.elapsed())
            .finish_non_exhaustive()
    }
}

impl Deref for TrackedConnection {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.object
    }
}

impl DerefMut for TrackedConnection {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.object
    }
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.handles.released.increment(1);
        self.handles
            .use_time
            .record(self.acquired_at.elapsed().as_secs_f64());
    }
}

impl DatabaseMetrics {
    /// The body of one pool-poller tick: reads `pool.status()` and sets the five pool gauges,
    /// exactly as the poller does every interval. Does nothing for metrics set up without a
    /// pool. Not public API: it exists so that benchmarks can measure the tick in isolation.
    #[doc(hidden)]
    pub fn __poll_tick(&self, pool: &Pool) {
        if let Some(handles) = &self.inner.pool {
            handles.set_status(pool.status());
        }
    }
}
