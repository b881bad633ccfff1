//! [`Sample`]: one finished call, and [`QueryMetrics`]: where samples go.

use std::sync::Arc;
use std::time::Duration;

use dbmetrics_labels::Operation;

use super::{CallSite, LabelBudget, Outcome};

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
        self.site.operation()
    }

    /// The transaction name of a transaction sample (`None` for a query).
    pub fn transaction(&self) -> Option<&'static str> {
        self.site.transaction()
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

    /// The bound on names given at run time (tracker tables, transaction names) of this sink;
    /// `None`: unbounded. `DatabaseMetrics` has one (its `label_limit`).
    #[doc(hidden)]
    fn label_budget(&self) -> Option<&LabelBudget> {
        None
    }
}

macro_rules! forward {
    ($($ptr:ident)::+) => {
        impl<T: QueryMetrics + ?Sized> QueryMetrics for $($ptr)::+<T> {
            #[inline]
            fn record(&self, sample: &Sample) {
                (**self).record(sample)
            }

            #[inline]
            fn label_budget(&self) -> Option<&LabelBudget> {
                (**self).label_budget()
            }
        }
    };
}

impl<T: QueryMetrics + ?Sized> QueryMetrics for &T {
    #[inline]
    fn record(&self, sample: &Sample) {
        (**self).record(sample)
    }

    #[inline]
    fn label_budget(&self) -> Option<&LabelBudget> {
        (**self).label_budget()
    }
}

forward!(Arc);
forward!(Box);

/// A [`QueryMetrics`] that records nothing: build a repository without any metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoopMetrics;

impl QueryMetrics for NoopMetrics {
    #[inline]
    fn record(&self, _sample: &Sample) {}
}
