//! Per-call overhead of dbmetrics, every variant side by side in one run (see BENCHMARKS.md).
//!
//! ```sh
//! cargo bench -p dbmetrics-examples --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! One tracked call that returns at once, driven by the same minimal executor (a single poll
//! with a no-op waker: the futures never pend) in every variant:
//!
//! | id | what |
//! |---|---|
//! | `bare_async` | the uninstrumented `async fn` |
//! | `by_hand_async` | the same fn with `Instant::now()` + `metrics::histogram!(name, "operation" => .., "table" => .., "result" => ..).record(..)`, as users write it today, Prometheus recorder installed |
//! | `track_query_async` | `#[track_query]` recording into a `DatabaseMetrics`, Prometheus recorder installed |
//! | `track_query_async_no_recorder` | `#[track_query]` recording into a `DatabaseMetrics` whose handles resolved with no recorder (see below) |
//! | `track_query_async_noop_metrics` | `#[track_query]` recording into `NoopMetrics` (the guard and its clock reads alone) |
//! | `tracker_enum_async` | `QueryPerformanceTracker::track_query(Operation::Select, "table", fut)` |
//! | `tracker_str_async` | `QueryPerformanceTracker::track_query("select", "table", fut)` |
//! | `bare_sync`, `by_hand_sync`, `track_query_sync` | the same three for a plain `fn` |
//! | `clock_pair` | reference: `Instant::now()` and `elapsed()`, the two clock reads every timed call makes |
//! | `poller/tick` | one pool-poller tick: `Pool::status()` and five gauge sets |
//! | `instrument_by_hand_async` | `#[tracing::instrument]` (the same span fields as dbmetrics' query span) + `Instant` + `histogram!`: a client span and a histogram written by hand |
//!
//! Tracing (feature `tracing` of dbmetrics, which this crate's default feature `tracing` turns
//! on): every row is measured in one of four setups, one process each, since a process that
//! ever made a `tracing` subscriber pays for it at every span call site:
//!
//! | setup | command |
//! |---|---|
//! | feature off | `cargo bench -p dbmetrics-examples --bench overhead --no-default-features` |
//! | feature on, no subscriber | `cargo bench -p dbmetrics-examples --bench overhead` |
//! | feature on, `fmt` subscriber writing to `io::sink` | `DBMETRICS_BENCH_TRACING=fmt cargo bench ...` |
//! | feature on, `tracing-opentelemetry` (SDK, no exporter) | `DBMETRICS_BENCH_TRACING=otel cargo bench ...` |
//!
//! The first two compare `track_query_async` across builds (the target: within 5 ns); the last
//! two compare `track_query_async` (span + metrics) with `instrument_by_hand_async`.
//!
//! "No recorder": the `metrics` crate allows one global recorder per process and this process
//! installs Prometheus. A `DatabaseMetrics` resolves a call site's handles on the site's first
//! call, through `metrics::with_recorder`, which with no global recorder yields the
//! `NoopRecorder`'s no-op handles. The bench makes that first call inside
//! `metrics::with_local_recorder(&NoopRecorder, ..)`, so that instance holds exactly the
//! handles a process without any recorder would hold; every later call takes the same path as
//! in such a process. The rendered output is checked to hold none of its series.
//!
//! After criterion, the bench prints a summary read from criterion's `estimates.json` files
//! (median), an interleaved cross-check (rounds that run every variant in rotating order, so
//! that drift from other load on the machine hits every variant alike) and the heap
//! allocations per call, counted by this binary's global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use dbmetrics::exporter::PrometheusHandle as Handle;
use dbmetrics::{
    ClassifyError, DatabaseMetrics, NoopMetrics, Operation, QueryMetrics, QueryPerformanceTracker,
    track_query,
};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

// ----- allocation counting (this thread only, only while asked) -----

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards every call to `System` unchanged; counting touches only const-initialized
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Heap allocations made by this thread while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

// ----- the minimal executor: every future here is ready on its first poll -----

#[inline(always)]
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

