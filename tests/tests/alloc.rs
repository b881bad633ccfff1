//! Heap allocations of the recording path, counted by a global allocator.
//!
//! After the first call at a site (which registers its handles), a tracked call allocates
//! nothing in dbmetrics: no label building, no key hashing into a new `String`, no boxing.
//! The only allocations left belong to the recorder's own sample storage (the Prometheus
//! exporter appends histogram samples to lock-free blocks of 64, drained at each render).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dbmetrics::{DatabaseMetrics, NoopMetrics, QueryMetrics, track_query};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

#[derive(Debug)]
struct Conflict;

impl dbmetrics::ClassifyError for Conflict {
    fn error_type(&self) -> &'static str {
        "unique_violation"
    }
}

#[track_query(select, "content", metrics = metrics)]
async fn lookup<M: QueryMetrics>(metrics: &M, fail: bool) -> Result<u64, Conflict> {
    if fail { Err(Conflict) } else { Ok(7) }
}

#[track_query(update, "content", metrics = metrics)]
fn lookup_sync<M: QueryMetrics>(metrics: &M) -> Result<u64, Conflict> {
    Ok(7)
}

fn calls<M: QueryMetrics>(metrics: &M, n: usize) {
    for i in 0..n {
        let fail = i % 10 == 0;
        let r = futures::executor::block_on(lookup(metrics, fail));
        assert_eq!(r.is_err(), fail);
        lookup_sync(metrics).unwrap();
    }
}

#[test]
fn no_allocation_per_call_without_a_recorder() {
    // No recorder is installed in this test binary: DatabaseMetrics records into no-op handles.
    let metrics = DatabaseMetrics::new("alloc_norecorder").unwrap();
    calls(&metrics, 1); // first call at each site registers its handles
    assert_eq!(allocations(|| calls(&metrics, 10_000)), 0);
    assert_eq!(allocations(|| calls(&NoopMetrics, 10_000)), 0);
}

#[test]
fn no_allocation_in_dbmetrics_with_the_prometheus_recorder() {
    let recorder = dbmetrics::exporter::ExporterConfig::new()
        .prometheus_builder()
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let metrics = DatabaseMetrics::new("alloc_prometheus").unwrap();
        calls(&metrics, 1);
        handle.render(); // drain, so the storage starts from empty blocks
        const N: usize = 6_400;
        let n = allocations(|| calls(&metrics, N));
        // Each call records 2 histogram samples (async + sync site): the exporter stores
        // samples in blocks of 64, so its storage allocates about 2 * N / 64 blocks.
        // Anything from dbmetrics itself would be at least one allocation per call (N).
        let storage_blocks = (2 * N / 64) as u64;
        eprintln!("{n} allocations for {N} calls ({storage_blocks} storage blocks expected)");
        assert!(
            n <= storage_blocks + 4,
            "{n} allocations for {N} calls; the exporter's sample storage accounts for {storage_blocks}"
        );
        let text = handle.render();
        let count = |op: &str, result: &str| {
            dbmetrics_tests::Exposition::parse(&text).value(
                "alloc_prometheus_database_query_duration_seconds_count",
                &[("operation", op), ("table", "content"), ("result", result)],
            )
        };
        // The warm-up call (i = 0, an error) counts too.
        assert_eq!(count("select", "success"), (N / 10 * 9) as f64);
        assert_eq!(count("select", "error"), (N / 10 + 1) as f64);
        assert_eq!(count("update", "success"), (N + 1) as f64);
    });
}
