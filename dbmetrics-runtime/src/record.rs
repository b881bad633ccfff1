//! The recording path: call sites, samples, the [`QueryMetrics`] trait and the guard that
//! records one tracked call on every exit path.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The operation of a tracked query: a closed set, checked at compile time by the macros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `SELECT`
    Select,
    /// `INSERT`
    Insert,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
    /// `INSERT ... ON CONFLICT` and friends
    Upsert,
    /// `COPY`
    Copy,
    /// `CALL` of a procedure or a function call
    Call,
    /// schema changes
    Ddl,
    /// anything else
    Other,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 9] = [
        Operation::Select,
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Upsert,
        Operation::Copy,
        Operation::Call,
        Operation::Ddl,
        Operation::Other,
    ];

    /// The label value (`"select"`, `"insert"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Select => "select",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Upsert => "upsert",
            Operation::Copy => "copy",
            Operation::Call => "call",
            Operation::Ddl => "ddl",
            Operation::Other => "other",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`Operation`] from a string that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown operation {0:?}: expected one of select, insert, update, delete, upsert, copy, call, ddl, other"
)]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

/// How a tracked call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call returned (anything but `Err`).
    Success,
    /// The call returned `Err`, or panicked (`error_type` is then `"panic"`).
    Error {
        /// The bounded error class (see [`crate::classify`]).
        error_type: &'static str,
    },
    /// The future was dropped before it finished (a timeout, a client that went away).
    Cancelled,
}

impl Outcome {
    /// The `result` label value: `success`, `error` or `cancelled`.
    pub const fn result(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error { .. } => "error",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Outcome::Success => 0,
            Outcome::Error { .. } => 1,
            Outcome::Cancelled => 2,
        }
    }
}

/// What a call site tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// A query: operation and table.
    Query {
        /// The operation label.
        operation: Operation,
        /// The table label, when known where the site is declared (else given per call).
        table: Option<&'static str>,
    },
    /// A transaction, by name.
    Transaction {
        /// The transaction label.
        name: &'static str,
    },
}

/// One place in the code that is tracked: a `#[track_query]` function, a `#[track_transaction]`
/// function, or one distinct (operation, table) given to the tracker API.
///
/// The macros declare one `static` per annotated function; recorders key their caches by
/// [`CallSite::id`], so that after the first call a site records without building labels.
pub struct CallSite {
    kind: SiteKind,
    name: &'static str,
    module: &'static str,
    id: AtomicU32,
}

static NEXT_SITE_ID: AtomicU32 = AtomicU32::new(1);

impl CallSite {
    /// A query site. Used by the macros; `table: None` takes the table from each call.
    #[doc(hidden)]
    pub const fn query(
        operation: Operation,
        table: Option<&'static str>,
        name: &'static str,
        module: &'static str,
    ) -> Self {
        Self {
            kind: SiteKind::Query { operation, table },
            name,
            module,
            id: AtomicU32::new(0),
        }
    }

    /// A transaction site. Used by the macros.
    #[doc(hidden)]
    pub const fn transaction(
        transaction: &'static str,
        name: &'static str,
        module: &'static str,
    ) -> Self {
        Self {
            kind: SiteKind::Transaction { name: transaction },
            name,
            module,
            id: AtomicU32::new(0),
        }
    }

    /// What this site tracks.
    pub fn kind(&self) -> SiteKind {
        self.kind
    }

    /// The function (or tracker method) name, for logs. Never a label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module path of the site, for logs.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// A process-unique, small, dense number for this site, assigned on first use.
    pub fn id(&self) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        let fresh = NEXT_SITE_ID.fetch_add(1, Ordering::Relaxed);
        match self
            .id
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(existing) => existing,
        }
    }
}

impl fmt::Debug for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSite")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("module", &self.module)
            .finish()
    }
}

/// One finished tracked call, as a [`QueryMetrics`] implementation receives it.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The call site (its static description and cache id).
    pub site: &'static CallSite,
    /// The table label (resolved for query sites; the transaction name for transactions).
    pub table: &'static str,
    /// How the call ended.
    pub outcome: Outcome,
    /// Wall time from the start of the call to its end (or to the drop of its future).
    pub elapsed: Duration,
}

impl Sample {
    /// The operation of a query sample (`None` for a transaction).
    pub fn operation(&self) -> Option<Operation> {
        match self.site.kind {
            SiteKind::Query { operation, .. } => Some(operation),
            SiteKind::Transaction { .. } => None,
        }
    }