// ----- the tracked call, in every variant -----

#[derive(Debug)]
struct NotFound;

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not found")
    }
}

impl std::error::Error for NotFound {}

impl ClassifyError for NotFound {
    fn error_type(&self) -> &'static str {
        "not_found"
    }
}

/// The "query": returns at once. The input comes through `black_box`, so the branch stays.
#[inline(always)]
fn body(id: u64) -> Result<u64, NotFound> {
    if id == 0 { Err(NotFound) } else { Ok(id) }
}

#[inline(never)]
async fn bare(id: u64) -> Result<u64, NotFound> {
    body(id)
}

#[inline(never)]
async fn by_hand(id: u64) -> Result<u64, NotFound> {
    let start = Instant::now();
    let result = body(id);
    metrics::histogram!(
        "bench_database_query_duration_seconds",
        "operation" => "select",
        "table" => "content_by_hand",
        "result" => if result.is_ok() { "success" } else { "error" },
    )
    .record(start.elapsed().as_secs_f64());
    result
}

/// The floor: the least hand-written code that times a call into one histogram (resolved once,
/// never again) with two clock reads. No result label, no cancellation, no panic handling.
#[inline(never)]
async fn floor(id: u64) -> Result<u64, NotFound> {
    static HISTOGRAM: OnceLock<metrics::Histogram> = OnceLock::new();
    let histogram = HISTOGRAM.get_or_init(|| {
        metrics::histogram!(
            "bench_database_query_duration_seconds",
            "operation" => "select",
            "table" => "content_floor",
            "result" => "success",
        )
    });
    let start = Instant::now();
    let result = body(id);
    histogram.record(start.elapsed().as_secs_f64());
    result
}

#[track_query(select, "content", metrics = metrics)]
#[inline(never)]
async fn tracked<M: QueryMetrics>(metrics: &M, id: u64) -> Result<u64, NotFound> {
    body(id)
}

#[inline(never)]
async fn via_tracker_enum(tracker: &QueryPerformanceTracker, id: u64) -> Result<u64, NotFound> {
    tracker
        .track_query(
            Operation::Select,
            "content_tracker",
            async move { body(id) },
        )
        .await
}

#[inline(never)]
async fn via_tracker_str(tracker: &QueryPerformanceTracker, id: u64) -> Result<u64, NotFound> {
    tracker
        .track_query("select", "content_tracker_str", async move { body(id) })
        .await
}

/// A client span and a histogram, by hand: what `#[track_query]` with the feature `tracing`
/// does for a success.
#[tracing::instrument(
    level = "info",
    target = "bench",
    name = "db.query",
    skip_all,
    fields(
        otel.name = "SELECT content_instrument",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "SELECT",
        db.collection.name = "content_instrument",
    )
)]
#[inline(never)]
async fn instrument_by_hand(id: u64) -> Result<u64, NotFound> {
    let start = Instant::now();
    let result = body(id);
    metrics::histogram!(
        "bench_database_query_duration_seconds",
        "operation" => "select",
        "table" => "content_instrument",
        "result" => if result.is_ok() { "success" } else { "error" },
    )
    .record(start.elapsed().as_secs_f64());
    result
}

#[inline(never)]
fn bare_sync(id: u64) -> Result<u64, NotFound> {
    body(id)
}

#[inline(never)]
fn by_hand_sync(id: u64) -> Result<u64, NotFound> {
    let start = Instant::now();
    let result = body(id);
    metrics::histogram!(
        "bench_database_query_duration_seconds",
        "operation" => "select",
        "table" => "content_by_hand_sync",
        "result" => if result.is_ok() { "success" } else { "error" },
    )
    .record(start.elapsed().as_secs_f64());
    result
}

#[track_query(select, "content_sync", metrics = metrics)]
#[inline(never)]
fn tracked_sync<M: QueryMetrics>(metrics: &M, id: u64) -> Result<u64, NotFound> {
    body(id)
}

// ----- variants -----

