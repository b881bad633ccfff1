//! Health checks of a `PgPool`: an idle pooled connection, else a dedicated connection with the
//! pool's connect options (closed after the check).

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions, Executor, PgConnection, PgPool, Postgres, Row};

use super::classify::classify_sqlx;
use crate::drivers::contract::{HealthCheckable, Probe, ProbeFailure};

/// A connection held by a health check.
#[doc(hidden)]
#[derive(Debug)]
pub enum ProbeConnection {
    /// From the pool.
    Pooled(PoolConnection<Postgres>),
    /// Opened for the check, outside the pool.
    Dedicated(PgConnection),
}

fn failure(err: &sqlx::Error) -> ProbeFailure {
    ProbeFailure::new(classify_sqlx(err), err)
}

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl HealthCheckable for PgPool {
    type ProbeConnection = ProbeConnection;

    async fn probe(&self) -> Result<Probe<ProbeConnection>, ProbeFailure> {
        if let Some(conn) = self.try_acquire() {
            return Ok(Probe {
                connection: ProbeConnection::Pooled(conn),
                dedicated: false,
            });
        }
        if self.is_closed() {
            return Err(failure(&sqlx::Error::PoolClosed));
        }
        // No idle connection: a dedicated one. sqlx's `acquire` would retry a failing connect
        // until its timeout and report only `PoolTimedOut`; the connect error says what is wrong.
        self.connect_options()
            .connect()
            .await
            .map(|conn| Probe {
                connection: ProbeConnection::Dedicated(conn),
                dedicated: true,
            })
            .map_err(|e| failure(&e))
    }

    fn first_row<'c>(
        connection: &'c mut ProbeConnection,
        sql: &'static str,
    ) -> impl Future<Output = Result<Vec<Option<String>>, ProbeFailure>> + Send + 'c {
        let conn: &mut PgConnection = match connection {
            ProbeConnection::Pooled(conn) => conn,
            ProbeConnection::Dedicated(conn) => conn,
        };
        async move {
            // The simple query protocol: every value arrives as text, read the same way
            // whatever its type.
            let row = conn
                .fetch_optional(sqlx::raw_sql(sql))
                .await
                .map_err(|e| failure(&e))?;
            let Some(row) = row else {
                return Ok(Vec::new());
            };
            (0..row.len())
                .map(|i| {
                    row.try_get_unchecked::<Option<String>, _>(i)
                        .map_err(|e| failure(&e))
                })
                .collect()
        }
    }

    fn discard(connection: ProbeConnection) {
        match connection {
            ProbeConnection::Pooled(mut conn) => {
                // Its state is unknown: closed instead of going back to the pool.
                conn.close_on_drop();
                drop(conn);
            }
            ProbeConnection::Dedicated(conn) => drop(conn),
        }
    }
}
