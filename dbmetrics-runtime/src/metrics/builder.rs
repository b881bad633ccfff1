//! [`setup_database_monitoring`] and its options, [`DatabaseMetricsBuilder`].

use std::time::Duration;

use super::handle::{DatabaseMetrics, Parts};
use super::registry;
use crate::catalog::Catalog;
use crate::drivers::DefaultPool;
use crate::error::Error;
use crate::health::HealthConfig;
use crate::intern::intern;
use crate::naming::Naming;
use crate::pool::{MonitoredPool, Publishes};

/// Sets up monitoring of `pool` for `service`: describes every metric of the catalog, registers
/// the pool's series and starts the pool poller on the current Tokio runtime.
///
/// Equivalent to `DatabaseMetrics::builder(pool, service).build()`; see
/// [`DatabaseMetricsBuilder`] for the options (poll interval, pool name, slow-query log).
///
/// # Errors
/// - [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*` or
///   starts with `__`;
/// - [`Error::NoRuntime`] outside a Tokio runtime;
/// - [`Error::DuplicatePool`] when the service already monitors another (open) pool under the
///   same pool name.
///
/// Setting up the same service and the same pool twice returns the existing handle (one poller,
/// the options of the first call); when the second call names another pool label, the pool's
/// series move to that label (one pool is published under one label; the label given last
/// takes effect): a warning names the service and both labels, the old label's gauges drop to
/// 0 and its counters stay exported with their last values. A pool name whose pool
/// was closed or dropped can be given to a new pool. The poller stops when the pool is closed (gauges set to 0) or when the last
/// handle is dropped; see [`crate::pool`].
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub fn setup_database_monitoring<P: MonitoredPool>(
    pool: &P,
    service: &str,
) -> Result<DatabaseMetrics, Error> {
    DatabaseMetrics::builder(pool, service).build()
}

impl DatabaseMetrics {
    /// Query and transaction metrics for `service` without any pool (no poller, no runtime
    /// needed). Useful for code that talks to PostgreSQL without a supported pool, and in tests.
    /// The `function` label and the [`Naming`] follow the setting of the service's monitored
    /// pools, if any (off, and [`Naming::Service`], otherwise): they hold for the whole service.
    /// So does the [label limit](DatabaseMetricsBuilder::label_limit): run-time names recorded
    /// through this handle count against the one budget of the service.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*` or starts
    /// with `__`.
    pub fn new(service: &str) -> Result<Self, Error> {
        // Validated first: no budget is kept for a name that cannot be used.
        Catalog::new(service)?;
        let mut registry = registry::lock();
        let other = registry.any_of(service);
        let function_label = other.as_ref().is_some_and(|other| other.function_label());
        let naming = other.map_or(Naming::Service, |other| other.naming());
        let budget = registry.budget(service, Self::DEFAULT_LABEL_LIMIT);
        drop(registry);
        Self::without_pool(service, None, function_label, naming, budget)
    }

    /// Starts configuring monitoring of `pool` for `service`.
    pub fn builder<P: MonitoredPool>(pool: &P, service: &str) -> DatabaseMetricsBuilder<P> {
        DatabaseMetricsBuilder::new(pool.clone(), service)
    }
}

impl DatabaseMetrics {
    /// Series for the pool label `name` of this service without a poller (no gauges are
    /// set) and outside the registry: what a tracked pool records into when its pool cannot be
    /// monitored (no Tokio runtime, or `name` labels another open pool of the service).
    pub(crate) fn without_poller(&self, name: &str) -> DatabaseMetrics {
        let metrics = DatabaseMetrics::from_parts(Parts {
            catalog: self.catalog().clone(),
            pool_name: Some(intern(name)),
            publishes: self.publishes(),
            poll_interval: self.poll_interval(),
            slow_query_threshold: None,
            budget: self.budget().clone(),
            recorder: None,
        });
        let _series = metrics.pool_series();
        metrics
    }
}

