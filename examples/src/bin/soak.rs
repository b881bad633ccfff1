//! Soak: mixed tracked load through a `TrackedPool` behind a TCP fault proxy, a fault injected
//! every few seconds, and at the end the exact accounting of what the load generator saw
//! against what the rendered Prometheus metrics say.
//!
//! ```sh
//! cargo run -p dbmetrics-examples --bin soak -- --duration 600
//! ```
//!
//! Options: `--duration SECS` (default 60), `--workers N` (8), `--pool N` (4),
//! `--fault-every SECS` (3), `--seed N` (1). PostgreSQL is found as the tests find it
//! (`DATABASE_URL`, else 127.0.0.1:5432, else a throwaway cluster).
//!
//! Load: workers call tracked repository methods (select, insert that may hit
//! `unique_violation`, upsert, update, `pg_sleep`, a two-row `#[track_transaction]`), each
//! under a 1 s deadline (a call past it is `cancelled`), through a pool with a 500 ms wait
//! timeout. Faults, in turn: every connection cut; the server silent for 1.5 s; connections
//! refused for 1 s (live ones cut); `pg_terminate_backend` of every pool backend;
//! `statement_timeout` of 5 ms on the sleeps for 1 s. A health check runs every second.
//!
//! A share of the selects goes through [`QueryPerformanceTracker`] with a run-time table name
//! drawn from 5,000 tenants (`soak_tenant_N`): more than the default label limit (1,000), so
//! the overflow series `table="_overflow"` fills and series and memory must stay bounded.
//! Every minute the resident memory (`VmRSS`) and the number of live series in the rendered
//! text are printed; at the end, the growth of resident memory from minute 2 to the last.
//!
//! Exit code 0 and `PASS` when, per call site and outcome (success, error by class,
//! cancelled), the metrics equal the generator's counts, acquisitions equal releases and the
//! generator's checkouts, wait timeouts equal the `pool_timeout` errors, no worker panicked,
//! every health check answered within its bound, the pool served again after the faults and,
//! for a run of 3 minutes or more, resident memory grew less than 5% from minute 2 to the
//! last; otherwise 1 and `FAIL`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dbmetrics::classify::classify;
use dbmetrics::{
    ClassifyError, DatabaseHealthChecker, DatabaseMetrics, HealthStatus, Outcome,
    QueryPerformanceTracker, TrackedConnection, TrackedPool, TrackedRepository,
    create_infrastructure_enhancer, track_query, track_transaction,
};
use dbmetrics_tests::proxy::{FaultProxy, Mode};
use dbmetrics_tests::{Exposition, database, prometheus, scrape};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, timeout};
use tokio_postgres::NoTls;

const SERVICE: &str = "soak";
/// Deadline of every tracked call: past it the call is dropped (`cancelled`).
const CALL_DEADLINE: Duration = Duration::from_secs(1);
/// The pool's wait timeout (`pool_timeout`, stage `wait`).
const WAIT_TIMEOUT: Duration = Duration::from_millis(500);
/// The health checker's own bound, and the margin its answer must arrive within.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
const HEALTH_MARGIN: Duration = Duration::from_secs(2);
/// How long the pool may take to serve again once the faults stop.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often resident memory and live series are sampled.
const MEMORY_EVERY: Duration = Duration::from_secs(60);
/// Distinct run-time table names the tenant selects draw from (above the default limit).
const TENANTS: u64 = 5_000;
/// Largest growth of resident memory from minute 2 to the last that still passes.
const RSS_GROWTH_LIMIT: f64 = 0.05;