    /// The transaction name of a transaction sample (`None` for a query).
    pub fn transaction(&self) -> Option<&'static str> {
        match self.site.kind {
            SiteKind::Transaction { name } => Some(name),
            SiteKind::Query { .. } => None,
        }
    }
}

/// Where tracked calls record: the protocol repositories depend on.
///
/// [`crate::DatabaseMetrics`] records into the `metrics` facade (and so into Prometheus);
/// [`NoopMetrics`] records nothing; [`crate::InMemoryMetrics`] counts in memory for tests.
/// The trait is object safe: a repository can hold an `Arc<dyn QueryMetrics>`.
///
/// Implementations must not panic and should not block: they run on every tracked call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a dbmetrics metrics sink",
    label = "tracked calls record into this",
    note = "pass a `dbmetrics::DatabaseMetrics` (from `setup_database_monitoring`), a `NoopMetrics`, an `InMemoryMetrics`, or a reference to one"
)]
pub trait QueryMetrics: Send + Sync {
    /// Records one finished call.
    fn record(&self, sample: &Sample);
}

impl<T: QueryMetrics + ?Sized> QueryMetrics for &T {
    fn record(&self, sample: &Sample) {
        (**self).record(sample)
    }
}

impl<T: QueryMetrics + ?Sized> QueryMetrics for Arc<T> {
    fn record(&self, sample: &Sample) {
        (**self).record(sample)
    }
}

impl<T: QueryMetrics + ?Sized> QueryMetrics for Box<T> {
    fn record(&self, sample: &Sample) {
        (**self).record(sample)
    }
}

/// A [`QueryMetrics`] that records nothing: build a repository without any metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoopMetrics;

impl QueryMetrics for NoopMetrics {
    #[inline]
    fn record(&self, _sample: &Sample) {}
}

/// Records one tracked call when finished, dropped (`cancelled`) or unwound (`panic`).
///
/// Created by the macros and the tracker; the hot path is two clock reads and the recorder's
/// atomic updates.
#[must_use = "a CallGuard records when it is finished or dropped"]
pub struct CallGuard<M: QueryMetrics> {
    metrics: M,
    site: &'static CallSite,
    table: &'static str,
    start: Instant,
    armed: bool,
    /// Set while the tracked body runs (is polled): a panic then is the call's own panic; a
    /// guard dropped while some other code unwinds is a cancelled call.
    in_body: AtomicBool,
}

impl<M: QueryMetrics> CallGuard<M> {
    /// Starts timing a call of `site`, which records into `metrics`.
    #[inline]
    pub fn start(metrics: M, site: &'static CallSite, table: &'static str) -> Self {
        Self {
            metrics,
            site,
            table,
            start: Instant::now(),
            armed: true,
            in_body: AtomicBool::new(false),
        }
    }

    /// Runs the body of a tracked sync fn.
    #[inline]
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        self.in_body.store(true, Ordering::Relaxed);
        let output = body();
        self.in_body.store(false, Ordering::Relaxed);
        output
    }

    /// Wraps the body of a tracked async fn, to know when it is being polled.
    #[inline]
    pub fn body<F: Future>(&self, future: F) -> Body<'_, F> {
        Body {
            in_body: &self.in_body,
            future,
        }
    }

    /// Records the call as ended with `outcome`.
    #[inline]
    pub fn finish(mut self, outcome: Outcome) {
        self.armed = false;
        self.record(outcome);
    }

    #[inline]
    fn record(&self, outcome: Outcome) {
        let sample = Sample {
            site: self.site,
            table: self.table,
            outcome,
            elapsed: self.start.elapsed(),
        };
        self.metrics.record(&sample);
    }
}

/// The body of a tracked async fn, polled with the guard's `in_body` flag set.
#[must_use = "futures do nothing unless polled"]
pub struct Body<'a, F> {
    in_body: &'a AtomicBool,
    future: F,
}

impl<F: Future> Future for Body<'_, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and `Body`
        // has no `Drop` impl and is `Unpin` only when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        this.in_body.store(true, Ordering::Relaxed);
        let poll = unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx);
        // Not reached when the poll panics: the flag then says the body panicked.
        this.in_body.store(false, Ordering::Relaxed);
        poll
    }
}

impl<M: QueryMetrics> Drop for CallGuard<M> {
    fn drop(&mut self) {
        if self.armed {
            let outcome = if std::thread::panicking() && self.in_body.load(Ordering::Relaxed) {
                Outcome::Error {
                    error_type: crate::classify::PANIC,
                }
            } else {
                Outcome::Cancelled
            };
            self.record(outcome);
        }
    }
}

