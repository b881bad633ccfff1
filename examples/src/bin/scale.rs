//! Exporter at scale: render time and resident memory with 100, 1,000 and 10,000 distinct
//! (operation, table) series (see BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p dbmetrics-examples --bin scale
//! ```
//!
//! Series are made through the tracker API, one distinct table per series, each with one
//! recorded call; the counts grow in one process (100, then 900 more, then 9,000 more).
//! Resident memory is `VmRSS` from `/proc/self/status`. Render time is the median of several
//! renders after the first (the first also drains the recorded samples into histograms and is
//! printed apart). No database is needed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dbmetrics::{DatabaseMetrics, Operation, QueryPerformanceTracker};

/// Resident set size of this process, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> ExitCode {
    let mut sizes = vec![100usize, 1_000, 10_000];
    let mut renders = 7usize;
    let mut args = std::env::args().skip(1);
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
                eprintln!("usage: scale [--sizes 100,1000,10000] [--renders 7]");
                return ExitCode::from(2);
            }
        }
    }

    let rss_start = rss_kib();
    let prometheus = match dbmetrics::exporter::install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = DatabaseMetrics::new("scale").expect("a valid service name");
    let tracker = QueryPerformanceTracker::new(metrics);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
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
