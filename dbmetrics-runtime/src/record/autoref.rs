//! The outcome of a value a tracked function returned, chosen by autoref specialization (the
//! macros see the concrete return type; a generic function could not): `Err(e)` is an error
//! classified by [`ClassifyError`] when `e` implements it, else by its `source()` chain when it
//! is a `std::error::Error` (or lends one through `AsRef`, as `anyhow::Error` does), else
//! `other`; anything that is not a `Result` is a success.
//!
//! Used by macro-generated code as `(&&&&&Wrap(&value)).__dbmetrics_outcome()` with the traits
//! of this module in scope.

#![allow(missing_docs, missing_debug_implementations)]

use super::Outcome;
use crate::classify::{ClassifyError, OTHER, classify};

pub struct Wrap<'a, T: ?Sized>(pub &'a T);

pub trait ViaClassify {
    fn __dbmetrics_outcome(&self) -> Outcome;
}
impl<T, E: ClassifyError> ViaClassify for &&&&Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), E::error_type)
    }
}

pub trait ViaStdError {
    fn __dbmetrics_outcome(&self) -> Outcome;
}
impl<T, E: std::error::Error + 'static> ViaStdError for &&&Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |e| classify(e))
    }
}

/// `anyhow::Error`, `eyre::Report` and the like: not `std::error::Error` themselves, but they
/// lend one.
pub trait ViaAsRefError {
    fn __dbmetrics_outcome(&self) -> Outcome;
}
impl<T, E> ViaAsRefError for &&Wrap<'_, Result<T, E>>
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |e| classify(e.as_ref()))
    }
}

pub trait ViaAnyError {
    fn __dbmetrics_outcome(&self) -> Outcome;
}
impl<T, E> ViaAnyError for &Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |_| OTHER)
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

#[cfg(test)]
mod tests {
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
}
