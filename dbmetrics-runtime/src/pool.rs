//! Pool monitoring: the poller that mirrors `Pool::status()` into gauges, and [`TrackedPool`],
//! whose checkouts count acquisitions, releases, new connections, wait and use time, and
//! timeouts.
//!
//! # Gauges
//!
//! Mapping from deadpool's [`deadpool_postgres::Status`]:
//!
//! | gauge | deadpool |
//! |---|---|
//! | `connections_active` | `size - available`: connections checked out (or being recycled for a caller) |
//! | `connections_idle` | `available`: open connections nobody holds |
//! | `connections_open` | `size`: open connections, idle or checked out |
//! | `connections_max` | `max_size`: the configured maximum |
//! | `connections_overflow` | `waiting`: callers beyond the open connections (queued for a slot, or waiting while a new connection is opened for them) |
//!
//! deadpool has no SQLAlchemy-style overflow connections beyond `max_size`; the nearest honest
//! meaning of "overflow" is demand beyond what is open, which is what `waiting` counts.
//!
//! # The poller
//!
//! One Tokio task per monitored `(service, pool label)`. Each tick reads `Pool::status()` (one
//! short mutex and an atomic load inside deadpool) and sets the five gauges: O(1), whatever
//! the pool size or traffic. It stops by itself
//! - when the pool is closed ([`deadpool_postgres::Pool::close`]) or every clone of it is
//!   dropped: the gauges are set to 0 first;
//! - at once when the last [`DatabaseMetrics`] handle of the monitored pool is dropped (a
//!   [`TrackedPool`] made from it holds one): the gauges keep their last values.
//!
//! It holds the pool weakly, so it never keeps a pool open.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError, Status, TimeoutType};
use metrics::{Counter, Gauge, Histogram, Label};
use tokio::sync::watch;

use crate::catalog::{Catalog, Metric};
use crate::classify::timeout_stage;
use crate::monitor::{
    DatabaseMetrics, intern, register_counter, register_gauge, register_histogram,
};

/// Every series of one monitored pool label: the gauges the poller sets, and the checkout
/// series its tracked pools record into.
pub(crate) struct PoolHandles {
    gauges: PoolGauges,
    pub(crate) checkouts: Arc<Checkouts>,
}

impl PoolHandles {
    /// Registers every pool series of `pool` (so they render at once, before any sample).
    pub(crate) fn new(catalog: &Catalog, pool: &'static str) -> Arc<Self> {
        Arc::new(Self {
            gauges: PoolGauges::new(catalog, pool),
            checkouts: Checkouts::new(catalog, pool),
        })
    }
}

/// The five gauges set from `Pool::status()`.
struct PoolGauges {
    active: Gauge,
    idle: Gauge,
    total: Gauge,
    max: Gauge,
    overflow: Gauge,
}

impl PoolGauges {
    fn new(catalog: &Catalog, pool: &'static str) -> Self {
        let gauge = |m| {
            register_gauge(
                catalog.name(m),
                vec![Label::from_static_parts("pool", pool)],
            )
        };
        Self {
            active: gauge(Metric::ConnectionsActive),
            idle: gauge(Metric::ConnectionsIdle),
            total: gauge(Metric::ConnectionsOpen),
            max: gauge(Metric::ConnectionsMax),
            overflow: gauge(Metric::ConnectionsOverflow),
        }
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
}

/// The series a [`TrackedPool`] records into.
pub(crate) struct Checkouts {
    acquired: Counter,
    released: Counter,
    created: Counter,
    wait: Histogram,
    use_time: Histogram,
    /// By stage, in [`TIMEOUT_STAGES`] order.
    timeouts: [Counter; 3],
}

const TIMEOUT_STAGES: [TimeoutType; 3] =
    [TimeoutType::Wait, TimeoutType::Create, TimeoutType::Recycle];

impl Checkouts {
    /// Registers the checkout series of `pool`; counters start at 0 so they render at once.
    pub(crate) fn new(catalog: &Catalog, pool: &'static str) -> Arc<Self> {
        let labels = || vec![Label::from_static_parts("pool", pool)];
        let counter = |m| {
            let c = register_counter(catalog.name(m), labels());
            c.increment(0);
            c
        };
        let histogram = |m| register_histogram(catalog.name(m), labels());
        let timeouts = TIMEOUT_STAGES.map(|kind| {
            let c = register_counter(
                catalog.name(Metric::ConnectionTimeouts),
                vec![
                    Label::from_static_parts("pool", pool),
                    Label::from_static_parts("stage", timeout_stage(kind)),
                ],
            );
            c.increment(0);
            c
        });
        Arc::new(Self {
            acquired: counter(Metric::ConnectionsAcquired),
            released: counter(Metric::ConnectionsReleased),
            created: counter(Metric::ConnectionsCreated),
            wait: histogram(Metric::ConnectionWait),
            use_time: histogram(Metric::ConnectionUse),
            timeouts,
        })
    }

