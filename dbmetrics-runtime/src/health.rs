//! Health checks of a deadpool-postgres pool and its database, bounded by a timeout.
//!
//! [`DatabaseHealthChecker::get_health_summary`] answers a liveness/readiness probe (`SELECT 1`
//! and the pool's utilisation); [`DatabaseHealthChecker::comprehensive_health_check`] runs four
//! checks (`connectivity`, `connection_pool`, `query_performance`, `database_resources`) and
//! reports the worst of them as `overall_status`. Both results serialize to the JSON of the
//! original library (see the README, "Health checks").
//!
//! ```no_run
//! # extern crate dbmetrics_runtime as dbmetrics;
//! use std::time::Duration;
//! use dbmetrics::health::{DatabaseHealthChecker, HealthStatus};
//!
//! # async fn run(pool: deadpool_postgres::Pool) -> Result<(), dbmetrics::Error> {
//! // defaults: every call answers within 3 s, no result cache
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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool::managed::Manager as _;
use deadpool_postgres::{ClientWrapper, Object, Pool, PoolError, TimeoutType, Timeouts};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::classify::{classify_pool, classify_postgres};
use crate::error::Error;

/// Runs one query function on `$conn` until `$deadline`, then [`Conn::settle`]s.
macro_rules! run {
    ($conn:ident, $deadline:expr, $query:ident) => {{
        let mut $conn = $conn;
        // If the caller drops this future during the query, `Conn`'s drop sees the flag and
        // keeps the connection out of the pool.
        $conn.in_flight = true;
        let outcome = timeout_at($deadline, $query($conn.client())).await;
        $conn.settle(outcome)
    }};
}

/// The error class of a check that did not finish before the deadline
/// ([`HealthConfig::timeout`]): typically a server or network that accepts TCP and never
/// answers. Health only; the error counter records such calls as `result="cancelled"`.
pub const TIMEOUT: &str = "timeout";

/// Default bound of every health call: 3 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest `timeout` a checker accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `connectivity` threshold: acquiring a connection plus `SELECT 1` taking 1 s or more
/// is `degraded`.
pub const DEFAULT_SLOW_CONNECTIVITY: Duration = Duration::from_secs(1);
/// Default `query_performance` threshold of the simple query (`SELECT 1`): 500 ms.
pub const DEFAULT_SLOW_SIMPLE_QUERY: Duration = Duration::from_millis(500);
/// Default `query_performance` threshold of the catalog query: 2 s.
pub const DEFAULT_SLOW_COMPLEX_QUERY: Duration = Duration::from_secs(2);
/// Default pool utilisation (checked-out connections / `max_size`, percent) from which the
/// `connection_pool` check is `degraded`: 80 %.
pub const DEFAULT_POOL_UTILIZATION_DEGRADED: f64 = 80.0;
/// Default server connection usage (client backends / `max_connections`, percent) from which
/// the `database_resources` check is `degraded`: 90 %.
pub const DEFAULT_CONNECTIONS_USAGE_DEGRADED: f64 = 90.0;
/// Default result cache lifetime: zero (off; concurrent calls still share one run).
pub const DEFAULT_CACHE_TTL: Duration = Duration::ZERO;

/// The state of one check, or of the whole: `healthy`, `degraded` or `unhealthy` in JSON.
///
/// Ordered from best to worst, so the worst of several is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Works, within every threshold.
    Healthy,
    /// Works, but a threshold is crossed (slow, or a pool at its limit). Still serves traffic:
    /// the axum routes answer 200.
    Degraded,
    /// Does not work (no connection, a query failed, or no answer in time). The axum routes
    /// answer 503.
    Unhealthy,
}

impl HealthStatus {
    /// The worse of `self` and `other`.
    ///
    /// ```
    /// # extern crate dbmetrics_runtime as dbmetrics;
    /// use dbmetrics::health::HealthStatus::*;
    /// assert_eq!(Healthy.worst(Degraded), Degraded);
    /// assert_eq!(Unhealthy.worst(Degraded), Unhealthy);
    /// ```
    pub fn worst(self, other: Self) -> Self {
        self.max(other)
    }

