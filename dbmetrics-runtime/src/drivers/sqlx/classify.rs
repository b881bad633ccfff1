//! The classes of `sqlx::Error`.

use std::error::Error as StdError;

use sqlx::error::DatabaseError;
use sqlx::postgres::PgDatabaseError;

use crate::classify::{
    CONNECTION, ClassifyError, OTHER, POOL_CLOSED, POOL_TIMEOUT, ROW_NOT_FOUND, classify_io,
    sqlstate_name,
};

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl ClassifyError for sqlx::Error {
    fn error_type(&self) -> &'static str {
        classify_sqlx(self)
    }
}

/// Classifies a `sqlx::Error`: the SQLSTATE of a server error, the pool's timeout and closing,
/// I/O and TLS as connection errors, `RowNotFound` as `row_not_found`.
pub(crate) fn classify_sqlx(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) => db.code().map_or(OTHER, |code| sqlstate_name(&code)),
        sqlx::Error::PoolTimedOut => POOL_TIMEOUT,
        sqlx::Error::PoolClosed => POOL_CLOSED,
        sqlx::Error::Io(io) => classify_io(io),
        sqlx::Error::Tls(_) => CONNECTION,
        sqlx::Error::RowNotFound => ROW_NOT_FOUND,
        // Protocol, configuration, decoding, encoding, column errors: not the database's.
        _ => OTHER,
    }
}

/// The class of `e` when it is one of sqlx's errors.
pub(crate) fn classify_dyn(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some(err) = e.downcast_ref::<sqlx::Error>() {
        return Some(classify_sqlx(err));
    }
    // `#[error(transparent)]` wrappers of `sqlx::Error::Database` expose its source: the boxed
    // server error (or the server error itself, when a wrapper unboxed it).
    if let Some(db) = e.downcast_ref::<Box<dyn DatabaseError>>() {
        return Some(db.code().map_or(OTHER, |code| sqlstate_name(&code)));
    }
    if let Some(db) = e.downcast_ref::<PgDatabaseError>() {
        return Some(sqlstate_name(db.code()));
    }
    None
}

/// sqlx's fixed texts of the errors that have no source (what a `#[error(transparent)]`
/// wrapper shows of them).
pub(crate) fn classify_message(message: &str) -> Option<&'static str> {
    match message {
        "pool timed out while waiting for an open connection" => Some(POOL_TIMEOUT),
        "attempted to acquire a connection on a closed pool" => Some(POOL_CLOSED),
        "no rows returned by a query that expected to return at least one row" => {
            Some(ROW_NOT_FOUND)
        }
        // The TLS error's source is whatever the TLS backend gave; the prefix is sqlx's.
        _ if message
            .starts_with("error occurred while attempting to establish a TLS connection") =>
        {
            Some(CONNECTION)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    #[derive(Debug)]
    struct Transparent(sqlx::Error);
    impl std::fmt::Display for Transparent {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            std::fmt::Display::fmt(&self.0, f)
        }
    }
    impl StdError for Transparent {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.0.source()
        }
    }

    #[test]
    fn pool_and_row_errors() {
        for (err, class) in [
            (sqlx::Error::PoolTimedOut, "pool_timeout"),
            (sqlx::Error::PoolClosed, "pool_closed"),
            (sqlx::Error::RowNotFound, "row_not_found"),
            (sqlx::Error::Protocol("bad".into()), "other"),
            (
                sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
                "connection_closed",
            ),
            (
                sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
                "connection",
            ),
            (sqlx::Error::Tls("handshake".into()), "connection"),
        ] {
            assert_eq!(err.error_type(), class, "{err}");
            assert_eq!(classify(&Transparent(err)), class);
        }
    }
}
