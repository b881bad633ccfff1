//! The classes: every `error_type` value dbmetrics produces itself, the SQLSTATE condition
//! names, I/O errors, and [`ClassifyError`] for types that know their class.

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
/// A query that expected a row found none (sqlx's `RowNotFound`).
pub const ROW_NOT_FOUND: &str = "row_not_found";
/// The tracked body panicked.
pub const PANIC: &str = "panic";
/// Anything else (conversion errors, user errors that do not classify themselves).
pub const OTHER: &str = "other";

/// The condition name of a SQLSTATE code (`"23505"` → `"unique_violation"`). An unknown code
/// falls back to its class (`"23xyz"` → `"integrity_constraint_violation"`), then to `other`.
pub fn sqlstate_name(code: &str) -> &'static str {
    if let Some(name) = super::sqlstate::condition_name(code) {
        return name;
    }
    if let Some(class) = code.get(..2) {
        let mut class_code = [b'0'; 5];
        class_code[..2].copy_from_slice(class.as_bytes());
        if let Some(name) = std::str::from_utf8(&class_code)
            .ok()
            .and_then(super::sqlstate::condition_name)
        {
            return name;
        }
    }
    OTHER
}

/// The SQLSTATE of a PostgreSQL condition name, the inverse of [`sqlstate_name`]
/// (`"undefined_table"` → `"42P01"`); `None` for dbmetrics' own classes (`connection`,
/// `pool_timeout`, `other`, ...) and for anything else that is not a server error's name.
///
/// Traces and the OpenTelemetry naming give it as `db.response.status_code`. It is exact for
/// every code of PostgreSQL's table but five whose condition name PostgreSQL gives to two codes
/// (`string_data_right_truncation`, `null_value_not_allowed` and three of class 2F/38, where the
/// first listed error code is given), and for a code missing from the table, which
/// [`sqlstate_name`] names by its class (`"23xyz"` → `"23000"`).
pub fn sqlstate_code(error_type: &str) -> Option<&'static str> {
    super::sqlstate::condition_code(error_type)
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

/// An error type that knows its `error_type` label.
///
/// Implement it for your repository's error enum so that `#[track_query]` reports the right
/// class; delegate to [`classify`](crate::classify::classify) for the variants that wrap a driver error:
///
/// ```
/// # extern crate dbmetrics_runtime as dbmetrics;
/// use dbmetrics::ClassifyError;
/// use dbmetrics::classify::classify;
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
///
/// # Errors that are not database failures
///
/// A `NotFound` or a validation error is an `Err` of the repository, but not a failure of the
/// database call: it should not feed the error ratio. Say so once, for every call that returns
/// it, with [`is_failure`](ClassifyError::is_failure); such a call records `result="success"`
/// (the attribute, the tracker, the middleware and `transaction::run` alike):
///
/// ```
/// # extern crate dbmetrics_runtime as dbmetrics;
/// # use dbmetrics::ClassifyError;
/// # #[derive(Debug)]
/// # enum RepoError { Db(tokio_postgres::Error), NotFound }
/// impl ClassifyError for RepoError {
///     fn error_type(&self) -> &'static str {
///         match self {
///             RepoError::Db(e) => dbmetrics::classify::classify(e),
///             RepoError::NotFound => "not_found",
///         }
///     }
///
///     fn is_failure(&self) -> bool {
///         !matches!(self, RepoError::NotFound)
///     }
/// }
/// ```
///
/// For one method only, `#[track_query(select, "items", ok_if = ...)]` decides per call site.
pub trait ClassifyError {
    /// The `error_type` label for this error.
    fn error_type(&self) -> &'static str;

    /// Whether this error is a failure of the database call, recorded as `result="error"`
    /// (the default: `true`). Return `false` for errors that are answers, not failures (a row
    /// that does not exist, input that does not validate): the call is then recorded as
    /// `result="success"`, with no `errors_total` sample.
    fn is_failure(&self) -> bool {
        true
    }
}

impl ClassifyError for std::io::Error {
    fn error_type(&self) -> &'static str {
        classify_io(self)
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

    #[test]
    fn sqlstate_codes_invert_the_names() {
        assert_eq!(sqlstate_code("unique_violation"), Some("23505"));
        assert_eq!(sqlstate_code("undefined_table"), Some("42P01"));
        assert_eq!(sqlstate_code("query_canceled"), Some("57014"));
        assert_eq!(sqlstate_code("string_data_right_truncation"), Some("22001"));
        for own in [
            CONNECTION,
            CONNECTION_CLOSED,
            POOL_TIMEOUT,
            POOL_CLOSED,
            PANIC,
            OTHER,
        ] {
            assert_eq!(sqlstate_code(own), None, "{own}");
        }
        assert_eq!(sqlstate_code("warning"), None);
    }
}
