//! Exporter at scale: render time and resident memory with 100, 1,000 and 10,000 distinct
//! (operation, table) series (see BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p dbmetrics-examples --bin scale
//! cargo run --release -p dbmetrics-examples --bin scale -- --bounded
//! ```
//!
//! Series are made through the tracker API, one distinct table per series, each with one
//! recorded call; the counts grow in one process (100, then 900 more, then 9,000 more). The
//! service is built with `label_limit(100_000)` so that every table is its own series (the
//! pool it is built on never connects: no database is needed).
//!
//! `--bounded`: 100,000 tracked calls over 10,000 distinct run-time tables with the default
//! label limit (1,000): the first 1,000 tables get their own series, the rest record under
//! `table="_overflow"`; it prints the series, resident memory and render time, and checks that
//! every call was counted.
//! Resident memory is `VmRSS` from `/proc/self/status`. Render time is the median of several
//! renders after the first (the first also drains the recorded samples into histograms and is
//! printed apart). No database is needed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dbmetrics::{DatabaseMetrics, Operation, QueryPerformanceTracker};
use deadpool_postgres::{Manager, ManagerConfig, Pool};
use tokio_postgres::NoTls;

/// A pool that is never used to connect: the builder needs one to attach the service to.
fn idle_pool() -> Pool {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(1).user("scale");
    Pool::builder(Manager::from_config(
        config,
        NoTls,
        ManagerConfig::default(),
    ))
    .max_size(1)
    .runtime(deadpool_postgres::Runtime::Tokio1)
    .build()
    .expect("a pool that never connects")
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What both modes measure through.
struct Service {
    prometheus: dbmetrics::exporter::PrometheusHandle,
    runtime: tokio::runtime::Runtime,
    _pool: Pool,
    metrics: DatabaseMetrics,
}

/// The Prometheus recorder and the `scale` service with `label_limit` (on a pool that never
/// connects); `None`, said on stderr, when the recorder cannot be installed.
fn service(label_limit: usize) -> Option<Service> {
    let prometheus = match dbmetrics::exporter::install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("scale: {e}");
            return None;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let pool = idle_pool();
    let metrics = runtime
        .block_on(async {
            DatabaseMetrics::builder(&pool, "scale")
                .label_limit(label_limit)
                .build()
        })
        .expect("a valid service name");
    Some(Service {
        prometheus,
        runtime,
        _pool: pool,
        metrics,
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> ExitCode {
    let mut sizes = vec![100usize, 1_000, 10_000];
    let mut renders = 7usize;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--bounded") {
        return bounded();
    }
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--sizes", Some(list)) => {
                match list
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=100_000).contains(n))
                    })
                    .collect::<Option<Vec<_>>>()
                {
                    Some(mut list) => {
                        list.sort_unstable();
                        sizes = list;
                    }
                    None => {
                        eprintln!("scale: --sizes takes counts in 1..=100000, comma separated");
                        return ExitCode::from(2);
                    }
                }
            }
            ("--renders", Some(n)) => {
                match n.parse::<usize>().ok().filter(|n| (1..=100).contains(n)) {
                    Some(n) => renders = n,
                    None => {
                        eprintln!("scale: --renders takes a count in 1..=100");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => {
                eprintln!("usage: scale [--sizes 100,1000,10000] [--renders 7] | scale --bounded");
                return ExitCode::from(2);
            }
        }
    }

    let rss_start = rss_kib();
    let Some(Service {
        prometheus,
        runtime,
        _pool,
        metrics,
    }) = service(100_000)
    else {
        return ExitCode::FAILURE;
    };
    let tracker = QueryPerformanceTracker::new(metrics);
    // Render once so the baseline holds the recorder's fixed costs.
    let _ = prometheus.render();
    let rss_base = rss_kib();

    println!(
        "exporter at scale: one process, {renders} renders per size after the first; RSS from /proc/self/status"
    );
    println!(
        "RSS at start {} KiB, with the recorder installed and rendered once {} KiB",
        rss_start.map_or("?".into(), |v| v.to_string()),
        rss_base.map_or("?".into(), |v| v.to_string()),
    );
    println!();
    println!(
        "{:>7} {:>9} {:>10} {:>11} {:>12} {:>12} {:>12} {:>12} {:>11}",
        "series",
        "histos",
        "lines",
        "bytes",
        "first ms",
        "render ms",
        "us/series",
        "RSS KiB",
        "KiB/series"
    );

    let mut made = 0usize;
    for &size in &sizes {
        let create = Instant::now();
        runtime.block_on(async {
            while made < size {
                let table = format!("table_{made:06}");
                tracker
                    .track_query(Operation::Select, &table, async {})
                    .await;
                made += 1;
            }
        });
        let create = create.elapsed();
        let rss_made = rss_kib();

        let first = Instant::now();
        let text = prometheus.render();
        let first = first.elapsed();
        let mut times = Vec::with_capacity(renders);
        let mut bytes = text.len();
        for _ in 0..renders {
            let start = Instant::now();
            let text = prometheus.render();
            times.push(start.elapsed());
            bytes = text.len();
        }
        let render = median(times);
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        let histograms = text
            .lines()
            .filter(|l| l.starts_with("scale_database_query_duration_seconds_count{"))
            .count();
        let rss_after = rss_kib();
        let per_series_kib = match (rss_made, rss_base) {
            (Some(made), Some(base)) => format!("{:.2}", (made as f64 - base as f64) / size as f64),
            _ => "?".into(),
        };
        println!(
            "{:>7} {:>9} {:>10} {:>11} {:>12.2} {:>12.2} {:>12.2} {:>12} {:>11}",
            size,
            histograms,
            lines,
            bytes,
            first.as_secs_f64() * 1e3,
            render.as_secs_f64() * 1e3,
            render.as_secs_f64() * 1e6 / size as f64,
            format!(
                "{}/{}",
                rss_made.map_or("?".into(), |v| v.to_string()),
                rss_after.map_or("?".into(), |v| v.to_string())
            ),
            per_series_kib,
        );
        eprintln!(
            "  ({size} series made in {:.1} ms through the tracker)",
            create.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "histos: histogram series of query_duration rendered (each site registers success, error and cancelled);"
    );
    println!(
        "lines: sample lines; first: the first render after the calls (drains samples); render: median of the rest;"
    );
    println!(
        "RSS KiB: after making the series / after rendering; KiB/series: (RSS after making - baseline) / series."
    );
    ExitCode::SUCCESS
}

/// `--bounded`: 100,000 calls over 10,000 run-time tables with the default label limit.
fn bounded() -> ExitCode {
    const CALLS: usize = 100_000;
    const TABLES: usize = 10_000;
    let Some(Service {
        prometheus,
        runtime,
        _pool,
        metrics,
    }) = service(DatabaseMetrics::DEFAULT_LABEL_LIMIT)
    else {
        return ExitCode::FAILURE;
    };
    let tracker = QueryPerformanceTracker::new(metrics);
    let _ = prometheus.render();
    let rss_base = rss_kib();
    // The names, made before the calls so that the figures measure dbmetrics, not `format!`.
    let tables: Vec<String> = (0..TABLES).map(|i| format!("tenant_{i:05}")).collect();
    let rss_names = rss_kib();

    let calls = Instant::now();
    runtime.block_on(async {
        for i in 0..CALLS {
            tracker
                .track_query(Operation::Select, &tables[i % TABLES], async {})
                .await;
        }
    });
    let calls = calls.elapsed();
    let rss_made = rss_kib();
    let first = Instant::now();
    let _ = prometheus.render();
    let first = first.elapsed();
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..7 {
        let start = Instant::now();
        text = prometheus.render();
        times.push(start.elapsed());
    }
    let render = median(times);
    let rss_after = rss_kib();

    let counts: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("scale_database_query_duration_seconds_count{"))
        .filter(|l| l.contains("result=\"success\""))
        .filter_map(|l| {
            let table = l.split("table=\"").nth(1)?.split('"').next()?.to_owned();
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((table, value))
        })
        .collect();
    let counted: u64 = counts.iter().map(|(_, n)| n).sum();
    let overflow = counts
        .iter()
        .find(|(t, _)| t == "_overflow")
        .map_or(0, |(_, n)| *n);
    let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{} KiB", a as i64 - b as i64),
        _ => "?".into(),
    };
    println!(
        "bounded labels: {CALLS} tracked calls over {TABLES} distinct run-time tables, default label limit"
    );
    println!(
        "series (table label values of query_duration, success): {} ({} tables + _overflow)",
        counts.len(),
        counts.len().saturating_sub(1)
    );
    println!("calls counted: {counted} of {CALLS}; under _overflow: {overflow}");
    println!(
        "RSS: names {} ; after the calls +{} ; after rendering +{} (from the baseline {} KiB)",
        delta(rss_names, rss_base),
        delta(rss_made, rss_names),
        delta(rss_after, rss_names),
        rss_base.map_or("?".into(), |v| v.to_string())
    );
    println!(
        "calls: {:.1} ms ({:.0} ns/call); first render {:.2} ms; render median of 7: {:.2} ms; {} bytes",
        calls.as_secs_f64() * 1e3,
        calls.as_secs_f64() * 1e9 / CALLS as f64,
        first.as_secs_f64() * 1e3,
        render.as_secs_f64() * 1e3,
        text.len()
    );
    if counted == CALLS as u64 && counts.len() == 1_001 {
        ExitCode::SUCCESS
    } else {
        println!("FAIL: expected {CALLS} calls in 1,001 series");
        ExitCode::FAILURE
    }
}
