//! `#[track_query]` keeps the meaning of every kind of function it goes on: coercions at
//! `return` and in the tail, borrows with named and elided lifetimes, `Send` futures,
//! inner attributes, hygiene, functions that return a future (`#[async_trait]`), default
//! tables that differ per `Self`, and a sibling's panic (which cancels, not fails, the call).
//! Values are read from the rendered Prometheus text.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dbmetrics::{DatabaseMetrics, DefaultTable, TrackedRepository, track_query};
use dbmetrics_tests::{prometheus, scrape, unique};

#[derive(Debug, thiserror::Error)]
enum RepoError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

#[derive(TrackedRepository)]
#[tracked(table = "shapes")]
struct Repo {
    name: String,
    counter: i32,
    metrics: DatabaseMetrics,
}

fn assert_send<T: Send>(_: &T) {}

impl Repo {
    #[track_query(select)]
    async fn boxed_display(&self) -> Box<dyn Display + Send> {
        Box::new(1) // coerces to the trait object, as without the attribute
    }

    #[track_query(select)]
    async fn boxed_error(
        &self,
        fail: bool,
    ) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
        if fail {
            return Err(Box::new(std::io::Error::other("io")));
        }
        Ok(1)
    }

    #[track_query(select)]
    async fn early_borrow(&self, early: bool) -> Result<&str, RepoError> {
        if early {
            return Ok(&self.name);
        }
        Ok(&self.name[..1])
    }

    #[track_query(select)]
    async fn cow(&self) -> Result<Cow<'_, str>, RepoError> {
        Ok(Cow::Borrowed(self.name.as_str()))
    }

    #[track_query(update)]
    async fn named_mut<'a>(&'a mut self) -> &'a mut i32 {
        &mut self.counter
    }

    #[track_query(update)]
    fn sync_mut(&mut self) -> &mut i32 {
        &mut self.counter
    }

    #[track_query(select)]
    fn sync_borrow(&self) -> Result<&str, RepoError> {
        Ok(&self.name)
    }

    #[track_query(select)]
    fn sync_impl_in_result(&self) -> Result<impl Iterator<Item = u8>, RepoError> {
        let digits = self.name.len().checked_sub(0).ok_or(RepoError::NotFound)?;
        Ok((0..digits as u8).take(2))
    }

    #[track_query(select)]
    async fn with_cell(&self, cell: Cell<i32>) -> Result<i32, RepoError> {
        let v = cell.get();
        tokio::task::yield_now().await;
        Ok(v + cell.get())
    }

    #[track_query(select)]
    async fn inner_attribute(&self) -> Result<i32, RepoError> {
        #![allow(unused_variables)]
        let unused = 1;
        Ok(2)
    }

    #[track_query(select)]
    async fn hygiene(
        &self,
        __dbmetrics_metrics: u8,
        __dbmetrics_guard: u8,
    ) -> Result<u8, RepoError> {
        // Parameters with the macro's internal names are the user's own.
        Ok(__dbmetrics_metrics + __dbmetrics_guard)
    }

    #[track_query(select, "slow")]
    async fn slow(&self) -> Result<(), RepoError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }

    /// A hand-written future-returning method: the call is the future.
    #[track_query(select, "returned_future")]
    fn impl_future(&self, fail: bool) -> impl Future<Output = Result<u8, RepoError>> + Send + '_ {
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if fail {
                Err(RepoError::NotFound)
            } else {
                Ok(self.name.len() as u8)
            }
        }
    }

    #[track_query(select, "returned_future")]
    #[allow(clippy::type_complexity)]
    fn boxed_future(&self) -> Pin<Box<dyn Future<Output = Result<u8, RepoError>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err(RepoError::NotFound)
        })
    }
}

#[async_trait::async_trait]
trait ContentStore {
    async fn fetch(&self, fail: bool) -> Result<u8, RepoError>;
}

#[async_trait::async_trait]
impl ContentStore for Repo {
    #[track_query(select, "async_trait")]
    async fn fetch(&self, fail: bool) -> Result<u8, RepoError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if fail {
            return Err(RepoError::NotFound);
        }
        Ok(7)
    }
}

/// A default method shared by repositories with different default tables.
trait Countable: TrackedRepository<Metrics = DatabaseMetrics> + DefaultTable + Sync {
    #[track_query(select)]
    async fn count(&self) -> Result<u8, RepoError> {
        Ok(1)
    }
}

#[derive(TrackedRepository)]
#[tracked(table = "content")]
struct Content {
    metrics: DatabaseMetrics,
}
impl Countable for Content {}

#[derive(TrackedRepository)]
#[tracked(table = "users")]
struct Users {
    metrics: DatabaseMetrics,
}
impl Countable for Users {}

