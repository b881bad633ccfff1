//! The dbmetrics demo: a content service on axum and PostgreSQL, instrumented with dbmetrics,
//! on the pool library of your choice.
//!
//! ```sh
//! cargo run -p dbmetrics-examples --bin content_service -- --traffic                 # deadpool
//! cargo run -p dbmetrics-examples --bin content_service -- --traffic --driver sqlx
//! cargo run -p dbmetrics-examples --bin content_service -- --traffic --driver bb8
//! ```
//!
//! Serves `POST /content`, `GET|PUT|DELETE /content/{id}`, `GET /content`,
//! `POST /content/{id}/views`, `POST /content/{id}/archive`, `GET /report`, and dbmetrics'
//! `/metrics`, `/healthz`, `/health/detailed`, `/livez`. The repository is written once per
//! driver (`content_service/with_{deadpool,sqlx,bb8}.rs`: the same SQL, the same attributes);
//! everything else here is the same for the three.
//! With `--traffic` it drives a realistic mix through its own router (reads, writes, updates,
//! upserts, duplicate keys, a transaction, statement timeouts, client-side timeouts, pool
//! starvation and held connections on a small batch pool) and prints a one-screen summary.
//! PostgreSQL comes from `DATABASE_URL`, else 127.0.0.1:5432, else a throwaway cluster from the
//! machine's binaries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dbmetrics::health::HealthCheckable;
use dbmetrics::{DatabaseHealthChecker, DatabaseMetrics};
use serde::Deserialize;
use tower::ServiceExt;

// The repository, written once per driver (content_service/ beside this file).
#[path = "content_service/repository.rs"]
mod repository;
#[path = "content_service/with_bb8.rs"]
mod with_bb8;
#[path = "content_service/with_deadpool.rs"]
mod with_deadpool;
#[path = "content_service/with_sqlx.rs"]
mod with_sqlx;

use repository::{Content, ContentRepository, ContentStore, RepoError};

/// The HTTP error: a status and a message that never carries driver text.
struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        // dbmetrics classifies every driver's errors (the `error_type` label): one mapping
        // serves the three drivers.
        match dbmetrics::classify::classify(&e) {
            "unique_violation" => ApiError(StatusCode::CONFLICT, "already exists"),
            "pool_timeout" => ApiError(StatusCode::SERVICE_UNAVAILABLE, "database busy"),
            _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error"),
        }
    }
}

async fn create_content<R: ContentStore>(
    State(repo): State<R>,
    Json(content): Json<Content>,
) -> Result<(StatusCode, Json<Content>), ApiError> {
    repo.create(&content).await?;
    Ok((StatusCode::CREATED, Json(content)))
}

async fn get_content<R: ContentStore>(
    State(repo): State<R>,
    Path(id): Path<String>,
) -> Result<Json<Content>, ApiError> {
    match repo.get(&id).await? {
        Some(content) => Ok(Json(content)),
        None => Err(ApiError(StatusCode::NOT_FOUND, "not found")),
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<i64>,
}

async fn list_content<R: ContentStore>(
    State(repo): State<R>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Content>>, ApiError> {
    let limit = params.limit.unwrap_or(20).clamp(1, 100);
    Ok(Json(repo.list(limit).await?))
}

#[derive(Deserialize)]
struct Rename {
    title: String,
}

async fn rename_content<R: ContentStore>(
    State(repo): State<R>,
    Path(id): Path<String>,
    Json(rename): Json<Rename>,
) -> Result<StatusCode, ApiError> {
    if repo.rename(&id, &rename.title).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "not found"))
    }
}

async fn view_content<R: ContentStore>(
    State(repo): State<R>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let views = repo.record_view(&id).await?;
    Ok(Json(serde_json::json!({ "views": views })))
}

async fn delete_content<R: ContentStore>(
    State(repo): State<R>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if repo.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "not found"))
    }
}

