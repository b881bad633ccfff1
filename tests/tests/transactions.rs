//! Transactions, the tracker and the repository middleware against a real PostgreSQL, asserted
//! on the rendered Prometheus text and on what the server holds afterwards.

use std::time::Duration;

use dbmetrics::transaction::{self, TransactionFuture};
use dbmetrics::{
    ClassifyError, DatabaseMetrics, Operation, QueryPerformanceTracker, TrackedRepository,
    create_infrastructure_enhancer, create_repository_middleware, setup_database_monitoring,
    track_query, track_transaction,
};
use dbmetrics_tests::{Exposition, database, prometheus, scrape, unique};
use tokio::time::timeout;

/// Every test is bounded: a hung server fails the test instead of hanging the suite.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("rejected by the repository")]
    Rejected,
}

impl ClassifyError for RepoError {
    fn error_type(&self) -> &'static str {
        match self {
            RepoError::Rejected => "rejected",
            other => dbmetrics::classify::classify(other),
        }
    }
}

struct Fixture {
    service: String,
    pool: deadpool_postgres::Pool,
    metrics: DatabaseMetrics,
    table: String,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        prometheus();
        let service = unique(prefix);
        let pool = database().pool(4);
        let metrics = setup_database_monitoring(&pool, &service).unwrap();
        let table = unique("tx_items");
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT NOT NULL)"
            ))
            .await
            .unwrap();
        Self {
            service,
            pool,
            metrics,
            table,
        }
    }

    fn insert_sql(&self) -> String {
        format!("INSERT INTO {} (id, title) VALUES ($1, $2)", self.table)
    }

    /// Whether row `id` exists, seen from a fresh connection (committed data only).
    async fn exists(&self, id: i64) -> bool {
        let client = self.pool.get().await.unwrap();
        let row = client
            .query_one(
                &format!("SELECT count(*) FROM {} WHERE id = $1", self.table),
                &[&id],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    }

    fn transactions(&self, e: &Exposition, name: &str, result: &str) -> f64 {
        e.value(
            &format!("{}_database_transactions_total", self.service),
            &[("transaction", name), ("result", result)],
        )
    }

    fn transaction_durations(&self, e: &Exposition, name: &str, result: &str) -> f64 {
        e.value(
            &format!(
                "{}_database_transaction_duration_seconds_count",
                self.service
            ),
            &[("transaction", name), ("result", result)],
        )
    }

    fn queries(&self, e: &Exposition, op: &str, table: &str, result: &str) -> f64 {
        e.value(
            &format!("{}_database_query_duration_seconds_count", self.service),
            &[("operation", op), ("table", table), ("result", result)],
        )
    }

    fn errors(&self, e: &Exposition, op: &str, table: &str, error_type: &str) -> f64 {
        e.value(
            &format!("{}_database_errors_total", self.service),
            &[
                ("operation", op),
                ("table", table),
                ("error_type", error_type),
            ],
        )
    }

    fn all_errors(&self, e: &Exposition) -> f64 {
        e.sum(&format!("{}_database_errors_total", self.service), &[])
    }
}

