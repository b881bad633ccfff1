//! The repository on deadpool-postgres: a checkout derefs to the deadpool client (a
//! `tokio_postgres::Client`).

use std::time::Duration;

use dbmetrics::{track_query, track_transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use crate::repository::{Content, ContentRepository, ContentStore, RepoError, SCHEMA, SCHEMA_NAME};

/// The two pools: 8 connections for the requests; 2 for the reports, whose callers wait at
/// most 100 ms for one.
pub fn pools(config: &tokio_postgres::Config) -> (Pool, Pool) {
    let mut config = config.clone();
    config.options(format!("-c search_path={SCHEMA_NAME}"));
    let mut batch_config = config.clone();
    batch_config.application_name("content_service_batch");
    (
        pool(config, 8, None),
        pool(batch_config, 2, Some(Duration::from_millis(100))),
    )
}

fn pool(config: tokio_postgres::Config, max_size: usize, wait: Option<Duration>) -> Pool {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(wait)
        .runtime(Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime always builds")
}

fn content(row: &Row) -> Content {
    Content {
        id: row.get(0),
        title: row.get(1),
        body: row.get(2),
    }
}

impl ContentStore for ContentRepository<Pool> {
    #[track_query(ddl)]
    async fn create_schema(&self) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client.batch_execute(SCHEMA).await?;
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
    async fn get(&self, id: &str) -> Result<Option<Content>, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT id, title, body FROM content WHERE id = $1", &[&id])
            .await?;
        Ok(row.as_ref().map(content))
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
        Ok(rows.iter().map(content).collect())
    }

    #[track_query(update)]
    async fn rename(&self, id: &str, title: &str) -> Result<bool, RepoError> {
        let client = self.pool.get().await?;
        let updated = client
            .execute(
                "UPDATE content SET title = $2 WHERE id = $1",
                &[&id, &title],
            )
            .await?;
        Ok(updated == 1)
    }

    #[track_query(upsert, "content_views")]
    async fn record_view(&self, id: &str) -> Result<i64, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO content_views (id, views) VALUES ($1, 1)
                 ON CONFLICT (id) DO UPDATE SET views = content_views.views + 1
                 RETURNING views",
                &[&id],
            )
            .await?;
        Ok(row.get(0))
    }

    #[track_query(delete)]
    async fn delete(&self, id: &str) -> Result<bool, RepoError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM content WHERE id = $1", &[&id])
            .await?;
        Ok(deleted == 1)
    }

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

    #[track_query(select, "content_report")]
    async fn report(&self, sleep_seconds: f64, timeout_ms: u32) -> Result<i64, RepoError> {
        let mut client = self.batch_pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT set_config('statement_timeout', $1, true)",
            &[&timeout_ms.to_string()],
        )
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
}