async fn archive_content<R: ContentStore>(
    State(repo): State<R>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if repo.archive(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "not found"))
    }
}

#[derive(Deserialize)]
struct ReportParams {
    sleep: Option<f64>,
    timeout_ms: Option<u32>,
}

async fn report<R: ContentStore>(
    State(repo): State<R>,
    Query(params): Query<ReportParams>,
) -> Result<Json<i64>, ApiError> {
    let sleep = params.sleep.unwrap_or(0.0).clamp(0.0, 5.0);
    let timeout = params.timeout_ms.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(repo.report(sleep, timeout).await?))
}

fn app<R: ContentStore>(
    repo: R,
    checker: DatabaseHealthChecker,
    prometheus: dbmetrics::exporter::PrometheusHandle,
) -> Router {
    Router::new()
        .route("/content", post(create_content::<R>).get(list_content::<R>))
        .route(
            "/content/{id}",
            get(get_content::<R>)
                .put(rename_content::<R>)
                .delete(delete_content::<R>),
        )
        .route("/content/{id}/views", post(view_content::<R>))
        .route("/content/{id}/archive", post(archive_content::<R>))
        .route("/report", get(report::<R>))
        .with_state(repo)
        .merge(dbmetrics::axum::router(checker, prometheus))
}

/// The pool library the repository runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    Deadpool,
    Sqlx,
    Bb8,
}

impl Driver {
    const ALL: [Driver; 3] = [Driver::Deadpool, Driver::Sqlx, Driver::Bb8];

    fn name(self) -> &'static str {
        match self {
            Driver::Deadpool => "deadpool",
            Driver::Sqlx => "sqlx",
            Driver::Bb8 => "bb8",
        }
    }
}

/// Command-line options.
struct Options {
    driver: Driver,
    listen: SocketAddr,
    traffic: bool,
    duration: Duration,
    workers: usize,
    exit_after_traffic: bool,
}

const USAGE: &str = "\
usage: content_service [--driver NAME] [--listen ADDR] [--traffic] [--duration SECS]
                       [--workers N] [--exit-after-traffic]
  --driver NAME          the pool library: deadpool (default; deadpool-postgres),
                         sqlx (sqlx::PgPool) or bb8 (bb8-postgres)
  --listen ADDR          where to serve (default 127.0.0.1:8080)
  --traffic              drive a realistic mix of requests through the service
  --duration SECS        how long the traffic runs (default 30)
  --workers N            concurrent traffic workers (default 16; the pool has 8 connections)
  --exit-after-traffic   exit when the traffic is done instead of serving on
