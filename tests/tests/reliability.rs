//! Reliability under faults and load, with exact accounting.
//!
//! Every scenario is a driver that counts its own calls and how each one ended (success, error
//! by class, cancelled), then reads the rendered Prometheus text and asserts that it says the
//! same, exactly: nothing lost, nothing counted twice. Faults are real: a TCP proxy that cuts,
//! refuses or goes silent ([`dbmetrics_tests::proxy`]), and a real server that terminates
//! backends, cancels statements, detects deadlocks and serialization failures.
//!
//! Waiting is done on conditions (a channel, a row in `pg_stat_activity`, a count reached),
//! polled with a deadline where there is nothing to await; never a sleep as synchronisation.
//! Every test body is bounded by [`BOUND`].

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbmetrics::classify::classify;
use dbmetrics::{
    ClassifyError, DatabaseHealthChecker, DatabaseMetrics, HealthStatus, Operation, Outcome,
    QueryPerformanceTracker, TrackedConnection, TrackedPool, TrackedRepository,
    create_infrastructure_enhancer, track_query, transaction,
};
use dbmetrics_tests::proxy::{FaultProxy, Mode};
use dbmetrics_tests::{Exposition, database, prometheus, scrape, unique};
use deadpool_postgres::{ManagerConfig, Pool, PoolError, RecyclingMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_postgres::NoTls;

/// The bound of every test body: it only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(90);
/// How long a bounded wait for a condition waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// The pool poller's interval in these tests.
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// The repository under test
// ---------------------------------------------------------------------------------------------

/// A repository error as services write them: transparent wrappers of the driver's errors.
#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("not found")]
    NotFound,
}

#[derive(Clone, TrackedRepository)]
struct Repo {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
    /// Checkouts that returned a connection, counted by the driver.
    checkouts: Arc<AtomicU64>,
}

impl Repo {
    /// A repository over `pool`, monitored as `service` with pool label `main` (the poller
    /// every [`POLL`]), checking out through a [`TrackedPool`].
    fn new(pool: &Pool, service: &str) -> Self {
        prometheus();
        let metrics = DatabaseMetrics::builder(pool, service)
            .pool_name("main")
            .poll_interval(POLL)
            .slow_query_threshold(None)
            .build()
            .expect("monitoring is set up, whatever the database's state");
        let tracked =
            create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "main");
        Self {
            pool: tracked,
            metrics,
            checkouts: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn conn(&self) -> Result<TrackedConnection, RepoError> {
        let connection = self.pool.get().await?;
        // no await between the checkout and the count: cancellation cannot split them
        self.checkouts.fetch_add(1, Ordering::SeqCst);
        Ok(connection)
    }

    fn checkouts(&self) -> u64 {
        self.checkouts.load(Ordering::SeqCst)
    }

    #[track_query(select, "work")]
    async fn sleep(&self, seconds: f64) -> Result<(), RepoError> {
        let c = self.conn().await?;
        c.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
        Ok(())
    }

    /// A long query that can be found in `pg_stat_activity` by its tag.
    #[track_query(select, "sentinel")]
    async fn sentinel(&self, tag: u32) -> Result<(), RepoError> {
        let c = self.conn().await?;
        c.batch_execute(&format!("SELECT pg_sleep(10) /* sentinel {tag} */"))
            .await?;
        Ok(())
    }

    #[track_query(select, "divide")]
    async fn divide(&self, by: i32) -> Result<i32, RepoError> {
        let c = self.conn().await?;
        Ok(c.query_one("SELECT 100 / $1::INT4", &[&by]).await?.get(0))
    }

    /// In-process work: waits `wait` (no await at all when zero), then fails or not.
    #[track_query(other, "local")]
    async fn local(&self, wait: Duration, fail: bool) -> Result<(), RepoError> {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if fail {
            return Err(RepoError::NotFound);
        }
        Ok(())
    }

    #[track_query(other, "panics")]
    async fn panics_holding_a_connection(&self) -> Result<(), RepoError> {
        let c = self.conn().await?;
        c.execute("SELECT 1", &[]).await?;
        panic!("boom while holding a connection");
    }

    #[track_query(update, "panics")]
    fn panics_sync(&self, n: u32) -> u32 {
        if n > 0 {
            panic!("sync boom {n}");
        }
        n
    }
}

// ---------------------------------------------------------------------------------------------
// The driver's own accounting
// ---------------------------------------------------------------------------------------------

/// What the driver saw, per call site: outcome -> number of calls.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<Outcome, u64>>>);

impl Tally {
    fn add(&self, outcome: Outcome) {
        *self.0.lock().unwrap().entry(outcome).or_default() += 1;
    }

