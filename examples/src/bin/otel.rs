//! The demo repository traced with OpenTelemetry (feature `tracing`) and recording the
//! OpenTelemetry metric naming.
//!
//! ```text
//! cargo run -p dbmetrics-examples --bin otel                  # spans printed to stdout
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!     cargo run -p dbmetrics-examples --bin otel              # spans sent over OTLP/HTTP
//! ```
//!
//! Each request below runs in a `request` span; every tracked call is a client span inside it
//! (`SELECT content`, `INSERT content`, ...), a tracked transaction an internal span around its
//! queries, and every checkout a `pool.acquire` span. At the end the Prometheus text of the
//! OpenTelemetry naming is printed (`db_client_operation_duration_seconds`, ...).
//!
//! PostgreSQL: DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster (as the tests).

use dbmetrics::{
    DatabaseMetrics, Naming, TrackedPool, TrackedRepository, create_infrastructure_enhancer,
    track_query, track_transaction,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const SERVICE: &str = "content_service";

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("no connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Clone, TrackedRepository)]
#[tracked(table = "content")]
struct ContentRepository {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ContentRepository {
    #[track_query(ddl)]
    async fn create_table(&self) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS content (id BIGINT PRIMARY KEY, title TEXT NOT NULL, \
                 archived BOOLEAN NOT NULL DEFAULT false)",
            )
            .await?;
        Ok(())
    }

    #[track_query(insert)]
    async fn create(&self, id: i64, title: &str) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO content (id, title) VALUES ($1, $2)",
                &[&id, &title],
            )
            .await?;
        Ok(())
    }

    #[track_query(select)]
    async fn title(&self, id: i64) -> Result<Option<String>, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT title FROM content WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    #[track_query(update)]
    async fn mark_archived(&self, id: i64) -> Result<u64, RepoError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("UPDATE content SET archived = true WHERE id = $1", &[&id])
            .await?)
    }

    #[track_query(delete)]
    async fn remove(&self, id: i64) -> Result<u64, RepoError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM content WHERE id = $1", &[&id])
            .await?)
    }

    /// Archives and re-titles one row: two tracked queries inside a tracked transaction span.
    #[track_transaction("archive_content")]
    async fn archive(&self, id: i64) -> Result<(), RepoError> {
        self.mark_archived(id).await?;
        self.title(id).await?;
        Ok(())
    }
}

/// The tracer provider: OTLP over HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// else spans printed to stdout.
fn tracer_provider() -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let resource = Resource::builder().with_service_name(SERVICE).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    Ok(match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
        // The exporter reads the endpoint (and OTEL_EXPORTER_OTLP_HEADERS, ...) itself and
        // posts to {endpoint}/v1/traces from the batch processor's own thread.
        Some(_) => builder
            .with_batch_exporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()?,
            )
            .build(),
        None => builder
            .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
            .build(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = tracer_provider()?;
    // INFO and up (RUST_LOG overrides): dbmetrics' spans are INFO. Keep tokio-postgres below
    // DEBUG, where it logs every statement's text, which would become span events.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dbmetrics-example")))
        .try_init()?;

    let prometheus = dbmetrics::exporter::install_recorder()?;
    let database = dbmetrics_tests::db::provision()?;
    let pool = database.pool(4);
    let metrics = DatabaseMetrics::builder(&pool, SERVICE)
        .naming(Naming::OpenTelemetry)
        .build()?;
    let repo = ContentRepository {
        pool: create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool, "default"),
        metrics,
    };
    repo.create_table().await?;
    let id = i64::from(std::process::id());

    async {
        repo.create(id, "Hello").await?;
        println!("content {id}: {:?}", repo.title(id).await?);
        Ok::<_, RepoError>(())
    }
    .instrument(tracing::info_span!("request", http.route = "POST /content"))
    .await?;

    // The same id again: unique_violation, a span with status ERROR and SQLSTATE 23505.
    let duplicate = repo
        .create(id, "Hello again")
        .instrument(tracing::info_span!("request", http.route = "POST /content"))
        .await;
    println!(
        "second create: {}",
        if duplicate.is_err() {
            "unique_violation"
        } else {
            "ok"
        }
    );

    repo.archive(id)
        .instrument(tracing::info_span!(
            "request",
            http.route = "POST /content/archive"
        ))
        .await?;
    repo.remove(id).await?;

    // Ends every span still buffered (OTLP) before the process exits.
    provider.shutdown()?;
    // One poller tick after the traffic, so that the pool gauges show the connections it opened.
    tokio::time::sleep(
        DatabaseMetrics::DEFAULT_POLL_INTERVAL + std::time::Duration::from_millis(100),
    )
    .await;
    print!("{}", prometheus.render());
    Ok(())
}