PostgreSQL: DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster.";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        driver: Driver::Deadpool,
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        traffic: false,
        duration: Duration::from_secs(30),
        workers: 16,
        exit_after_traffic: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--driver" => {
                let v = value("--driver")?;
                options.driver =
                    Driver::ALL
                        .into_iter()
                        .find(|d| d.name() == v)
                        .ok_or_else(|| {
                            format!("--driver: {v:?} is not one of deadpool, sqlx, bb8\n{USAGE}")
                        })?;
            }
            "--listen" => {
                let v = value("--listen")?;
                options.listen = v.parse().map_err(|_| {
                    format!("--listen: {v:?} is not an address like 127.0.0.1:8080")
                })?;
            }
            "--traffic" => options.traffic = true,
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| format!("--duration: {v:?} is not a number of seconds"))?;
                options.duration = Duration::from_secs_f64(secs);
            }
            "--workers" => {
                let v = value("--workers")?;
                options.workers = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| format!("--workers: {v:?} is not a number from 1 to 256"))?;
            }
            "--exit-after-traffic" => options.exit_after_traffic = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(options).await {
        eprintln!("content_service: {e}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    // 1. The exporter, first: every description goes to it.
    let prometheus = dbmetrics::exporter::install_recorder()?;

    // 2. A database: DATABASE_URL, 127.0.0.1:5432, or a throwaway cluster.
    let db = tokio::task::spawn_blocking(dbmetrics_tests::db::provision).await??;
    match db.source {
        dbmetrics_tests::db::Source::LocalServer => println!("PostgreSQL: {}", db.source),
        _ => println!("PostgreSQL: {} ({})", db.source, db.address()),
    }

    // 3. Two pools of the chosen driver, monitored, and the repository on them.
    println!("driver: {}", options.driver.name());
    let router = match options.driver {
        Driver::Deadpool => routes(with_deadpool::pools(&db.config), prometheus.clone()).await?,
        Driver::Sqlx => {
            let connect = dbmetrics_tests::drivers::sqlx_options(&db.config);
            routes(with_sqlx::pools(connect), prometheus.clone()).await?
        }
        Driver::Bb8 => routes(with_bb8::pools(&db.config).await?, prometheus.clone()).await?,
    };

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    println!(
        "content_service on http://{0}  (GET /metrics, /healthz, /health/detailed, /livez, /content)",
        options.listen
    );
    let server = tokio::spawn({
        let router = router.clone();
        async move { axum::serve(listener, router).await }
    });

    if options.traffic {
        let stats = traffic(router.clone(), options.duration, options.workers).await;
        print_summary(&stats, &prometheus.render(), options.driver);
        if options.exit_after_traffic {
            server.abort();
            return Ok(());
        }
        println!(
            "\ntraffic done; still serving on http://{} (Ctrl-C to stop)",
            options.listen
        );
    }
    tokio::select! {
        r = server => { r??; }
        _ = tokio::signal::ctrl_c() => { println!("stopping"); }
    }
    Ok(())
}

/// Monitors the two pools under one service name, creates the schema and returns the routes:
/// the service's own and dbmetrics' `/metrics`, `/healthz`, `/health/detailed`, `/livez`.
async fn routes<P>(
    (pool, batch_pool): (P, P),
    prometheus: dbmetrics::exporter::PrometheusHandle,
) -> Result<Router, Box<dyn std::error::Error>>
where
    P: HealthCheckable,
    ContentRepository<P>: ContentStore,
{
    // One call each: the metrics, a tracked pool and a health checker from one service name.
    let content = dbmetrics::monitor_database(&pool, "content_service")?;
    let batch = DatabaseMetrics::builder(&batch_pool, "content_service")
        .pool_name("batch_operations")
        .build_monitored()?;
    let repo = ContentRepository {
        pool: content.pool,
        // A report holding its connection for more than 250 ms is logged and counted as a
        // suspected leak, with the line of its checkout.
        batch_pool: batch.pool.leak_threshold(Duration::from_millis(250)),
        metrics: content.metrics,
    };
    repo.create_schema().await?;
    Ok(app(repo, content.health, prometheus))
}

/// What the traffic saw, by kind of request and HTTP outcome.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    conflict: AtomicU64,
    not_found: AtomicU64,
    server_error: AtomicU64,
    unavailable: AtomicU64,
    client_timeout: AtomicU64,
}

async fn send(router: &Router, method: Method, uri: &str, body: Option<String>) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("valid request");
    match router.clone().oneshot(request).await {
        Ok(response) => response.status(),
        Err(never) => match never {},
    }
}

