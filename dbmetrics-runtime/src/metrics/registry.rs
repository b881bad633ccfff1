//! The registry of monitored pools: which (service, pool label) pairs are monitored, and for
//! which pool, so that a second setup shares the first handle (and its one poller).

use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use super::handle::{DatabaseMetrics, Inner};
use crate::pool::MonitoredPool;

static ACTIVE: Mutex<Registry> = Mutex::new(Registry(Vec::new()));

/// The registry, locked.
pub(super) fn lock() -> MutexGuard<'static, Registry> {
    let mut registry = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
    registry.0.retain(Registration::is_current);
    registry
}

pub(super) struct Registry(Vec<Registration>);

/// What [`Registry::find`] found under a (service, pool label).
pub(super) enum Found {
    Nothing,
    /// The label is monitored for this pool: its handle.
    Same(DatabaseMetrics),
    /// The label is taken by another open pool.
    OtherPool,
}

impl Registry {
    pub(super) fn find<P: MonitoredPool>(&self, service: &str, pool_name: &str, pool: &P) -> Found {
        let Some(existing) = self
            .0
            .iter()
            .find(|r| r.service == service && r.pool_name == pool_name)
        else {
            return Found::Nothing;
        };
        if !existing.is_for(pool) {
            return Found::OtherPool;
        }
        match existing.metrics.upgrade() {
            Some(inner) => Found::Same(DatabaseMetrics::from_inner(inner)),
            None => Found::Nothing,
        }
    }

    /// The handle under which `service` monitors `pool`, whatever its label.
    pub(super) fn monitoring<P: MonitoredPool>(
        &self,
        service: &str,
        pool: &P,
    ) -> Option<DatabaseMetrics> {
        self.0
            .iter()
            .filter(|r| r.service == service && r.is_for(pool))
            .find_map(|r| r.metrics.upgrade())
            .map(DatabaseMetrics::from_inner)
    }

    /// A handle of any pool `service` monitors (they share the settings that hold for the
    /// whole service).
    pub(super) fn any_of(&self, service: &str) -> Option<DatabaseMetrics> {
        self.0
            .iter()
            .filter(|r| r.service == service)
            .find_map(|r| r.metrics.upgrade())
            .map(DatabaseMetrics::from_inner)
    }

    /// When `service` monitors `pool` under another label than `name`, and no other open pool
    /// of the service uses `name`: moves it to `name` and returns its handle. When `name` is
    /// taken by another pool, logs why the pool keeps its label and returns its handle.
    pub(super) fn relabel<P: MonitoredPool>(
        &mut self,
        service: &str,
        pool: &P,
        name: &str,
    ) -> Option<DatabaseMetrics> {
        let taken = self
            .0
            .iter()
            .any(|r| r.service == service && r.pool_name == name && !r.is_for(pool));
        let registration = self
            .0
            .iter_mut()
            .find(|r| r.service == service && r.is_for(pool))?;
        let metrics = DatabaseMetrics::from_inner(registration.metrics.upgrade()?);
        if registration.pool_name == name {
            return Some(metrics);
        }
        if taken {
            tracing::error!(
                target: "dbmetrics",
                service,
                pool = %registration.pool_name,
                requested = name,
                "this pool keeps its pool label: the requested one already labels another open \
                 pool of this service; give one of the two pools another name"
            );
            return Some(metrics);
        }
        tracing::info!(
            target: "dbmetrics",
            service,
            from = %registration.pool_name,
            to = name,
            "pool label changed: this pool's series continue under the new label"
        );
        metrics.relabel(crate::intern::intern(name));
        registration.pool_name = name.to_owned();
        Some(metrics)
    }

    pub(super) fn register<P: MonitoredPool>(
        &mut self,
        service: String,
        pool_name: String,
        pool: &P,
        metrics: &DatabaseMetrics,
    ) {
        metrics.set_pool_ref(pool);
        self.0.push(Registration {
            service,
            pool_name,
            metrics: metrics.downgrade(),
        });
    }
}

struct Registration {
    service: String,
    pool_name: String,
    // Weak: the registry never keeps metrics (nor, through them, a pool) alive.
    metrics: Weak<Inner>,
}

impl Registration {
    /// Still in force: somebody holds the metrics, and the pool is open. A closed or dropped
    /// pool frees its label for a new pool (a reconnect after `close()`).
    fn is_current(&self) -> bool {
        self.metrics
            .upgrade()
            .is_some_and(|inner| inner.pool_ref().is_some_and(|p| p.is_open()))
    }

    fn is_for<P: MonitoredPool>(&self, pool: &P) -> bool {
        self.metrics
            .upgrade()
            .is_some_and(|inner| inner.pool_ref().is_some_and(|p| p.is(pool)))
    }
}
