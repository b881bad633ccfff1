//! Pool monitoring against a real PostgreSQL: the poller's gauges, the tracked pool's counters
//! and histograms, timeouts, cancellation, and the poller's lifetime, all read from the
//! rendered Prometheus text.
//!
//! The poller runs every 50 ms here; assertions on gauges wait for the value with a bounded
//! polling loop of `scrape()` (deadline [`DEADLINE`]), which is a bounded wait, not a timing
//! assertion. Tests that count tasks run on a dedicated runtime, so that
//! `num_alive_tasks()` counts only their own tasks (the poller and deadpool's connection tasks).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dbmetrics::{
    DatabaseMetrics, TrackedPool, create_infrastructure_enhancer, setup_database_monitoring,
};
use dbmetrics_tests::Captured;
use dbmetrics_tests::{Exposition, database, prometheus, scrape, unique};
use deadpool_postgres::{PoolError, TimeoutType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const POLL: Duration = Duration::from_millis(50);
/// How long a bounded wait waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// The bound of every test body.
const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs `body` on a runtime of its own, bounded by [`TEST_BOUND`].
fn on_own_runtime<F: Future<Output = ()>>(body: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(TEST_BOUND, body)
            .await
            .expect("the test finished within its bound");
    });
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until this runtime has exactly `n` alive tasks.
async fn wait_for_tasks(n: usize, why: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = alive_tasks();
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: {now} tasks alive on the test runtime, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The metric names of one service.
struct Names(String);

impl Names {
    fn of(&self, suffix: &str) -> String {
        format!("{}_database_{suffix}", self.0)
    }

    /// `[active, idle, total, max, overflow]` of `pool`, as rendered.
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

    /// Waits until the gauges of `pool` are `[active, idle, total, max, overflow]`.
    async fn wait_for_gauges(&self, pool: &str, expected: [f64; 5]) -> Exposition {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let e = scrape();
            let now = self.gauges(&e, pool);
            if now == expected {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "gauges [active, idle, total, max, overflow] of {pool:?} are {now:?}, \
                 expected {expected:?} within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn monitor(pool: &deadpool_postgres::Pool, service: &str, label: &str) -> DatabaseMetrics {
    DatabaseMetrics::builder(pool, service)
        .pool_name(label)
        .poll_interval(POLL)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_checkouts_and_waiting_callers() {
    prometheus();
    let service = unique("svc_gauges");
    let n = Names(service.clone());
    let pool = database().pool(4);
    let metrics = monitor(&pool, &service, "main");
    let tracked =
        create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "main");

    // Before any checkout: nothing open, max 4, counters rendered at 0.
    let e = n.wait_for_gauges("main", [0.0, 0.0, 0.0, 4.0, 0.0]).await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "main"), 0.0);

    // Hold 3 of 4: three connections were opened, all checked out.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tracked.get().await.unwrap());
    }
    n.wait_for_gauges("main", [3.0, 0.0, 3.0, 4.0, 0.0]).await;

    // With 3 of 4 held a 4th caller is served at once (a 4th connection is opened), so to
    // make a 5th caller wait all 4 must be held: then active 4, total 4, and the 5th
    // caller is the one overflow counts.
    held.push(tracked.get().await.unwrap());
    let fifth = tokio::spawn({
        let tracked = tracked.clone();
        async move {
            let c = tracked.get().await.unwrap();
            c.simple_query("SELECT 1").await.unwrap();
        }
    });
    n.wait_for_gauges("main", [4.0, 0.0, 4.0, 4.0, 1.0]).await;

    // Release all: the 5th caller gets a recycled connection and returns it.
    for c in &held {
        c.simple_query("SELECT 1").await.unwrap();
    }
    drop(held);
    fifth.await.unwrap();
    let e = n.wait_for_gauges("main", [0.0, 4.0, 4.0, 4.0, 0.0]).await;
    let acquired = n.counter(&e, "connections_acquired_total", "main");
    assert_eq!(acquired, 5.0);
    assert_eq!(
        n.counter(&e, "connections_released_total", "main"),
        acquired
    );
    // Four connections were opened; the 5th checkout reused one.
    assert_eq!(n.counter(&e, "connections_created_total", "main"), 4.0);
    assert_eq!(n.counter(&e, "connection_wait_seconds_count", "main"), 5.0);
    assert_eq!(n.counter(&e, "connection_use_seconds_count", "main"), 5.0);
    for stage in ["wait", "create", "recycle"] {
        assert_eq!(n.timeouts(&e, "main", stage), 0.0, "{stage}");
    }
    assert_eq!(e.types[&n.of("connections_overflow")], "gauge");
    assert_eq!(e.types[&n.of("connection_wait_seconds")], "histogram");
}

