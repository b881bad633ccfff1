//! Tracking without attributes: [`QueryPerformanceTracker`] times any future as a query or a
//! transaction, and [`RepositoryMiddleware`] wraps methods of repositories that cannot take an
//! attribute.

use std::future::Future;
use std::sync::{PoisonError, RwLock};

use crate::call::{TrackOutcome, TrackedCall};
use crate::drivers::DefaultPool;
use crate::metrics::DatabaseMetrics;
use crate::pool::MonitoredPool;
use crate::record::{CallSite, Operation, QueryMetrics};
use crate::sites::{self, Function};

/// An operation given at run time: an [`Operation`] or its name (`"select"`, ...).
///
/// A string that is not an operation is recorded as `other`, and logged once as an error
/// (target `dbmetrics`) naming the bad string, so that the typo is found; the call itself is
/// never failed by it. Use the [`Operation`] enum, or the macros, to have it checked at compile
/// time.
pub trait AsOperation {
    /// The operation, or the unparsable text.
    fn as_operation(&self) -> Result<Operation, &str>;
}

impl AsOperation for Operation {
    #[inline]
    fn as_operation(&self) -> Result<Operation, &str> {
        Ok(*self)
    }
}

impl AsOperation for str {
    #[inline]
    fn as_operation(&self) -> Result<Operation, &str> {
        Operation::from_label(self).ok_or(self)
    }
}

impl AsOperation for String {
    #[inline]
    fn as_operation(&self) -> Result<Operation, &str> {
        self.as_str().as_operation()
    }
}

impl<T: AsOperation + ?Sized> AsOperation for &T {
    #[inline]
    fn as_operation(&self) -> Result<Operation, &str> {
        (**self).as_operation()
    }
}

/// Times futures as tracked queries and transactions, recording exactly as `#[track_query]`
/// and `#[track_transaction]` do (success, error with class, cancelled, panic).
///
/// Calls nest: a query tracked inside a tracked transaction records both. The future is
/// returned unchanged, its output too; recording never fails it. `track_transaction` only
/// *times* a future: to open, commit and roll back a real transaction, see
/// [`crate::transaction::run`].
///
/// Tables and transaction names given at run time are bounded: a `DatabaseMetrics` admits
/// [`label_limit`](crate::DatabaseMetricsBuilder::label_limit) distinct ones of each (default
/// 1000); further ones record under `table="_overflow"` (`transaction="_overflow"`), with one
/// warning, and every call is still counted once. Pass names written in your code, never values
/// from requests or rows.
///
/// ```no_run
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # async fn demo(db_metrics: dbmetrics::DatabaseMetrics, client: tokio_postgres::Client)
/// # -> Result<(), tokio_postgres::Error> {
/// use dbmetrics::QueryPerformanceTracker;
///
/// let tracker = QueryPerformanceTracker::new(db_metrics.clone());
/// tracker
///     .track_transaction("create_content", async {
///         tracker
///             .track_query("insert", "content", async {
///                 client.execute("INSERT INTO content (id) VALUES ($1)", &[&"a"]).await
///             })
///             .await
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct QueryPerformanceTracker<M = DatabaseMetrics> {
    metrics: M,
}

impl<M: QueryMetrics> QueryPerformanceTracker<M> {
    /// A tracker that records into `metrics`.
    pub fn new(metrics: M) -> Self {
        Self { metrics }
    }

    /// The metrics this tracker records into.
    pub fn metrics(&self) -> &M {
        &self.metrics
    }

    /// Runs `future` as one query of `operation` on `table` and returns its output unchanged.
    ///
    /// The call is timed from the first poll of the returned future, as an `async fn` would be.
    /// Its result is the output's ([`TrackOutcome`]), unless
    /// [`.ok_if(..)`](TrackedCall::ok_if) or [`.error_if(..)`](TrackedCall::error_if) decide.
    pub fn track_query<F>(
        &self,
        operation: impl AsOperation,
        table: &str,
        future: F,
    ) -> TrackedCall<'_, M, F>
    where
        F: Future,
        F::Output: TrackOutcome,
    {
        // Resolved now, so that the returned future is one state machine, not two.
        let site = query_site(
            &self.metrics,
            &operation,
            table,
            Function::Ours("track_query"),
        );
        TrackedCall::new(&self.metrics, site, future)
    }

