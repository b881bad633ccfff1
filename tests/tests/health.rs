//! Health checks against a real PostgreSQL, a closed port and a silent listener, asserted on
//! the serialized JSON and on real HTTP responses of the axum routes.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dbmetrics::{DatabaseHealthChecker, HealthStatus, setup_database_monitoring};
use dbmetrics_tests::proxy::{ClosedPort, FaultProxy, Mode};
use dbmetrics_tests::{database, patient_checker, pool_for, prometheus, unique};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Outer bound of every test: generous, it only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(30);
/// The checker's own timeout in fault tests.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Outer bound of one health call with `CHECK_TIMEOUT`: the call must have returned by then.
const CALL_BOUND: Duration = Duration::from_secs(5);
const PASSWORD: &str = "s3cr3t-pass";

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("the test finished in time")
}

async fn call<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BOUND, f)
        .await
        .expect("the health call returned within its bound")
}

fn fast_failing_checker(pool: deadpool_postgres::Pool, service: &str) -> DatabaseHealthChecker {
    DatabaseHealthChecker::builder(pool, service)
        .timeout(CHECK_TIMEOUT)
        .build()
        .unwrap()
}

/// A pool whose configuration holds a password, pointing at a port that refuses connections
/// (reserved while the returned `ClosedPort` lives, so no parallel test can take it).
fn dead_pool_with_password() -> (deadpool_postgres::Pool, ClosedPort) {
    let port = ClosedPort::new().unwrap();
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        port.port()
    );
    (pool_for(url.parse().unwrap(), 4), port)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

fn f64_field(v: &Value, key: &str) -> f64 {
    assert!(v[key].is_f64(), "{key} is not a float: {v}");
    v[key].as_f64().unwrap()
}

fn u64_field(v: &Value, key: &str) -> u64 {
    assert!(v[key].is_u64(), "{key} is not an unsigned integer: {v}");
    v[key].as_u64().unwrap()
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {v}"))
}

fn assert_keys(v: &Value, keys: &[&str]) {
    let object = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut actual: Vec<&str> = object.keys().map(String::as_str).collect();
    actual.sort_unstable();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(actual, expected, "keys of {v}");
}

/// Holds `n` connections of `pool` until dropped.
async fn hold(pool: &deadpool_postgres::Pool, n: usize) -> Vec<deadpool_postgres::Object> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    held
}

#[tokio::test]
async fn healthy_summary_has_every_field_typed() {
    bounded(async {
        let service = unique("health_summary");
        let pool = database().pool(4);
        let checker = patient_checker(pool, &service);
        let before = unix_now();
        let summary = checker.get_health_summary().await;
        let after = unix_now();
        assert_eq!(summary.status, HealthStatus::Healthy);

        let v = json(&summary);
        assert_keys(
            &v,
            &[
                "service",
                "status",
                "connectivity",
                "response_time_seconds",
                "pool_utilization_percent",
                "active_connections",
                "timestamp",
                "pool_size",
                "waiting_callers",
                "pool_max_size",
                "pool_checked_out",
            ],
        );
        assert_eq!(str_field(&v, "service"), service);
        assert_eq!(str_field(&v, "status"), "healthy");
        assert_eq!(v["connectivity"], Value::Bool(true));
        let response = f64_field(&v, "response_time_seconds");
        assert!(response > 0.0 && response < 20.0, "{response}");
        assert_eq!(f64_field(&v, "pool_utilization_percent"), 0.0);
        assert_eq!(u64_field(&v, "active_connections"), 0);
        let timestamp = f64_field(&v, "timestamp");
        assert!(before <= timestamp && timestamp <= after, "{timestamp}");
        assert_eq!(u64_field(&v, "pool_size"), 4);
        assert_eq!(u64_field(&v, "waiting_callers"), 0);
        assert_eq!(u64_field(&v, "pool_max_size"), 4);
        assert_eq!(u64_field(&v, "pool_checked_out"), 0);
    })
    .await;
}

