//! The JSON of the health checks: [`HealthSummary`], [`DetailedHealth`] and the checks inside.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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
    /// use dbmetrics::HealthStatus::*;
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

/// Quick summary: what [`DatabaseHealthChecker::get_health_summary`](crate::DatabaseHealthChecker::get_health_summary) returns.
///
/// ```json
/// {"service": "content_service", "status": "healthy", "connectivity": true,
///  "response_time_seconds": 0.002, "pool_utilization_percent": 25.0,
///  "active_connections": 2, "timestamp": 1701234567.89,
///  "pool_size": 8, "waiting_callers": 0, "pool_max_size": 8, "pool_checked_out": 2}
/// ```
///
/// `pool_size` and `active_connections` are the original library's names: the pool's
/// configured maximum, and its connections checked out. `pool_max_size` and
/// `pool_checked_out` say the same without the ambiguity (the `database_resources` check of
/// the detailed health has an `active_connections` of its own, with another meaning).
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
    /// Connections checked out of the pool (not counting the check's own); the same as
    /// `pool_checked_out`.
    pub active_connections: usize,
    /// When this result was measured: unix time, seconds.
    pub timestamp: f64,
    /// The pool's configured maximum (`max_size`), not its open connections; the same as
    /// `pool_max_size`.
    pub pool_size: usize,
    /// Callers queued for a connection.
    pub waiting_callers: usize,
    /// The pool's configured maximum (`max_size`).
    pub pool_max_size: usize,
    /// Connections checked out of the pool, read before the check took its own.
    pub pool_checked_out: usize,
    /// Error class when `connectivity` is false; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// Detailed health: what [`DatabaseHealthChecker::comprehensive_health_check`](crate::DatabaseHealthChecker::comprehensive_health_check) returns.
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
    /// Unhealthy when no answer, degraded at [`HealthConfig::slow_connectivity`](super::HealthConfig::slow_connectivity).
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
    /// Degraded at [`HealthConfig::pool_utilization_degraded`](super::HealthConfig::pool_utilization_degraded) or when callers wait.
    pub status: HealthStatus,
    /// The pool's configured maximum (`max_size`), not its open connections; the same as
    /// `pool_max_size`.
    pub pool_size: usize,
    /// Connections checked out of the pool (`size - available`); the same as
    /// `pool_checked_out`.
    pub active_connections: usize,
    /// `active_connections / pool_size`, percent (two decimals).
    pub utilization_percent: f64,
    /// Idle connections ready in the pool (`available`).
    pub idle_connections: usize,
    /// Open connections, idle or in use (`size`).
    pub open_connections: usize,
    /// Callers queued for a connection (`waiting`).
    pub waiting_callers: usize,
    /// The pool's configured maximum (`max_size`).
    pub pool_max_size: usize,
    /// Connections checked out of the pool (`size - available`).
    pub pool_checked_out: usize,
}

/// The `query_performance` check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueryPerformanceCheck {
    /// Unhealthy when a query failed or did not finish in time, degraded at
    /// [`HealthConfig::slow_simple_query`](super::HealthConfig::slow_simple_query) or [`HealthConfig::slow_complex_query`](super::HealthConfig::slow_complex_query).
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
    /// [`HealthConfig::connections_usage_degraded`](super::HealthConfig::connections_usage_degraded).
    pub status: HealthStatus,
    /// Server backends connected to this database (`pg_stat_activity` rows of
    /// `current_database()`: every client's, not only this pool's); the same as
    /// `database_backends`.
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
    /// Server backends connected to this database (`pg_stat_activity` rows of
    /// `current_database()`, every client's).
    pub database_backends: Option<i64>,
    /// Error class on failure; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

impl DatabaseResourcesCheck {
    /// The check when its query could not run: `unhealthy` with the error class.
    pub(crate) fn failed(class: &'static str) -> Self {
        Self {
            status: HealthStatus::Unhealthy,
            active_connections: None,
            database_size: None,
            database_size_bytes: None,
            server_connections: None,
            max_connections: None,
            connections_headroom: None,
            connections_usage_percent: None,
            database_backends: None,
            error: Some(class),
        }
    }
}

/// `x` rounded to two decimals (percentages in the JSON).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Seconds since the Unix epoch (the `timestamp` of the JSON).
pub(crate) fn unix_now() -> f64 {
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
}
