//! [`DatabaseMetrics`]: the handle tracked calls record through, and its setup.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata};
use tokio::sync::watch;

use crate::catalog::{Catalog, Metric, MetricInfo};
use crate::error::Error;
use crate::pool::{PoolHandles, PoolMonitor};
use crate::record::{CallSite, Outcome, QueryMetrics, Sample, SiteKind};

pub(crate) static METADATA: Metadata<'static> =
    Metadata::new("dbmetrics", Level::INFO, Some(module_path!()));

/// The pool label used when none is given.
pub const DEFAULT_POOL_NAME: &str = "default";
/// How often the pool poller reads `Pool::status()` by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Tracked calls at least this slow are logged (`WARN`, target `dbmetrics::slow_query`) by default.
pub const DEFAULT_SLOW_QUERY_THRESHOLD: Duration = Duration::from_secs(1);

/// Sets up monitoring of `pool` for `service`: describes every metric of the catalog, registers
/// the pool's series and starts the pool poller on the current Tokio runtime.
///
/// Equivalent to `DatabaseMetrics::builder(pool, service).build()`; see
/// [`DatabaseMetricsBuilder`] for the options (poll interval, pool name, slow-query log).
///
/// # Errors
/// - [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*`;
/// - [`Error::NoRuntime`] outside a Tokio runtime;
/// - [`Error::DuplicatePool`] when the service already monitors another (open) pool under the
///   same pool name.
///
/// Setting up the same service and the same pool twice returns the existing handle (one poller,
/// the options of the first call). A pool name whose pool was closed or dropped can be given to
/// a new pool. The poller stops when the pool is closed (gauges set to 0) or when the last
/// handle is dropped; see [`crate::pool`].
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub fn setup_database_monitoring(
    pool: &deadpool_postgres::Pool,
    service: &str,
) -> Result<DatabaseMetrics, Error> {
    DatabaseMetrics::builder(pool, service).build()
}

/// The metrics of one service (and, when set up with a pool, of that pool).
///
/// A cheap `Clone` handle over an `Arc`: give a clone to every repository. It implements
/// [`QueryMetrics`], which is what `#[track_query]` records through. Every sample goes to the
/// `metrics` recorder installed in the process (see [`crate::exporter`]); install it before
/// setting up, so that the metric descriptions reach it.
#[derive(Clone)]
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub struct DatabaseMetrics {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) catalog: Catalog,
    pub(crate) pool_name: &'static str,
    poll_interval: Duration,
    slow_query_threshold: Option<Duration>,
    sites: SiteCache,
    slow_log: SlowLog,
    /// Handles of sites recording under more than one table (see `Inner::other_table`).
    other_tables: Mutex<Vec<(u32, &'static str, Arc<SiteHandles>)>>,
    pub(crate) pool: Option<Arc<PoolHandles>>,
    /// Never sent on: dropped with the last handle, which stops the poller at once. Its
    /// receiver count says whether a poller runs.
    stop: watch::Sender<()>,
    /// The recorder this handle's query and transaction series live in, when it is not the
    /// process's (a `testing::MetricsCapture`).
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

impl fmt::Debug for DatabaseMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseMetrics")
            .field("service", &self.service())
            .field("pool", &self.inner.pool_name)
            .finish_non_exhaustive()
    }
}

impl DatabaseMetrics {
    /// Starts configuring monitoring of `pool` for `service`.
    pub fn builder(pool: &deadpool_postgres::Pool, service: &str) -> DatabaseMetricsBuilder {
        DatabaseMetricsBuilder {
            pool: pool.clone(),
            service: service.to_owned(),
            pool_name: DEFAULT_POOL_NAME.to_owned(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            slow_query_threshold: Some(DEFAULT_SLOW_QUERY_THRESHOLD),
        }
    }

    /// Query and transaction metrics for `service` without any pool (no poller, no runtime
    /// needed). Useful for code that talks to PostgreSQL without deadpool, and in tests.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `service` does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn new(service: &str) -> Result<Self, Error> {
        let catalog = Catalog::new(service)?;
        catalog.describe();
        Ok(Self::without_pool(catalog, None))
    }

    /// Like [`DatabaseMetrics::new`], but every series is registered with `recorder` instead
    /// of the process's recorder, whichever thread records.
    #[cfg(feature = "testing")]
    pub(crate) fn with_recorder(
        service: &str,
        recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    ) -> Result<Self, Error> {
        let catalog = Catalog::new(service)?;
        metrics::with_local_recorder(&*recorder, || catalog.describe());
        Ok(Self::without_pool(catalog, Some(recorder)))
    }

    fn without_pool(
        catalog: Catalog,
        recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    ) -> Self {
        Self::from_parts(
            catalog,
            DEFAULT_POOL_NAME,
            DEFAULT_POLL_INTERVAL,
            Some(DEFAULT_SLOW_QUERY_THRESHOLD),
            None,
            recorder,
        )
    }

