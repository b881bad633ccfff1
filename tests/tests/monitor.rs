//! One call wires a service (`monitor_database`, `DatabaseMetrics::builder(..).build_monitored()`),
//! the optional `function` label, and setups that conflict, against a real PostgreSQL and the
//! rendered Prometheus text.

use std::collections::BTreeMap;
use std::time::Duration;

use dbmetrics::health::HealthConfig;
use dbmetrics::{
    DatabaseMetrics, Error, HealthStatus, MonitoredDatabase, Operation, QueryPerformanceTracker,
    TrackedPool, TrackedRepository, create_repository_middleware, monitor_database,
    setup_database_monitoring, track_query,
};
use dbmetrics_tests::drivers::Driver;
use dbmetrics_tests::{Exposition, database, per_driver, prometheus, scrape, unique};

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Clone, TrackedRepository)]
struct NumberRepository {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl NumberRepository {
    #[track_query(select, "numbers")]
    async fn one(&self) -> Result<i32, RepoError> {
        let client = self.pool.get().await?;
        Ok(client.query_one("SELECT 1", &[]).await?.get(0))
    }
}

fn name(service: &str, suffix: &str) -> String {
    format!("{service}_database_{suffix}")
}

/// Waits until the poller has published `max` as the pool's maximum under `pool`.
async fn scrape_when_max(service: &str, pool: &str, max: f64) -> Exposition {
    for _ in 0..500 {
        let e = scrape();
        if e.get(&name(service, "connections_max"), &[("pool", pool)]) == Some(max) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gauges of {service}/{pool} never showed max {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_wires_metrics_tracked_pool_and_health_from_one_name() {
    prometheus();
    let service = unique("one_call");
    let pool = database().pool(3);
    let MonitoredDatabase {
        metrics,
        pool: tracked,
        health,
    } = monitor_database(&pool, &service).unwrap();

    // one service name and one pool label everywhere
    assert_eq!(metrics.service(), service);
    assert_eq!(metrics.pool_name(), "default");
    assert_eq!(tracked.name(), "default");
    assert_eq!(health.service(), service);
    assert_eq!(health.config(), &HealthConfig::default());

    let repo = NumberRepository {
        pool: tracked.clone(),
        metrics: metrics.clone(),
    };
    for _ in 0..4 {
        assert_eq!(repo.one().await.unwrap(), 1);
    }

    let e = scrape_when_max(&service, "default", 3.0).await;
    let default = [("pool", "default")];
    assert_eq!(
        e.get(
            &name(&service, "query_duration_seconds_count"),
            &[
                ("operation", "select"),
                ("table", "numbers"),
                ("result", "success")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        e.get(&name(&service, "connections_acquired_total"), &default),
        Some(4.0)
    );
    assert_eq!(
        e.get(&name(&service, "connections_released_total"), &default),
        Some(4.0)
    );
    assert_eq!(
        e.get(&name(&service, "connection_wait_seconds_count"), &default),
        Some(4.0)
    );
    // exactly one pool label for this service
    let labels: Vec<_> = e
        .matching(&name(&service, "connections_max"), &[])
        .iter()
        .map(|l| l.labels["pool"].clone())
        .collect();
    assert_eq!(labels, ["default"]);

    // the checker looks at the same pool
    let summary = health.get_health_summary().await;
    assert!(summary.connectivity, "{summary:?}");
    assert!(summary.status.is_available(), "{summary:?}");
    assert_eq!(summary.service, service);
    assert_eq!(summary.pool_max_size, 3);
    assert_eq!(summary.pool_checked_out, 0);

    // set up again, one call or the seed-compatible one: the same handle, the same label
    let again = monitor_database(&pool, &service).unwrap();
    assert!(again.metrics.same_handle(&metrics));
    assert_eq!(again.pool.name(), "default");
    let seed = setup_database_monitoring(&pool, &service).unwrap();
    assert!(seed.same_handle(&metrics));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_monitored_takes_the_options_once_for_all_three() {
    prometheus();
    let service = unique("one_call_options");
    let pool = database().pool(2);

    // invalid health settings: an error, and nothing was set up
    let mut bad = HealthConfig::default();
    bad.timeout = Duration::ZERO;
    let err = DatabaseMetrics::builder(&pool, &service)
        .poll_interval(Duration::from_millis(50))
        .health_config(bad)
        .build_monitored()
        .unwrap_err();
    assert!(matches!(err, Error::HealthConfig(_)), "{err}");

    // patient thresholds, so that a loaded machine still reads healthy
    let mut config = HealthConfig::default();
    config.timeout = Duration::from_secs(20);
    config.slow_connectivity = Duration::from_secs(20);
    config.slow_simple_query = Duration::from_secs(20);
    config.slow_complex_query = Duration::from_secs(20);
    config.connections_usage_degraded = 100.0;
    let db = DatabaseMetrics::builder(&pool, &service)
        .pool_name("replica")
        .poll_interval(Duration::from_millis(20))
        .health_config(config.clone())
        .build_monitored()
        .unwrap();
    assert_eq!(db.metrics.pool_name(), "replica");
    assert_eq!(db.metrics.poll_interval(), Duration::from_millis(20));
    assert_eq!(db.pool.name(), "replica");
    assert_eq!(db.health.config(), &config);
    assert_eq!(db.health.service(), service);

    let held = db.pool.get().await.unwrap();
    let e = scrape_when_max(&service, "replica", 2.0).await;
    let replica = [("pool", "replica")];
    assert_eq!(
        e.get(&name(&service, "connections_acquired_total"), &replica),
        Some(1.0)
    );
    drop(held);
    assert_eq!(
        db.health.get_health_summary().await.status,
        HealthStatus::Healthy
    );
}

#[track_query(select, "fl_items", metrics = metrics)]
async fn fetch_item(metrics: &DatabaseMetrics) -> Result<u8, std::io::Error> {
    Ok(1)
}

#[track_query(select, "fl_items", metrics = metrics, function = "item_lookup")]
async fn fetch_item_renamed(metrics: &DatabaseMetrics) -> Result<u8, std::io::Error> {
    Ok(2)
}

async fn calls_at_every_kind_of_site(metrics: &DatabaseMetrics) {
    fetch_item(metrics).await.unwrap();
    fetch_item(metrics).await.unwrap();
    fetch_item_renamed(metrics).await.unwrap();
    let tracker = QueryPerformanceTracker::new(metrics.clone());
    let _: Result<(), std::io::Error> = tracker
        .track_query(Operation::Select, "fl_items", async { Ok(()) })
        .await;
    let middleware = create_repository_middleware(database().pool(1), metrics.clone());
    let _: Result<(), std::io::Error> = middleware
        .repository_method_tracker("select", "fl_items", "get_item", async { Ok(()) })
        .await;
}

/// `query_duration_seconds_count` of `service` for `select` on `fl_items`, `success`, by
/// label set (without operation, table, result).
fn counts_by_extra_labels(service: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    scrape()
        .matching(
            &name(service, "query_duration_seconds_count"),
            &[
                ("operation", "select"),
                ("table", "fl_items"),
                ("result", "success"),
            ],
        )
        .into_iter()
        .map(|l| {
            let mut extra = l.labels.clone();
            for k in ["operation", "table", "result"] {
                extra.remove(k);
            }
            (extra, l.value)
        })
        .collect()
}

fn function(name: &str) -> BTreeMap<String, String> {
    [("function".to_owned(), name.to_owned())].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_label_is_off_by_default_and_names_each_site_when_on() {
    prometheus();
    let pool = database().pool(1);

    let off = unique("fn_label_off");
    let metrics = setup_database_monitoring(&pool, &off).unwrap();
    assert!(!metrics.function_label());
    calls_at_every_kind_of_site(&metrics).await;
    assert_eq!(
        counts_by_extra_labels(&off),
        [(BTreeMap::new(), 5.0)].into()
    );
    let query = name(&off, "query_duration_seconds");
    assert_eq!(
        metrics.get_metrics()[&query].labels,
        ["operation", "table", "result"]
    );

    let on = unique("fn_label_on");
    let metrics = DatabaseMetrics::builder(&pool, &on)
        .function_label(true)
        .build()
        .unwrap();
    assert!(metrics.function_label());
    calls_at_every_kind_of_site(&metrics).await;
    assert_eq!(
        counts_by_extra_labels(&on),
        [
            (function("fetch_item"), 2.0),
            (function("item_lookup"), 1.0),
            (function("track_query"), 1.0),
            (function("get_item"), 1.0),
        ]
        .into()
    );
    let query = name(&on, "query_duration_seconds");
    assert_eq!(
        metrics.get_metrics()[&query].labels,
        ["operation", "table", "result", "function"]
    );
    // only the query histogram carries it
    let errors = name(&on, "errors_total");
    assert_eq!(
        metrics.get_metrics()[&errors].labels,
        ["operation", "table", "error_type"]
    );

    // another pool of the same service takes the service's setting
    let replica = DatabaseMetrics::builder(&database().pool(1), &on)
        .pool_name("replica")
        .build()
        .unwrap();
    assert!(replica.function_label());
    // and so do metrics without a pool under its name
    assert!(DatabaseMetrics::new(&on).unwrap().function_label());
    assert!(!DatabaseMetrics::new(&off).unwrap().function_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_setup_with_other_options_is_an_error_not_ignored() {
    prometheus();
    let service = unique("conflict");
    let pool = database().pool(1);
    let first = DatabaseMetrics::builder(&pool, &service)
        .poll_interval(Duration::from_millis(100))
        .slow_query_threshold(None)
        .label_limit(10)
        .function_label(true)
        .build()
        .unwrap();

    let conflict = |err: Error| match err {
        Error::ConflictingSetup {
            service: s,
            pool,
            option,
            existing,
            requested,
        } => {
            assert_eq!((s.as_str(), pool.as_str()), (service.as_str(), "default"));
            (option, existing, requested)
        }
        other => panic!("not a ConflictingSetup: {other}"),
    };

    let err = DatabaseMetrics::builder(&pool, &service)
        .poll_interval(Duration::from_millis(200))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "service {service:?} (pool \"default\") is already set up with poll_interval = \
             100ms, and this setup asks for poll_interval = 200ms; one setup's options hold for \
             every handle of it: give the same poll_interval (or leave it out to take the one \
             in force)"
        )
    );
    assert_eq!(
        conflict(err),
        ("poll_interval", "100ms".into(), "200ms".into())
    );
    let err = DatabaseMetrics::builder(&pool, &service)
        .slow_query_threshold(Some(Duration::from_secs(1)))
        .build()
        .unwrap_err();
    assert_eq!(
        conflict(err),
        ("slow_query_threshold", "None".into(), "Some(1s)".into())
    );
    let err = DatabaseMetrics::builder(&pool, &service)
        .label_limit(1000)
        .build()
        .unwrap_err();
    assert_eq!(conflict(err), ("label_limit", "10".into(), "1000".into()));
    let err = DatabaseMetrics::builder(&pool, &service)
        .function_label(false)
        .build()
        .unwrap_err();
    assert_eq!(
        conflict(err),
        ("function_label", "true".into(), "false".into())
    );
    // the same pool under a new label with other options: refused before anything moves
    let err = DatabaseMetrics::builder(&pool, &service)
        .pool_name("moved")
        .label_limit(5)
        .build()
        .unwrap_err();
    assert_eq!(conflict(err), ("label_limit", "10".into(), "5".into()));
    assert_eq!(first.pool_name(), "default");
    // a function label setting for another pool of the service that differs
    let err = DatabaseMetrics::builder(&database().pool(1), &service)
        .pool_name("replica")
        .function_label(false)
        .build()
        .unwrap_err();
    assert_eq!(
        conflict(err),
        ("function_label", "true".into(), "false".into())
    );

    // the same options, or none: the handle in force
    let same = DatabaseMetrics::builder(&pool, &service)
        .poll_interval(Duration::from_millis(100))
        .function_label(true)
        .build()
        .unwrap();
    assert!(same.same_handle(&first));
    assert!(
        setup_database_monitoring(&pool, &service)
            .unwrap()
            .same_handle(&first)
    );
    let db = monitor_database(&pool, &service).unwrap();
    assert!(db.metrics.same_handle(&first));
    assert_eq!(db.metrics.poll_interval(), Duration::from_millis(100));
}

per_driver!(one_call_wires_every_driver);

/// `monitor_database` takes every supported pool (`sqlx::PgPool`, bb8 with bb8-postgres, as
/// deadpool): one name, one label, checkouts counted, the same pool health-checked.
async fn one_call_wires_every_driver<D: Driver>() {
    prometheus();
    let service = unique(&format!("one_call_{}", D::NAME));
    let pool = D::pool(&database().config, 2, Duration::from_secs(10));
    let db = monitor_database(&pool, &service).unwrap();
    assert_eq!(
        (db.metrics.pool_name(), db.pool.name(), db.health.service()),
        ("default", "default", service.as_str())
    );
    let mut conn = db.pool.get().await.unwrap();
    D::execute(&mut conn, "SELECT 1").await.unwrap();
    drop(conn);

    let e = scrape_when_max(&service, "default", 2.0).await;
    for counter in ["connections_acquired_total", "connections_released_total"] {
        assert_eq!(
            e.get(&name(&service, counter), &[("pool", "default")]),
            Some(1.0),
            "{counter}"
        );
    }
    let summary = db.health.get_health_summary().await;
    assert!(summary.connectivity, "{summary:?}");
    assert_eq!(summary.pool_max_size, 2);
}