    /// `true` when healthy or degraded: the service can use its database (HTTP 200).
    pub fn is_available(self) -> bool {
        self != HealthStatus::Unhealthy
    }

    /// `"healthy"`, `"degraded"` or `"unhealthy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of a [`DatabaseHealthChecker`]; every field has a `DEFAULT_*` constant.
///
/// A time threshold marks a check `degraded` when the measured time is at or above it; a
/// percentage threshold when the measured percentage is at or above it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Bound of every health call, from the call to its answer ([`DEFAULT_TIMEOUT`], 3 s).
    pub timeout: Duration,
    /// `connectivity` is degraded when acquiring a connection plus `SELECT 1` takes this long
    /// ([`DEFAULT_SLOW_CONNECTIVITY`], 1 s).
    pub slow_connectivity: Duration,
    /// `query_performance` is degraded when `SELECT 1` takes this long
    /// ([`DEFAULT_SLOW_SIMPLE_QUERY`], 500 ms).
    pub slow_simple_query: Duration,
    /// `query_performance` is degraded when the catalog query takes this long
    /// ([`DEFAULT_SLOW_COMPLEX_QUERY`], 2 s).
    pub slow_complex_query: Duration,
    /// `connection_pool` is degraded at this utilisation, in percent
    /// ([`DEFAULT_POOL_UTILIZATION_DEGRADED`], 80). Also degraded whenever a caller waits for
    /// a connection.
    pub pool_utilization_degraded: f64,
    /// `database_resources` is degraded when the server's client connections reach this
    /// percentage of `max_connections` ([`DEFAULT_CONNECTIONS_USAGE_DEGRADED`], 90).
    pub connections_usage_degraded: f64,
    /// How long a result is reused by later calls ([`DEFAULT_CACHE_TTL`], zero: off).
    pub cache_ttl: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            slow_connectivity: DEFAULT_SLOW_CONNECTIVITY,
            slow_simple_query: DEFAULT_SLOW_SIMPLE_QUERY,
            slow_complex_query: DEFAULT_SLOW_COMPLEX_QUERY,
            pool_utilization_degraded: DEFAULT_POOL_UTILIZATION_DEGRADED,
            connections_usage_degraded: DEFAULT_CONNECTIONS_USAGE_DEGRADED,
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }
}