    fn from_parts(
        catalog: Catalog,
        pool_name: &'static str,
        poll_interval: Duration,
        slow_query_threshold: Option<Duration>,
        pool: Option<Arc<PoolHandles>>,
        recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                pool_name,
                poll_interval,
                slow_query_threshold,
                sites: SiteCache::new(),
                slow_log: SlowLog::new(),
                other_tables: Mutex::new(Vec::new()),
                pool,
                stop: watch::Sender::new(()),
                recorder,
            }),
        }
    }

    /// Starts the poller of `pool` on `runtime` (the pool must be this handle's pool).
    fn spawn_poller(&self, runtime: &tokio::runtime::Handle, pool: &deadpool_postgres::Pool) {
        if let Some(handles) = &self.inner.pool {
            PoolMonitor::spawn(
                runtime,
                pool,
                handles.clone(),
                self.inner.stop.subscribe(),
                self.inner.poll_interval,
            );
        }
    }

    /// The service name every metric name starts with.
    pub fn service(&self) -> &str {
        self.inner.catalog.service()
    }

    /// The `pool` label of this handle's pool metrics.
    pub fn pool_name(&self) -> &str {
        self.inner.pool_name
    }

    /// How often the pool poller reads the pool status ([`DEFAULT_POLL_INTERVAL`] unless set
    /// with [`DatabaseMetricsBuilder::poll_interval`]).
    pub fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    /// The metric catalog of this service, keyed by full metric name.
    pub fn get_metrics(&self) -> BTreeMap<String, MetricInfo> {
        self.inner.catalog.entries()
    }

    /// The catalog of this service (metric names).
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }
}

impl QueryMetrics for DatabaseMetrics {
    #[inline]
    fn record(&self, sample: &Sample) {
        self.inner.record(sample)
    }
}

impl Inner {
    #[inline]
    fn record(&self, sample: &Sample) {
        match &self.recorder {
            None => self.record_sample(sample),
            // Handles are registered lazily (a site's first call, an error class's first
            // occurrence): make this handle's recorder the current one while that can happen.
            Some(recorder) => {
                metrics::with_local_recorder(&**recorder, || self.record_sample(sample))
            }
        }
    }

    #[inline]
    fn record_sample(&self, sample: &Sample) {
        match self
            .sites
            .get_or_init(sample.site.id(), || SiteHandles::new(&self.catalog, sample))
        {
            Some(handles)
                if std::ptr::eq(handles.table, sample.table) || handles.table == sample.table =>
            {
                handles.record(sample)
            }
            // One site, another table: a trait's default method or a generic impl whose `Self`
            // types have different default tables.
            Some(_) => self.other_table(sample).record(sample),
            // More distinct sites than the cache holds: register per call (allocates, still correct).
            None => SiteHandles::new(&self.catalog, sample).record(sample),
        }
        if let Some(threshold) = self.slow_query_threshold
            && sample.elapsed >= threshold
        {
            let _logged = self.slow_log.log(self.catalog.service(), sample);
        }
    }
}

impl Inner {
    #[cold]
    fn other_table(&self, sample: &Sample) -> Arc<SiteHandles> {
        let mut others = self
            .other_tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = sample.site.id();
        if let Some((_, _, handles)) = others
            .iter()
            .find(|(site, table, _)| *site == id && *table == sample.table)
        {
            return handles.clone();
        }
        let handles = Arc::new(SiteHandles::new(&self.catalog, sample));
        others.push((id, sample.table, handles.clone()));
        handles
    }
}

/// The slow-call log of one `DatabaseMetrics`: at most one line a second, which says how many
/// slow calls it stands for, so that an incident that slows every call does not flood the logs.
struct SlowLog {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last line; `u64::MAX` before the first.
    last_ms: AtomicU64,
    /// Slow calls not logged since the last line.
    suppressed: AtomicU64,
}

impl SlowLog {
    const EVERY_MS: u64 = 1000;

    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs `sample` unless a line was written less than a second ago; says whether it did.
    #[cold]
    fn log(&self, service: &str, sample: &Sample) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now >= last.saturating_add(Self::EVERY_MS);
        if !due
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let also = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: "dbmetrics::slow_query",
            service,
            operation = sample.operation().map(|o| o.as_str()).unwrap_or("transaction"),
            table = sample.table,
            function = sample.site.name(),
            module = sample.site.module(),
            result = sample.outcome.result(),
            elapsed_seconds = sample.elapsed.as_secs_f64(),
            slow_calls_not_logged = also,
            "slow database call"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Operation;