fn setup(prefix: &str) -> (Repo, String) {
    prometheus();
    let service = unique(prefix);
    let metrics = DatabaseMetrics::new(&service).unwrap();
    let repo = Repo {
        name: "dbmetrics".into(),
        counter: 0,
        metrics,
    };
    (repo, service)
}

fn count(service: &str, table: &str, result: &str) -> f64 {
    scrape().value(
        &format!("{service}_database_query_duration_seconds_count"),
        &[
            ("operation", "select"),
            ("table", table),
            ("result", result),
        ],
    )
}

#[tokio::test]
async fn coercions_borrows_and_attributes_behave_as_without_the_macro() {
    let (mut repo, service) = setup("shapes_semantics");
    assert_eq!(repo.boxed_display().await.to_string(), "1");
    assert_eq!(repo.boxed_error(false).await.unwrap(), 1);
    assert!(repo.boxed_error(true).await.is_err());
    assert_eq!(repo.early_borrow(true).await.unwrap(), "dbmetrics");
    assert_eq!(repo.early_borrow(false).await.unwrap(), "d");
    assert_eq!(repo.cow().await.unwrap(), "dbmetrics");
    *repo.named_mut().await += 2;
    *repo.sync_mut() += 3;
    assert_eq!(repo.counter, 5);
    assert_eq!(repo.sync_borrow().unwrap(), "dbmetrics");
    assert_eq!(repo.sync_impl_in_result().unwrap().count(), 2);
    let future = repo.with_cell(Cell::new(20));
    assert_send(&future);
    assert_eq!(future.await.unwrap(), 40);
    assert_eq!(repo.inner_attribute().await.unwrap(), 2);
    assert_eq!(repo.hygiene(1, 2).await.unwrap(), 3);

    // 10 successful selects and 1 error (the boxed io error); 2 updates.
    assert_eq!(count(&service, "shapes", "success"), 10.0);
    assert_eq!(count(&service, "shapes", "error"), 1.0);
    let e = scrape();
    assert_eq!(
        e.value(
            &format!("{service}_database_errors_total"),
            &[
                ("operation", "select"),
                ("table", "shapes"),
                ("error_type", "connection")
            ]
        ),
        1.0,
        "the boxed io::Error is classified through the Box"
    );
    assert_eq!(
        e.value(
            &format!("{service}_database_query_duration_seconds_count"),
            &[
                ("operation", "update"),
                ("table", "shapes"),
                ("result", "success")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn functions_returning_a_future_are_timed_over_the_future() {
    let (repo, service) = setup("shapes_futures");
    assert_eq!(repo.impl_future(false).await.unwrap(), 9);
    assert!(repo.impl_future(true).await.is_err());
    assert!(repo.boxed_future().await.is_err());
    assert_eq!(repo.fetch(false).await.unwrap(), 7);
    assert!(repo.fetch(true).await.is_err());
    // A future built and dropped unpolled was never a call.
    drop(repo.impl_future(false));

    assert_eq!(count(&service, "returned_future", "success"), 1.0);
    assert_eq!(count(&service, "returned_future", "error"), 2.0);
    assert_eq!(count(&service, "async_trait", "success"), 1.0);
    assert_eq!(count(&service, "async_trait", "error"), 1.0);
    let e = scrape();
    // Each call slept 30 ms inside its future: the recorded time covers it.
    let sum = e.value(
        &format!("{service}_database_query_duration_seconds_sum"),
        &[
            ("operation", "select"),
            ("table", "async_trait"),
            ("result", "success"),
        ],
    );
    assert!(sum >= 0.03, "timed {sum} s, the future slept 0.03 s");
    assert_eq!(
        e.value(
            &format!("{service}_database_errors_total"),
            &[
                ("operation", "select"),
                ("table", "async_trait"),
                ("error_type", "other")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn one_default_method_records_under_each_repositorys_table() {
    prometheus();
    let service = unique("shapes_tables");
    let metrics = DatabaseMetrics::new(&service).unwrap();
    let content = Content {
        metrics: metrics.clone(),
    };
    let users = Users { metrics };
    content.count().await.unwrap();
    users.count().await.unwrap();
    users.count().await.unwrap();
    assert_eq!(count(&service, "content", "success"), 1.0);
    assert_eq!(count(&service, "users", "success"), 2.0);
}

#[tokio::test]
async fn a_sibling_panic_cancels_the_call_it_interrupts() {
    let (repo, service) = setup("shapes_sibling");
    let task = tokio::spawn(async move {
        let panicking = async {
            tokio::task::yield_now().await;
            panic!("a sibling panics");
        };
        tokio::join!(repo.slow(), panicking)
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(count(&service, "slow", "cancelled"), 1.0);
    assert_eq!(count(&service, "slow", "error"), 0.0);
}
