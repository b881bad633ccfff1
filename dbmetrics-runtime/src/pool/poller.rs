//! The poller: one Tokio task per monitored `(service, pool label)` that mirrors the pool's
//! status into its gauges.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{MonitoredPool, PoolActivity, PoolSeries};

/// Sets the gauges from `pool` now, then spawns the task that keeps them current until the
/// pool is closed (gauges set to 0) or `stop` (the metrics' sender) is dropped (gauges keep
/// their last values). Spawns nothing for a pool that is already closed. `series` gives the
/// pool label's current series on every tick (they change when the label or the recorder
/// does); `None` once the metrics are gone. `activity` gives the waiting callers the driver
/// does not count, and the checkouts watched for leaks (reported on the tick that finds them).
pub(crate) fn spawn_poller<P: MonitoredPool>(
    runtime: &tokio::runtime::Handle,
    pool: &P,
    series: impl Fn() -> Option<Arc<PoolSeries>> + Send + 'static,
    activity: Arc<PoolActivity>,
    mut stop: watch::Receiver<()>,
    interval: Duration,
) {
    let Some(current) = series() else {
        return;
    };
    let Some(status) = pool.status() else {
        current.gauges.set_closed();
        return;
    };
    current.gauges.set(status, activity.waiting());
    let weak_pool = pool.downgrade();
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // Nothing is ever sent: this resolves when the last DatabaseMetrics handle
                // drops the sender. The gauges keep their last values.
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            let Some(current) = series() else {
                return;
            };
            match P::upgrade(&weak_pool).and_then(|pool| pool.status()) {
                Some(status) => {
                    current.gauges.set(status, activity.waiting());
                    activity.report_leaks(&current.checkouts);
                }
                None => {
                    current.gauges.set_closed();
                    return;
                }
            }
        }
    });
}

/// The body of one poller tick, for benchmarks.
#[cfg(feature = "bench")]
pub(crate) fn poll_tick<P: MonitoredPool>(pool: &P, series: &PoolSeries, activity: &PoolActivity) {
    if let Some(status) = pool.status() {
        series.gauges.set(status, activity.waiting());
        activity.report_leaks(&series.checkouts);
    }
}
