//! The repository on sqlx: `&TrackedPool<PgPool>` is a sqlx `Executor` like `&PgPool` (each
//! query one counted checkout), and a checkout derefs to `PgConnection` (`&mut *conn`).

use std::time::Duration;

use dbmetrics::{track_query, track_transaction};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::repository::{Content, ContentRepository, ContentStore, RepoError, SCHEMA, SCHEMA_NAME};

/// The two pools: 8 connections for the requests; 2 for the reports, whose callers wait at
/// most 100 ms for one. Both connect lazily.
pub fn pools(options: PgConnectOptions) -> (PgPool, PgPool) {
    let options = options.options([("search_path", SCHEMA_NAME)]);
    let batch_options = options.clone().application_name("content_service_batch");
    (
        PgPoolOptions::new()
            .max_connections(8)
            .connect_lazy_with(options),
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_millis(100))
            .connect_lazy_with(batch_options),
    )
}

type Row = (String, String, String);

fn content((id, title, body): Row) -> Content {
    Content { id, title, body }
}

impl ContentStore for ContentRepository<PgPool> {
    #[track_query(ddl)]
    async fn create_schema(&self) -> Result<(), RepoError> {
        let mut conn = self.pool.get().await?;
        // Through `Executor` (a boxed future): `RawSql::execute`'s own future is not `Send`
        // here, a higher-ranked lifetime rustc cannot see through.
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(SCHEMA)).await?;
        Ok(())
    }

    #[track_query(insert)]
    async fn create(&self, content: &Content) -> Result<(), RepoError> {
        sqlx::query("INSERT INTO content (id, title, body) VALUES ($1, $2, $3)")
            .bind(&content.id)
            .bind(&content.title)
            .bind(&content.body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[track_query(select)]
    async fn get(&self, id: &str) -> Result<Option<Content>, RepoError> {
        let row: Option<Row> = sqlx::query_as("SELECT id, title, body FROM content WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(content))
    }

    #[track_query(select, function = "list_content")]
    async fn list(&self, limit: i64) -> Result<Vec<Content>, RepoError> {
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, title, body FROM content ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(content).collect())
    }

    #[track_query(update)]
    async fn rename(&self, id: &str, title: &str) -> Result<bool, RepoError> {
        let updated = sqlx::query("UPDATE content SET title = $2 WHERE id = $1")
            .bind(id)
            .bind(title)
            .execute(&self.pool)
            .await?;
        Ok(updated.rows_affected() == 1)
    }

    #[track_query(upsert, "content_views")]
    async fn record_view(&self, id: &str) -> Result<i64, RepoError> {
        let views = sqlx::query_scalar(
            "INSERT INTO content_views (id, views) VALUES ($1, 1)
             ON CONFLICT (id) DO UPDATE SET views = content_views.views + 1
             RETURNING views",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(views)
    }

    #[track_query(delete)]
    async fn delete(&self, id: &str) -> Result<bool, RepoError> {
        let deleted = sqlx::query("DELETE FROM content WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    #[track_transaction("archive_content")]
    async fn archive(&self, id: &str) -> Result<bool, RepoError> {
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin().await?;
        let moved = sqlx::query(
            "INSERT INTO content_archive SELECT * FROM content WHERE id = $1
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM content WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved.rows_affected() == 1)
    }

    #[track_query(select, "content_report")]
    async fn report(&self, sleep_seconds: f64, timeout_ms: u32) -> Result<i64, RepoError> {
        let mut conn = self.batch_pool.get().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(timeout_ms.to_string())
            .execute(&mut *tx)
            .await?;
        let count = sqlx::query_scalar("SELECT count(*) FROM content, pg_sleep($1::float8)")
            .bind(sleep_seconds)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(count)
    }
}