    /// Counts a call run under a deadline: `Err(Elapsed)` is `cancelled`, `Ok(Err(e))` an error
    /// of `e`'s class. Returns the outcome.
    fn count<T, E: DriverClass>(
        &self,
        result: &Result<Result<T, E>, tokio::time::error::Elapsed>,
    ) -> Outcome {
        let outcome = match result {
            Err(_) => Outcome::Cancelled,
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Error {
                error_type: e.class(),
            },
        };
        self.add(outcome);
        outcome
    }

    fn get(&self, outcome: Outcome) -> u64 {
        self.0.lock().unwrap().get(&outcome).copied().unwrap_or(0)
    }

    fn snapshot(&self) -> HashMap<Outcome, u64> {
        self.0.lock().unwrap().clone()
    }

    fn by_result(&self, result: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(o, _)| o.result() == result)
            .map(|(_, n)| n)
            .sum()
    }

    fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Every error class seen.
    fn error_types(&self) -> Vec<&'static str> {
        let mut types: Vec<_> = self
            .snapshot()
            .keys()
            .filter_map(|o| match o {
                Outcome::Error { error_type } => Some(*error_type),
                _ => None,
            })
            .collect();
        types.sort_unstable();
        types
    }
}

/// The error class the driver expects for an error it got back.
trait DriverClass {
    fn class(&self) -> &'static str;
}

/// The default classification: `RepoError` implements no `ClassifyError`, so the macros find
/// the driver's error in its `source()` chain, as [`classify`] does.
impl DriverClass for RepoError {
    fn class(&self) -> &'static str {
        classify(self)
    }
}

impl DriverClass for tokio_postgres::Error {
    fn class(&self) -> &'static str {
        classify(self)
    }
}

/// An in-process failure with a class of its own.
#[derive(Debug, thiserror::Error)]
#[error("in-process failure")]
struct LocalFailure;

impl ClassifyError for LocalFailure {
    fn error_type(&self) -> &'static str {
        "local_failure"
    }
}

impl DriverClass for LocalFailure {
    fn class(&self) -> &'static str {
        "local_failure"
    }
}

/// The metric names of one service.
struct Names<'a>(&'a str);

impl Names<'_> {
    fn of(&self, suffix: &str) -> String {
        format!("{}_database_{suffix}", self.0)
    }

    /// Asserts that the rendered series of the query site `(operation, table)` say exactly what
    /// the driver counted: calls per result (histogram `_count`), errors per class, and no
    /// error class the driver did not see.
    fn assert_queries(&self, e: &Exposition, operation: &str, table: &str, tally: &Tally) {
        let count = self.of("query_duration_seconds_count");
        for result in ["success", "error", "cancelled"] {
            let rendered = e.value(
                &count,
                &[
                    ("operation", operation),
                    ("table", table),
                    ("result", result),
                ],
            );
            assert_eq!(
                rendered,
                tally.by_result(result) as f64,
                "{operation} on {table}: result={result} rendered vs counted by the driver"
            );
        }
        self.assert_errors(e, operation, table, tally);
    }

    /// Like [`Names::assert_queries`] for the tracked transaction `name`.
    fn assert_transactions(&self, e: &Exposition, name: &str, tally: &Tally) {
        for result in ["success", "error", "cancelled"] {
            let counted = tally.by_result(result) as f64;
            let labels = [("transaction", name), ("result", result)];
            assert_eq!(
                e.value(&self.of("transactions_total"), &labels),
                counted,
                "transaction {name}: transactions_total{{result={result}}}"
            );
            assert_eq!(
                e.value(&self.of("transaction_duration_seconds_count"), &labels),
                counted,
                "transaction {name}: duration count{{result={result}}}"
            );
        }
        self.assert_errors(e, "transaction", name, tally);
    }

    fn assert_errors(&self, e: &Exposition, operation: &str, table: &str, tally: &Tally) {
        let errors = self.of("errors_total");
        for (outcome, n) in tally.snapshot() {
            if let Outcome::Error { error_type } = outcome {
                assert_eq!(
                    e.value(
                        &errors,
                        &[
                            ("operation", operation),
                            ("table", table),
                            ("error_type", error_type)
                        ]
                    ),
                    n as f64,
                    "{operation} on {table}: errors_total{{error_type={error_type}}}"
                );
            }
        }
        assert_eq!(
            e.sum(&errors, &[("operation", operation), ("table", table)]),
            tally.by_result("error") as f64,
            "{operation} on {table}: errors_total over every class"
        );
    }

    fn pool_counter(&self, e: &Exposition, suffix: &str) -> f64 {
        e.get(&self.of(suffix), &[("pool", "main")])
            .unwrap_or_else(|| panic!("{} {{pool=\"main\"}} is rendered", self.of(suffix)))
    }

    fn timeouts(&self, e: &Exposition, stage: &str) -> f64 {
        e.get(
            &self.of("connection_timeouts_total"),
            &[("pool", "main"), ("stage", stage)],
        )
        .unwrap_or_else(|| panic!("timeouts {{stage={stage}}} is rendered"))
    }

    /// Asserts the checkout balance of the tracked pool: every checkout the driver got is one
    /// acquisition, one wait sample, one release and one use sample.
    fn assert_balanced(&self, e: &Exposition, checkouts: u64) {
        let acquired = self.pool_counter(e, "connections_acquired_total");
        assert_eq!(
            acquired, checkouts as f64,
            "acquired == the driver's checkouts"
        );
        for suffix in [
            "connections_released_total",
            "connection_wait_seconds_count",
            "connection_use_seconds_count",
        ] {
            assert_eq!(
                self.pool_counter(e, suffix),
                acquired,
                "{suffix} == acquired"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    timeout(BOUND, f)
        .await
        .expect("the test finished within its bound")
}

/// Polls `condition` until it holds; fails the test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pool over `config` with the options the scenarios vary.
fn pool(
    config: tokio_postgres::Config,
    max_size: usize,
    wait_timeout: Option<Duration>,
    recycling: RecyclingMethod,
) -> Pool {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: recycling,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(wait_timeout)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

/// The test database's configuration with `application_name` set, so that the server's
/// `pg_stat_activity` tells this test's backends apart.
fn config_named(application_name: &str) -> tokio_postgres::Config {
    let mut config = database().config.clone();
    config.application_name(application_name);
    config
}

/// A direct connection, outside any pool (for server-side observation and faults).
async fn direct() -> tokio_postgres::Client {
    let (client, connection) = database().config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Backends of `application_name` whose current query contains `fragment` and runs.
async fn active_backends(
    admin: &tokio_postgres::Client,
    application_name: &str,
    fragment: &str,
) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND state = 'active' AND strpos(query, $2) > 0",
            &[&application_name, &fragment],
        )
        .await
        .unwrap()
        .get(0)
}

/// Terminates every backend of `application_name`; returns how many.
async fn terminate(admin: &tokio_postgres::Client, application_name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0)
}

async fn backends(admin: &tokio_postgres::Client, application_name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0)
}

