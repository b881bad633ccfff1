//! The outcome of a value a tracked function returned, chosen by autoref specialization (the
//! macros see the concrete return type; a generic function could not): `Err(e)` is an error
//! classified by [`ClassifyError`] when `e` implements it (a success when its
//! [`is_failure`](ClassifyError::is_failure) says it is not a failure), else by its `source()`
//! chain when it is a `std::error::Error` (or lends one through `AsRef`, as `anyhow::Error`
//! does), else `other`; anything that is not a `Result` is a success.
//!
//! Used by macro-generated code as `(&&&&&&Wrap(&value)).__dbmetrics_outcome()` with the traits
//! of this module in scope; `__dbmetrics_class()` is the class of a value that `error_if`
//! marked as failed (its own class when it has one, else `other`). [`test`] applies an
//! `ok_if`/`error_if` predicate.

#![allow(missing_docs, missing_debug_implementations)]

use super::Outcome;
use crate::classify::{ClassifyError, OTHER, classify};

pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// Applies an `ok_if`/`error_if` predicate to the returned value. The predicate is checked
/// against `&T` here, so that a wrong one is an error at the user's expression.
#[inline(always)]
pub fn test<T: ?Sized>(value: &T, predicate: impl FnOnce(&T) -> bool) -> bool {
    predicate(value)
}

/// The outcome of a value `error_if` marked as failed: its own class, else `other`.
#[inline]
pub fn forced_error(class: Option<&'static str>) -> Outcome {
    Outcome::Error {
        error_type: class.unwrap_or(OTHER),
    }
}

pub trait ViaClassify {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T, E: ClassifyError> ViaClassify for &&&&&Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_classified(self.0.as_ref())
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        self.0.as_ref().err().map(E::error_type)
    }
}

/// A value that is not a `Result` but classifies itself: a success unless `error_if` says
/// otherwise, and then of its own class.
pub trait ViaClassifyValue {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T: ClassifyError + ?Sized> ViaClassifyValue for &&&&Wrap<'_, T> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::Success
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        Some(self.0.error_type())
    }
}

pub trait ViaStdError {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T, E: std::error::Error + 'static> ViaStdError for &&&Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |e| classify(e))
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        self.0.as_ref().err().map(|e| classify(e))
    }
}

/// `anyhow::Error`, `eyre::Report` and the like: not `std::error::Error` themselves, but they
/// lend one.
pub trait ViaAsRefError {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T, E> ViaAsRefError for &&Wrap<'_, Result<T, E>>
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |e| classify(e.as_ref()))
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        self.0.as_ref().err().map(|e| classify(e.as_ref()))
    }
}

pub trait ViaAnyError {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T, E> ViaAnyError for &Wrap<'_, Result<T, E>> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::of_result(self.0.as_ref(), |_| OTHER)
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        None
    }
}

pub trait ViaValue {
    fn __dbmetrics_outcome(&self) -> Outcome;
    fn __dbmetrics_class(&self) -> Option<&'static str>;
}
impl<T: ?Sized> ViaValue for Wrap<'_, T> {
    #[inline]
    fn __dbmetrics_outcome(&self) -> Outcome {
        Outcome::Success
    }
    #[inline]
    fn __dbmetrics_class(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Mine {
        Broken,
        Missing,
    }
    impl crate::ClassifyError for Mine {
        fn error_type(&self) -> &'static str {
            match self {
                Mine::Broken => "mine",
                Mine::Missing => "missing",
            }
        }
        fn is_failure(&self) -> bool {
            matches!(self, Mine::Broken)
        }
    }

    #[test]
    #[allow(clippy::needless_borrow)]
    fn outcome_specialization() {
        let ok: Result<u8, Mine> = Ok(1);
        assert_eq!((&&&&&&Wrap(&ok)).__dbmetrics_outcome(), Outcome::Success);
        assert_eq!((&&&&&&Wrap(&ok)).__dbmetrics_class(), None);
        let mine: Result<u8, Mine> = Err(Mine::Broken);
        assert_eq!(
            (&&&&&&Wrap(&mine)).__dbmetrics_outcome(),
            Outcome::Error { error_type: "mine" }
        );
        // not a failure: a success, but its class is known when `error_if` asks
        let missing: Result<u8, Mine> = Err(Mine::Missing);
        assert_eq!(
            (&&&&&&Wrap(&missing)).__dbmetrics_outcome(),
            Outcome::Success
        );
        assert_eq!((&&&&&&Wrap(&missing)).__dbmetrics_class(), Some("missing"));
        // a bare value that classifies itself
        assert_eq!(
            (&&&&&&Wrap(&Mine::Broken)).__dbmetrics_outcome(),
            Outcome::Success
        );
        assert_eq!(
            (&&&&&&Wrap(&Mine::Broken)).__dbmetrics_class(),
            Some("mine")
        );
        let io: Result<(), std::fmt::Error> = Err(std::fmt::Error);
        assert_eq!(
            (&&&&&&Wrap(&io)).__dbmetrics_outcome(),
            Outcome::Error {
                error_type: "other"
            }
        );
        let s: Result<(), String> = Err("x".into());
        assert_eq!(
            (&&&&&&Wrap(&s)).__dbmetrics_outcome(),
            Outcome::Error {
                error_type: "other"
            }
        );
        let v: Option<u8> = None;
        assert_eq!((&&&&&&Wrap(&v)).__dbmetrics_outcome(), Outcome::Success);
        assert_eq!((&&&&&&Wrap(&v)).__dbmetrics_class(), None);
        assert_eq!((&&&&&&Wrap(&())).__dbmetrics_outcome(), Outcome::Success);
        assert!(test(&v, Option::is_none));
        assert_eq!(
            forced_error(None),
            Outcome::Error {
                error_type: "other"
            }
        );
    }
}
