//! Traces and the OpenTelemetry naming, with the real OpenTelemetry SDK and a real PostgreSQL:
//! `tracing-opentelemetry` turns dbmetrics' spans into OpenTelemetry spans, exported to the
//! SDK's in-memory exporter; the OpenTelemetry naming is asserted on the text the real
//! Prometheus exporter renders.
//!
//! With `DBMETRICS_OTEL_EXPOSITION_OUT=<file>` the rendered text is also written to that file
//! (for `promtool check metrics`), and with `--nocapture` the span tree of a request is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use dbmetrics::{
    ClassifyError, DatabaseMetrics, Naming, QueryPerformanceTracker, TrackedPool,
    TrackedRepository, create_infrastructure_enhancer, track_query, track_transaction, transaction,
};
use dbmetrics_tests::{Exposition, database, prometheus, unique};
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Every test is bounded: a hung server fails the test instead of hanging the suite.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl ClassifyError for RepoError {
    fn error_type(&self) -> &'static str {
        dbmetrics::classify::classify(self)
    }
}

#[derive(Clone, TrackedRepository)]
struct Repo {
    pool: TrackedPool,
    /// The real table; the label is the one written in the attribute.
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl Repo {
    #[track_query(select, "otel_items")]
    async fn count(&self) -> Result<i64, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table), &[])
            .await?;
        Ok(row.get(0))
    }

    #[track_query(insert, "otel_items")]
    async fn insert(&self, id: i64) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute(&format!("INSERT INTO {} VALUES ($1)", self.table), &[&id])
            .await?;
        Ok(())
    }

    /// A table nobody created: the server answers undefined_table (42P01).
    #[track_query(select, "otel_missing")]
    async fn missing(&self) -> Result<i64, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT count(*) FROM dbmetrics_otel_no_such_table", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Waits for an advisory lock another session holds: it finishes only when that session
    /// lets go, so a timeout around it always cancels it.
    #[track_query(select, "otel_locks")]
    async fn wait_for_lock(&self, key: i64) -> Result<(), RepoError> {
        let client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await?;
        Ok(())
    }

    #[track_transaction("otel_pair")]
    async fn insert_pair(&self, id: i64) -> Result<(), RepoError> {
        self.insert(id).await?;
        self.insert(id + 1).await
    }
}

/// The OpenTelemetry SDK with an in-memory exporter, behind `tracing-opentelemetry`, as the
/// default subscriber of this thread until the guard drops.
struct Traces {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Traces {
    fn install() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("dbmetrics-tests"));
        let subscriber = tracing_subscriber::registry().with(layer);
        Self {
            exporter,
            _provider: provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The spans that ended so far.
    fn spans(&self) -> Vec<SpanData> {
        self.exporter
            .get_finished_spans()
            .expect("the exporter answers")
    }

    /// The one ended span called `name`.
    fn one(&self, name: &str) -> SpanData {
        let mut found: Vec<SpanData> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "spans called {name:?}: {:#?}", self.spans());
        found.remove(0)
    }
}

/// The attributes of `span` as strings.
fn attributes(span: &SpanData) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        // what tracing-opentelemetry adds to every span: timings, source location, thread
        .filter(|kv| {
            let key = kv.key.as_str();
            !(["busy_ns", "idle_ns", "target"].contains(&key)
                || key.starts_with("code.")
                || key.starts_with("thread."))
        })
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn repo(naming: Naming, max_size: usize) -> (Repo, String) {
    prometheus();
    let service = unique("svc_otel");
    let pool_name = unique("otel_pool");
    let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::from_config(
        database().config.clone(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    ))
    .max_size(max_size)
    .wait_timeout(Some(Duration::from_millis(300)))
    .runtime(deadpool_postgres::Runtime::Tokio1)
    .build()
    .unwrap();
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .pool_name(&pool_name)
        .naming(naming)
        .build()
        .unwrap();
    assert_eq!(metrics.naming(), naming);
    let tracked = create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool, &pool_name);
    let table = unique("otel_items");
    tracked
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY)"))
        .await
        .unwrap();
    (
        Repo {
            pool: tracked,
            table,
            metrics,
        },
        pool_name,
    )
}