    /// Runs `future` as one transaction called `name` and returns its output unchanged (with
    /// `.ok_if(..)` and `.error_if(..)` as [`track_query`](Self::track_query)).
    pub fn track_transaction<F>(&self, name: &str, future: F) -> TrackedCall<'_, M, F>
    where
        F: Future,
        F::Output: TrackOutcome,
    {
        let site = sites::transaction_site(self.metrics.label_budget(), name);
        TrackedCall::new(&self.metrics, site, future)
    }
}

/// Runs repository methods as tracked queries, for code that cannot take an attribute (a
/// repository from another crate, a trait object, generated code).
/// Made by [`crate::create_repository_middleware`].
///
/// ```no_run
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # struct Batch;
/// # struct BatchRepository;
/// # impl BatchRepository {
/// #     async fn get_batch_by_id(&self, _id: i64) -> Result<Option<Batch>, tokio_postgres::Error> { Ok(None) }
/// # }
/// # async fn demo(pool: deadpool_postgres::Pool, metrics: dbmetrics::DatabaseMetrics,
/// #               batches: BatchRepository) -> Result<(), tokio_postgres::Error> {
/// let middleware = dbmetrics::create_repository_middleware(pool.clone(), metrics.clone());
/// // `batches` is a repository you cannot annotate: wrap the call instead
/// let batch = middleware
///     .repository_method_tracker("select", "batches", "get_batch_by_id", batches.get_batch_by_id(7))
///     .await?;
/// # Ok(()) }
/// ```
///
/// Recorded as `#[track_query(select, "batches")]` on `get_batch_by_id` would record it;
/// `method` appears in the slow-query log only.
#[derive(Clone, Debug)]
pub struct RepositoryMiddleware<P: MonitoredPool = DefaultPool> {
    pool: P,
    metrics: DatabaseMetrics,
}

impl<P: MonitoredPool> RepositoryMiddleware<P> {
    pub(crate) fn new(pool: P, metrics: DatabaseMetrics) -> Self {
        Self { pool, metrics }
    }

    /// Runs `future` (the body of repository method `method`) as one `operation` on `table`;
    /// `method` names the call in the slow-query log and, when the metrics were built with
    /// [`function_label(true)`](crate::DatabaseMetricsBuilder::function_label), in the
    /// `function` label. `.ok_if(..)` and `.error_if(..)` on the returned [`TrackedCall`] decide
    /// what counts as a failure, as on the attributes.
    pub fn repository_method_tracker<F>(
        &self,
        operation: impl AsOperation,
        table: &str,
        method: &str,
        future: F,
    ) -> TrackedCall<'_, DatabaseMetrics, F>
    where
        F: Future,
        F::Output: TrackOutcome,
    {
        let site = query_site(&self.metrics, &operation, table, Function::Given(method));
        TrackedCall::new(&self.metrics, site, future)
    }

    /// The pool the repositories use.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// The metrics the middleware records into.
    pub fn metrics(&self) -> &DatabaseMetrics {
        &self.metrics
    }
}

/// The site of `operation` on `table` from `function`, within `metrics`' label budget.
#[inline]
fn query_site<M: QueryMetrics + ?Sized>(
    metrics: &M,
    operation: &impl AsOperation,
    table: &str,
    function: Function<'_>,
) -> &'static CallSite {
    let operation = match operation.as_operation() {
        Ok(operation) => operation,
        Err(bad) => {
            warn_unknown_operation(bad, table, function.as_str());
            Operation::Other
        }
    };
    sites::query_site(metrics.label_budget(), operation, table, function)
}

fn warn_unknown_operation(bad: &str, table: &str, function: &str) {
    static WARNED: RwLock<Vec<String>> = RwLock::new(Vec::new());
    if WARNED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|w| w == bad)
    {
        return;
    }
    let mut warned = WARNED.write().unwrap_or_else(PoisonError::into_inner);
    if warned.len() < 64 && !warned.iter().any(|w| w == bad) {
        warned.push(bad.to_owned());
        tracing::error!(
            target: "dbmetrics",
            operation = bad,
            table,
            function,
            expected = %Operation::list(),
            "unknown operation; recorded as operation=\"other\""
        );
    }
}
