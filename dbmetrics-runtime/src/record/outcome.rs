//! [`Outcome`]: how a tracked call ended, and the `result` label it records.

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
        }
        assert_eq!(Outcome::Cancelled.result(), "cancelled");
    }
}