const CONNECTION_CLASSES: [&str; 2] = ["connection", "connection_closed"];

/// Workers that call `repo.sleep(..)` in a loop until stopped, counting every call.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(repo: &Repo, tally: &Tally, workers: u64, seconds: std::ops::Range<f64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|seed| {
                let (repo, tally, stop, seconds) =
                    (repo.clone(), tally.clone(), stop.clone(), seconds.clone());
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed);
                    while !stop.load(Ordering::SeqCst) {
                        let s = rng.random_range(seconds.clone());
                        // a per-call bound: a hang shows up as `cancelled`, which the
                        // scenarios that expect none assert against
                        tally.count(&timeout(DEADLINE, repo.sleep(s)).await);
                    }
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the workers and waits for them; fails if any of them panicked.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let joined = timeout(DEADLINE, worker)
                .await
                .expect("a worker stops in time");
            assert!(joined.is_ok(), "a worker panicked: {joined:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The database refuses connections when the service starts: setting up monitoring succeeds,
/// every tracked query fails fast as `connection`, health is unhealthy with error
/// `connection`; when the database comes up, the same pool and metrics serve without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_at_start_fails_as_connection_then_recovers() {
    bounded(async {
        let service = unique("rel_unreachable");
        let n = Names(&service);
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        proxy.set_mode(Mode::Refuse).await.unwrap();
        let pool = pool(config, 4, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let checker = DatabaseHealthChecker::builder(pool.clone(), &service)
            .timeout(Duration::from_secs(10))
            .slow_connectivity(Duration::from_secs(10))
            .build()
            .unwrap();
        let tally = Tally::default();

        for _ in 0..20 {
            let outcome = tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await);
            assert_eq!(
                outcome,
                Outcome::Error {
                    error_type: "connection"
                }
            );
        }
        let summary = checker.get_health_summary().await;
        assert_eq!(summary.status, HealthStatus::Unhealthy);
        assert!(!summary.connectivity);
        assert_eq!(summary.error, Some("connection"));
        assert_eq!(proxy.accepted(), 0, "nothing got through");

        // The database comes up: no restart, no new pool.
        proxy.set_mode(Mode::Pass).await.unwrap();
        for _ in 0..20 {
            let outcome = tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await);
            assert_eq!(outcome, Outcome::Success);
        }
        let summary = checker.get_health_summary().await;
        assert!(summary.connectivity, "{summary:?}");
        assert!(summary.status.is_available(), "{summary:?}");

        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        assert_eq!(
            tally.get(Outcome::Error {
                error_type: "connection"
            }),
            20
        );
        assert_eq!(tally.get(Outcome::Success), 20);
        n.assert_balanced(&e, repo.checkouts());
        assert_eq!(repo.checkouts(), 20);
        for stage in ["wait", "create", "recycle"] {
            assert_eq!(n.timeouts(&e, stage), 0.0, "{stage}");
        }
    })
    .await;
}

