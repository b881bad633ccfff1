//! [`InMemoryMetrics`]: a [`QueryMetrics`] that keeps every sample in memory, for tests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::record::{CallResult, Operation, Outcome, QueryMetrics, Sample};

/// One recorded call, as [`InMemoryMetrics::samples`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedSample {
    /// The operation (`None` for a transaction).
    pub operation: Option<Operation>,
    /// The table (the transaction name for a transaction).
    pub table: &'static str,
    /// The function the call site is in.
    pub function: &'static str,
    /// How the call ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// A [`QueryMetrics`] that keeps every sample in memory: build a repository with it in a unit
/// test and assert what it recorded, without a recorder and without parsing text. Each
/// instance is independent, so parallel tests do not see each other's samples. Cheap to clone
/// (clones share the samples).
#[derive(Clone, Debug, Default)]
pub struct InMemoryMetrics {
    samples: Arc<Mutex<Vec<RecordedSample>>>,
}

impl InMemoryMetrics {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sample recorded so far, in order.
    pub fn samples(&self) -> Vec<RecordedSample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many queries of `operation` on `table` ended with `result`.
    pub fn query_count(&self, operation: Operation, table: &str, result: CallResult) -> usize {
        self.count(|s| {
            s.operation == Some(operation) && s.table == table && s.outcome.call_result() == result
        })
    }

    /// How many transactions called `name` ended with `result`.
    pub fn transaction_count(&self, name: &str, result: CallResult) -> usize {
        self.count(|s| {
            s.operation.is_none() && s.table == name && s.outcome.call_result() == result
        })
    }

    /// How many calls on `table` (or transaction `table`) failed with `error_type`.
    pub fn error_count(&self, table: &str, error_type: &str) -> usize {
        self.count(|s| {
            s.table == table
                && matches!(s.outcome, Outcome::Error { error_type: t } if t == error_type)
        })
    }

    /// Forgets every sample.
    pub fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn count(&self, pred: impl Fn(&RecordedSample) -> bool) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| pred(s))
            .count()
    }
}

impl QueryMetrics for InMemoryMetrics {
    fn record(&self, sample: &Sample) {
        let recorded = RecordedSample {
            operation: sample.operation(),
            table: sample.table,
            function: sample.site.name(),
            outcome: sample.outcome,
            elapsed: sample.elapsed,
        };
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(recorded);
    }
}
