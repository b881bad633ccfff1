//! What the tracked pools of one pool label are doing now, whatever the driver: how many
//! callers wait inside [`TrackedPool::get`](super::TrackedPool::get), and which connections
//! are held past their leak threshold.
//!
//! It lives as long as the pool label's metrics (not per recorder epoch, unlike the series), so
//! the poller and every tracked pool of the label see one count.

use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::series::Checkouts;

/// The callers waiting for a connection and the watched checkouts of one pool label.
pub(crate) struct PoolActivity {
    /// The service, for the leak warning.
    service: Box<str>,
    /// Callers inside a tracked `get()` that have no connection yet.
    waiting: AtomicUsize,
    /// Checkouts held while a leak threshold is set: at most one entry per connection held
    /// at once (bounded by the pool's size).
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    slots: Vec<Option<Watched>>,
    free: Vec<usize>,
}

struct Watched {
    since: Instant,
    threshold: Duration,
    location: &'static Location<'static>,
    /// Already logged and counted (by a poller tick, while it was still held).
    reported: bool,
}

impl PoolActivity {
    pub(crate) fn new(service: &str) -> Self {
        Self {
            service: service.into(),
            waiting: AtomicUsize::new(0),
            held: Mutex::default(),
        }
    }

    /// Callers waiting for a connection now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Logs and counts every watched checkout held past its threshold that was not reported
    /// yet (once each). Called by the poller on every tick; O(connections held).
    pub(crate) fn report_leaks(&self, checkouts: &Checkouts) {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for watched in held.slots.iter_mut().flatten() {
            let held_for = now.saturating_duration_since(watched.since);
            if !watched.reported && held_for > watched.threshold {
                watched.reported = true;
                report_leak(checkouts, &self.service, watched, held_for, "still held");
            }
        }
    }
}

/// Counts a caller waiting inside `get()` until dropped; dropped before [`Waiter::done`], the
/// checkout was cancelled (its future dropped while it waited) and is counted as such.
pub(crate) struct Waiter<'a> {
    activity: &'a PoolActivity,
    checkouts: Option<&'a Checkouts>,
    done: bool,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(activity: &'a PoolActivity, checkouts: Option<&'a Checkouts>) -> Self {
        activity.waiting.fetch_add(1, Ordering::Relaxed);
        Self {
            activity,
            checkouts,
            done: false,
        }
    }

    /// The checkout answered (a connection or an error).
    pub(crate) fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.activity.waiting.fetch_sub(1, Ordering::Relaxed);
        if !self.done
            && let Some(checkouts) = self.checkouts
        {
            checkouts.acquire_cancelled.increment(1);
        }
    }
}

/// A checkout watched for leaks: registered while the connection is held, reported at release
/// when nobody reported it before.
pub(crate) struct LeakWatch {
    activity: Arc<PoolActivity>,
    slot: usize,
}

impl LeakWatch {
    /// Watches a checkout made now at `location`.
    pub(crate) fn start(
        activity: Arc<PoolActivity>,
        threshold: Duration,
        location: &'static Location<'static>,
        since: Instant,
    ) -> Self {
        let watched = Watched {
            since,
            threshold,
            location,
            reported: false,
        };
        let slot = {
            let mut held = activity.held.lock().unwrap_or_else(PoisonError::into_inner);
            match held.free.pop() {
                Some(slot) => {
                    held.slots[slot] = Some(watched);
                    slot
                }
                None => {
                    held.slots.push(Some(watched));
                    held.slots.len() - 1
                }
            }
        };
        Self { activity, slot }
    }

    /// The connection is released: reports it when it was held past its threshold and no
    /// poller tick reported it yet.
    pub(crate) fn release(self, checkouts: Option<&Checkouts>) {
        let watched = {
            let mut held = self
                .activity
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let watched = held.slots[self.slot].take();
            held.free.push(self.slot);
            watched
        };
        if let (Some(watched), Some(checkouts)) = (watched, checkouts) {
            let held_for = watched.since.elapsed();
            if !watched.reported && held_for > watched.threshold {
                report_leak(
                    checkouts,
                    &self.activity.service,
                    &watched,
                    held_for,
                    "released",
                );
            }
        }
    }
}

#[cold]
fn report_leak(
    checkouts: &Checkouts,
    service: &str,
    watched: &Watched,
    held_for: Duration,
    state: &'static str,
) {
    checkouts.leaks.increment(1);
    tracing::warn!(
        target: "dbmetrics",
        service,
        pool = checkouts.pool,
        checkout = %watched.location,
        held_ms = held_for.as_millis() as u64,
        threshold_ms = watched.threshold.as_millis() as u64,
        state,
        "connection held longer than the leak threshold; checked out at {}",
        watched.location
    );
}
