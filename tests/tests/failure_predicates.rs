//! What counts as a failure: `ok_if` and `error_if` on `#[track_query]` and
//! `#[track_transaction]`, `.ok_if(..)`/`.error_if(..)` on the tracker's and the middleware's
//! calls, and `ClassifyError::is_failure`, against a real PostgreSQL, asserted on the rendered
//! Prometheus text. A `NotFound` must not feed the error ratio; an empty answer where one was
//! required must.

use std::collections::BTreeMap;

use dbmetrics::{
    ClassifyError, DatabaseMetrics, Operation, QueryPerformanceTracker, TrackedRepository,
    create_repository_middleware, track_query, track_transaction, transaction,
};
use dbmetrics_tests::{Exposition, database, prometheus, scrape, unique};

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("not found")]
    NotFound,
    #[error("invalid input")]
    Invalid,
}

/// The default classification; every variant is a failure (the default `is_failure`). The
/// tracker needs the implementation; the attributes would classify without it.
impl ClassifyError for RepoError {
    fn error_type(&self) -> &'static str {
        match self {
            RepoError::NotFound => "not_found",
            RepoError::Invalid => "invalid",
            other => dbmetrics::classify::classify(other),
        }
    }
}

/// An error type that says, once for every call, that a missing row is no database failure.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("no such row")]
    Missing,
}

impl ClassifyError for LookupError {
    fn error_type(&self) -> &'static str {
        match self {
            LookupError::Db(e) => dbmetrics::classify::classify(e),
            LookupError::Missing => "missing",
        }
    }

    fn is_failure(&self) -> bool {
        !matches!(self, LookupError::Missing)
    }
}

/// A returned value (not a `Result`) that knows its own class.
#[derive(Debug, PartialEq)]
enum Lookup {
    Found(String),
    Missing,
}

impl Lookup {
    fn is_missing(&self) -> bool {
        *self == Lookup::Missing
    }
}

impl ClassifyError for Lookup {
    fn error_type(&self) -> &'static str {
        "lookup_missing"
    }
}

fn not_found<T>(result: &Result<T, RepoError>) -> bool {
    matches!(result, Err(RepoError::NotFound))
}

#[derive(Clone, TrackedRepository)]
struct ItemRepository {
    pool: deadpool_postgres::Pool,
    table: String,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl ItemRepository {
    async fn new(metrics: DatabaseMetrics) -> Self {
        let repo = Self {
            pool: database().pool(2),
            table: unique("items"),
            metrics,
        };
        let client = repo.pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id BIGINT PRIMARY KEY, title TEXT NOT NULL);
                 INSERT INTO {t} VALUES (1, 'one'), (2, 'two');",
                t = repo.table
            ))
            .await
            .unwrap();
        repo
    }

    /// The same repository over a table that does not exist: every query fails on the server.
    fn broken(&self) -> Self {
        Self {
            table: "dbmetrics_no_such_table".into(),
            ..self.clone()
        }
    }

    async fn title_of(&self, id: i64) -> Result<Option<String>, RepoError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT title FROM {} WHERE id = $1", self.table),
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A missing row is an answer: `ok_if` with a function path.
    #[track_query(select, "items", ok_if = not_found)]
    async fn get(&self, id: i64) -> Result<String, RepoError> {
        self.title_of(id).await?.ok_or(RepoError::NotFound)
    }

    /// Invalid input is the caller's fault: `ok_if` with a closure.
    #[track_query(update, "items", ok_if = |r| matches!(r, Err(RepoError::Invalid)))]
    async fn rename(&self, id: i64, title: &str) -> Result<u64, RepoError> {
        if title.is_empty() {
            return Err(RepoError::Invalid);
        }
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                &format!("UPDATE {} SET title = $2 WHERE id = $1", self.table),
                &[&id, &title],
            )
            .await?)
    }

    /// Not a `Result`: `error_if` makes `None` an error, of class `other`.
    #[track_query(select, "items_required", error_if = Option::is_none)]
    async fn required(&self, id: i64) -> Option<String> {
        self.title_of(id).await.ok().flatten()
    }

    /// A `Result` whose `Ok(0)` is a failure (nothing was deleted), and whose `NotFound` is
    /// not: both predicates, `ok_if` first.
    #[track_query(
        delete,
        "items",
        error_if = |r: &Result<u64, RepoError>| matches!(r, Ok(0) | Err(RepoError::NotFound)),
        ok_if = not_found
    )]
    async fn remove(&self, id: i64) -> Result<u64, RepoError> {
        if id < 0 {
            return Err(RepoError::NotFound);
        }
        let client = self.pool.get().await?;
        Ok(client
            .execute(&format!("DELETE FROM {} WHERE id = $1", self.table), &[&id])
            .await?)
    }

    /// A returned value that classifies itself, marked as failed by `error_if`.
    #[track_query(select, "lookups", error_if = Lookup::is_missing)]
    async fn lookup(&self, id: i64) -> Lookup {
        match self.title_of(id).await {
            Ok(Some(title)) => Lookup::Found(title),
            _ => Lookup::Missing,
        }
    }

    /// No predicate: `LookupError::is_failure` decides.
    #[track_query(select, "items_lookup")]
    async fn find(&self, id: i64) -> Result<String, LookupError> {
        let client = self.pool.get().await.expect("a connection");
        let row = client
            .query_opt(
                &format!("SELECT title FROM {} WHERE id = $1", self.table),
                &[&id],
            )
            .await?;
        row.map(|r| r.get(0)).ok_or(LookupError::Missing)
    }

    /// A plain `fn` with `ok_if`.
    #[track_query(other, "validation", ok_if = |r| matches!(r, Err(RepoError::Invalid)))]
    fn validate(&self, title: &str) -> Result<(), RepoError> {
        if title.len() > 3 {
            Err(RepoError::Invalid)
        } else {
            Ok(())
        }
    }

    /// A transaction whose `NotFound` is an answer.
    #[track_transaction("move_item", ok_if = not_found)]
    async fn move_item(&self, from: i64, to: i64) -> Result<(), RepoError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let moved = tx
            .execute(
                &format!("UPDATE {} SET id = $2 WHERE id = $1", self.table),
                &[&from, &to],
            )
            .await?;
        if moved == 0 {
            return Err(RepoError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// A transaction that must change something: `error_if` on `Ok(false)`.
    #[track_transaction("touch_item", error_if = |r: &Result<bool, RepoError>| matches!(r, Ok(false)))]
    async fn touch(&self, id: i64) -> Result<bool, RepoError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                &format!("UPDATE {} SET title = title WHERE id = $1", self.table),
                &[&id],
            )
            .await?;
        Ok(n > 0)
    }
}