impl HealthConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.timeout.is_zero() {
            return Err(Error::HealthConfig(
                "timeout must be above zero (every check would fail at once)".into(),
            ));
        }
        if self.timeout > MAX_TIMEOUT {
            return Err(Error::HealthConfig(format!(
                "timeout must be at most {} s (a health check that waits longer answers no probe), got {:?}",
                MAX_TIMEOUT.as_secs(),
                self.timeout
            )));
        }
        for (name, value) in [
            ("pool_utilization_degraded", self.pool_utilization_degraded),
            (
                "connections_usage_degraded",
                self.connections_usage_degraded,
            ),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(Error::HealthConfig(format!(
                    "{name} is a percentage and must be between 0 and 100, got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// Quick summary: what [`DatabaseHealthChecker::get_health_summary`] returns.
///
/// ```json
/// {"service": "content_service", "status": "healthy", "connectivity": true,
///  "response_time_seconds": 0.002, "pool_utilization_percent": 25.0,
///  "active_connections": 2, "timestamp": 1701234567.89,
///  "pool_size": 8, "waiting_callers": 0}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthSummary {
    /// The service name given to the checker.
    pub service: String,
    /// Unhealthy when the database cannot be reached, else the worse of connectivity
    /// (degraded when slow) and the pool (degraded at its limit).
    pub status: HealthStatus,
    /// `SELECT 1` answered.
    pub connectivity: bool,
    /// Time to acquire a connection and run `SELECT 1` (or to fail), seconds.
    pub response_time_seconds: f64,
    /// Checked-out connections / `max_size`, percent (two decimals).
    pub pool_utilization_percent: f64,
    /// Connections checked out of the pool (not counting the check's own).
    pub active_connections: usize,
    /// When this result was measured: unix time, seconds.
    pub timestamp: f64,
    /// The pool's `max_size`.
    pub pool_size: usize,
    /// Callers queued for a connection.
    pub waiting_callers: usize,
    /// Error class when `connectivity` is false; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// Detailed health: what [`DatabaseHealthChecker::comprehensive_health_check`] returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DetailedHealth {
    /// The service name given to the checker.
    pub service: String,
    /// The worst status of the four checks.
    pub overall_status: HealthStatus,
    /// The checks.
    pub checks: HealthChecks,
    /// When this result was measured: unix time, seconds.
    pub timestamp: f64,
}

/// The four checks of [`DetailedHealth`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthChecks {
    /// Can a connection be had and does it answer `SELECT 1`.
    pub connectivity: ConnectivityCheck,
    /// The pool's utilisation and queue.
    pub connection_pool: PoolCheck,
    /// A simple and a catalog query, timed.
    pub query_performance: QueryPerformanceCheck,
    /// The database's connections, size, and `max_connections` headroom.
    pub database_resources: DatabaseResourcesCheck,
}

/// The `connectivity` check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConnectivityCheck {
    /// Unhealthy when no answer, degraded at [`HealthConfig::slow_connectivity`].
    pub status: HealthStatus,
    /// `SELECT 1` answered.
    pub connectivity: bool,
    /// Time to acquire a connection and run `SELECT 1` (or to fail), seconds.
    pub response_time_seconds: f64,
    /// `"pool"` (a pooled connection) or `"dedicated"` (the pool was at its limit); absent
    /// when no connection could be had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquired_from: Option<&'static str>,
    /// Error class on failure; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The `connection_pool` check (from `Pool::status()`, read before the check takes its own
/// connection). Never unhealthy: a full pool is load, not failure.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolCheck {
    /// Degraded at [`HealthConfig::pool_utilization_degraded`] or when callers wait.
    pub status: HealthStatus,
    /// The pool's `max_size`.
    pub pool_size: usize,
    /// Connections checked out (`size - available`).
    pub active_connections: usize,
    /// `active_connections / pool_size`, percent (two decimals).
    pub utilization_percent: f64,
    /// Idle connections ready in the pool (`available`).
    pub idle_connections: usize,
    /// Open connections, idle or in use (`size`).
    pub open_connections: usize,
    /// Callers queued for a connection (`waiting`).
    pub waiting_callers: usize,
}

/// The `query_performance` check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueryPerformanceCheck {
    /// Unhealthy when a query failed or did not finish in time, degraded at
    /// [`HealthConfig::slow_simple_query`] or [`HealthConfig::slow_complex_query`].
    pub status: HealthStatus,
    /// `SELECT 1`, seconds; `null` when it did not run or failed.
    pub simple_query_time_seconds: Option<f64>,
    /// A catalog query (`pg_class` joined with `pg_namespace`, counted), seconds; `null` when
    /// it did not run or failed.
    pub complex_query_time_seconds: Option<f64>,
    /// Error class on failure; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The `database_resources` check. Every figure is `null` when the query did not run or
/// failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DatabaseResourcesCheck {
    /// Unhealthy when the query failed or did not finish in time, degraded at
    /// [`HealthConfig::connections_usage_degraded`].
    pub status: HealthStatus,
    /// Connections to this database (`pg_stat_activity` rows of `current_database()`).
    pub active_connections: Option<i64>,
    /// `pg_size_pretty(pg_database_size(current_database()))`, e.g. `"45 MB"`.
    pub database_size: Option<String>,
    /// `pg_database_size(current_database())`, bytes.
    pub database_size_bytes: Option<i64>,
    /// Client connections to the whole server (`pg_stat_activity`, `client backend`).
    pub server_connections: Option<i64>,
    /// The server's `max_connections`.
    pub max_connections: Option<i64>,
    /// `max_connections - server_connections`.
    pub connections_headroom: Option<i64>,
    /// `server_connections / max_connections`, percent (two decimals).
    pub connections_usage_percent: Option<f64>,
    /// Error class on failure; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// Health checks of one pool and its database. Cheap to clone (an `Arc` inside).
///
/// See the [module documentation](self) for what is bounded, which connection a check uses
/// and how results are shared.
#[derive(Clone)]
pub struct DatabaseHealthChecker {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    service: String,
    config: HealthConfig,
    summary: Mutex<Option<Cached<HealthSummary>>>,
    detailed: Mutex<Option<Cached<DetailedHealth>>>,
}

struct Cached<T> {
    finished: Instant,
    value: T,
}

impl fmt::Debug for DatabaseHealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseHealthChecker")
            .field("service", &self.inner.service)
            .field("config", &self.inner.config)
            .field("pool_status", &self.inner.pool.status())
            .finish()
    }
}

