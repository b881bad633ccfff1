//! Bounded labels: names given at run time (tracker tables, transaction names, middleware
//! methods) are capped per service by `label_limit` (default 1000). Beyond it calls record
//! under `_overflow`, each still counted once; series and the memory of the site tables stay
//! bounded, whatever the number of distinct names. Memory is measured by a global allocator
//! that keeps the live heap bytes of this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;

use dbmetrics::{DatabaseMetrics, Error, Operation, QueryPerformanceTracker, track_query};
use dbmetrics_tests::Captured;
use dbmetrics_tests::{database, prometheus, scrape, unique};
use futures::executor::block_on;

struct LiveBytes;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping touches only
// const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

/// Live heap bytes this thread added while running `f` (allocated minus freed).
fn retained(f: impl FnOnce()) -> i64 {
    LIVE.with(|live| live.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    LIVE.with(|live| live.get())
}

/// The tests of this file run one at a time: the exporter's upkeep, run on the measuring
/// thread, drains every service's samples, so another test's new series would be counted.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const DISTINCT: usize = 100_000;
const LIMIT: usize = 1000;

/// Calls `call(name)` for `DISTINCT` distinct names written into one reused buffer, draining
/// the exporter's sample storage every 1000 calls (as scrapes would).
fn each_name(prefix: &str, mut call: impl FnMut(&str)) {
    let mut name = String::with_capacity(64);
    for i in 0..DISTINCT {
        name.clear();
        write!(name, "{prefix}{i}").unwrap();
        call(&name);
        if i % 1000 == 999 {
            prometheus().run_upkeep();
        }
    }
}

#[test]
fn run_time_tables_beyond_the_limit_overflow_and_memory_stays_bounded() {
    let _serial = one_at_a_time();
    prometheus();
    let service = unique("card_tables");
    let metrics = DatabaseMetrics::new(&service).unwrap();
    assert_eq!(DatabaseMetrics::DEFAULT_LABEL_LIMIT, LIMIT);
    let tracker = QueryPerformanceTracker::new(metrics.clone());
    let query = |table: &str| {
        let _: Result<(), std::io::Error> =
            block_on(tracker.track_query(Operation::Select, table, async { Ok(()) }));
    };

    // The first LIMIT names are admitted, then one overflowing call warms the overflow site.
    each_name("warm_", |_| {});
    for i in 0..LIMIT {
        query(&format!("t{i}"));
    }
    query("one_too_many");
    prometheus().run_upkeep();

    // 100,000 more distinct names: no memory kept for any of them.
    let bytes = retained(|| each_name("tenant_", query));
    // Keeping the names would retain at least 100,000 × 11 bytes (1.1 MB); what remains is
    // noise of a few KiB: the exporter's sample blocks are freed through crossbeam-epoch's
    // deferred garbage, sometimes by another thread after the measurement ends.
    assert!(
        bytes < 64 * 1024,
        "{bytes} bytes retained after {DISTINCT} distinct run-time tables"
    );

    let e = scrape();
    let name = format!("{service}_database_query_duration_seconds_count");
    let tables: std::collections::BTreeSet<String> = e
        .matching(&name, &[("operation", "select"), ("result", "success")])
        .iter()
        .map(|line| line.labels["table"].clone())
        .collect();
    assert_eq!(tables.len(), LIMIT + 1, "LIMIT tables and _overflow");
    assert!(tables.contains("_overflow"));
    assert!(tables.contains("t999") && !tables.contains("tenant_0"));
    // every call counted once
    assert_eq!(
        e.sum(&name, &[("operation", "select"), ("result", "success")]),
        (LIMIT + 1 + DISTINCT) as f64
    );
    assert_eq!(
        e.value(
            &name,
            &[
                ("operation", "select"),
                ("table", "_overflow"),
                ("result", "success")
            ]
        ),
        (1 + DISTINCT) as f64
    );
}

#[test]
fn run_time_transaction_names_and_a_custom_limit() {
    let _serial = one_at_a_time();
    prometheus();
    let service = unique("card_tx");
    let pool = dbmetrics_tests::database().pool(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = runtime.block_on(async {
        DatabaseMetrics::builder(&pool, &service)
            .label_limit(3)
            .build()
            .unwrap()
    });
    let tracker = QueryPerformanceTracker::new(metrics.clone());
    for i in 0..10 {
        let _: Result<(), std::io::Error> =
            block_on(tracker.track_transaction(&format!("job_{i}"), async { Ok(()) }));
    }
    let e = scrape();
    let name = format!("{service}_database_transactions_total");
    let names: Vec<String> = e
        .matching(&name, &[("result", "success")])
        .iter()
        .map(|line| line.labels["transaction"].clone())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(
        e.value(
            &name,
            &[("transaction", "_overflow"), ("result", "success")]
        ),
        7.0
    );
    assert_eq!(e.sum(&name, &[("result", "success")]), 10.0);
    // Tables admitted for this service do not count against transaction names.
    let _: Result<(), std::io::Error> =
        block_on(tracker.track_query("insert", "jobs", async { Ok(()) }));
    assert_eq!(
        scrape().value(
            &format!("{service}_database_query_duration_seconds_count"),
            &[
                ("operation", "insert"),
                ("table", "jobs"),
                ("result", "success")
            ]
        ),
        1.0
    );
    drop(metrics);
    runtime.block_on(async { tokio::task::yield_now().await });
}

#[track_query(select, "written_in_code", metrics = metrics)]
fn attribute_call(metrics: &DatabaseMetrics) -> Result<(), std::io::Error> {
    Ok(())
}

#[test]
fn one_limit_per_service_and_kind_and_one_warning_naming_the_first_name_over_it() {
    let _serial = one_at_a_time();
    prometheus();
    let service = unique("card_shared");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool_a, pool_b) = (database().pool(1), database().pool(1));
    // A handle made before any setup takes the limit the first setup gives.
    let early = DatabaseMetrics::new(&service).unwrap();
    assert_eq!(early.label_limit(), LIMIT);
    let (primary, replica) = runtime.block_on(async {
        let primary = DatabaseMetrics::builder(&pool_a, &service)
            .label_limit(2)
            .build()
            .unwrap();
        // Another pool of the service, its limit left out: the one in force.
        let replica = DatabaseMetrics::builder(&pool_b, &service)
            .pool_name("replica")
            .build()
            .unwrap();
        (primary, replica)
    });
    assert_eq!(
        [
            early.label_limit(),
            primary.label_limit(),
            replica.label_limit()
        ],
        [2, 2, 2]
    );
    // Another limit for a third pool of the service: refused, not a budget of its own.
    let err = runtime.block_on(async {
        DatabaseMetrics::builder(&database().pool(1), &service)
            .pool_name("third")
            .label_limit(3)
            .build()
            .unwrap_err()
    });
    match err {
        Error::ConflictingSetup {
            option,
            existing,
            requested,
            ..
        } => assert_eq!(
            (option, existing.as_str(), requested.as_str()),
            ("label_limit", "2", "3")
        ),
        other => panic!("not a ConflictingSetup: {other}"),
    }

    let captured = Captured::default();
    let subscriber = tracing::subscriber::set_default(captured.subscriber());
    let query = |metrics: &DatabaseMetrics, table: &str| {
        let tracker = QueryPerformanceTracker::new(metrics.clone());
        let _: Result<(), std::io::Error> =
            block_on(tracker.track_query(Operation::Select, table, async { Ok(()) }));
    };
    let transaction = |metrics: &DatabaseMetrics, name: &str| {
        let tracker = QueryPerformanceTracker::new(metrics.clone());
        let _: Result<(), std::io::Error> =
            block_on(tracker.track_transaction(name, async { Ok(()) }));
    };
    // Three handles, one budget of 2 tables: "alpha" and "beta" are admitted, "gamma" is the
    // first over the limit, "delta" the second.
    query(&primary, "alpha");
    query(&replica, "beta");
    query(&early, "gamma");
    query(&primary, "delta");
    query(&replica, "alpha");
    // Transaction names have a budget of their own: two admitted, then "tx_c" overflows.
    for name in ["tx_a", "tx_b", "tx_c", "tx_d"] {
        transaction(&replica, name);
    }
    // A table written in an attribute is never counted against the limit.
    attribute_call(&early).unwrap();
    drop(subscriber);

    let e = scrape();
    let name = format!("{service}_database_query_duration_seconds_count");
    let tables: Vec<(String, f64)> = e
        .matching(&name, &[("operation", "select"), ("result", "success")])
        .iter()
        .map(|line| (line.labels["table"].clone(), line.value))
        .collect();
    let mut tables = tables;
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tables,
        [
            ("_overflow".to_owned(), 2.0),
            ("alpha".to_owned(), 2.0),
            ("beta".to_owned(), 1.0),
            ("written_in_code".to_owned(), 1.0),
        ]
    );
    let transactions = format!("{service}_database_transactions_total");
    assert_eq!(
        e.value(
            &transactions,
            &[("transaction", "_overflow"), ("result", "success")]
        ),
        2.0
    );

    let text = captured.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("label limit")).collect();
    assert_eq!(warnings.len(), 2, "one warning per kind: {text}");
    let table_warning = warnings.iter().find(|l| l.contains("table names")).unwrap();
    assert!(
        table_warning.contains("\"gamma\", the first over it"),
        "{table_warning}"
    );
    assert!(!table_warning.contains("delta"), "{table_warning}");
    assert!(table_warning.contains(&service), "{table_warning}");
    assert!(table_warning.contains("label limit (2)"), "{table_warning}");
    let tx_warning = warnings
        .iter()
        .find(|l| l.contains("transaction names"))
        .unwrap();
    assert!(
        tx_warning.contains("\"tx_c\", the first over it"),
        "{tx_warning}"
    );
    assert!(!tx_warning.contains("tx_d"), "{tx_warning}");

    drop((early, primary, replica));
    runtime.block_on(async { tokio::task::yield_now().await });
}
