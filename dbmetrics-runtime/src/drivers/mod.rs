//! The supported pools: what each one's connection, error and status is. One module per
//! driver, each behind its cargo feature; nothing outside this folder names a driver crate.
//!
//! The rest of dbmetrics sees a driver through [`MonitoredPool`] (gauges, checkouts),
//! [`HealthCheckable`] (health checks) and [`errors`] (the classes of its errors).

#[cfg(feature = "bb8")]
mod bb8;
mod contract;
#[cfg(feature = "deadpool")]
mod deadpool;
pub(crate) mod errors;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
mod postgres;
#[cfg(feature = "sqlx")]
mod sqlx;

pub(crate) use contract::DefaultPool;
pub use contract::{HealthCheckable, MonitoredPool, Probe, ProbeFailure};
#[cfg(feature = "deadpool")]
pub(crate) use deadpool::classify_pool;
#[cfg(feature = "deadpool")]
pub(crate) use postgres::classify_postgres;