#[tokio::test]
async fn a_tracked_query_is_a_client_span_inside_the_callers_span() {
    let traces = Traces::install();
    let (repo, pool_name) = repo(Naming::Service, 2).await;
    let request = tracing::info_span!("request");
    let count = tokio::time::timeout(BOUND, repo.count().instrument(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 0);

    let request = traces.one("request");
    let query = traces.one("SELECT otel_items");
    assert_eq!(query.span_kind, SpanKind::Client);
    assert_eq!(query.status, Status::Unset);
    assert_eq!(
        attributes(&query),
        map(&[
            ("db.system.name", "postgresql"),
            ("db.operation.name", "SELECT"),
            ("db.collection.name", "otel_items"),
        ])
    );
    assert_eq!(query.parent_span_id, request.span_context.span_id());
    assert_eq!(
        query.span_context.trace_id(),
        request.span_context.trace_id()
    );

    // The checkout inside the query is its child, over the wait for a connection.
    let acquire = traces.one("pool.acquire");
    assert_eq!(acquire.parent_span_id, query.span_context.span_id());
    assert_eq!(acquire.span_kind, SpanKind::Internal);
    assert_eq!(acquire.status, Status::Unset);
    assert_eq!(
        attributes(&acquire),
        map(&[
            ("db.system.name", "postgresql"),
            ("db.client.connection.pool.name", &pool_name),
        ])
    );
    assert_eq!(traces.spans().len(), 3);
}

#[tokio::test]
async fn a_server_error_sets_status_error_with_its_class_and_sqlstate() {
    let traces = Traces::install();
    let (repo, _) = repo(Naming::Service, 2).await;
    let err = tokio::time::timeout(BOUND, repo.missing())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.error_type(), "undefined_table");

    let query = traces.one("SELECT otel_missing");
    assert_eq!(query.span_kind, SpanKind::Client);
    assert_eq!(query.status, Status::error(""));
    assert_eq!(
        attributes(&query),
        map(&[
            ("db.system.name", "postgresql"),
            ("db.operation.name", "SELECT"),
            ("db.collection.name", "otel_missing"),
            ("error.type", "undefined_table"),
            ("db.response.status_code", "42P01"),
        ])
    );
    // A root span: no caller span was current.
    assert_eq!(query.parent_span_id, SpanId::INVALID);
}

#[tokio::test]
async fn transactions_are_spans_whose_queries_are_their_children() {
    let traces = Traces::install();
    let (repo, _) = repo(Naming::Service, 2).await;
    let request = tracing::info_span!("request");
    tokio::time::timeout(BOUND, repo.insert_pair(1).instrument(request))
        .await
        .unwrap()
        .unwrap();

    let request = traces.one("request");
    let tx = traces.one("transaction otel_pair");
    assert_eq!(tx.parent_span_id, request.span_context.span_id());
    assert_eq!(tx.span_kind, SpanKind::Internal);
    assert_eq!(tx.status, Status::Unset);
    assert_eq!(
        attributes(&tx),
        map(&[
            ("db.system.name", "postgresql"),
            ("dbmetrics.transaction.name", "otel_pair"),
        ])
    );
    let inserts: Vec<SpanData> = traces
        .spans()
        .into_iter()
        .filter(|s| s.name == "INSERT otel_items")
        .collect();
    assert_eq!(inserts.len(), 2);
    for insert in &inserts {
        assert_eq!(insert.parent_span_id, tx.span_context.span_id());
        assert_eq!(insert.span_kind, SpanKind::Client);
    }
    print_tree(&traces.spans());

    // `transaction::run` with the tracker inside: the same shape, and a failure inside marks
    // both the query and the transaction.
    let tracker = QueryPerformanceTracker::new(repo.metrics.clone());
    let mut client = repo.pool.get().await.unwrap();
    let table = repo.table.clone();
    let result = tokio::time::timeout(
        BOUND,
        transaction::run(&repo.metrics, &mut *client, "otel_run", |tx| {
            Box::pin(async move {
                let sql = format!("INSERT INTO {table} VALUES (1)"); // id 1 exists
                tracker
                    .track_query("insert", "otel_run_items", tx.execute(&sql, &[]))
                    .await
            })
        }),
    )
    .await
    .unwrap();
    assert!(result.is_err());
    let run = traces.one("transaction otel_run");
    let insert = traces.one("INSERT otel_run_items");
    assert_eq!(insert.parent_span_id, run.span_context.span_id());
    for span in [&run, &insert] {
        assert_eq!(span.status, Status::error(""));
        let attrs = attributes(span);
        assert_eq!(attrs["error.type"], "unique_violation");
        assert_eq!(attrs["db.response.status_code"], "23505");
    }
}