/// Options of a [`DatabaseHealthChecker`]: from [`DatabaseHealthChecker::builder`].
#[derive(Debug)]
#[must_use = "call .build() to get the checker"]
pub struct DatabaseHealthCheckerBuilder {
    pool: Pool,
    service: String,
    config: HealthConfig,
}

impl DatabaseHealthCheckerBuilder {
    /// Bound of every health call (default 3 s). Must be above zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// `connectivity` is degraded when acquiring plus `SELECT 1` takes this long (default 1 s).
    pub fn slow_connectivity(mut self, threshold: Duration) -> Self {
        self.config.slow_connectivity = threshold;
        self
    }

    /// `query_performance` is degraded when `SELECT 1` takes this long (default 500 ms).
    pub fn slow_simple_query(mut self, threshold: Duration) -> Self {
        self.config.slow_simple_query = threshold;
        self
    }

    /// `query_performance` is degraded when the catalog query takes this long (default 2 s).
    pub fn slow_complex_query(mut self, threshold: Duration) -> Self {
        self.config.slow_complex_query = threshold;
        self
    }

    /// `connection_pool` is degraded from this utilisation, percent 0–100 (default 80).
    pub fn pool_utilization_degraded(mut self, percent: f64) -> Self {
        self.config.pool_utilization_degraded = percent;
        self
    }

    /// `database_resources` is degraded from this usage of `max_connections`, percent 0–100
    /// (default 90).
    pub fn connections_usage_degraded(mut self, percent: f64) -> Self {
        self.config.connections_usage_degraded = percent;
        self
    }

    /// Reuse a result for this long (default zero: off).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.cache_ttl = ttl;
        self
    }

    /// Builds the checker.
    ///
    /// # Errors
    /// [`Error::HealthConfig`] when the timeout is zero or a percentage is not within 0–100.
    pub fn build(self) -> Result<DatabaseHealthChecker, Error> {
        self.config.validate()?;
        Ok(DatabaseHealthChecker::from_parts(
            self.pool,
            self.service,
            self.config,
        ))
    }
}

impl DatabaseHealthChecker {
    /// A checker with the default [`HealthConfig`].
    ///
    /// `service` is echoed as given in the JSON (serde escapes it). It names no metric, so it
    /// is not checked against the metric-name rule of `setup_database_monitoring`; give it the
    /// same name.
    pub fn new(pool: Pool, service: &str) -> Self {
        Self::from_parts(pool, service.to_owned(), HealthConfig::default())
    }

    /// A builder for timeouts, thresholds and the result cache.
    pub fn builder(pool: Pool, service: &str) -> DatabaseHealthCheckerBuilder {
        DatabaseHealthCheckerBuilder {
            pool,
            service: service.to_owned(),
            config: HealthConfig::default(),
        }
    }

