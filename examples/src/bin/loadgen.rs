//! Load generator: throughput and latency of tracked against untracked queries on a real
//! PostgreSQL, in one process (see BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p dbmetrics-examples --bin loadgen -- --round-secs 0.2 --rounds 30
//! ```
//!
//! For each query (`SELECT 1`, a primary-key lookup in a table it creates) and each
//! concurrency (1, 8, 32 tasks sharing one deadpool pool), it runs a warm-up, then `--rounds`
//! pairs of rounds, one untracked and one tracked, alternating which goes first (U T, T U,
//! ...) so that drift in the machine's load cancels. The two modes run the same body; the
//! tracked one is a `#[track_query]` method of a `#[derive(TrackedRepository)]` repository
//! recording into the Prometheus recorder, with the pool monitored by
//! `setup_database_monitoring`. It prints throughput and p50/p99 latency per mode and the
//! tracked/untracked throughput ratio: of the totals over all rounds, and the median and range
//! of the ratios of each pair of rounds (the median shrugs off a round hit by other load); and
//! the process's CPU time per call in each mode (from `/proc/self/task/*/schedstat`), which
//! other load on the machine disturbs much less than throughput; and `dp50`, the tracked
//! minus the untracked median latency.
//!
//! PostgreSQL: `DATABASE_URL`, else 127.0.0.1:5432, else a throwaway cluster (as the tests).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dbmetrics::{DatabaseMetrics, TrackedRepository, track_query};
use deadpool_postgres::Pool;

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("query: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// The repository under load: every query twice, untracked and tracked, with the same body.
#[derive(Clone, TrackedRepository)]
struct Items {
    pool: Pool,
    lookup_sql: Arc<str>,
    #[metrics]
    metrics: DatabaseMetrics,
}

impl Items {
    async fn select_one(&self) -> Result<i32, LoadError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached("SELECT 1").await?;
        Ok(client.query_one(&statement, &[]).await?.get(0))
    }

    #[track_query(select, "dual")]
    async fn select_one_tracked(&self) -> Result<i32, LoadError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached("SELECT 1").await?;
        Ok(client.query_one(&statement, &[]).await?.get(0))
    }

    async fn title(&self, id: i64) -> Result<String, LoadError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&self.lookup_sql).await?;
        Ok(client.query_one(&statement, &[&id]).await?.get(0))
    }

    #[track_query(select, "items")]
    async fn title_tracked(&self, id: i64) -> Result<String, LoadError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&self.lookup_sql).await?;
        Ok(client.query_one(&statement, &[&id]).await?.get(0))
    }
}

const ROWS: i64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    SelectOne,
    PkLookup,
}

impl Query {
    fn label(self) -> &'static str {
        match self {
            Query::SelectOne => "SELECT 1",
            Query::PkLookup => "pk lookup",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Untracked,
    Tracked,
}

struct Options {
    round: Duration,
    rounds: usize,
    warmup: Duration,
    concurrency: Vec<usize>,
}

const USAGE: &str =
    "usage: loadgen [--round-secs SECS] [--rounds N] [--warmup-secs SECS] [--concurrency 1,8,32]

  --round-secs SECS    length of one round (default 0.2)
  --rounds N           round pairs (untracked + tracked) per query and concurrency (default 30)
  --warmup-secs SECS   warm-up per query and concurrency, each mode (default 0.5)
  --concurrency LIST   concurrent tasks, comma separated (default 1,8,32)

Total time is about 2 queries x |LIST| x 2 x (warmup + rounds x round): 78 s by default.";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        round: Duration::from_millis(200),
        rounds: 30,
        warmup: Duration::from_millis(500),
        concurrency: vec![1, 8, 32],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: {v:?} is not a number of seconds in (0, 3600]"))
        };
        match flag.as_str() {
            "--round-secs" => options.round = secs(&value)?,
            "--warmup-secs" => options.warmup = secs(&value)?,
            "--rounds" => {
                options.rounds = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("--rounds: {value:?} is not a count in 1..=1000"))?;
            }
            "--concurrency" => {
                options.concurrency = value
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse()
                            .ok()
                            .filter(|n| (1..=256).contains(n))
                            .ok_or_else(|| {
                                format!("--concurrency: {c:?} is not a task count in 1..=256")
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(options)
}

/// A small xorshift generator per task (the ids to look up need not be good random numbers).
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % ROWS as u64) as i64 + 1
    }
}