#[tokio::test]
async fn healthy_detailed_check_has_every_field_typed() {
    bounded(async {
        let service = unique("health_detailed");
        let pool = database().pool(4);
        let checker = patient_checker(pool.clone(), &service);
        let before = unix_now();
        let detailed = checker.comprehensive_health_check().await;
        let after = unix_now();
        assert_eq!(detailed.overall_status, HealthStatus::Healthy);

        let v = json(&detailed);
        assert_keys(&v, &["service", "overall_status", "checks", "timestamp"]);
        assert_eq!(str_field(&v, "service"), service);
        assert_eq!(str_field(&v, "overall_status"), "healthy");
        let timestamp = f64_field(&v, "timestamp");
        assert!(before <= timestamp && timestamp <= after, "{timestamp}");
        let checks = &v["checks"];
        assert_keys(
            checks,
            &[
                "connectivity",
                "connection_pool",
                "query_performance",
                "database_resources",
            ],
        );

        let c = &checks["connectivity"];
        assert_keys(
            c,
            &[
                "status",
                "connectivity",
                "response_time_seconds",
                "acquired_from",
            ],
        );
        assert_eq!(str_field(c, "status"), "healthy");
        assert_eq!(c["connectivity"], Value::Bool(true));
        assert!(f64_field(c, "response_time_seconds") > 0.0);
        assert_eq!(str_field(c, "acquired_from"), "pool");

        let p = &checks["connection_pool"];
        assert_keys(
            p,
            &[
                "status",
                "pool_size",
                "active_connections",
                "utilization_percent",
                "idle_connections",
                "open_connections",
                "waiting_callers",
                "pool_max_size",
                "pool_checked_out",
            ],
        );
        assert_eq!(str_field(p, "status"), "healthy");
        assert_eq!(u64_field(p, "pool_size"), 4);
        assert_eq!(u64_field(p, "active_connections"), 0);
        assert_eq!(f64_field(p, "utilization_percent"), 0.0);
        assert_eq!(u64_field(p, "idle_connections"), 0);
        assert_eq!(u64_field(p, "open_connections"), 0);
        assert_eq!(u64_field(p, "waiting_callers"), 0);
        assert_eq!(u64_field(p, "pool_max_size"), 4);
        assert_eq!(u64_field(p, "pool_checked_out"), 0);

        let q = &checks["query_performance"];
        assert_keys(
            q,
            &[
                "status",
                "simple_query_time_seconds",
                "complex_query_time_seconds",
            ],
        );
        assert_eq!(str_field(q, "status"), "healthy");
        assert!(f64_field(q, "simple_query_time_seconds") > 0.0);
        assert!(f64_field(q, "complex_query_time_seconds") > 0.0);

        let r = &checks["database_resources"];
        assert_keys(
            r,
            &[
                "status",
                "active_connections",
                "database_size",
                "database_size_bytes",
                "server_connections",
                "max_connections",
                "connections_headroom",
                "connections_usage_percent",
                "database_backends",
            ],
        );
        assert_eq!(str_field(r, "status"), "healthy");
        // the check's own connection is one of them
        assert!(u64_field(r, "active_connections") >= 1);
        assert_eq!(
            u64_field(r, "database_backends"),
            u64_field(r, "active_connections")
        );
        assert!(u64_field(r, "server_connections") >= 1);
        let bytes = u64_field(r, "database_size_bytes");
        assert!(bytes > 0);
        let pretty = str_field(r, "database_size");
        let max = u64_field(r, "max_connections");
        assert_eq!(
            u64_field(r, "connections_headroom"),
            max - u64_field(r, "server_connections")
        );
        assert!(f64_field(r, "connections_usage_percent") > 0.0);

        // the figures are the server's own: the size pretty-prints to the same text, and
        // max_connections is the setting
        let client = pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT pg_size_pretty($1::int8), current_setting('max_connections')::int8",
                &[&(bytes as i64)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), pretty);
        assert_eq!(row.get::<_, i64>(1), max as i64);
    })
    .await;
}

