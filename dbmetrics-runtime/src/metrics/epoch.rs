//! Which recorder the series handles belong to. The `metrics` crate resolves a handle once, from
//! the recorder installed at that moment, and there is one global recorder per process, set at
//! most once. Handles resolved before `dbmetrics::exporter` installed it belong to epoch 0 (the
//! no-op recorder, or one installed by other means); from the install on, epoch 1. Every
//! `DatabaseMetrics` keeps its handles per epoch, so what was set up before the install is
//! resolved again, once, from the installed recorder: the order of setup and install does not
//! matter. The recording path pays one relaxed load for it.

use std::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How many epochs there are.
pub(crate) const EPOCHS: usize = 2;

/// The current epoch: 0 before `dbmetrics::exporter` installed the global recorder, 1 after.
#[inline]
pub(crate) fn current() -> usize {
    usize::from(INSTALLED.load(Ordering::Relaxed))
}

/// Called once `dbmetrics::exporter` has installed the global recorder (through
/// `registry::recorder_installed`, which then publishes the pool gauges to it).
#[cfg(feature = "exporter")]
pub(crate) fn recorder_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}
