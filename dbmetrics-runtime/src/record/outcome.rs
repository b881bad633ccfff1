//! [`Outcome`]: how a tracked call ended, and [`CallResult`], the `result` label it records.

use std::fmt;

use crate::classify::ClassifyError;

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
    /// Every `result` label value, in the order of [`Outcome::index`].
    pub(crate) const RESULTS: [&'static str; 3] = ["success", "error", "cancelled"];

    /// The `result` label value: `success`, `error` or `cancelled`.
    pub const fn result(self) -> &'static str {
        Self::RESULTS[self.index()]
    }

    /// The `result` label, typed.
    pub const fn call_result(self) -> CallResult {
        match self {
            Outcome::Success => CallResult::Success,
            Outcome::Error { .. } => CallResult::Error,
            Outcome::Cancelled => CallResult::Cancelled,
        }
    }

    /// The position of this outcome's `result` in [`Outcome::RESULTS`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Outcome::Success => 0,
            Outcome::Error { .. } => 1,
            Outcome::Cancelled => 2,
        }
    }

    /// The outcome of a returned `Result`: `Ok` is a success, `Err(e)` an error of class
    /// `classify(e)`. The one place a `Result` becomes an outcome.
    #[inline]
    pub(crate) fn of_result<T, E: ?Sized>(
        result: Result<&T, &E>,
        classify: impl FnOnce(&E) -> &'static str,
    ) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Error {
                error_type: classify(e),
            },
        }
    }

    /// The outcome of a returned `Result` whose error classifies itself: `Err(e)` is an error
    /// of class `e.error_type()` unless `e.is_failure()` says it is not a failure of the
    /// database call (then a success).
    #[inline]
    pub(crate) fn of_classified<T, E: ClassifyError + ?Sized>(result: Result<&T, &E>) -> Self {
        match result {
            Err(e) if e.is_failure() => Outcome::Error {
                error_type: e.error_type(),
            },
            _ => Outcome::Success,
        }
    }
}

/// The `result` label of a tracked call: what [`crate::testing::MetricsCapture`] and
/// [`crate::InMemoryMetrics`] count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallResult {
    /// `result="success"`: the call returned (anything but a failure).
    Success,
    /// `result="error"`: the call failed or panicked.
    Error,
    /// `result="cancelled"`: its future was dropped before it finished.
    Cancelled,
}

impl CallResult {
    /// Every result, in the order the series are registered.
    pub const ALL: [CallResult; 3] = [
        CallResult::Success,
        CallResult::Error,
        CallResult::Cancelled,
    ];

    /// The label value: `"success"`, `"error"` or `"cancelled"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallResult::Success => "success",
            CallResult::Error => "error",
            CallResult::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_follow_the_index() {
        for outcome in [
            Outcome::Success,
            Outcome::Error { error_type: "x" },
            Outcome::Cancelled,
        ] {
            assert_eq!(Outcome::RESULTS[outcome.index()], outcome.result());
            assert_eq!(outcome.call_result().as_str(), outcome.result());
        }
        assert_eq!(Outcome::Cancelled.result(), "cancelled");
    }
}
