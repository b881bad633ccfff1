//! [`DatabaseMetrics`]: the handle tracked calls record through, its builder, the registry of
//! monitored pools and the series handles a call site records into.

mod builder;
mod epoch;
mod handle;
mod pool_ref;
mod registry;
mod series;
mod site_cache;

pub use builder::{DatabaseMetricsBuilder, setup_database_monitoring};
pub use handle::DatabaseMetrics;

#[cfg(feature = "exporter")]
pub(crate) use registry::recorder_installed;
pub(crate) use series::{register_counter, register_gauge, register_histogram};
