//! [`DatabaseMetrics`]: the handle tracked calls record through, its builder, the registry of
//! monitored pools and the series handles a call site records into.

mod builder;
mod handle;
mod registry;
mod series;
mod site_cache;

pub use builder::{DatabaseMetricsBuilder, setup_database_monitoring};
pub use handle::DatabaseMetrics;

pub(crate) use registry::monitor_of;
pub(crate) use series::{register_counter, register_gauge, register_histogram};
