//! sqlx (feature `sqlx`, sqlx 0.8 with `runtime-tokio` and `postgres`): `sqlx::PgPool`, its
//! `PoolConnection<Postgres>`, `sqlx::Error` and `sqlx::Transaction`.
//!
//! | gauge | sqlx `PgPool` |
//! |---|---|
//! | `connections_active` | `size() - num_idle()` |
//! | `connections_idle` | `num_idle()` |
//! | `connections_open` | `size()`: open connections, idle or checked out (and ones being opened) |
//! | `connections_max` | `options().get_max_connections()` |
//! | `connections_overflow` | no sqlx number: the callers inside [`TrackedPool::get`](crate::TrackedPool::get) (and the tracked pool's executor); `pool.acquire()` callers are not seen |
//!
//! sqlx does not say whether a checkout got a new connection: `connections_created_total` is
//! not published for sqlx pools. A connection a cancelled call left is checked and, busy,
//! closed without a cancel request (sqlx has none: see `cleanup.rs`). sqlx has no weak pool handle: the poller holds a clone of the
//! pool until it is closed (`PgPool::close`) or the last `DatabaseMetrics` handle is dropped.

mod classify;
mod cleanup;
mod executor;
mod health;
mod stream;
mod transaction;

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::contract::{MonitoredPool, sealed};
use crate::pool::{Cleanup, PoolStatus, TimeoutStage};

pub(crate) use classify::{classify_dyn, classify_message};

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl sealed::Sealed for PgPool {}

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl MonitoredPool for PgPool {
    type Connection = PoolConnection<Postgres>;
    type Target = PgConnection;
    type Error = sqlx::Error;
    /// sqlx has no weak pool handle.
    type Weak = PgPool;

    fn downgrade(&self) -> PgPool {
        self.clone()
    }

    fn upgrade(weak: &PgPool) -> Option<Self> {
        Some(weak.clone())
    }

    fn id(&self) -> usize {
        // The options live inside the pool's shared state: their address identifies the pool.
        std::ptr::from_ref(self.options()) as usize
    }

    fn status(&self) -> Option<PoolStatus> {
        if self.is_closed() {
            return None;
        }
        Some(PoolStatus {
            open: self.size() as usize,
            idle: self.num_idle(),
            max: self.options().get_max_connections() as usize,
            waiting: None,
        })
    }

    fn checkout(&self) -> impl Future<Output = Result<Self::Connection, sqlx::Error>> + Send {
        self.acquire()
    }

    fn target(connection: &PoolConnection<Postgres>) -> &PgConnection {
        connection
    }

    fn target_mut(connection: &mut PoolConnection<Postgres>) -> &mut PgConnection {
        connection
    }

    const COUNTS_CREATED: bool = false;
    /// sqlx has no cancel request (see `cleanup.rs`).
    const DISCARDS: bool = true;
    const CANCELS_ON_SERVER: bool = false;

    fn is_new(_: &PoolConnection<Postgres>) -> bool {
        false
    }

    fn timeout_stage(error: &sqlx::Error) -> Option<TimeoutStage> {
        // sqlx's acquire timeout covers waiting for a slot and opening a connection alike.
        matches!(error, sqlx::Error::PoolTimedOut).then_some(TimeoutStage::Wait)
    }

    fn error_type(error: &sqlx::Error) -> &'static str {
        classify::classify_sqlx(error)
    }

    fn release_unfinished(connection: PoolConnection<Postgres>, cleanup: Cleanup) {
        cleanup.start(connection);
    }
}
