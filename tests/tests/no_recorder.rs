//! No recorder installed: everything works and records nothing.
//!
//! This test binary never installs the process's recorder (it does not call
//! `dbmetrics_tests::prometheus()`), so the `metrics` facade hands out no-op handles. Against a
//! real PostgreSQL, every part of the library runs as usual: tracked queries (success, error,
//! cancelled, panic), the tracker, transactions, the pool poller, a tracked pool and health
//! checks, with the same results as with a recorder.
//!
//! "Records nothing" is observed the only way it can be: afterwards, a recorder is installed
//! (which succeeds, so nothing installed one before) and the same metrics handles, call sites
//! and error classes are driven again. Their handles were resolved while no recorder was
//! installed, so they are no-ops for good: the new recorder receives none of their series,
//! while a service set up after it, and a call site first used after it, do record (so the
//! empty result is not an artefact of a recorder that sees nothing).
//!
//! One test function, run on its own runtime, because the recorder is process-wide and
//! installed once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dbmetrics::{
    DatabaseMetrics, HealthStatus, Operation, QueryPerformanceTracker, TrackedPool,
    TrackedRepository, create_infrastructure_enhancer, track_query, transaction,
};
use dbmetrics_tests::{database, unique};
use metrics_util::debugging::DebuggingRecorder;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl dbmetrics::ClassifyError for RepoError {
    fn error_type(&self) -> &'static str {
        dbmetrics::classify::classify(self)
    }
}

#[derive(Clone, TrackedRepository)]
struct Repo {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl Repo {
    #[track_query(select, "numbers")]
    async fn one(&self) -> Result<i32, RepoError> {
        let c = self.pool.get().await?;
        Ok(c.query_one("SELECT 1::INT4", &[]).await?.get(0))
    }

    #[track_query(select, "missing")]
    async fn missing(&self) -> Result<u64, RepoError> {
        let c = self.pool.get().await?;
        Ok(c.execute("SELECT * FROM dbmetrics_no_such_table", &[])
            .await?)
    }

    #[track_query(select, "sleep")]
    async fn sleep(&self, seconds: f64) -> Result<(), RepoError> {
        let c = self.pool.get().await?;
        c.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
        Ok(())
    }

    #[track_query(other, "panics")]
    async fn panics(&self) -> Result<(), RepoError> {
        panic!("boom without a recorder");
    }

    /// Never called before the recorder is installed.
    #[track_query(select, "late")]
    async fn late(&self) -> Result<i32, RepoError> {
        self.one().await
    }
}

fn make_repo(service: &str) -> Repo {
    let pool = database().pool(2);
    let metrics = DatabaseMetrics::builder(&pool, service)
        .pool_name("main")
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("monitoring is set up without a recorder");
    let tracked = create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool, "main");
    Repo {
        pool: tracked,
        metrics,
    }
}

/// Every kind of call, with its expected result; the same with or without a recorder.
async fn drive(repo: &Repo) {
    let tracker = QueryPerformanceTracker::new(repo.metrics.clone());

    assert_eq!(repo.one().await.unwrap(), 1);
    let err = repo.missing().await.unwrap_err();
    match &err {
        RepoError::Db(e) => assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        ),
        other => panic!("the error reaches the caller unchanged, got {other:?}"),
    }
    assert!(
        timeout(Duration::ZERO, repo.sleep(0.2)).await.is_err(),
        "cancelled"
    );
    let panicked = tokio::spawn({
        let repo = repo.clone();
        async move { repo.panics().await }
    })
    .await
    .unwrap_err();
    assert_eq!(
        panicked.into_panic().downcast_ref::<&str>(),
        Some(&"boom without a recorder")
    );

    let value = tracker
        .track_transaction("no_recorder_tx", async {
            tracker
                .track_query(Operation::Select, "numbers", repo.one())
                .await
        })
        .await
        .unwrap();
    assert_eq!(value, 1);

    let mut client = repo.pool.get().await.unwrap();
    let sum: i32 = transaction::run(&repo.metrics, &mut client, "no_recorder_run", |tx| {
        Box::pin(async move {
            let row = tx.query_one("SELECT 40 + 2", &[]).await?;
            Ok::<_, tokio_postgres::Error>(row.get(0))
        })
    })
    .await
    .unwrap();
    assert_eq!(sum, 42);
    drop(client);

    // the pool served every checkout and is whole: nothing checked out once the connection
    // the cancelled call left has been checked (a bounded task: at most 250 ms while pg_sleep
    // runs, then it is returned or closed)
    let whole = Instant::now() + Duration::from_secs(20);
    loop {
        let status = repo.pool.pool().status();
        if status.size == status.available {
            break;
        }
        assert!(
            Instant::now() < whole,
            "the pool is whole again: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Names of the series the recorder holds.
fn series(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeSet<String> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.key().name().to_owned())
        .collect()
}

#[test]
fn without_a_recorder_everything_works_and_records_nothing() {
    let database = database();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        timeout(BOUND, async {
            let service = unique("norec");
            let repo = make_repo(&service);
            assert!(
                !repo.metrics.get_metrics().is_empty(),
                "the catalog is there"
            );

            drive(&repo).await;

            let checker = dbmetrics_tests::patient_checker(database.pool(2), &service);
            let summary = checker.get_health_summary().await;
            assert_eq!(summary.status, HealthStatus::Healthy, "{summary:?}");
            let detailed = checker.comprehensive_health_check().await;
            assert_eq!(
                detailed.overall_status,
                HealthStatus::Healthy,
                "{detailed:?}"
            );

            // Now a recorder: installing it succeeds, so none was installed before.
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("no recorder was installed before this one");

            // The same handle, sites and outcomes again, the poller ticking meanwhile: their
            // handles were resolved without a recorder and stay no-ops.
            drive(&repo).await;
            let poll_ticks = Duration::from_millis(100);
            tokio::time::sleep(poll_ticks).await;
            let prefix = format!("{service}_database_");
            let seen = series(&snapshotter);
            assert!(
                seen.iter().all(|name| !name.starts_with(&prefix)),
                "handles resolved without a recorder recorded into a later one: {seen:?}"
            );

            // Control: a call site first used now, and a service set up now, do record.
            assert_eq!(repo.late().await.unwrap(), 1);
            let after = unique("norec_after");
            drive(&make_repo(&after)).await;
            let seen = series(&snapshotter);
            let late = format!("{service}_database_query_duration_seconds");
            assert!(seen.contains(&late), "{seen:?}");
            assert_eq!(
                seen.iter().filter(|name| name.starts_with(&prefix)).count(),
                1,
                "only the late site's series: {seen:?}"
            );
            for name in [
                "query_duration_seconds",
                "errors_total",
                "transactions_total",
                "connections_acquired_total",
                "connections_overflow",
            ] {
                let full = format!("{after}_database_{name}");
                assert!(seen.contains(&full), "{full} in {seen:?}");
            }
        })
        .await
        .expect("the test finished within its bound");
    });
}
