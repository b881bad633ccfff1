//! The registry of monitored pools: which (service, pool label) pairs are monitored, and for
//! which pool, so that a second setup shares the first handle (and its one poller); and the
//! label budget of each service, which all its handles share.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::handle::{DatabaseMetrics, Inner};
use crate::pool::MonitoredPool;
use crate::record::LabelBudget;

static ACTIVE: Mutex<Registry> = Mutex::new(Registry {
    pools: Vec::new(),
    budgets: Vec::new(),
});

/// The registry, locked.
pub(super) fn lock() -> MutexGuard<'static, Registry> {
    let mut registry = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
    registry.pools.retain(Registration::is_current);
    registry.budgets.retain(|b| b.budget.strong_count() > 0);
    registry
}

/// Called by `dbmetrics::exporter` once it has installed the global recorder: from now on
/// handles are resolved from it ([`super::epoch`]), and every monitored pool's series are
/// registered with it and its gauges set at once, not at each poller's next tick.
#[cfg(feature = "exporter")]
pub(crate) fn recorder_installed() {
    super::epoch::recorder_installed();
    let registry = lock();
    for registration in &registry.pools {
        if let Some(inner) = registration.metrics.upgrade() {
            DatabaseMetrics::from_inner(inner).publish_gauges();
        }
    }
}

pub(super) struct Registry {
    pools: Vec<Registration>,
    budgets: Vec<ServiceBudget>,
}

/// The label budget of one service, while one of its handles holds it.
struct ServiceBudget {
    service: String,
    budget: Weak<LabelBudget>,
    /// A setup (the builder) has fixed its limit; until then (budgets of
    /// `DatabaseMetrics::new` only) the first setup sets it.
    set_up: bool,
}

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
            .pools
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
        self.pools
            .iter()
            .filter(|r| r.service == service && r.is_for(pool))
            .find_map(|r| r.metrics.upgrade())
            .map(DatabaseMetrics::from_inner)
    }

    /// A handle of any pool `service` monitors (they share the settings that hold for the
    /// whole service).
    pub(super) fn any_of(&self, service: &str) -> Option<DatabaseMetrics> {
        self.pools
            .iter()
            .filter(|r| r.service == service)
            .find_map(|r| r.metrics.upgrade())
            .map(DatabaseMetrics::from_inner)
    }

    /// When `service` monitors `pool` under another label than `name`, and no other open pool
    /// of the service uses `name`: moves it to `name` (logged as a warning naming the service
    /// and both labels) and returns its handle. When `name` is taken by another pool (which
    /// the caller has ruled out), logs why the pool keeps its label and returns its handle.
    pub(super) fn relabel<P: MonitoredPool>(
        &mut self,
        service: &str,
        pool: &P,
        name: &str,
    ) -> Option<DatabaseMetrics> {
        let taken = self
            .pools
            .iter()
            .any(|r| r.service == service && r.pool_name == name && !r.is_for(pool));
        let registration = self
            .pools
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
        // A warning: dashboards and alerts that select the old label lose the pool.
        let from = registration.pool_name.as_str();
        tracing::warn!(
            target: "dbmetrics",
            service,
            from,
            to = name,
            "service {service:?}: the pool labelled {from:?} is now published as pool={name:?}, \
             the label given last (one pool, one label); its gauges under {from:?} drop to 0 \
             and its counters there stop at their last values"
        );
        metrics.relabel(crate::intern::intern(name));
        registration.pool_name = name.to_owned();
        Some(metrics)
    }

    /// The label budget of `service`, for a handle made without options
    /// (`DatabaseMetrics::new`): the service's, else a new one of `limit` that the service's
    /// first setup may still change.
    pub(super) fn budget(&mut self, service: &str, limit: usize) -> Arc<LabelBudget> {
        if let Some(budget) = self.live_budget(service) {
            return budget.0;
        }
        self.add_budget(service, limit, false)
    }

    /// The label budget of `service` for a setup whose limit is `given` (`None`: left out,
    /// `default` for a new budget): the service's, its limit set now if no setup fixed it yet.
    /// `Err` with the limit in force when a setup fixed another one.
    pub(super) fn budget_for_setup(
        &mut self,
        service: &str,
        given: Option<usize>,
        default: usize,
    ) -> Result<Arc<LabelBudget>, usize> {
        let Some((budget, set_up)) = self.live_budget(service) else {
            return Ok(self.add_budget(service, given.unwrap_or(default), true));
        };
        if !*set_up {
            budget.set_limit(given.unwrap_or(default));
            *set_up = true;
        } else if let Some(given) = given
            && given != budget.limit()
        {
            return Err(budget.limit());
        }
        Ok(budget)
    }

    fn live_budget(&mut self, service: &str) -> Option<(Arc<LabelBudget>, &mut bool)> {
        self.budgets
            .iter_mut()
            .filter(|b| b.service == service)
            .find_map(|b| Some((b.budget.upgrade()?, &mut b.set_up)))
    }

    fn add_budget(&mut self, service: &str, limit: usize, set_up: bool) -> Arc<LabelBudget> {
        let budget = Arc::new(LabelBudget::new(service, limit));
        self.budgets.push(ServiceBudget {
            service: service.to_owned(),
            budget: Arc::downgrade(&budget),
            set_up,
        });
        budget
    }

    pub(super) fn register<P: MonitoredPool>(
        &mut self,
        service: String,
        pool_name: String,
        pool: &P,
        metrics: &DatabaseMetrics,
    ) {
        metrics.set_pool_ref(pool);
        self.pools.push(Registration {
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