    fn from_parts(pool: Pool, service: String, config: HealthConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                service,
                config,
                summary: Mutex::new(None),
                detailed: Mutex::new(None),
            }),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// Connectivity (`SELECT 1`, timed) and the pool's utilisation. Returns within
    /// [`HealthConfig::timeout`]; never fails: a failure is `status: unhealthy` with an `error`
    /// class.
    pub async fn get_health_summary(&self) -> HealthSummary {
        let asked = Instant::now();
        let deadline = asked + self.inner.config.timeout;
        let Ok(mut slot) = timeout_at(deadline, self.inner.summary.lock()).await else {
            return self.summary_from(
                Probe::failed(TIMEOUT, self.inner.config.timeout),
                self.pool_check(),
            );
        };
        if let Some(cached) = slot.as_ref()
            && self.reusable(cached.finished, asked)
        {
            return cached.value.clone();
        }
        let pool = self.pool_check();
        let probe = match self.acquire(deadline).await {
            Err(class) => Probe::failed(class, asked.elapsed()),
            Ok(conn) => {
                let from = conn.source();
                match run!(conn, deadline, select_one) {
                    Ok((_, conn)) => {
                        drop(conn);
                        Probe::ok(asked.elapsed(), from)
                    }
                    Err(class) => Probe::failed(class, asked.elapsed()),
                }
            }
        };
        let summary = self.summary_from(probe, pool);
        *slot = Some(Cached {
            finished: Instant::now(),
            value: summary.clone(),
        });
        summary
    }

    /// The four checks and their worst status. Returns within [`HealthConfig::timeout`];
    /// never fails: a failing check is `unhealthy` with an `error` class.
    pub async fn comprehensive_health_check(&self) -> DetailedHealth {
        let asked = Instant::now();
        let deadline = asked + self.inner.config.timeout;
        let Ok(mut slot) = timeout_at(deadline, self.inner.detailed.lock()).await else {
            return self.detailed_failure(
                Probe::failed(TIMEOUT, self.inner.config.timeout),
                self.pool_check(),
            );
        };
        if let Some(cached) = slot.as_ref()
            && self.reusable(cached.finished, asked)
        {
            return cached.value.clone();
        }
        let detailed = self.run_detailed(asked, deadline).await;
        *slot = Some(Cached {
            finished: Instant::now(),
            value: detailed.clone(),
        });
        detailed
    }

    /// A result can be reused when it finished after this call asked (the call waited for a
    /// concurrent run) or is younger than the cache lifetime.
    fn reusable(&self, finished: Instant, asked: Instant) -> bool {
        finished >= asked || finished.elapsed() < self.inner.config.cache_ttl
    }

    async fn run_detailed(&self, asked: Instant, deadline: Instant) -> DetailedHealth {
        let config = &self.inner.config;
        let pool = self.pool_check();
        let conn = match self.acquire(deadline).await {
            Ok(conn) => conn,
            Err(class) => {
                return self.detailed_failure(Probe::failed(class, asked.elapsed()), pool);
            }
        };
        let from = conn.source();
        let conn = match run!(conn, deadline, select_one) {
            Ok(((), conn)) => conn,
            Err(class) => {
                return self.detailed_failure(Probe::failed(class, asked.elapsed()), pool);
            }
        };
        let connectivity = Probe::ok(asked.elapsed(), from).connectivity_check(config);

        // query performance: SELECT 1, then a catalog query, each timed
        let mut query_performance = QueryPerformanceCheck {
            status: HealthStatus::Healthy,
            simple_query_time_seconds: None,
            complex_query_time_seconds: None,
            error: None,
        };
        let started = Instant::now();
        let conn = match run!(conn, deadline, select_one) {
            Ok(((), conn)) => {
                let took = started.elapsed();
                query_performance.simple_query_time_seconds = Some(took.as_secs_f64());
                if took >= config.slow_simple_query {
                    query_performance.status = HealthStatus::Degraded;
                }
                Some(conn)
            }
            Err(class) => {
                query_performance.status = HealthStatus::Unhealthy;
                query_performance.error = Some(class);
                None
            }
        };
        let conn = match conn {
            None => None,
            Some(conn) => {
                let started = Instant::now();
                match run!(conn, deadline, catalog_query) {
                    Ok(((), conn)) => {
                        let took = started.elapsed();
                        query_performance.complex_query_time_seconds = Some(took.as_secs_f64());
                        if took >= config.slow_complex_query {
                            query_performance.status =
                                query_performance.status.worst(HealthStatus::Degraded);
                        }
                        Some(conn)
                    }
                    Err(class) => {
                        query_performance.status = HealthStatus::Unhealthy;
                        query_performance.error = Some(class);
                        None
                    }
                }
            }
        };

        // database resources: connections, size, headroom; needs a working connection
        let database_resources = match conn {
            None => DatabaseResourcesCheck::failed(query_performance.error.unwrap_or(TIMEOUT)),
            Some(conn) => match run!(conn, deadline, resources_query) {
                Ok((figures, conn)) => {
                    drop(conn);
                    figures.check(config)
                }
                Err(class) => DatabaseResourcesCheck::failed(class),
            },
        };

        let overall_status = connectivity
            .status
            .worst(pool.status)
            .worst(query_performance.status)
            .worst(database_resources.status);
        DetailedHealth {
            service: self.inner.service.clone(),
            overall_status,
            checks: HealthChecks {
                connectivity,
                connection_pool: pool,
                query_performance,
                database_resources,
            },
            timestamp: unix_now(),
        }
    }

    fn detailed_failure(&self, probe: Probe, pool: PoolCheck) -> DetailedHealth {
        let class = probe.error.unwrap_or(TIMEOUT);
        DetailedHealth {
            service: self.inner.service.clone(),
            overall_status: HealthStatus::Unhealthy,
            checks: HealthChecks {
                connectivity: probe.connectivity_check(&self.inner.config),
                connection_pool: pool,
                query_performance: QueryPerformanceCheck {
                    status: HealthStatus::Unhealthy,
                    simple_query_time_seconds: None,
                    complex_query_time_seconds: None,
                    error: Some(class),
                },
                database_resources: DatabaseResourcesCheck::failed(class),
            },
            timestamp: unix_now(),
        }
    }

    fn summary_from(&self, probe: Probe, pool: PoolCheck) -> HealthSummary {
        let connectivity = probe.connectivity_check(&self.inner.config);
        HealthSummary {
            service: self.inner.service.clone(),
            status: connectivity.status.worst(pool.status),
            connectivity: connectivity.connectivity,
            response_time_seconds: connectivity.response_time_seconds,
            pool_utilization_percent: pool.utilization_percent,
            active_connections: pool.active_connections,
            timestamp: unix_now(),
            pool_size: pool.pool_size,
            waiting_callers: pool.waiting_callers,
            error: connectivity.error,
        }
    }

    fn pool_check(&self) -> PoolCheck {
        let status = self.inner.pool.status();
        let active = status.size.saturating_sub(status.available);
        let utilization = if status.max_size == 0 {
            100.0
        } else {
            round2(active as f64 * 100.0 / status.max_size as f64)
        };
        let degraded =
            utilization >= self.inner.config.pool_utilization_degraded || status.waiting > 0;
        PoolCheck {
            status: if degraded {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            },
            pool_size: status.max_size,
            active_connections: active,
            utilization_percent: utilization,
            idle_connections: status.available,
            open_connections: status.size,
            waiting_callers: status.waiting,
        }
    }

    /// A pooled connection without queueing, or a dedicated one when the pool is at its
    /// limit; bounded by `deadline`.
    async fn acquire(&self, deadline: Instant) -> Result<Conn, &'static str> {
        let pool = &self.inner.pool;
        let no_wait = Timeouts {
            wait: Some(Duration::ZERO),
            create: None,
            recycle: None,
        };
        match timeout_at(deadline, pool.timeout_get(&no_wait)).await {
            Err(_) => Err(TIMEOUT),
            Ok(Ok(object)) => Ok(Conn::pooled(object)),
            Ok(Err(PoolError::Timeout(TimeoutType::Wait))) => {
                let manager = pool.manager();
                match timeout_at(deadline, manager.create()).await {
                    Err(_) => Err(TIMEOUT),
                    Ok(Err(e)) => Err(log_failure(classify_postgres(&e), &e)),
                    Ok(Ok(mut client)) => {
                        // Not the pool's: keep it out of the manager's statement-cache registry.
                        manager.detach(&mut client);
                        Ok(Conn::dedicated(client))
                    }
                }
            }
            Ok(Err(e)) => Err(log_failure(classify_pool(&e), &e)),
        }
    }
}

