//! axum routes (feature `axum`): `GET /metrics`, `GET /healthz`, `GET /health/detailed`,
//! `GET /livez`.
//!
//! | route | answers | Kubernetes probe |
//! |---|---|---|
//! | `GET /metrics` | the Prometheus text, `text/plain; version=0.0.4; charset=utf-8` | — |
//! | `GET /healthz` | [`HealthSummary`] as JSON: 200 when healthy or degraded, 503 when unhealthy | readiness |
//! | `GET /health/detailed` | [`DetailedHealth`] as JSON: 200 when healthy or degraded, 503 when unhealthy | — (for people) |
//! | `GET /livez` | `{"status":"alive"}`, 200, without touching the database | liveness |
//!
//! Health routes answer within the checker's timeout (see [`crate::health`]; default 800 ms,
//! below a probe's default 1 s); the body is JSON either way, and holds no connection string,
//! password or driver message. `/livez` answers as long as the process serves requests: a
//! liveness probe must not depend on the database, or a database outage restarts every pod.
//!
//! ```no_run
//! # extern crate dbmetrics_runtime as dbmetrics;
//! # async fn run(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! use dbmetrics::DatabaseHealthChecker;
//!
//! let prometheus = dbmetrics::exporter::install_recorder()?;
//! let checker = DatabaseHealthChecker::new(pool, "content_service");
//! let app = dbmetrics::axum::router(checker, prometheus);
//! // merge it into your own router, or serve it alone:
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! [`HealthSummary`]: crate::health::HealthSummary
//! [`DetailedHealth`]: crate::health::DetailedHealth

use ::axum::Json;
use ::axum::Router;
use ::axum::extract::State;
use ::axum::http::{StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{DatabaseHealthChecker, HealthStatus};

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Routes {
    checker: DatabaseHealthChecker,
    prometheus: PrometheusHandle,
}

/// A router serving `GET /metrics` (from `prometheus`), `GET /healthz` and
/// `GET /health/detailed` (from `checker`), and `GET /livez` (from nothing: the process
/// answers). Merge it into your application's router with `Router::merge`, or nest it.
pub fn router(checker: DatabaseHealthChecker, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/health/detailed", get(detailed))
        .route("/livez", get(livez))
        .with_state(Routes {
            checker,
            prometheus,
        })
}

async fn metrics(State(routes): State<Routes>) -> Response {
    // Rendering is CPU work that grows with the series count (about 40 µs a series): off the
    // async workers, so a large scrape does not stall the service's requests.
    let prometheus = routes.prometheus.clone();
    match tokio::task::spawn_blocking(move || prometheus.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz(State(routes): State<Routes>) -> Response {
    let summary = routes.checker.get_health_summary().await;
    (http_status(summary.status), Json(summary)).into_response()
}

async fn detailed(State(routes): State<Routes>) -> Response {
    let detailed = routes.checker.comprehensive_health_check().await;
    (http_status(detailed.overall_status), Json(detailed)).into_response()
}

/// Liveness: the process answers. Never touches the database (nor the pool, nor the checker).
async fn livez() -> Response {
    (StatusCode::OK, Json(Alive { status: "alive" })).into_response()
}

#[derive(serde::Serialize)]
struct Alive {
    status: &'static str,
}

fn http_status(status: HealthStatus) -> StatusCode {
    if status.is_available() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
