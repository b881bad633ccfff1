//! Health checks of a pool and its database, bounded by a timeout.
//!
//! [`DatabaseHealthChecker::get_health_summary`] answers a readiness probe (`SELECT 1` and the
//! pool's utilisation; never a liveness probe: a database outage would restart every healthy
//! pod, and `dbmetrics::axum::router` serves `/livez` for liveness, without the database); [`DatabaseHealthChecker::comprehensive_health_check`] runs four
//! checks (`connectivity`, `connection_pool`, `query_performance`, `database_resources`) and
//! reports the worst of them as `overall_status`. Both results serialize to the JSON of the
//! original library (see the README, "Health checks").
//!
//! ```no_run
//! # extern crate dbmetrics_runtime as dbmetrics;
//! use std::time::Duration;
//! use dbmetrics::{DatabaseHealthChecker, HealthStatus};
//!
//! # async fn run(pool: deadpool_postgres::Pool) -> Result<(), dbmetrics::Error> {
//! // defaults: every call answers within 800 ms, no result cache
//! let checker = DatabaseHealthChecker::new(pool.clone(), "content_service");
//! let summary = checker.get_health_summary().await;
//! if summary.status == HealthStatus::Unhealthy {
//!     eprintln!("database down: {}", summary.error.unwrap_or("unknown"));
//! }
//! println!("{}", serde_json::to_string(&checker.comprehensive_health_check().await).unwrap());
//!
//! // or with options
//! let checker = DatabaseHealthChecker::builder(pool, "content_service")
//!     .timeout(Duration::from_secs(1))
//!     .cache_ttl(Duration::from_secs(5))
//!     .pool_utilization_degraded(90.0)
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Bounded.** Every call returns within [`HealthConfig::timeout`] (plus scheduling
//!   noise): acquiring a connection, connecting, and each query all run against one deadline.
//!   A server that refuses connections fails fast; a server (or a network) that accepts TCP and
//!   never answers makes the checks `unhealthy` with error class `timeout` when the deadline
//!   passes. A pooled connection whose query failed or timed out is removed from the pool,
//!   never handed back to the application.
//! - **No secrets.** Failures are reported as a class from [`crate::classify`]
//!   (`connection`, `connection_closed`, `pool_closed`, a SQLSTATE condition name, ...) or
//!   [`TIMEOUT`]; never the driver's message, a connection string, a password or SQL text.
//! - **Never panics.**
//!
//! # Which connection a check uses
//!
//! A check takes an idle pooled connection, or lets the pool open one when it has room, without
//! waiting in the pool's queue. When the pool is at its limit (every connection checked out),
//! the check opens one **dedicated** connection with the pool's own configuration and closes it
//! afterwards, so a busy pool does not make the database look down: connectivity stays
//! `healthy` and the `connection_pool` check reports `degraded`. `connectivity.acquired_from`
//! says which (`"pool"` or `"dedicated"`).
//!
//! # Result cache and concurrent calls
//!
//! Concurrent calls share one run: a call that arrives while a check is running waits for it
//! and returns its result. With [`HealthConfig::cache_ttl`] above zero (default: zero, off), a
//! result is also reused by later calls until it is that old; a reused result keeps its
//! `timestamp`, so its age is visible. Failures are cached like successes.
//!
//! [`DatabaseHealthChecker::get_health_summary`]: crate::DatabaseHealthChecker::get_health_summary
//! [`DatabaseHealthChecker::comprehensive_health_check`]: crate::DatabaseHealthChecker::comprehensive_health_check

pub(crate) mod checker;
mod config;
mod probe;
pub(crate) mod report;
mod single_flight;

pub use config::{
    DEFAULT_CACHE_TTL, DEFAULT_CONNECTIONS_USAGE_DEGRADED, DEFAULT_POOL_UTILIZATION_DEGRADED,
    DEFAULT_SLOW_COMPLEX_QUERY, DEFAULT_SLOW_CONNECTIVITY, DEFAULT_SLOW_SIMPLE_QUERY,
    DEFAULT_TIMEOUT, HealthConfig, MAX_TIMEOUT, TIMEOUT,
};
pub use report::{
    ConnectivityCheck, DatabaseResourcesCheck, DetailedHealth, HealthChecks, HealthSummary,
    PoolCheck, QueryPerformanceCheck,
};

pub use crate::drivers::HealthCheckable;
#[doc(hidden)]
pub use crate::drivers::{Probe, ProbeFailure};