/// The outcome of acquiring a connection and running `SELECT 1`.
struct Probe {
    took: Duration,
    from: Option<&'static str>,
    error: Option<&'static str>,
}

impl Probe {
    fn ok(took: Duration, from: &'static str) -> Self {
        Self {
            took,
            from: Some(from),
            error: None,
        }
    }

    fn failed(class: &'static str, took: Duration) -> Self {
        tracing::debug!(target: "dbmetrics::health", error = class, "database health check failed");
        Self {
            took,
            from: None,
            error: Some(class),
        }
    }

    fn connectivity_check(&self, config: &HealthConfig) -> ConnectivityCheck {
        let status = if self.error.is_some() {
            HealthStatus::Unhealthy
        } else if self.took >= config.slow_connectivity {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        ConnectivityCheck {
            status,
            connectivity: self.error.is_none(),
            response_time_seconds: self.took.as_secs_f64(),
            acquired_from: self.from,
            error: self.error,
        }
    }
}

/// A connection a check holds: from the pool, or dedicated (closed when dropped).
///
/// A pooled connection goes back to the pool only when its last query answered in time; one
/// whose query failed, timed out, or was abandoned because the caller dropped the health
/// check mid-query, is removed from the pool and closed.
struct Conn {
    kind: ConnKind,
    /// A query was started and has not been settled.
    in_flight: bool,
}

enum ConnKind {
    Pooled(Option<Object>),
    Dedicated(ClientWrapper),
}

impl Conn {
    fn pooled(object: Object) -> Self {
        Self {
            kind: ConnKind::Pooled(Some(object)),
            in_flight: false,
        }
    }