/// Options of [`setup_database_monitoring`] and [`crate::monitor_database`].
///
/// An option left out takes its default for a new setup, and the value in force when the
/// service and pool are set up already; an option given that differs from the one in force is
/// [`Error::ConflictingSetup`], never silently dropped.
#[derive(Debug)]
#[must_use = "call .build() to start monitoring"]
pub struct DatabaseMetricsBuilder<P: MonitoredPool = DefaultPool> {
    pub(crate) pool: P,
    service: String,
    pub(crate) pool_name: String,
    /// The options given (`None`: left out).
    given: GivenOptions,
    /// What a left-out option is for a new setup.
    defaults: Options<Duration, Option<Duration>, usize, bool, Naming>,
    /// Health check settings for [`build_monitored`](Self::build_monitored).
    pub(crate) health: HealthConfig,
}

/// The options a setup gave (`None`: left out).
type GivenOptions = Options<
    Option<Duration>,
    Option<Option<Duration>>,
    Option<usize>,
    Option<bool>,
    Option<Naming>,
>;

/// The options of one setup.
#[derive(Clone, Copy, Debug)]
struct Options<I, S, L, F, N> {
    poll_interval: I,
    slow_query_threshold: S,
    label_limit: L,
    function_label: F,
    naming: N,
}

impl<P: MonitoredPool> DatabaseMetricsBuilder<P> {
    fn new(pool: P, service: &str) -> Self {
        Self {
            pool,
            service: service.to_owned(),
            pool_name: DatabaseMetrics::DEFAULT_POOL_NAME.to_owned(),
            given: Options {
                poll_interval: None,
                slow_query_threshold: None,
                label_limit: None,
                function_label: None,
                naming: None,
            },
            defaults: Options {
                poll_interval: DatabaseMetrics::DEFAULT_POLL_INTERVAL,
                slow_query_threshold: Some(DatabaseMetrics::DEFAULT_SLOW_QUERY_THRESHOLD),
                label_limit: DatabaseMetrics::DEFAULT_LABEL_LIMIT,
                function_label: false,
                naming: Naming::Service,
            },
            health: HealthConfig::default(),
        }
    }

    /// The service name given.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Left-out options default to those of `metrics` (a tracked pool's own label follows the
    /// metrics it was made from), and agree with any setup in force.
    pub(crate) fn defaults_from(mut self, metrics: &DatabaseMetrics) -> Self {
        self.defaults = Options {
            poll_interval: metrics.poll_interval(),
            slow_query_threshold: metrics.slow_query_threshold(),
            label_limit: metrics.label_limit(),
            function_label: metrics.function_label(),
            naming: metrics.naming(),
        };
        self
    }

    /// How often the poller reads the pool status (default 1 s, so a change shows within
    /// about a second; minimum 10 ms). Each tick costs the same whatever the pool's size.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.given.poll_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// The `pool` label (default `"default"`); tell several pools of one service apart. A pool
    /// the service already monitors under another label moves to this one (see
    /// [`setup_database_monitoring`]).
    pub fn pool_name(mut self, name: &str) -> Self {
        self.pool_name = name.to_owned();
        self
    }

