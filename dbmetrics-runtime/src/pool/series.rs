//! The series of one monitored pool label: the five gauges the poller sets, and the checkout
//! series its tracked pools record into. Registered at once, so they render before any sample.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Label};

use super::{DiscardReason, PoolStatus, TimeoutStage};
use crate::catalog::{Catalog, Metric};
use crate::metrics::{register_counter, register_gauge, register_histogram};

/// Every series of one pool label, registered with the recorder of one epoch.
pub(crate) struct PoolSeries {
    /// The recorder epoch the handles were registered in.
    pub(crate) epoch: usize,
    pub(crate) gauges: PoolGauges,
    pub(crate) checkouts: Arc<Checkouts>,
}

impl PoolSeries {
    /// Registers every series of `pool` with the current recorder (of `epoch`);
    /// `connections_created_total` only when the driver says which connections are new.
    pub(crate) fn new(
        catalog: &Catalog,
        pool: &'static str,
        epoch: usize,
        publishes: Publishes,
    ) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            gauges: PoolGauges::new(catalog, pool),
            checkouts: Checkouts::new(catalog, pool, publishes),
        })
    }
}

/// The five gauges set from the pool's status.
pub(crate) struct PoolGauges {
    active: Gauge,
    idle: Gauge,
    open: Gauge,
    max: Gauge,
    overflow: Gauge,
}

impl PoolGauges {
    fn new(catalog: &Catalog, pool: &'static str) -> Self {
        let gauge = |m| register_gauge(catalog.name(m), catalog.pool_labels(m, pool, None));
        Self {
            active: gauge(Metric::ConnectionsActive),
            idle: gauge(Metric::ConnectionsIdle),
            open: gauge(Metric::ConnectionsOpen),
            max: gauge(Metric::ConnectionsMax),
            overflow: gauge(Metric::ConnectionsOverflow),
        }
    }

    /// Sets the gauges from `status`; `waiting` stands in for a driver that does not count
    /// waiting callers.
    pub(crate) fn set(&self, status: PoolStatus, waiting: usize) {
        self.active.set(status.active() as f64);
        self.idle.set(status.idle as f64);
        self.open.set(status.open as f64);
        self.max.set(status.max as f64);
        self.overflow.set(status.waiting.unwrap_or(waiting) as f64);
    }

    /// Sets every gauge to 0: the pool is closed.
    pub(crate) fn set_closed(&self) {
        for gauge in [
            &self.active,
            &self.idle,
            &self.open,
            &self.max,
            &self.overflow,
        ] {
            gauge.set(0.0);
        }
    }
}

/// The checkout series a pool's driver can fill, beyond those every driver does: the others
/// are not published (not registered, so they do not render as a misleading 0).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Publishes {
    /// `connections_created_total`: the driver says which checkouts got a new connection.
    pub(crate) created: bool,
    /// `connections_discarded_total`: the driver can take a connection out of its pool.
    pub(crate) discarded: bool,
    /// `queries_cancelled_on_server_total`: the driver has a cancel request.
    pub(crate) cancelled_on_server: bool,
}

/// The series a [`TrackedPool`](super::TrackedPool) records into.
pub(crate) struct Checkouts {
    /// The pool label.
    pub(crate) pool: &'static str,
    pub(crate) acquired: Counter,
    pub(crate) released: Counter,
    /// `None` for drivers that do not say whether a connection is new.
    pub(crate) created: Option<Counter>,
    pub(crate) leaks: Counter,
    pub(crate) acquire_cancelled: Counter,
    pub(crate) wait: Histogram,
    pub(crate) use_time: Histogram,
    /// By stage, in [`TimeoutStage::ALL`] order.
    timeouts: [Counter; 3],
    /// By reason, in [`DiscardReason::ALL`] order; `None` when not published.
    discarded: Option<[Counter; 3]>,
    /// `None` when not published.
    pub(crate) cancelled_on_server: Option<Counter>,
}

impl Checkouts {
    /// Registers the checkout series of `pool`; counters start at 0 so they render at once.
    pub(crate) fn new(catalog: &Catalog, pool: &'static str, publishes: Publishes) -> Arc<Self> {
        let counter = |m| {
            let c = register_counter(catalog.name(m), catalog.pool_labels(m, pool, None));
            c.increment(0);
            c
        };
        let histogram = |m| register_histogram(catalog.name(m), catalog.pool_labels(m, pool, None));
        // The OpenTelemetry naming counts every stage in one series: three handles of it.
        let timeouts = TimeoutStage::ALL.map(|stage| {
            let m = Metric::ConnectionTimeouts;
            let c = register_counter(
                catalog.name(m),
                catalog.pool_labels(m, pool, Some(stage.as_str())),
            );
            c.increment(0);
            c
        });
        let discarded = publishes.discarded.then(|| {
            DiscardReason::ALL.map(|reason| {
                let m = Metric::ConnectionsDiscarded;
                let mut labels = catalog.pool_labels(m, pool, None);
                labels.push(Label::from_static_parts("reason", reason.as_str()));
                let c = register_counter(catalog.name(m), labels);
                c.increment(0);
                c
            })
        });
        Arc::new(Self {
            pool,
            acquired: counter(Metric::ConnectionsAcquired),
            released: counter(Metric::ConnectionsReleased),
            created: publishes
                .created
                .then(|| counter(Metric::ConnectionsCreated)),
            leaks: counter(Metric::ConnectionLeaks),
            acquire_cancelled: counter(Metric::ConnectionAcquireCancelled),
            wait: histogram(Metric::ConnectionWait),
            use_time: histogram(Metric::ConnectionUse),
            timeouts,
            discarded,
            cancelled_on_server: publishes
                .cancelled_on_server
                .then(|| counter(Metric::QueriesCancelledOnServer)),
        })
    }

    pub(crate) fn count_timeout(&self, stage: TimeoutStage) {
        self.timeouts[stage as usize].increment(1);
    }

    pub(crate) fn count_discarded(&self, reason: DiscardReason) {
        if let Some(discarded) = &self.discarded {
            discarded[reason as usize].increment(1);
        }
    }

    pub(crate) fn count_cancelled_on_server(&self) {
        if let Some(cancelled) = &self.cancelled_on_server {
            cancelled.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn status_maps_to_the_gauges() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let catalog = Catalog::new("svc").unwrap();
            let gauges = PoolGauges::new(&catalog, "p");
            // 4 open, 1 idle, 2 more callers than open connections, at most 4.
            gauges.set(
                PoolStatus {
                    max: 4,
                    open: 4,
                    idle: 1,
                    waiting: Some(2),
                },
                0,
            );
        });
        let mut gauges: Vec<(String, f64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Gauge(v) => Some((key.key().name().to_owned(), v.into_inner())),
                _ => None,
            })
            .collect();
        gauges.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            gauges,
            vec![
                ("svc_database_connections_active".to_owned(), 3.0),
                ("svc_database_connections_idle".to_owned(), 1.0),
                ("svc_database_connections_max".to_owned(), 4.0),
                ("svc_database_connections_open".to_owned(), 4.0),
                ("svc_database_connections_overflow".to_owned(), 2.0),
            ]
        );
    }
}
