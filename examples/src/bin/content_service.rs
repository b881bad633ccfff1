//! The dbmetrics demo: a content service on axum and PostgreSQL, instrumented with dbmetrics.
//!
//! ```sh
//! cargo run -p dbmetrics-examples --bin content_service -- --traffic
//! ```
//!
//! Serves `POST /content`, `GET /content/{id}`, `GET /content`, `DELETE /content/{id}`,
//! `POST /content/{id}/archive`, and dbmetrics' `/metrics`, `/healthz`, `/health/detailed`,
//! `/livez`.
//! With `--traffic` it drives a realistic mix through its own router (reads, writes, duplicate
//! keys, statement timeouts, client-side timeouts, pool starvation on a small batch pool) and
//! prints a one-screen summary. PostgreSQL comes from `DATABASE_URL`, else 127.0.0.1:5432,
//! else a throwaway cluster from the machine's binaries.

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
use dbmetrics::{
    DatabaseHealthChecker, DatabaseMetrics, TrackedPool, TrackedRepository, track_query,
    track_transaction,
};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// A piece of content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Content {
    id: String,
    title: String,
    body: String,
}

/// What the repository can fail with.
#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("no connection from the pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
}

impl RepoError {
    fn is_unique_violation(&self) -> bool {
        matches!(self, RepoError::Db(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

/// The content repository: every method is a tracked query, `archive` a tracked transaction.
#[derive(Clone, TrackedRepository)]
#[tracked(table = "content")]
struct ContentRepository {
    pool: TrackedPool,
    batch_pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ContentRepository {
    #[track_query(ddl, "content")]
    async fn create_schema(&self) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS content (
                     id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS content_archive (
                     id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);",
            )
            .await?;
        Ok(())
    }

    #[track_query(insert)]
    async fn create(&self, content: &Content) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO content (id, title, body) VALUES ($1, $2, $3)",
                &[&content.id, &content.title, &content.body],
            )
            .await?;
        Ok(())
    }

    #[track_query(select)]
    async fn get_content_by_id(&self, id: &str) -> Result<Option<Content>, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT id, title, body FROM content WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| Content {
            id: r.get(0),
            title: r.get(1),
            body: r.get(2),
        }))
    }

    #[track_query(select, function = "list_content")]
    async fn list(&self, limit: i64) -> Result<Vec<Content>, RepoError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, title, body FROM content ORDER BY id LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Content {
                id: r.get(0),
                title: r.get(1),
                body: r.get(2),
            })
            .collect())
    }

    #[track_query(delete)]
    async fn delete(&self, id: &str) -> Result<bool, RepoError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM content WHERE id = $1", &[&id])
            .await?
            == 1)
    }

    /// A report query bounded by a server-side `statement_timeout`.
    #[track_query(select, "content_report")]
    async fn report(&self, sleep_seconds: f64, timeout_ms: u32) -> Result<i64, RepoError> {
        let mut client = self.batch_pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
            .await?;
        let row = tx
            .query_one(
                "SELECT count(*) FROM content, pg_sleep($1::float8)",
                &[&sleep_seconds],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    /// Moves a row to `content_archive`, in one transaction.
    #[track_transaction("archive_content")]
    async fn archive(&self, id: &str) -> Result<bool, RepoError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let moved = tx
            .execute(
                "INSERT INTO content_archive SELECT * FROM content WHERE id = $1
                 ON CONFLICT (id) DO NOTHING",
                &[&id],
            )
            .await?;
        tx.execute("DELETE FROM content WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(moved == 1)
    }
}

#[derive(Clone)]
struct AppState {
    repo: ContentRepository,
}

/// The HTTP error: a status and a message that never carries driver text.
struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match &e {
            e if e.is_unique_violation() => ApiError(StatusCode::CONFLICT, "already exists"),
            RepoError::Pool(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, "database busy"),
            RepoError::Db(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error"),
        }
    }
}

async fn create_content(
    State(state): State<AppState>,
    Json(content): Json<Content>,
) -> Result<(StatusCode, Json<Content>), ApiError> {
    state.repo.create(&content).await?;
    Ok((StatusCode::CREATED, Json(content)))
}

