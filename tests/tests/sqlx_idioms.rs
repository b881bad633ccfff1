//! sqlx idioms through a tracked pool, against a real PostgreSQL: `&TrackedPool<PgPool>` is a
//! `sqlx::Executor` whose every call is one counted checkout, `TrackedConnection<PgPool>`
//! derefs to `PgConnection`, `RowNotFound` is `row_not_found`, and `transaction::run` works on
//! sqlx and bb8 connections.

use std::time::Duration;

use dbmetrics::{ClassifyError, DatabaseMetrics, create_infrastructure_enhancer, transaction};
use dbmetrics_tests::drivers::{Bb8, Driver, Sqlx};
use dbmetrics_tests::{Exposition, database, prometheus, scrape, unique};
use sqlx::Row;

fn counter(e: &Exposition, service: &str, suffix: &str, pool: &str) -> f64 {
    e.get(&format!("{service}_database_{suffix}"), &[("pool", pool)])
        .unwrap_or_else(|| panic!("{suffix} {{pool={pool:?}}} is rendered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_pool_is_a_sqlx_executor_and_its_connection_a_pg_connection() {
    prometheus();
    let service = unique("sqlx_exec");
    let pool = Sqlx::pool(&database().config, 2, Duration::from_secs(10));
    let metrics = DatabaseMetrics::builder(&pool, &service).build().unwrap();
    let tracked = create_infrastructure_enhancer(metrics).enhance_pool(pool.clone(), "default");

    // One checkout per executor call.
    sqlx::query("SELECT 1").execute(&tracked).await.unwrap();
    let rows = sqlx::query("SELECT g FROM generate_series(1, 3) AS g")
        .fetch_all(&tracked)
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![1, 2, 3]);
    let one: (i64,) = sqlx::query_as("SELECT 7::int8")
        .fetch_one(&tracked)
        .await
        .unwrap();
    assert_eq!(one.0, 7);
    let err = sqlx::query("SELECT 1 WHERE false")
        .fetch_one(&tracked)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "row_not_found");
    let e = scrape();
    assert_eq!(
        counter(&e, &service, "connections_acquired_total", "default"),
        4.0
    );
    assert_eq!(
        counter(&e, &service, "connections_released_total", "default"),
        4.0
    );

    // A tracked connection derefs to PgConnection.
    let mut conn = tracked.get().await.unwrap();
    let row = sqlx::query("SELECT 40 + 2")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), 42);
    drop(conn);
    let e = scrape();
    assert_eq!(
        counter(&e, &service, "connections_acquired_total", "default"),
        5.0
    );
    assert_eq!(
        counter(&e, &service, "connections_released_total", "default"),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_on_sqlx_and_bb8_connections() {
    prometheus();
    let service = unique("drv_tx");
    let metrics = DatabaseMetrics::new(&service).unwrap();
    let table = unique("drv_tx");

    let pool = Sqlx::pool(&database().config, 1, Duration::from_secs(10));
    let tracked =
        create_infrastructure_enhancer(DatabaseMetrics::builder(&pool, &service).build().unwrap())
            .enhance_pool(pool.clone(), "default");
    let mut conn = tracked.get().await.unwrap();
    sqlx::raw_sql(&format!("CREATE TEMP TABLE {table} (id int)"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let insert = format!("INSERT INTO {table} VALUES (1)");
    transaction::run(&metrics, &mut conn, "sqlx_commit", |tx| {
        Box::pin(async move {
            sqlx::query(&insert).execute(&mut **tx).await?;
            Ok::<_, sqlx::Error>(())
        })
    })
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} VALUES (2)");
    let failed = transaction::run(&metrics, &mut conn, "sqlx_rollback", |tx| {
        Box::pin(async move {
            sqlx::query(&insert).execute(&mut **tx).await?;
            sqlx::query("SELECT * FROM dbmetrics_no_such_table")
                .execute(&mut **tx)
                .await?;
            Ok::<_, sqlx::Error>(())
        })
    })
    .await
    .unwrap_err();
    assert_eq!(failed.error_type(), "undefined_table");
    let count: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count.0, 1, "the rolled-back insert is gone");

    let pool = Bb8::pool(&database().config, 1, Duration::from_secs(10));
    let tracked = create_infrastructure_enhancer(
        DatabaseMetrics::builder(&pool, &unique("drv_tx_bb8"))
            .build()
            .unwrap(),
    )
    .enhance_pool(pool.clone(), "default");
    let mut conn = tracked.get().await.unwrap();
    transaction::run(&metrics, &mut conn, "bb8_commit", |tx| {
        Box::pin(async move {
            tx.execute("SELECT 1", &[]).await?;
            Ok::<_, tokio_postgres::Error>(())
        })
    })
    .await
    .unwrap();

    let e = scrape();
    let total = |name: &str, result: &str| {
        e.get(
            &format!("{service}_database_transactions_total"),
            &[("transaction", name), ("result", result)],
        )
        .unwrap_or_else(|| panic!("{name} {result} is rendered"))
    };
    assert_eq!(total("sqlx_commit", "success"), 1.0);
    assert_eq!(total("sqlx_rollback", "error"), 1.0);
    assert_eq!(total("bb8_commit", "success"), 1.0);
    assert_eq!(
        e.get(
            &format!("{service}_database_errors_total"),
            &[
                ("operation", "transaction"),
                ("table", "sqlx_rollback"),
                ("error_type", "undefined_table")
            ],
        ),
        Some(1.0)
    );
}
