//! [`DatabaseMetrics`]: the metrics of one service, and how a sample reaches its series.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::epoch::{self, EPOCHS};
use super::pool_ref::PoolRef;
use super::series::SiteHandles;
use super::site_cache::SiteCache;
use crate::catalog::{Catalog, MetricInfo};
use crate::error::Error;
use crate::naming::Naming;
use crate::pool::{MonitoredPool, PoolActivity, PoolSeries, Publishes, spawn_poller};
use crate::record::{LabelBudget, QueryMetrics, Sample};
use crate::slow_log::SlowLog;

/// The metrics of one service (and, when set up with a pool, of that pool).
///
/// A cheap `Clone` handle over an `Arc`: give a clone to every repository. It implements
/// [`QueryMetrics`], which is what `#[track_query]` records through. Every sample goes to the
/// `metrics` recorder installed in the process (see the `exporter` module); install it before
/// setting up, so that the metric descriptions reach it.
#[derive(Clone)]
#[must_use = "dropping every DatabaseMetrics handle stops the pool poller"]
pub struct DatabaseMetrics {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    catalog: Catalog,
    poll_interval: Duration,
    slow_query_threshold: Option<Duration>,
    slow_log: SlowLog,
    /// The handles of each recorder epoch (see [`epoch`]).
    epochs: [EpochHandles; EPOCHS],
    /// The monitored pool's label and series; `None` for metrics without a pool.
    pool: Option<RwLock<PoolLabel>>,
    /// What the tracked pools of the label do now (waiting callers, leak watch); with `pool`.
    activity: Option<Arc<PoolActivity>>,
    /// The checkout series the pool's driver can fill (see [`Publishes`]).
    publishes: Publishes,
    /// The monitored pool, once registered (see [`PoolRef`]).
    pool_ref: OnceLock<PoolRef>,
    /// The bound on names given at run time: the one of the service, shared by all its
    /// handles (but a `testing::MetricsCapture`'s own).
    budget: Arc<LabelBudget>,
    /// Never sent on: dropped with the last handle, which stops the poller at once. Its
    /// receiver count says whether a poller runs.
    stop: watch::Sender<()>,
    /// The recorder this handle's query and transaction series live in, when it is not the
    /// process's (a `testing::MetricsCapture`).
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

/// The handles resolved while one recorder epoch was current.
struct EpochHandles {
    /// The catalog was described to this epoch's recorder.
    described: OnceLock<()>,
    sites: SiteCache,
    /// Handles of sites recording under more than one table (see `Inner::other_table`).
    other_tables: Mutex<Vec<(u32, &'static str, Arc<SiteHandles>)>>,
}

impl EpochHandles {
    fn new() -> Self {
        Self {
            described: OnceLock::new(),
            sites: SiteCache::new(),
            other_tables: Mutex::new(Vec::new()),
        }
    }
}

/// The label a monitored pool is published under, and its series for the current epoch and
/// label (made again when either changes).
struct PoolLabel {
    name: &'static str,
    series: Option<Arc<PoolSeries>>,
}

/// What a [`DatabaseMetrics`] is made of; see [`DatabaseMetrics::from_parts`].
pub(super) struct Parts {
    pub(super) catalog: Catalog,
    /// The pool label, for metrics that monitor a pool.
    pub(super) pool_name: Option<&'static str>,
    /// The checkout series the pool's driver can fill.
    pub(super) publishes: Publishes,
    pub(super) poll_interval: Duration,
    pub(super) slow_query_threshold: Option<Duration>,
    /// The service's bound on names given at run time.
    pub(super) budget: Arc<LabelBudget>,
    pub(super) recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

impl fmt::Debug for DatabaseMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseMetrics")
            .field("service", &self.service())
            .field("pool", &self.pool_name())
            .finish_non_exhaustive()
    }
}

impl DatabaseMetrics {
    /// The pool label used when none is given.
    pub const DEFAULT_POOL_NAME: &'static str = "default";
    /// How often the pool poller reads the pool's status by default.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
    /// Tracked calls at least this slow are logged (`WARN`, target `dbmetrics::slow_query`) by
    /// default.
    pub const DEFAULT_SLOW_QUERY_THRESHOLD: Duration = Duration::from_secs(1);
    /// How many distinct tables (and, apart, transaction names and function names) given at
    /// run time one service admits as label values by default; see
    /// [`DatabaseMetricsBuilder::label_limit`](crate::DatabaseMetricsBuilder::label_limit).
    pub const DEFAULT_LABEL_LIMIT: usize = 1000;