async fn get_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Content>, ApiError> {
    match state.repo.get_content_by_id(&id).await? {
        Some(content) => Ok(Json(content)),
        None => Err(ApiError(StatusCode::NOT_FOUND, "not found")),
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<i64>,
}

async fn list_content(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Content>>, ApiError> {
    let limit = params.limit.unwrap_or(20).clamp(1, 100);
    Ok(Json(state.repo.list(limit).await?))
}

async fn delete_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.repo.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "not found"))
    }
}

async fn archive_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.repo.archive(&id).await? {
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

async fn report(
    State(state): State<AppState>,
    Query(params): Query<ReportParams>,
) -> Result<Json<i64>, ApiError> {
    let sleep = params.sleep.unwrap_or(0.0).clamp(0.0, 5.0);
    let timeout = params.timeout_ms.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(state.repo.report(sleep, timeout).await?))
}

fn app(
    state: AppState,
    checker: DatabaseHealthChecker,
    prometheus: dbmetrics::exporter::PrometheusHandle,
) -> Router {
    Router::new()
        .route("/content", post(create_content).get(list_content))
        .route("/content/{id}", get(get_content).delete(delete_content))
        .route("/content/{id}/archive", post(archive_content))
        .route("/report", get(report))
        .with_state(state)
        .merge(dbmetrics::axum::router(checker, prometheus))
}

/// Command-line options.
struct Options {
    listen: SocketAddr,
    traffic: bool,
    duration: Duration,
    workers: usize,
    exit_after_traffic: bool,
}

const USAGE: &str = "usage: content_service [--listen ADDR] [--traffic] [--duration SECS] \
                     [--workers N] [--exit-after-traffic]\n\
  --listen ADDR          where to serve (default 127.0.0.1:8080)\n\
  --traffic              drive a realistic mix of requests through the service\n\
  --duration SECS        how long the traffic runs (default 30)\n\
  --workers N            concurrent traffic workers (default 16; the pool has 8 connections)\n\
  --exit-after-traffic   exit when the traffic is done instead of serving on\n\
PostgreSQL: DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster.";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
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

    // 3. Pools, monitored. The main pool has 8 connections; the batch pool 2, with a short
    //    wait timeout so that bursts of reports show pool timeouts.
    let pool = db.pool(8);
    let batch_pool = batch_pool(&db);

    //    One call each: metrics, a tracked pool and a health checker from one service name.
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

    // 4. The routes: the main pool's health checks, /metrics, /livez.
    let router = app(AppState { repo }, content.health, prometheus.clone());

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
        print_summary(&stats, &prometheus.render());
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

/// The batch pool: 2 connections, and callers wait at most 100 ms for one.
fn batch_pool(db: &dbmetrics_tests::Database) -> deadpool_postgres::Pool {
    let mut config = db.config.clone();
    config.application_name("content_service_batch");
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(2)
        .wait_timeout(Some(Duration::from_millis(100)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime always builds")
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

/// Drives the mix: 42% reads, 15% lists, 25% creates (one in five a duplicate key),
/// 8% deletes, 6% archives (a transaction), 3% reports under a statement timeout (a quarter
/// time out on the server; bursts wait past the batch pool's 100 ms), 1% reports cut off by a
/// client-side deadline (cancelled).
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
                    0..42 => send(&router, Method::GET, &format!("/content/{id}"), None).await,
                    42..57 => send(&router, Method::GET, "/content?limit=20", None).await,
                    57..82 => {
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
                    82..90 => send(&router, Method::DELETE, &format!("/content/{id}"), None).await,
                    90..96 => {
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
                        // A caller that gives up after 20 ms on a slow report: cancelled.
                        let cut = tokio::time::timeout(
                            Duration::from_millis(20),
                            send(
                                &router,
                                Method::GET,
                                "/report?sleep=0.1&timeout_ms=1000",
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
    stats
}

fn print_summary(stats: &Stats, metrics_text: &str) {
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
    println!("\npools:");
    for pool in ["default", "batch_operations"] {
        let v = |m: &str| e.value(&format!("content_service_database_{m}"), &[("pool", pool)]);
        println!(
            "  {pool:<17} acquired {} released {} created {} wait timeouts {} (max {}, active {}, waiting {})",
            v("connections_acquired_total"),
            v("connections_released_total"),
            v("connections_created_total"),
            e.value(
                "content_service_database_connection_timeouts_total",
                &[("pool", pool), ("stage", "wait")]
            ),
            v("connections_max"),
            v("connections_active"),
            v("connections_overflow"),
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
