//! bb8 (feature `bb8`, bb8 0.9): gauges and tracked checkouts for a `bb8::Pool<M>` of any
//! manager; health checks and transactions for bb8-postgres'
//! `PostgresConnectionManager<Tls>`, whose errors are `tokio_postgres::Error`s.
//!
//! | gauge | bb8 `Pool` |
//! |---|---|
//! | `connections_active` | `state().connections - state().idle_connections` |
//! | `connections_idle` | `state().idle_connections` |
//! | `connections_open` | `state().connections` (includes connections being opened) |
//! | `connections_max` | `config().max_size` |
//! | `connections_overflow` | the callers inside [`TrackedPool::get`](crate::TrackedPool::get); bb8's `statistics.pending_gets()` is not used (it drifts: a cancelled get is never completed); `pool.get()` callers are not seen |
//!
//! bb8 does not say whether a checkout got a new connection: `connections_created_total` is not
//! published for bb8 pools. bb8 has no weak pool handle and no `close`: the poller holds a clone
//! of the pool until the last `DatabaseMetrics` handle is dropped. bb8 cannot take a connection
//! out of its pool, so health checks run on a dedicated connection (`Pool::dedicated_connection`,
//! the manager's configuration), closed after the check.

use std::error::Error as StdError;
use std::future::Future;

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Socket};

use super::contract::{HealthCheckable, MonitoredPool, Probe, ProbeFailure, sealed};
use super::postgres::{classify_postgres, first_row};
use crate::TrackedConnection;
use crate::classify::{ClassifyError, POOL_TIMEOUT};
use crate::pool::{PoolStatus, TimeoutStage};
use crate::transaction::BeginTransaction;

#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<M: ManageConnection> sealed::Sealed for Pool<M> {}

#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<M> MonitoredPool for Pool<M>
where
    M: ManageConnection,
    M::Error: StdError + Sync,
{
    type Connection = PooledConnection<'static, M>;
    type Target = M::Connection;
    type Error = RunError<M::Error>;
    /// bb8 has no weak pool handle.
    type Weak = Pool<M>;

    fn downgrade(&self) -> Pool<M> {
        self.clone()
    }

    fn upgrade(weak: &Pool<M>) -> Option<Self> {
        Some(weak.clone())
    }

    fn id(&self) -> usize {
        shared_state_address(&format!("{self:?}"))
    }

    fn status(&self) -> Option<PoolStatus> {
        let state = self.state();
        Some(PoolStatus {
            open: state.connections as usize,
            idle: state.idle_connections as usize,
            max: self.config().max_size as usize,
            waiting: None,
        })
    }

    fn checkout(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send {
        self.get_owned()
    }

    fn target(connection: &Self::Connection) -> &M::Connection {
        connection
    }

    fn target_mut(connection: &mut Self::Connection) -> &mut M::Connection {
        connection
    }

    const COUNTS_CREATED: bool = false;

    fn is_new(_: &PooledConnection<'static, M>) -> bool {
        false
    }

    fn timeout_stage(error: &RunError<M::Error>) -> Option<TimeoutStage> {
        // bb8's connection timeout covers waiting for a slot and opening a connection alike.
        matches!(error, RunError::TimedOut).then_some(TimeoutStage::Wait)
    }
}

/// bb8 exposes no identity for a pool, but its `Debug` shows the address of the state its
/// clones share: `Pool(PoolInner(0x...))`. 0 if that ever changes (every pool then looks the
/// same to the registry of monitored pools; the unit tests catch it first).
fn shared_state_address(debug: &str) -> usize {
    debug
        .split_once("0x")
        .and_then(|(_, rest)| {
            let hex = rest.split(|c: char| !c.is_ascii_hexdigit()).next()?;
            usize::from_str_radix(hex, 16).ok()
        })
        .unwrap_or(0)
}

/// bb8-postgres' pool error. Another manager's `RunError<E>` classifies through
/// [`classify`](crate::classify::classify), which finds `E` as its source.
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl ClassifyError for RunError<tokio_postgres::Error> {
    fn error_type(&self) -> &'static str {
        match self {
            RunError::TimedOut => POOL_TIMEOUT,
            RunError::User(e) => classify_postgres(e),
        }
    }
}

/// The class of `e` when it is bb8-postgres' pool error (any other manager's `RunError` is
/// found through its source, the manager's error, or its fixed timeout text).
pub(super) fn classify_dyn(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    match e.downcast_ref::<RunError<tokio_postgres::Error>>()? {
        RunError::TimedOut => Some(POOL_TIMEOUT),
        RunError::User(e) => Some(classify_postgres(e)),
    }
}

/// bb8's fixed text of a pool timeout (what a `#[error(transparent)]` wrapper shows of it).
pub(super) fn classify_message(message: &str) -> Option<&'static str> {
    (message == "Timed out in bb8").then_some(POOL_TIMEOUT)
}

/// A connection held by a health check: always dedicated (see the module documentation).
#[doc(hidden)]
#[derive(Debug)]
pub struct ProbeConnection(Client);

#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<Tls> HealthCheckable for Pool<PostgresConnectionManager<Tls>>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    <Tls as MakeTlsConnect<Socket>>::Stream: Send + Sync,
    <Tls as MakeTlsConnect<Socket>>::TlsConnect: Send,
    <<Tls as MakeTlsConnect<Socket>>::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type ProbeConnection = ProbeConnection;

    async fn probe(&self) -> Result<Probe<ProbeConnection>, ProbeFailure> {
        match self.dedicated_connection().await {
            Ok(client) => Ok(Probe {
                connection: ProbeConnection(client),
                dedicated: true,
            }),
            Err(e) => Err(ProbeFailure::new(classify_postgres(&e), &e)),
        }
    }

    fn first_row<'c>(
        connection: &'c mut ProbeConnection,
        sql: &'static str,
    ) -> impl Future<Output = Result<Vec<Option<String>>, ProbeFailure>> + Send + 'c {
        first_row(&connection.0, sql)
    }

    fn discard(connection: ProbeConnection) {
        drop(connection);
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<Tls> BeginTransaction for TrackedConnection<Pool<PostgresConnectionManager<Tls>>>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    <Tls as MakeTlsConnect<Socket>>::Stream: Send + Sync,
    <Tls as MakeTlsConnect<Socket>>::TlsConnect: Send,
    <<Tls as MakeTlsConnect<Socket>>::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Error = tokio_postgres::Error;
    type Transaction<'a>
        = tokio_postgres::Transaction<'a>
    where
        Self: 'a;

    fn begin(
        &mut self,
    ) -> impl Future<Output = Result<Self::Transaction<'_>, tokio_postgres::Error>> + Send {
        let client: &mut Client = self;
        client.transaction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    #[test]
    fn the_debug_text_gives_the_shared_address() {
        assert_eq!(shared_state_address("Pool(PoolInner(0x5f3a10))"), 0x5f3a10);
        assert_eq!(shared_state_address("Pool"), 0);
    }

    #[test]
    fn timeouts_and_user_errors() {
        let timeout: RunError<tokio_postgres::Error> = RunError::TimedOut;
        assert_eq!(timeout.error_type(), "pool_timeout");
        assert_eq!(classify(&timeout), "pool_timeout");
    }
}
