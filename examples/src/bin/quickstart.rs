//! The README's quick start, complete: a repository with tracked queries and a tracked
//! transaction, a pool monitored, tracked and health-checked from one call, and `/metrics`,
//! `/healthz`, `/health/detailed`, `/livez`.
//! `cargo run -p dbmetrics-examples --bin quickstart` (DATABASE_URL, else 127.0.0.1:5432).
use dbmetrics::{DatabaseMetrics, TrackedPool, TrackedRepository, track_query, track_transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool};

// Any error type works; driver and pool errors in its source chain are classified
// (`unique_violation`, `pool_timeout`, ...).
#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("no connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    #[error("no such note")]
    NotFound,
}

/// A missing note is an answer, not a database failure: `ok_if` records it as a success, so
/// that it stays out of the error ratio.
fn not_found<T>(result: &Result<T, RepoError>) -> bool {
    matches!(result, Err(RepoError::NotFound))
}

#[derive(Clone, TrackedRepository)]
#[tracked(table = "notes")] // the default table of this repository's methods
struct NoteRepository {
    pool: TrackedPool, // counts checkouts, wait and use time, pool timeouts
    #[metrics]
    metrics: DatabaseMetrics, // what the tracked methods record into
}

impl NoteRepository {
    #[track_query(ddl)]
    async fn create_table(&self) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT)")
            .await?;
        Ok(())
    }

    #[track_query(insert)]
    async fn add(&self, id: i64, body: &str) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO notes (id, body) VALUES ($1, $2)",
                &[&id, &body],
            )
            .await?;
        Ok(())
    }

    #[track_query(select, "notes", ok_if = not_found)]
    async fn body(&self, id: i64) -> Result<String, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT body FROM notes WHERE id = $1", &[&id])
            .await?
            .ok_or(RepoError::NotFound)?;
        Ok(row.get(0))
    }

    #[track_transaction("replace_note")]
    async fn replace(&self, id: i64, body: &str) -> Result<(), RepoError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM notes WHERE id = $1", &[&id])
            .await?;
        tx.execute(
            "INSERT INTO notes (id, body) VALUES ($1, $2)",
            &[&id, &body],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The Prometheus recorder (before or after the rest: it receives everything).
    let prometheus = dbmetrics::exporter::install_recorder()?;

    // 2. A deadpool-postgres pool; one call gives its metrics (gauges polled), the tracked
    //    pool (checkouts counted and timed) and its health checker, from one service name.
    //    Keep what it returns: `let _ = monitor_database(..)` drops every handle at once.
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let manager = Manager::from_config(
        url.parse()?,
        tokio_postgres::NoTls,
        ManagerConfig::default(),
    );
    let pool = Pool::builder(manager).max_size(8).build()?;
    let db = dbmetrics::monitor_database(&pool, "notes_service")?;

    // 3. The repository records every call.
    let repo = NoteRepository {
        pool: db.pool,
        metrics: db.metrics,
    };
    repo.create_table().await?;
    let id = std::process::id() as i64;
    repo.add(id, "first").await?;
    let duplicate = repo.add(id, "again").await; // unique_violation, recorded as an error
    assert!(duplicate.is_err());
    repo.replace(id, "second").await?;
    println!("note {id}: {:?}", repo.body(id).await?);
    let missing = repo.body(-id).await; // NotFound: result="success", thanks to ok_if
    assert!(matches!(missing, Err(RepoError::NotFound)));

    // 4. /metrics, /healthz (readiness), /health/detailed, /livez (liveness); feature "axum".
    let app = dbmetrics::axum::router(db.health, prometheus.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("serving http://{}/metrics", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    print!("{}", prometheus.render());
    server.abort(); // a real service would `.await` it
    Ok(())
}
