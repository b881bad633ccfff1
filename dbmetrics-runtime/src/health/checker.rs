//! [`DatabaseHealthChecker`]: the summary and the four detailed checks, each bounded by one
//! deadline, with concurrent calls sharing one run.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{HealthConfig, TIMEOUT};
use super::probe::{CATALOG_QUERY, SELECT_ONE, Session};
use super::report::{
    ConnectivityCheck, DatabaseResourcesCheck, DetailedHealth, HealthChecks, HealthStatus,
    HealthSummary, PoolCheck, QueryPerformanceCheck, round2, unix_now,
};
use super::single_flight::SingleFlight;
use crate::drivers::{DefaultPool, HealthCheckable};
use crate::error::Error;
use crate::pool::PoolStatus;

/// Health checks of one pool and its database. Cheap to clone (an `Arc` inside).
///
/// Works with every pool of the enabled drivers that can run a query ([`HealthCheckable`]);
/// the checker's type does not name the pool. See the [`health`](crate::health) module for
/// what is bounded, which connection a check uses and how results are shared.
#[derive(Clone)]
pub struct DatabaseHealthChecker {
    inner: Arc<Inner>,
}

struct Inner {
    target: Box<dyn Target>,
    service: String,
    config: HealthConfig,
    summary: SingleFlight<HealthSummary>,
    detailed: SingleFlight<DetailedHealth>,
}

impl fmt::Debug for DatabaseHealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseHealthChecker")
            .field("service", &self.inner.service)
            .field("config", &self.inner.config)
            .field("pool_status", &self.inner.target.status())
            .finish()
    }
}

/// Options of a [`DatabaseHealthChecker`]: from [`DatabaseHealthChecker::builder`].
#[derive(Debug)]
#[must_use = "call .build() to get the checker"]
pub struct DatabaseHealthCheckerBuilder<P: HealthCheckable = DefaultPool> {
    pool: P,
    service: String,
    config: HealthConfig,
}

impl<P: HealthCheckable> DatabaseHealthCheckerBuilder<P> {
    /// Bound of every health call (default 800 ms, below Kubernetes' default probe timeout of
    /// 1 s). Must be above zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// `connectivity` is degraded when acquiring plus `SELECT 1` takes this long (default 250 ms).
    pub fn slow_connectivity(mut self, threshold: Duration) -> Self {
        self.config.slow_connectivity = threshold;
        self
    }

    /// `query_performance` is degraded when `SELECT 1` takes this long (default 125 ms).
    pub fn slow_simple_query(mut self, threshold: Duration) -> Self {
        self.config.slow_simple_query = threshold;
        self
    }

    /// `query_performance` is degraded when the catalog query takes this long (default 400 ms).
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
    pub fn new<P: HealthCheckable>(pool: P, service: &str) -> Self {
        Self::from_parts(pool, service.to_owned(), HealthConfig::default())
    }

    /// A builder for timeouts, thresholds and the result cache.
    pub fn builder<P: HealthCheckable>(pool: P, service: &str) -> DatabaseHealthCheckerBuilder<P> {
        DatabaseHealthCheckerBuilder {
            pool,
            service: service.to_owned(),
            config: HealthConfig::default(),
        }
    }