#[tokio::test]
async fn a_pool_at_its_limit_is_degraded_and_the_database_still_reachable() {
    bounded(async {
        let pool = database().pool(2);
        let checker = patient_checker(pool.clone(), &unique("health_full"));
        let held = hold(&pool, 2).await;

        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Degraded);
        assert!(summary.connectivity);
        assert_eq!(summary.pool_utilization_percent, 100.0);
        assert_eq!(summary.active_connections, 2);

        let detailed = call(checker.comprehensive_health_check()).await;
        assert_eq!(detailed.overall_status, HealthStatus::Degraded);
        let v = json(&detailed);
        let checks = &v["checks"];
        assert_eq!(str_field(&checks["connection_pool"], "status"), "degraded");
        assert_eq!(
            f64_field(&checks["connection_pool"], "utilization_percent"),
            100.0
        );
        assert_eq!(str_field(&checks["connectivity"], "status"), "healthy");
        assert_eq!(
            str_field(&checks["connectivity"], "acquired_from"),
            "dedicated"
        );
        assert_eq!(str_field(&checks["query_performance"], "status"), "healthy");
        assert_eq!(
            str_field(&checks["database_resources"], "status"),
            "healthy"
        );
        // the dedicated connection was not added to the pool
        assert_eq!(pool.status().size, 2);

        // a caller queued for a connection shows up as waiting
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        });
        while pool.status().waiting < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let detailed = call(checker.comprehensive_health_check()).await;
        assert_eq!(detailed.checks.connection_pool.waiting_callers, 1);
        assert_eq!(
            detailed.checks.connection_pool.status,
            HealthStatus::Degraded
        );
        drop(held);
        waiter.await.unwrap().unwrap();

        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Healthy);
        assert_eq!(summary.active_connections, 0);
    })
    .await;
}

#[tokio::test]
async fn the_pool_utilization_threshold_is_configurable() {
    bounded(async {
        let pool = database().pool(4);
        let _held = hold(&pool, 2).await;

        let default = patient_checker(pool.clone(), "svc");
        let summary = call(default.get_health_summary()).await;
        assert_eq!(summary.pool_utilization_percent, 50.0);
        assert_eq!(summary.status, HealthStatus::Healthy);

        let strict = DatabaseHealthChecker::builder(pool.clone(), "svc")
            .pool_utilization_degraded(50.0)
            .slow_connectivity(Duration::from_secs(20))
            .build()
            .unwrap();
        let summary = call(strict.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Degraded);
        assert!(summary.connectivity);
    })
    .await;
}

#[tokio::test]
async fn time_thresholds_mark_checks_degraded() {
    bounded(async {
        let pool = database().pool(2);
        // a zero threshold is crossed by any measured time
        let checker = DatabaseHealthChecker::builder(pool, "svc")
            .timeout(Duration::from_secs(20))
            .slow_connectivity(Duration::ZERO)
            .slow_complex_query(Duration::ZERO)
            .slow_simple_query(Duration::from_secs(20))
            .connections_usage_degraded(100.0)
            .build()
            .unwrap();
        let detailed = call(checker.comprehensive_health_check()).await;
        assert_eq!(detailed.checks.connectivity.status, HealthStatus::Degraded);
        assert_eq!(
            detailed.checks.query_performance.status,
            HealthStatus::Degraded
        );
        assert_eq!(
            detailed.checks.database_resources.status,
            HealthStatus::Healthy
        );
        assert_eq!(detailed.overall_status, HealthStatus::Degraded);
        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Degraded);
        assert!(summary.connectivity);
    })
    .await;
}