/// 8 workers on a pool of 4 behind the proxy; every connection is cut 4 times under load.
/// Before each cut a sentinel query is seen running on the server, so each cut certainly
/// fails at least one call. Every failure is a connection error, the pool recovers by itself
/// after each cut (the next cut waits for fresh successes, the end for more), no worker panics,
/// and every call and checkout is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_every_connection_under_load_recovers_and_counts_every_call() {
    bounded(async {
        let service = unique("rel_cut");
        let n = Names(&service);
        let (proxy, config) = FaultProxy::in_front_of(&config_named(&service))
            .await
            .unwrap();
        let pool = pool(config, 4, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let admin = direct().await;
        let tally = Tally::default();
        let sentinels = Tally::default();

        let load = Load::start(&repo, &tally, 8, 0.0..0.01);
        for cut in 0..4 {
            // load flows (the pool has recovered from the previous cut)
            let before = tally.get(Outcome::Success);
            eventually("calls succeed before the next cut", || {
                let now = tally.get(Outcome::Success);
                async move { now >= before + 150 }
            })
            .await;
            // a query that is certainly in flight when the cut comes
            let sentinel = tokio::spawn({
                let repo = repo.clone();
                async move { timeout(DEADLINE, repo.sentinel(cut)).await }
            });
            let tag = format!("/* sentinel {cut} */");
            eventually("the sentinel runs on the server", || {
                let (admin, service, tag) = (&admin, &service, &tag);
                async move { active_backends(admin, service, tag).await == 1 }
            })
            .await;
            proxy.cut_all().await;
            let outcome = sentinels.count(&sentinel.await.expect("the sentinel does not panic"));
            assert_eq!(
                outcome,
                Outcome::Error {
                    error_type: "connection_closed"
                }
            );
        }
        // recovered after the last cut
        let before = tally.get(Outcome::Success);
        eventually("calls succeed again after the last cut", || {
            let now = tally.get(Outcome::Success);
            async move { now >= before + 200 }
        })
        .await;
        load.stop().await;

        for class in tally.error_types() {
            assert!(
                CONNECTION_CLASSES.contains(&class),
                "a cut connection failed a call as {class:?}"
            );
        }
        assert_eq!(tally.get(Outcome::Cancelled), 0, "no call hung");
        eprintln!(
            "cut: {} calls, {} successes, errors {:?}, {} connections accepted by the proxy",
            tally.total(),
            tally.get(Outcome::Success),
            tally
                .snapshot()
                .iter()
                .filter(|(o, _)| o.result() == "error")
                .collect::<Vec<_>>(),
            proxy.accepted()
        );

        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        n.assert_queries(&e, "select", "sentinel", &sentinels);
        n.assert_balanced(&e, repo.checkouts());
        assert!(proxy.accepted() > 4, "the pool reconnected after the cuts");
        // the sentinels' server backends sleep on; end them
        terminate(&admin, &service).await;
    })
    .await;
}

/// The server goes silent (TCP open, nothing answered): tracked calls under a deadline are
/// recorded `cancelled`, health answers `unhealthy` (`timeout`) within its own bound, and when
/// the server speaks again the pool serves without intervention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_makes_calls_cancelled_and_health_bounded() {
    bounded(async {
        let service = unique("rel_silent");
        let n = Names(&service);
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        let pool = pool(config, 2, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let checker = DatabaseHealthChecker::builder(pool.clone(), &service)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let tally = Tally::default();

        // one live connection, then silence
        assert_eq!(
            tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await),
            Outcome::Success
        );
        proxy.set_mode(Mode::Silent).await.unwrap();
        for _ in 0..6 {
            let outcome = tally.count(&timeout(Duration::from_millis(200), repo.sleep(0.0)).await);
            assert_eq!(outcome, Outcome::Cancelled);
        }
        // health is bounded by its own timeout (500 ms); the outer bound only catches a hang
        let summary = timeout(Duration::from_secs(10), checker.get_health_summary())
            .await
            .expect("health answered within its bound");
        assert_eq!(summary.status, HealthStatus::Unhealthy);
        assert_eq!(summary.error, Some("timeout"));
        let detailed = timeout(
            Duration::from_secs(10),
            checker.comprehensive_health_check(),
        )
        .await
        .expect("detailed health answered within its bound");
        assert_eq!(detailed.overall_status, HealthStatus::Unhealthy);

        // the partition heals
        proxy.set_mode(Mode::Pass).await.unwrap();
        for _ in 0..5 {
            assert_eq!(
                tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await),
                Outcome::Success
            );
        }

        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        assert_eq!(tally.get(Outcome::Cancelled), 6);
        assert_eq!(tally.get(Outcome::Success), 6);
        n.assert_balanced(&e, repo.checkouts());
    })
    .await;
}