struct Ctx {
    /// What `tracing` sees in this process (see `tracing_setup`).
    tracing: &'static str,
    prometheus: Handle,
    metrics: DatabaseMetrics,
    no_recorder: DatabaseMetrics,
    tracker: QueryPerformanceTracker,
    pool: deadpool_postgres::Pool,
    pool_metrics: DatabaseMetrics,
    _runtime: tokio::runtime::Runtime,
}

const BARE_ASYNC: usize = 0;
const BY_HAND_ASYNC: usize = 1;
const TRACK_QUERY_ASYNC: usize = 2;
const TRACK_QUERY_NO_RECORDER: usize = 3;
const TRACK_QUERY_NOOP: usize = 4;
const TRACKER_ENUM: usize = 5;
const TRACKER_STR: usize = 6;
const BARE_SYNC: usize = 7;
const BY_HAND_SYNC: usize = 8;
const TRACK_QUERY_SYNC: usize = 9;
const POLL_TICK: usize = 10;
const CLOCK_PAIR: usize = 11;
const FLOOR_ASYNC: usize = 12;
const INSTRUMENT_BY_HAND: usize = 13;

/// One call of variant `V` (a const generic, so every timing loop is monomorphic).
#[inline(always)]
fn call<const V: usize>(ctx: &Ctx, id: u64) -> Result<u64, NotFound> {
    match V {
        BARE_ASYNC => run(bare(id)),
        BY_HAND_ASYNC => run(by_hand(id)),
        FLOOR_ASYNC => run(floor(id)),
        INSTRUMENT_BY_HAND => run(instrument_by_hand(id)),
        TRACK_QUERY_ASYNC => run(tracked(&ctx.metrics, id)),
        TRACK_QUERY_NO_RECORDER => run(tracked(&ctx.no_recorder, id)),
        TRACK_QUERY_NOOP => run(tracked(&NoopMetrics, id)),
        TRACKER_ENUM => run(via_tracker_enum(&ctx.tracker, id)),
        TRACKER_STR => run(via_tracker_str(&ctx.tracker, id)),
        BARE_SYNC => bare_sync(id),
        BY_HAND_SYNC => by_hand_sync(id),
        TRACK_QUERY_SYNC => tracked_sync(&ctx.metrics, id),
        POLL_TICK => {
            ctx.pool_metrics.__poll_tick(&ctx.pool);
            Ok(id)
        }
        CLOCK_PAIR => {
            let start = Instant::now();
            Ok(id + black_box(start.elapsed()).subsec_nanos() as u64)
        }
        _ => unreachable!(),
    }
}

/// Histogram samples wait in the exporter's buckets until drained (by a scrape, or the upkeep
/// thread every 5 s); the timing loops drain every this many calls, outside the timed part,
/// so that memory stays bounded whatever the iteration count.
const CHUNK: u64 = 1 << 16;

/// Times `iters` calls of variant `V`, in chunks, draining the exporter between chunks
/// (untimed). The same for every variant.
fn timed<const V: usize>(ctx: &Ctx, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let start = Instant::now();
        for _ in 0..n {
            let _ = black_box(call::<V>(ctx, black_box(1)));
        }
        total += start.elapsed();
        left -= n;
        ctx.prometheus.run_upkeep();
    }
    total
}

