//! Cancellation cleans up (issue 14, DESIGN.md "Cancellation cleans up"): a tracked call
//! cancelled while a statement runs on a connection it checked out of a `TrackedPool` stops
//! that statement on the server and never hands the busy connection to the next caller; a
//! connection that was idle goes back to the pool.
//!
//! The first scenarios run once per driver (`deadpool::…`, `sqlx::…`, `bb8::…`), each with what
//! its driver can do: deadpool sends the cancel request and closes the busy connection; sqlx
//! has no cancel request and closes it (its test pool sets `client_connection_check_interval`,
//! as the README advises, so that the server ends the statement); bb8 cannot take a connection
//! out of its pool, so it cancels the statement and drains the connection. The others are
//! deadpool's, through the macros and `transaction::run`.
//!
//! Real PostgreSQL, real Prometheus text. The server is watched through `pg_stat_activity` on a
//! separate connection, each test's backends told apart by their `application_name`. Waiting is
//! done on conditions polled with a deadline ([`eventually`]); the one sleep
//! ([`a_cancel_request_to_a_silent_server_hangs_nothing`]) lets a library timeout pass.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbmetrics::pool::DiscardReason;
use dbmetrics::{
    DatabaseMetrics, Outcome, QueryPerformanceTracker, TrackedConnection, TrackedPool,
    TrackedRepository, create_infrastructure_enhancer, create_repository_middleware, track_query,
    transaction,
};
use dbmetrics_tests::drivers::{Bb8, Deadpool, Driver, Sqlx};
use dbmetrics_tests::proxy::{FaultProxy, Mode};
use dbmetrics_tests::{Exposition, database, per_driver, prometheus, scrape, unique};
use deadpool_postgres::{ManagerConfig, Pool, PoolError, RecyclingMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::timeout;
use tokio_postgres::NoTls;

/// The bound of every test body: it only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(120);
/// How long a bounded wait for a condition waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// The bound for the server to stop a cancelled statement.
const SERVER_STOPS_WITHIN: Duration = Duration::from_secs(3);
/// The storms run one at a time (each with its own runtime: a runtime-agnostic lock).
static STORMS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The repository under test
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl dbmetrics::ClassifyError for RepoError {
    fn error_type(&self) -> &'static str {
        dbmetrics::classify::classify(self)
    }
}

#[derive(Clone, TrackedRepository)]
struct Repo {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
    /// Checkouts that returned a connection, counted by the test.
    checkouts: Arc<AtomicU64>,
}

