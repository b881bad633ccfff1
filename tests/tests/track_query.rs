//! `#[track_query]` against a real PostgreSQL, asserted on the rendered Prometheus text.

use std::sync::Arc;
use std::time::Duration;

use dbmetrics::{DatabaseMetrics, TrackedRepository, setup_database_monitoring, track_query};
use dbmetrics_tests::{database, prometheus, scrape, unique};

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("not found")]
    NotFound,
}

#[derive(Clone, TrackedRepository)]
#[tracked(table = "items")]
struct ItemRepository {
    pool: deadpool_postgres::Pool,
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ItemRepository {
    async fn create_table(&self) {
        let client = self.pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE {} (id BIGINT PRIMARY KEY, title TEXT NOT NULL)",
                self.table
            ))
            .await
            .unwrap();
    }

    #[track_query(insert, "items")]
    async fn insert(&self, id: i64, title: &str) -> Result<(), RepoError> {
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
    async fn title(&self, id: i64) -> Result<String, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT title FROM {} WHERE id = $1", self.table),
                &[&id],
            )
            .await?
            .ok_or(RepoError::NotFound)?;
        Ok(row.get(0))
    }

    #[track_query(select, "missing_table")]
    async fn from_missing_table(&self) -> Result<u64, RepoError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("SELECT * FROM dbmetrics_no_such_table", &[])
            .await?)
    }

    #[track_query(select, "sleep")]
    async fn sleep(&self, seconds: f64) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client.execute("SELECT pg_sleep($1)", &[&seconds]).await?;
        Ok(())
    }

    #[track_query(other, "panics")]
    async fn panics(&self) -> Result<(), RepoError> {
        panic!("boom in a tracked body");
    }

    #[track_query(update, "items")]
    fn sync_method(&self, fail: bool) -> Result<u8, RepoError> {
        if fail {
            return Err(RepoError::NotFound);
        }
        Ok(1)
    }

    #[track_query(delete, "items")]
    async fn by_value(self) -> Result<usize, RepoError> {
        let table = self.table; // the body may move `self`
        Ok(table.len())
    }

    #[track_query(upsert, "items")]
    async fn by_mut(&mut self) -> Result<(), RepoError> {
        self.table.push('x');
        self.table.pop();
        Ok(())
    }

    #[track_query(copy, "items")]
    async fn by_arc(self: Arc<Self>) -> Result<(), RepoError> {
        Ok(())
    }

    #[track_query(call, "items")]
    async fn generic<T: std::fmt::Display + Send>(&self, value: T) -> Result<String, RepoError> {
        Ok(value.to_string())
    }

    #[track_query(ddl, "items")]
    fn impl_trait(&self) -> impl Iterator<Item = u8> {
        [1, 2, 3].into_iter()
    }

    #[track_query(select, "items")]
    async fn elided<'a>(&self, text: &'a str) -> Result<&'a str, RepoError> {
        if text.is_empty() {
            return Err(RepoError::NotFound);
        }
        Ok(&text[..1])
    }

    #[track_query(select, "items")]
    fn elided_sync(&self) -> Option<&str> {
        self.table.get(..5)
    }
}

type RepoResult<T> = Result<T, RepoError>;

/// No `#[metrics]` marker: the one `DatabaseMetrics` field is the metrics field.
#[derive(TrackedRepository)]
struct ImplicitRepository {
    label: &'static str,
    metrics: DatabaseMetrics,
}

impl ImplicitRepository {
    #[track_query(select, "aliased")]
    async fn through_an_alias(&self, fail: bool) -> RepoResult<&'static str> {
        if fail {
            Err(RepoError::NotFound)
        } else {
            Ok(self.label)
        }
    }
}

#[track_query(select, "free", metrics = metrics)]
async fn free_function(
    metrics: &DatabaseMetrics,
    client: &tokio_postgres::Client,
) -> Result<i32, tokio_postgres::Error> {
    let row = client.query_one("SELECT 1::INT4", &[]).await?;
    Ok(row.get(0))
}

async fn setup(prefix: &str) -> (ItemRepository, String) {
    prometheus();
    let service = unique(prefix);
    let pool = database().pool(4);
    let metrics = setup_database_monitoring(&pool, &service).unwrap();
    let repo = ItemRepository {
        pool,
        table: unique("items"),
        metrics,
    };
    repo.create_table().await;
    (repo, service)
}

fn q(service: &str) -> String {
    format!("{service}_database_query_duration_seconds")
}