/// `n` calls of variant `V`, untimed (for counting allocations).
fn calls<const V: usize>(ctx: &Ctx, n: u64) {
    for _ in 0..n {
        let _ = black_box(call::<V>(ctx, black_box(1)));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Async,
    Sync,
    Reference,
}

struct Variant {
    group: &'static str,
    id: &'static str,
    what: &'static str,
    kind: Kind,
    timed: fn(&Ctx, u64) -> Duration,
    calls: fn(&Ctx, u64),
}

macro_rules! variant {
    ($group:literal, $id:literal, $what:literal, $kind:expr, $v:expr) => {
        Variant {
            group: $group,
            id: $id,
            what: $what,
            kind: $kind,
            timed: timed::<{ $v }>,
            calls: calls::<{ $v }>,
        }
    };
}

fn variants() -> Vec<Variant> {
    vec![
        variant!(
            "call",
            "bare_async",
            "bare async fn",
            Kind::Async,
            BARE_ASYNC
        ),
        variant!(
            "call",
            "by_hand_async",
            "by hand: Instant + histogram! (Prometheus)",
            Kind::Async,
            BY_HAND_ASYNC
        ),
        variant!(
            "call",
            "floor_async",
            "floor: OnceLock<Histogram> + 2 Instant",
            Kind::Async,
            FLOOR_ASYNC
        ),
        variant!(
            "call",
            "track_query_async",
            "#[track_query] (Prometheus)",
            Kind::Async,
            TRACK_QUERY_ASYNC
        ),
        variant!(
            "call",
            "track_query_async_no_recorder",
            "#[track_query] (no recorder)",
            Kind::Async,
            TRACK_QUERY_NO_RECORDER
        ),
        variant!(
            "call",
            "track_query_async_noop_metrics",
            "#[track_query] (NoopMetrics)",
            Kind::Async,
            TRACK_QUERY_NOOP
        ),
        variant!(
            "call",
            "tracker_enum_async",
            "tracker, Operation::Select (Prometheus)",
            Kind::Async,
            TRACKER_ENUM
        ),
        variant!(
            "call",
            "tracker_str_async",
            "tracker, \"select\" (Prometheus)",
            Kind::Async,
            TRACKER_STR
        ),
        variant!(
            "call",
            "instrument_by_hand_async",
            "by hand: #[instrument] + histogram!",
            Kind::Async,
            INSTRUMENT_BY_HAND
        ),
        variant!("call", "bare_sync", "bare sync fn", Kind::Sync, BARE_SYNC),
        variant!(
            "call",
            "by_hand_sync",
            "by hand, sync (Prometheus)",
            Kind::Sync,
            BY_HAND_SYNC
        ),
        variant!(
            "call",
            "track_query_sync",
            "#[track_query] sync (Prometheus)",
            Kind::Sync,
            TRACK_QUERY_SYNC
        ),
        variant!(
            "call",
            "clock_pair",
            "reference: Instant::now() + elapsed()",
            Kind::Reference,
            CLOCK_PAIR
        ),
        variant!(
            "poller",
            "tick",
            "pool poller tick: status() + 5 gauges",
            Kind::Reference,
            POLL_TICK
        ),
    ]
}

/// What `tracing` sees in this process: nothing, unless `DBMETRICS_BENCH_TRACING` installs a
/// global subscriber (`fmt` to `io::sink`, or `otel`: tracing-opentelemetry over an SDK tracer
/// provider without exporter).
fn tracing_setup() -> &'static str {
    let mode = std::env::var("DBMETRICS_BENCH_TRACING").unwrap_or_default();
    let installed = match mode.as_str() {
        "" => {
            return if cfg!(feature = "tracing") {
                "feature tracing on, no subscriber"
            } else {
                "feature tracing off"
            };
        }
        "fmt" => tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        ),
        "otel" => {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            let tracer = provider.tracer("bench");
            // Kept for the process's life: the tracer's spans need it.
            std::mem::forget(provider);
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::filter::LevelFilter::INFO)
                    .with(tracing_opentelemetry::layer().with_tracer(tracer)),
            )
        }
        other => panic!("DBMETRICS_BENCH_TRACING={other}: expected fmt or otel"),
    };
    installed.expect("the first global subscriber installs");
    if !cfg!(feature = "tracing") {
        return "feature tracing off, a subscriber installed (dbmetrics makes no span)";
    }
    if mode == "fmt" {
        "feature tracing on, fmt subscriber (to io::sink)"
    } else {
        "feature tracing on, tracing-opentelemetry (SDK, no exporter)"
    }
}

