//! deadpool-postgres (feature `deadpool`, the default): `deadpool_postgres::Pool`, its
//! `Object`s, `PoolError` and the `tokio_postgres` errors and transactions under them.
//!
//! | gauge | deadpool `Status` |
//! |---|---|
//! | `connections_active` | `size - available`: connections checked out (or being recycled for a caller) |
//! | `connections_idle` | `available`: open connections nobody holds |
//! | `connections_open` | `size`: open connections, idle or checked out |
//! | `connections_max` | `max_size`: the configured maximum |
//! | `connections_overflow` | `waiting`: callers beyond the open connections (queued for a slot, or waiting while a new connection is opened for them) |
//!
//! A new connection is one that deadpool's `Object::metrics` says was never recycled.
//!
//! A connection left by a cancelled call is checked with `simple_query("")`, taken out of the
//! pool with `Object::take` (which frees its slot) when busy, and its statement cancelled with
//! tokio-postgres' `CancelToken::cancel_query(NoTls)`: the pool's TLS connector cannot be read
//! back from deadpool, so with `sslmode=require` the cancel request fails (the connection is
//! still closed, not returned).

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deadpool::managed::Manager as _;
use deadpool_postgres::{
    ClientWrapper, Object, Pool, PoolError, Status, TimeoutType, Timeouts, WeakPool,
};

use super::contract::{HealthCheckable, MonitoredPool, Probe, ProbeFailure, sealed};
use super::postgres::{self, classify_postgres, first_row};
use crate::TrackedConnection;
use crate::classify::{ClassifyError, OTHER, POOL_CLOSED, POOL_TIMEOUT};
use crate::pool::{Cleanup, PoolStatus, TimeoutStage, Unfinished};
use crate::transaction::{BeginTransaction, OpenTransaction};

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl sealed::Sealed for Pool {}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl MonitoredPool for Pool {
    type Connection = Object;
    type Target = Object;
    type Error = PoolError;
    type Weak = WeakPool;

    fn downgrade(&self) -> WeakPool {
        self.weak()
    }

    fn upgrade(weak: &WeakPool) -> Option<Self> {
        weak.upgrade()
    }

    fn id(&self) -> usize {
        // The manager lives inside the pool's shared state: its address identifies the pool.
        std::ptr::from_ref(self.manager()) as usize
    }

    fn status(&self) -> Option<PoolStatus> {
        if self.is_closed() {
            return None;
        }
        Some(pool_status(self.status()))
    }

    fn checkout(&self) -> impl Future<Output = Result<Object, PoolError>> + Send {
        self.get()
    }

    fn target(connection: &Object) -> &Object {
        connection
    }

    fn target_mut(connection: &mut Object) -> &mut Object {
        connection
    }

    const COUNTS_CREATED: bool = true;
    const DISCARDS: bool = true;
    const CANCELS_ON_SERVER: bool = true;

    fn is_new(connection: &Object) -> bool {
        let metrics = Object::metrics(connection);
        metrics.recycle_count == 0 && metrics.recycled.is_none()
    }

    fn timeout_stage(error: &PoolError) -> Option<TimeoutStage> {
        match error {
            PoolError::Timeout(TimeoutType::Wait) => Some(TimeoutStage::Wait),
            PoolError::Timeout(TimeoutType::Create) => Some(TimeoutStage::Create),
            PoolError::Timeout(TimeoutType::Recycle) => Some(TimeoutStage::Recycle),
            _ => None,
        }
    }

    fn error_type(error: &PoolError) -> &'static str {
        classify_pool(error)
    }

    fn release_unfinished(connection: Object, cleanup: Cleanup) {
        cleanup.start(connection);
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl Unfinished for Object {
    type Detached = ClientWrapper;
    const DETACHES: bool = true;

    fn probe(&mut self) -> impl Future<Output = bool> + Send + '_ {
        postgres::answers(self)
    }

    fn detach(self) -> ClientWrapper {
        Object::take(self)
    }

    fn cancel(client: &mut ClientWrapper) -> impl Future<Output = bool> + Send + '_ {
        postgres::cancel(client)
    }
}

fn pool_status(status: Status) -> PoolStatus {
    PoolStatus {
        open: status.size,
        idle: status.available,
        max: status.max_size,
        waiting: Some(status.waiting),
    }
}

