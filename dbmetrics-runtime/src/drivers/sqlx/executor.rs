//! `&TrackedPool<PgPool>` is a `sqlx::Executor`, like `&PgPool`: each call checks a connection
//! out through the tracked pool (counted, wait and use timed), runs on it, and returns it.

use std::panic::Location;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres};

use super::stream::HeldStream;
use crate::TrackedPool;

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl<'p> Executor<'p> for &'p TrackedPool<PgPool> {
    type Database = Postgres;

    #[track_caller]
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let location = Location::caller();
        Box::pin(HeldStream::new(move |tx| async move {
            let mut conn = match self.get_at(location).await {
                Ok(conn) => conn,
                Err(err) => return tx.send(Err(err)).await,
            };
            let mut rows = conn.fetch_many(query);
            while let Some(item) = next(&mut rows).await {
                let failed = item.is_err();
                tx.send(item).await;
                if failed {
                    return;
                }
            }
        }))
    }

    #[track_caller]
    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let location = Location::caller();
        Box::pin(async move { self.get_at(location).await?.fetch_optional(query).await })
    }

    #[track_caller]
    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        let location = Location::caller();
        Box::pin(async move {
            self.get_at(location)
                .await?
                .prepare_with(sql, parameters)
                .await
        })
    }

    #[track_caller]
    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        let location = Location::caller();
        Box::pin(async move { self.get_at(location).await?.describe(sql).await })
    }
}

/// The next item of a boxed stream.
async fn next<T>(stream: &mut BoxStream<'_, T>) -> Option<T> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