/// The rendered series of one service.
struct Scraped {
    service: String,
    e: Exposition,
}

impl Scraped {
    fn now(metrics: &DatabaseMetrics) -> Self {
        Self {
            service: metrics.service().to_owned(),
            e: scrape(),
        }
    }

    /// `query_duration_seconds_count{operation, table, result}`; -1 when the series is absent.
    fn queries(&self, operation: &str, table: &str, result: &str) -> f64 {
        self.e
            .get(
                &format!("{}_database_query_duration_seconds_count", self.service),
                &[
                    ("operation", operation),
                    ("table", table),
                    ("result", result),
                ],
            )
            .unwrap_or(-1.0)
    }

    /// `[success, error, cancelled]` of one (operation, table).
    fn results(&self, operation: &str, table: &str) -> [f64; 3] {
        ["success", "error", "cancelled"].map(|r| self.queries(operation, table, r))
    }

    /// `errors_total{operation, table, error_type}` by `error_type`.
    fn errors(&self, operation: &str, table: &str) -> BTreeMap<String, f64> {
        self.e
            .matching(
                &format!("{}_database_errors_total", self.service),
                &[("operation", operation), ("table", table)],
            )
            .into_iter()
            .map(|l| (l.labels["error_type"].clone(), l.value))
            .collect()
    }

    /// `transactions_total{transaction, result}` for `[success, error, cancelled]`.
    fn transactions(&self, name: &str) -> [f64; 3] {
        ["success", "error", "cancelled"].map(|result| {
            self.e
                .get(
                    &format!("{}_database_transactions_total", self.service),
                    &[("transaction", name), ("result", result)],
                )
                .unwrap_or(-1.0)
        })
    }
}