    /// Like [`DatabaseMetrics::new`], but every series is registered with `recorder` instead
    /// of the process's recorder, whichever thread records.
    #[cfg(feature = "testing")]
    pub(crate) fn with_recorder(
        service: &str,
        recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    ) -> Result<Self, Error> {
        // A budget of its own: a capture is apart from the rest of the process.
        let budget = Arc::new(LabelBudget::new(service, Self::DEFAULT_LABEL_LIMIT));
        Self::without_pool(service, Some(recorder), false, Naming::Service, budget)
    }

    /// Metrics for `service` without a pool, recording into `recorder` (`None`: the process's).
    pub(super) fn without_pool(
        service: &str,
        recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
        function_label: bool,
        naming: Naming,
        budget: Arc<LabelBudget>,
    ) -> Result<Self, Error> {
        let catalog = Catalog::with_naming(service, naming)?.with_function_label(function_label);
        let metrics = Self::from_parts(Parts {
            catalog,
            pool_name: None,
            publishes: Publishes::default(),
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            slow_query_threshold: Some(Self::DEFAULT_SLOW_QUERY_THRESHOLD),
            budget,
            recorder,
        });
        metrics.inner.describe(epoch::current());
        Ok(metrics)
    }

    pub(super) fn from_parts(parts: Parts) -> Self {
        // The first tracked call should not pay for the clock's calibration.
        crate::record::clock::calibrate();
        let activity = parts
            .pool_name
            .map(|_| Arc::new(PoolActivity::new(parts.catalog.service())));
        Self {
            inner: Arc::new(Inner {
                catalog: parts.catalog,
                poll_interval: parts.poll_interval,
                slow_query_threshold: parts.slow_query_threshold,
                slow_log: SlowLog::new(),
                epochs: [EpochHandles::new(), EpochHandles::new()],
                activity,
                pool: parts
                    .pool_name
                    .map(|name| RwLock::new(PoolLabel { name, series: None })),
                publishes: parts.publishes,
                pool_ref: OnceLock::new(),
                budget: parts.budget,
                stop: watch::Sender::new(()),
                recorder: parts.recorder,
            }),
        }
    }

    pub(super) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Holds `pool` as this handle's monitored pool (once).
    pub(super) fn set_pool_ref<P: MonitoredPool>(&self, pool: &P) {
        let _ = self.inner.pool_ref.set(PoolRef::new(pool));
    }

    pub(super) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Starts the poller of `pool` on `runtime` (the pool must be this handle's pool). It
    /// holds this handle weakly: it reads the pool's current series on every tick.
    pub(super) fn spawn_poller<P: MonitoredPool>(
        &self,
        runtime: &tokio::runtime::Handle,
        pool: &P,
    ) {
        let Some(activity) = self.inner.activity.clone() else {
            return;
        };
        let weak = self.downgrade();
        let series = move || {
            weak.upgrade()
                .and_then(|inner| DatabaseMetrics { inner }.pool_series())
        };
        spawn_poller(
            runtime,
            pool,
            series,
            activity,
            self.inner.stop.subscribe(),
            self.inner.poll_interval,
        );
    }

    /// Whether a poller runs for this handle's pool.
    pub(super) fn poller_runs(&self) -> bool {
        self.inner.stop.receiver_count() > 0
    }

    /// The service name every metric name starts with.
    pub fn service(&self) -> &str {
        self.inner.catalog.service()
    }

    /// The names this handle records under ([`Naming::Service`] unless set with
    /// [`DatabaseMetricsBuilder::naming`](crate::DatabaseMetricsBuilder::naming)).
    pub fn naming(&self) -> Naming {
        self.inner.catalog.naming()
    }

    /// The `pool` label of this handle's pool metrics (`"default"` for metrics without a
    /// pool).
    pub fn pool_name(&self) -> &str {
        self.pool_label()
    }

    /// The `pool` label, for series that outlive a borrow of this handle.
    pub(crate) fn pool_label(&self) -> &'static str {
        match &self.inner.pool {
            Some(label) => label.read().unwrap_or_else(PoisonError::into_inner).name,
            None => Self::DEFAULT_POOL_NAME,
        }
    }

