//! What a driver gives dbmetrics: a pool it can monitor ([`MonitoredPool`]) and, where the
//! driver can run a query, health checks ([`HealthCheckable`]).

use std::future::Future;

use crate::classify::{OTHER, POOL_TIMEOUT};
use crate::pool::{Cleanup, PoolStatus, TimeoutStage};

/// The pool type that type parameters default to, so that code written for deadpool-postgres
/// keeps compiling without naming it.
/// deadpool when its feature is on, else sqlx's `PgPool`, else bb8 with bb8-postgres.
#[cfg(feature = "deadpool")]
pub(crate) type DefaultPool = deadpool_postgres::Pool;

/// The pool type that type parameters default to: deadpool is off, sqlx is on.
#[cfg(all(not(feature = "deadpool"), feature = "sqlx"))]
pub(crate) type DefaultPool = sqlx::PgPool;

/// The pool type that type parameters default to: bb8 is the only driver on.
#[cfg(all(not(feature = "deadpool"), not(feature = "sqlx"), feature = "bb8"))]
pub(crate) type DefaultPool =
    bb8::Pool<bb8_postgres::PostgresConnectionManager<tokio_postgres::NoTls>>;

/// The pool type that type parameters default to: no driver feature is enabled, so there is no
/// pool to default to (this type has no values).
#[cfg(not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")))]
pub(crate) type DefaultPool = NoPool;

pub(crate) mod sealed {
    /// Only dbmetrics implements its driver traits.
    pub trait Sealed {}
}

/// A connection pool dbmetrics can monitor: gauges, checkout metrics and
/// [`TrackedPool`](crate::TrackedPool).
///
/// Implemented by dbmetrics for the pools of the enabled driver features (see the README,
/// "Drivers"): `deadpool_postgres::Pool` (feature `deadpool`, the default), `sqlx::PgPool`
/// (feature `sqlx`) and `bb8::Pool<M>` for any manager `M` (feature `bb8`). The methods are
/// dbmetrics' own business; the trait cannot be implemented outside it.
///
/// A driver gives: the pool's numbers (open, idle, max, and waiting callers when it counts them:
/// else the tracked pool counts its own), a checkout future, what a checkout derefs to, whether
/// a checkout error is a pool timeout (and at which stage), an identity shared by the clones of
/// one pool, and a handle for the poller (weak where the driver has one).
pub trait MonitoredPool: Clone + Send + Sync + 'static + sealed::Sealed {
    /// What a checkout hands out (deadpool: `deadpool_postgres::Object`).
    type Connection: Send + 'static;
    /// What a [`TrackedConnection`](crate::TrackedConnection) derefs to (deadpool: the
    /// `Object`, which derefs on to the `tokio_postgres::Client`).
    type Target: ?Sized;
    /// The error of a checkout (deadpool: `deadpool_postgres::PoolError`).
    type Error: std::error::Error + Send + Sync + 'static;
    /// A handle that does not keep the pool open.
    #[doc(hidden)]
    type Weak: Send + Sync + 'static;

    #[doc(hidden)]
    fn downgrade(&self) -> Self::Weak;
    #[doc(hidden)]
    fn upgrade(weak: &Self::Weak) -> Option<Self>;
    /// Identifies the pool: the same for every clone, distinct between pools that are alive
    /// (or held by a `Weak`) at the same time.
    #[doc(hidden)]
    fn id(&self) -> usize;
    /// The pool's numbers now; `None` once it is closed.
    #[doc(hidden)]
    fn status(&self) -> Option<PoolStatus>;
    #[doc(hidden)]
    fn checkout(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;
    #[doc(hidden)]
    fn target(connection: &Self::Connection) -> &Self::Target;
    #[doc(hidden)]
    fn target_mut(connection: &mut Self::Connection) -> &mut Self::Target;
    /// Whether the driver says which checkouts got a newly opened connection ([`Self::is_new`]
    /// means something): `connections_created_total` is published only then.
    #[doc(hidden)]
    const COUNTS_CREATED: bool;
    /// Whether a connection a cancelled call left busy can be taken out of the pool and closed:
    /// `connections_discarded_total` is published only then.
    #[doc(hidden)]
    const DISCARDS: bool;
    /// Whether the driver has a cancel request for a running statement:
    /// `queries_cancelled_on_server_total` is published only then.
    #[doc(hidden)]
    const CANCELS_ON_SERVER: bool;
    /// Whether the connection was opened for this checkout (never handed out before); `false`
    /// when the driver does not say.
    #[doc(hidden)]
    fn is_new(connection: &Self::Connection) -> bool;
    /// The stage of a checkout error that is a pool timeout.
    #[doc(hidden)]
    fn timeout_stage(error: &Self::Error) -> Option<TimeoutStage>;
    /// The class of a checkout error (the `error.type` of the `pool.acquire` span, feature
    /// `tracing`): by default `pool_timeout` for a timeout, else `other`.
    #[doc(hidden)]
    fn error_type(error: &Self::Error) -> &'static str {
        match Self::timeout_stage(error) {
            Some(_) => POOL_TIMEOUT,
            None => OTHER,
        }
    }
    /// Takes back a connection that a cancelled or panicking call left, which may still run a
    /// statement: a driver that can check it passes it to [`Cleanup::start`] (see
    /// `pool/cleanup.rs`); the default returns it to the pool as it is.
    #[doc(hidden)]
    fn release_unfinished(connection: Self::Connection, cleanup: Cleanup) {
        drop((connection, cleanup));
    }
}