fn classes(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_if_records_answers_as_success_and_keeps_real_failures() {
    prometheus();
    let metrics = DatabaseMetrics::new(&unique("pred_ok_if")).unwrap();
    let repo = ItemRepository::new(metrics.clone()).await;

    assert_eq!(repo.get(1).await.unwrap(), "one");
    for id in [7, 8, 9] {
        assert!(matches!(repo.get(id).await, Err(RepoError::NotFound)));
    }
    // a real failure stays one: undefined_table
    assert!(matches!(repo.broken().get(1).await, Err(RepoError::Db(_))));

    assert_eq!(repo.rename(1, "uno").await.unwrap(), 1);
    assert!(matches!(repo.rename(1, "").await, Err(RepoError::Invalid)));
    assert!(repo.broken().rename(1, "x").await.is_err());

    assert!(repo.validate("abc").is_ok());
    assert!(matches!(repo.validate("abcd"), Err(RepoError::Invalid)));

    let s = Scraped::now(&metrics);
    assert_eq!(s.results("select", "items"), [4.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("select", "items"),
        classes(&[("undefined_table", 1.0)])
    );
    assert_eq!(s.results("update", "items"), [2.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("update", "items"),
        classes(&[("undefined_table", 1.0)])
    );
    assert_eq!(s.results("other", "validation"), [2.0, 0.0, 0.0]);
    assert_eq!(s.errors("other", "validation"), classes(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_if_records_required_answers_that_are_missing_as_errors() {
    prometheus();
    let metrics = DatabaseMetrics::new(&unique("pred_error_if")).unwrap();
    let repo = ItemRepository::new(metrics.clone()).await;

    // not a Result: None is an error of class `other`
    assert_eq!(repo.required(1).await.as_deref(), Some("one"));
    assert_eq!(repo.required(5).await, None);
    assert_eq!(repo.required(6).await, None);

    // a value that classifies itself: its own class
    assert_eq!(repo.lookup(2).await, Lookup::Found("two".into()));
    assert_eq!(repo.lookup(5).await, Lookup::Missing);

    // both predicates: Ok(0) is an error (`other`), NotFound an answer (ok_if wins over
    // error_if, which also matches it), a server error keeps its class
    assert_eq!(repo.remove(2).await.unwrap(), 1);
    assert_eq!(repo.remove(2).await.unwrap(), 0);
    assert!(matches!(repo.remove(-1).await, Err(RepoError::NotFound)));
    assert!(repo.broken().remove(1).await.is_err());

    let s = Scraped::now(&metrics);
    assert_eq!(s.results("select", "items_required"), [1.0, 2.0, 0.0]);
    assert_eq!(
        s.errors("select", "items_required"),
        classes(&[("other", 2.0)])
    );
    assert_eq!(s.results("select", "lookups"), [1.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("select", "lookups"),
        classes(&[("lookup_missing", 1.0)])
    );
    assert_eq!(s.results("delete", "items"), [2.0, 2.0, 0.0]);
    assert_eq!(
        s.errors("delete", "items"),
        classes(&[("other", 1.0), ("undefined_table", 1.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_take_ok_if_and_error_if() {
    prometheus();
    let metrics = DatabaseMetrics::new(&unique("pred_tx")).unwrap();
    let repo = ItemRepository::new(metrics.clone()).await;

    repo.move_item(1, 10).await.unwrap();
    assert!(matches!(
        repo.move_item(1, 11).await,
        Err(RepoError::NotFound)
    ));
    assert!(repo.broken().move_item(1, 12).await.is_err());

    assert!(repo.touch(2).await.unwrap());
    assert!(!repo.touch(99).await.unwrap());

    let s = Scraped::now(&metrics);
    assert_eq!(s.transactions("move_item"), [2.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("transaction", "move_item"),
        classes(&[("undefined_table", 1.0)])
    );
    assert_eq!(s.transactions("touch_item"), [1.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("transaction", "touch_item"),
        classes(&[("other", 1.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_and_the_middleware_take_ok_if_and_error_if() {
    prometheus();
    let metrics = DatabaseMetrics::new(&unique("pred_tracker")).unwrap();
    let repo = ItemRepository::new(metrics.clone()).await;
    let tracker = QueryPerformanceTracker::new(metrics.clone());

    // ok_if: NotFound is an answer; a server error stays an error
    for id in [1, 3, 4] {
        let title = tracker
            .track_query(Operation::Select, "t_items", async {
                repo.title_of(id).await?.ok_or(RepoError::NotFound)
            })
            .ok_if(not_found)
            .await;
        assert_eq!(title.is_ok(), id == 1);
    }
    let broken = repo.broken();
    let failed = tracker
        .track_query("select", "t_items", async {
            broken.title_of(1).await?.ok_or(RepoError::NotFound)
        })
        .ok_if(|r| matches!(r, Err(RepoError::NotFound)))
        .await;
    assert!(failed.is_err());

    // error_if on an Option: None is an error of class `other`
    for id in [1, 5] {
        let found = tracker
            .track_query("select", "t_required", async {
                repo.title_of(id).await.ok().flatten()
            })
            .error_if(Option::is_none)
            .await;
        assert_eq!(found.is_some(), id == 1);
    }

    // both: ok_if wins; error_if on an Err keeps the error's class
    for input in ["", "x", "valid"] {
        let result: Result<(), RepoError> = tracker
            .track_query("other", "t_both", async {
                match input {
                    "" => Err(RepoError::Invalid),
                    "x" => Err(RepoError::NotFound),
                    _ => Ok(()),
                }
            })
            .error_if(|r| r.is_err())
            .ok_if(|r| matches!(r, Err(RepoError::Invalid)))
            .await;
        assert_eq!(result.is_ok(), input == "valid");
    }

    // a tracked transaction with ok_if
    let moved = tracker
        .track_transaction("t_move", async {
            Err::<(), RepoError>(RepoError::NotFound)
        })
        .ok_if(not_found)
        .await;
    assert!(moved.is_err());

    // the middleware
    let middleware = create_repository_middleware(repo.pool.clone(), metrics.clone());
    for id in [2, 6] {
        let r = middleware
            .repository_method_tracker("select", "m_items", "get", repo.get(id))
            .ok_if(not_found)
            .await;
        assert_eq!(r.is_ok(), id == 2);
    }
    let none = middleware
        .repository_method_tracker("select", "m_required", "required", repo.required(6))
        .error_if(Option::is_none)
        .await;
    assert_eq!(none, None);

    let s = Scraped::now(&metrics);
    assert_eq!(s.results("select", "t_items"), [3.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("select", "t_items"),
        classes(&[("undefined_table", 1.0)])
    );
    assert_eq!(s.results("select", "t_required"), [1.0, 1.0, 0.0]);
    assert_eq!(s.errors("select", "t_required"), classes(&[("other", 1.0)]));
    assert_eq!(s.results("other", "t_both"), [2.0, 1.0, 0.0]);
    assert_eq!(s.errors("other", "t_both"), classes(&[("not_found", 1.0)]));
    assert_eq!(s.transactions("t_move"), [1.0, 0.0, 0.0]);
    assert_eq!(s.results("select", "m_items"), [2.0, 0.0, 0.0]);
    assert_eq!(s.results("select", "m_required"), [0.0, 1.0, 0.0]);
    assert_eq!(s.errors("select", "m_required"), classes(&[("other", 1.0)]));
    // the repository's own sites recorded too (the middleware wraps tracked methods here)
    assert_eq!(s.results("select", "items"), [2.0, 0.0, 0.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_type_that_is_not_a_failure_is_a_success_everywhere() {
    prometheus();
    let metrics = DatabaseMetrics::new(&unique("pred_is_failure")).unwrap();
    let repo = ItemRepository::new(metrics.clone()).await;

    // the attribute, without any predicate
    assert_eq!(repo.find(1).await.unwrap(), "one");
    assert!(matches!(repo.find(42).await, Err(LookupError::Missing)));
    assert!(matches!(
        repo.broken().find(1).await,
        Err(LookupError::Db(_))
    ));

    // the tracker
    let tracker = QueryPerformanceTracker::new(metrics.clone());
    let missing: Result<(), LookupError> = tracker
        .track_query("select", "t_lookup", async { Err(LookupError::Missing) })
        .await;
    assert!(missing.is_err());

    // transaction::run: the closure's Missing rolls back and is recorded as a success
    let mut client = repo.pool.get().await.unwrap();
    let table = repo.table.clone();
    let outcome = transaction::run(&metrics, &mut **client, "lookup_tx", |tx| {
        Box::pin(async move {
            let n = tx
                .execute(&format!("DELETE FROM {table} WHERE id = 1"), &[])
                .await?;
            assert_eq!(n, 1);
            Err::<(), LookupError>(LookupError::Missing)
        })
    })
    .await;
    assert!(matches!(outcome, Err(LookupError::Missing)));
    drop(client);
    // rolled back all the same
    assert_eq!(repo.find(1).await.unwrap(), "one");

    let s = Scraped::now(&metrics);
    // find: one, missing, (rolled-back check) one = 3 successes; the server error is an error
    assert_eq!(s.results("select", "items_lookup"), [3.0, 1.0, 0.0]);
    assert_eq!(
        s.errors("select", "items_lookup"),
        classes(&[("undefined_table", 1.0)])
    );
    assert_eq!(s.results("select", "t_lookup"), [1.0, 0.0, 0.0]);
    assert_eq!(s.errors("select", "t_lookup"), classes(&[]));
    assert_eq!(s.transactions("lookup_tx"), [1.0, 0.0, 0.0]);
    assert_eq!(s.errors("transaction", "lookup_tx"), classes(&[]));
}