#[tokio::test]
async fn success_and_error_counts_per_operation_and_table() {
    let (repo, service) = setup("svc_counts").await;
    repo.insert(1, "first").await.unwrap();
    repo.insert(2, "second").await.unwrap();
    let dup = repo.insert(1, "again").await.unwrap_err();
    assert!(matches!(dup, RepoError::Db(_)));
    assert_eq!(repo.title(2).await.unwrap(), "second");
    assert!(matches!(repo.title(99).await, Err(RepoError::NotFound)));
    assert!(repo.from_missing_table().await.is_err());

    let e = scrape();
    let name = q(&service);
    assert_eq!(e.types[&name], "histogram");
    let count = |op, table, result| {
        e.value(
            &format!("{name}_count"),
            &[("operation", op), ("table", table), ("result", result)],
        )
    };
    assert_eq!(count("insert", "items", "success"), 2.0);
    assert_eq!(count("insert", "items", "error"), 1.0);
    assert_eq!(count("select", "items", "success"), 1.0);
    assert_eq!(count("select", "items", "error"), 1.0);
    assert_eq!(count("select", "missing_table", "error"), 1.0);
    assert_eq!(count("select", "missing_table", "success"), 0.0);

    let errors = format!("{service}_database_errors_total");
    assert_eq!(e.types[&errors], "counter");
    assert_eq!(
        e.value(
            &errors,
            &[
                ("operation", "insert"),
                ("table", "items"),
                ("error_type", "unique_violation")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            &errors,
            &[
                ("operation", "select"),
                ("table", "missing_table"),
                ("error_type", "undefined_table")
            ]
        ),
        1.0
    );
    // RepoError::NotFound has no driver error in its chain.
    assert_eq!(
        e.value(
            &errors,
            &[
                ("operation", "select"),
                ("table", "items"),
                ("error_type", "other")
            ]
        ),
        1.0
    );
    // Every error series of this service is one of the three above.
    assert_eq!(e.sum(&errors, &[]), 3.0);
    // Buckets: a loopback insert takes well under 10 s, so the 10 s bucket holds both.
    assert_eq!(
        e.value(
            &format!("{name}_bucket"),
            &[
                ("operation", "insert"),
                ("table", "items"),
                ("result", "success"),
                ("le", "10")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn a_query_cut_off_by_a_timeout_is_cancelled() {
    let (repo, service) = setup("svc_cancel").await;
    let cut = tokio::time::timeout(Duration::from_millis(100), repo.sleep(5.0)).await;
    assert!(cut.is_err(), "the timeout fires first");
    let e = scrape();
    let labels = [
        ("operation", "select"),
        ("table", "sleep"),
        ("result", "cancelled"),
    ];
    assert_eq!(e.value(&format!("{}_count", q(&service)), &labels), 1.0);
    // Recorded when dropped: about 100 ms, far from the 5 s of the query.
    let sum = e.value(&format!("{}_sum", q(&service)), &labels);
    assert!((0.09..2.0).contains(&sum), "cancelled after {sum} s");
    assert_eq!(
        e.sum(&format!("{service}_database_errors_total"), &[]),
        0.0,
        "a cancellation is not an error"
    );
}

#[tokio::test]
async fn a_panic_is_an_error_and_carries_on() {
    let (repo, service) = setup("svc_panic").await;
    let task = tokio::spawn(async move { repo.panics().await });
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    let payload = err.into_panic();
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("boom in a tracked body")
    );
    let e = scrape();
    assert_eq!(
        e.value(
            &format!("{}_count", q(&service)),
            &[
                ("operation", "other"),
                ("table", "panics"),
                ("result", "error")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            &format!("{service}_database_errors_total"),
            &[
                ("operation", "other"),
                ("table", "panics"),
                ("error_type", "panic")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn receivers_generics_sync_and_free_functions() {
    let (repo, service) = setup("svc_shapes").await;
    assert_eq!(repo.sync_method(false).unwrap(), 1);
    assert!(repo.sync_method(true).is_err());
    assert_eq!(repo.generic(42).await.unwrap(), "42");
    assert_eq!(repo.impl_trait().sum::<u8>(), 6);
    let mut owned = repo.clone();
    owned.by_mut().await.unwrap();
    Arc::new(repo.clone()).by_arc().await.unwrap();
    assert!(repo.clone().by_value().await.unwrap() > 0);

    let client = repo.pool.get().await.unwrap();
    assert_eq!(free_function(&repo.metrics, &client).await.unwrap(), 1);
    assert_eq!(repo.elided("abc").await.unwrap(), "a");
    assert!(repo.elided("").await.is_err());
    assert_eq!(repo.elided_sync(), Some("items"));
    // Tracked futures stay Send: they can be spawned.
    let spawned = repo.clone();
    tokio::spawn(async move { spawned.generic("s").await })
        .await
        .unwrap()
        .unwrap();

    let e = scrape();
    let count = |op, table, result| {
        e.value(
            &format!("{}_count", q(&service)),
            &[("operation", op), ("table", table), ("result", result)],
        )
    };
    assert_eq!(count("update", "items", "success"), 1.0);
    assert_eq!(count("update", "items", "error"), 1.0);
    assert_eq!(count("call", "items", "success"), 2.0);
    assert_eq!(count("select", "items", "success"), 2.0);
    assert_eq!(count("select", "items", "error"), 1.0);
    assert_eq!(count("ddl", "items", "success"), 1.0);
    assert_eq!(count("upsert", "items", "success"), 1.0);
    assert_eq!(count("copy", "items", "success"), 1.0);
    assert_eq!(count("delete", "items", "success"), 1.0);
    assert_eq!(count("select", "free", "success"), 1.0);
}

#[tokio::test]
async fn a_result_type_alias_and_the_implicit_metrics_field() {
    let (repo, service) = setup("svc_alias").await;
    let implicit = ImplicitRepository {
        label: "ok",
        metrics: repo.metrics.clone(),
    };
    assert_eq!(implicit.through_an_alias(false).await.unwrap(), "ok");
    assert!(implicit.through_an_alias(true).await.is_err());
    assert!(implicit.through_an_alias(true).await.is_err());
    let e = scrape();
    let count = |result| {
        e.value(
            &format!("{}_count", q(&service)),
            &[
                ("operation", "select"),
                ("table", "aliased"),
                ("result", result),
            ],
        )
    };
    assert_eq!(count("success"), 1.0);
    assert_eq!(count("error"), 2.0);
    assert_eq!(
        e.value(
            &format!("{service}_database_errors_total"),
            &[
                ("operation", "select"),
                ("table", "aliased"),
                ("error_type", "other")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn one_call_site_records_into_the_instance_it_was_given() {
    let (repo_a, service_a) = setup("svc_inst_a").await;
    let (mut repo_b, service_b) = setup("svc_inst_b").await;
    repo_b.table = repo_a.table.clone();
    repo_a.insert(10, "a").await.unwrap();
    repo_b.insert(11, "b").await.unwrap();
    repo_b.insert(12, "b").await.unwrap();
    let e = scrape();
    let labels = [
        ("operation", "insert"),
        ("table", "items"),
        ("result", "success"),
    ];
    assert_eq!(e.value(&format!("{}_count", q(&service_a)), &labels), 1.0);
    assert_eq!(e.value(&format!("{}_count", q(&service_b)), &labels), 2.0);
}

#[tokio::test]
async fn every_metric_is_described_and_the_catalog_is_complete() {
    let (repo, service) = setup("svc_catalog").await;
    let catalog = repo.metrics.get_metrics();
    assert_eq!(catalog.len(), 17);
    let info = &catalog[&q(&service)];
    assert_eq!(info.labels, &["operation", "table", "result"]);
    repo.insert(1, "x").await.unwrap();
    let e = scrape();
    // Pool series render at setup, before any checkout; query series with their first sample.
    for name in [
        format!("{service}_database_connections_max"),
        format!("{service}_database_connections_acquired_total"),
        format!("{service}_database_connection_timeouts_total"),
        q(&service),
    ] {
        assert!(e.help.contains_key(&name), "HELP for {name}");
    }
    assert_eq!(
        e.value(
            &format!("{service}_database_connections_max"),
            &[("pool", "default")]
        ),
        4.0
    );
}

#[tokio::test]
async fn invalid_service_names_are_errors() {
    let pool = database().pool(1);
    for bad in ["content-service", "9lives", "", "svc name"] {
        let err = setup_database_monitoring(&pool, bad).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{text}");
        assert!(text.contains(&format!("{bad:?}")), "{text}");
    }
}

#[test]
fn setup_outside_a_runtime_is_an_error() {
    let pool = database().pool(1);
    let err = setup_database_monitoring(&pool, &unique("svc_nort")).unwrap_err();
    assert!(err.to_string().contains("needs a Tokio runtime"), "{err}");
}

#[tokio::test]
async fn the_same_service_and_pool_twice_share_one_handle() {
    prometheus();
    let service = unique("svc_twice");
    let pool = database().pool(2);
    let a = setup_database_monitoring(&pool, &service).unwrap();
    let b = setup_database_monitoring(&pool, &service).unwrap();
    assert!(a.same_handle(&b), "one shared handle");
    let other_pool = database().pool(2);
    let err = setup_database_monitoring(&other_pool, &service).unwrap_err();
    assert!(err.to_string().contains("pool_name"), "{err}");
    let replica = DatabaseMetrics::builder(&other_pool, &service)
        .pool_name("replica")
        .build()
        .unwrap();
    assert_eq!(replica.pool_name(), "replica");
}
