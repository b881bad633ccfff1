//! Real PostgreSQL transactions that commit or roll back by themselves, recorded as tracked
//! transactions.
//!
//! [`run`] opens a transaction on a client, hands it to a closure, then
//!
//! | the closure | the transaction | recorded `result` |
//! |---|---|---|
//! | returns `Ok(value)` | committed (`COMMIT`); `run` returns `Ok(value)` | `success` |
//! | returns `Err(e)` | rolled back (`ROLLBACK`); `run` returns `Err(e)` | `error`, `error_type` = class of `e` |
//! | `BEGIN` or `COMMIT` fails | rolled back by the server; `run` returns the driver error, converted by `From` | `error`, its class |
//! | panics | rolled back (the driver's drop); the panic carries on | `error`, `error_type="panic"` |
//! | its future is dropped (a timeout, a client gone) | rolled back (the driver's drop) | `cancelled` |
//!
//! It records exactly what `#[track_transaction("name")]` records:
//! `{service}_database_transaction_duration_seconds{transaction, result}` (from `BEGIN` to the
//! end of `COMMIT`/`ROLLBACK`), `{service}_database_transactions_total{transaction, result}` and,
//! on failure, `{service}_database_errors_total{operation="transaction", table=<name>,
//! error_type}`. Queries tracked inside record as well.
//!
//! It works with what you hold: a `tokio_postgres::Client`, a deadpool-postgres
//! `Object` (= `deadpool_postgres::Client`, from `pool.get()`), a [`TrackedConnection`], or an
//! open transaction (the nested one is then a `SAVEPOINT`, rolled back on its own).
//!
//! ```no_run
//! # extern crate dbmetrics_runtime as dbmetrics;
//! # async fn demo(metrics: dbmetrics::DatabaseMetrics, pool: deadpool_postgres::Pool)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = pool.get().await?;
//! let id = 7_i64;
//! let archived = dbmetrics::transaction::run(&metrics, &mut client, "archive_content", |tx| {
//!     Box::pin(async move {
//!         let n = tx
//!             .execute("UPDATE content SET archived = true WHERE id = $1", &[&id])
//!             .await?;
//!         tx.execute("INSERT INTO audit (content_id) VALUES ($1)", &[&id]).await?;
//!         Ok::<_, tokio_postgres::Error>(n)
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Why `Box::pin`
//!
//! The closure returns a boxed future ([`TransactionFuture`]) rather than being a Rust 2024
//! `async` closure (`AsyncFnOnce(&mut Transaction<'_>)`). Both compile on rustc 1.95, but a
//! call with an `async` closure cannot be proven `Send` once its caller is spawned
//! (`tokio::spawn`, an axum handler): rustc reports "implementation of `AsyncFnOnce` is not
//! general enough". The boxed future is checked for `Send` where it is written, so `run` works
//! in any task. The closure may borrow anything that outlives the call (the transaction's
//! lifetime bounds the future's), as the examples show.
//!
//! # Not detected
//!
//! If the closure swallows a failed query (`let _ = tx.execute(..).await;`) and returns `Ok`,
//! PostgreSQL has already aborted the transaction, and its `COMMIT` answers with a rollback that
//! the driver does not report as an error: `run` returns `Ok` and records `success`. Return the
//! error (`?`), or recover inside a nested [`run`] (a savepoint).
//!
//! Isolation level and access mode: make them the closure's first statement
//! (`tx.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")`).
//!
//! [`TrackedConnection`]: crate::TrackedConnection

use std::future::Future;
use std::pin::Pin;

use crate::call::TrackedCall;
use crate::classify::ClassifyError;
use crate::record::QueryMetrics;
use crate::sites;

/// The future a [`run`] closure returns: `Box::pin(async move { ... })`, borrowing the
/// transaction for `'t`.
pub type TransactionFuture<'t, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>;

