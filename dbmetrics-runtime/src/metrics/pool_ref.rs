//! [`PoolRef`]: the monitored pool, held by its metrics for the registry, whatever its driver.
//!
//! Held weakly where the driver has weak pool handles (deadpool); sqlx and bb8 have none, so
//! their pool is held until the metrics handle is dropped (see the README, "Drivers"). Held by the
//! metrics rather than by the registry, so that dropping the last handle lets the pool go at once.

use std::any::TypeId;

use crate::pool::{MonitoredPool, PoolStatus};

/// The pool a `DatabaseMetrics` monitors, for identity checks.
pub(super) struct PoolRef {
    pool: Box<dyn RegisteredPool>,
    pool_type: TypeId,
}

impl PoolRef {
    pub(super) fn new<P: MonitoredPool>(pool: &P) -> Self {
        Self {
            pool: Box::new(Registered::<P>(pool.downgrade())),
            pool_type: TypeId::of::<P>(),
        }
    }

    /// The pool is still open.
    pub(super) fn is_open(&self) -> bool {
        self.pool.is_open()
    }

    /// The pool's status now; `None` once it is closed or gone.
    pub(super) fn status(&self) -> Option<PoolStatus> {
        self.pool.status()
    }

    /// `pool` is the monitored pool (a clone of it).
    pub(super) fn is<P: MonitoredPool>(&self, pool: &P) -> bool {
        self.pool_type == TypeId::of::<P>() && self.pool.id() == Some(pool.id())
    }
}

/// A registered pool, whatever its driver.
trait RegisteredPool: Send + Sync {
    fn is_open(&self) -> bool;
    fn status(&self) -> Option<PoolStatus>;
    fn id(&self) -> Option<usize>;
}

struct Registered<P: MonitoredPool>(P::Weak);

impl<P: MonitoredPool> RegisteredPool for Registered<P> {
    fn is_open(&self) -> bool {
        self.status().is_some()
    }

    fn status(&self) -> Option<PoolStatus> {
        P::upgrade(&self.0).and_then(|pool| pool.status())
    }

    fn id(&self) -> Option<usize> {
        P::upgrade(&self.0).map(|pool| pool.id())
    }
}
