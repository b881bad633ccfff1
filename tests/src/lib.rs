//! Shared test support for dbmetrics: a real PostgreSQL for every test binary (and the demo),
//! the process's Prometheus recorder, a parser of its text output, unique names so that
//! parallel tests do not disturb each other, and a TCP fault proxy ([`proxy::FaultProxy`]).

#![warn(missing_docs)]

pub mod db;
pub mod prom;
pub mod proxy;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub use db::{Database, database, pool_for};
pub use prom::Exposition;

/// The Prometheus recorder of this test process, installed on first use.
pub fn prometheus() -> &'static dbmetrics::exporter::Handle {
    static HANDLE: OnceLock<dbmetrics::exporter::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        dbmetrics::exporter::install_recorder().expect("the first recorder installs")
    })
}

/// Renders the recorder and parses the text.
pub fn scrape() -> Exposition {
    Exposition::parse(&prometheus().render())
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
