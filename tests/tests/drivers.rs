//! The pool, health, reliability and classification scenarios, once per driver (deadpool, sqlx,
//! bb8), against a real PostgreSQL and read from the rendered Prometheus text. Each scenario is a
//! generic `async fn`; `per_driver!` makes one test per driver (`deadpool::gauges_...`,
//! `sqlx::gauges_...`, `bb8::gauges_...`).
//!
//! Gauges are read with a bounded polling loop of `scrape()` (deadline [`DEADLINE`]): a bounded
//! wait, not a timing assertion.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dbmetrics::classify::classify;
use dbmetrics::health::HealthCheckable;
use dbmetrics::{
    ClassifyError, DatabaseHealthChecker, DatabaseMetrics, HealthStatus, TrackedPool,
    create_infrastructure_enhancer,
};
use dbmetrics_tests::drivers::Driver;
use dbmetrics_tests::proxy::{ClosedPort, FaultProxy, Mode};
use dbmetrics_tests::{Exposition, database, per_driver, prometheus, scrape, unique};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const POLL: Duration = Duration::from_millis(50);
/// How long a bounded wait waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// Checkouts of a test pool give up after this (long enough never to fire by accident).
const ACQUIRE: Duration = Duration::from_secs(10);
const PASSWORD: &str = "s3cr3t-pass";

per_driver!(
    gauges_with_three_of_four_held_and_one_waiter,
    wait_timeouts_are_counted_by_stage,
    random_holds_and_cancellations_balance,
    a_closed_port_is_unhealthy_within_the_bound_and_leaks_no_password,
    a_silent_listener_is_unhealthy_within_the_bound,
    sqlstate_classes_bare_and_inside_a_user_error,
    connections_cut_under_load_recover,
    a_leak_still_held_is_reported_by_the_poller,
    healthy_database_reads_healthy_with_both_json_shapes,
    gauges_are_published_at_setup_and_at_a_relabel_not_at_the_next_tick,
);

/// The metric names of one service.
struct Names(String);

impl Names {
    fn of(&self, suffix: &str) -> String {
        format!("{}_database_{suffix}", self.0)
    }

    /// `[active, idle, open, max, overflow]` of `pool`, as rendered.
    fn gauges(&self, e: &Exposition, pool: &str) -> [f64; 5] {
        [
            "connections_active",
            "connections_idle",
            "connections_open",
            "connections_max",
            "connections_overflow",
        ]
        .map(|g| {
            e.get(&self.of(g), &[("pool", pool)])
                .unwrap_or_else(|| panic!("{} {{pool={pool:?}}} is rendered", self.of(g)))
        })
    }

    fn counter(&self, e: &Exposition, suffix: &str, pool: &str) -> f64 {
        e.get(&self.of(suffix), &[("pool", pool)])
            .unwrap_or_else(|| panic!("{} {{pool={pool:?}}} is rendered", self.of(suffix)))
    }

    fn timeouts(&self, e: &Exposition, pool: &str, stage: &str) -> f64 {
        e.get(
            &self.of("connection_timeouts_total"),
            &[("pool", pool), ("stage", stage)],
        )
        .unwrap_or_else(|| panic!("timeouts {{pool={pool:?}, stage={stage:?}}} is rendered"))
    }

    /// Waits until `read` gives `expected`.
    async fn wait_for<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        expected: T,
        read: impl Fn(&Exposition) -> T,
    ) -> Exposition {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let e = scrape();
            let now = read(&e);
            if now == expected {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{what} is {now:?}, expected {expected:?} within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the gauges of `pool` are `[active, idle, open, max, overflow]`.
    async fn wait_for_gauges(&self, pool: &str, expected: [f64; 5]) -> Exposition {
        self.wait_for(
            &format!("gauges [active, idle, open, max, overflow] of {pool:?}"),
            expected,
            |e| self.gauges(e, pool),
        )
        .await
    }
}

/// A monitored pool of `max` connections (poller every 50 ms) and its tracked pool.
fn monitored<D: Driver>(
    prefix: &str,
    label: &str,
    max: u32,
    acquire_timeout: Duration,
) -> (Names, D::Pool, DatabaseMetrics, TrackedPool<D::Pool>) {
    prometheus();
    let service = unique(&format!("{prefix}_{}", D::NAME));
    let pool = D::pool(&database().config, max, acquire_timeout);
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .pool_name(label)
        .poll_interval(POLL)
        .build()
        .unwrap();
    let tracked = create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), label);
    (Names(service), pool, metrics, tracked)
}