/// A client a transaction can be opened on.
///
/// Implemented for what each enabled driver hands out (see the README, "Drivers"); for
/// deadpool-postgres: `tokio_postgres::Client`, `deadpool_postgres::Object` (=
/// `deadpool_postgres::Client`) and its `ClientWrapper`, a [`TrackedConnection`], and open
/// transactions of both (the new one is a savepoint). An implementation for your own client
/// type must return a transaction that rolls back when dropped unfinished, as these do.
pub trait BeginTransaction {
    /// The driver's error (`BEGIN`, `COMMIT` and `ROLLBACK` fail with it).
    type Error: ClassifyError + Send;

    /// The open transaction the closure of [`run`] receives.
    type Transaction<'a>: OpenTransaction<Error = Self::Error> + Send + Sync
    where
        Self: 'a;

    /// Opens a transaction (`BEGIN`, or `SAVEPOINT` inside one).
    fn begin(&mut self) -> impl Future<Output = Result<Self::Transaction<'_>, Self::Error>> + Send;
}

/// An open transaction: how [`run`] ends it.
pub trait OpenTransaction: Sized {
    /// The driver's error.
    type Error;
    /// Commits (`COMMIT`, or `RELEASE` of a savepoint).
    fn commit(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Rolls back (`ROLLBACK`, or `ROLLBACK TO` a savepoint).
    fn rollback(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs `body` inside a transaction opened on `client`: commits when it returns `Ok`, rolls back
/// when it returns `Err`, panics or is dropped, and records it as the tracked transaction `name`
/// into `metrics` (see the [module documentation](self) for the table of outcomes).
///
/// `E` is the closure's error type; errors of `BEGIN` and `COMMIT` reach you through
/// `E: From` the driver's error (`tokio_postgres::Error` for deadpool), and `E` classifies
/// itself for the `error_type` label ([`ClassifyError`]: `tokio_postgres::Error` does; for your
/// own type, see [`TrackOutcome`](crate::TrackOutcome)). The name is a label value within the
/// service's label limit (see [`QueryPerformanceTracker`](crate::QueryPerformanceTracker)): use
/// a name from your code, not from data.
///
/// ```no_run
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # async fn demo(metrics: dbmetrics::DatabaseMetrics, client: &mut tokio_postgres::Client)
/// # -> Result<(), tokio_postgres::Error> {
/// use dbmetrics::transaction;
///
/// let title = String::from("draft");
/// // `async` without `move` borrows what it uses (`metrics`, `title`) from the caller;
/// // a nested run is a savepoint: its failure rolls back only its own work
/// transaction::run(&metrics, client, "publish", |tx| {
///     Box::pin(async {
///         tx.execute("INSERT INTO content (title) VALUES ($1)", &[&title]).await?;
///         let tagged = transaction::run(&metrics, tx, "publish_tag", |sp| {
///             Box::pin(async move { sp.execute("INSERT INTO tags VALUES ('new')", &[]).await })
///         })
///         .await;
///         if tagged.is_err() { /* the tag is gone, the content stays */ }
///         Ok(())
///     })
/// })
/// .await
/// # }
/// ```
pub fn run<'a, M, C, F, T, E>(
    metrics: &'a M,
    client: &'a mut C,
    name: &'a str,
    body: F,
) -> TransactionFuture<'a, T, E>
where
    M: QueryMetrics + ?Sized,
    C: BeginTransaction + Send + ?Sized,
    F: for<'t> FnOnce(&'t mut C::Transaction<'a>) -> TransactionFuture<'t, T, E> + Send + 'a,
    T: Send + 'a,
    E: From<C::Error> + ClassifyError + Send + 'a,
{
    // Boxed and checked for `Send` here, where the bounds are known: a caller (or an enclosing
    // `run`) never has to prove it through the closure's higher-ranked lifetimes.
    let site = sites::transaction_site(metrics.label_budget(), name);
    Box::pin(TrackedCall::new(metrics, site, async move {
        let mut tx = client.begin().await?;
        match body(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    // The closure's error is the one that matters; the connection is likely
                    // gone, and the server rolls back what it cannot finish.
                    tracing::debug!(
                        target: "dbmetrics",
                        transaction = name,
                        error_type = rollback.error_type(),
                        "rollback after an error failed"
                    );
                }
                Err(e)
            }
        }
    }))
}