    fn dedicated(client: ClientWrapper) -> Self {
        Self {
            kind: ConnKind::Dedicated(client),
            in_flight: false,
        }
    }

    fn source(&self) -> &'static str {
        match self.kind {
            ConnKind::Pooled(_) => "pool",
            ConnKind::Dedicated(_) => "dedicated",
        }
    }

    fn client(&self) -> &tokio_postgres::Client {
        match &self.kind {
            ConnKind::Pooled(Some(object)) => object,
            ConnKind::Pooled(None) => unreachable!("a pooled Conn holds its object until dropped"),
            ConnKind::Dedicated(client) => client,
        }
    }

    /// Takes the outcome of a query run on this connection under a deadline. On failure or
    /// timeout the connection is closed (a pooled one is first removed from the pool), so a
    /// connection in an unknown state never goes back to the application.
    fn settle<T>(
        mut self,
        outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<(T, Self), &'static str> {
        match outcome {
            Ok(Ok(value)) => {
                self.in_flight = false;
                Ok((value, self))
            }
            // Dropped with `in_flight` still set: discarded.
            Ok(Err(e)) => Err(log_failure(classify_postgres(&e), &e)),
            Err(_) => Err(TIMEOUT),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let ConnKind::Pooled(object) = &mut self.kind
            && self.in_flight
            && let Some(object) = object.take()
        {
            drop(Object::take(object));
        }
    }
}

/// Logs why a check failed, for the operator (`WARN`, target `dbmetrics::health`): the driver's
/// text for fixed health queries and connection attempts, which holds no SQL parameters and no
/// password. The JSON only ever carries the class.
fn log_failure(class: &'static str, error: &dyn std::fmt::Display) -> &'static str {
    tracing::warn!(target: "dbmetrics::health", error_type = class, error = %error, "database health check failed");
    class
}

async fn select_one(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.simple_query("SELECT 1").await.map(drop)
}

/// A small query over the catalog: a join and an aggregate, planned and run by the server.
async fn catalog_query(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .simple_query(
            "SELECT count(*) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
        )
        .await
        .map(drop)
}

struct ResourceFigures {
    database_connections: i64,
    server_connections: i64,
    max_connections: i64,
    size_bytes: i64,
    size_pretty: String,
}

async fn resources_query(
    client: &tokio_postgres::Client,
) -> Result<ResourceFigures, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT \
               (SELECT count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE datname = current_database())::int8, \
               (SELECT count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE backend_type = 'client backend')::int8, \
               current_setting('max_connections')::int8, \
               pg_catalog.pg_database_size(current_database())::int8, \
               pg_catalog.pg_size_pretty(pg_catalog.pg_database_size(current_database()))",
            &[],
        )
        .await?;
    Ok(ResourceFigures {
        database_connections: row.try_get(0)?,
        server_connections: row.try_get(1)?,
        max_connections: row.try_get(2)?,
        size_bytes: row.try_get(3)?,
        size_pretty: row.try_get(4)?,
    })
}