/// A connection a health check holds, and where it came from.
#[doc(hidden)]
#[derive(Debug)]
pub struct Probe<C> {
    /// The connection.
    pub connection: C,
    /// Opened for this check only (the pool had no room), closed when dropped.
    pub dedicated: bool,
}

/// Why a health check's connection or query failed: the class for the JSON, and the driver's
/// text for the operator's log (never put in the JSON).
#[doc(hidden)]
#[derive(Debug)]
pub struct ProbeFailure {
    /// The error class (see `dbmetrics::classify`).
    pub class: &'static str,
    /// The driver's message.
    pub detail: String,
}

impl ProbeFailure {
    /// A failure of class `class` with the driver's message.
    pub fn new(class: &'static str, error: &dyn std::fmt::Display) -> Self {
        Self {
            class,
            detail: error.to_string(),
        }
    }
}

/// A pool whose database dbmetrics can health-check
/// ([`DatabaseHealthChecker`](crate::DatabaseHealthChecker)): a [`MonitoredPool`] that can run
/// a query. Implemented for `deadpool_postgres::Pool`, `sqlx::PgPool` and
/// `bb8::Pool<bb8_postgres::PostgresConnectionManager<Tls>>`.
pub trait HealthCheckable: MonitoredPool {
    /// A connection held by a health check.
    #[doc(hidden)]
    type ProbeConnection: Send + 'static;

    /// An idle pooled connection, or one the pool opens when it has room, without queueing;
    /// when the pool is at its limit, a dedicated connection with the pool's configuration.
    #[doc(hidden)]
    fn probe(
        &self,
    ) -> impl Future<Output = Result<Probe<Self::ProbeConnection>, ProbeFailure>> + Send;

    /// Runs `sql` (a fixed text of dbmetrics whose columns are all text, or whose values are
    /// not read) and returns the first row's columns as text (empty when there is no row).
    #[doc(hidden)]
    fn first_row<'c>(
        connection: &'c mut Self::ProbeConnection,
        sql: &'static str,
    ) -> impl Future<Output = Result<Vec<Option<String>>, ProbeFailure>> + Send + 'c;

    /// Closes a pooled connection instead of returning it to the pool (its state is unknown).
    #[doc(hidden)]
    fn discard(connection: Self::ProbeConnection);
}

/// The default pool type when no driver feature is enabled: it has no values.
#[cfg(not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")))]
#[derive(Clone, Copy, Debug)]
pub enum NoPool {}

#[cfg(not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")))]
impl sealed::Sealed for NoPool {}

#[cfg(not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")))]
impl MonitoredPool for NoPool {
    type Connection = NoPool;
    type Target = NoPool;
    type Error = std::convert::Infallible;
    type Weak = NoPool;

    fn downgrade(&self) -> NoPool {
        *self
    }
    fn upgrade(weak: &NoPool) -> Option<Self> {
        Some(*weak)
    }
    fn id(&self) -> usize {
        match *self {}
    }
    fn status(&self) -> Option<PoolStatus> {
        match *self {}
    }
    async fn checkout(&self) -> Result<NoPool, std::convert::Infallible> {
        Ok(*self)
    }
    fn target(connection: &NoPool) -> &NoPool {
        connection
    }
    fn target_mut(connection: &mut NoPool) -> &mut NoPool {
        connection
    }
    const COUNTS_CREATED: bool = false;
    const DISCARDS: bool = false;
    const CANCELS_ON_SERVER: bool = false;
    fn is_new(connection: &NoPool) -> bool {
        match *connection {}
    }
    fn timeout_stage(error: &std::convert::Infallible) -> Option<TimeoutStage> {
        match *error {}
    }
}

#[cfg(not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")))]
impl HealthCheckable for NoPool {
    type ProbeConnection = NoPool;

    async fn probe(&self) -> Result<Probe<NoPool>, ProbeFailure> {
        match *self {}
    }

    async fn first_row(
        connection: &mut NoPool,
        _: &'static str,
    ) -> Result<Vec<Option<String>>, ProbeFailure> {
        match *connection {}
    }

    fn discard(connection: NoPool) {
        match connection {}
    }
}