#[tokio::test]
async fn a_cancelled_call_ends_its_span_marked_cancelled() {
    let traces = Traces::install();
    let (repo, _) = repo(Naming::Service, 2).await;
    // Another session holds the lock, so the tracked call waits until the timeout drops it.
    let holder = database().pool(1);
    let holder = holder.get().await.unwrap();
    let key: i64 = 0x0DB0_07E1 + i64::from(std::process::id());
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(200), repo.wait_for_lock(key)).await;
    assert!(
        cancelled.is_err(),
        "the lock is held: the call cannot finish"
    );

    // The future was dropped: its span has ended and is exported.
    let query = traces.one("SELECT otel_locks");
    assert_eq!(query.status, Status::error(""));
    assert_eq!(attributes(&query)["error.type"], "cancelled");
    assert!(!attributes(&query).contains_key("db.response.status_code"));
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pool_timeout_marks_the_acquire_span() {
    let traces = Traces::install();
    let (repo, pool_name) = repo(Naming::Service, 1).await;
    let held = repo.pool.get().await.unwrap();
    assert_eq!(traces.spans().len(), 1, "the held checkout's span");
    let err = tokio::time::timeout(BOUND, repo.count())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.error_type(), "pool_timeout");
    drop(held);

    let acquires: Vec<SpanData> = traces
        .spans()
        .into_iter()
        .filter(|s| s.name == "pool.acquire")
        .collect();
    assert_eq!(acquires.len(), 2);
    let failed = &acquires[1];
    assert_eq!(failed.status, Status::error(""));
    assert_eq!(
        attributes(failed),
        map(&[
            ("db.system.name", "postgresql"),
            ("db.client.connection.pool.name", &pool_name),
            ("error.type", "pool_timeout"),
        ])
    );
    let query = traces.one("SELECT otel_items");
    assert_eq!(failed.parent_span_id, query.span_context.span_id());
    assert_eq!(attributes(&query)["error.type"], "pool_timeout");
    assert!(!attributes(&query).contains_key("db.response.status_code"));
}