fn setup() -> Ctx {
    let tracing = tracing_setup();
    let prometheus = dbmetrics::exporter::install_recorder().expect("the first recorder installs");
    let metrics = DatabaseMetrics::new("bench").expect("valid service name");
    let no_recorder = DatabaseMetrics::new("bench_no_recorder").expect("valid service name");
    // Resolve `no_recorder`'s handles for the `tracked` site with no recorder in effect.
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let _ = run(tracked(&no_recorder, 1));
    });
    let tracker = QueryPerformanceTracker::new(metrics.clone());

    // The poller tick needs a pool with monitoring set up; the pool never connects (status()
    // reads deadpool's counters), so no database is needed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let config: tokio_postgres::Config = "host=127.0.0.1 user=postgres dbname=postgres"
        .parse()
        .expect("a valid config");
    let pool = dbmetrics_tests::pool_for(config, 16);
    let pool_metrics = {
        let _enter = runtime.enter();
        dbmetrics::setup_database_monitoring(&pool, "bench_pool").expect("monitoring set up")
    };
    Ctx {
        tracing,
        prometheus,
        metrics,
        no_recorder,
        tracker,
        pool,
        pool_metrics,
        _runtime: runtime,
    }
}

// ----- the summary -----

/// Where criterion writes (the same rule criterion follows).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/<profile>/deps/overhead-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion's median estimate (ns per call) of `group/id`, if written by this run.
fn criterion_median(group: &str, id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let meta = std::fs::metadata(&path).ok()?;
    if meta.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Rounds of every variant in rotating order: ns per call of each variant in each round.
fn interleaved(ctx: &Ctx, variants: &[Variant], rounds: usize, iters: u64) -> Vec<Vec<f64>> {
    let mut per_round: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let elapsed = (variants[i].timed)(ctx, iters);
            per_round[i].push(elapsed.as_nanos() as f64 / iters as f64);
        }
    }
    per_round
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pair medians against the floor: in each round, the variant's overhead over the bare fn
/// divided by the floor's overhead over the bare fn, measured in the same round; the median of
/// those ratios. Async variants only (the floor is an async fn).
fn floor_ratios(variants: &[Variant], per_round: &[Vec<f64>]) -> Vec<Option<f64>> {
    let find = |id: &str| variants.iter().position(|v| v.id == id);
    let (Some(bare), Some(floor)) = (find("bare_async"), find("floor_async")) else {
        return vec![None; variants.len()];
    };
    variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.kind != Kind::Async {
                return None;
            }
            let ratios: Vec<f64> = (0..per_round[i].len())
                .map(|r| {
                    (per_round[i][r] - per_round[bare][r])
                        / (per_round[floor][r] - per_round[bare][r])
                })
                .collect();
            Some(median(ratios))
        })
        .collect()
}

fn overheads(variants: &[Variant], ns: &[Option<f64>]) -> Vec<(Option<f64>, Option<f64>)> {
    let find = |id: &str| variants.iter().position(|v| v.id == id).and_then(|i| ns[i]);
    variants
        .iter()
        .zip(ns)
        .map(|(v, ns)| {
            let (base, hand) = match v.kind {
                Kind::Async => (find("bare_async"), find("by_hand_async")),
                Kind::Sync => (find("bare_sync"), find("by_hand_sync")),
                Kind::Reference => return (None, None),
            };
            let over = match (ns, base) {
                (Some(ns), Some(base)) => Some(ns - base),
                _ => None,
            };
            let ratio = match (over, hand, base) {
                (Some(over), Some(hand), Some(base)) if hand - base > 0.0 => {
                    Some(over / (hand - base))
                }
                _ => None,
            };
            (over, ratio)
        })
        .collect()
}

fn cell(v: Option<f64>, precision: usize) -> String {
    match v {
        Some(v) => format!("{v:.precision$}"),
        None => "-".into(),
    }
}