impl Repo {
    /// A repository over `pool`, monitored as `service` under pool label `main`.
    fn new(pool: &Pool, service: &str) -> Self {
        prometheus();
        let metrics = DatabaseMetrics::builder(pool, service)
            .pool_name("main")
            .poll_interval(Duration::from_millis(10))
            .slow_query_threshold(None)
            .build()
            .expect("monitoring is set up");
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

    #[track_query(select, "sleepers")]
    async fn sleep(&self, seconds: f64) -> Result<(), RepoError> {
        let c = self.conn().await?;
        c.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
        Ok(())
    }

    /// The same work, untracked: for the middleware.
    async fn untracked_sleep(&self, seconds: f64) -> Result<(), RepoError> {
        let c = self.conn().await?;
        c.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
        Ok(())
    }

    /// Panics while `pg_sleep(6)` runs on its connection (once `watch` sees it on the server).
    #[track_query(select, "panics")]
    async fn panic_mid_statement(&self, watch: &Watch) -> Result<(), RepoError> {
        let c = self.conn().await?;
        tokio::select! {
            slept = c.execute("SELECT pg_sleep(6)", &[]) => { slept?; }
            () = watch.sleeping(1) => panic!("boom mid-statement"),
        }
        Ok(())
    }

    /// The backend pid of a fresh checkout.
    async fn pid(&self) -> i32 {
        let c = self.conn().await.expect("a connection");
        c.query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("the pid")
            .get(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Watching the server and the metrics
// ---------------------------------------------------------------------------------------------

/// A direct connection (outside any pool) that watches the backends of one application name.
struct Watch {
    admin: tokio_postgres::Client,
    application_name: String,
}

impl Watch {
    async fn new(application_name: &str) -> Self {
        let (admin, connection) = database().config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        Self {
            admin,
            application_name: application_name.to_owned(),
        }
    }

    /// Backends of the application running `pg_sleep` right now.
    async fn sleeping_now(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND strpos(query, 'pg_sleep') > 0",
                &[&self.application_name],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until `n` backends run `pg_sleep`.
    async fn sleeping(&self, n: i64) {
        eventually(&format!("{n} pg_sleep running"), DEADLINE, || async move {
            self.sleeping_now().await == n
        })
        .await;
    }
}

/// The test database's configuration with `application_name` set.
fn config_named(application_name: &str) -> tokio_postgres::Config {
    let mut config = database().config.clone();
    config.application_name(application_name);
    config
}

fn pool(config: tokio_postgres::Config, max_size: usize) -> Pool {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    timeout(BOUND, f)
        .await
        .expect("the test finished within its bound")
}

/// Polls `condition` until it holds; fails the test after `deadline`.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The metric names of one service, read from the rendered text.
struct Names<'a>(&'a str);

impl Names<'_> {
    fn of(&self, suffix: &str) -> String {
        format!("{}_database_{suffix}", self.0)
    }

    fn pool(&self, e: &Exposition, suffix: &str) -> f64 {
        e.get(&self.of(suffix), &[("pool", "main")])
            .unwrap_or_else(|| panic!("{} {{pool=\"main\"}} is rendered", self.of(suffix)))
    }

    fn discarded(&self, e: &Exposition, reason: DiscardReason) -> f64 {
        e.get(
            &self.of("connections_discarded_total"),
            &[("pool", "main"), ("reason", reason.as_str())],
        )
        .unwrap_or_else(|| panic!("discarded {{reason={}}} is rendered", reason.as_str()))
    }

    fn cancelled_on_server(&self, e: &Exposition) -> f64 {
        self.pool(e, "queries_cancelled_on_server_total")
    }

    /// The three discard reasons and the cancelled-on-server counter, in that order, `None`
    /// where the series is not rendered (a driver that cannot fill it does not publish it).
    fn published(&self, e: &Exposition) -> [Option<f64>; 4] {
        let discarded = |reason: DiscardReason| {
            e.get(
                &self.of("connections_discarded_total"),
                &[("pool", "main"), ("reason", reason.as_str())],
            )
        };
        [
            discarded(DiscardReason::Busy),
            discarded(DiscardReason::Broken),
            discarded(DiscardReason::NoRuntime),
            e.get(
                &self.of("queries_cancelled_on_server_total"),
                &[("pool", "main")],
            ),
        ]
    }

    /// The three discard reasons and the cancelled-on-server counter, in that order.
    fn cleanup(&self, e: &Exposition) -> [f64; 4] {
        [
            self.discarded(e, DiscardReason::Busy),
            self.discarded(e, DiscardReason::Broken),
            self.discarded(e, DiscardReason::NoRuntime),
            self.cancelled_on_server(e),
        ]
    }

    /// Calls of a query site by result: success, error, cancelled.
    fn queries(&self, e: &Exposition, operation: &str, table: &str) -> [f64; 3] {
        ["success", "error", "cancelled"].map(|result| {
            e.value(
                &self.of("query_duration_seconds_count"),
                &[
                    ("operation", operation),
                    ("table", table),
                    ("result", result),
                ],
            )
        })
    }

    /// Every checkout is one acquisition, one release, one wait and one use sample.
    fn assert_balanced(&self, e: &Exposition, checkouts: u64) {
        for suffix in [
            "connections_acquired_total",
            "connections_released_total",
            "connection_wait_seconds_count",
            "connection_use_seconds_count",
        ] {
            assert_eq!(self.pool(e, suffix), checkouts as f64, "{suffix}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every driver
// ---------------------------------------------------------------------------------------------

per_driver!(
    a_statement_cut_off_stops_on_the_server_and_the_next_caller_is_served,
    a_call_cut_off_between_statements_keeps_its_connection,
    a_storm_of_cut_off_calls_leaves_nothing_running,
);

/// What a driver does with a connection a cancelled call left busy.
trait Cleans: Driver {
    /// It sends the cancel request (deadpool, bb8); sqlx has none.
    const CANCELS: bool;
    /// It takes the busy connection out of its pool (deadpool, sqlx); bb8 drains it.
    const DETACHES: bool;
}

impl Cleans for Deadpool {
    const CANCELS: bool = true;
    const DETACHES: bool = true;
}

impl Cleans for Sqlx {
    const CANCELS: bool = false;
    const DETACHES: bool = true;
}

impl Cleans for Bb8 {
    const CANCELS: bool = true;
    const DETACHES: bool = false;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What `Names::published` reads for driver `D` after `busy` busy connections and `cancelled`
/// statements cancelled on the server: the series the driver cannot fill are not rendered.
fn expected_cleanup<D: Cleans>(busy: f64, cancelled: f64) -> [Option<f64>; 4] {
    [
        D::DETACHES.then_some(busy),
        D::DETACHES.then_some(0.0),
        D::DETACHES.then_some(0.0),
        D::CANCELS.then_some(cancelled),
    ]
}

/// A pool of `D` whose backends are named `service`, monitored and tracked under pool label
/// `main`. Without a cancel request (sqlx), the server checks the client socket every 500 ms
/// while a statement runs (`client_connection_check_interval`, as the README advises).
fn driver_pool<D: Cleans>(
    service: &str,
    max: u32,
) -> (D::Pool, DatabaseMetrics, TrackedPool<D::Pool>) {
    prometheus();
    let mut config = config_named(service);
    if !D::CANCELS {
        config.options("-c client_connection_check_interval=500");
    }
    let pool = D::pool(&config, max, DEADLINE);
    let metrics = DatabaseMetrics::builder(&pool, service)
        .pool_name("main")
        .poll_interval(Duration::from_millis(10))
        .slow_query_threshold(None)
        .build()
        .expect("monitoring is set up");
    let tracked =
        create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "main");
    (pool, metrics, tracked)
}

/// Checks a connection out of `tracked` and runs `sql` on it.
async fn run_sql<D: Driver>(tracked: &TrackedPool<D::Pool>, sql: &str) -> Result<(), BoxError> {
    let mut c = tracked.get().await?;
    D::execute(&mut c, sql).await?;
    Ok(())
}

impl Watch {
    /// The pids of the application's backends, sorted.
    async fn backends(&self) -> Vec<i32> {
        self.admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
                &[&self.application_name],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// The pid of the application's backend running `pg_sleep`, once there is one.
    async fn sleeper(&self) -> i32 {
        self.sleeping(1).await;
        self.admin
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND strpos(query, 'pg_sleep') > 0",
                &[&self.application_name],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// The first scenario for every driver, through the tracker: a call running
/// `pg_sleep(6)` on a pool of one is cut off (its task aborted) once the sleep runs on the
/// server. The next caller's `SELECT 1` answers within a second, the sleep is gone from the
/// server within 3 s, the call counts once as `cancelled`, and the driver did what it can:
/// deadpool and sqlx serve the next caller on a new backend (the busy one discarded), bb8 on the
/// same backend (its statement cancelled, then drained).
async fn a_statement_cut_off_stops_on_the_server_and_the_next_caller_is_served<D: Cleans>() {
    bounded(async {
        let service = unique("cancel_cut");
        let n = Names(&service);
        let (_pool, metrics, tracked) = driver_pool::<D>(&service, 1);
        let watch = Watch::new(&service).await;
        let tracker = QueryPerformanceTracker::new(metrics.clone());

        let call = tokio::spawn({
            let tracked = tracked.clone();
            async move {
                tracker
                    .track_query(
                        "select",
                        "sleepers",
                        run_sql::<D>(&tracked, "SELECT pg_sleep(6)"),
                    )
                    .await
            }
        });
        let sleeper = watch.sleeper().await;
        call.abort();
        let cut_at = Instant::now();
        assert!(call.await.expect_err("aborted").is_cancelled());

        let served = timeout(DEADLINE, run_sql::<D>(&tracked, "SELECT 1")).await;
        let waited = cut_at.elapsed();
        assert!(
            matches!(served, Ok(Ok(()))),
            "the next caller is served: {served:?}"
        );
        assert!(
            waited < Duration::from_secs(1),
            "the next SELECT 1 answered in {waited:?}"
        );
        eventually(
            "pg_sleep(6) stopped on the server",
            SERVER_STOPS_WITHIN,
            || async { watch.sleeping_now().await == 0 },
        )
        .await;
        let stopped = cut_at.elapsed();
        let expected = expected_cleanup::<D>(1.0, 1.0);
        eventually("the cleanup is counted", DEADLINE, || async {
            n.published(&scrape()) == expected
        })
        .await;
        if D::DETACHES {
            eventually(
                "the busy backend is gone, one other serves",
                DEADLINE,
                || async {
                    let backends = watch.backends().await;
                    backends.len() == 1 && backends[0] != sleeper
                },
            )
            .await;
        } else {
            assert_eq!(watch.backends().await, vec![sleeper], "drained and kept");
        }
        eprintln!(
            "{}: next SELECT 1 answered {waited:?} after the cut; server stopped by {stopped:?}",
            D::NAME
        );

        let e = scrape();
        assert_eq!(n.queries(&e, "select", "sleepers"), [0.0, 0.0, 1.0]);
        assert_eq!(n.published(&e), expected);
        assert_eq!(n.pool(&e, "connections_acquired_total"), 2.0);
        assert_eq!(n.pool(&e, "connections_released_total"), 2.0);
    })
    .await;
}

/// Every driver, through the tracker: a call cut off while its connection is idle between two
/// statements gives the connection back (the same backend serves the next caller, nothing
/// discarded or cancelled).
async fn a_call_cut_off_between_statements_keeps_its_connection<D: Cleans>() {
    bounded(async {
        let service = unique("cancel_between");
        let n = Names(&service);
        let (_pool, metrics, tracked) = driver_pool::<D>(&service, 1);
        let watch = Watch::new(&service).await;
        let tracker = QueryPerformanceTracker::new(metrics.clone());
        let (ran_tx, ran) = tokio::sync::oneshot::channel::<()>();

        let call = tokio::spawn({
            let tracked = tracked.clone();
            async move {
                tracker
                    .track_query("update", "between", async move {
                        let mut c = tracked.get().await?;
                        D::execute(&mut c, "SELECT 1").await?;
                        let _ = ran_tx.send(());
                        // idle between two statements: in-process work
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        D::execute(&mut c, "SELECT 2").await?;
                        Ok::<(), BoxError>(())
                    })
                    .await
            }
        });
        ran.await.expect("the first statement ran");
        let first = watch.backends().await;
        assert_eq!(first.len(), 1);
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());

        let served = timeout(DEADLINE, run_sql::<D>(&tracked, "SELECT 1")).await;
        assert!(
            matches!(served, Ok(Ok(()))),
            "the next caller is served: {served:?}"
        );
        assert_eq!(
            watch.backends().await,
            first,
            "the same backend, no new one"
        );
        let e = scrape();
        assert_eq!(n.queries(&e, "update", "between"), [0.0, 0.0, 1.0]);
        assert_eq!(n.published(&e), expected_cleanup::<D>(0.0, 0.0));
    })
    .await;
}

/// A generic tracked method: checks out, then sleeps `seconds` on the server.
#[track_query(select, "macro", metrics = metrics)]
async fn macro_sleep<D: Driver>(
    metrics: &DatabaseMetrics,
    tracked: &TrackedPool<D::Pool>,
    seconds: f64,
) -> Result<(), BoxError> {
    run_sql::<D>(tracked, &format!("SELECT pg_sleep({seconds})")).await
}

/// The storm for every driver: 2,000 tracked calls (macro, tracker, middleware) with
/// random deadlines on a pool of 4, a third of them sleeping 5 s. Every call counted once,
/// checkouts balanced, no backend runs a cut-off statement at the end, the pool serves, and the
/// cleanup counted what the driver does (deadpool: every busy connection discarded and its
/// statement cancelled; sqlx: discarded, nothing cancelled; bb8: cancelled, nothing discarded).
async fn a_storm_of_cut_off_calls_leaves_nothing_running<D: Cleans>() {
    const CALLS: u64 = 2_000;
    const BATCH: u64 = 100;
    // One storm at a time: they share the machine with every other test of this binary.
    let _storm = STORMS.lock().await;
    bounded(async {
        let service = unique("cancel_storm");
        let n = Names(&service);
        let (pool, metrics, tracked) = driver_pool::<D>(&service, 4);
        let watch = Watch::new(&service).await;
        let tracker = QueryPerformanceTracker::new(metrics.clone());
        let middleware = create_repository_middleware(pool.clone(), metrics.clone());
        let tallies: [Tally; 3] = Default::default();
        let mut rng = StdRng::seed_from_u64(0x5707_CA9C);

        for _ in 0..CALLS / BATCH {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..BATCH {
                let (deadline, seconds) = match rng.random_range(0..100) {
                    0..10 => (DEADLINE, rng.random_range(0.0..0.005)),
                    10..45 => (Duration::from_millis(rng.random_range(0..150)), 5.0),
                    _ => (
                        Duration::from_millis(rng.random_range(0..150)),
                        rng.random_range(0.0..0.02),
                    ),
                };
                let path = rng.random_range(0..3);
                let tally = tallies[path].clone();
                let (metrics, tracked, tracker, middleware) = (
                    metrics.clone(),
                    tracked.clone(),
                    tracker.clone(),
                    middleware.clone(),
                );
                batch.spawn(async move {
                    let sql = format!("SELECT pg_sleep({seconds})");
                    match path {
                        0 => tally.count(
                            &timeout(deadline, macro_sleep::<D>(&metrics, &tracked, seconds)).await,
                        ),
                        1 => {
                            let work = tracker.track_query(
                                "select",
                                "tracker",
                                run_sql::<D>(&tracked, &sql),
                            );
                            tally.count(&timeout(deadline, work).await);
                        }
                        _ => {
                            let work = middleware.repository_method_tracker(
                                "select",
                                "middleware",
                                "run_sql",
                                run_sql::<D>(&tracked, &sql),
                            );
                            tally.count(&timeout(deadline, work).await);
                        }
                    }
                });
            }
            while let Some(joined) = batch.join_next().await {
                joined.expect("no call panics");
            }
        }

        // every check has ended: the pool holds all its connections again
        eventually("the pool is whole again", DEADLINE, || async {
            tracked.status().is_some_and(|status| status.active() == 0)
        })
        .await;
        eventually("no backend runs a cut-off statement", DEADLINE, || async {
            watch.sleeping_now().await == 0
        })
        .await;
        // deadpool: every busy connection's statement cancelled (the others have nothing to
        // compare: sqlx publishes no cancels, bb8 no discards)
        let settled = || async {
            let [busy, _, _, cancelled] = n.published(&scrape());
            !(D::CANCELS && D::DETACHES) || cancelled == busy
        };
        eventually(
            "the cleanup counted what the driver does",
            DEADLINE,
            settled,
        )
        .await;
        let served = timeout(DEADLINE, run_sql::<D>(&tracked, "SELECT 1")).await;
        assert!(matches!(served, Ok(Ok(()))), "the pool serves: {served:?}");

        let e = scrape();
        let [busy, broken, no_runtime, cancelled_on_server] = n.published(&e);
        assert_eq!(
            [broken, no_runtime],
            expected_cleanup::<D>(0.0, 0.0)[1..3],
            "nothing broken"
        );
        if D::DETACHES {
            assert!(busy > Some(0.0), "the storm left busy connections");
        } else {
            assert_eq!(busy, None, "{} cannot discard: not published", D::NAME);
        }
        if D::CANCELS {
            assert!(
                cancelled_on_server > Some(0.0),
                "statements were cancelled on the server"
            );
        } else {
            assert_eq!(
                cancelled_on_server,
                None,
                "{} has no cancel request",
                D::NAME
            );
        }
        let busy = busy.unwrap_or(0.0);
        let cancelled_on_server = cancelled_on_server.unwrap_or(0.0);
        for (tally, table) in tallies.iter().zip(["macro", "tracker", "middleware"]) {
            assert_eq!(n.queries(&e, "select", table), tally.by_result(), "{table}");
        }
        let counted: u64 = tallies.iter().map(Tally::total).sum();
        assert_eq!(counted, CALLS, "every call counted by the test");
        let acquired = n.pool(&e, "connections_acquired_total");
        assert_eq!(n.pool(&e, "connections_released_total"), acquired);
        assert_eq!(n.pool(&e, "connection_wait_seconds_count"), acquired);
        assert_eq!(n.pool(&e, "connection_use_seconds_count"), acquired);
        let cancelled: f64 = tallies.iter().map(|t| t.by_result()[2]).sum();
        eprintln!(
            "{} storm: {counted} calls ({cancelled} cancelled), {acquired} checkouts, {busy} busy \
             connections discarded, {cancelled_on_server} statements cancelled on the server",
            D::NAME
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Scenarios on deadpool
// ---------------------------------------------------------------------------------------------

/// The first scenario, through `#[track_query]`: `pg_sleep(6)` cut off at 200 ms.
/// The next caller of the pool of one gets a connection and its `SELECT 1` answers in well
/// under a second, the server stops the statement within 3 s, the call counts once as
/// `cancelled`, and the busy connection was discarded, its statement cancelled on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sleep_stops_on_the_server_and_the_next_caller_does_not_wait() {
    bounded(async {
        let service = unique("cancel_sleep");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let repo = Repo::new(&pool, &service);
        let watch = Watch::new(&service).await;

        let cut = timeout(Duration::from_millis(200), repo.sleep(6.0)).await;
        assert!(cut.is_err(), "the sleep was cut off");
        let cancelled_at = Instant::now();

        // the next caller: a pool of one, whose only connection was running pg_sleep(6)
        let one: i32 = timeout(DEADLINE, async {
            let c = repo.conn().await.expect("a connection");
            c.query_one("SELECT 1", &[]).await.expect("SELECT 1").get(0)
        })
        .await
        .expect("the next caller is served");
        let waited = cancelled_at.elapsed();
        assert_eq!(one, 1);
        assert!(
            waited < Duration::from_secs(1),
            "the next SELECT 1 answered in {waited:?}"
        );

        eventually(
            "pg_sleep(6) stopped on the server",
            SERVER_STOPS_WITHIN.saturating_sub(cancelled_at.elapsed()),
            || async { watch.sleeping_now().await == 0 },
        )
        .await;
        let stopped = cancelled_at.elapsed();
        eventually("the cancel is counted", DEADLINE, || async {
            n.cancelled_on_server(&scrape()) == 1.0
        })
        .await;
        eprintln!("next SELECT 1 answered {waited:?} after the cut; server stopped by {stopped:?}");

        let e = scrape();
        assert_eq!(n.queries(&e, "select", "sleepers"), [0.0, 0.0, 1.0]);
        assert_eq!(n.cleanup(&e), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(n.pool(&e, "connections_created_total"), 2.0);
        n.assert_balanced(&e, repo.checkouts());
        assert_eq!(repo.checkouts(), 2);
        assert_eq!(pool.status().size, 1, "one connection open: the new one");
    })
    .await;
}

/// Through the tracker: a call cancelled while its connection is idle between two statements
/// gives the connection back to the pool (same backend, no new connection, nothing counted as
/// discarded or cancelled on the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_between_statements_keeps_its_connection() {
    bounded(async {
        let service = unique("cancel_idle");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let repo = Repo::new(&pool, &service);
        let tracker = QueryPerformanceTracker::new(repo.metrics.clone());
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel::<i32>();

        let call = tokio::spawn({
            let repo = repo.clone();
            async move {
                tracker
                    .track_query("update", "between", async move {
                        let c = repo.conn().await?;
                        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
                        let _ = pid_tx.send(pid);
                        // idle between two statements: in-process work
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        c.execute("SELECT 1", &[]).await?;
                        Ok::<(), RepoError>(())
                    })
                    .await
            }
        });
        let first = pid_rx.await.expect("the first statement ran");
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());

        assert_eq!(
            repo.pid().await,
            first,
            "the same backend serves the next caller"
        );
        let e = scrape();
        assert_eq!(n.queries(&e, "update", "between"), [0.0, 0.0, 1.0]);
        assert_eq!(n.cleanup(&e), [0.0; 4]);
        assert_eq!(
            n.pool(&e, "connections_created_total"),
            1.0,
            "no new connection"
        );
        n.assert_balanced(&e, repo.checkouts());
    })
    .await;
}

/// `transaction::run` on a connection the caller holds (the call only borrows it): cancelled
/// mid-statement, the statement is cancelled on the server when the caller drops the
/// connection and nothing of the transaction is kept; cancelled between statements, the
/// transaction is rolled back and the connection kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_on_a_borrowed_connection_is_cleaned_up() {
    bounded(async {
        let service = unique("cancel_tx");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let repo = Repo::new(&pool, &service);
        let watch = Watch::new(&service).await;
        let table = unique("cancel_tx_rows");
        watch
            .admin
            .batch_execute(&format!("CREATE TABLE {table} (id INT)"))
            .await
            .unwrap();
        let insert = format!("INSERT INTO {table} VALUES (1)");
        let count = format!("SELECT count(*) FROM {table}");

        // 1. mid-statement
        let call = tokio::spawn({
            let (repo, insert) = (repo.clone(), insert.clone());
            async move {
                let mut c = repo.conn().await?;
                transaction::run(&repo.metrics, &mut c, "slow_tx", |tx| {
                    Box::pin(async move {
                        tx.execute(insert.as_str(), &[]).await?;
                        tx.execute("SELECT pg_sleep(6)", &[]).await?;
                        Ok::<(), RepoError>(())
                    })
                })
                .await
            }
        });
        watch.sleeping(1).await;
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
        eventually(
            "pg_sleep(6) stopped on the server",
            SERVER_STOPS_WITHIN,
            || async { watch.sleeping_now().await == 0 },
        )
        .await;
        let c = repo.conn().await.unwrap();
        let rows: i64 = c.query_one(count.as_str(), &[]).await.unwrap().get(0);
        assert_eq!(rows, 0, "the transaction's insert is gone");
        // the connection that replaced the discarded one
        let replacement: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        drop(c);
        eventually("the cancel is counted", DEADLINE, || async {
            n.cancelled_on_server(&scrape()) == 1.0
        })
        .await;

        // 2. between statements: the drop's ROLLBACK ends the transaction, the connection stays
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let call = tokio::spawn({
            let (repo, insert) = (repo.clone(), insert.clone());
            async move {
                let mut c = repo.conn().await?;
                transaction::run(&repo.metrics, &mut c, "idle_tx", |tx| {
                    Box::pin(async move {
                        tx.execute(insert.as_str(), &[]).await?;
                        let _ = started_tx.send(());
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok::<(), RepoError>(())
                    })
                })
                .await
            }
        });
        started.await.expect("the insert ran");
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
        let c = repo.conn().await.unwrap();
        let rows: i64 = c.query_one(count.as_str(), &[]).await.unwrap().get(0);
        assert_eq!(
            rows, 0,
            "rolled back, and the connection is not inside the transaction"
        );
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pid, replacement, "the idle connection was kept");
        drop(c);

        let e = scrape();
        for name in ["slow_tx", "idle_tx"] {
            for (result, expected) in [("success", 0.0), ("error", 0.0), ("cancelled", 1.0)] {
                let labels = [("transaction", name), ("result", result)];
                assert_eq!(
                    e.value(&n.of("transactions_total"), &labels),
                    expected,
                    "{name} {result}"
                );
            }
        }
        assert_eq!(n.cleanup(&e), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(n.pool(&e, "connections_created_total"), 2.0);
        n.assert_balanced(&e, repo.checkouts());
        watch
            .admin
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    })
    .await;
}

/// A panic while a statement runs: inside a tracked body (recorded as `error`/`panic`) and in
/// a plain task holding a tracked connection (outside any tracked call). Either way the
/// statement is cancelled on the server and the pool of one serves the next caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_mid_statement_cancels_it_on_the_server() {
    bounded(async {
        let service = unique("cancel_panic");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let repo = Repo::new(&pool, &service);
        let watch = Arc::new(Watch::new(&service).await);

        let tracked = tokio::spawn({
            let (repo, watch) = (repo.clone(), watch.clone());
            async move { repo.panic_mid_statement(&watch).await }
        });
        let panicked = tracked.await.expect_err("the panic reaches the caller");
        assert!(panicked.is_panic());
        eventually(
            "the tracked statement stopped",
            SERVER_STOPS_WITHIN,
            || async { watch.sleeping_now().await == 0 },
        )
        .await;

        let plain = tokio::spawn({
            let (repo, watch) = (repo.clone(), watch.clone());
            async move {
                let c = repo.conn().await.expect("a connection");
                tokio::select! {
                    _ = c.execute("SELECT pg_sleep(6)", &[]) => {}
                    () = watch.sleeping(1) => panic!("boom outside a tracked call"),
                }
            }
        });
        assert!(plain.await.expect_err("panicked").is_panic());
        eventually(
            "the plain statement stopped",
            SERVER_STOPS_WITHIN,
            || async { watch.sleeping_now().await == 0 },
        )
        .await;

        assert_eq!(
            timeout(DEADLINE, repo.sleep(0.0))
                .await
                .ok()
                .map(|r| r.is_ok()),
            Some(true),
            "the pool of one serves"
        );
        eventually("both cancels are counted", DEADLINE, || async {
            n.cancelled_on_server(&scrape()) == 2.0
        })
        .await;
        let e = scrape();
        assert_eq!(n.queries(&e, "select", "panics"), [0.0, 1.0, 0.0]);
        assert_eq!(
            e.value(
                &n.of("errors_total"),
                &[
                    ("operation", "select"),
                    ("table", "panics"),
                    ("error_type", "panic")
                ]
            ),
            1.0
        );
        assert_eq!(n.queries(&e, "select", "sleepers"), [1.0, 0.0, 0.0]);
        assert_eq!(n.cleanup(&e), [2.0, 0.0, 0.0, 2.0]);
        n.assert_balanced(&e, repo.checkouts());
        assert_eq!(repo.checkouts(), 3);
    })
    .await;
}

/// The storm: 2,000 tracked calls (macro, tracker, middleware, `transaction::run` on a
/// connection its caller holds) with random deadlines on a pool of 4, a third of them sleeping
/// 5 s on the server. Every call is
/// counted once, checkouts balance, every busy connection's statement was stopped on the server
/// and no backend runs one at the end, every discarded connection is counted (open = created -
/// discarded), and the pool still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cancelled_calls_leaves_nothing_running_and_counts_everything() {
    const CALLS: u64 = 2_000;
    const BATCH: u64 = 100;
    // One storm at a time: they share the machine with every other test of this binary.
    let _storm = STORMS.lock().await;
    bounded(async {
        let service = unique("cancel_storm");
        let n = Names(&service);
        let pool = pool(config_named(&service), 4);
        let repo = Repo::new(&pool, &service);
        let watch = Watch::new(&service).await;
        let tracker = QueryPerformanceTracker::new(repo.metrics.clone());
        let middleware = create_repository_middleware(pool.clone(), repo.metrics.clone());
        let tallies: [Tally; 4] = Default::default();
        let mut rng = StdRng::seed_from_u64(0xCA9CE1);

        for _ in 0..CALLS / BATCH {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..BATCH {
                let (deadline, seconds) = match rng.random_range(0..100) {
                    // no deadline: a short statement that finishes
                    0..10 => (DEADLINE, rng.random_range(0.0..0.005)),
                    // cut off while a 5 s statement runs (or before it started)
                    10..45 => (Duration::from_millis(rng.random_range(0..150)), 5.0),
                    // short statements under a deadline: some finish, some do not
                    _ => (
                        Duration::from_millis(rng.random_range(0..150)),
                        rng.random_range(0.0..0.02),
                    ),
                };
                let path = rng.random_range(0..4);
                let tally = tallies[path].clone();
                let (repo, tracker, middleware) =
                    (repo.clone(), tracker.clone(), middleware.clone());
                batch.spawn(async move {
                    match path {
                        0 => tally.count(&timeout(deadline, repo.sleep(seconds)).await),
                        1 => {
                            let work = tracker.track_query("select", "tracker", async {
                                let c = repo.conn().await?;
                                c.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
                                Ok::<(), RepoError>(())
                            });
                            tally.count(&timeout(deadline, work).await);
                        }
                        2 => {
                            let work = middleware.repository_method_tracker(
                                "select",
                                "middleware",
                                "untracked_sleep",
                                repo.untracked_sleep(seconds),
                            );
                            tally.count(&timeout(deadline, work).await);
                        }
                        _ => {
                            // the caller holds the connection, the transaction borrows it
                            let mut c = repo.conn().await.expect("a connection");
                            let work = transaction::run(&repo.metrics, &mut c, "storm_tx", |tx| {
                                Box::pin(async move {
                                    tx.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
                                    Ok::<(), RepoError>(())
                                })
                            });
                            tally.count(&timeout(deadline, work).await);
                        }
                    }
                });
            }
            while let Some(joined) = batch.join_next().await {
                joined.expect("no call panics");
            }
        }

        // every check has ended: the pool holds all its connections, and each busy connection's
        // statement was stopped
        eventually("the pool is whole again", DEADLINE, || async {
            let status = pool.status();
            status.available == status.size && status.waiting == 0
        })
        .await;
        eventually(
            "every busy connection's statement is cancelled on the server",
            DEADLINE,
            || async {
                let e = scrape();
                n.cancelled_on_server(&e) == n.discarded(&e, DiscardReason::Busy)
            },
        )
        .await;
        assert_eq!(
            watch.sleeping_now().await,
            0,
            "no backend runs a cancelled statement"
        );
        let served = timeout(DEADLINE, repo.sleep(0.0)).await;
        assert!(matches!(served, Ok(Ok(()))), "the pool serves: {served:?}");
        tallies[0].add(Outcome::Success);

        let e = scrape();
        let [busy, broken, no_runtime, cancelled_on_server] = n.cleanup(&e);
        assert_eq!([broken, no_runtime], [0.0, 0.0]);
        assert!(busy > 0.0, "the storm left busy connections");
        let created = n.pool(&e, "connections_created_total");
        assert_eq!(
            created - busy,
            pool.status().size as f64,
            "every connection closed was counted as discarded"
        );
        for (tally, (operation, table)) in tallies[..3].iter().zip([
            ("select", "sleepers"),
            ("select", "tracker"),
            ("select", "middleware"),
        ]) {
            assert_eq!(
                n.queries(&e, operation, table),
                tally.by_result(),
                "{operation} {table}"
            );
        }
        let tx = ["success", "error", "cancelled"].map(|result| {
            e.value(
                &n.of("transactions_total"),
                &[("transaction", "storm_tx"), ("result", result)],
            )
        });
        assert_eq!(tx, tallies[3].by_result(), "storm_tx");
        let counted: u64 = tallies.iter().map(Tally::total).sum();
        assert_eq!(counted, CALLS + 1, "every call counted by the test");
        n.assert_balanced(&e, repo.checkouts());
        let cancelled: f64 = tallies.iter().map(|t| t.by_result()[2]).sum();
        assert!(cancelled > 0.0);
        eprintln!(
            "storm: {counted} calls counted ({cancelled} cancelled), {} checkouts, {created} \
             connections created, {busy} busy ones discarded, {cancelled_on_server} statements \
             cancelled on the server",
            repo.checkouts()
        );
    })
    .await;
}

/// The cancel request goes to a server that does not answer (the fault proxy, silent): the
/// dropping task is not held up, the busy connection is discarded, the cancel is not counted
/// as done, and when the server speaks again the pool serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_to_a_silent_server_hangs_nothing() {
    bounded(async {
        let service = unique("cancel_silent");
        let n = Names(&service);
        let (proxy, config) = FaultProxy::in_front_of(&config_named(&service))
            .await
            .unwrap();
        let pool = pool(config, 1);
        let repo = Repo::new(&pool, &service);
        let watch = Watch::new(&service).await;

        let call = tokio::spawn({
            let repo = repo.clone();
            async move { repo.sleep(6.0).await }
        });
        watch.sleeping(1).await;
        proxy.set_mode(Mode::Silent).await.unwrap();
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());

        eventually("the busy connection is discarded", DEADLINE, || async {
            n.discarded(&scrape(), DiscardReason::Busy) == 1.0
        })
        .await;
        eventually("the cancel request reached the proxy", DEADLINE, || async {
            proxy.accepted() == 2
        })
        .await;
        // the cancel's own bound (2 s) passes while the server stays silent
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(n.cleanup(&scrape()), [1.0, 0.0, 0.0, 0.0]);

        proxy.set_mode(Mode::Pass).await.unwrap();
        let served = timeout(DEADLINE, repo.sleep(0.0)).await;
        assert!(matches!(served, Ok(Ok(()))), "the pool serves: {served:?}");
        let e = scrape();
        assert_eq!(n.queries(&e, "select", "sleepers"), [1.0, 0.0, 1.0]);
        assert_eq!(n.cleanup(&e), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(n.pool(&e, "connections_created_total"), 2.0);
        n.assert_balanced(&e, repo.checkouts());
    })
    .await;
}

/// `cancel_on_drop(false)`: the connection goes back as it is (the next caller gets the same,
/// still busy backend and waits behind its statement), nothing is discarded or cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_out_returns_the_connection_as_it_is() {
    bounded(async {
        let service = unique("cancel_off");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let mut repo = Repo::new(&pool, &service);
        repo.pool = repo.pool.clone().cancel_on_drop(false);
        let watch = Watch::new(&service).await;

        let call = tokio::spawn({
            let repo = repo.clone();
            async move { repo.sleep(2.0).await }
        });
        watch.sleeping(1).await;
        let sleeper: i32 = watch
            .admin
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND strpos(query, 'pg_sleep') > 0",
                &[&service],
            )
            .await
            .unwrap()
            .get(0);
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
        let c = repo.conn().await.unwrap();
        assert_eq!(watch.sleeping_now().await, 1, "the statement runs on");
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            pid, sleeper,
            "the next caller waited behind it on the same backend"
        );
        drop(c);
        let e = scrape();
        assert_eq!(n.queries(&e, "select", "sleepers"), [0.0, 0.0, 1.0]);
        assert_eq!(n.cleanup(&e), [0.0; 4]);
        assert_eq!(n.pool(&e, "connections_created_total"), 1.0);
        n.assert_balanced(&e, repo.checkouts());
    })
    .await;
}

/// Without a Tokio runtime nothing can be checked: a tracked connection dropped by a panicking
/// plain thread is closed and counted `no_runtime`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_runtime_the_connection_is_discarded() {
    bounded(async {
        let service = unique("cancel_nort");
        let n = Names(&service);
        let pool = pool(config_named(&service), 1);
        let repo = Repo::new(&pool, &service);
        let c = repo.conn().await.unwrap();
        let joined = std::thread::spawn(move || {
            let _held = c;
            panic!("no runtime here");
        })
        .join();
        assert!(joined.is_err());
        let e = scrape();
        assert_eq!(n.cleanup(&e), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(pool.status().size, 0, "closed, not returned");
        n.assert_balanced(&e, repo.checkouts());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The test's own accounting
// ---------------------------------------------------------------------------------------------

/// Calls of one site by how they ended, as the test saw them.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<&'static str, u64>>>);

impl Tally {
    fn add(&self, outcome: Outcome) {
        *self.0.lock().unwrap().entry(outcome.result()).or_default() += 1;
    }

    /// Counts a call run under a deadline: `Err(Elapsed)` is `cancelled`.
    fn count<T, E>(&self, result: &Result<Result<T, E>, tokio::time::error::Elapsed>) {
        self.add(match result {
            Err(_) => Outcome::Cancelled,
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(_)) => Outcome::Error {
                error_type: "other",
            },
        });
    }

    /// success, error, cancelled.
    fn by_result(&self) -> [f64; 3] {
        let map = self.0.lock().unwrap();
        ["success", "error", "cancelled"].map(|r| map.get(r).copied().unwrap_or(0) as f64)
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}
