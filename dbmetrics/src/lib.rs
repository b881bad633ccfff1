//! PostgreSQL observability for Rust services, attached by an attribute.
//!
//! - `#[track_query(select, "content")]` on a repository method records its latency, result
//!   (`success`, `error`, `cancelled`) and error class (the SQLSTATE condition name);
//! - [`monitor_database`] wires a deadpool-postgres pool in one call: its metrics (gauges
//!   polled), a [`TrackedPool`] (checkouts counted and timed) and a [`DatabaseHealthChecker`],
//!   from one service name ([`setup_database_monitoring`] sets up the metrics alone);
//! - [`exporter::install_recorder`] installs the Prometheus exporter with histogram buckets
//!   fine enough for sub-millisecond queries;
//! - [`DatabaseHealthChecker`] answers readiness probes within a timeout ([`health`]), and with
//!   the `axum` feature `dbmetrics::axum::router` serves `/metrics`, `/healthz`,
//!   `/health/detailed` and `/livez` (liveness, without the database);
//! - with the `tracing` feature every tracked call runs in a `tracing` span carrying the
//!   OpenTelemetry database fields (`tracing-opentelemetry` exports it as a client span), and
//!   [`Naming::OpenTelemetry`] records the OpenTelemetry database client metrics
//!   (`db.client.operation.duration`, ...) instead of `{service}_database_*`.
//!
//! Everything is recorded through the [`metrics`](https://docs.rs/metrics) facade, so any
//! `metrics` recorder works; with none installed, everything runs and records nothing.
//!
//! ```no_run
//! use dbmetrics::{DatabaseMetrics, TrackedRepository, setup_database_monitoring, track_query};
//!
//! #[derive(Debug, thiserror::Error)]
//! enum RepoError {
//!     #[error(transparent)]
//!     Pool(#[from] deadpool_postgres::PoolError),
//!     #[error(transparent)]
//!     Db(#[from] tokio_postgres::Error),
//! }
//!
//! #[derive(Clone, TrackedRepository)]
//! #[tracked(table = "content")]
//! struct ContentRepository {
//!     pool: deadpool_postgres::Pool,
//!     #[metrics]
//!     metrics: DatabaseMetrics,
//! }
//!
//! impl ContentRepository {
//!     #[track_query(select, "content")]
//!     async fn title(&self, id: i64) -> Result<Option<String>, RepoError> {
//!         let client = self.pool.get().await?;
//!         let row = client
//!             .query_opt("SELECT title FROM content WHERE id = $1", &[&id])
//!             .await?;
//!         Ok(row.map(|r| r.get(0)))
//!     }
//!
//!     #[track_query(delete)] // table "content" from #[tracked]
//!     async fn remove(&self, id: i64) -> Result<u64, RepoError> {
//!         let client = self.pool.get().await?;
//!         Ok(client.execute("DELETE FROM content WHERE id = $1", &[&id]).await?)
//!     }
//! }
//!
//! # async fn run(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! let prometheus = dbmetrics::exporter::install_recorder()?;
//! let metrics = setup_database_monitoring(&pool, "content_service")?;
//! let repo = ContentRepository { pool, metrics };
//! repo.title(1).await?;
//! println!("{}", prometheus.render());
//! # Ok(()) }
//! ```
//!
//! Where to look next: [`catalog`] lists every metric with its labels; [`classify`] the
//! error classes; [`health`] the health checks and their JSON; [`pool`] the pool gauges and
//! [`TrackedPool`]; [`QueryPerformanceTracker`] and [`transaction`] tracking
//! without attributes; the README of the repository has the demo, the dashboards and the
//! benchmarks.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use dbmetrics_macros::{TrackedRepository, track_query, track_transaction};
pub use dbmetrics_runtime::{
    AsOperation, CallResult, CallSite, ClassifyError, DatabaseHealthChecker,
    DatabaseHealthCheckerBuilder, DatabaseMetrics, DatabaseMetricsBuilder, DefaultTable, Error,
    HealthStatus, InMemoryMetrics, InfrastructureEnhancer, MonitoredDatabase, Naming, NoPredicate,
    NoopMetrics, Operation, Outcome, Predicate, QueryMetrics, QueryPerformanceTracker,
    RecordedSample, RepositoryMiddleware, Sample, TrackOutcome, TrackedCall, TrackedConnection,
    TrackedPool, TrackedRepository, UnknownOperation, create_infrastructure_enhancer,
    create_repository_middleware, monitor_database, setup_database_monitoring,
};
pub use dbmetrics_runtime::{catalog, classify, health, pool, transaction};

#[cfg(feature = "exporter")]
#[cfg_attr(docsrs, doc(cfg(feature = "exporter")))]
pub use dbmetrics_runtime::exporter;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use dbmetrics_runtime::axum;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use dbmetrics_runtime::testing;

#[doc(hidden)]
pub use dbmetrics_runtime::__private;