/// One task of a round: calls until `deadline`, returns each call's latency in nanoseconds.
async fn worker(
    items: Items,
    query: Query,
    mode: Mode,
    deadline: Instant,
    seed: u64,
    errors: Arc<AtomicU64>,
) -> Vec<u64> {
    let mut latencies = Vec::with_capacity(1 << 14);
    let mut ids = Ids(seed | 1);
    while Instant::now() < deadline {
        let start = Instant::now();
        let ok = match (query, mode) {
            (Query::SelectOne, Mode::Untracked) => items.select_one().await.is_ok(),
            (Query::SelectOne, Mode::Tracked) => items.select_one_tracked().await.is_ok(),
            (Query::PkLookup, Mode::Untracked) => items.title(ids.next()).await.is_ok(),
            (Query::PkLookup, Mode::Tracked) => items.title_tracked(ids.next()).await.is_ok(),
        };
        latencies.push(start.elapsed().as_nanos() as u64);
        if !ok {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies
}

/// CPU time used so far by the threads of this process, in nanoseconds (the sum of the first
/// field of `/proc/self/task/*/schedstat`); `None` where that is not available.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

struct Round {
    calls: u64,
    elapsed: Duration,
    cpu_ns: Option<u64>,
    latencies: Vec<u64>,
}

async fn round(
    items: &Items,
    query: Query,
    mode: Mode,
    tasks: usize,
    length: Duration,
    errors: &Arc<AtomicU64>,
) -> Round {
    let cpu_start = process_cpu_ns();
    let start = Instant::now();
    let deadline = start + length;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            tokio::spawn(worker(
                items.clone(),
                query,
                mode,
                deadline,
                0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
                errors.clone(),
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("a load task never panics"));
    }
    Round {
        calls: latencies.len() as u64,
        elapsed: start.elapsed(),
        cpu_ns: process_cpu_ns()
            .zip(cpu_start)
            .map(|(end, start)| end.saturating_sub(start)),
        latencies,
    }
}

#[derive(Default)]
struct Totals {
    rounds: usize,
    calls: u64,
    elapsed: Duration,
    cpu_ns: Option<u64>,
    latencies: Vec<u64>,
}

impl Totals {
    fn add(&mut self, round: Round) {
        self.calls += round.calls;
        self.elapsed += round.elapsed;
        self.cpu_ns = match (self.rounds, self.cpu_ns, round.cpu_ns) {
            (0, _, cpu) => cpu,
            (_, Some(total), Some(cpu)) => Some(total + cpu),
            _ => None,
        };
        self.rounds += 1;
        self.latencies.extend(round.latencies);
    }

    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU time of the whole process (client side: tokio, tokio-postgres, deadpool, dbmetrics,
    /// the exporter's upkeep thread) per call, in microseconds.
    fn cpu_us_per_call(&self) -> f64 {
        self.cpu_ns
            .map_or(f64::NAN, |ns| ns as f64 / 1_000.0 / self.calls as f64)
    }

    fn percentile_us(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1_000.0
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let prometheus = match dbmetrics::exporter::install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let database = dbmetrics_tests::database();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async move {
        let max_tasks = options.concurrency.iter().copied().max().unwrap_or(1);
        let pool = database.pool(max_tasks);
        let metrics = match dbmetrics::setup_database_monitoring(&pool, "loadgen") {
            Ok(metrics) => metrics,
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let table = dbmetrics_tests::unique("loadgen_items");
        let setup = async {
            let client = pool.get().await?;
            client
                .batch_execute(&format!(
                    "CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT NOT NULL);
                     INSERT INTO {table} SELECT i, 'title ' || i FROM generate_series(1, {ROWS}) i;
                     ANALYZE {table};"
                ))
                .await?;
            Ok::<_, LoadError>(())
        };
        if let Err(e) = setup.await {
            eprintln!("loadgen: creating the table failed: {e}");
            return ExitCode::FAILURE;
        }
        let items = Items {
            pool: pool.clone(),
            lookup_sql: format!("SELECT title FROM {table} WHERE id = $1").into(),
            metrics,
        };

        println!(
            "loadgen: {} rounds of {:.2} s per mode, warm-up {:.2} s, concurrency {:?}, {} worker threads",
            options.rounds,
            options.round.as_secs_f64(),
            options.warmup.as_secs_f64(),
            options.concurrency,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        println!();
        println!(
            "{:<10} {:>5}  {:<10} {:>10} {:>9} {:>9} {:>11} {:>8}   {:>6} {:>7}  {:>13}  {:>9}",
            "query",
            "tasks",
            "mode",
            "calls/s",
            "p50 us",
            "p99 us",
            "cpu us/call",
            "dp50 us",
            "ratio",
            "median",
            "pairs min..max",
            "cpu ratio"
        );
        let errors = Arc::new(AtomicU64::new(0));
        let mut tracked_calls = [0u64; 2];
        let mut worst = f64::INFINITY;
        let mut worst_median = f64::INFINITY;
        for query in [Query::SelectOne, Query::PkLookup] {
            for &tasks in &options.concurrency {
                for mode in [Mode::Untracked, Mode::Tracked] {
                    let warm = round(&items, query, mode, tasks, options.warmup, &errors).await;
                    if mode == Mode::Tracked {
                        tracked_calls[query as usize] += warm.calls;
                    }
                }
                let mut untracked = Totals::default();
                let mut tracked = Totals::default();
                let mut pair_ratios = Vec::with_capacity(options.rounds);
                for r in 0..options.rounds {
                    let order = if r % 2 == 0 {
                        [Mode::Untracked, Mode::Tracked]
                    } else {
                        [Mode::Tracked, Mode::Untracked]
                    };
                    let mut pair = [0.0; 2];
                    for mode in order {
                        let done = round(&items, query, mode, tasks, options.round, &errors).await;
                        let rate = done.calls as f64 / done.elapsed.as_secs_f64();
                        match mode {
                            Mode::Untracked => {
                                pair[0] = rate;
                                untracked.add(done);
                            }
                            Mode::Tracked => {
                                pair[1] = rate;
                                tracked_calls[query as usize] += done.calls;
                                tracked.add(done);
                            }
                        }
                    }
                    pair_ratios.push(pair[1] / pair[0]);
                }
                let ratio = tracked.throughput() / untracked.throughput();
                worst = worst.min(ratio);
                pair_ratios.sort_by(f64::total_cmp);
                let (lo, hi) = (pair_ratios[0], pair_ratios[pair_ratios.len() - 1]);
                let median = if pair_ratios.len() % 2 == 1 {
                    pair_ratios[pair_ratios.len() / 2]
                } else {
                    let upper = pair_ratios.len() / 2;
                    (pair_ratios[upper - 1] + pair_ratios[upper]) / 2.0
                };
                worst_median = worst_median.min(median);
                println!(
                    "{:<10} {:>5}  {:<10} {:>10.0} {:>9.1} {:>9.1} {:>11.2}",
                    query.label(),
                    tasks,
                    "untracked",
                    untracked.throughput(),
                    untracked.percentile_us(0.50),
                    untracked.percentile_us(0.99),
                    untracked.cpu_us_per_call(),
                );
                println!(
                    "{:<10} {:>5}  {:<10} {:>10.0} {:>9.1} {:>9.1} {:>11.2} {:>+8.2}   {:>6.3} {:>7.3}  {:>6.3}..{:.3}  {:>9.3}",
                    query.label(),
                    tasks,
                    "tracked",
                    tracked.throughput(),
                    tracked.percentile_us(0.50),
                    tracked.percentile_us(0.99),
                    tracked.cpu_us_per_call(),
                    tracked.percentile_us(0.50) - untracked.percentile_us(0.50),
                    ratio,
                    median,
                    lo,
                    hi,
                    tracked.cpu_us_per_call() / untracked.cpu_us_per_call(),
                );
            }
        }
        println!();
        println!(
            "lowest tracked/untracked throughput ratio: {worst:.3} of totals, {worst_median:.3} of pair medians (target >= 0.98)"
        );

        // The tracked calls were all recorded: compare with the rendered counts.
        let text = prometheus.render();
        let count_of = |table: &str| -> f64 {
            text.lines()
                .filter(|l| {
                    l.starts_with("loadgen_database_query_duration_seconds_count{")
                        && l.contains(&format!("table=\"{table}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        println!(
            "recorded by dbmetrics: SELECT 1 {} of {} tracked calls, pk lookup {} of {}",
            count_of("dual"),
            tracked_calls[Query::SelectOne as usize],
            count_of("items"),
            tracked_calls[Query::PkLookup as usize],
        );

        let failed = errors.load(Ordering::Relaxed);
        if let Ok(client) = pool.get().await {
            let _ = client.batch_execute(&format!("DROP TABLE {table}")).await;
        }
        if failed > 0 {
            eprintln!("loadgen: {failed} calls failed");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}
