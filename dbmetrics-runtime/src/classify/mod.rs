//! Error classification: every error becomes one bounded `error_type` label value.
//!
//! PostgreSQL errors are named by their SQLSTATE condition (`unique_violation`,
//! `serialization_failure`, ...; the full table of PostgreSQL's Appendix A). Errors without a
//! SQLSTATE become `connection_closed`, `connection`, `pool_timeout`, `pool_closed`, or `other`.
//! The label never holds SQL text, parameter values or driver messages.

use std::error::Error as StdError;

mod sqlstate;

/// The connection was closed (by the server, a proxy, or the client side shutting down; also an
/// I/O error that says so: end of stream, reset, aborted, broken pipe).
pub const CONNECTION_CLOSED: &str = "connection_closed";
/// Could not connect or talk to the server (connection refused, any other I/O error than the
/// peer closing the connection, connect timeout, TLS).
pub const CONNECTION: &str = "connection";
/// The pool did not hand out a connection in time (any stage: wait, create, recycle).
pub const POOL_TIMEOUT: &str = "pool_timeout";
/// The pool was closed.
pub const POOL_CLOSED: &str = "pool_closed";
/// The tracked body panicked.
pub const PANIC: &str = "panic";
/// Anything else (conversion errors, user errors that do not classify themselves).
pub const OTHER: &str = "other";

/// An error type that knows its `error_type` label.
///
/// Implement it for your repository's error enum so that `#[track_query]` reports the right
/// class; delegate to [`classify`] for the variants that wrap a driver error:
///
/// ```
/// # extern crate dbmetrics_runtime as dbmetrics;
/// use dbmetrics::classify::{classify, ClassifyError};
///
/// #[derive(Debug)]
/// enum RepoError {
///     Db(tokio_postgres::Error),
///     NotFound,
/// }
///
/// impl ClassifyError for RepoError {
///     fn error_type(&self) -> &'static str {
///         match self {
///             RepoError::Db(e) => classify(e),
///             RepoError::NotFound => "not_found",
///         }
///     }
/// }
/// ```
///
/// Error types that do not implement it are still classified: when they implement
/// `std::error::Error`, their `source()` chain is searched for a `tokio_postgres::Error`, a
/// deadpool `PoolError` or an `io::Error`; otherwise the class is `other`.
///
/// The returned value is a label value: keep it to a small, fixed set of `snake_case` words.
pub trait ClassifyError {
    /// The `error_type` label for this error.
    fn error_type(&self) -> &'static str;
}

impl ClassifyError for std::io::Error {
    fn error_type(&self) -> &'static str {
        classify_io(self)
    }
}

impl ClassifyError for Box<dyn StdError + Send + Sync + 'static> {
    fn error_type(&self) -> &'static str {
        classify(&**self)
    }
}

impl ClassifyError for Box<dyn StdError + 'static> {
    fn error_type(&self) -> &'static str {
        classify(&**self)
    }
}

/// Classifies any error: the first driver error (for deadpool-postgres: a
/// `tokio_postgres::Error`, its `DbError`, a `PoolError`) or `io::Error` in its `source()`
/// chain decides; else `other`.
///
/// A `#[error(transparent)]` wrapper hides the wrapped error itself from the chain (it shows
/// the wrapped error's source instead): server errors are still found through their `DbError`;
/// pool timeouts, a closed pool and a closed connection, which have no source, are recognised
/// by their fixed message.
pub fn classify(err: &(dyn StdError + 'static)) -> &'static str {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(class) = crate::drivers::classify(e) {
            return class;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        current = e.source();
    }
    // A `#[error(transparent)]` wrapper shows its wrapped error's message but not the wrapped
    // error itself: the drivers' fixed texts name the sourceless ones.
    crate::drivers::classify_message(&err.to_string()).unwrap_or(OTHER)
}

/// The condition name of a SQLSTATE code (`"23505"` → `"unique_violation"`). An unknown code
/// falls back to its class (`"23xyz"` → `"integrity_constraint_violation"`), then to `other`.
pub fn sqlstate_name(code: &str) -> &'static str {
    if let Some(name) = sqlstate::condition_name(code) {
        return name;
    }
    if let Some(class) = code.get(..2) {
        let mut class_code = [b'0'; 5];
        class_code[..2].copy_from_slice(class.as_bytes());
        if let Some(name) = std::str::from_utf8(&class_code)
            .ok()
            .and_then(sqlstate::condition_name)
        {
            return name;
        }
    }
    OTHER
}

/// Classifies a `tokio_postgres::Error` (feature `deadpool`).
#[cfg(feature = "deadpool")]
pub fn classify_postgres(err: &tokio_postgres::Error) -> &'static str {
    crate::drivers::classify_postgres(err)
}

