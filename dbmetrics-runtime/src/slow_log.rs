//! The slow-call log: tracked calls at least as slow as a threshold are logged (`WARN`, target
//! `dbmetrics::slow_query`), at most one line a second per `DatabaseMetrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::record::Sample;

/// The slow-call log of one `DatabaseMetrics`: at most one line a second, which says how many
/// slow calls it stands for, so that an incident that slows every call does not flood the logs.
pub(crate) struct SlowLog {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last line; `u64::MAX` before the first.
    last_ms: AtomicU64,
    /// Slow calls not logged since the last line.
    suppressed: AtomicU64,
}

impl SlowLog {
    const EVERY_MS: u64 = 1000;

    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs `sample` unless a line was written less than a second ago; says whether it did.
    #[cold]
    pub(crate) fn log(&self, service: &str, sample: &Sample) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now >= last.saturating_add(Self::EVERY_MS);
        if !due
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let also = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: "dbmetrics::slow_query",
            service,
            operation = sample.operation().map(|o| o.as_str()).unwrap_or("transaction"),
            table = sample.table,
            function = sample.site.name(),
            module = sample.site.module(),
            result = sample.outcome.result(),
            elapsed_seconds = sample.elapsed.as_secs_f64(),
            slow_calls_not_logged = also,
            "slow database call"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::private::query_site;
    use crate::record::{CallSite, Operation, Outcome};
    use std::time::Duration;

    #[test]
    fn the_slow_log_writes_at_most_a_line_a_second() {
        static SITE: CallSite = query_site(Operation::Select, Some("t"), "f", "m");
        let sample = Sample {
            site: &SITE,
            table: "t",
            outcome: Outcome::Success,
            elapsed: Duration::from_secs(2),
        };
        let log = SlowLog::new();
        let written = (0..100).filter(|_| log.log("svc", &sample)).count();
        assert_eq!(written, 1);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 99);
        // A second later the next line is written, and it counts the 99 it stands for.
        let log_epoch_shifted = SlowLog {
            epoch: log.epoch - Duration::from_millis(1500),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(99),
        };
        assert!(log_epoch_shifted.log("svc", &sample));
        assert_eq!(log_epoch_shifted.suppressed.load(Ordering::Relaxed), 0);
    }
}