#[tokio::test]
async fn the_default_poller_shows_a_change() {
    prometheus();
    assert_eq!(
        dbmetrics::DatabaseMetrics::DEFAULT_POLL_INTERVAL,
        Duration::from_secs(1)
    );
    let service = unique("svc_default_poll");
    let n = Names(service.clone());
    let pool = database().pool(2);
    let metrics = setup_database_monitoring(&pool, &service).unwrap();
    assert_eq!(metrics.poll_interval(), Duration::from_secs(1));
    // Set at setup, before the first tick.
    assert_eq!(n.gauges(&scrape(), "default"), [0.0, 0.0, 0.0, 2.0, 0.0]);
    // A checkout through the plain pool: the gauges see every checkout, tracked or not.
    let started = Instant::now();
    let client = pool.get().await.unwrap();
    n.wait_for_gauges("default", [1.0, 0.0, 1.0, 2.0, 0.0])
        .await;
    eprintln!(
        "default poller: a checkout showed after {:?}",
        started.elapsed()
    );
    drop(client);
    n.wait_for_gauges("default", [0.0, 1.0, 1.0, 2.0, 0.0])
        .await;
}

#[tokio::test]
async fn wait_timeouts_are_counted_by_stage() {
    prometheus();
    let service = unique("svc_wait_timeout");
    let n = Names(service.clone());
    let manager = deadpool_postgres::Manager::from_config(
        database().config.clone(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig::default(),
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .wait_timeout(Some(Duration::from_millis(100)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap();
    let metrics = monitor(&pool, &service, "single");
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "single");

    let held = tracked.get().await.unwrap();
    for _ in 0..3 {
        let err = tracked.get().await.unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutType::Wait)),
            "{err:?}"
        );
    }
    let e = scrape();
    assert_eq!(n.timeouts(&e, "single", "wait"), 3.0);
    assert_eq!(n.timeouts(&e, "single", "create"), 0.0);
    assert_eq!(n.timeouts(&e, "single", "recycle"), 0.0);
    // Failed checkouts are neither acquisitions nor wait samples.
    assert_eq!(n.counter(&e, "connections_acquired_total", "single"), 1.0);
    assert_eq!(
        n.counter(&e, "connection_wait_seconds_count", "single"),
        1.0
    );
    drop(held);
    let e = scrape();
    assert_eq!(n.counter(&e, "connections_released_total", "single"), 1.0);
}