#[tokio::test]
async fn the_opentelemetry_naming_renders_the_prometheus_way() {
    let (repo, pool_name) = repo(Naming::OpenTelemetry, 2).await;
    tokio::time::timeout(BOUND, async {
        repo.insert_pair(1).await.unwrap();
        assert_eq!(repo.count().await.unwrap(), 2);
        assert!(repo.missing().await.is_err());
        assert!(repo.insert_pair(2).await.is_err()); // id 2 exists
    })
    .await
    .unwrap();
    let holder = database().pool(1);
    let holder = holder.get().await.unwrap();
    let key: i64 = 0x0DB0_07E2 + i64::from(std::process::id());
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), repo.wait_for_lock(key))
            .await
            .is_err()
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();

    let text = prometheus().render();
    let e = Exposition::parse(&text);

    // Families: dots to `_`, the unit and `_total` added; HELP from the conventions.
    for (family, kind) in [
        ("db_client_operation_duration_seconds", "histogram"),
        ("db_client_connection_count", "gauge"),
        ("db_client_connection_max", "gauge"),
        ("db_client_connection_pending_requests", "gauge"),
        ("db_client_connection_timeouts_total", "counter"),
        ("db_client_connection_wait_time_seconds", "histogram"),
        ("db_client_connection_use_time_seconds", "histogram"),
        ("dbmetrics_transaction_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            e.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
        assert!(e.help.contains_key(family), "HELP of {family}");
    }
    assert_eq!(
        e.help["db_client_operation_duration_seconds"],
        "Duration of database client operations."
    );
    // This service has no `{service}_database_*` series.
    assert!(
        !e.lines
            .iter()
            .any(|l| l.name.starts_with(repo.metrics.service())),
        "{text}"
    );

    let op = |operation: &str, table: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![
            ("db_system_name", "postgresql"),
            ("db_operation_name", operation),
            ("db_collection_name", table),
        ];
        labels.extend_from_slice(extra);
        e.value("db_client_operation_duration_seconds_count", &labels)
    };
    // insert_pair(1): 2 inserts; insert_pair(2): the first insert fails (id 2 exists).
    assert_eq!(op("INSERT", "otel_items", &[]), 2.0);
    assert_eq!(
        op(
            "INSERT",
            "otel_items",
            &[
                ("error_type", "unique_violation"),
                ("db_response_status_code", "23505")
            ]
        ),
        1.0
    );
    assert_eq!(op("SELECT", "otel_items", &[]), 1.0);
    assert_eq!(
        op(
            "SELECT",
            "otel_missing",
            &[
                ("error_type", "undefined_table"),
                ("db_response_status_code", "42P01")
            ]
        ),
        1.0
    );
    assert_eq!(
        op("SELECT", "otel_locks", &[("error_type", "cancelled")]),
        1.0
    );
    // Sub-millisecond buckets, and the conventions' advice (1 ms ... 10 s) among them.
    let bucket = |le: &str| {
        e.get(
            "db_client_operation_duration_seconds_bucket",
            &[
                ("db_system_name", "postgresql"),
                ("db_operation_name", "INSERT"),
                ("db_collection_name", "otel_items"),
                ("le", le),
            ],
        )
    };
    for le in [
        "0.0001", "0.00025", "0.0005", "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5",
        "10",
    ] {
        assert!(bucket(le).is_some(), "bucket le={le}: {text}");
    }
    assert_eq!(bucket("+Inf"), Some(2.0));

    let tx = |extra: &[(&str, &str)]| {
        let mut labels = vec![("dbmetrics_transaction_name", "otel_pair")];
        labels.extend_from_slice(extra);
        e.value("dbmetrics_transaction_duration_seconds_count", &labels)
    };
    assert_eq!(tx(&[]), 1.0);
    assert_eq!(
        tx(&[
            ("error_type", "unique_violation"),
            ("db_response_status_code", "23505")
        ]),
        1.0
    );

    // The pool: 6 checkouts (3 inserts, count, missing, the cancelled call), all returned.
    let pool = [("db_client_connection_pool_name", pool_name.as_str())];
    assert_eq!(
        e.value("db_client_connection_wait_time_seconds_count", &pool),
        6.0
    );
    assert_eq!(
        e.value("db_client_connection_use_time_seconds_count", &pool),
        6.0
    );
    assert_eq!(e.value("db_client_connection_timeouts_total", &pool), 0.0);
    assert_eq!(e.value("db_client_connection_max", &pool), 2.0);
    assert_eq!(e.value("db_client_connection_pending_requests", &pool), 0.0);
    let state = |s| {
        e.get(
            "db_client_connection_count",
            &[
                ("db_client_connection_pool_name", pool_name.as_str()),
                ("db_client_connection_state", s),
            ],
        )
    };
    // Two connections were opened (the table's creation and a query), none is held.
    assert_eq!(state("used"), Some(0.0), "{text}");
    assert!(state("idle").is_some(), "{text}");

    if let Some(path) = std::env::var_os("DBMETRICS_OTEL_EXPOSITION_OUT") {
        std::fs::write(&path, &text).expect("the exposition file is writable");
    }
}

/// Prints the spans as a tree (`--nocapture`), the way the README shows it.
fn print_tree(spans: &[SpanData]) {
    fn walk(spans: &[SpanData], parent: SpanId, depth: usize) {
        let mut children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by_key(|s| s.start_time);
        for span in children {
            let attrs: Vec<String> = attributes(span)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "{}{} [{:?}, {:?}] {}",
                "  ".repeat(depth),
                span.name,
                span.span_kind,
                span.status,
                attrs.join(" ")
            );
            walk(spans, span.span_context.span_id(), depth + 1);
        }
    }
    walk(spans, SpanId::INVALID, 0);
}

#[tokio::test]
async fn one_service_has_one_naming() {
    let service = unique("svc_naming");
    let (first, second) = (database().pool(1), database().pool(1));
    let metrics = DatabaseMetrics::builder(&first, &service)
        .naming(Naming::OpenTelemetry)
        .build()
        .unwrap();
    assert_eq!(metrics.naming(), Naming::OpenTelemetry);
    let err = DatabaseMetrics::builder(&second, &service)
        .pool_name("second")
        .naming(Naming::Service)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            dbmetrics::Error::ConflictingSetup {
                option: "naming",
                ..
            }
        ),
        "{err}"
    );
    // Left out: the naming in force for the service.
    let second = DatabaseMetrics::builder(&second, &service)
        .pool_name("second")
        .build()
        .unwrap();
    assert_eq!(second.naming(), Naming::OpenTelemetry);
    assert_eq!(
        DatabaseMetrics::new(&service).unwrap().naming(),
        Naming::OpenTelemetry
    );
    assert!(
        metrics
            .get_metrics()
            .contains_key("db.client.operation.duration")
    );
}