/// `pg_terminate_backend` on a real server: queries running on the terminated backends fail as
/// `admin_shutdown` (the server says why before it closes); idle pooled connections terminated
/// behind the pool's back are never handed out with `RecyclingMethod::Verified`, so the calls
/// after it all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_fail_running_queries_as_admin_shutdown_and_the_pool_recovers() {
    bounded(async {
        let service = unique("rel_terminate");
        let n = Names(&service);
        let pool = pool(config_named(&service), 4, None, RecyclingMethod::Verified);
        let repo = Repo::new(&pool, &service);
        let admin = direct().await;
        let tally = Tally::default();

        // Busy: three queries running on three backends, terminated mid-query.
        let running: Vec<_> = (0..3)
            .map(|_| {
                let repo = repo.clone();
                tokio::spawn(async move { timeout(DEADLINE, repo.sleep(30.0)).await })
            })
            .collect();
        eventually("three queries run on the server", || {
            let (admin, service) = (&admin, &service);
            async move { active_backends(admin, service, "pg_sleep").await == 3 }
        })
        .await;
        assert_eq!(terminate(&admin, &service).await, 3);
        for call in running {
            let outcome = tally.count(&call.await.unwrap());
            assert_eq!(
                outcome,
                Outcome::Error {
                    error_type: "admin_shutdown"
                }
            );
        }

        // Idle: four pooled connections terminated while nobody holds them.
        let held = futures::future::join_all((0..4).map(|_| repo.conn())).await;
        for c in &held {
            c.as_ref().unwrap().simple_query("SELECT 1").await.unwrap();
        }
        drop(held);
        assert_eq!(terminate(&admin, &service).await, 4);
        eventually("the terminated backends are gone", || {
            let (admin, service) = (&admin, &service);
            async move { backends(admin, service).await == 0 }
        })
        .await;
        for _ in 0..8 {
            let outcome = tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await);
            assert_eq!(
                outcome,
                Outcome::Success,
                "a dead pooled connection was handed out"
            );
        }

        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        n.assert_balanced(&e, repo.checkouts());
        assert_eq!(repo.checkouts(), 3 + 4 + 8);
    })
    .await;
}

/// A server-side `statement_timeout` cancels the statement: `query_canceled`, and the
/// connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_query_canceled() {
    bounded(async {
        let service = unique("rel_stmt_timeout");
        let n = Names(&service);
        let mut config = database().config.clone();
        config.options("-c statement_timeout=100");
        let pool = pool(config, 1, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let tally = Tally::default();
        for _ in 0..3 {
            let outcome = tally.count(&timeout(DEADLINE, repo.sleep(5.0)).await);
            assert_eq!(
                outcome,
                Outcome::Error {
                    error_type: "query_canceled"
                }
            );
            let outcome = tally.count(&timeout(DEADLINE, repo.sleep(0.0)).await);
            assert_eq!(outcome, Outcome::Success);
        }
        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        n.assert_balanced(&e, 6);
    })
    .await;
}

/// A table of two rows `(1, 0)`, `(2, 0)`, created on `client`.
async fn two_rows(client: &tokio_postgres::Client) -> String {
    let table = unique("rel_rows");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INT4 PRIMARY KEY, v INT4 NOT NULL); \
             INSERT INTO {table} VALUES (1, 0), (2, 0)"
        ))
        .await
        .unwrap();
    table
}

/// Two transactions update two rows in crossing order, sequenced so that both hold their
/// first row before either asks for the second: the server breaks the deadlock by failing
/// exactly one of them with `deadlock_detected`; the other commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_transactions_deadlock_one_of_them() {
    bounded(async {
        prometheus();
        let service = unique("rel_deadlock");
        let n = Names(&service);
        let metrics = DatabaseMetrics::new(&service).unwrap();
        let admin = direct().await;
        let table = two_rows(&admin).await;

        // each side: lock `first`, report its pid, wait for the go, then ask for `second`
        let side = |first: i32, second: i32| {
            let (ready_tx, ready) = oneshot::channel::<i32>();
            let (go, go_rx) = oneshot::channel::<()>();
            let (metrics, table) = (metrics.clone(), table.clone());
            let task = tokio::spawn(async move {
                let mut client = direct().await;
                let update = format!("UPDATE {table} SET v = v + 1 WHERE id = $1");
                transaction::run(&metrics, &mut client, "crossing", |tx| {
                    Box::pin(async move {
                        let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
                        tx.execute(&update, &[&first]).await?;
                        ready_tx.send(pid).unwrap();
                        go_rx.await.unwrap();
                        tx.execute(&update, &[&second]).await?;
                        Ok::<_, tokio_postgres::Error>(())
                    })
                })
                .await
            });
            (task, ready, go)
        };
        let (a, a_ready, a_go) = side(1, 2);
        let (b, b_ready, b_go) = side(2, 1);
        let a_pid = a_ready.await.unwrap();
        b_ready.await.unwrap();
        // a asks for row 2 and blocks on b's lock ...
        a_go.send(()).unwrap();
        eventually("a waits for b's row lock", || {
            let admin = &admin;
            async move {
                let row = admin
                    .query_one(
                        "SELECT coalesce(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1",
                        &[&a_pid],
                    )
                    .await
                    .unwrap();
                row.get::<_, String>(0) == "Lock"
            }
        })
        .await;
        // ... then b asks for row 1: a cycle
        b_go.send(()).unwrap();

        let tally = Tally::default();
        let mut outcomes = Vec::new();
        for side in [a, b] {
            let ended = timeout(DEADLINE, side)
                .await
                .expect("bounded")
                .expect("no panic");
            outcomes.push(tally.count(&Ok(ended)));
        }
        assert_eq!(tally.get(Outcome::Success), 1, "{outcomes:?}");
        assert_eq!(
            tally.get(Outcome::Error {
                error_type: "deadlock_detected"
            }),
            1,
            "{outcomes:?}"
        );
        n.assert_transactions(&scrape(), "crossing", &tally);
        admin
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    })
    .await;
}