fn summary(ctx: &Ctx, variants: &[Variant], since: SystemTime) {
    let crit_ns: Vec<Option<f64>> = variants
        .iter()
        .map(|v| criterion_median(v.group, v.id, since))
        .collect();
    let crit_over = overheads(variants, &crit_ns);

    let rounds = 31;
    let iters = 100_000;
    let per_round = interleaved(ctx, variants, rounds, iters);
    let x_floor = floor_ratios(variants, &per_round);
    let inter_ns: Vec<Option<f64>> = per_round.iter().cloned().map(median).map(Some).collect();
    let inter_over = overheads(variants, &inter_ns);

    // Allocations: a multiple of the exporter's 64-sample bucket blocks, everything warm.
    let alloc_calls: u64 = 64 * 1_000;
    let allocs: Vec<f64> = variants
        .iter()
        .map(|v| {
            ctx.prometheus.run_upkeep();
            allocations_in(|| (v.calls)(ctx, alloc_calls)) as f64 / alloc_calls as f64
        })
        .collect();

    println!();
    println!("tracing: {}", ctx.tracing);
    println!(
        "dbmetrics per-call overhead, one run (ns per call; overhead = variant - bare fn of the same kind;"
    );
    println!(
        "x hand = overhead / hand-written overhead; criterion = median of criterion's samples;"
    );
    println!(
        "interleaved = median of {rounds} rounds of {iters} calls, variants in rotating order;"
    );
    println!(
        "x floor = median over rounds of overhead / floor overhead in the same round (pair medians))"
    );
    println!();
    println!(
        "{:<42} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} {:>7} | {:>11}",
        "variant",
        "crit ns",
        "overhead",
        "x hand",
        "inter ns",
        "overhead",
        "x hand",
        "x floor",
        "allocs/call"
    );
    for (i, v) in variants.iter().enumerate() {
        println!(
            "{:<42} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} {:>7} | {:>11}",
            v.what,
            cell(crit_ns[i], 1),
            cell(crit_over[i].0, 1),
            cell(crit_over[i].1, 2),
            cell(inter_ns[i], 1),
            cell(inter_over[i].0, 1),
            cell(inter_over[i].1, 2),
            cell(x_floor[i], 2),
            format!("{:.4}", allocs[i]),
        );
    }

    // Sanity: the tracked variants recorded, the no-recorder instance did not.
    let text = ctx.prometheus.render();
    let count_of = |table: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("bench_database_query_duration_seconds_count{")
                    && l.contains(&format!("table=\"{table}\""))
                    && l.contains("result=\"success\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!();
    println!(
        "recorded samples: track_query {:.0}, by hand {:.0}, tracker {:.0}; series of the no-recorder instance rendered: {}",
        count_of("content"),
        count_of("content_by_hand"),
        count_of("content_tracker"),
        text.lines()
            .filter(|l| l.starts_with("bench_no_recorder_"))
            .count()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not (criterion then runs each
    // benchmark once, as a test); --list only lists; --profile-time runs without analysis.
    let benchmarking = args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--list" || a.starts_with("--profile-time"));
    let started = SystemTime::now();

    let ctx = setup();
    let variants = variants();

    // `DBMETRICS_BENCH_ONLY=<id>:<calls>`: run one variant that many times and exit (for
    // instruction counts under `valgrind --tool=callgrind`; see BENCHMARKS.md).
    if let Ok(only) = std::env::var("DBMETRICS_BENCH_ONLY") {
        let (id, calls) = only
            .split_once(':')
            .expect("DBMETRICS_BENCH_ONLY=<id>:<calls>");
        let calls: u64 = calls.parse().expect("a number of calls");
        let variant = variants
            .iter()
            .find(|v| v.id == id)
            .unwrap_or_else(|| panic!("no variant {id}"));
        (variant.calls)(&ctx, calls);
        return;
    }

    let mut criterion = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for group_name in ["call", "poller"] {
        let mut group = criterion.benchmark_group(group_name);
        for v in variants.iter().filter(|v| v.group == group_name) {
            group.bench_function(v.id, |b| b.iter_custom(|iters| (v.timed)(&ctx, iters)));
        }
        group.finish();
    }
    criterion.final_summary();

    if benchmarking {
        summary(&ctx, &variants, started);
    }
}