struct Args {
    duration: Duration,
    workers: u64,
    pool: usize,
    fault_every: Duration,
    seed: u64,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut args = Args {
            duration: Duration::from_secs(60),
            workers: 8,
            pool: 4,
            fault_every: Duration::from_secs(3),
            seed: 1,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut number = |what: &str| -> Result<u64, String> {
                let value = it.next().ok_or(format!("{what} needs a value"))?;
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{what} takes a whole number, got {value:?}"))
            };
            match flag.as_str() {
                "--duration" => args.duration = Duration::from_secs(number("--duration")?),
                "--workers" => args.workers = number("--workers")?.max(1),
                "--pool" => args.pool = number("--pool")?.max(1) as usize,
                "--fault-every" => {
                    args.fault_every = Duration::from_secs(number("--fault-every")?.max(1))
                }
                "--seed" => args.seed = number("--seed")?,
                "-h" | "--help" => {
                    return Err("usage: soak [--duration SECS] [--workers N] [--pool N] \
                                [--fault-every SECS] [--seed N]"
                        .into());
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        Ok(args)
    }
}

// ---------------------------------------------------------------------------------------------
// The repository
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
enum SoakError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl ClassifyError for SoakError {
    fn error_type(&self) -> &'static str {
        classify(self)
    }
}

struct Sql {
    get: String,
    tenant: String,
    insert: String,
    upsert: String,
    bump: String,
}

#[derive(Clone, TrackedRepository)]
struct Items {
    pool: TrackedPool,
    #[metrics]
    metrics: DatabaseMetrics,
    tracker: QueryPerformanceTracker,
    sql: Arc<Sql>,
    /// Checkouts that returned a connection, as the generator saw them.
    checkouts: Arc<AtomicU64>,
    /// While set, sleeps run under a 5 ms `statement_timeout`.
    statement_timeouts: Arc<AtomicBool>,
}

impl Items {
    async fn conn(&self) -> Result<TrackedConnection, SoakError> {
        let connection = self.pool.get().await?;
        self.checkouts.fetch_add(1, Ordering::SeqCst);
        Ok(connection)
    }

    /// A select through the tracker, labelled with a run-time table name (`soak_tenant_N`).
    async fn tenant(&self, tenant: u64, id: i64) -> Result<Option<i64>, SoakError> {
        let table = format!("soak_tenant_{tenant}");
        self.tracker
            .track_query("select", &table, async {
                let c = self.conn().await?;
                Ok(c.query_opt(&self.sql.tenant, &[&id])
                    .await?
                    .map(|r| r.get(0)))
            })
            .await
    }

    #[track_query(select, "soak_items")]
    async fn get(&self, id: i64) -> Result<Option<i64>, SoakError> {
        let c = self.conn().await?;
        Ok(c.query_opt(&self.sql.get, &[&id]).await?.map(|r| r.get(0)))
    }

    /// Fails with `unique_violation` when the id is taken.
    #[track_query(insert, "soak_items")]
    async fn insert(&self, id: i64) -> Result<u64, SoakError> {
        let c = self.conn().await?;
        Ok(c.execute(&self.sql.insert, &[&id]).await?)
    }

    #[track_query(upsert, "soak_items")]
    async fn upsert(&self, id: i64) -> Result<u64, SoakError> {
        let c = self.conn().await?;
        Ok(c.execute(&self.sql.upsert, &[&id]).await?)
    }

    #[track_query(update, "soak_items")]
    async fn bump(&self, id: i64) -> Result<u64, SoakError> {
        let c = self.conn().await?;
        Ok(c.execute(&self.sql.bump, &[&id]).await?)
    }

    #[track_query(select, "soak_sleep")]
    async fn sleep(&self, ms: f64) -> Result<(), SoakError> {
        let mut c = self.conn().await?;
        if self.statement_timeouts.load(Ordering::SeqCst) {
            let tx = c.transaction().await?;
            tx.batch_execute("SET LOCAL statement_timeout = 5").await?;
            tx.execute("SELECT pg_sleep($1)", &[&(ms.max(20.0) / 1000.0)])
                .await?;
            tx.commit().await?;
        } else {
            c.execute("SELECT pg_sleep($1)", &[&(ms / 1000.0)]).await?;
        }
        Ok(())
    }

