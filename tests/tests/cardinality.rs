//! Bounded labels: names given at run time (tracker tables, transaction names, middleware
//! methods) are capped per service by `label_limit` (default 1000). Beyond it calls record
//! under `_overflow`, each still counted once; series and the memory of the site tables stay
//! bounded, whatever the number of distinct names. Memory is measured by a global allocator
//! that keeps the live heap bytes of this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;

use dbmetrics::{DatabaseMetrics, Operation, QueryPerformanceTracker};
use dbmetrics_tests::{prometheus, scrape, unique};
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
    assert!(
        bytes < 16 * 1024,
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
