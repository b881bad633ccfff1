//! `transaction::run` on sqlx connections: `PgConnection`, `PoolConnection<Postgres>`, a
//! `TrackedConnection<PgPool>` and an open `sqlx::Transaction` (the nested one is a savepoint).

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::TrackedConnection;
use crate::transaction::{BeginTransaction, OpenTransaction};

macro_rules! begin_on_connection {
    ($($client:ty),+ $(,)?) => {$(
        #[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
        impl BeginTransaction for $client {
            type Error = sqlx::Error;
            type Transaction<'a>
                = Transaction<'a, Postgres>
            where
                Self: 'a;

            fn begin(
                &mut self,
            ) -> impl Future<Output = Result<Transaction<'_, Postgres>, sqlx::Error>> + Send {
                // sqlx counts the depth on the connection: BEGIN, or SAVEPOINT inside one.
                let conn: &mut PgConnection = self;
                Connection::begin(conn)
            }
        }
    )+};
}

begin_on_connection!(
    PgConnection,
    PoolConnection<Postgres>,
    TrackedConnection<PgPool>,
    Transaction<'_, Postgres>,
);

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl OpenTransaction for Transaction<'_, Postgres> {
    type Error = sqlx::Error;

    fn commit(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        Transaction::commit(self)
    }

    fn rollback(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        Transaction::rollback(self)
    }
}
