//! Pool monitoring: the poller that mirrors a pool's status into gauges, and [`TrackedPool`](crate::TrackedPool),
//! whose checkouts count acquisitions, releases, new connections, wait and use time, and
//! timeouts.
//!
//! # Gauges
//!
//! | gauge | meaning |
//! |---|---|
//! | `connections_active` | connections checked out: `open - idle` |
//! | `connections_idle` | open connections nobody holds |
//! | `connections_open` | open connections, idle or checked out |
//! | `connections_max` | the configured maximum |
//! | `connections_overflow` | callers waiting for a connection beyond the open ones |
//!
//! Which field of each driver's pool gives which number is in the README ("Drivers"); for
//! deadpool-postgres: `size - available`, `available`, `size`, `max_size`, `waiting`. deadpool
//! has no SQLAlchemy-style overflow connections beyond `max_size`; the nearest honest meaning
//! of "overflow" is demand beyond what is open, which is what `waiting` counts.
//!
//! # The poller
//!
//! One Tokio task per monitored `(service, pool label)`. Each tick reads the pool's status
//! (for deadpool, one short mutex and an atomic load) and sets the five gauges: O(1), whatever
//! the pool size or traffic. It stops by itself
//! - when the pool is closed or every clone of it is dropped: the gauges are set to 0 first;
//! - at once when the last [`DatabaseMetrics`](crate::DatabaseMetrics) handle of the monitored
//!   pool is dropped (a [`TrackedPool`](crate::TrackedPool) made from it holds one): the gauges keep their last
//!   values.
//!
//! It holds the pool weakly, so it never keeps a pool open.

mod activity;
mod poller;
mod series;
mod status;
pub(crate) mod tracked;

pub use crate::drivers::MonitoredPool;
pub use status::{PoolStatus, TimeoutStage};

pub(crate) use activity::{LeakWatch, PoolActivity, Waiter};
#[cfg(feature = "bench")]
pub(crate) use poller::poll_tick;
pub(crate) use poller::spawn_poller;
pub(crate) use series::PoolSeries;
