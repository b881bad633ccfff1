//! tokio-postgres, under deadpool-postgres and bb8-postgres (features `deadpool`, `bb8`): the
//! classes of `tokio_postgres::Error`, the health-check query on a `Client`, and transactions on
//! a `Client`.

use std::error::Error as StdError;
use std::future::Future;

use super::contract::ProbeFailure;
use crate::classify::{
    CONNECTION, CONNECTION_CLOSED, ClassifyError, OTHER, classify_io, sqlstate_name,
};
use crate::transaction::{BeginTransaction, OpenTransaction};

#[cfg_attr(docsrs, doc(cfg(any(feature = "deadpool", feature = "bb8"))))]
impl ClassifyError for tokio_postgres::Error {
    fn error_type(&self) -> &'static str {
        classify_postgres(self)
    }
}

/// Classifies a `tokio_postgres::Error`.
pub(crate) fn classify_postgres(err: &tokio_postgres::Error) -> &'static str {
    if let Some(code) = err.code() {
        return sqlstate_name(code.code());
    }
    if err.is_closed() {
        return CONNECTION_CLOSED;
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        source = e.source();
    }
    // tokio-postgres exposes no error kind; its Display names the kind without any
    // server-provided text for these cases.
    let text = err.to_string();
    if text.starts_with("error connecting to server")
        || text.starts_with("timeout waiting for server")
        || text.starts_with("error communicating with the server")
        || text.starts_with("error performing TLS handshake")
    {
        return CONNECTION;
    }
    OTHER
}

/// The class of `e` when it is a tokio-postgres error.
pub(super) fn classify_dyn(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        return Some(classify_postgres(pg));
    }
    // `#[error(transparent)]` wrappers of a driver error expose its source, the server's
    // error, directly.
    if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
        return Some(sqlstate_name(db.code().code()));
    }
    None
}

/// A closed connection has no source; its message is a fixed text of tokio-postgres.
pub(super) fn classify_message(message: &str) -> Option<&'static str> {
    (message == "connection closed").then_some(CONNECTION_CLOSED)
}

/// The first row of a simple query, as text.
pub(super) async fn first_row(
    client: &tokio_postgres::Client,
    sql: &'static str,
) -> Result<Vec<Option<String>>, ProbeFailure> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| ProbeFailure::new(classify_postgres(&e), &e))?;
    Ok(messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default())
}

macro_rules! begin_with {
    ($($client:ty => $begin:path;)+) => {$(
        #[cfg_attr(docsrs, doc(cfg(any(feature = "deadpool", feature = "bb8"))))]
        impl BeginTransaction for $client {
            type Error = tokio_postgres::Error;
            type Transaction<'a>
                = tokio_postgres::Transaction<'a>
            where
                Self: 'a;

            fn begin(
                &mut self,
            ) -> impl Future<Output = Result<Self::Transaction<'_>, tokio_postgres::Error>> + Send {
                $begin(self)
            }
        }
    )+};
}

begin_with! {
    tokio_postgres::Client => tokio_postgres::Client::transaction;
    tokio_postgres::Transaction<'_> => tokio_postgres::Transaction::transaction;
}

#[cfg_attr(docsrs, doc(cfg(any(feature = "deadpool", feature = "bb8"))))]
impl OpenTransaction for tokio_postgres::Transaction<'_> {
    type Error = tokio_postgres::Error;

    fn commit(self) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send {
        tokio_postgres::Transaction::commit(self)
    }

    fn rollback(self) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send {
        tokio_postgres::Transaction::rollback(self)
    }
}
