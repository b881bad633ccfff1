//! What the service asks of its database, whatever the driver: [`ContentStore`], implemented
//! once per driver for [`ContentRepository`] (with_deadpool.rs, with_sqlx.rs, with_bb8.rs
//! beside this file).
//! Each implementation runs the same SQL with its driver's own API; the attributes, the
//! tracked pools and the metrics they fill are the same.

use std::future::Future;

use dbmetrics::pool::MonitoredPool;
use dbmetrics::{DatabaseMetrics, TrackedPool, TrackedRepository};
use serde::{Deserialize, Serialize};

/// A piece of content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Content {
    pub id: String,
    pub title: String,
    pub body: String,
}

/// The repository of one driver: two tracked pools and the metrics its attributes record into.
///
/// `pool` serves the requests; `batch_pool` (2 connections, callers wait at most 100 ms, a
/// connection held past 250 ms is reported as a leak) serves the reports.
#[derive(Clone, TrackedRepository)]
#[tracked(table = "content")]
pub struct ContentRepository<P: MonitoredPool> {
    pub pool: TrackedPool<P>,
    pub batch_pool: TrackedPool<P>,
    #[metrics]
    pub metrics: DatabaseMetrics,
}

/// The queries of the service. Every implementation tracks each one with the same attribute:
/// `#[track_query(ddl)]`, `(insert)`, `(select)`, `(update)`, `(upsert, "content_views")`,
/// `(delete)`, `(select, "content_report")` and `#[track_transaction("archive_content")]`.
pub trait ContentStore: Clone + Send + Sync + 'static {
    /// Creates the tables if they do not exist.
    fn create_schema(&self) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Inserts `content`; a taken id is a `unique_violation`.
    fn create(&self, content: &Content) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The content with this id.
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Content>, RepoError>> + Send;
    /// The first `limit` contents by id.
    fn list(&self, limit: i64) -> impl Future<Output = Result<Vec<Content>, RepoError>> + Send;
    /// Sets the title; `false` when there is no such content.
    fn rename(&self, id: &str, title: &str)
    -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Counts one view of `id` (insert or increment): the views so far.
    fn record_view(&self, id: &str) -> impl Future<Output = Result<i64, RepoError>> + Send;
    /// Deletes the content; `false` when there was none.
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Moves the content to `content_archive`, in one transaction.
    fn archive(&self, id: &str) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// A slow report on the batch pool, bounded by a server-side `statement_timeout`.
    fn report(
        &self,
        sleep_seconds: f64,
        timeout_ms: u32,
    ) -> impl Future<Output = Result<i64, RepoError>> + Send;
}

/// What the repositories fail with: the driver's own errors, kept whole so that dbmetrics
/// classifies them (`unique_violation`, `query_canceled`, `pool_timeout`, ...) through
/// `source()`. A service on one driver keeps only its variants.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// deadpool: no connection from the pool.
    #[error("no connection from the pool")]
    Deadpool(#[from] deadpool_postgres::PoolError),
    /// deadpool and bb8: a query failed.
    #[error("database error")]
    Postgres(#[from] tokio_postgres::Error),
    /// sqlx: a checkout or a query failed.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// bb8: no connection from the pool.
    #[error("no connection from the pool")]
    Bb8(#[from] bb8::RunError<tokio_postgres::Error>),
}

/// The PostgreSQL schema of the demo's tables (every connection's `search_path`), apart from
/// whatever else the database holds.
pub const SCHEMA_NAME: &str = "content_service";

/// The tables, the same for every driver.
pub const SCHEMA: &str = "
    CREATE SCHEMA IF NOT EXISTS content_service;
    CREATE TABLE IF NOT EXISTS content (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS content_archive (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS content_views (
        id TEXT PRIMARY KEY, views BIGINT NOT NULL);";