    #[test]
    fn the_slow_log_writes_at_most_a_line_a_second() {
        static SITE: CallSite = CallSite::query(Operation::Select, Some("t"), "f", "m");
        let sample = Sample {
            site: &SITE,
            table: "t",
            outcome: Outcome::Success,
            elapsed: Duration::from_secs(2),
        };
        let log = SlowLog::new();
        let written = (0..100).filter(|_| log.log("svc", &sample)).count();
        assert_eq!(written, 1);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 99);
        // A second later the next line is written, and it counts the 99 it stands for.
        let log_epoch_shifted = SlowLog {
            epoch: log.epoch - Duration::from_millis(1500),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(99),
        };
        assert!(log_epoch_shifted.log("svc", &sample));
        assert_eq!(log_epoch_shifted.suppressed.load(Ordering::Relaxed), 0);
    }
}

/// Options of [`setup_database_monitoring`].
#[derive(Debug)]
#[must_use = "call .build() to start monitoring"]
pub struct DatabaseMetricsBuilder {
    pool: deadpool_postgres::Pool,
    service: String,
    pool_name: String,
    poll_interval: Duration,
    slow_query_threshold: Option<Duration>,
}

impl DatabaseMetricsBuilder {
    /// How often the poller reads the pool status (default 1 s, so a change shows within
    /// about a second; minimum 10 ms). Each tick costs the same whatever the pool's size.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The `pool` label (default `"default"`); tell several pools of one service apart.
    pub fn pool_name(mut self, name: &str) -> Self {
        self.pool_name = name.to_owned();
        self
    }

    /// Log tracked calls at least this slow (`WARN`, target `dbmetrics::slow_query`, no SQL
    /// text); `None` turns the log off. Default 1 s.
    pub fn slow_query_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_query_threshold = threshold;
        self
    }

    /// Validates the names, describes the catalog, registers the pool series and starts the
    /// poller.
    ///
    /// # Errors
    /// See [`setup_database_monitoring`].
    pub fn build(self) -> Result<DatabaseMetrics, Error> {
        let catalog = Catalog::new(&self.service)?;
        let pool = self.pool;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: "setup_database_monitoring",
            task: "the pool poller",
        })?;

        let mut active = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
        active.retain(Registration::is_current);
        if let Some(existing) = active
            .iter()
            .find(|r| r.service == self.service && r.pool_name == self.pool_name)
        {
            if !existing.is_for(&pool) {
                return Err(Error::DuplicatePool {
                    service: self.service,
                    pool: self.pool_name,
                });
            }
            if let Some(inner) = existing.metrics.upgrade() {
                let metrics = DatabaseMetrics { inner };
                if metrics.inner.stop.receiver_count() == 0 {
                    // The poller is gone while the pool is open and the handle alive: the
                    // runtime it ran on was shut down. Start it again on this one.
                    metrics.spawn_poller(&runtime, &pool);
                }
                return Ok(metrics);
            }
        }

        catalog.describe();
        // Pool names are few and live as long as the process's metrics; a static str keeps
        // the recording path free of reference counting.
        let pool_name: &'static str = intern(&self.pool_name);
        let handles = PoolHandles::new(&catalog, pool_name);
        let metrics = DatabaseMetrics::from_parts(
            catalog,
            pool_name,
            self.poll_interval,
            self.slow_query_threshold,
            Some(handles),
            None,
        );
        metrics.spawn_poller(&runtime, &pool);
        active.push(Registration {
            service: self.service,
            pool_name: self.pool_name,
            pool: pool.weak(),
            metrics: metrics.downgrade(),
        });
        Ok(metrics)
    }
}

/// The metrics already monitoring `pool` for `service`, under whatever pool label.
pub(crate) fn monitor_of(service: &str, pool: &deadpool_postgres::Pool) -> Option<DatabaseMetrics> {
    let active = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
    active
        .iter()
        .filter(|r| r.service == service && r.is_current() && r.is_for(pool))
        .find_map(|r| r.metrics.upgrade())
        .map(|inner| DatabaseMetrics { inner })
}

/// Which (service, pool label) pairs are monitored, and for which pool, so that a second
/// setup shares the first handle (and its one poller).
static ACTIVE: Mutex<Vec<Registration>> = Mutex::new(Vec::new());

struct Registration {
    service: String,
    pool_name: String,
    // Weak: never keeps a pool open. It keeps the pool's allocation, so the address that
    // identifies the pool cannot be reused by another pool while this entry exists.
    pool: deadpool_postgres::WeakPool,
    metrics: Weak<Inner>,
}

impl Registration {
    /// Still in force: somebody holds the metrics, and the pool is open. A closed or dropped
    /// pool frees its label for a new pool (a reconnect after `close()`).
    fn is_current(&self) -> bool {
        self.metrics.strong_count() > 0 && self.pool.upgrade().is_some_and(|pool| !pool.is_closed())
    }

    fn is_for(&self, pool: &deadpool_postgres::Pool) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|registered| pool_id(&registered) == pool_id(pool))
    }
}