async fn select_one<D: Driver>(conn: &mut dbmetrics::TrackedConnection<D::Pool>) {
    D::execute(conn, "SELECT 1").await.unwrap();
}

/// With a poller that ticks every 10 s (not once during the test), the gauges are rendered right
/// after setup, and right after the pool moves to another label: no wait for a tick.
async fn gauges_are_published_at_setup_and_at_a_relabel_not_at_the_next_tick<D: Driver>() {
    prometheus();
    let service = unique(&format!("drv_at_once_{}", D::NAME));
    let n = Names(service.clone());
    let pool = D::pool(&database().config, 3, ACQUIRE);
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .pool_name("first")
        .poll_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(n.gauges(&scrape(), "first"), [0.0, 0.0, 0.0, 3.0, 0.0]);

    let enhancer = create_infrastructure_enhancer(metrics.clone());
    let tracked = enhancer.enhance_pool(pool.clone(), "first");
    let conn = tracked.get().await.unwrap();
    // No tick since: the gauges still show the pool as it was at setup.
    assert_eq!(n.gauges(&scrape(), "first"), [0.0, 0.0, 0.0, 3.0, 0.0]);

    // The same pool under another label: its gauges move at once, with the pool as it is now.
    let moved = enhancer.enhance_pool(pool.clone(), "second");
    assert_eq!(moved.name(), "second");
    let e = scrape();
    assert_eq!(n.gauges(&e, "second"), [1.0, 0.0, 1.0, 3.0, 0.0]);
    assert_eq!(n.gauges(&e, "first"), [0.0; 5]);
    drop(conn);
}

async fn gauges_with_three_of_four_held_and_one_waiter<D: Driver>() {
    let (n, _pool, _metrics, tracked) = monitored::<D>("drv_gauges", "main", 4, ACQUIRE);
    let e = n.wait_for_gauges("main", [0.0, 0.0, 0.0, 4.0, 0.0]).await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "main"), 0.0);

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = tracked.get().await.unwrap();
        select_one::<D>(&mut conn).await;
        held.push(conn);
    }
    n.wait_for_gauges("main", [3.0, 0.0, 3.0, 4.0, 0.0]).await;

    // All 4 held, a 5th caller waits: overflow counts it.
    held.push(tracked.get().await.unwrap());
    let fifth = tokio::spawn({
        let tracked = tracked.clone();
        async move {
            let mut conn = tracked.get().await.unwrap();
            select_one::<D>(&mut conn).await;
        }
    });
    n.wait_for_gauges("main", [4.0, 0.0, 4.0, 4.0, 1.0]).await;

    drop(held);
    fifth.await.unwrap();
    let e = n.wait_for_gauges("main", [0.0, 4.0, 4.0, 4.0, 0.0]).await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "main"), 5.0);
    assert_eq!(n.counter(&e, "connections_released_total", "main"), 5.0);
    assert_eq!(n.counter(&e, "connection_wait_seconds_count", "main"), 5.0);
    assert_eq!(n.counter(&e, "connection_use_seconds_count", "main"), 5.0);
    assert_eq!(
        n.counter(&e, "connection_acquire_cancelled_total", "main"),
        0.0
    );
    assert_eq!(n.counter(&e, "connection_leaks_total", "main"), 0.0);
    // deadpool says which checkouts opened a connection; sqlx and bb8 do not, and the counter
    // is not published for them.
    let created = e.get(&n.of("connections_created_total"), &[("pool", "main")]);
    if D::NAME == "deadpool" {
        assert_eq!(created, Some(4.0));
    } else {
        assert_eq!(created, None);
    }
}