    fn count_timeout(&self, err: &PoolError) {
        if let PoolError::Timeout(kind) = err {
            let stage = match kind {
                TimeoutType::Wait => 0,
                TimeoutType::Create => 1,
                TimeoutType::Recycle => 2,
            };
            self.timeouts[stage].increment(1);
        }
    }
}

/// The poller task: one per monitored `(service, pool label)`.
pub(crate) struct PoolMonitor;

impl PoolMonitor {
    /// Sets the gauges from `pool` now, then spawns the task that keeps them current until
    /// the pool is closed or `stop` (the metrics' sender) is dropped. Spawns nothing for a
    /// pool that is already closed.
    pub(crate) fn spawn(
        runtime: &tokio::runtime::Handle,
        pool: &Pool,
        handles: Arc<PoolHandles>,
        stop: watch::Receiver<()>,
        interval: Duration,
    ) {
        if pool.is_closed() {
            handles.gauges.set_closed();
            return;
        }
        handles.gauges.set_status(pool.status());
        let weak_pool = pool.weak();
        let mut stop = stop;
        runtime.spawn(async move {
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    // Nothing is ever sent: this resolves when the last DatabaseMetrics handle
                    // drops the sender. The gauges keep their last values.
                    _ = stop.changed() => return,
                    _ = ticker.tick() => {}
                }
                match weak_pool.upgrade() {
                    Some(pool) if !pool.is_closed() => handles.gauges.set_status(pool.status()),
                    _ => {
                        handles.gauges.set_closed();
                        return;
                    }
                }
            }
        });
    }
}

/// A deadpool-postgres pool whose checkouts are counted and timed under a `pool` label.
///
/// Made by [`crate::InfrastructureEnhancer::enhance_pool`]:
///
/// - [`TrackedPool::get`] counts `connections_acquired_total` and records
///   `connection_wait_seconds` for each successful checkout, and counts
///   `connections_created_total` when the connection was newly opened for it (deadpool's
///   [`Object::metrics`] says it was never recycled);
/// - dropping the returned [`TrackedConnection`] counts `connections_released_total` and
///   records `connection_use_seconds`, on every path: normal drop, `?`, the holding task
///   being cancelled or panicking;
/// - a failed checkout counts `connection_timeouts_total{stage}` for
///   `PoolError::Timeout(Wait | Create | Recycle)` and nothing else; a checkout whose future is
///   dropped while it waits (a `tokio::time::timeout` around `get`) counts nothing at all.
///
/// So at any quiet moment `acquired_total == released_total` and the wait histogram's count
/// equals `acquired_total`.
///
/// The pool label also gets the five gauges: enhancing the pool that the metrics already
/// monitor under the same label shares that poller; any other label starts a poller of its
/// own (like [`crate::DatabaseMetricsBuilder::build`] with `.pool_name(name)`, same interval),
/// which lives as long as this tracked pool's clones or the pool. Cheap to clone.
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
pub struct TrackedPool {
    pool: Pool,
    name: &'static str,
    checkouts: Arc<Checkouts>,
    // The metrics of this pool label: keeps its poller running while the pool is used.
    _monitor: Option<DatabaseMetrics>,
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
    pub(crate) fn new(pool: Pool, metrics: &DatabaseMetrics, name: &str) -> Self {
        // One pool is published under one label: a pool this service already monitors keeps
        // its label (two labels would count its connections twice in every sum).
        if let Some(existing) = crate::monitor::monitor_of(metrics.service(), &pool)
            && existing.pool_name() != name
            && let Some(handles) = existing.inner.pool.as_ref()
        {
            tracing::warn!(
                target: "dbmetrics",
                service = metrics.service(),
                requested = name,
                pool = existing.pool_name(),
                "this pool is already monitored under another pool label; its checkouts are \
                 counted under that label too"
            );
            return Self {
                pool,
                name: existing.inner.pool_name,
                checkouts: handles.checkouts.clone(),
                _monitor: Some(existing.clone()),
            };
        }
        // The registry of monitored pools answers: the metrics' own (label, pool) gives back
        // the same handle and poller; a new label starts a poller.
        let monitor = DatabaseMetrics::builder(&pool, metrics.service())
            .pool_name(name)
            .poll_interval(metrics.poll_interval())
            .slow_query_threshold(None)
            .build();
        match monitor {
            Ok(monitor) => match monitor.inner.pool.as_ref().map(|h| h.checkouts.clone()) {
                Some(checkouts) => Self {
                    pool,
                    name: monitor.inner.pool_name,
                    checkouts,
                    _monitor: Some(monitor),
                },
                None => Self::without_gauges(pool, metrics, name),
            },
            Err(error) => {
                tracing::warn!(
                    target: "dbmetrics",
                    service = metrics.service(),
                    pool = name,
                    %error,
                    "no pool gauges for this tracked pool; its checkouts are still counted"
                );
                Self::without_gauges(pool, metrics, name)
            }
        }
    }