/// Classifies a deadpool-postgres `PoolError` (feature `deadpool`).
#[cfg(feature = "deadpool")]
pub fn classify_pool(err: &deadpool_postgres::PoolError) -> &'static str {
    crate::drivers::classify_pool(err)
}

/// Classifies an I/O error under a database call: the peer closing the connection
/// (`UnexpectedEof`, `ConnectionReset`, `ConnectionAborted`, `BrokenPipe`) is
/// `connection_closed`, anything else `connection`. The same wherever the I/O error is found:
/// inside a `tokio_postgres::Error`, or directly in a `source()` chain (a
/// `#[error(transparent)]` wrapper of a driver error shows its I/O source, not the driver error).
pub fn classify_io(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => CONNECTION_CLOSED,
        _ => CONNECTION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_names() {
        assert_eq!(sqlstate_name("23505"), "unique_violation");
        assert_eq!(sqlstate_name("42P01"), "undefined_table");
        assert_eq!(sqlstate_name("22012"), "division_by_zero");
        assert_eq!(sqlstate_name("40001"), "serialization_failure");
        assert_eq!(sqlstate_name("40P01"), "deadlock_detected");
        assert_eq!(sqlstate_name("57014"), "query_canceled");
        assert_eq!(sqlstate_name("57P01"), "admin_shutdown");
        // unknown code in a known class
        assert_eq!(sqlstate_name("23999"), "integrity_constraint_violation");
        assert_eq!(sqlstate_name("ZZ999"), "other");
        assert_eq!(sqlstate_name(""), "other");
        assert_eq!(sqlstate_name("é"), "other");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    /// What `#[error(transparent)] Db(tokio_postgres::Error)` shows of a driver I/O error: the
    /// wrapper's source is the I/O error itself.
    #[derive(Debug)]
    struct TransparentIo(std::io::Error);
    impl std::fmt::Display for TransparentIo {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error communicating with the server")
        }
    }
    impl StdError for TransparentIo {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn io_errors_get_one_class_wherever_they_are_found() {
        use std::io::{Error, ErrorKind};
        for (kind, class) in [
            (ErrorKind::UnexpectedEof, "connection_closed"),
            (ErrorKind::ConnectionReset, "connection_closed"),
            (ErrorKind::ConnectionAborted, "connection_closed"),
            (ErrorKind::BrokenPipe, "connection_closed"),
            (ErrorKind::ConnectionRefused, "connection"),
            (ErrorKind::TimedOut, "connection"),
            (ErrorKind::Other, "connection"),
        ] {
            assert_eq!(classify_io(&Error::from(kind)), class, "{kind:?}");
            assert_eq!(
                classify(&TransparentIo(Error::from(kind))),
                class,
                "{kind:?}"
            );
            assert_eq!(classify(&Wrapper(Error::from(kind))), class, "{kind:?}");
            assert_eq!(Error::from(kind).error_type(), class, "{kind:?}");
        }
    }

    #[test]
    fn source_chain_is_searched() {
        let e = Wrapper(std::io::Error::other("boom"));
        assert_eq!(classify(&e), "connection");
        let plain: Box<dyn StdError + Send + Sync> = "nope".into();
        assert_eq!(plain.error_type(), "other");
    }
}