#[tokio::test]
async fn a_closed_port_is_unhealthy_within_the_timeout_and_leaks_no_password() {
    bounded(async {
        let (pool, _port) = dead_pool_with_password();
        let checker = fast_failing_checker(pool, "svc");

        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Unhealthy);
        let v = json(&summary);
        assert_eq!(v["connectivity"], Value::Bool(false));
        assert_eq!(str_field(&v, "error"), "connection");
        assert!(f64_field(&v, "response_time_seconds") >= 0.0);

        let detailed = call(checker.comprehensive_health_check()).await;
        assert_eq!(detailed.overall_status, HealthStatus::Unhealthy);
        let d = json(&detailed);
        let checks = &d["checks"];
        assert_keys(
            &checks["connectivity"],
            &["status", "connectivity", "response_time_seconds", "error"],
        );
        assert_eq!(str_field(&checks["connectivity"], "status"), "unhealthy");
        assert_eq!(str_field(&checks["connectivity"], "error"), "connection");
        // an empty pool is not a pool problem
        assert_eq!(str_field(&checks["connection_pool"], "status"), "healthy");
        let q = &checks["query_performance"];
        assert_eq!(str_field(q, "status"), "unhealthy");
        assert_eq!(str_field(q, "error"), "connection");
        assert!(q["simple_query_time_seconds"].is_null());
        assert!(q["complex_query_time_seconds"].is_null());
        let r = &checks["database_resources"];
        assert_eq!(str_field(r, "status"), "unhealthy");
        assert_eq!(str_field(r, "error"), "connection");
        assert!(r["database_size"].is_null());
        assert!(r["database_size_bytes"].is_null());

        for text in [v.to_string(), d.to_string()] {
            assert!(!text.contains(PASSWORD), "password leaked: {text}");
            assert!(
                !text.contains("postgres://"),
                "connection string leaked: {text}"
            );
        }
        // not in the checker's Debug either
        assert!(!format!("{checker:?}").contains(PASSWORD));
    })
    .await;
}

#[tokio::test]
async fn a_silent_listener_is_unhealthy_within_the_timeout() {
    bounded(async {
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        proxy.set_mode(Mode::Silent).await.unwrap();
        let checker = fast_failing_checker(pool_for(config, 4), "svc");

        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Unhealthy);
        assert!(!summary.connectivity);
        assert_eq!(summary.error, Some("timeout"));

        let detailed = call(checker.comprehensive_health_check()).await;
        assert_eq!(detailed.overall_status, HealthStatus::Unhealthy);
        assert_eq!(detailed.checks.connectivity.error, Some("timeout"));
        assert_eq!(detailed.checks.query_performance.error, Some("timeout"));
        assert_eq!(detailed.checks.database_resources.error, Some("timeout"));
        // the server was reached at the TCP level and never answered
        assert!(proxy.accepted() >= 1);
    })
    .await;
}

#[tokio::test]
async fn a_pooled_connection_that_goes_silent_is_dropped_and_health_recovers() {
    bounded(async {
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        let pool = pool_for(config, 4);
        let checker = DatabaseHealthChecker::builder(pool.clone(), "svc")
            .timeout(CHECK_TIMEOUT)
            .slow_connectivity(Duration::from_secs(20))
            .build()
            .unwrap();
        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Healthy);
        assert_eq!(pool.status().size, 1);

        proxy.set_mode(Mode::Silent).await.unwrap();
        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Unhealthy);
        assert_eq!(summary.error, Some("timeout"));
        // the hung connection left the pool instead of going back to the application
        assert_eq!(pool.status().size, 0);

        proxy.set_mode(Mode::Pass).await.unwrap();
        let summary = call(checker.get_health_summary()).await;
        assert_eq!(summary.status, HealthStatus::Healthy);
        assert!(summary.connectivity);
    })
    .await;
}

#[tokio::test]
async fn a_check_abandoned_by_its_caller_keeps_the_unanswered_connection_out_of_the_pool() {
    bounded(async {
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        let pool = pool_for(config, 2);
        drop(pool.get().await.unwrap());
        assert_eq!((pool.status().size, pool.status().available), (1, 1));
        // The checker would wait 20 s; the caller (a probe with a 1 s timeout, say) gives up.
        let checker = patient_checker(pool.clone(), "svc");
        proxy.set_mode(Mode::Silent).await.unwrap();
        let abandoned =
            tokio::time::timeout(Duration::from_millis(300), checker.get_health_summary()).await;
        assert!(abandoned.is_err(), "the caller gave up first");
        // The connection whose query never answered is closed, not handed to the application.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pool.status().size != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.status().size, 0);
        assert_eq!(pool.status().available, 0);
    })
    .await;
}