/// Two serializable transactions on one row, sequenced: the first reads, the second updates
/// and commits, then the first updates: `serialization_failure` for the first, committed for
/// the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_serializable_transactions_fail_one_as_serialization_failure() {
    bounded(async {
        prometheus();
        let service = unique("rel_serializable");
        let n = Names(&service);
        let metrics = DatabaseMetrics::new(&service).unwrap();
        let mut other = direct().await;
        let table = two_rows(&other).await;
        let select = format!("SELECT v FROM {table} WHERE id = 1");
        let update = format!("UPDATE {table} SET v = v + 1 WHERE id = 1");

        let (read_tx, read) = oneshot::channel::<()>();
        let (go, go_rx) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let (metrics, select, update) = (metrics.clone(), select.clone(), update.clone());
            async move {
                let mut client = direct().await;
                transaction::run(&metrics, &mut client, "serializable", |tx| {
                    Box::pin(async move {
                        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                            .await?;
                        tx.query_one(&select, &[]).await?; // the snapshot is taken here
                        read_tx.send(()).unwrap();
                        go_rx.await.unwrap();
                        tx.execute(&update, &[]).await?;
                        Ok::<_, tokio_postgres::Error>(())
                    })
                })
                .await
            }
        });
        read.await.unwrap();
        let tally = Tally::default();
        let second = transaction::run(&metrics, &mut other, "serializable", |tx| {
            Box::pin(async {
                tx.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    .await?;
                tx.query_one(&select, &[]).await?;
                tx.execute(&update, &[]).await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        });
        assert_eq!(
            tally.count(&timeout(DEADLINE, second).await),
            Outcome::Success
        );
        go.send(()).unwrap();
        let first = timeout(DEADLINE, first).await.unwrap().unwrap();
        assert_eq!(
            tally.count(&Ok(first)),
            Outcome::Error {
                error_type: "serialization_failure"
            }
        );
        n.assert_transactions(&scrape(), "serializable", &tally);
        // the second's update is the only one kept
        let v: i32 = other.query_one(&select, &[]).await.unwrap().get(0);
        assert_eq!(v, 1);
        other
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    })
    .await;
}

/// A pool of 2 with a 300 ms wait timeout under 8 workers, while the test holds both
/// connections: every call times out waiting (`pool_timeout`), counted by stage `wait`, and the
/// overflow gauge shows the waiting callers; released, the pool serves again and every counter
/// balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_counts_wait_timeouts_and_shows_overflow() {
    bounded(async {
        let service = unique("rel_exhaust");
        let n = Names(&service);
        let pool = pool(
            database().config.clone(),
            2,
            Some(Duration::from_millis(300)),
            RecyclingMethod::Fast,
        );
        let repo = Repo::new(&pool, &service);
        let tally = Tally::default();
        let overflow = n.of("connections_overflow");

        let held = [repo.conn().await.unwrap(), repo.conn().await.unwrap()];
        let load = Load::start(&repo, &tally, 8, 0.0..0.005);
        let mut seen_overflow = 0.0;
        eventually("the overflow gauge shows waiting callers", || {
            let seen = scrape().value(&overflow, &[("pool", "main")]);
            seen_overflow = seen;
            async move { seen > 0.0 }
        })
        .await;
        let timed_out = Outcome::Error {
            error_type: "pool_timeout",
        };
        eventually("calls time out waiting", || {
            let now = tally.get(timed_out);
            async move { now >= 8 }
        })
        .await;
        assert_eq!(
            tally.get(Outcome::Success),
            0,
            "nothing is served while both are held"
        );
        drop(held);

        let before = tally.get(Outcome::Success);
        eventually("calls succeed once the connections are released", || {
            let now = tally.get(Outcome::Success);
            async move { now >= before + 30 }
        })
        .await;
        load.stop().await;
        eventually("nobody waits any more", || {
            let now = scrape().value(&overflow, &[("pool", "main")]);
            async move { now == 0.0 }
        })
        .await;

        assert!(
            (1.0..=8.0).contains(&seen_overflow),
            "overflow {seen_overflow}"
        );
        assert_eq!(tally.error_types(), vec!["pool_timeout"]);
        assert_eq!(tally.get(Outcome::Cancelled), 0);
        let e = scrape();
        n.assert_queries(&e, "select", "work", &tally);
        assert_eq!(n.timeouts(&e, "wait"), tally.get(timed_out) as f64);
        assert_eq!(n.timeouts(&e, "create"), 0.0);
        assert_eq!(n.timeouts(&e, "recycle"), 0.0);
        n.assert_balanced(&e, repo.checkouts());
        eprintln!(
            "exhaustion: {} calls, {} timed out waiting, overflow seen {seen_overflow}",
            tally.total(),
            tally.get(timed_out)
        );
    })
    .await;
}

