//! `dbmetrics::testing`: captures used the way a service's own tests use them, in parallel
//! multi-threaded tests against a real PostgreSQL. Every test here uses the same service name
//! and the same table label on purpose: a capture is scoped by instance, not by name.

use std::time::Duration;

use dbmetrics::testing::{MetricsCapture, Value};
use dbmetrics::{
    CallResult, ClassifyError, DatabaseMetrics, Operation, QueryMetrics, TrackedRepository,
    track_query, transaction,
};
use dbmetrics::{InMemoryMetrics, NoopMetrics};
use dbmetrics_tests::{database, prometheus, scrape, unique};
use tokio::time::timeout;

const SERVICE: &str = "content_service";
const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("rejected")]
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

/// A repository as a service writes it: it holds a `DatabaseMetrics`.
#[derive(Clone, TrackedRepository)]
#[tracked(table = "content")]
struct ContentRepository {
    pool: deadpool_postgres::Pool,
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ContentRepository {
    async fn with_table(metrics: DatabaseMetrics) -> Self {
        let repo = Self {
            pool: database().pool(4),
            table: unique("capture_content"),
            metrics,
        };
        repo.pool
            .get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE {} (id BIGINT PRIMARY KEY, title TEXT NOT NULL)",
                repo.table
            ))
            .await
            .unwrap();
        repo
    }

    #[track_query(insert)]
    async fn create(&self, id: i64, title: &str) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(
                &format!("INSERT INTO {} (id, title) VALUES ($1, $2)", self.table),
                &[&id, &title],
            )
            .await?;
        Ok(())
    }

    #[track_query(select)]
    async fn title(&self, id: i64) -> Result<Option<String>, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT title FROM {} WHERE id = $1", self.table),
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// `n` inserts and `n` selects, spread over the runtime's worker threads, and one duplicate.
async fn exercise(n: i64) {
    let capture = MetricsCapture::new(SERVICE).unwrap();
    let repo = ContentRepository::with_table(capture.metrics()).await;
    let tasks: Vec<_> = (0..n)
        .map(|id| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.create(id, "t").await.unwrap();
                assert_eq!(repo.title(id).await.unwrap().as_deref(), Some("t"));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(matches!(repo.create(0, "dup").await, Err(RepoError::Db(_))));

    assert_eq!(
        capture.query_count(Operation::Insert, "content", CallResult::Success),
        n as u64
    );
    assert_eq!(
        capture.query_count(Operation::Insert, "content", CallResult::Error),
        1
    );
    assert_eq!(
        capture.query_count(Operation::Select, "content", CallResult::Success),
        n as u64
    );
    assert_eq!(
        capture.query_count(Operation::Select, "content", CallResult::Cancelled),
        0
    );
    assert_eq!(
        capture.query_errors(Operation::Insert, "content"),
        [("unique_violation".to_owned(), 1)].into()
    );
    assert!(
        capture
            .query_errors(Operation::Select, "content")
            .is_empty()
    );
    let durations = capture.query_durations(Operation::Select, "content", CallResult::Success);
    assert_eq!(durations.len() as i64, n);
    assert!(durations.iter().all(|s| (0.0..60.0).contains(s)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_captures_count_only_their_own_calls_3() {
    timeout(BOUND, exercise(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_captures_count_only_their_own_calls_5() {
    timeout(BOUND, exercise(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_captures_count_only_their_own_calls_8() {
    timeout(BOUND, exercise(8)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_by_result_and_error_class() {
    timeout(BOUND, async {
        let capture = MetricsCapture::new(SERVICE).unwrap();
        let metrics = capture.metrics();
        let repo = ContentRepository::with_table(metrics.clone()).await;
        let mut client = repo.pool.get().await.unwrap();
        let insert = format!("INSERT INTO {} (id, title) VALUES ($1, $2)", repo.table);

        transaction::run(&metrics, &mut client, "archive_content", |tx| {
            Box::pin(async { Ok::<_, RepoError>(tx.execute(&insert, &[&1_i64, &"a"]).await?) })
        })
        .await
        .unwrap();
        let rejected = transaction::run(&metrics, &mut client, "archive_content", |tx| {
            Box::pin(async {
                tx.execute(&insert, &[&2_i64, &"b"]).await?;
                Err::<(), _>(RepoError::Rejected)
            })
        })
        .await;
        assert!(rejected.is_err());
        let cut = timeout(
            Duration::from_millis(1),
            transaction::run(&metrics, &mut client, "archive_content", |_tx| {
                Box::pin(std::future::pending::<Result<(), RepoError>>())
            }),
        )
        .await;
        assert!(cut.is_err());

        for result in CallResult::ALL {
            assert_eq!(
                capture.transaction_count("archive_content", result),
                1,
                "{result}"
            );
            assert_eq!(
                capture
                    .transaction_durations("archive_content", result)
                    .len(),
                1
            );
        }
        assert_eq!(
            capture.transaction_errors("archive_content"),
            [("rejected".to_owned(), 1)].into()
        );
        // The raw view: every series, by full name and labels.
        let series = capture.series();
        let total = series
            .iter()
            .find(|s| {
                s.name == "content_service_database_transactions_total"
                    && s.labels["result"] == "error"
            })
            .unwrap();
        assert_eq!(total.value, Value::Counter(1));
        assert_eq!(
            capture.counter(
                "content_service_database_errors_total",
                &[
                    ("operation", "transaction"),
                    ("table", "archive_content"),
                    ("error_type", "rejected")
                ]
            ),
            1
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_captured_reaches_the_process_recorder() {
    timeout(BOUND, async {
        prometheus(); // installed, as in a service's test binary that also scrapes
        let capture = MetricsCapture::new(SERVICE).unwrap();
        let repo = ContentRepository::with_table(capture.metrics()).await;
        repo.create(1, "x").await.unwrap();
        assert_eq!(
            capture.query_count(Operation::Insert, "content", CallResult::Success),
            1
        );
        let e = scrape();
        assert!(
            e.lines
                .iter()
                .all(|l| !l.name.starts_with("content_service_")),
            "every test of this binary records into its own capture only"
        );
        assert!(!e.help.keys().any(|n| n.starts_with("content_service_")));
    })
    .await
    .unwrap();
}

/// A repository generic over its metrics: `InMemoryMetrics` in tests, `NoopMetrics` when the
/// test is not about metrics, `DatabaseMetrics` in production.
#[derive(Clone, TrackedRepository)]
struct GenericRepository<M: QueryMetrics + Clone> {
    pool: deadpool_postgres::Pool,
    #[metrics]
    metrics: M,
}

impl<M: QueryMetrics + Clone> GenericRepository<M> {
    #[track_query(select, "numbers")]
    async fn one(&self) -> Result<i32, RepoError> {
        let client = self.pool.get().await?;
        Ok(client.query_one("SELECT 1::INT4", &[]).await?.get(0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_and_noop_metrics_for_generic_repositories() {
    timeout(BOUND, async {
        let memory = InMemoryMetrics::new();
        let repo = GenericRepository {
            pool: database().pool(2),
            metrics: memory.clone(),
        };
        assert_eq!(repo.one().await.unwrap(), 1);
        assert_eq!(repo.one().await.unwrap(), 1);
        assert_eq!(
            memory.query_count(Operation::Select, "numbers", CallResult::Success),
            2
        );
        let samples = memory.samples();
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.function == "one"));

        let quiet = GenericRepository {
            pool: repo.pool.clone(),
            metrics: NoopMetrics,
        };
        assert_eq!(quiet.one().await.unwrap(), 1);
        assert_eq!(
            memory.samples().len(),
            2,
            "the no-op repository recorded nowhere"
        );
    })
    .await
    .unwrap();
}