#[tokio::test]
async fn the_cache_answers_without_the_database_until_its_ttl() {
    bounded(async {
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        let pool = pool_for(config, 4);
        let cached = DatabaseHealthChecker::builder(pool.clone(), "svc")
            .timeout(CHECK_TIMEOUT)
            .slow_connectivity(Duration::from_secs(20))
            .slow_simple_query(Duration::from_secs(20))
            .slow_complex_query(Duration::from_secs(20))
            .connections_usage_degraded(100.0)
            .cache_ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        let uncached = fast_failing_checker(pool.clone(), "svc");

        let summary = call(cached.get_health_summary()).await;
        let detailed = call(cached.comprehensive_health_check()).await;
        assert_eq!(summary.status, HealthStatus::Healthy);
        assert_eq!(detailed.overall_status, HealthStatus::Healthy);

        // the database goes away
        proxy.set_mode(Mode::Refuse).await.unwrap();
        proxy.cut_all().await;
        let accepted = proxy.accepted();

        // the cached checker answers the same result, timestamp included
        assert_eq!(call(cached.get_health_summary()).await, summary);
        assert_eq!(call(cached.comprehensive_health_check()).await, detailed);
        // the uncached one sees the outage
        let fresh = call(uncached.get_health_summary()).await;
        assert_eq!(fresh.status, HealthStatus::Unhealthy);
        assert!(!fresh.connectivity);
        assert_eq!(proxy.accepted(), accepted);
    })
    .await;
}