/// 10,000 tracked calls with random deadlines, 250 at a time: database sleeps, database errors
/// (`division_by_zero`), in-process work that succeeds or fails, and tracker calls; deadlines
/// from zero (certainly cancelled when the call awaits anything) to none. Every call is counted
/// exactly once, per site and per outcome, and every checkout is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_storm_counts_every_call_exactly_once() {
    const CALLS: u64 = 10_000;
    const BATCH: u64 = 250;
    bounded(async {
        let service = unique("rel_storm");
        let n = Names(&service);
        let pool = pool(database().config.clone(), 8, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let tracker = QueryPerformanceTracker::new(repo.metrics.clone());
        let [db, divide, local, tracked] = std::array::from_fn(|_| Tally::default());
        let mut rng = StdRng::seed_from_u64(0x5707);

        for _ in 0..CALLS / BATCH {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..BATCH {
                let deadline = match rng.random_range(0..100) {
                    0..30 => Duration::ZERO,
                    30..70 => Duration::from_micros(rng.random_range(0..3_000)),
                    70..95 => Duration::from_micros(rng.random_range(3_000..20_000)),
                    _ => DEADLINE,
                };
                let wait = match rng.random_range(0..5) {
                    0 => Duration::ZERO,
                    _ => Duration::from_micros(rng.random_range(0..3_000)),
                };
                let fail = rng.random_bool(0.2);
                let kind = rng.random_range(0..100);
                let repo = repo.clone();
                let tracker = tracker.clone();
                let (db, divide, local, tracked) =
                    (db.clone(), divide.clone(), local.clone(), tracked.clone());
                batch.spawn(async move {
                    match kind {
                        0..35 => {
                            db.count(&timeout(deadline, repo.sleep(wait.as_secs_f64())).await);
                        }
                        35..45 => {
                            divide.count(&timeout(deadline, repo.divide(0)).await);
                        }
                        45..85 => {
                            local.count(&timeout(deadline, repo.local(wait, fail)).await);
                        }
                        _ => {
                            let work = tracker.track_query("insert", "tracked", async move {
                                if !wait.is_zero() {
                                    tokio::time::sleep(wait).await;
                                }
                                if fail {
                                    return Err(LocalFailure);
                                }
                                Ok(())
                            });
                            tracked.count(&timeout(deadline, work).await);
                        }
                    }
                });
            }
            while let Some(joined) = batch.join_next().await {
                joined.expect("no call panics");
            }
        }

        let e = scrape();
        n.assert_queries(&e, "select", "work", &db);
        n.assert_queries(&e, "select", "divide", &divide);
        n.assert_queries(&e, "other", "local", &local);
        n.assert_queries(&e, "insert", "tracked", &tracked);
        n.assert_balanced(&e, repo.checkouts());
        let count = n.of("query_duration_seconds_count");
        let rendered: f64 = [
            ("select", "work"),
            ("select", "divide"),
            ("other", "local"),
            ("insert", "tracked"),
        ]
        .iter()
        .map(|(op, table)| e.sum(&count, &[("operation", op), ("table", table)]))
        .sum();
        assert_eq!(rendered, CALLS as f64, "every call rendered once");
        let all = [&db, &divide, &local, &tracked];
        assert_eq!(all.iter().map(|t| t.total()).sum::<u64>(), CALLS);
        // the storm had every kind of ending
        for result in ["success", "error", "cancelled"] {
            assert!(
                all.iter().map(|t| t.by_result(result)).sum::<u64>() > 0,
                "{result}"
            );
        }
        assert!(
            divide.get(Outcome::Error {
                error_type: "division_by_zero"
            }) > 0
        );
        assert_eq!(local.error_types(), vec!["other"]);
        assert_eq!(tracked.error_types(), vec!["local_failure"]);
        eprintln!(
            "storm: success {}, error {}, cancelled {}; {} checkouts",
            all.iter().map(|t| t.by_result("success")).sum::<u64>(),
            all.iter().map(|t| t.by_result("error")).sum::<u64>(),
            all.iter().map(|t| t.by_result("cancelled")).sum::<u64>(),
            repo.checkouts()
        );
    })
    .await;
}