    /// A checker with `config`, validated as [`DatabaseHealthCheckerBuilder::build`] does.
    pub(crate) fn with_config<P: HealthCheckable>(
        pool: P,
        service: &str,
        config: HealthConfig,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::from_parts(pool, service.to_owned(), config))
    }

    fn from_parts<P: HealthCheckable>(pool: P, service: String, config: HealthConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                target: Box::new(pool),
                service,
                config,
                summary: SingleFlight::new(),
                detailed: SingleFlight::new(),
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
        let inner = &*self.inner;
        let asked = Instant::now();
        let deadline = asked + inner.config.timeout;
        let run = || async {
            let pool = inner.pool_check();
            let probe = inner.target.connectivity(asked, deadline).await;
            inner.summary_from(probe, pool)
        };
        match inner
            .summary
            .get_or_run(asked, deadline, inner.config.cache_ttl, run)
            .await
        {
            Some(summary) => summary,
            None => inner.summary_from(
                Probe::failed(TIMEOUT, inner.config.timeout),
                inner.pool_check(),
            ),
        }
    }

    /// The four checks and their worst status. Returns within [`HealthConfig::timeout`];
    /// never fails: a failing check is `unhealthy` with an `error` class.
    pub async fn comprehensive_health_check(&self) -> DetailedHealth {
        let inner = &*self.inner;
        let asked = Instant::now();
        let deadline = asked + inner.config.timeout;
        let run = || async {
            let pool = inner.pool_check();
            match inner.target.detailed(asked, deadline, &inner.config).await {
                Ok((probe, query_performance, database_resources)) => {
                    let connectivity = probe.connectivity_check(&inner.config);
                    let overall_status = connectivity
                        .status
                        .worst(pool.status)
                        .worst(query_performance.status)
                        .worst(database_resources.status);
                    DetailedHealth {
                        service: inner.service.clone(),
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
                Err(probe) => inner.detailed_failure(probe, pool),
            }
        };
        match inner
            .detailed
            .get_or_run(asked, deadline, inner.config.cache_ttl, run)
            .await
        {
            Some(detailed) => detailed,
            None => inner.detailed_failure(
                Probe::failed(TIMEOUT, inner.config.timeout),
                inner.pool_check(),
            ),
        }
    }
}

impl Inner {
    fn detailed_failure(&self, probe: Probe, pool: PoolCheck) -> DetailedHealth {
        let class = probe.error.unwrap_or(TIMEOUT);
        DetailedHealth {
            service: self.service.clone(),
            overall_status: HealthStatus::Unhealthy,
            checks: HealthChecks {
                connectivity: probe.connectivity_check(&self.config),
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
        let connectivity = probe.connectivity_check(&self.config);
        HealthSummary {
            service: self.service.clone(),
            status: connectivity.status.worst(pool.status),
            connectivity: connectivity.connectivity,
            response_time_seconds: connectivity.response_time_seconds,
            pool_utilization_percent: pool.utilization_percent,
            active_connections: pool.active_connections,
            timestamp: unix_now(),
            pool_size: pool.pool_size,
            waiting_callers: pool.waiting_callers,
            pool_max_size: pool.pool_max_size,
            pool_checked_out: pool.pool_checked_out,
            error: connectivity.error,
        }
    }

    fn pool_check(&self) -> PoolCheck {
        let Some(status) = self.target.status() else {
            // A closed pool: nothing to use.
            return PoolCheck {
                status: HealthStatus::Unhealthy,
                pool_size: 0,
                active_connections: 0,
                utilization_percent: 0.0,
                idle_connections: 0,
                open_connections: 0,
                waiting_callers: 0,
                pool_max_size: 0,
                pool_checked_out: 0,
            };
        };
        let active = status.active();
        let waiting = status.waiting.unwrap_or(0);
        let utilization = if status.max == 0 {
            100.0
        } else {
            round2(active as f64 * 100.0 / status.max as f64)
        };
        let degraded = utilization >= self.config.pool_utilization_degraded || waiting > 0;
        PoolCheck {
            status: if degraded {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            },
            pool_size: status.max,
            active_connections: active,
            utilization_percent: utilization,
            idle_connections: status.idle,
            open_connections: status.open,
            waiting_callers: waiting,
            pool_max_size: status.max,
            pool_checked_out: active,
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the checker checks, whatever the pool's driver.
trait Target: Send + Sync + 'static {
    fn status(&self) -> Option<PoolStatus>;

    /// A connection, `SELECT 1` on it, timed from `asked`.
    fn connectivity(&self, asked: Instant, deadline: Instant) -> BoxFuture<'_, Probe>;

    /// Connectivity, then the query performance and database resources checks on the same
    /// connection; `Err` when there was no working connection.
    fn detailed<'a>(
        &'a self,
        asked: Instant,
        deadline: Instant,
        config: &'a HealthConfig,
    ) -> BoxFuture<'a, Result<(Probe, QueryPerformanceCheck, DatabaseResourcesCheck), Probe>>;
}

impl<P: HealthCheckable> Target for P {
    fn status(&self) -> Option<PoolStatus> {
        crate::pool::MonitoredPool::status(self)
    }

    fn connectivity(&self, asked: Instant, deadline: Instant) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            match Session::open(self, deadline).await {
                Err(class) => Probe::failed(class, asked.elapsed()),
                Ok(mut session) => match session.first_row(SELECT_ONE, deadline).await {
                    Ok(_) => Probe::ok(asked.elapsed(), session.source()),
                    Err(class) => Probe::failed(class, asked.elapsed()),
                },
            }
        })
    }

    fn detailed<'a>(
        &'a self,
        asked: Instant,
        deadline: Instant,
        config: &'a HealthConfig,
    ) -> BoxFuture<'a, Result<(Probe, QueryPerformanceCheck, DatabaseResourcesCheck), Probe>> {
        Box::pin(async move {
            let mut session = Session::open(self, deadline)
                .await
                .map_err(|class| Probe::failed(class, asked.elapsed()))?;
            session
                .first_row(SELECT_ONE, deadline)
                .await
                .map_err(|class| Probe::failed(class, asked.elapsed()))?;
            let connectivity = Probe::ok(asked.elapsed(), session.source());

            // query performance: SELECT 1, then a catalog query, each timed
            let mut query_performance = QueryPerformanceCheck {
                status: HealthStatus::Healthy,
                simple_query_time_seconds: None,
                complex_query_time_seconds: None,
                error: None,
            };
            let mut failed = None;
            for (sql, threshold) in [
                (SELECT_ONE, config.slow_simple_query),
                (CATALOG_QUERY, config.slow_complex_query),
            ] {
                let started = Instant::now();
                match session.first_row(sql, deadline).await {
                    Ok(_) => {
                        let took = started.elapsed();
                        let field = if sql == SELECT_ONE {
                            &mut query_performance.simple_query_time_seconds
                        } else {
                            &mut query_performance.complex_query_time_seconds
                        };
                        *field = Some(took.as_secs_f64());
                        if took >= threshold {
                            query_performance.status =
                                query_performance.status.worst(HealthStatus::Degraded);
                        }
                    }
                    Err(class) => {
                        query_performance.status = HealthStatus::Unhealthy;
                        query_performance.error = Some(class);
                        failed = Some(class);
                        break;
                    }
                }
            }

            // database resources: connections, size, headroom; needs a working connection
            let database_resources = match failed {
                Some(class) => DatabaseResourcesCheck::failed(class),
                None => match session.resources(deadline).await {
                    Ok(figures) => figures.check(config),
                    Err(class) => DatabaseResourcesCheck::failed(class),
                },
            };
            Ok((connectivity, query_performance, database_resources))
        })
    }
}