#[tokio::test]
async fn create_timeouts_are_counted_by_stage() {
    prometheus();
    let service = unique("svc_create_timeout");
    let n = Names(service.clone());
    // A server that accepts the TCP connection and never answers the startup message.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(silent.local_addr().unwrap().port())
        .user("postgres")
        .dbname("postgres");
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig::default(),
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .create_timeout(Some(Duration::from_millis(100)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap();
    let metrics = monitor(&pool, &service, "silent");
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "silent");
    for _ in 0..2 {
        let err = tracked.get().await.unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutType::Create)),
            "{err:?}"
        );
    }
    let e = scrape();
    assert_eq!(n.timeouts(&e, "silent", "create"), 2.0);
    assert_eq!(n.timeouts(&e, "silent", "wait"), 0.0);
    assert_eq!(n.counter(&e, "connections_acquired_total", "silent"), 0.0);
    assert_eq!(n.counter(&e, "connections_created_total", "silent"), 0.0);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_count_nothing_and_cancelled_or_panicking_holders_release() {
    prometheus();
    let service = unique("svc_cancel");
    let n = Names(service.clone());
    let pool = database().pool(1);
    let metrics = monitor(&pool, &service, "one");
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "one");

    // A checkout cancelled while it waits: nothing acquired, no wait sample, no timeout.
    let held = tracked.get().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(50), tracked.get()).await;
    assert!(
        waited.is_err(),
        "the checkout waited (the only connection is held)"
    );
    let e = scrape();
    assert_eq!(n.counter(&e, "connections_acquired_total", "one"), 1.0);
    assert_eq!(n.counter(&e, "connection_wait_seconds_count", "one"), 1.0);
    assert_eq!(n.timeouts(&e, "one", "wait"), 0.0);
    drop(held);

    // A task cancelled while it holds a connection releases it.
    let (got, got_rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let tracked = tracked.clone();
        async move {
            let _c = tracked.get().await.unwrap();
            got.send(()).unwrap();
            std::future::pending::<()>().await;
        }
    });
    got_rx.await.unwrap();
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());

    // A task that panics while it holds a connection releases it.
    let panicker = tokio::spawn({
        let tracked = tracked.clone();
        async move {
            let c = tracked.get().await.unwrap();
            c.simple_query("SELECT 1").await.unwrap();
            panic!("the holder panics");
        }
    });
    assert!(panicker.await.unwrap_err().is_panic());

    let e = n.wait_for_gauges("one", [0.0, 1.0, 1.0, 1.0, 0.0]).await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "one"), 3.0);
    assert_eq!(n.counter(&e, "connections_released_total", "one"), 3.0);
    assert_eq!(n.counter(&e, "connection_use_seconds_count", "one"), 3.0);
    // The pool is whole again: the next checkout is served.
    drop(
        tokio::time::timeout(DEADLINE, tracked.get())
            .await
            .unwrap()
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_with_random_holds_and_cancellations_balance() {
    const TASKS: u64 = 16;
    const CHECKOUTS: u64 = 200;
    prometheus();
    let service = unique("svc_stress");
    let n = Names(service.clone());
    let pool = database().pool(4);
    let metrics = monitor(&pool, &service, "stress");
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "stress");

    // What the test itself saw: checkouts that returned a connection, and cancellations.
    let got = Arc::new(AtomicU64::new(0));
    let cancelled_waiting = Arc::new(AtomicU64::new(0));
    let cancelled_holding = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..TASKS)
        .map(|task| {
            let tracked = tracked.clone();
            let got = got.clone();
            let cancelled_waiting = cancelled_waiting.clone();
            let cancelled_holding = cancelled_holding.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task);
                for _ in 0..CHECKOUTS {
                    let hold = Duration::from_micros(rng.random_range(0..2_000));
                    let query = rng.random_bool(0.5);
                    match rng.random_range(0..10) {
                        // A deadline around the checkout alone: cancelled while waiting, or not.
                        0..=2 => {
                            let limit = Duration::from_micros(rng.random_range(0..1_500));
                            match tokio::time::timeout(limit, tracked.get()).await {
                                Ok(c) => {
                                    got.fetch_add(1, Ordering::Relaxed);
                                    if query {
                                        c.unwrap().simple_query("SELECT 1").await.unwrap();
                                    }
                                }
                                Err(_) => {
                                    cancelled_waiting.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        // A deadline around the hold alone: the connection is dropped with
                        // the cancelled future (during the query or the sleep), or not.
                        3..=4 => {
                            let c = tracked.get().await.unwrap();
                            got.fetch_add(1, Ordering::Relaxed);
                            let limit = Duration::from_micros(rng.random_range(0..2_000));
                            let work = async move {
                                if query {
                                    c.simple_query("SELECT pg_sleep(0.001)").await.unwrap();
                                }
                                tokio::time::sleep(hold).await;
                            };
                            if tokio::time::timeout(limit, work).await.is_err() {
                                cancelled_holding.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // A deadline around checkout and hold: cancelled while waiting or
                        // while holding, or not at all.
                        5 => {
                            let limit = Duration::from_micros(rng.random_range(0..2_000));
                            let holding = AtomicBool::new(false);
                            let work = async {
                                let c = tracked.get().await.unwrap();
                                got.fetch_add(1, Ordering::Relaxed);
                                holding.store(true, Ordering::Relaxed);
                                if query {
                                    c.simple_query("SELECT pg_sleep(0.001)").await.unwrap();
                                }
                                tokio::time::sleep(hold).await;
                            };
                            if tokio::time::timeout(limit, work).await.is_err() {
                                if holding.load(Ordering::Relaxed) {
                                    cancelled_holding.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    cancelled_waiting.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        _ => {
                            let c = tracked.get().await.unwrap();
                            got.fetch_add(1, Ordering::Relaxed);
                            if query {
                                c.simple_query("SELECT 1").await.unwrap();
                            }
                            tokio::time::sleep(hold).await;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    let got = got.load(Ordering::Relaxed) as f64;
    let e = n.wait_for_gauges("stress", [0.0, 4.0, 4.0, 4.0, 0.0]).await;
    let acquired = n.counter(&e, "connections_acquired_total", "stress");
    eprintln!(
        "stress: {acquired} acquired of {} checkouts started; {} cancelled while waiting, {} \
         cancelled while holding",
        TASKS * CHECKOUTS,
        cancelled_waiting.load(Ordering::Relaxed),
        cancelled_holding.load(Ordering::Relaxed)
    );
    assert_eq!(
        acquired, got,
        "acquired_total is exactly the checkouts that returned"
    );
    assert_eq!(
        n.counter(&e, "connections_released_total", "stress"),
        acquired
    );
    assert_eq!(
        n.counter(&e, "connection_wait_seconds_count", "stress"),
        acquired
    );
    assert_eq!(
        n.counter(&e, "connection_use_seconds_count", "stress"),
        acquired
    );
    // Cancellations did happen, so the balance above covered them.
    assert!(cancelled_waiting.load(Ordering::Relaxed) > 0);
    assert!(cancelled_holding.load(Ordering::Relaxed) > 0);
    assert!(acquired < (TASKS * CHECKOUTS) as f64);
    // At most 4 connections were ever opened; each counted once when first handed out.
    let created = n.counter(&e, "connections_created_total", "stress");
    assert!((1.0..=4.0).contains(&created), "created {created}");
    for stage in ["wait", "create", "recycle"] {
        assert_eq!(n.timeouts(&e, "stress", stage), 0.0, "{stage}");
    }
}

#[test]
fn closing_the_pool_zeroes_the_gauges_and_stops_the_poller() {
    prometheus();
    let database = database();
    on_own_runtime(async {
        let service = unique("svc_close");
        let n = Names(service.clone());
        let pool = database.pool(3);
        let base = alive_tasks();
        let metrics = monitor(&pool, &service, "closing");
        wait_for_tasks(base + 1, "the poller runs").await;
        let tracked =
            create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "closing");
        // Enhancing the monitored pool under its own label shares its poller.
        assert_eq!(alive_tasks(), base + 1);

        let held = [tracked.get().await.unwrap(), tracked.get().await.unwrap()];
        // The poller and two connection tasks (deadpool-postgres spawns one per connection).
        wait_for_tasks(base + 3, "the poller and two connections").await;
        n.wait_for_gauges("closing", [2.0, 0.0, 2.0, 3.0, 0.0])
            .await;

        // Close while both are held and every handle is alive: the closed pool is 0, and only
        // the poller stops (the two held connections still run).
        pool.close();
        n.wait_for_gauges("closing", [0.0, 0.0, 0.0, 0.0, 0.0])
            .await;
        wait_for_tasks(base + 2, "the poller stopped when the pool closed").await;
        assert!(matches!(tracked.get().await, Err(PoolError::Closed)));

        drop(held);
        wait_for_tasks(base, "connections returned to a closed pool are closed").await;
        let e = scrape();
        assert_eq!(n.counter(&e, "connections_acquired_total", "closing"), 2.0);
        assert_eq!(n.counter(&e, "connections_released_total", "closing"), 2.0);
        assert_eq!(n.gauges(&e, "closing"), [0.0; 5]);
        drop((metrics, tracked));
    });
}

#[test]
fn dropping_every_handle_stops_the_pollers() {
    prometheus();
    let database = database();
    on_own_runtime(async {
        let service = unique("svc_drop");
        let n = Names(service.clone());
        let pool = database.pool(2);
        let batch_pool = database.pool(2);
        let base = alive_tasks();
        let metrics = monitor(&pool, &service, "primary");
        let enhancer = create_infrastructure_enhancer(metrics.clone());
        let primary = enhancer.enhance_pool(pool.clone(), "primary");
        // Another pool under its own label gets a poller of its own.
        let batch = enhancer.enhance_pool(batch_pool.clone(), "batch");
        wait_for_tasks(base + 2, "one poller per label").await;
        drop(enhancer);

        // With the user's handle gone, the tracked pools still hold theirs: both pollers run.
        drop(metrics);
        let c = primary.get().await.unwrap();
        let b = batch.get().await.unwrap();
        let e = n
            .wait_for_gauges("primary", [1.0, 0.0, 1.0, 2.0, 0.0])
            .await;
        assert_eq!(n.gauges(&e, "primary"), [1.0, 0.0, 1.0, 2.0, 0.0]);
        n.wait_for_gauges("batch", [1.0, 0.0, 1.0, 2.0, 0.0]).await;
        drop((c, b));
        n.wait_for_gauges("batch", [0.0, 1.0, 1.0, 2.0, 0.0]).await;
        // Close the idle connections (without closing the pools), so that only pollers remain.
        pool.retain(|_, _| false);
        batch_pool.retain(|_, _| false);
        wait_for_tasks(base + 2, "two pollers, no connection").await;

        drop(primary);
        wait_for_tasks(base + 1, "the primary poller stopped with its last handle").await;
        drop(batch);
        wait_for_tasks(base, "the batch poller stopped with its last handle").await;
        // The pools themselves are still open and usable.
        assert!(!pool.is_closed() && !batch_pool.is_closed());
        drop(pool.get().await.unwrap());
    });
}

#[test]
fn one_poller_per_pool_label_and_a_new_runtime_gets_it_back() {
    prometheus();
    let database = database();
    let service = unique("svc_twice");
    let n = Names(service.clone());
    let pool = database.pool(2);
    let kept = std::sync::Mutex::new(None);
    on_own_runtime(async {
        let base = alive_tasks();
        let a = monitor(&pool, &service, "main");
        let b = monitor(&pool, &service, "main");
        assert!(a.same_handle(&b), "one shared handle");
        wait_for_tasks(base + 1, "one poller for one pool label").await;
        // Another open pool under the same label is refused.
        let other = database.pool(2);
        let err = DatabaseMetrics::builder(&other, &service)
            .pool_name("main")
            .build()
            .unwrap_err();
        assert!(
            matches!(err, dbmetrics::Error::DuplicatePool { .. }),
            "{err}"
        );
        drop(b);
        *kept.lock().unwrap() = Some(a);
    });
    // That runtime is gone, and its poller with it; the handle lives on. Setting up again on
    // a new runtime shares the handle and starts the poller there.
    on_own_runtime(async {
        let base = alive_tasks();
        let again = monitor(&pool, &service, "main");
        let kept = kept.lock().unwrap().take().unwrap();
        assert!(again.same_handle(&kept));
        wait_for_tasks(base + 1, "the poller restarted on this runtime").await;
        let c = pool.get().await.unwrap();
        n.wait_for_gauges("main", [1.0, 0.0, 1.0, 2.0, 0.0]).await;
        drop(c);
        n.wait_for_gauges("main", [0.0, 1.0, 1.0, 2.0, 0.0]).await;
        // Once the pool is closed its label is free for a new pool (a reconnect).
        pool.close();
        n.wait_for_gauges("main", [0.0; 5]).await;
        let replacement = database.pool(3);
        let fresh = monitor(&replacement, &service, "main");
        assert!(!fresh.same_handle(&kept));
        n.wait_for_gauges("main", [0.0, 0.0, 0.0, 3.0, 0.0]).await;
        drop((again, kept, fresh));
        wait_for_tasks(base, "every poller stopped").await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_of_one_service_have_separate_series() {
    prometheus();
    let service = unique("svc_two_pools");
    let n = Names(service.clone());
    let primary_pool = database().pool(2);
    let replica_pool = database().pool(3);
    // The primary through the builder; the replica only through the enhancer.
    let metrics = monitor(&primary_pool, &service, "primary");
    let enhancer = create_infrastructure_enhancer(metrics.clone());
    let primary: TrackedPool = enhancer.enhance_pool(primary_pool.clone(), "primary");
    let replica: TrackedPool = enhancer.enhance_pool(replica_pool.clone(), "replica");
    assert_eq!((primary.name(), replica.name()), ("primary", "replica"));

    let p = primary.get().await.unwrap();
    let r = [replica.get().await.unwrap(), replica.get().await.unwrap()];
    n.wait_for_gauges("primary", [1.0, 0.0, 1.0, 2.0, 0.0])
        .await;
    let e = n
        .wait_for_gauges("replica", [2.0, 0.0, 2.0, 3.0, 0.0])
        .await;
    assert_eq!(n.counter(&e, "connections_acquired_total", "primary"), 1.0);
    assert_eq!(n.counter(&e, "connections_acquired_total", "replica"), 2.0);
    assert_eq!(n.counter(&e, "connections_created_total", "replica"), 2.0);
    drop((p, r));
    n.wait_for_gauges("replica", [0.0, 2.0, 2.0, 3.0, 0.0])
        .await;
    // Each pool has its own poller: wait for the primary's tick too.
    let e = n
        .wait_for_gauges("primary", [0.0, 1.0, 1.0, 2.0, 0.0])
        .await;
    assert_eq!(n.gauges(&e, "replica"), [0.0, 2.0, 2.0, 3.0, 0.0]);
    assert_eq!(n.counter(&e, "connections_released_total", "primary"), 1.0);
    assert_eq!(n.counter(&e, "connections_released_total", "replica"), 2.0);
    // Exactly two label values, no mixing.
    let mut labels: Vec<_> = e
        .matching(&n.of("connections_active"), &[])
        .iter()
        .map(|l| l.labels["pool"].clone())
        .collect();
    labels.sort();
    assert_eq!(labels, ["primary", "replica"]);

    // The replica's label belongs to the replica pool: the same label for the primary pool
    // is refused by the builder.
    let err = DatabaseMetrics::builder(&primary_pool, &service)
        .pool_name("replica")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_already_monitored_moves_to_the_name_given_when_enhanced() {
    prometheus();
    let service = unique("pool_one_label");
    let names = Names(service.clone());
    let pool = database().pool(2);
    let metrics = monitor(&pool, &service, "default");
    // One checkout under the first label, so that its counters have something to keep.
    let first =
        create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "default");
    drop(first.get().await.unwrap());
    names
        .wait_for_gauges("default", [0.0, 1.0, 1.0, 2.0, 0.0])
        .await;
    // The same pool, enhanced under another name: every series moves to `batch`, the pool is
    // still counted once (one poller, one label), and the move is a warning naming the service
    // and both labels. (The subscriber is this thread's: `enhance_pool` moves the pool here.)
    let captured = Captured::default();
    let subscriber = tracing::subscriber::set_default(captured.subscriber());
    let tracked =
        create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "batch");
    drop(subscriber);
    let warning = captured.text();
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(warning.contains(" WARN dbmetrics: "), "{warning}");
    assert!(
        warning.contains(&format!(
            "service {service:?}: the pool labelled \"default\" is now published as \
             pool=\"batch\""
        )),
        "{warning}"
    );
    assert_eq!(tracked.name(), "batch");
    assert_eq!(first.name(), "batch");
    assert_eq!(metrics.pool_name(), "batch");
    drop(tracked.get().await.unwrap());
    let e = names
        .wait_for_gauges("batch", [0.0, 1.0, 1.0, 2.0, 0.0])
        .await;
    assert_eq!(
        names.counter(&e, "connections_acquired_total", "batch"),
        1.0
    );
    assert_eq!(
        names.counter(&e, "connections_released_total", "batch"),
        1.0
    );
    // The old label's gauges dropped to 0; its counters stay exported with their last values
    // (a recorder cannot forget a series), and stop there.
    for gauge in [
        "connections_active",
        "connections_idle",
        "connections_open",
        "connections_max",
        "connections_overflow",
    ] {
        assert_eq!(
            e.get(&names.of(gauge), &[("pool", "default")]),
            Some(0.0),
            "{gauge}"
        );
    }
    assert_eq!(
        names.counter(&e, "connections_acquired_total", "default"),
        1.0
    );
    assert_eq!(
        names.counter(&e, "connections_released_total", "default"),
        1.0
    );
    // Summed over the pool label, the checkouts of the pool across the move: 2.
    assert_eq!(e.sum(&names.of("connections_acquired_total"), &[]), 2.0);
    // Setting the pool up again under a third name moves it again: the same handle.
    let again = monitor(&pool, &service, "main");
    assert!(again.same_handle(&metrics));
    assert_eq!(tracked.name(), "main");
    names
        .wait_for_gauges("main", [0.0, 1.0, 1.0, 2.0, 0.0])
        .await;
}