/// A panic inside a tracked body (async, holding a pooled connection; sync; in the tracker) is
/// recorded as `error`/`panic`, reaches the caller with its own payload, and breaks nothing:
/// the connection it held is released and the pool of one serves the next calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_tracked_body_propagates_and_breaks_nothing() {
    bounded(async {
        let service = unique("rel_panic");
        let n = Names(&service);
        let pool = pool(database().config.clone(), 1, None, RecyclingMethod::Fast);
        let repo = Repo::new(&pool, &service);
        let tracker = QueryPerformanceTracker::new(repo.metrics.clone());
        let panicked = Outcome::Error {
            error_type: "panic",
        };
        let (async_panics, sync_panics, tracker_panics, work) = (
            Tally::default(),
            Tally::default(),
            Tally::default(),
            Tally::default(),
        );

        for _ in 0..3 {
            let joined = tokio::spawn({
                let repo = repo.clone();
                async move { repo.panics_holding_a_connection().await }
            })
            .await;
            let payload = joined
                .expect_err("the panic reaches the caller")
                .into_panic();
            assert_eq!(
                payload.downcast_ref::<&str>(),
                Some(&"boom while holding a connection")
            );
            async_panics.add(panicked);

            let caught = std::panic::catch_unwind(AssertUnwindSafe(|| repo.panics_sync(7)));
            let payload = caught.expect_err("the panic reaches the caller");
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some("sync boom 7")
            );
            sync_panics.add(panicked);

            let joined = tokio::spawn({
                let tracker = tracker.clone();
                async move {
                    tracker
                        .track_query(Operation::Delete, "panics", async {
                            if std::hint::black_box(true) {
                                panic!("tracker boom");
                            }
                            Ok::<(), std::io::Error>(())
                        })
                        .await
                }
            })
            .await;
            let payload = joined
                .expect_err("the panic reaches the caller")
                .into_panic();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"tracker boom"));
            tracker_panics.add(panicked);

            // the pool of one is whole: the panicking holder released its connection
            for _ in 0..2 {
                assert_eq!(
                    work.count(&timeout(DEADLINE, repo.sleep(0.0)).await),
                    Outcome::Success
                );
            }
            assert_eq!(repo.panics_sync(0), 0);
            sync_panics.add(Outcome::Success);
        }

        let e = scrape();
        n.assert_queries(&e, "other", "panics", &async_panics);
        n.assert_queries(&e, "update", "panics", &sync_panics);
        n.assert_queries(&e, "delete", "panics", &tracker_panics);
        n.assert_queries(&e, "select", "work", &work);
        n.assert_balanced(&e, repo.checkouts());
        assert_eq!(repo.checkouts(), 3 + 6);
    })
    .await;
}

#[track_query(select, "startup", metrics = metrics)]
async fn connect_once(
    metrics: &DatabaseMetrics,
    config: &tokio_postgres::Config,
) -> Result<(), RepoError> {
    let (_client, _connection) = config.connect(NoTls).await?;
    Ok(())
}

/// A peer that resets the connection during the startup handshake: the driver's I/O error is
/// `connection_closed`, the same class through a `#[error(transparent)]` wrapper (whose
/// `source()` skips the driver error and shows the I/O error) as through the driver error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_during_startup_is_connection_closed_through_any_wrapper() {
    bounded(async {
        prometheus();
        let service = unique("rel_reset");
        let n = Names(&service);
        let metrics = DatabaseMetrics::new(&service).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // read the startup message, then reset (RST, not FIN)
        let resetter = tokio::spawn(async move {
            for _ in 0..3 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 8];
                tokio::io::AsyncReadExt::read_exact(&mut socket, &mut buf)
                    .await
                    .unwrap();
                socket.set_zero_linger().unwrap();
                drop(socket);
            }
        });
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres");

        let raw = timeout(DEADLINE, config.connect(NoTls))
            .await
            .unwrap()
            .map(drop)
            .unwrap_err();
        let driver = dbmetrics::classify::classify_postgres(&raw);
        assert_eq!(driver, "connection_closed", "{raw:?}");
        let tally = Tally::default();
        for _ in 0..2 {
            let outcome = tally.count(&timeout(DEADLINE, connect_once(&metrics, &config)).await);
            assert_eq!(outcome, Outcome::Error { error_type: driver });
        }
        n.assert_queries(&scrape(), "select", "startup", &tally);
        resetter.await.unwrap();
    })
    .await;
}