/// Drives the mix: 36% reads, 8% views (an upsert), 12% lists, 22% creates (one in five a
/// duplicate key), 6% renames (an update), 7% deletes, 5% archives (a transaction), 3% reports
/// under a statement timeout (a quarter time out on the server; bursts wait past the batch
/// pool's 100 ms; one in fifty holds its connection past the leak threshold), 1% 2 s reports
/// cut off by a client-side deadline (cancelled, often while waiting for a connection; when
/// one got its connection, its statement is cancelled on the server).
async fn traffic(router: Router, duration: Duration, workers: usize) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    // Ids of this run do not collide with rows an earlier run left in the table.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(0);
    println!(
        "traffic: {workers} workers for {:.0} s",
        duration.as_secs_f64()
    );
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = stats.requests.load(Ordering::Relaxed);
                println!(
                    "  {:>4.0} s  {r:>7} requests  {:>7.0}/s  ok {}  409 {}  404 {}  500 {}  503 {}  cut {}",
                    start.elapsed().as_secs_f64(),
                    r as f64 / start.elapsed().as_secs_f64(),
                    stats.ok.load(Ordering::Relaxed),
                    stats.conflict.load(Ordering::Relaxed),
                    stats.not_found.load(Ordering::Relaxed),
                    stats.server_error.load(Ordering::Relaxed),
                    stats.unavailable.load(Ordering::Relaxed),
                    stats.client_timeout.load(Ordering::Relaxed),
                );
            }
        })
    };
    let mut handles = Vec::new();
    for worker in 0..workers {
        let router = router.clone();
        let stats = stats.clone();
        handles.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1);
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut created = 0u64;
            while start.elapsed() < duration {
                let dice = next() % 100;
                let id = format!("r{run}w{worker}-{}", next() % (created + 1).max(1));
                let status = match dice {
                    0..36 => send(&router, Method::GET, &format!("/content/{id}"), None).await,
                    36..44 => {
                        let uri = format!("/content/{id}/views");
                        send(&router, Method::POST, &uri, None).await
                    }
                    44..56 => send(&router, Method::GET, "/content?limit=20", None).await,
                    56..78 => {
                        // One create in five reuses an existing id: a duplicate key.
                        let new_id = if next() % 5 == 0 {
                            id.clone()
                        } else {
                            created += 1;
                            format!("r{run}w{worker}-{created}")
                        };
                        let body = serde_json::json!({
                            "id": new_id, "title": format!("Title {new_id}"), "body": "lorem ipsum"
                        });
                        send(&router, Method::POST, "/content", Some(body.to_string())).await
                    }
                    78..84 => {
                        let body = serde_json::json!({ "title": format!("Renamed {id}") });
                        let uri = format!("/content/{id}");
                        send(&router, Method::PUT, &uri, Some(body.to_string())).await
                    }
                    84..91 => send(&router, Method::DELETE, &format!("/content/{id}"), None).await,
                    91..96 => {
                        send(
                            &router,
                            Method::POST,
                            &format!("/content/{id}/archive"),
                            None,
                        )
                        .await
                    }
                    96..99 => {
                        // Reports on the 2-connection batch pool: a quarter exceed their
                        // statement timeout; bursts wait past the pool's 100 ms wait timeout.
                        let roll = next();
                        let uri = if roll % 50 == 0 {
                            // Rarely, one that holds its connection past the leak threshold.
                            "/report?sleep=0.3&timeout_ms=1000"
                        } else if roll % 4 == 0 {
                            "/report?sleep=0.2&timeout_ms=50"
                        } else {
                            "/report?sleep=0.06&timeout_ms=1000"
                        };
                        send(&router, Method::GET, uri, None).await
                    }
                    _ => {
                        // A caller that gives up after 20 ms on a 2 s report: cancelled, and
                        // the report, if it started, is cancelled on the server.
                        let cut = tokio::time::timeout(
                            Duration::from_millis(20),
                            send(
                                &router,
                                Method::GET,
                                "/report?sleep=2&timeout_ms=5000",
                                None,
                            ),
                        )
                        .await;
                        match cut {
                            Ok(status) => status,
                            Err(_) => {
                                stats.requests.fetch_add(1, Ordering::Relaxed);
                                stats.client_timeout.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                };
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let counter = match status {
                    s if s.is_success() => &stats.ok,
                    StatusCode::CONFLICT => &stats.conflict,
                    StatusCode::NOT_FOUND => &stats.not_found,
                    StatusCode::SERVICE_UNAVAILABLE => &stats.unavailable,
                    _ => &stats.server_error,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    progress.abort();
    // The cut-off reports above are often cancelled while they wait for a batch connection.
    // Two more on the now quiet pool get theirs and are cut mid-statement, so that every run
    // shows the cleanup (a statement cancelled on the server, the busy connection discarded or
    // drained, as the driver allows); the cleanup is given time to finish.
    for _ in 0..2 {
        let cut = tokio::time::timeout(
            Duration::from_millis(500),
            send(
                &router,
                Method::GET,
                "/report?sleep=2&timeout_ms=5000",
                None,
            ),
        )
        .await;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        match cut {
            Ok(_) => stats.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.client_timeout.fetch_add(1, Ordering::Relaxed),
        };
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stats
}

fn print_summary(stats: &Stats, metrics_text: &str, driver: Driver) {
    let e = dbmetrics_tests::Exposition::parse(metrics_text);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!("\n=== summary");
    println!(
        "requests {}: ok {}, 409 duplicate {}, 404 {}, 500 {}, 503 {}, cut off by the client {}",
        load(&stats.requests),
        load(&stats.ok),
        load(&stats.conflict),
        load(&stats.not_found),
        load(&stats.server_error),
        load(&stats.unavailable),
        load(&stats.client_timeout),
    );
    println!("\nqueries (content_service_database_query_duration_seconds_count):");
    println!(
        "  {:<10} {:<16} {:>9} {:>9} {:>9}",
        "operation", "table", "success", "error", "cancelled"
    );
    let name = "content_service_database_query_duration_seconds_count";
    let mut keys: Vec<(String, String)> = e
        .matching(name, &[])
        .iter()
        .map(|l| (l.labels["operation"].clone(), l.labels["table"].clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (op, table) in keys {
        let v = |result| {
            e.value(
                name,
                &[("operation", &op), ("table", &table), ("result", result)],
            )
        };
        println!(
            "  {op:<10} {table:<16} {:>9} {:>9} {:>9}",
            v("success"),
            v("error"),
            v("cancelled")
        );
    }
    println!("\nerrors (content_service_database_errors_total):");
    for line in e.matching("content_service_database_errors_total", &[]) {
        println!(
            "  {:<12} {:<16} {:<24} {}",
            line.labels["operation"], line.labels["table"], line.labels["error_type"], line.value
        );
    }
    println!("\npools ({}):", driver.name());
    for pool in ["default", "batch_operations"] {
        let v = |m: &str| e.value(&format!("content_service_database_{m}"), &[("pool", pool)]);
        // sqlx and bb8 do not say whether a checkout opened a connection: not published.
        let created = e
            .get(
                "content_service_database_connections_created_total",
                &[("pool", pool)],
            )
            .map_or_else(|| "not published".to_owned(), |n| n.to_string());
        println!(
            "  {pool:<17} acquired {} released {} created {created} wait timeouts {} cancelled checkouts {} leaks {} (max {}, active {}, waiting {})",
            v("connections_acquired_total"),
            v("connections_released_total"),
            e.value(
                "content_service_database_connection_timeouts_total",
                &[("pool", pool), ("stage", "wait")]
            ),
            v("connection_acquire_cancelled_total"),
            v("connection_leaks_total"),
            v("connections_max"),
            v("connections_active"),
            v("connections_overflow"),
        );
        println!(
            "  {:<17} left by cancelled calls: busy discarded {}, cancelled on the server {}",
            "",
            e.value(
                "content_service_database_connections_discarded_total",
                &[("pool", pool), ("reason", "busy")]
            ),
            v("queries_cancelled_on_server_total"),
        );
    }
    let tx = "content_service_database_transactions_total";
    println!(
        "\ntransactions archive_content: success {} error {} cancelled {}",
        e.value(
            tx,
            &[("transaction", "archive_content"), ("result", "success")]
        ),
        e.value(
            tx,
            &[("transaction", "archive_content"), ("result", "error")]
        ),
        e.value(
            tx,
            &[("transaction", "archive_content"), ("result", "cancelled")]
        ),
    );
}
