//! Shared test support for dbmetrics: a real PostgreSQL for every test binary (and the demo),
//! the process's Prometheus recorder, a parser of its text output, unique names so that
//! parallel tests do not disturb each other, and a TCP fault proxy ([`proxy::FaultProxy`]).

#![warn(missing_docs)]

pub mod capture;
pub mod db;
pub mod drivers;
pub mod prom;
pub mod proxy;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub use capture::Captured;
pub use db::{Database, database, pool_for};
pub use prom::Exposition;

/// The Prometheus recorder of this test process, installed on first use.
pub fn prometheus() -> &'static dbmetrics::exporter::PrometheusHandle {
    static HANDLE: OnceLock<dbmetrics::exporter::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        dbmetrics::exporter::install_recorder().expect("the first recorder installs")
    })
}

/// Renders the recorder and parses the text.
pub fn scrape() -> Exposition {
    Exposition::parse(&prometheus().render())
}

/// A health checker whose time thresholds cannot be crossed on a loaded machine (20 s each,
/// connection usage up to 100 %), so that a healthy database reads `healthy` whatever the load.
pub fn patient_checker<P: dbmetrics::health::HealthCheckable>(
    pool: P,
    service: &str,
) -> dbmetrics::DatabaseHealthChecker {
    let patient = std::time::Duration::from_secs(20);
    dbmetrics::DatabaseHealthChecker::builder(pool, service)
        .timeout(patient)
        .slow_connectivity(patient)
        .slow_simple_query(patient)
        .slow_complex_query(patient)
        .connections_usage_degraded(100.0)
        .build()
        .expect("valid health settings")
}

/// A name unique in this process and among concurrent test processes: `{prefix}_{pid}_{n}`.
/// Valid as a service name and as a table name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
