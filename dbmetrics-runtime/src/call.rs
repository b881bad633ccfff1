//! [`TrackedCall`]: the future of one call tracked without an attribute (the tracker, the
//! middleware, `transaction::run`), and [`TrackOutcome`], how its output says how it ended.

// pin-project-lite takes `?Sized` only alone, so `TrackedCall`'s trait bound on the same
// parameter goes in a where clause (and into the items the macro generates).
#![allow(clippy::multiple_bound_locations)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::classify::{ClassifyError, OTHER};
use crate::record::unfinished::Watched;
use crate::record::{CallGuard, CallSite, Outcome, QueryMetrics, SiteKind};

/// How the tracker tells success from error in a future's output.
///
/// Implemented for `Result<T, E>` when `E: ClassifyError` (which `tokio_postgres::Error`,
/// deadpool's `PoolError`, `io::Error` and boxed errors do), and for `()` and `Option<T>`
/// (always a success, unless [`TrackedCall::error_if`] says otherwise).
///
/// `#[track_query]` classifies any `Result` (it sees the concrete type where it expands); the
/// tracker is a generic function and cannot, so your own error type needs a [`ClassifyError`]
/// implementation to be tracked. One line keeps the default classification (the first driver,
/// pool or I/O error in the `source()` chain):
///
/// ```
/// # extern crate dbmetrics_runtime as dbmetrics;
/// #[derive(Debug, thiserror::Error)]
/// enum RepoError {
///     #[error("database error")]
///     Db(#[from] tokio_postgres::Error),
///     #[error("not found")]
///     NotFound,
/// }
///
/// impl dbmetrics::ClassifyError for RepoError {
///     fn error_type(&self) -> &'static str {
///         dbmetrics::classify::classify(self)
///     }
///     // optional: a missing row is an answer, not a failure of the database call
///     fn is_failure(&self) -> bool {
///         !matches!(self, RepoError::NotFound)
///     }
/// }
/// ```
pub trait TrackOutcome {
    /// The outcome this value stands for.
    fn outcome(&self) -> Outcome;

    /// The `error_type` of this value when [`TrackedCall::error_if`] marks it as failed: the
    /// class of the error it holds, if any (default `None`: the class is `other`).
    fn error_class(&self) -> Option<&'static str> {
        None
    }
}

impl<T, E: ClassifyError> TrackOutcome for Result<T, E> {
    #[inline]
    fn outcome(&self) -> Outcome {
        Outcome::of_classified(self.as_ref())
    }

    #[inline]
    fn error_class(&self) -> Option<&'static str> {
        self.as_ref().err().map(E::error_type)
    }
}

impl TrackOutcome for () {
    #[inline]
    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

impl<T> TrackOutcome for Option<T> {
    #[inline]
    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

/// A predicate of [`TrackedCall::ok_if`] / [`TrackedCall::error_if`] over the call's output:
/// any `FnOnce(&Output) -> bool`, or [`NoPredicate`].
pub trait Predicate<T: ?Sized> {
    /// Whether the predicate holds for `value`.
    fn test(self, value: &T) -> bool;
}

/// No predicate given: never holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPredicate;

impl<T: ?Sized> Predicate<T> for NoPredicate {
    #[inline(always)]
    fn test(self, _value: &T) -> bool {
        false
    }
}

impl<T: ?Sized, F: FnOnce(&T) -> bool> Predicate<T> for F {
    #[inline(always)]
    fn test(self, value: &T) -> bool {
        self(value)
    }
}

/// Where a [`TrackedCall`] is.
enum State<G> {
    /// Not polled yet: nothing is timed, nothing recorded if dropped.
    Idle,
    /// Running: the guard records on drop (`cancelled`, or `panic`).
    Running(G),
    /// Finished and recorded.
    Done,
}

pin_project_lite::pin_project! {
    /// One tracked call: the future returned by
    /// [`QueryPerformanceTracker::track_query`](crate::QueryPerformanceTracker::track_query),
    /// [`track_transaction`](crate::QueryPerformanceTracker::track_transaction) and
    /// [`RepositoryMiddleware::repository_method_tracker`](crate::RepositoryMiddleware::repository_method_tracker).
    ///
    /// `.await` it as the future it wraps: its output is the wrapped future's, unchanged. The
    /// call is timed from its first poll to its end; dropped before it ends, it records
    /// `cancelled`; dropped before its first poll, nothing.
    ///
    /// What counts as a failure, as `ok_if`/`error_if` of the attributes (each at most once,
    /// consulted only when the call ends):
    ///
    /// ```no_run
    /// # extern crate dbmetrics_runtime as dbmetrics;
    /// # #[derive(Debug)] enum RepoError { NotFound, Db(tokio_postgres::Error) }
    /// # impl dbmetrics::ClassifyError for RepoError {
    /// #     fn error_type(&self) -> &'static str { "other" }
    /// # }
    /// # async fn find(_id: i64) -> Result<Option<String>, RepoError> { Ok(None) }
    /// # async fn get(_id: i64) -> Result<String, RepoError> { Err(RepoError::NotFound) }
    /// # async fn demo(tracker: dbmetrics::QueryPerformanceTracker) {
    /// // a missing row is an answer, not a database failure: result="success"
    /// let found = tracker
    ///     .track_query("select", "items", get(7))
    ///     .ok_if(|r| matches!(r, Err(RepoError::NotFound)))
    ///     .await;
    /// // an empty answer where one was required: result="error", error_type="other"
    /// let required = tracker
    ///     .track_query("select", "items", find(7))
    ///     .error_if(|r| matches!(r, Ok(None)))
    ///     .await;
    /// # }
    /// ```
    ///
    /// `ok_if` wins when both hold; `error_if` records the class of the error the output
    /// holds, if any ([`TrackOutcome::error_class`]), else `other`.
    #[must_use = "futures do nothing unless polled"]
    pub struct TrackedCall<'m, M: ?Sized, F, OkIf = NoPredicate, ErrorIf = NoPredicate>
    where
        M: QueryMetrics,
    {
        metrics: &'m M,
        site: &'static CallSite,
        state: State<CallGuard<&'m M>>,
        ok_if: Option<OkIf>,
        error_if: Option<ErrorIf>,
        // Dropped while running (cancelled), what the future owns is dropped inside a drop
        // window: a connection it checked out is then cleaned up (see `pool/cleanup.rs`).
        #[pin]
        future: Watched<F>,
    }
}

impl<M: QueryMetrics + ?Sized, F, O, E> std::fmt::Debug for TrackedCall<'_, M, F, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedCall")
            .field("site", self.site)
            .field(
                "state",
                &match self.state {
                    State::Idle => "idle",
                    State::Running(_) => "running",
                    State::Done => "done",
                },
            )
            .finish_non_exhaustive()
    }
}

