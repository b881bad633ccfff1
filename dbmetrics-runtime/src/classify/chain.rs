//! [`classify`]: the class of any error, found in its `source()` chain.

use std::error::Error as StdError;

use super::classes::{ClassifyError, OTHER, classify_io};

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
        if let Some(class) = crate::drivers::errors::classify(e) {
            return class;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        current = e.source();
    }
    // A `#[error(transparent)]` wrapper shows its wrapped error's message but not the wrapped
    // error itself: the drivers' fixed texts name the sourceless ones.
    crate::drivers::errors::classify_message(&err.to_string()).unwrap_or(OTHER)
}

/// Classifies a `tokio_postgres::Error` (feature `deadpool`).
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub fn classify_postgres(err: &tokio_postgres::Error) -> &'static str {
    crate::drivers::classify_postgres(err)
}

/// Classifies a deadpool-postgres `PoolError` (feature `deadpool`).
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub fn classify_pool(err: &deadpool_postgres::PoolError) -> &'static str {
    crate::drivers::classify_pool(err)
}

#[cfg(test)]
mod tests {
    use super::*;

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