#[tokio::test]
async fn nested_tracker_calls_record_the_transaction_and_each_query() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_nested").await;
        let tracker = QueryPerformanceTracker::new(f.metrics.clone());
        let client = f.pool.get().await.unwrap();
        let insert = f.insert_sql();
        let select = format!("SELECT title FROM {} WHERE id = $1", f.table);

        for id in [1_i64, 2] {
            let title: String = tracker
                .track_transaction("create_content", async {
                    tracker
                        .track_query("insert", "items", async {
                            client.execute(&insert, &[&id, &"t"]).await
                        })
                        .await?;
                    let row = tracker
                        .track_query(Operation::Select, "items", async {
                            client.query_one(&select, &[&id]).await
                        })
                        .await?;
                    Ok::<_, tokio_postgres::Error>(row.get(0))
                })
                .await
                .unwrap();
            assert_eq!(title, "t");
        }
        // The second insert of id 1 fails inside the transaction: both record the error.
        let dup = tracker
            .track_transaction("create_content", async {
                tracker
                    .track_query("insert", "items", async {
                        client.execute(&insert, &[&1_i64, &"again"]).await
                    })
                    .await
            })
            .await;
        assert!(dup.is_err());

        let e = scrape();
        assert_eq!(f.transactions(&e, "create_content", "success"), 2.0);
        assert_eq!(f.transactions(&e, "create_content", "error"), 1.0);
        assert_eq!(
            f.transaction_durations(&e, "create_content", "success"),
            2.0
        );
        assert_eq!(f.queries(&e, "insert", "items", "success"), 2.0);
        assert_eq!(f.queries(&e, "insert", "items", "error"), 1.0);
        assert_eq!(f.queries(&e, "select", "items", "success"), 2.0);
        assert_eq!(
            f.errors(&e, "insert", "items", "unique_violation"),
            1.0,
            "the query's error"
        );
        assert_eq!(
            f.errors(&e, "transaction", "create_content", "unique_violation"),
            1.0,
            "the transaction's error, labelled operation=\"transaction\""
        );
        assert_eq!(f.all_errors(&e), 2.0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn committed_and_rolled_back_transactions() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_commit").await;
        let tracker = QueryPerformanceTracker::new(f.metrics.clone());
        let insert = f.insert_sql();
        let mut client = f.pool.get().await.unwrap();

        let inserted = transaction::run(&f.metrics, &mut client, "save", |tx| {
            Box::pin(async {
                tracker
                    .track_query(
                        Operation::Insert,
                        "items",
                        tx.execute(&insert, &[&1_i64, &"kept"]),
                    )
                    .await
                    .map_err(RepoError::from)
            })
        })
        .await
        .unwrap();
        assert_eq!(inserted, 1);

        let rejected = transaction::run(&f.metrics, &mut client, "save", |tx| {
            Box::pin(async {
                tracker
                    .track_query(
                        Operation::Insert,
                        "items",
                        tx.execute(&insert, &[&2_i64, &"gone"]),
                    )
                    .await?;
                Err::<u64, _>(RepoError::Rejected)
            })
        })
        .await;
        assert!(matches!(rejected, Err(RepoError::Rejected)));

        assert!(f.exists(1).await, "the committed row is there");
        assert!(!f.exists(2).await, "the rolled-back row is absent");
        // The same connection is not left inside a transaction: it sees no row 2 either, and
        // its next statement runs in a transaction of its own that has no id yet.
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {} WHERE id = 2), txid_current_if_assigned()",
                    f.table
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 0);
        assert_eq!(row.get::<_, Option<i64>>(1), None);

        let e = scrape();
        assert_eq!(f.transactions(&e, "save", "success"), 1.0);
        assert_eq!(f.transactions(&e, "save", "error"), 1.0);
        assert_eq!(f.transactions(&e, "save", "cancelled"), 0.0);
        assert_eq!(f.transaction_durations(&e, "save", "error"), 1.0);
        assert_eq!(f.errors(&e, "transaction", "save", "rejected"), 1.0);
        // Both inserts succeeded as queries; the second was undone by the rollback.
        assert_eq!(f.queries(&e, "insert", "items", "success"), 2.0);
        assert_eq!(f.all_errors(&e), 1.0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_transaction_dropped_midway_is_cancelled_and_rolled_back() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_cancel").await;
        let insert = f.insert_sql();
        let mut client = f.pool.get().await.unwrap();
        let (inserted_tx, inserted) = tokio::sync::oneshot::channel::<i32>();

        {
            let run = transaction::run(&f.metrics, &mut client, "cancel_me", |tx| {
                Box::pin(async {
                    tx.execute(&insert, &[&1_i64, &"never"]).await?;
                    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
                    inserted_tx.send(pid).unwrap();
                    std::future::pending::<()>().await;
                    Ok::<_, tokio_postgres::Error>(())
                })
            });
            tokio::pin!(run);
            let pid = tokio::select! {
                _ = &mut run => panic!("the transaction never finishes by itself"),
                pid = inserted => pid.unwrap(),
            };
            // From another connection, the backend is inside the open transaction now.
            let other = f.pool.get().await.unwrap();
            let state: String = other
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .unwrap()
                .get(0);
            assert_eq!(state, "idle in transaction");
            // `run` is dropped here, mid-way.
        }

        // The driver queued a ROLLBACK when the transaction was dropped, ahead of anything sent
        // now on the same connection: this statement sees no row 1 and no open transaction.
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {} WHERE id = 1), txid_current_if_assigned()",
                    f.table
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "the row of the dropped transaction"
        );
        assert_eq!(
            row.get::<_, Option<i64>>(1),
            None,
            "no transaction left open"
        );
        // The connection is back in autocommit: what it writes now is committed at once.
        client.execute(&insert, &[&2_i64, &"after"]).await.unwrap();
        assert!(!f.exists(1).await);
        assert!(f.exists(2).await);

        let e = scrape();
        assert_eq!(f.transactions(&e, "cancel_me", "cancelled"), 1.0);
        assert_eq!(f.transactions(&e, "cancel_me", "success"), 0.0);
        assert_eq!(f.transactions(&e, "cancel_me", "error"), 0.0);
        assert_eq!(f.all_errors(&e), 0.0, "a cancellation is not an error");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_error_at_commit_is_the_transactions_error_and_nothing_is_kept() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_commit_err").await;
        let table = unique("tx_deferred");
        let mut client = f.pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id BIGINT, CONSTRAINT {table}_pk PRIMARY KEY (id) \
                 DEFERRABLE INITIALLY DEFERRED)"
            ))
            .await
            .unwrap();
        let insert = format!("INSERT INTO {table} (id) VALUES ($1)");

        // Both inserts succeed; the deferred primary key fails at COMMIT.
        let result = transaction::run(&f.metrics, &mut client, "deferred", |tx| {
            Box::pin(async {
                tx.execute(&insert, &[&1_i64]).await?;
                tx.execute(&insert, &[&1_i64]).await?;
                Ok::<_, RepoError>(())
            })
        })
        .await;
        match result {
            Err(RepoError::Db(e)) => assert_eq!(e.code().map(|c| c.code()), Some("23505")),
            other => panic!("expected the COMMIT's unique violation, got {other:?}"),
        }
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);

        // A failing statement inside: the transaction's error is the statement's class.
        let result = transaction::run(&f.metrics, &mut client, "broken", |tx| {
            Box::pin(async {
                tx.execute("SELECT 1 / 0", &[]).await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await;
        assert!(result.is_err());

        let e = scrape();
        assert_eq!(f.transactions(&e, "deferred", "error"), 1.0);
        assert_eq!(
            f.errors(&e, "transaction", "deferred", "unique_violation"),
            1.0
        );
        assert_eq!(f.transactions(&e, "broken", "error"), 1.0);
        assert_eq!(
            f.errors(&e, "transaction", "broken", "division_by_zero"),
            1.0
        );
        assert_eq!(f.all_errors(&e), 2.0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_nested_run_is_a_savepoint_with_its_own_outcome() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_savepoint").await;
        let insert = f.insert_sql();
        // Through a TrackedPool: what a user of the infrastructure enhancer holds.
        let pool = create_infrastructure_enhancer(f.metrics.clone())
            .enhance_pool(f.pool.clone(), "default");
        let mut client = pool.get().await.unwrap();
        let metrics = &f.metrics;

        transaction::run(metrics, &mut client, "outer", |tx| {
            Box::pin(async {
                tx.execute(&insert, &[&1_i64, &"outer"]).await?;
                let inner: Result<(), RepoError> = transaction::run(
                    metrics,
                    tx,
                    "inner",
                    |sp| -> TransactionFuture<'_, (), RepoError> {
                        Box::pin(async {
                            sp.execute(&insert, &[&2_i64, &"inner"]).await?;
                            Err(RepoError::Rejected)
                        })
                    },
                )
                .await;
                assert!(matches!(inner, Err(RepoError::Rejected)));
                transaction::run(metrics, tx, "inner", |sp| {
                    Box::pin(async {
                        sp.execute(&insert, &[&3_i64, &"inner kept"]).await?;
                        Ok::<_, RepoError>(())
                    })
                })
                .await?;
                Ok::<_, RepoError>(())
            })
        })
        .await
        .unwrap();

        assert!(f.exists(1).await);
        assert!(!f.exists(2).await, "rolled back to its savepoint");
        assert!(
            f.exists(3).await,
            "released, then committed with the outer one"
        );
        let e = scrape();
        assert_eq!(f.transactions(&e, "outer", "success"), 1.0);
        assert_eq!(f.transactions(&e, "inner", "success"), 1.0);
        assert_eq!(f.transactions(&e, "inner", "error"), 1.0);
        assert_eq!(f.errors(&e, "transaction", "inner", "rejected"), 1.0);
        assert_eq!(f.all_errors(&e), 1.0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_panic_in_a_transaction_is_an_error_and_rolls_back() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_panic").await;
        let insert = f.insert_sql();
        let (pool, metrics) = (f.pool.clone(), f.metrics.clone());
        let task = tokio::spawn(async move {
            let mut client = pool.get().await.unwrap();
            transaction::run(&metrics, &mut client, "panics", |tx| {
                Box::pin(async move {
                    tx.execute(&insert, &[&1_i64, &"x"]).await?;
                    panic!("boom inside a transaction");
                    #[allow(unreachable_code)]
                    Ok::<_, tokio_postgres::Error>(())
                })
            })
            .await
        });
        let err = task.await.unwrap_err();
        assert!(err.is_panic());
        assert!(!f.exists(1).await);
        let e = scrape();
        assert_eq!(f.transactions(&e, "panics", "error"), 1.0);
        assert_eq!(f.errors(&e, "transaction", "panics", "panic"), 1.0);
    })
    .await
    .unwrap();
}

#[derive(Clone, TrackedRepository)]
struct ContentRepository {
    pool: deadpool_postgres::Pool,
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ContentRepository {
    /// A method-level transaction: the attribute times it, the body manages it.
    #[track_transaction("archive_content")]
    async fn archive(&self, id: i64) -> Result<u64, RepoError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = touch(&self.metrics, &tx, &self.table, id).await?;
        if n == 0 {
            return Err(RepoError::Rejected); // dropping `tx` rolls back
        }
        tx.commit().await?;
        Ok(n)
    }

    #[track_transaction]
    async fn purge(&mut self) -> Result<u64, RepoError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM dbmetrics_no_such_table", &[])
            .await?)
    }
}