    /// Publishes the monitored pool under `name` from now on: its gauges under the old label
    /// drop to 0 and its counters there stop (they stay exported, frozen); every series
    /// continues under `name`, the gauges set at once. The caller has checked that no other
    /// pool of the service uses `name`.
    pub(super) fn relabel(&self, name: &'static str) {
        let Some(lock) = &self.inner.pool else {
            return;
        };
        let mut label = lock.write().unwrap_or_else(PoisonError::into_inner);
        if label.name == name {
            return;
        }
        if let Some(old) = label.series.take() {
            old.gauges.set_closed();
        }
        label.name = name;
        drop(label);
        // Published at once, not at the poller's next tick.
        self.publish_gauges();
    }

    /// Registers the pool series in the current recorder epoch and sets the gauges from the
    /// pool's status, as a poller tick does: after a relabel, and when the exporter is
    /// installed, so that neither waits for the next tick. Nothing for metrics without a
    /// pool, or a pool closed (its poller zeroes the gauges).
    pub(super) fn publish_gauges(&self) {
        let (Some(pool), Some(activity)) = (self.inner.pool_ref(), &self.inner.activity) else {
            return;
        };
        if let Some(series) = self.pool_series()
            && let Some(status) = pool.status()
        {
            series.gauges.set(status, activity.waiting());
        }
    }

    /// How often the pool poller reads the pool status
    /// ([`DatabaseMetrics::DEFAULT_POLL_INTERVAL`] unless set with
    /// [`DatabaseMetricsBuilder::poll_interval`](crate::DatabaseMetricsBuilder::poll_interval)).
    pub fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    /// The slow-call log threshold (`None`: off), as set with
    /// [`DatabaseMetricsBuilder::slow_query_threshold`](crate::DatabaseMetricsBuilder::slow_query_threshold).
    pub fn slow_query_threshold(&self) -> Option<Duration> {
        self.inner.slow_query_threshold
    }

    /// How many run-time names of each kind this handle's service admits as label values
    /// ([`DatabaseMetricsBuilder::label_limit`](crate::DatabaseMetricsBuilder::label_limit)).
    pub fn label_limit(&self) -> usize {
        self.inner.budget.limit()
    }

    /// The service's bound on names given at run time, shared by all its handles.
    pub(super) fn budget(&self) -> &Arc<LabelBudget> {
        &self.inner.budget
    }

    /// Whether `query_duration_seconds` carries a `function` label
    /// ([`DatabaseMetricsBuilder::function_label`](crate::DatabaseMetricsBuilder::function_label);
    /// off for metrics made without a builder).
    pub fn function_label(&self) -> bool {
        self.inner.catalog.function_label()
    }

    /// The metric catalog of this service, keyed by full metric name.
    pub fn get_metrics(&self) -> BTreeMap<String, MetricInfo> {
        self.inner.catalog.entries()
    }

    /// Whether `self` and `other` are clones of one handle (one setup: one poller, one set of
    /// series handles).
    pub fn same_handle(&self, other: &DatabaseMetrics) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// What the tracked pools of this handle's pool label do now; `None` for metrics without
    /// a pool.
    pub(crate) fn pool_activity(&self) -> Option<&Arc<PoolActivity>> {
        self.inner.activity.as_ref()
    }