#[tokio::test]
async fn concurrent_calls_share_one_run() {
    bounded(async {
        let checker = patient_checker(database().pool(4), "svc");
        let summaries =
            futures::future::join_all((0..8).map(|_| checker.get_health_summary())).await;
        let first = &summaries[0];
        assert_eq!(first.status, HealthStatus::Healthy);
        for summary in &summaries {
            assert_eq!(summary, first, "every concurrent caller got the same run");
        }
        let details =
            futures::future::join_all((0..8).map(|_| checker.comprehensive_health_check())).await;
        for detailed in &details {
            assert_eq!(detailed, &details[0]);
        }
        // later calls, with no cache, measure again
        let later = checker.get_health_summary().await;
        assert!(later.timestamp > first.timestamp);
    })
    .await;
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, String) {
    let response = call(
        app.clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap()),
    )
    .await
    .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn routes_serve_metrics_and_health() {
    bounded(async {
        let prometheus = prometheus().clone();
        let service = unique("health_routes");
        let pool = database().pool(2);
        let _metrics = setup_database_monitoring(&pool, &service).unwrap();
        let app = dbmetrics::axum::router(patient_checker(pool.clone(), &service), prometheus);

        let (status, content_type, body) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains(&format!(
                "{service}_database_connections_max{{pool=\"default\"}} 2"
            )),
            "{body}"
        );

        let (status, content_type, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(str_field(&v, "status"), "healthy");
        assert_eq!(str_field(&v, "service"), service);

        let (status, content_type, body) = get(&app, "/health/detailed").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(str_field(&v, "overall_status"), "healthy");

        // degraded still serves traffic: 200
        let held = hold(&pool, 2).await;
        let (status, _, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(str_field(&v, "status"), "degraded");
        let (status, _, body) = get(&app, "/health/detailed").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(str_field(&v, "overall_status"), "degraded");
        drop(held);

        let (status, _, _) = get(&app, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn routes_answer_503_with_json_and_no_password_when_the_database_is_down() {
    bounded(async {
        let (pool, _port) = dead_pool_with_password();
        let app = dbmetrics::axum::router(fast_failing_checker(pool, "svc"), prometheus().clone());
        for (uri, key) in [
            ("/healthz", "status"),
            ("/health/detailed", "overall_status"),
        ] {
            let (status, content_type, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert_eq!(content_type, "application/json", "{uri}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(str_field(&v, key), "unhealthy", "{uri}");
            assert!(
                !body.contains(PASSWORD),
                "{uri} leaked the password: {body}"
            );
            assert!(!body.contains("postgres://"), "{uri}: {body}");
        }
        // /metrics does not depend on the database
        let (status, _, _) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

/// The two meanings of `active_connections` side by side, under their unambiguous names: the
/// pool's checkouts (`pool_checked_out`, out of `pool_max_size`) and the server backends of the
/// database (`database_backends`, every client's, so at least the held ones plus the check's).
#[tokio::test]
async fn pool_checkouts_and_database_backends_have_names_of_their_own() {
    bounded(async {
        let pool = database().pool(5);
        let checker = patient_checker(pool.clone(), &unique("health_names"));
        let held = hold(&pool, 2).await;

        let v = json(&call(checker.get_health_summary()).await);
        assert_eq!(u64_field(&v, "pool_max_size"), 5);
        assert_eq!(u64_field(&v, "pool_size"), 5);
        assert_eq!(u64_field(&v, "pool_checked_out"), 2);
        assert_eq!(u64_field(&v, "active_connections"), 2);

        let v = json(&call(checker.comprehensive_health_check()).await);
        let pool_check = &v["checks"]["connection_pool"];
        assert_eq!(u64_field(pool_check, "pool_max_size"), 5);
        assert_eq!(u64_field(pool_check, "pool_size"), 5);
        assert_eq!(u64_field(pool_check, "pool_checked_out"), 2);
        assert_eq!(u64_field(pool_check, "active_connections"), 2);
        // two held + the check's own: three backends of this pool at least, and the server
        // counts other clients of the database too
        let resources = &v["checks"]["database_resources"];
        let backends = u64_field(resources, "database_backends");
        assert!(backends >= 3, "{resources}");
        assert_eq!(u64_field(resources, "active_connections"), backends);
        drop(held);
    })
    .await;
}

/// Kubernetes' default probe timeout is 1 s: the default checker answers before it, with a
/// JSON 503 saying `timeout`, instead of leaving the probe to time out on its own.
#[tokio::test]
async fn the_default_timeout_is_below_a_kubernetes_probe_timeout() {
    bounded(async {
        assert_eq!(
            dbmetrics::health::DEFAULT_TIMEOUT,
            Duration::from_millis(800)
        );
        let (proxy, config) = FaultProxy::in_front_of(&database().config).await.unwrap();
        proxy.set_mode(Mode::Silent).await.unwrap();
        let checker = DatabaseHealthChecker::new(pool_for(config, 2), "svc");
        assert_eq!(checker.config().timeout, Duration::from_millis(800));
        let app = dbmetrics::axum::router(checker, prometheus().clone());
        let (status, _, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(str_field(&v, "status"), "unhealthy");
        assert_eq!(str_field(&v, "error"), "timeout");
    })
    .await;
}

/// `/livez` is the liveness probe: it answers 200 while the database is down (and `/healthz`,
/// the readiness probe, 503), so that a database outage never restarts healthy pods.
#[tokio::test]
async fn livez_answers_while_the_database_is_down() {
    bounded(async {
        let (pool, _port) = dead_pool_with_password();
        let app = dbmetrics::axum::router(
            fast_failing_checker(pool.clone(), "svc"),
            prometheus().clone(),
        );
        let (status, content_type, body) = get(&app, "/livez").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        assert_eq!(body, r#"{"status":"alive"}"#);
        let (status, _, _) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // it never touched the database: the pool opened no connection for it
        assert_eq!(pool.status().size, 0);
        let (status, _, body) = get(&app, "/livez").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"alive"}"#)
        );
    })
    .await;
}