impl<'m, M: QueryMetrics + ?Sized, F: Future> TrackedCall<'m, M, F> {
    /// `future` as one call of `site`, recording into `metrics`.
    #[inline]
    pub(crate) fn new(metrics: &'m M, site: &'static CallSite, future: F) -> Self {
        Self {
            metrics,
            site,
            state: State::Idle,
            ok_if: Some(NoPredicate),
            error_if: Some(NoPredicate),
            future: Watched::new(future),
        }
    }
}

impl<'m, M: QueryMetrics + ?Sized, F: Future, E> TrackedCall<'m, M, F, NoPredicate, E> {
    /// Records the call as `result="success"` when `predicate` holds for its output (a
    /// `NotFound` is not a database failure), whatever the output is. Wins over
    /// [`error_if`](TrackedCall::error_if).
    pub fn ok_if<P>(self, predicate: P) -> TrackedCall<'m, M, F, P, E>
    where
        P: FnOnce(&F::Output) -> bool,
    {
        TrackedCall {
            metrics: self.metrics,
            site: self.site,
            state: self.state,
            ok_if: Some(predicate),
            error_if: self.error_if,
            future: self.future,
        }
    }
}

impl<'m, M: QueryMetrics + ?Sized, F: Future, O> TrackedCall<'m, M, F, O, NoPredicate> {
    /// Records the call as `result="error"` when `predicate` holds for its output (an
    /// `Ok(None)` where a row was required), with the class of the error the output holds,
    /// else `other`.
    pub fn error_if<P>(self, predicate: P) -> TrackedCall<'m, M, F, O, P>
    where
        P: FnOnce(&F::Output) -> bool,
    {
        TrackedCall {
            metrics: self.metrics,
            site: self.site,
            state: self.state,
            ok_if: self.ok_if,
            error_if: Some(predicate),
            future: self.future,
        }
    }
}

impl<M, F, OkIf, ErrorIf> Future for TrackedCall<'_, M, F, OkIf, ErrorIf>
where
    M: QueryMetrics + ?Sized,
    F: Future,
    F::Output: TrackOutcome,
    OkIf: Predicate<F::Output>,
    ErrorIf: Predicate<F::Output>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let State::Idle = this.state {
            let table = match this.site.kind() {
                SiteKind::Query { table, .. } => table.unwrap_or(""),
                SiteKind::Transaction { name } => name,
            };
            *this.state = State::Running(CallGuard::start(*this.metrics, this.site, table));
        }
        let State::Running(guard) = this.state else {
            panic!("a TrackedCall was polled after it completed");
        };
        let output = ready!(guard.poll_body(this.future, cx));
        guard.finish_in_place(decide(&output, this.ok_if.take(), this.error_if.take()));
        *this.state = State::Done;
        Poll::Ready(output)
    }
}

/// The outcome of `output`: `ok_if`, then `error_if`, then the output's own outcome.
#[inline]
fn decide<T: TrackOutcome>(
    output: &T,
    ok_if: Option<impl Predicate<T>>,
    error_if: Option<impl Predicate<T>>,
) -> Outcome {
    if ok_if.is_some_and(|p| p.test(output)) {
        return Outcome::Success;
    }
    if error_if.is_some_and(|p| p.test(output)) {
        return Outcome::Error {
            error_type: output.error_class().unwrap_or(OTHER),
        };
    }
    output.outcome()
}