    /// Moves one unit between two rows, locked in id order (no deadlocks by design).
    #[track_transaction("soak_transfer")]
    async fn transfer(&self, a: i64, b: i64) -> Result<(), SoakError> {
        let (low, high) = (a.min(b), a.max(b));
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(&self.sql.bump, &[&low]).await?;
        tx.execute(&self.sql.bump, &[&high]).await?;
        tx.commit().await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

/// A call site, as its series are labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Site {
    Query {
        operation: &'static str,
        table: &'static str,
    },
    Transaction(&'static str),
}

impl Site {
    const GET: Site = Site::Query {
        operation: "select",
        table: "soak_items",
    };
    const INSERT: Site = Site::Query {
        operation: "insert",
        table: "soak_items",
    };
    const UPSERT: Site = Site::Query {
        operation: "upsert",
        table: "soak_items",
    };
    const BUMP: Site = Site::Query {
        operation: "update",
        table: "soak_items",
    };
    const SLEEP: Site = Site::Query {
        operation: "select",
        table: "soak_sleep",
    };
    const TRANSFER: Site = Site::Transaction("soak_transfer");
    /// The tenant selects: every `soak_tenant_N` table and `_overflow`, summed.
    const TENANT: Site = Site::Query {
        operation: "select",
        table: "soak_tenant_*",
    };
    const ALL: [Site; 7] = [
        Site::GET,
        Site::TENANT,
        Site::INSERT,
        Site::UPSERT,
        Site::BUMP,
        Site::SLEEP,
        Site::TRANSFER,
    ];

    fn describe(self) -> String {
        match self {
            Site::Query { operation, table } => format!("{operation} {table}"),
            Site::Transaction(name) => format!("transaction {name}"),
        }
    }
}

/// Outcomes by site, as the generator counted them.
type Tally = HashMap<(Site, Outcome), u64>;

fn outcome_of<T>(result: &Result<Result<T, SoakError>, tokio::time::error::Elapsed>) -> Outcome {
    match result {
        Err(_) => Outcome::Cancelled,
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Error {
            error_type: e.error_type(),
        },
    }
}

fn outcome_key(outcome: Outcome) -> String {
    match outcome {
        Outcome::Success => "success".into(),
        Outcome::Cancelled => "cancelled".into(),
        Outcome::Error { error_type } => format!("error/{error_type}"),
    }
}

/// Live totals for the progress line.
#[derive(Default)]
struct Live {
    success: AtomicU64,
    error: AtomicU64,
    cancelled: AtomicU64,
}

impl Live {
    fn add(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => &self.success,
            Outcome::Error { .. } => &self.error,
            Outcome::Cancelled => &self.cancelled,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// One line of the final table; `ok` when both sides agree.
struct Row {
    what: String,
    outcome: String,
    driver: u64,
    metrics: f64,
}

impl Row {
    fn ok(&self) -> bool {
        self.metrics == self.driver as f64
    }
}

fn name(suffix: &str) -> String {
    format!("{SERVICE}_database_{suffix}")
}

/// Compares every site's outcomes with the rendered series.
fn account(e: &Exposition, tally: &Tally) -> Vec<Row> {
    let mut rows = Vec::new();
    for site in Site::ALL {
        let mine: BTreeMap<String, (Outcome, u64)> = tally
            .iter()
            .filter(|((s, _), _)| *s == site)
            .map(|((_, o), n)| (outcome_key(*o), (*o, *n)))
            .collect();
        let by_result = |result: &str| -> u64 {
            mine.values()
                .filter(|(o, _)| o.result() == result)
                .map(|(_, n)| n)
                .sum()
        };
        let (error_labels, error_table): (&str, &str) = match site {
            Site::Query { operation, table } => (operation, table),
            Site::Transaction(name) => ("transaction", name),
        };
        for result in ["success", "error", "cancelled"] {
            let metrics = match site {
                Site::TENANT => tenant_sum(e, "query_duration_seconds_count", "result", result),
                Site::Query { operation, table } => e.value(
                    &name("query_duration_seconds_count"),
                    &[
                        ("operation", operation),
                        ("table", table),
                        ("result", result),
                    ],
                ),
                Site::Transaction(transaction) => {
                    let labels = [("transaction", transaction), ("result", result)];
                    let total = e.value(&name("transactions_total"), &labels);
                    let timed = e.value(&name("transaction_duration_seconds_count"), &labels);
                    if total == timed { total } else { f64::NAN }
                }
            };
            rows.push(Row {
                what: site.describe(),
                outcome: result.into(),
                driver: by_result(result),
                metrics,
            });
        }
        for (key, (outcome, n)) in &mine {
            if let Outcome::Error { error_type } = outcome {
                if site == Site::TENANT {
                    rows.push(Row {
                        what: site.describe(),
                        outcome: key.clone(),
                        driver: *n,
                        metrics: tenant_sum(e, "errors_total", "error_type", error_type),
                    });
                    continue;
                }
                rows.push(Row {
                    what: site.describe(),
                    outcome: key.clone(),
                    driver: *n,
                    metrics: e.value(
                        &name("errors_total"),
                        &[
                            ("operation", error_labels),
                            ("table", error_table),
                            ("error_type", error_type),
                        ],
                    ),
                });
            }
        }
        if site == Site::TENANT {
            continue;
        }
        rows.push(Row {
            what: site.describe(),
            outcome: "error/(every class)".into(),
            driver: by_result("error"),
            metrics: e.sum(
                &name("errors_total"),
                &[("operation", error_labels), ("table", error_table)],
            ),
        });
    }
    rows
}

/// The sum of `suffix` over the tenant tables (`soak_tenant_N` and `_overflow`) of selects
/// whose label `key` is `value`.
fn tenant_sum(e: &Exposition, suffix: &str, key: &str, value: &str) -> f64 {
    e.matching(&name(suffix), &[("operation", "select"), (key, value)])
        .iter()
        .filter(|line| {
            line.labels
                .get("table")
                .is_some_and(|t| t.starts_with("soak_tenant_") || t == "_overflow")
        })
        .map(|line| line.value)
        .sum()
}

/// Resident memory of this process, from `/proc/self/status` (`None` where there is none).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Live series in the rendered text: one per metric family and label set (a histogram's
/// buckets, sum and count are one series).
fn live_series(text: &str) -> usize {
    let e = Exposition::parse(text);
    let mut series = std::collections::BTreeSet::new();
    for line in e.lines {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| line.name.strip_suffix(s))
            .unwrap_or(&line.name)
            .to_owned();
        let mut labels = line.labels;
        labels.remove("le");
        series.insert((family, labels));
    }
    series.len()
}

/// One memory sample, taken every minute.
struct MemorySample {
    minute: u64,
    resident: Option<u64>,
    series: usize,
    tenant_series: usize,
}

fn memory_sample(minute: u64) -> MemorySample {
    let text = prometheus().render();
    let tenant_series = Exposition::parse(&text)
        .matching(
            &name("query_duration_seconds_count"),
            &[("operation", "select"), ("result", "success")],
        )
        .iter()
        .filter(|line| {
            line.labels
                .get("table")
                .is_some_and(|t| t.starts_with("soak_tenant_") || t == "_overflow")
        })
        .count();
    MemorySample {
        minute,
        resident: resident_bytes(),
        series: live_series(&text),
        tenant_series,
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

// ---------------------------------------------------------------------------------------------
// Load, faults, health
// ---------------------------------------------------------------------------------------------

async fn worker(items: Items, seed: u64, stop: Arc<AtomicBool>, live: Arc<Live>) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::new();
    while !stop.load(Ordering::SeqCst) {
        let id = rng.random_range(0..1_000);
        let (site, outcome) = match rng.random_range(0..100) {
            0..5 => {
                let tenant = rng.random_range(0..TENANTS);
                (
                    Site::TENANT,
                    outcome_of(&timeout(CALL_DEADLINE, items.tenant(tenant, id)).await),
                )
            }
            5..35 => (
                Site::GET,
                outcome_of(&timeout(CALL_DEADLINE, items.get(id)).await),
            ),
            35..45 => {
                let id = rng.random_range(1_000..50_000);
                (
                    Site::INSERT,
                    outcome_of(&timeout(CALL_DEADLINE, items.insert(id)).await),
                )
            }
            45..60 => (
                Site::UPSERT,
                outcome_of(&timeout(CALL_DEADLINE, items.upsert(id)).await),
            ),
            60..75 => (
                Site::BUMP,
                outcome_of(&timeout(CALL_DEADLINE, items.bump(id)).await),
            ),
            75..90 => {
                let ms = rng.random_range(0.0..20.0);
                (
                    Site::SLEEP,
                    outcome_of(&timeout(CALL_DEADLINE, items.sleep(ms)).await),
                )
            }
            _ => {
                let other = rng.random_range(0..1_000);
                (
                    Site::TRANSFER,
                    outcome_of(&timeout(CALL_DEADLINE, items.transfer(id, other)).await),
                )
            }
        };
        *tally.entry((site, outcome)).or_default() += 1;
        live.add(outcome);
        sleep(Duration::from_millis(1)).await;
    }
    tally
}

const FAULTS: [&str; 5] = [
    "cut_all",
    "silent_1.5s",
    "refuse_1s",
    "pg_terminate_backend",
    "statement_timeout_1s",
];

async fn faults(
    proxy: FaultProxy,
    admin: tokio_postgres::Client,
    application_name: String,
    statement_timeouts: Arc<AtomicBool>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> BTreeMap<&'static str, u64> {
    let mut done = BTreeMap::new();
    let mut next = 0;
    loop {
        let started = Instant::now();
        while started.elapsed() < every {
            if stop.load(Ordering::SeqCst) {
                return done;
            }
            sleep(Duration::from_millis(50)).await;
        }
        let fault = FAULTS[next % FAULTS.len()];
        next += 1;
        match fault {
            "cut_all" => proxy.cut_all().await,
            "silent_1.5s" => {
                proxy.set_mode(Mode::Silent).await.expect("silent");
                sleep(Duration::from_millis(1_500)).await;
                proxy.set_mode(Mode::Pass).await.expect("pass");
            }
            "refuse_1s" => {
                proxy.set_mode(Mode::Refuse).await.expect("refuse");
                proxy.cut_all().await;
                sleep(Duration::from_secs(1)).await;
                proxy.set_mode(Mode::Pass).await.expect("pass");
            }
            "pg_terminate_backend" => {
                if let Err(e) = admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1",
                        &[&application_name],
                    )
                    .await
                {
                    eprintln!("soak: pg_terminate_backend failed: {e}");
                }
            }
            _ => {
                statement_timeouts.store(true, Ordering::SeqCst);
                sleep(Duration::from_secs(1)).await;
                statement_timeouts.store(false, Ordering::SeqCst);
            }
        }
        *done.entry(fault).or_default() += 1;
    }
}

#[derive(Debug, Default)]
struct HealthCounts {
    healthy: u64,
    degraded: u64,
    unhealthy: u64,
    /// Calls that did not answer within `HEALTH_TIMEOUT + HEALTH_MARGIN`.
    late: u64,
}

async fn health(checker: DatabaseHealthChecker, stop: Arc<AtomicBool>) -> HealthCounts {
    let mut counts = HealthCounts::default();
    while !stop.load(Ordering::SeqCst) {
        match timeout(HEALTH_TIMEOUT + HEALTH_MARGIN, checker.get_health_summary()).await {
            Err(_) => counts.late += 1,
            Ok(summary) => match summary.status {
                HealthStatus::Healthy => counts.healthy += 1,
                HealthStatus::Degraded => counts.degraded += 1,
                HealthStatus::Unhealthy => counts.unhealthy += 1,
            },
        }
        sleep(Duration::from_secs(1)).await;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    prometheus();
    let db = database();
    let application_name = format!("dbmetrics_soak_{}", std::process::id());
    let mut config = db.config.clone();
    config.application_name(&application_name);
    let (proxy, through) = FaultProxy::in_front_of(&config).await?;
    let manager = Manager::from_config(
        through,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(args.pool)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?;
    let metrics = DatabaseMetrics::builder(&pool, SERVICE)
        .pool_name("main")
        .poll_interval(Duration::from_millis(100))
        .slow_query_threshold(None)
        .build()?;
    let tracked =
        create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool.clone(), "main");

    // direct, not through the proxy, under another application name
    let (admin, connection) = db.config.connect(NoTls).await?;
    tokio::spawn(connection);
    let table = format!("soak_items_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INT8 PRIMARY KEY, v INT8 NOT NULL DEFAULT 0); \
             INSERT INTO {table} (id) SELECT generate_series(0, 999)"
        ))
        .await?;
    let items = Items {
        pool: tracked,
        tracker: QueryPerformanceTracker::new(metrics.clone()),
        metrics,
        sql: Arc::new(Sql {
            get: format!("SELECT v FROM {table} WHERE id = $1"),
            tenant: format!("SELECT v + 0 FROM {table} WHERE id = $1"),
            insert: format!("INSERT INTO {table} (id) VALUES ($1)"),
            upsert: format!(
                "INSERT INTO {table} (id) VALUES ($1) \
                 ON CONFLICT (id) DO UPDATE SET v = {table}.v + 1"
            ),
            bump: format!("UPDATE {table} SET v = v + 1 WHERE id = $1"),
        }),
        checkouts: Arc::new(AtomicU64::new(0)),
        statement_timeouts: Arc::new(AtomicBool::new(false)),
    };
    let checker = DatabaseHealthChecker::builder(pool.clone(), SERVICE)
        .timeout(HEALTH_TIMEOUT)
        .build()?;

    println!(
        "soak: {} s, {} workers, pool of {}, a fault every {} s ({}), seed {}; PostgreSQL: {}",
        args.duration.as_secs(),
        args.workers,
        args.pool,
        args.fault_every.as_secs(),
        FAULTS.join(", "),
        args.seed,
        db.source
    );
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let workers: Vec<_> = (0..args.workers)
        .map(|i| {
            tokio::spawn(worker(
                items.clone(),
                args.seed.wrapping_mul(1_000).wrapping_add(i),
                stop.clone(),
                live.clone(),
            ))
        })
        .collect();
    let fault_task = tokio::spawn(faults(
        proxy.clone(),
        admin,
        application_name.clone(),
        items.statement_timeouts.clone(),
        args.fault_every,
        stop.clone(),
    ));
    let health_task = tokio::spawn(health(checker, stop.clone()));

    let mut memory = vec![memory_sample(0)];
    while started.elapsed() < args.duration {
        let left = args.duration.saturating_sub(started.elapsed());
        sleep(left.min(PROGRESS_EVERY)).await;
        let minute = started.elapsed().as_secs() / MEMORY_EVERY.as_secs();
        if minute > memory.last().map_or(0, |m| m.minute) {
            let m = memory_sample(minute);
            println!(
                "[minute {:>3}] resident {}, live series {}, tenant series {} (limit 1000 + _overflow)",
                m.minute,
                mib(m.resident),
                m.series,
                m.tenant_series
            );
            memory.push(m);
        }
        println!(
            "[{:>5} s] calls {:>9}: success {:>9}, error {:>7}, cancelled {:>6}; proxy accepted {}",
            started.elapsed().as_secs(),
            live.success.load(Ordering::Relaxed)
                + live.error.load(Ordering::Relaxed)
                + live.cancelled.load(Ordering::Relaxed),
            live.success.load(Ordering::Relaxed),
            live.error.load(Ordering::Relaxed),
            live.cancelled.load(Ordering::Relaxed),
            proxy.accepted(),
        );
    }

    // Stop everything; faults leave the proxy passing and the statement timeout off.
    stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::new();
    let mut panics = 0;
    for w in workers {
        match timeout(Duration::from_secs(30), w).await {
            Ok(Ok(mine)) => {
                for (key, n) in mine {
                    *tally.entry(key).or_default() += n;
                }
            }
            Ok(Err(e)) => {
                eprintln!("soak: a worker failed: {e}");
                panics += 1;
            }
            Err(_) => {
                eprintln!("soak: a worker did not stop within 30 s");
                panics += 1;
            }
        }
    }
    let fault_counts = fault_task.await?;
    let health_counts = health_task.await?;
    proxy.set_mode(Mode::Pass).await?;
    let load_time = started.elapsed();

    // Recovery: the pool serves again by itself (20 successes in a row).
    let recovering = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 20 && recovering.elapsed() < RECOVERY_DEADLINE {
        let outcome = outcome_of(&timeout(CALL_DEADLINE, items.get(1)).await);
        *tally.entry((Site::GET, outcome)).or_default() += 1;
        in_a_row = if outcome == Outcome::Success {
            in_a_row + 1
        } else {
            0
        };
    }
    let recovered = in_a_row >= 20;
    let recovery_time = recovering.elapsed();

    // Quiet: every connection back in the pool, as the poller sees it.
    let quiet = Instant::now();
    while scrape().value(&name("connections_active"), &[("pool", "main")]) != 0.0
        && quiet.elapsed() < Duration::from_secs(10)
    {
        sleep(Duration::from_millis(50)).await;
    }

    let e = scrape();
    let rows = account(&e, &tally);
    let calls: u64 = tally.values().sum();
    println!();
    println!("== accounting: generator vs rendered metrics ==");
    println!(
        "{:<28} {:<34} {:>10} {:>10}",
        "site", "outcome", "generator", "metrics"
    );
    for row in &rows {
        if row.driver == 0 && row.metrics == 0.0 {
            continue;
        }
        println!(
            "{:<28} {:<34} {:>10} {:>10} {}",
            row.what,
            row.outcome,
            row.driver,
            row.metrics,
            if row.ok() { "ok" } else { "MISMATCH" }
        );
    }
    let pool_value = |suffix: &str| e.value(&name(suffix), &[("pool", "main")]);
    let timeouts = |stage: &str| {
        e.value(
            &name("connection_timeouts_total"),
            &[("pool", "main"), ("stage", stage)],
        )
    };
    let checkouts = items.checkouts.load(Ordering::SeqCst);
    let acquired = pool_value("connections_acquired_total");
    let released = pool_value("connections_released_total");
    let pool_timeouts: u64 = tally
        .iter()
        .filter(|((_, o), _)| {
            *o == Outcome::Error {
                error_type: "pool_timeout",
            }
        })
        .map(|(_, n)| n)
        .sum();
    let pool_rows = [
        Row {
            what: "pool main".into(),
            outcome: "acquired (vs checkouts)".into(),
            driver: checkouts,
            metrics: acquired,
        },
        Row {
            what: "pool main".into(),
            outcome: "released (vs checkouts)".into(),
            driver: checkouts,
            metrics: released,
        },
        Row {
            what: "pool main".into(),
            outcome: "wait samples (vs checkouts)".into(),
            driver: checkouts,
            metrics: pool_value("connection_wait_seconds_count"),
        },
        Row {
            what: "pool main".into(),
            outcome: "use samples (vs checkouts)".into(),
            driver: checkouts,
            metrics: pool_value("connection_use_seconds_count"),
        },
        Row {
            what: "pool main".into(),
            outcome: "timeouts wait (vs pool_timeout)".into(),
            driver: pool_timeouts,
            metrics: timeouts("wait") + timeouts("create") + timeouts("recycle"),
        },
    ];
    for row in &pool_rows {
        println!(
            "{:<28} {:<34} {:>10} {:>10} {}",
            row.what,
            row.outcome,
            row.driver,
            row.metrics,
            if row.ok() { "ok" } else { "MISMATCH" }
        );
    }
    let mismatches = rows.iter().chain(&pool_rows).filter(|r| !r.ok()).count();
    let by_result = |result: &str| -> u64 {
        tally
            .iter()
            .filter(|((_, o), _)| o.result() == result)
            .map(|(_, n)| n)
            .sum()
    };
    println!();
    println!(
        "calls {calls} in {:.0} s ({:.0}/s): success {}, error {}, cancelled {}",
        load_time.as_secs_f64(),
        calls as f64 / load_time.as_secs_f64(),
        by_result("success"),
        by_result("error"),
        by_result("cancelled")
    );
    println!(
        "pool: {checkouts} checkouts, acquired {acquired}, released {released}, created {}, \
         timeouts wait/create/recycle {}/{}/{}; proxy accepted {} connections",
        pool_value("connections_created_total"),
        timeouts("wait"),
        timeouts("create"),
        timeouts("recycle"),
        proxy.accepted()
    );
    println!(
        "faults: {}",
        fault_counts
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "health: healthy {}, degraded {}, unhealthy {}, not answered within {:?}: {}",
        health_counts.healthy,
        health_counts.degraded,
        health_counts.unhealthy,
        HEALTH_TIMEOUT + HEALTH_MARGIN,
        health_counts.late
    );
    println!(
        "recovery after the last fault: {} in {:.2} s; worker panics: {panics}",
        if recovered {
            "served again"
        } else {
            "NOT RECOVERED"
        },
        recovery_time.as_secs_f64()
    );

    println!();
    println!("== memory: resident and live series, every minute ==");
    for m in &memory {
        println!(
            "minute {:>3}: resident {:>10}, live series {:>5}, tenant series {:>5}",
            m.minute,
            mib(m.resident),
            m.series,
            m.tenant_series
        );
    }
    let after_warm_up = memory.iter().find(|m| m.minute == 2);
    let last = memory.last();
    let growth = match (after_warm_up.and_then(|m| m.resident), last) {
        (Some(at_two), Some(last)) if last.minute > 2 => last
            .resident
            .map(|at_end| (at_end as f64 - at_two as f64) / at_two as f64),
        _ => None,
    };
    let memory_flat = match growth {
        Some(g) => {
            println!(
                "resident memory from minute 2 to minute {}: {:+.2}% (limit {:+.0}%)",
                last.map_or(0, |m| m.minute),
                g * 100.0,
                RSS_GROWTH_LIMIT * 100.0
            );
            g < RSS_GROWTH_LIMIT
        }
        None => {
            println!(
                "resident memory growth: not measured (a run of 3 minutes or more measures it)"
            );
            true
        }
    };

    let db_client = db.config.connect(NoTls).await;
    if let Ok((client, connection)) = db_client {
        tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP TABLE {table}")).await;
    }

    let pass =
        mismatches == 0 && panics == 0 && health_counts.late == 0 && recovered && memory_flat;
    if pass {
        println!("PASS: every call counted exactly once; checkouts balanced");
    } else {
        println!(
            "FAIL: {mismatches} mismatches, {panics} worker failures, {} late health checks, \
             recovered: {recovered}, memory flat: {memory_flat}",
            health_counts.late
        );
    }
    Ok(pass)
}
