//! A sqlx connection that a cancelled call left (see `pool/cleanup.rs`): checked with
//! `Connection::ping`, taken out of the pool with `PoolConnection::detach` (the pool may open a
//! replacement) when busy, and closed. sqlx keeps the backend's cancel key to itself, so no
//! cancel request is sent: the statement runs on until the server notices that its client is
//! gone (at once with `client_connection_check_interval` set, else when it sends its result).

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

use crate::pool::Unfinished;

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl Unfinished for PoolConnection<Postgres> {
    type Detached = PgConnection;
    const DETACHES: bool = true;

    async fn probe(&mut self) -> bool {
        let conn: &mut PgConnection = self;
        conn.ping().await.is_ok()
    }

    fn detach(self) -> PgConnection {
        PoolConnection::detach(self)
    }

    fn cancel(_: &mut PgConnection) -> impl Future<Output = bool> + Send + '_ {
        std::future::ready(false)
    }
}
