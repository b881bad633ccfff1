//! What a health check runs on the database: a [`Session`] on one connection, the SQL, and the
//! figures read from the server.
//!
//! A session's connection goes back to the pool only when its last query answered in time;
//! one whose query failed, timed out, or was abandoned because the caller dropped the health
//! check mid-query, is removed from the pool and closed.

use tokio::time::{Instant, timeout_at};

use super::config::{HealthConfig, TIMEOUT};
use super::report::{DatabaseResourcesCheck, HealthStatus, round2};
use crate::drivers::{HealthCheckable, ProbeFailure};

/// `SELECT 1`: connectivity and the simple query time.
pub(super) const SELECT_ONE: &str = "SELECT 1";

/// A small query over the catalog: a join and an aggregate, planned and run by the server.
pub(super) const CATALOG_QUERY: &str = "SELECT count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Connections of this database, client connections of the server, `max_connections`, and
/// the database's size in bytes and for people; every column as text, so that each driver reads
/// it the same way.
const RESOURCES_QUERY: &str = "SELECT \
       (SELECT count(*) FROM pg_catalog.pg_stat_activity \
         WHERE datname = current_database())::int8::text, \
       (SELECT count(*) FROM pg_catalog.pg_stat_activity \
         WHERE backend_type = 'client backend')::int8::text, \
       current_setting('max_connections')::int8::text, \
       pg_catalog.pg_database_size(current_database())::int8::text, \
       pg_catalog.pg_size_pretty(pg_catalog.pg_database_size(current_database()))";

/// One connection a check holds, from the pool or dedicated.
pub(super) struct Session<P: HealthCheckable> {
    connection: Option<P::ProbeConnection>,
    /// `"pool"` or `"dedicated"`.
    source: &'static str,
    /// A query was started and has not answered in time: the connection is discarded.
    in_flight: bool,
}

impl<P: HealthCheckable> Session<P> {
    /// A connection for the checks, bounded by `deadline`.
    pub(super) async fn open(pool: &P, deadline: Instant) -> Result<Self, &'static str> {
        match timeout_at(deadline, pool.probe()).await {
            Err(_) => Err(TIMEOUT),
            Ok(Err(failure)) => Err(log_failure(failure)),
            Ok(Ok(probe)) => Ok(Self {
                connection: Some(probe.connection),
                source: if probe.dedicated { "dedicated" } else { "pool" },
                in_flight: false,
            }),
        }
    }

    /// `"pool"` or `"dedicated"`.
    pub(super) fn source(&self) -> &'static str {
        self.source
    }

    /// Runs `sql` until `deadline`; the first row's columns as text, or the error class. After
    /// a failure the session must not be used again: its connection will be discarded.
    pub(super) async fn first_row(
        &mut self,
        sql: &'static str,
        deadline: Instant,
    ) -> Result<Vec<Option<String>>, &'static str> {
        let connection = self.connection.as_mut().ok_or(TIMEOUT)?;
        // If the caller drops this future during the query, the drop sees the flag and keeps
        // the connection out of the pool.
        self.in_flight = true;
        let row = match timeout_at(deadline, P::first_row(connection, sql)).await {
            Err(_) => return Err(TIMEOUT),
            Ok(result) => result.map_err(log_failure)?,
        };
        self.in_flight = false;
        Ok(row)
    }

    /// Reads the server's figures for the `database_resources` check.
    pub(super) async fn resources(
        &mut self,
        deadline: Instant,
    ) -> Result<ResourceFigures, &'static str> {
        let row = self.first_row(RESOURCES_QUERY, deadline).await?;
        ResourceFigures::from_row(&row).ok_or(crate::classify::OTHER)
    }
}

impl<P: HealthCheckable> Drop for Session<P> {
    fn drop(&mut self) {
        if self.in_flight
            && let Some(connection) = self.connection.take()
        {
            P::discard(connection);
        }
    }
}

/// What the resources query reads from the server.
pub(super) struct ResourceFigures {
    database_connections: i64,
    server_connections: i64,
    max_connections: i64,
    size_bytes: i64,
    size_pretty: String,
}

impl ResourceFigures {
    fn from_row(row: &[Option<String>]) -> Option<Self> {
        let int = |i: usize| row.get(i)?.as_deref()?.parse::<i64>().ok();
        Some(Self {
            database_connections: int(0)?,
            server_connections: int(1)?,
            max_connections: int(2)?,
            size_bytes: int(3)?,
            size_pretty: row.get(4)?.clone()?,
        })
    }

    /// The `database_resources` check from these figures.
    pub(super) fn check(self, config: &HealthConfig) -> DatabaseResourcesCheck {
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
            database_backends: Some(self.database_connections),
            error: None,
        }
    }
}

/// Logs why a check failed, for the operator (`WARN`, target `dbmetrics::health`): the
/// driver's text for fixed health queries and connection attempts, which holds no SQL
/// parameters and no password. The JSON only ever carries the class.
fn log_failure(failure: ProbeFailure) -> &'static str {
    tracing::warn!(
        target: "dbmetrics::health",
        error_type = failure.class,
        error = %failure.detail,
        "database health check failed"
    );
    failure.class
}
