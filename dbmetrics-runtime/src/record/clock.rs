//! The clock tracked calls are timed with: quanta's calibrated TSC clock where the CPU has an
//! invariant TSC (a few nanoseconds a read), else quanta's fallback to the OS monotonic clock.
//! Readings are raw counter values; only a call's end turns the difference into a `Duration`.

use std::sync::OnceLock;
use std::time::Duration;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

#[inline]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock now (a few milliseconds, once per process), so that no tracked call
/// pays for it. Called when monitoring is set up.
pub(crate) fn calibrate() {
    let _ = clock();
}

/// A raw reading, for [`elapsed_since`].
#[inline]
pub(crate) fn now() -> u64 {
    clock().raw()
}

/// The time since the raw reading `start`.
#[inline]
pub(crate) fn elapsed_since(start: u64) -> Duration {
    let clock = clock();
    clock.delta(start, clock.raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_follows_the_wall_clock() {
        let start = now();
        let wall = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let ours = elapsed_since(start);
        let theirs = wall.elapsed();
        assert!(ours >= Duration::from_millis(19), "{ours:?}");
        // the same interval within 5 ms (+ 10 % for a loaded machine)
        let diff = ours.abs_diff(theirs);
        assert!(
            diff < Duration::from_millis(5) + theirs / 10,
            "{ours:?} vs {theirs:?}"
        );
    }
}