/// A connection held by a health check.
#[doc(hidden)]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
#[derive(Debug)]
pub enum ProbeConnection {
    /// From the pool.
    Pooled(Object),
    /// Opened for the check, outside the pool.
    Dedicated(ClientWrapper),
}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl HealthCheckable for Pool {
    type ProbeConnection = ProbeConnection;

    async fn probe(&self) -> Result<Probe<ProbeConnection>, ProbeFailure> {
        let no_wait = Timeouts {
            wait: Some(Duration::ZERO),
            create: None,
            recycle: None,
        };
        match self.timeout_get(&no_wait).await {
            Ok(object) => Ok(Probe {
                connection: ProbeConnection::Pooled(object),
                dedicated: false,
            }),
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                let manager = self.manager();
                match manager.create().await {
                    Err(e) => Err(ProbeFailure::new(classify_postgres(&e), &e)),
                    Ok(mut client) => {
                        // Not the pool's: keep it out of the manager's statement-cache registry.
                        manager.detach(&mut client);
                        Ok(Probe {
                            connection: ProbeConnection::Dedicated(client),
                            dedicated: true,
                        })
                    }
                }
            }
            Err(e) => Err(ProbeFailure::new(classify_pool(&e), &e)),
        }
    }

    fn first_row<'c>(
        connection: &'c mut ProbeConnection,
        sql: &'static str,
    ) -> impl Future<Output = Result<Vec<Option<String>>, ProbeFailure>> + Send + 'c {
        let client: &tokio_postgres::Client = match connection {
            ProbeConnection::Pooled(object) => object,
            ProbeConnection::Dedicated(client) => client,
        };
        first_row(client, sql)
    }

    fn discard(connection: ProbeConnection) {
        match connection {
            ProbeConnection::Pooled(object) => drop(Object::take(object)),
            ProbeConnection::Dedicated(client) => drop(client),
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl ClassifyError for PoolError {
    fn error_type(&self) -> &'static str {
        classify_pool(self)
    }
}

/// Classifies a deadpool-postgres `PoolError`.
pub(crate) fn classify_pool(err: &PoolError) -> &'static str {
    match err {
        PoolError::Timeout(_) => POOL_TIMEOUT,
        PoolError::Closed => POOL_CLOSED,
        PoolError::Backend(e) => classify_postgres(e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => classify_postgres(e),
        _ => OTHER,
    }
}

/// The class of `e` when it is one of this driver's errors.
pub(super) fn classify_dyn(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    e.downcast_ref::<PoolError>().map(classify_pool)
}

/// Pool timeouts and a closed pool have no source; their messages are fixed texts of deadpool
/// (never server or user data).
pub(super) fn classify_message(message: &str) -> Option<&'static str> {
    match message {
        "Timeout occurred while waiting for a slot to become available"
        | "Timeout occurred while creating a new object"
        | "Timeout occurred while recycling an object" => Some(POOL_TIMEOUT),
        "Pool has been closed" => Some(POOL_CLOSED),
        _ => None,
    }
}

macro_rules! begin_with {
    ($($client:ty => $transaction:ty, $begin:path;)+) => {$(
        #[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
        impl BeginTransaction for $client {
            type Error = tokio_postgres::Error;
            type Transaction<'a>
                = $transaction
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
    ClientWrapper => deadpool_postgres::Transaction<'a>, ClientWrapper::transaction;
    Object => deadpool_postgres::Transaction<'a>, ClientWrapper::transaction;
    deadpool_postgres::Transaction<'_> => deadpool_postgres::Transaction<'a>, deadpool_postgres::Transaction::transaction;
}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl BeginTransaction for TrackedConnection<Pool> {
    type Error = tokio_postgres::Error;
    type Transaction<'a>
        = deadpool_postgres::Transaction<'a>
    where
        Self: 'a;

    fn begin(
        &mut self,
    ) -> impl Future<Output = Result<Self::Transaction<'_>, tokio_postgres::Error>> + Send {
        ClientWrapper::transaction(self)
    }

    fn unfinished_flag(&mut self) -> Option<Arc<AtomicBool>> {
        Some(TrackedConnection::unfinished_flag(self))
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl OpenTransaction for deadpool_postgres::Transaction<'_> {
    type Error = tokio_postgres::Error;

    fn commit(self) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send {
        deadpool_postgres::Transaction::commit(self)
    }

    fn rollback(self) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send {
        deadpool_postgres::Transaction::rollback(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    #[test]
    fn pool_errors() {
        assert_eq!(
            classify_pool(&PoolError::Timeout(TimeoutType::Wait)),
            "pool_timeout"
        );
        assert_eq!(classify_pool(&PoolError::Closed), "pool_closed");
        assert_eq!(classify_pool(&PoolError::NoRuntimeSpecified), "other");
    }

    #[derive(Debug)]
    struct Transparent(PoolError);
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
    fn transparent_wrappers_of_sourceless_errors() {
        let t = Transparent(PoolError::Timeout(TimeoutType::Wait));
        assert_eq!(classify(&t), "pool_timeout");
        assert_eq!(classify(&Transparent(PoolError::Closed)), "pool_closed");
        assert_eq!(
            classify(&Transparent(PoolError::NoRuntimeSpecified)),
            "other"
        );
    }

    #[test]
    fn boxed_pool_errors() {
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(PoolError::Closed);
        assert_eq!(boxed.error_type(), "pool_closed");
    }

    #[test]
    fn status_maps_to_the_pool_numbers() {
        let status = pool_status(Status {
            max_size: 4,
            size: 4,
            available: 1,
            waiting: 2,
        });
        assert_eq!(
            status,
            PoolStatus {
                open: 4,
                idle: 1,
                max: 4,
                waiting: Some(2)
            }
        );
        assert_eq!(status.active(), 3);
    }
}