/// Outcome of a returned value, by autoref specialization: `Err(e)` is an error classified by
/// [`crate::ClassifyError`] when `e` implements it, else by its `source()` chain when it is a
/// `std::error::Error` (or lends one through `AsRef`, as `anyhow::Error` does), else `other`;
/// anything that is not a `Result` is a success.
///
/// Used by macro-generated code as
/// `(&&&&&Wrap(&value)).__dbmetrics_outcome()` with the traits of this module in scope.
#[doc(hidden)]
pub mod outcome {
    use super::Outcome;
    use crate::classify::{ClassifyError, OTHER, classify};

    pub struct Wrap<'a, T: ?Sized>(pub &'a T);

    pub trait ViaClassify {
        fn __dbmetrics_outcome(&self) -> Outcome;
    }
    impl<T, E: ClassifyError> ViaClassify for &&&&Wrap<'_, Result<T, E>> {
        #[inline]
        fn __dbmetrics_outcome(&self) -> Outcome {
            match self.0 {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Error {
                    error_type: e.error_type(),
                },
            }
        }
    }

    pub trait ViaStdError {
        fn __dbmetrics_outcome(&self) -> Outcome;
    }
    impl<T, E: std::error::Error + 'static> ViaStdError for &&&Wrap<'_, Result<T, E>> {
        #[inline]
        fn __dbmetrics_outcome(&self) -> Outcome {
            match self.0 {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Error {
                    error_type: classify(e),
                },
            }
        }
    }

    /// `anyhow::Error`, `eyre::Report` and the like: not `std::error::Error` themselves, but
    /// they lend one.
    pub trait ViaAsRefError {
        fn __dbmetrics_outcome(&self) -> Outcome;
    }
    impl<T, E> ViaAsRefError for &&Wrap<'_, Result<T, E>>
    where
        E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
    {
        #[inline]
        fn __dbmetrics_outcome(&self) -> Outcome {
            match self.0 {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Error {
                    error_type: classify(e.as_ref()),
                },
            }
        }
    }

    pub trait ViaAnyError {
        fn __dbmetrics_outcome(&self) -> Outcome;
    }
    impl<T, E> ViaAnyError for &Wrap<'_, Result<T, E>> {
        #[inline]
        fn __dbmetrics_outcome(&self) -> Outcome {
            match self.0 {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Error { error_type: OTHER },
            }
        }
    }

    pub trait ViaValue {
        fn __dbmetrics_outcome(&self) -> Outcome;
    }
    impl<T: ?Sized> ViaValue for Wrap<'_, T> {
        #[inline]
        fn __dbmetrics_outcome(&self) -> Outcome {
            Outcome::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::outcome::*;
    use super::*;

    #[derive(Debug)]
    struct Mine;
    impl crate::ClassifyError for Mine {
        fn error_type(&self) -> &'static str {
            "mine"
        }
    }

    #[test]
    #[allow(clippy::needless_borrow)]
    fn outcome_specialization() {
        let ok: Result<u8, Mine> = Ok(1);
        assert_eq!((&&&&&Wrap(&ok)).__dbmetrics_outcome(), Outcome::Success);
        let mine: Result<u8, Mine> = Err(Mine);
        assert_eq!(
            (&&&&&Wrap(&mine)).__dbmetrics_outcome(),
            Outcome::Error { error_type: "mine" }
        );
        let io: Result<(), std::fmt::Error> = Err(std::fmt::Error);
        assert_eq!(
            (&&&&&Wrap(&io)).__dbmetrics_outcome(),
            Outcome::Error {
                error_type: "other"
            }
        );
        let s: Result<(), String> = Err("x".into());
        assert_eq!(
            (&&&&&Wrap(&s)).__dbmetrics_outcome(),
            Outcome::Error {
                error_type: "other"
            }
        );
        let v: Option<u8> = None;
        assert_eq!((&&&&&Wrap(&v)).__dbmetrics_outcome(), Outcome::Success);
        assert_eq!((&&&&&Wrap(&())).__dbmetrics_outcome(), Outcome::Success);
    }

    #[test]
    fn operations_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>().unwrap(), op);
        }
        let err = "selct".parse::<Operation>().unwrap_err();
        assert!(err.to_string().contains("\"selct\""));
    }

    #[test]
    fn site_ids_are_stable_and_distinct() {
        static A: CallSite = CallSite::query(Operation::Select, Some("t"), "a", "m");
        static B: CallSite = CallSite::query(Operation::Select, Some("t"), "b", "m");
        assert_eq!(A.id(), A.id());
        assert_ne!(A.id(), B.id());
    }
}