fn pool_id(pool: &deadpool_postgres::Pool) -> usize {
    // The manager lives inside the pool's shared state: its address identifies the pool.
    std::ptr::from_ref(pool.manager()) as usize
}

/// Interns a pool or service label value for the life of the process.
pub(crate) fn intern(value: &str) -> &'static str {
    static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = interned.iter().find(|s| **s == value) {
        return existing;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    interned.push(leaked);
    leaked
}

/// Handles of one call site in one [`DatabaseMetrics`]: resolved once, then reused.
struct SiteHandles {
    /// The table these handles are labelled with.
    table: &'static str,
    duration: [Histogram; 3],
    transactions: Option<[Counter; 3]>,
    errors: ErrorCounters,
}

impl SiteHandles {
    fn new(catalog: &Catalog, sample: &Sample) -> Self {
        const RESULTS: [&str; 3] = ["success", "error", "cancelled"];
        match sample.site.kind() {
            SiteKind::Query { operation, .. } => {
                let name = catalog.name(Metric::QueryDuration);
                let duration = RESULTS.map(|result| {
                    register_histogram(
                        name,
                        vec![
                            Label::from_static_parts("operation", operation.as_str()),
                            Label::from_static_parts("table", sample.table),
                            Label::from_static_parts("result", result),
                        ],
                    )
                });
                Self {
                    table: sample.table,
                    duration,
                    transactions: None,
                    errors: ErrorCounters::new(catalog, operation.as_str(), sample.table),
                }
            }
            SiteKind::Transaction { name: transaction } => {
                let labels = |result| {
                    vec![
                        Label::from_static_parts("transaction", transaction),
                        Label::from_static_parts("result", result),
                    ]
                };
                let duration_name = catalog.name(Metric::TransactionDuration);
                let total_name = catalog.name(Metric::Transactions);
                Self {
                    table: sample.table,
                    duration: RESULTS.map(|r| register_histogram(duration_name, labels(r))),
                    transactions: Some(RESULTS.map(|r| register_counter(total_name, labels(r)))),
                    errors: ErrorCounters::new(catalog, "transaction", transaction),
                }
            }
        }
    }

    #[inline]
    fn record(&self, sample: &Sample) {
        let i = sample.outcome.index();
        self.duration[i].record(sample.elapsed.as_secs_f64());
        if let Some(total) = &self.transactions {
            total[i].increment(1);
        }
        if let Outcome::Error { error_type } = sample.outcome {
            self.errors.increment(error_type);
        }
    }
}

/// `errors_total` counters of one site, by error class (registered on first occurrence).
struct ErrorCounters {
    name: KeyName,
    operation: &'static str,
    table: &'static str,
    by_type: Mutex<Vec<(&'static str, Counter)>>,
}

impl ErrorCounters {
    fn new(catalog: &Catalog, operation: &'static str, table: &'static str) -> Self {
        Self {
            name: catalog.name(Metric::Errors).clone(),
            operation,
            table,
            by_type: Mutex::new(Vec::new()),
        }
    }

    fn increment(&self, error_type: &'static str) {
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = by_type.iter().find(|(t, _)| *t == error_type) {
            counter.increment(1);
            return;
        }
        let counter = register_counter(
            &self.name,
            vec![
                Label::from_static_parts("operation", self.operation),
                Label::from_static_parts("table", self.table),
                Label::from_static_parts("error_type", error_type),
            ],
        );
        counter.increment(1);
        by_type.push((error_type, counter));
    }
}

pub(crate) fn register_histogram(name: &KeyName, labels: Vec<Label>) -> Histogram {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
}

pub(crate) fn register_counter(name: &KeyName, labels: Vec<Label>) -> Counter {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
}

pub(crate) fn register_gauge(name: &KeyName, labels: Vec<Label>) -> metrics::Gauge {
    let key = Key::from_parts(name.clone(), labels);
    metrics::with_recorder(|r| r.register_gauge(&key, &METADATA))
}

/// Per-instance cache of site handles, indexed by [`CallSite::id`]: lock-free reads, one
/// allocation per chunk of 64 sites on first use.
struct SiteCache {
    chunks: Box<[OnceLock<Chunk>]>,
}

type Chunk = Box<[OnceLock<SiteHandles>]>;

const CHUNK: usize = 64;
const CHUNKS: usize = 256;

impl SiteCache {
    fn new() -> Self {
        Self {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn get_or_init(&self, id: u32, init: impl FnOnce() -> SiteHandles) -> Option<&SiteHandles> {
        let id = id as usize;
        let chunk = self.chunks.get(id / CHUNK)?;
        let slots = chunk.get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        Some(slots[id % CHUNK].get_or_init(init))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync + Clone + 'static>() {}
    is::<DatabaseMetrics>();
    let _ = CallSite::id;
}