    /// The checkout series the monitored pool's driver can fill.
    pub(crate) fn publishes(&self) -> Publishes {
        self.inner.publishes
    }

    /// The catalog of this service (metric names).
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The series of this handle's pool label in the current recorder epoch, when it monitors
    /// a pool (registered on first use in each epoch and after a relabel).
    pub(crate) fn pool_series(&self) -> Option<Arc<PoolSeries>> {
        let lock = self.inner.pool.as_ref()?;
        let epoch = epoch::current();
        if let Some(series) = &lock.read().unwrap_or_else(PoisonError::into_inner).series
            && series.epoch == epoch
        {
            return Some(series.clone());
        }
        let mut label = lock.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = &label.series
            && series.epoch == epoch
        {
            return Some(series.clone());
        }
        self.inner.describe(epoch);
        let series = PoolSeries::new(&self.inner.catalog, label.name, epoch, self.inner.publishes);
        label.series = Some(series.clone());
        Some(series)
    }

    /// The body of one pool-poller tick: reads the pool's status and sets the five pool
    /// gauges, exactly as the poller does every interval. Does nothing for metrics set up
    /// without a pool. Not public API: it exists so that benchmarks can measure the tick in
    /// isolation (feature `bench`).
    #[cfg(feature = "bench")]
    #[doc(hidden)]
    pub fn __poll_tick<P: MonitoredPool>(&self, pool: &P) {
        if let (Some(series), Some(activity)) = (self.pool_series(), &self.inner.activity) {
            crate::pool::poll_tick(pool, &series, activity);
        }
    }
}

impl QueryMetrics for DatabaseMetrics {
    #[inline]
    fn record(&self, sample: &Sample) {
        self.inner.record(sample)
    }

    #[inline]
    fn label_budget(&self) -> Option<&LabelBudget> {
        Some(&self.inner.budget)
    }
}

impl Inner {
    /// The monitored pool, once registered.
    pub(super) fn pool_ref(&self) -> Option<&PoolRef> {
        self.pool_ref.get()
    }

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

    /// Describes the catalog to the recorder of `epoch`, once.
    fn describe(&self, epoch: usize) {
        self.epochs[epoch]
            .described
            .get_or_init(|| match &self.recorder {
                Some(recorder) => {
                    metrics::with_local_recorder(&**recorder, || self.catalog.describe())
                }
                None => self.catalog.describe(),
            });
    }

    #[cold]
    fn new_site(&self, epoch: usize, sample: &Sample) -> SiteHandles {
        self.describe(epoch);
        SiteHandles::new(&self.catalog, sample)
    }

    #[inline]
    fn record_sample(&self, sample: &Sample) {
        let epoch = epoch::current();
        match self.epochs[epoch]
            .sites
            .get_or_init(sample.site.id(), || self.new_site(epoch, sample))
        {
            Some(handles)
                if std::ptr::eq(handles.table, sample.table) || handles.table == sample.table =>
            {
                handles.record(sample)
            }
            // One site, another table: a trait's default method or a generic impl whose `Self`
            // types have different default tables.
            Some(_) => self.other_table(epoch, sample).record(sample),
            // More distinct sites than the cache holds: register per call (allocates, still correct).
            None => self.new_site(epoch, sample).record(sample),
        }
        if let Some(threshold) = self.slow_query_threshold
            && sample.elapsed >= threshold
        {
            let _logged = self.slow_log.log(self.catalog.service(), sample);
        }
    }

    #[cold]
    fn other_table(&self, epoch: usize, sample: &Sample) -> Arc<SiteHandles> {
        let mut others = self.epochs[epoch]
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
        let handles = Arc::new(self.new_site(epoch, sample));
        others.push((id, sample.table, handles.clone()));
        handles
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync + Clone + 'static>() {}
    is::<DatabaseMetrics>();
}