    fn without_gauges(pool: Pool, metrics: &DatabaseMetrics, name: &str) -> Self {
        let name = intern(name);
        Self {
            pool,
            name,
            checkouts: Checkouts::new(metrics.catalog(), name),
            _monitor: None,
        }
    }

    /// Checks a connection out of the pool, counting and timing it.
    ///
    /// Cancel-safe: if this future is dropped before it completes, nothing is counted and no
    /// connection is held.
    ///
    /// # Errors
    /// The pool's own error, unchanged; a timeout is counted under its stage first.
    pub async fn get(&self) -> Result<TrackedConnection, PoolError> {
        let start = Instant::now();
        match self.pool.get().await {
            // No await from here on: the count and the guard that undoes it appear together.
            Ok(object) => {
                let acquired_at = Instant::now();
                let m = Object::metrics(&object);
                let created = m.recycle_count == 0 && m.recycled.is_none();
                let connection = TrackedConnection {
                    object,
                    checkouts: self.checkouts.clone(),
                    acquired_at,
                };
                self.checkouts.acquired.increment(1);
                self.checkouts
                    .wait
                    .record(acquired_at.duration_since(start).as_secs_f64());
                if created {
                    self.checkouts.created.increment(1);
                }
                Ok(connection)
            }
            Err(err) => {
                self.checkouts.count_timeout(&err);
                Err(err)
            }
        }
    }

    /// The underlying deadpool pool (checkouts through it are not counted; the gauges still
    /// see them).
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
    checkouts: Arc<Checkouts>,
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
        self.checkouts.released.increment(1);
        self.checkouts
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
            handles.gauges.set_status(pool.status());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    fn gauges(
        snapshot: Vec<(
            metrics_util::CompositeKey,
            Option<metrics::Unit>,
            Option<metrics::SharedString>,
            DebugValue,
        )>,
    ) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = snapshot
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Gauge(v) => Some((key.key().name().to_owned(), v.into_inner())),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn status_maps_to_the_gauges() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let catalog = Catalog::new("svc").unwrap();
            let gauges = PoolGauges::new(&catalog, "p");
            // 4 open, 1 idle, 2 more callers than open connections, at most 4.
            gauges.set_status(Status {
                max_size: 4,
                size: 4,
                available: 1,
                waiting: 2,
            });
        });
        assert_eq!(
            gauges(snapshotter.snapshot().into_vec()),
            vec![
                ("svc_database_connections_active".to_owned(), 3.0),
                ("svc_database_connections_idle".to_owned(), 1.0),
                ("svc_database_connections_max".to_owned(), 4.0),
                ("svc_database_connections_open".to_owned(), 4.0),
                ("svc_database_connections_overflow".to_owned(), 2.0),
            ]
        );
    }
}
