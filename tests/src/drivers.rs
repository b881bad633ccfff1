//! The drivers dbmetrics supports, behind one trait, so that a scenario is written once as a
//! generic `async fn` and [`per_driver!`](crate::per_driver) makes one `#[tokio::test]` per
//! driver. Adding a driver is one [`Driver`] impl and one line in the macro.

use std::future::Future;
use std::time::Duration;

use dbmetrics::health::HealthCheckable;
use dbmetrics::pool::MonitoredPool;
use dbmetrics::{ClassifyError, TrackedConnection};
use tokio_postgres::{Config, NoTls};

/// A supported pool type, and how a test makes one and runs SQL on its connections.
pub trait Driver: 'static {
    /// The driver's name, as `--driver` takes it.
    const NAME: &'static str;
    /// The pool type.
    type Pool: MonitoredPool + HealthCheckable;
    /// The error of a query on one of its connections.
    type Error: std::error::Error + ClassifyError + Send + Sync + 'static;

    /// A pool of at most `max` connections over `config`, whose checkouts give up after
    /// `acquire_timeout` (deadpool: its wait timeout). Opens nothing until used.
    fn pool(config: &Config, max: u32, acquire_timeout: Duration) -> Self::Pool;

    /// Runs `sql` (one statement) on a tracked connection.
    fn execute<'c>(
        conn: &'c mut TrackedConnection<Self::Pool>,
        sql: &'c str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'c;
}

/// deadpool-postgres.
#[derive(Debug)]
pub struct Deadpool;

impl Driver for Deadpool {
    const NAME: &'static str = "deadpool";
    type Pool = deadpool_postgres::Pool;
    type Error = tokio_postgres::Error;

    fn pool(config: &Config, max: u32, acquire_timeout: Duration) -> Self::Pool {
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        deadpool_postgres::Pool::builder(manager)
            .max_size(max as usize)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime always builds")
    }

    async fn execute(
        conn: &mut TrackedConnection<Self::Pool>,
        sql: &str,
    ) -> Result<(), Self::Error> {
        conn.batch_execute(sql).await
    }
}

/// sqlx `PgPool`.
#[derive(Debug)]
pub struct Sqlx;

/// sqlx connect options with the host, port, user, password and database of `config`.
pub fn sqlx_options(config: &Config) -> sqlx::postgres::PgConnectOptions {
    let mut options = sqlx::postgres::PgConnectOptions::new_without_pgpass();
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        options = options.host(host);
    }
    if let Some(port) = config.get_ports().first() {
        options = options.port(*port);
    }
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(password) = config.get_password() {
        options = options.password(&String::from_utf8_lossy(password));
    }
    if let Some(db) = config.get_dbname() {
        options = options.database(db);
    }
    options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

impl Driver for Sqlx {
    const NAME: &'static str = "sqlx";
    type Pool = sqlx::PgPool;
    type Error = sqlx::Error;

    fn pool(config: &Config, max: u32, acquire_timeout: Duration) -> Self::Pool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(sqlx_options(config))
    }

    async fn execute(
        conn: &mut TrackedConnection<Self::Pool>,
        sql: &str,
    ) -> Result<(), Self::Error> {
        // Through the boxed future of `Executor`: `RawSql::execute`'s own future cannot be
        // proven `Send` here (a higher-ranked lifetime rustc cannot see through).
        let conn: &mut sqlx::PgConnection = conn;
        sqlx::Executor::execute(conn, sqlx::raw_sql(sql)).await?;
        Ok(())
    }
}

/// bb8 with bb8-postgres.
#[derive(Debug)]
pub struct Bb8;

/// The bb8 pool type of the tests.
pub type Bb8Pool = bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>;

impl Driver for Bb8 {
    const NAME: &'static str = "bb8";
    type Pool = Bb8Pool;
    type Error = tokio_postgres::Error;

    fn pool(config: &Config, max: u32, acquire_timeout: Duration) -> Self::Pool {
        let manager = bb8_postgres::PostgresConnectionManager::new(config.clone(), NoTls);
        bb8::Pool::builder()
            .max_size(max)
            .connection_timeout(acquire_timeout)
            .retry_connection(false)
            .build_unchecked(manager)
    }

    async fn execute(
        conn: &mut TrackedConnection<Self::Pool>,
        sql: &str,
    ) -> Result<(), Self::Error> {
        conn.batch_execute(sql).await
    }
}

/// One `#[tokio::test]` (multi-threaded, 2 workers) per driver, `{driver}::{scenario}`, for
/// each generic `async fn scenario<D: Driver>()` listed.
///
/// ```text
/// per_driver!(gauges, timeouts);
/// ```
#[macro_export]
macro_rules! per_driver {
    ($($scenario:ident),+ $(,)?) => {
        $crate::per_driver!(@driver deadpool, $crate::drivers::Deadpool, $($scenario),+);
        $crate::per_driver!(@driver sqlx, $crate::drivers::Sqlx, $($scenario),+);
        $crate::per_driver!(@driver bb8, $crate::drivers::Bb8, $($scenario),+);
    };
    (@driver $name:ident, $driver:ty, $($scenario:ident),+) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario::<$driver>().await
                }
            )+
        }
    };
}
