//! The whole catalog, rendered by the real Prometheus exporter after real traffic against a
//! real PostgreSQL: every family has HELP, TYPE and a non-zero sample.
//!
//! With `DBMETRICS_EXPOSITION_OUT=<file>` the rendered text is also written to that file, so
//! that `.ci/check-prometheus --metrics <file>` can run `promtool check metrics` on it.

use std::time::Duration;

use dbmetrics::{
    DatabaseMetrics, TrackedPool, TrackedRepository, create_infrastructure_enhancer, track_query,
    track_transaction,
};
use dbmetrics_tests::{database, prometheus, scrape, unique};

// Not `#[error(transparent)]`: a transparent wrapper's `source()` skips the wrapped error, and a
// pool timeout has no source of its own, so it would be classified `other`.
#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Clone, TrackedRepository)]
#[tracked(table = "notes")]
struct NoteRepository {
    pool: TrackedPool,
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl NoteRepository {
    #[track_query(ddl)]
    async fn create_table(&self) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE {} (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
                self.table
            ))
            .await?;
        Ok(())
    }

    #[track_query(insert)]
    async fn insert(&self, id: i64, body: &str) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(
                &format!("INSERT INTO {} (id, body) VALUES ($1, $2)", self.table),
                &[&id, &body],
            )
            .await?;
        Ok(())
    }

    #[track_query(select)]
    async fn count(&self) -> Result<i64, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table), &[])
            .await?;
        Ok(row.get(0))
    }

    #[track_transaction("insert_pair")]
    async fn insert_pair(&self, id: i64) -> Result<(), RepoError> {
        self.insert(id, "first").await?;
        self.insert(id + 1, "second").await
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_catalog_family_renders_with_help_type_and_samples() {
    tokio::time::timeout(TIMEOUT, run())
        .await
        .expect("the traffic finishes within 60 s");
}

async fn run() {
    prometheus();
    let service = unique("svc_expo");
    // One connection and a 2 s wait timeout: the pool can be starved on purpose, long enough
    // for the 10 ms poller to see the waiting caller even on a busy machine.
    let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::from_config(
        database().config.clone(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    ))
    .max_size(1)
    .wait_timeout(Some(Duration::from_secs(2)))
    .runtime(deadpool_postgres::Runtime::Tokio1)
    .build()
    .unwrap();
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let tracked = create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool, "default");
    let repo = NoteRepository {
        pool: tracked.clone(),
        table: unique("notes"),
        metrics,
    };

    repo.create_table().await.unwrap();
    repo.insert_pair(1).await.unwrap();
    // id 2 exists: the first insert fails, and so does the transaction.
    assert!(repo.insert_pair(2).await.is_err());
    assert_eq!(repo.count().await.unwrap(), 2);

    // Hold the only connection: one caller waits (overflow) until it times out (wait stage).
    let held = tracked.get().await.unwrap();
    let waiter = tokio::spawn({
        let repo = repo.clone();
        async move { repo.count().await }
    });
    let overflow = format!("{service}_database_connections_overflow");
    let active = format!("{service}_database_connections_active");
    // The poller (10 ms) sees the waiter and the checked-out connection.
    while scrape().value(&overflow, &[("pool", "default")]) != 1.0
        || scrape().value(&active, &[("pool", "default")]) != 1.0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(
        err,
        RepoError::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait
        ))
    ));
    // The connection was returned: the poller sees it idle.
    drop(held);
    let idle = format!("{service}_database_connections_idle");
    while scrape().value(&idle, &[("pool", "default")]) != 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let text = prometheus().render();
    let e = dbmetrics_tests::Exposition::parse(&text);
    let p = |suffix: &str| format!("{service}_{suffix}");
    let default = [("pool", "default")];

    // Every family of the catalog is described and typed.
    for (name, info) in repo.metrics.get_metrics() {
        let kind = format!("{:?}", info.kind).to_lowercase();
        assert_eq!(e.types.get(&name), Some(&kind), "TYPE of {name}");
        assert_eq!(
            e.help.get(&name).map(String::as_str),
            Some(info.help),
            "HELP of {name}"
        );
    }

    // Pool gauges, at their last poll: the connection is back, idle.
    assert_eq!(e.value(&p("database_connections_max"), &default), 1.0);
    assert_eq!(e.value(&p("database_connections_open"), &default), 1.0);
    assert_eq!(e.value(&idle, &default), 1.0);
    // Pool counters: create_table, 3 inserts, 1 count, and the held connection; the waiter
    // that timed out acquired nothing.
    assert_eq!(
        e.value(&p("database_connections_acquired_total"), &default),
        6.0
    );
    assert_eq!(
        e.value(&p("database_connections_released_total"), &default),
        6.0
    );
    assert_eq!(
        e.value(&p("database_connections_created_total"), &default),
        1.0
    );
    assert_eq!(
        e.value(&p("database_connection_wait_seconds_count"), &default),
        6.0
    );
    assert_eq!(
        e.value(&p("database_connection_use_seconds_count"), &default),
        6.0
    );
    let stage = |s| {
        e.value(
            &p("database_connection_timeouts_total"),
            &[("pool", "default"), ("stage", s)],
        )
    };
    assert_eq!(
        (stage("wait"), stage("create"), stage("recycle")),
        (1.0, 0.0, 0.0)
    );

    // Queries, errors, transactions.
    let queries = |op, result| {
        e.value(
            &p("database_query_duration_seconds_count"),
            &[("operation", op), ("table", "notes"), ("result", result)],
        )
    };
    assert_eq!(queries("ddl", "success"), 1.0);
    assert_eq!(queries("insert", "success"), 2.0);
    assert_eq!(queries("insert", "error"), 1.0);
    assert_eq!(queries("select", "success"), 1.0);
    assert_eq!(queries("select", "error"), 1.0);
    assert_eq!(
        e.value(
            &p("database_errors_total"),
            &[
                ("operation", "insert"),
                ("table", "notes"),
                ("error_type", "unique_violation")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            &p("database_errors_total"),
            &[
                ("operation", "select"),
                ("table", "notes"),
                ("error_type", "pool_timeout")
            ]
        ),
        1.0
    );
    let tx = |result| {
        e.value(
            &p("database_transactions_total"),
            &[("transaction", "insert_pair"), ("result", result)],
        )
    };
    assert_eq!((tx("success"), tx("error")), (1.0, 1.0));
    assert_eq!(
        e.value(
            &p("database_transaction_duration_seconds_count"),
            &[("transaction", "insert_pair"), ("result", "error")]
        ),
        1.0
    );

    if let Some(path) = std::env::var_os("DBMETRICS_EXPOSITION_OUT") {
        std::fs::write(&path, &text).expect("the exposition file is writable");
    }
}
