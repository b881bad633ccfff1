//! The runtime of [dbmetrics](https://docs.rs/dbmetrics): everything that runs when a tracked
//! call records, a pool is polled, or a health check answers.
//!
//! Users depend on the `dbmetrics` crate, which re-exports this one with the macros; the
//! modules are documented there.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// One job per module; the public path of each item is given by the `pub use` lines below.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod call;
pub mod catalog;
pub mod classify;
mod drivers;
mod error;
#[cfg(feature = "exporter")]
#[cfg_attr(docsrs, doc(cfg(feature = "exporter")))]
pub mod exporter;
pub mod health;
mod intern;
mod memory;
mod metrics;
mod monitor;
mod naming;
pub mod pool;
mod record;
mod sites;
mod slow_log;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod tracker;
pub mod transaction;

pub use call::{NoPredicate, Predicate, TrackOutcome, TrackedCall};
pub use classify::classes::ClassifyError;
pub use error::Error;
pub use health::checker::{DatabaseHealthChecker, DatabaseHealthCheckerBuilder};
pub use health::report::HealthStatus;
pub use memory::{InMemoryMetrics, RecordedSample};
pub use metrics::{DatabaseMetrics, DatabaseMetricsBuilder, setup_database_monitoring};
pub use monitor::{MonitoredDatabase, monitor_database};
pub use naming::Naming;
pub use pool::tracked::{TrackedConnection, TrackedPool};
pub use record::{
    CallResult, CallSite, NoopMetrics, Operation, Outcome, QueryMetrics, Sample, UnknownOperation,
};
pub use tracker::{AsOperation, QueryPerformanceTracker, RepositoryMiddleware};

use pool::MonitoredPool;

/// A repository whose methods `#[track_query]` can record without `metrics = ...`.
///
/// Implemented by `#[derive(TrackedRepository)]`: `metrics()` returns the `#[metrics]` field
/// (or the one field of type `DatabaseMetrics`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tracked repository",
    label = "#[track_query] without `metrics = ...` records through `self`",
    note = "add #[derive(TrackedRepository)] to `{Self}` (with a #[metrics] field), or name the metrics: #[track_query(select, \"table\", metrics = self.metrics)]"
)]
pub trait TrackedRepository {
    /// The type of the metrics field.
    type Metrics: QueryMetrics;
    /// The metrics tracked methods record into.
    fn metrics(&self) -> &Self::Metrics;
}

/// The table `#[track_query(op)]` uses when it names none.
///
/// Implemented by `#[derive(TrackedRepository)]` when the struct has
/// `#[tracked(table = "...")]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no default table, and this #[track_query] names none",
    label = "this method's #[track_query] needs a table",
    note = "name the table: #[track_query(select, \"content\")], or give the repository a default: #[tracked(table = \"content\")] beside #[derive(TrackedRepository)]"
)]
pub trait DefaultTable {
    /// The default table label.
    const TABLE: &'static str;
}

/// The repository middleware of the original library: wrap methods of an existing repository
/// with [`RepositoryMiddleware::repository_method_tracker`].
pub fn create_repository_middleware<P: MonitoredPool>(
    pool: P,
    metrics: DatabaseMetrics,
) -> RepositoryMiddleware<P> {
    RepositoryMiddleware::new(pool, metrics)
}

/// The infrastructure enhancer of the original library: turns pools into [`TrackedPool`]s,
/// whose checkouts record into `metrics` (see [`TrackedPool`] for what counts, and an example).
pub fn create_infrastructure_enhancer(metrics: DatabaseMetrics) -> InfrastructureEnhancer {
    InfrastructureEnhancer { metrics }
}

/// Makes tracked pools that record into one service's metrics.
#[derive(Clone, Debug)]
pub struct InfrastructureEnhancer {
    metrics: DatabaseMetrics,
}

impl InfrastructureEnhancer {
    /// Wraps `pool` so that its checkouts are counted and timed under `pool="{name}"`.
    ///
    /// The label also gets the pool gauges: the poller of the metrics is shared when `pool`
    /// and `name` are the ones they monitor; when `pool` is the pool they monitor under
    /// another label, the pool moves to `name` (the label given last takes effect: one pool is
    /// published under one label; a warning names the service and both labels, the old label's
    /// gauges drop to 0 and its counters stay exported with their last values); another pool
    /// gets a poller of its own (same interval). When that cannot be (no Tokio runtime, or
    /// `name` already labels another open pool of this service), the checkouts are still
    /// counted and a warning is logged (target `dbmetrics`).
    pub fn enhance_pool<P: MonitoredPool>(&self, pool: P, name: &str) -> TrackedPool<P> {
        TrackedPool::new(pool, &self.metrics, name)
    }
}

/// Not public API: used by the code the macros generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::private::*;
    pub use crate::record::{
        Body, CallGuard, CallSite, LabelBudget, Operation, Outcome, QueryMetrics,
    };
    pub use crate::{DefaultTable, TrackedRepository};

    /// Borrows a metrics sink (gives one clear error when `m` is not one).
    #[inline(always)]
    pub fn metrics_ref<M: QueryMetrics>(m: &M) -> &M {
        m
    }

    /// Clones a metrics sink, for receivers the body may move or borrow mutably.
    #[inline(always)]
    pub fn metrics_owned<M: QueryMetrics + Clone>(m: &M) -> M {
        m.clone()
    }
}