impl ResourceFigures {
    fn check(self, config: &HealthConfig) -> DatabaseResourcesCheck {
        let usage = if self.max_connections > 0 {
            round2(self.server_connections as f64 * 100.0 / self.max_connections as f64)
        } else {
            100.0
        };
        DatabaseResourcesCheck {
            status: if usage >= config.connections_usage_degraded {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            },
            active_connections: Some(self.database_connections),
            database_size: Some(self.size_pretty),
            database_size_bytes: Some(self.size_bytes),
            server_connections: Some(self.server_connections),
            max_connections: Some(self.max_connections),
            connections_headroom: Some(self.max_connections - self.server_connections),
            connections_usage_percent: Some(usage),
            error: None,
        }
    }
}

impl DatabaseResourcesCheck {
    fn failed(class: &'static str) -> Self {
        Self {
            status: HealthStatus::Unhealthy,
            active_connections: None,
            database_size: None,
            database_size_bytes: None,
            server_connections: None,
            max_connections: None,
            connections_headroom: None,
            connections_usage_percent: None,
            error: Some(class),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_is_the_maximum() {
        use HealthStatus::*;
        assert_eq!(Healthy.worst(Healthy), Healthy);
        assert_eq!(Degraded.worst(Healthy), Degraded);
        assert_eq!(Healthy.worst(Unhealthy), Unhealthy);
        assert!(Degraded.is_available());
        assert!(!Unhealthy.is_available());
        assert_eq!(serde_json::to_string(&Degraded).unwrap(), "\"degraded\"");
        assert_eq!(Unhealthy.to_string(), "unhealthy");
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad = [
            HealthConfig {
                timeout: Duration::ZERO,
                ..HealthConfig::default()
            },
            HealthConfig {
                pool_utilization_degraded: 120.0,
                ..HealthConfig::default()
            },
            HealthConfig {
                connections_usage_degraded: f64::NAN,
                ..HealthConfig::default()
            },
            HealthConfig {
                // would overflow `Instant + timeout`
                timeout: Duration::MAX,
                ..HealthConfig::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.starts_with("invalid health check configuration"),
                "{err}"
            );
        }
        assert!(HealthConfig::default().validate().is_ok());
    }
}