async fn wait_timeouts_are_counted_by_stage<D: Driver>() {
    let (n, _pool, _metrics, tracked) =
        monitored::<D>("drv_timeout", "single", 1, Duration::from_millis(100));
    let held = tracked.get().await.unwrap();
    for _ in 0..3 {
        let err = tracked.get().await.unwrap_err();
        assert_eq!(classify(&err), "pool_timeout", "{err}");
    }
    let e = scrape();
    assert_eq!(n.timeouts(&e, "single", "wait"), 3.0);
    assert_eq!(n.timeouts(&e, "single", "create"), 0.0);
    assert_eq!(n.timeouts(&e, "single", "recycle"), 0.0);
    assert_eq!(n.counter(&e, "connections_acquired_total", "single"), 1.0);
    assert_eq!(
        n.counter(&e, "connection_wait_seconds_count", "single"),
        1.0
    );
    // A failed checkout is not a cancelled one.
    assert_eq!(
        n.counter(&e, "connection_acquire_cancelled_total", "single"),
        0.0
    );
    drop(held);
    let e = scrape();
    assert_eq!(n.counter(&e, "connections_released_total", "single"), 1.0);
}

async fn random_holds_and_cancellations_balance<D: Driver>() {
    const TASKS: u64 = 16;
    const CHECKOUTS: u64 = 200;
    let (n, _pool, _metrics, tracked) = monitored::<D>("drv_stress", "stress", 4, ACQUIRE);
    let got = Arc::new(AtomicU64::new(0));
    let cancelled_waiting = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..TASKS)
        .map(|task| {
            let tracked = tracked.clone();
            let got = got.clone();
            let cancelled_waiting = cancelled_waiting.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task);
                for _ in 0..CHECKOUTS {
                    let hold = Duration::from_micros(rng.random_range(0..2_000));
                    let query = rng.random_bool(0.5);
                    match rng.random_range(0..4) {
                        // A deadline around the checkout alone.
                        0 => {
                            let limit = Duration::from_micros(rng.random_range(0..1_500));
                            match tokio::time::timeout(limit, tracked.get()).await {
                                Ok(conn) => {
                                    got.fetch_add(1, Ordering::Relaxed);
                                    let mut conn = conn.unwrap();
                                    if query {
                                        select_one::<D>(&mut conn).await;
                                    }
                                }
                                Err(_) => {
                                    cancelled_waiting.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        // A deadline around the hold alone: the connection is dropped with the
                        // cancelled future, during the query or the sleep, or not.
                        1 => {
                            let mut conn = tracked.get().await.unwrap();
                            got.fetch_add(1, Ordering::Relaxed);
                            let limit = Duration::from_micros(rng.random_range(0..2_000));
                            let work = async move {
                                if query {
                                    D::execute(&mut conn, "SELECT pg_sleep(0.001)")
                                        .await
                                        .unwrap();
                                }
                                tokio::time::sleep(hold).await;
                            };
                            let _ = tokio::time::timeout(limit, work).await;
                        }
                        // Plain checkouts.
                        _ => {
                            let mut conn = tracked.get().await.unwrap();
                            got.fetch_add(1, Ordering::Relaxed);
                            if query {
                                select_one::<D>(&mut conn).await;
                            }
                            tokio::time::sleep(hold).await;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let got = got.load(Ordering::Relaxed) as f64;
    let cancelled = cancelled_waiting.load(Ordering::Relaxed) as f64;
    assert_eq!(got + cancelled, (TASKS * CHECKOUTS) as f64);
    let e = n
        .wait_for(
            "no connection checked out, nobody waiting",
            [0.0, 0.0],
            |e| {
                let [active, _, _, _, overflow] = n.gauges(e, "stress");
                [active, overflow]
            },
        )
        .await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "stress"), got);
    assert_eq!(n.counter(&e, "connections_released_total", "stress"), got);
    assert_eq!(
        n.counter(&e, "connection_wait_seconds_count", "stress"),
        got
    );
    assert_eq!(n.counter(&e, "connection_use_seconds_count", "stress"), got);
    assert_eq!(
        n.counter(&e, "connection_acquire_cancelled_total", "stress"),
        cancelled
    );
    eprintln!(
        "{}: {got} checkouts, {cancelled} cancelled while waiting",
        D::NAME
    );
}

/// A checker whose every call is bounded by 1 s.
fn fast_failing_checker<P: HealthCheckable>(pool: P, service: &str) -> DatabaseHealthChecker {
    DatabaseHealthChecker::builder(pool, service)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Runs a health call; it must return within 5 s (its own bound is 1 s).
async fn call<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("the health call returned within its bound")
}

async fn a_closed_port_is_unhealthy_within_the_bound_and_leaks_no_password<D: Driver>() {
    let port = ClosedPort::new().unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port.port())
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres");
    let pool = D::pool(&config, 4, Duration::from_millis(500));
    let checker = fast_failing_checker(pool.clone(), "svc");

    let summary = call(checker.get_health_summary()).await;
    assert_eq!(summary.status, HealthStatus::Unhealthy);
    assert!(!summary.connectivity);
    assert_eq!(summary.error, Some("connection"));

    let detailed = call(checker.comprehensive_health_check()).await;
    assert_eq!(detailed.overall_status, HealthStatus::Unhealthy);
    assert_eq!(detailed.checks.connectivity.error, Some("connection"));
    assert_eq!(detailed.checks.query_performance.error, Some("connection"));
    assert_eq!(detailed.checks.database_resources.error, Some("connection"));

    for text in [
        serde_json::to_string(&summary).unwrap(),
        serde_json::to_string(&detailed).unwrap(),
        format!("{checker:?}"),
    ] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("postgres://"), "connection string: {text}");
    }
    drop(port);
}

async fn a_silent_listener_is_unhealthy_within_the_bound<D: Driver>() {
    let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
    proxy.set_mode(Mode::Silent).await.unwrap();
    let checker = fast_failing_checker(D::pool(&config, 4, ACQUIRE), "svc");

    let summary = call(checker.get_health_summary()).await;
    assert_eq!(summary.status, HealthStatus::Unhealthy);
    assert!(!summary.connectivity);
    assert_eq!(summary.error, Some("timeout"));

    let detailed = call(checker.comprehensive_health_check()).await;
    assert_eq!(detailed.overall_status, HealthStatus::Unhealthy);
    assert_eq!(detailed.checks.connectivity.error, Some("timeout"));
    assert_eq!(detailed.checks.query_performance.error, Some("timeout"));
    assert_eq!(detailed.checks.database_resources.error, Some("timeout"));
    // The server was reached at the TCP level and never answered.
    assert!(proxy.accepted() >= 1);
}

async fn healthy_database_reads_healthy_with_both_json_shapes<D: Driver>() {
    let pool = D::pool(&database().config, 4, ACQUIRE);
    let checker = dbmetrics_tests::patient_checker(pool, "svc");
    let summary = serde_json::to_value(call(checker.get_health_summary()).await).unwrap();
    assert_eq!(summary["status"], "healthy", "{summary}");
    assert_eq!(summary["connectivity"], true);
    for key in [
        "service",
        "response_time_seconds",
        "pool_utilization_percent",
        "active_connections",
        "timestamp",
    ] {
        assert!(summary.get(key).is_some(), "{key} in {summary}");
    }
    let detailed = serde_json::to_value(call(checker.comprehensive_health_check()).await).unwrap();
    assert_eq!(detailed["overall_status"], "healthy", "{detailed}");
    let checks = &detailed["checks"];
    assert_eq!(checks["connectivity"]["connectivity"], true);
    assert_eq!(checks["connection_pool"]["pool_size"], 4);
    assert!(checks["query_performance"]["simple_query_time_seconds"].is_f64());
    assert!(checks["query_performance"]["complex_query_time_seconds"].is_f64());
    let resources = &checks["database_resources"];
    assert_eq!(resources["status"], "healthy", "{resources}");
    assert!(resources["active_connections"].as_u64().unwrap() >= 1);
    assert!(resources["database_size"].as_str().unwrap().ends_with("B"));
}

/// A repository's own error type, wrapping the driver's error two ways.
#[derive(Debug, thiserror::Error)]
enum RepoError<E: StdError + 'static> {
    #[error("database error")]
    Db(#[source] E),
    #[error(transparent)]
    Transparent(E),
}

async fn sqlstate_classes_bare_and_inside_a_user_error<D: Driver>() {
    let (_n, _pool, _metrics, tracked) = monitored::<D>("drv_classes", "classes", 2, ACQUIRE);
    let table = unique("drv_classes");
    let mut conn = tracked.get().await.unwrap();
    D::execute(
        &mut conn,
        &format!("CREATE TEMP TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1)"),
    )
    .await
    .unwrap();
    let cases = [
        (format!("INSERT INTO {table} VALUES (1)"), "unique_violation"),
        (
            "SELECT * FROM dbmetrics_no_such_table".to_owned(),
            "undefined_table",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
                .to_owned(),
            "serialization_failure",
        ),
        (
            "SET statement_timeout = 50; SELECT pg_sleep(5)".to_owned(),
            "query_canceled",
        ),
    ];
    for (sql, class) in cases {
        let err = D::execute(&mut conn, &sql).await.unwrap_err();
        assert_eq!(err.error_type(), class, "{}: {err}", D::NAME);
        assert_eq!(classify(&err), class, "{err}");
        let wrapped: RepoError<D::Error> = RepoError::Db(err);
        assert_eq!(classify(&wrapped), class, "inside a user error");
        let RepoError::Db(err) = wrapped else {
            unreachable!()
        };
        let transparent: RepoError<D::Error> = RepoError::Transparent(err);
        assert_eq!(
            classify(&transparent),
            class,
            "behind #[error(transparent)]"
        );
    }
    D::execute(&mut conn, "RESET statement_timeout")
        .await
        .unwrap();
}

async fn connections_cut_under_load_recover<D: Driver>() {
    prometheus();
    let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
    let service = unique(&format!("drv_cut_{}", D::NAME));
    let n = Names(service.clone());
    let pool = D::pool(&config, 4, Duration::from_secs(2));
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .pool_name("cut")
        .poll_interval(POLL)
        .build()
        .unwrap();
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "cut");

    let failures = Arc::new(AtomicU64::new(0));
    let run_load = |rounds: u32| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let tracked = tracked.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        match tracked.get().await {
                            Ok(mut conn) => {
                                if D::execute(&mut conn, "SELECT pg_sleep(0.002)")
                                    .await
                                    .is_err()
                                {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        async move {
            for worker in workers {
                worker.await.unwrap();
            }
        }
    };
    let load = run_load(100);
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.cut_all().await;
    load.await;
    eprintln!(
        "{}: {} queries failed around the cut",
        D::NAME,
        failures.load(Ordering::Relaxed)
    );

    // After the cut, the pool replaces its broken connections: a bounded number of attempts
    // reaches a query that succeeds, and then every query does.
    let mut recovered = false;
    for _ in 0..20 {
        if let Ok(mut conn) = tracked.get().await
            && D::execute(&mut conn, "SELECT 1").await.is_ok()
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "a query succeeded again after the cut");
    let before = failures.load(Ordering::Relaxed);
    run_load(25).await;
    assert_eq!(
        failures.load(Ordering::Relaxed),
        before,
        "no failure once recovered"
    );

    let e = n
        .wait_for("active connections", 0.0, |e| n.gauges(e, "cut")[0])
        .await;
    assert_eq!(
        n.counter(&e, "connections_acquired_total", "cut"),
        n.counter(&e, "connections_released_total", "cut")
    );
}

async fn a_leak_still_held_is_reported_by_the_poller<D: Driver>() {
    let (n, _pool, _metrics, tracked) = monitored::<D>("drv_leak_held", "held", 2, ACQUIRE);
    let tracked = tracked.leak_threshold(Duration::from_millis(100));
    let conn = tracked.get().await.unwrap();
    // Reported while held, by a poller tick after the threshold.
    n.wait_for("leaks while held", 1.0, |e| {
        n.counter(e, "connection_leaks_total", "held")
    })
    .await;
    drop(conn);
    // Not a second time at release.
    assert_eq!(n.counter(&scrape(), "connection_leaks_total", "held"), 1.0);
}