#[track_query(update, "items", metrics = metrics)]
async fn touch(
    metrics: &DatabaseMetrics,
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    id: i64,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        &format!("UPDATE {table} SET title = title || '!' WHERE id = $1"),
        &[&id],
    )
    .await
}

#[track_transaction("nightly", metrics = metrics)]
async fn nightly(
    metrics: &DatabaseMetrics,
    client: &mut deadpool_postgres::Object,
    table: &str,
) -> Result<u64, RepoError> {
    let tx = client.transaction().await?;
    let n = touch(metrics, &tx, table, 1).await? + touch(metrics, &tx, table, 2).await?;
    tx.commit().await?;
    Ok(n)
}

#[tokio::test]
async fn track_transaction_on_a_method_and_on_a_free_function() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_macro").await;
        let mut client = f.pool.get().await.unwrap();
        client
            .execute(&f.insert_sql(), &[&1_i64, &"a"])
            .await
            .unwrap();
        client
            .execute(&f.insert_sql(), &[&2_i64, &"b"])
            .await
            .unwrap();
        let mut repo = ContentRepository {
            pool: f.pool.clone(),
            table: f.table.clone(),
            metrics: f.metrics.clone(),
        };

        assert_eq!(repo.archive(1).await.unwrap(), 1);
        assert!(matches!(repo.archive(99).await, Err(RepoError::Rejected)));
        assert_eq!(nightly(&f.metrics, &mut client, &f.table).await.unwrap(), 2);
        assert!(repo.purge().await.is_err());

        let title: String = client
            .query_one(&format!("SELECT title FROM {} WHERE id = 1", f.table), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(title, "a!!", "archive, then nightly, committed");

        let e = scrape();
        assert_eq!(f.transactions(&e, "archive_content", "success"), 1.0);
        assert_eq!(f.transactions(&e, "archive_content", "error"), 1.0);
        assert_eq!(
            f.errors(&e, "transaction", "archive_content", "rejected"),
            1.0
        );
        assert_eq!(f.transactions(&e, "nightly", "success"), 1.0);
        assert_eq!(
            f.transactions(&e, "purge", "error"),
            1.0,
            "named after the fn"
        );
        assert_eq!(f.errors(&e, "transaction", "purge", "undefined_table"), 1.0);
        // The tracked queries inside: 2 from archive, 2 from nightly.
        assert_eq!(f.queries(&e, "update", "items", "success"), 4.0);
        assert_eq!(f.all_errors(&e), 2.0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_repository_middleware_tracks_methods_without_attributes() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_middleware").await;
        let middleware = create_repository_middleware(f.pool.clone(), f.metrics.clone());
        let client = middleware.pool().get().await.unwrap();
        client
            .execute(&f.insert_sql(), &[&1_i64, &"a"])
            .await
            .unwrap();
        let select = format!("SELECT title FROM {} WHERE id = $1", f.table);

        for _ in 0..3 {
            let row = middleware
                .repository_method_tracker("select", "batches", "get_batch_by_id", async {
                    client.query_opt(&select, &[&1_i64]).await
                })
                .await
                .unwrap();
            assert!(row.is_some());
        }
        let missing = middleware
            .repository_method_tracker(Operation::Select, "batches", "get_missing", async {
                client
                    .query_one("SELECT * FROM dbmetrics_no_such_table", &[])
                    .await
            })
            .await;
        assert!(missing.is_err());
        // A typo in the operation: recorded as `other`, and the call is not failed by it.
        let typo = middleware
            .repository_method_tracker("selekt", "batches", "get_batch_by_title", async {
                client.query_opt(&select, &[&1_i64]).await
            })
            .await
            .unwrap();
        assert!(typo.is_some());
        let tracker = QueryPerformanceTracker::new(middleware.metrics().clone());
        let typo: Result<u64, tokio_postgres::Error> = tracker
            .track_query(
                String::from("SELECT"),
                "batches",
                client.execute("SELECT 1", &[]),
            )
            .await;
        assert_eq!(typo.unwrap(), 1);

        let e = scrape();
        assert_eq!(f.queries(&e, "select", "batches", "success"), 3.0);
        assert_eq!(f.queries(&e, "select", "batches", "error"), 1.0);
        assert_eq!(f.errors(&e, "select", "batches", "undefined_table"), 1.0);
        assert_eq!(f.queries(&e, "other", "batches", "success"), 2.0);
        assert_eq!(f.all_errors(&e), 1.0);
        // Nothing but the three operations above was recorded for this service.
        assert_eq!(
            e.sum(
                &format!("{}_database_query_duration_seconds_count", f.service),
                &[]
            ),
            6.0
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_tracked_future_dropped_before_it_finished_is_cancelled() {
    timeout(BOUND, async {
        let f = Fixture::new("svc_tx_tracker_cancel").await;
        let tracker = QueryPerformanceTracker::new(f.metrics.clone());
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let pending = tracker.track_transaction("stalls", async {
            started_tx.send(()).unwrap();
            std::future::pending::<Result<(), tokio_postgres::Error>>().await
        });
        tokio::select! {
            _ = pending => panic!("never finishes"),
            _ = started => {}
        }
        let e = scrape();
        assert_eq!(f.transactions(&e, "stalls", "cancelled"), 1.0);
        assert_eq!(f.transaction_durations(&e, "stalls", "cancelled"), 1.0);
        assert_eq!(f.all_errors(&e), 0.0);
    })
    .await
    .unwrap();
}