    /// Log tracked calls at least this slow (`WARN`, target `dbmetrics::slow_query`, no SQL
    /// text); `None` turns the log off. Default 1 s.
    pub fn slow_query_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.given.slow_query_threshold = Some(threshold);
        self
    }

    /// How many distinct names given at run time this service admits as label values, of each
    /// kind: tables (tracker, middleware), transaction names (`track_transaction`,
    /// `transaction::run`), and function names (middleware methods). Default
    /// [`DatabaseMetrics::DEFAULT_LABEL_LIMIT`] (1000). Further names record under
    /// `table="_overflow"` (`transaction="_overflow"`, `function="_overflow"`), and every call
    /// is still counted once; series and memory stay bounded. The first name refused is logged
    /// (`WARN`, target `dbmetrics`, once per kind and service). Names written in attributes
    /// (`#[track_query(select, "content")]`) are bounded by the code: never counted, never
    /// capped.
    ///
    /// The limit is per service and per kind: every handle of the service (each pool's, those
    /// of [`DatabaseMetrics::new`]) and so every tracker, middleware and `transaction::run` of
    /// it draws on one budget. So every setup of one service has the same limit (a setup that
    /// leaves it out takes the one in force; one that gives another is
    /// [`Error::ConflictingSetup`]); handles made with `DatabaseMetrics::new` before the first
    /// setup take the limit that setup gives.
    pub fn label_limit(mut self, limit: usize) -> Self {
        self.given.label_limit = Some(limit);
        self
    }

    /// Adds a `function` label to `{service}_database_query_duration_seconds`: the name of the
    /// tracked function (`#[track_query]`: the fn's name, or `function = "..."`), of the
    /// repository method given to the middleware, or `track_query` for the tracker. Off by
    /// default: one series per function instead of per (operation, table), for teams that
    /// want per-method latency (as autometrics gives). Names written in code are bounded by the
    /// code; the middleware's method names by [`label_limit`](Self::label_limit).
    ///
    /// It shapes the series of the whole service: every setup of one service has the same
    /// setting (a setup that leaves it out takes the one in force; one that gives another is
    /// [`Error::ConflictingSetup`]).
    pub fn function_label(mut self, on: bool) -> Self {
        self.given.function_label = Some(on);
        self
    }

    /// Which names the metrics are recorded under: [`Naming::Service`] (the default,
    /// `{service}_database_*`) or [`Naming::OpenTelemetry`] (`db.client.operation.duration`,
    /// `db.client.connection.*`; see [`crate::catalog`]).
    ///
    /// It names every series of the whole service, so every setup of one service has the same
    /// naming (a setup that leaves it out takes the one in force; one that gives another is
    /// [`Error::ConflictingSetup`]).
    pub fn naming(mut self, naming: Naming) -> Self {
        self.given.naming = Some(naming);
        self
    }

    /// The health check settings of [`build_monitored`](Self::build_monitored) (default
    /// [`HealthConfig::default`]: a 800 ms bound). Checked there: a zero timeout or a
    /// percentage outside 0–100 is [`Error::HealthConfig`].
    pub fn health_config(mut self, config: HealthConfig) -> Self {
        self.health = config;
        self
    }

    /// Validates the names, describes the catalog, registers the pool series and starts the
    /// poller.
    ///
    /// # Errors
    /// See [`setup_database_monitoring`]; also [`Error::ConflictingSetup`] when the service (and
    /// pool) is set up already with other options than the ones given here.
    pub fn build(self) -> Result<DatabaseMetrics, Error> {
        // Validated first: a bad name is the error, whatever else is wrong.
        Catalog::new(&self.service)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "setup_database_monitoring",
            task: "the pool poller",
        })?;
        let pool = &self.pool;

        let mut active = registry::lock();
        match active.find(&self.service, &self.pool_name, pool) {
            registry::Found::OtherPool => {
                return Err(Error::DuplicatePool {
                    service: self.service,
                    pool: self.pool_name,
                });
            }
            registry::Found::Same(metrics) => {
                self.agrees_with(&metrics)?;
                if !metrics.poller_runs() {
                    // The poller is gone while the pool is open and the handle alive: the
                    // runtime it ran on was shut down. Start it again on this one.
                    metrics.spawn_poller(&runtime, pool);
                }
                return Ok(metrics);
            }
            registry::Found::Nothing => {}
        }
        // One pool is published under one label (two would count its connections twice in
        // every sum): a pool this service already monitors moves to the name given now.
        if let Some(metrics) = active.monitoring(&self.service, pool) {
            self.agrees_with(&metrics)?;
            if let Some(metrics) = active.relabel(&self.service, pool, &self.pool_name) {
                return Ok(metrics);
            }
        }

        // The function label and the naming shape every series of the service: one setting
        // for all.
        let (function_label, naming) = match active.any_of(&self.service) {
            Some(other) => {
                self.agrees_on_function_label(&other)?;
                self.agrees_on_naming(&other)?;
                (other.function_label(), other.naming())
            }
            None => (
                self.given
                    .function_label
                    .unwrap_or(self.defaults.function_label),
                self.given.naming.unwrap_or(self.defaults.naming),
            ),
        };
        // The label limit holds for the whole service too: one budget for all its handles.
        let budget = active
            .budget_for_setup(
                &self.service,
                self.given.label_limit,
                self.defaults.label_limit,
            )
            .map_err(|in_force| Error::ConflictingSetup {
                service: self.service.clone(),
                pool: active.any_of(&self.service).map_or_else(
                    || DatabaseMetrics::DEFAULT_POOL_NAME.to_owned(),
                    |other| other.pool_name().to_owned(),
                ),
                option: "label_limit",
                existing: in_force.to_string(),
                requested: self.given.label_limit.unwrap_or_default().to_string(),
            })?;
        let catalog = Catalog::with_naming(&self.service, naming)?;
        // Pool names are few and live as long as the process's metrics; a static str keeps
        // the recording path free of reference counting.
        let metrics = DatabaseMetrics::from_parts(Parts {
            catalog: catalog.with_function_label(function_label),
            pool_name: Some(intern(&self.pool_name)),
            publishes: Publishes {
                created: P::COUNTS_CREATED,
                discarded: P::DISCARDS,
                cancelled_on_server: P::CANCELS_ON_SERVER,
            },
            poll_interval: self
                .given
                .poll_interval
                .unwrap_or(self.defaults.poll_interval),
            slow_query_threshold: self
                .given
                .slow_query_threshold
                .unwrap_or(self.defaults.slow_query_threshold),
            budget,
            recorder: None,
        });
        // Describes the catalog and registers the pool series, so that they render at once.
        let _series = metrics.pool_series();
        metrics.spawn_poller(&runtime, pool);
        active.register(self.service, self.pool_name, &self.pool, &metrics);
        Ok(metrics)
    }

    /// `Err` when an option given here differs from the one `existing` was set up with.
    fn agrees_with(&self, existing: &DatabaseMetrics) -> Result<(), Error> {
        let conflict = |option: &'static str, in_force: String, requested: String| {
            Err(Error::ConflictingSetup {
                service: self.service.clone(),
                pool: existing.pool_name().to_owned(),
                option,
                existing: in_force,
                requested,
            })
        };
        if let Some(interval) = self.given.poll_interval
            && interval != existing.poll_interval()
        {
            return conflict(
                "poll_interval",
                format!("{:?}", existing.poll_interval()),
                format!("{interval:?}"),
            );
        }
        if let Some(threshold) = self.given.slow_query_threshold
            && threshold != existing.slow_query_threshold()
        {
            return conflict(
                "slow_query_threshold",
                format!("{:?}", existing.slow_query_threshold()),
                format!("{threshold:?}"),
            );
        }
        if let Some(limit) = self.given.label_limit
            && limit != existing.label_limit()
        {
            return conflict(
                "label_limit",
                existing.label_limit().to_string(),
                limit.to_string(),
            );
        }
        self.agrees_on_function_label(existing)?;
        self.agrees_on_naming(existing)
    }

    /// `Err` when this setup gives another naming than `existing`'s, which holds for the
    /// whole service.
    fn agrees_on_naming(&self, existing: &DatabaseMetrics) -> Result<(), Error> {
        match self.given.naming {
            Some(naming) if naming != existing.naming() => Err(Error::ConflictingSetup {
                service: self.service.clone(),
                pool: existing.pool_name().to_owned(),
                option: "naming",
                existing: format!("{:?}", existing.naming()),
                requested: format!("{naming:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// `Err` when this setup gives a function label setting other than `existing`'s, which
    /// holds for the whole service.
    fn agrees_on_function_label(&self, existing: &DatabaseMetrics) -> Result<(), Error> {
        match self.given.function_label {
            Some(on) if on != existing.function_label() => Err(Error::ConflictingSetup {
                service: self.service.clone(),
                pool: existing.pool_name().to_owned(),
                option: "function_label",
                existing: existing.function_label().to_string(),
                requested: on.to_string(),
            }),
            _ => Ok(()),
        }
    }
}
