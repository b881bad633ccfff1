//! [`SingleFlight`]: concurrent calls share one run, and a result may be reused for a while.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

/// One result slot: the first caller runs, callers that arrive meanwhile wait for it and take
/// its result, and later callers reuse it while it is younger than the cache lifetime.
pub(super) struct SingleFlight<T> {
    slot: Mutex<Option<Finished<T>>>,
}

struct Finished<T> {
    at: Instant,
    value: T,
}

impl<T: Clone> SingleFlight<T> {
    pub(super) fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// The result of a run that finished after `asked` (this call waited for it) or within
    /// `ttl`, else the result of `run` (stored for the next callers). `None` when the slot
    /// could not be had before `deadline` (another run holds it).
    pub(super) async fn get_or_run<F>(
        &self,
        asked: Instant,
        deadline: Instant,
        ttl: Duration,
        run: impl FnOnce() -> F,
    ) -> Option<T>
    where
        F: Future<Output = T>,
    {
        let mut slot = timeout_at(deadline, self.slot.lock()).await.ok()?;
        if let Some(finished) = slot.as_ref()
            && (finished.at >= asked || finished.at.elapsed() < ttl)
        {
            return Some(finished.value.clone());
        }
        let value = run().await;
        *slot = Some(Finished {
            at: Instant::now(),
            value: value.clone(),
        });
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn concurrent_calls_share_one_run_and_the_cache_expires() {
        let flight = SingleFlight::new();
        let runs = AtomicU32::new(0);
        let run = || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            runs.fetch_add(1, Ordering::Relaxed) + 1
        };
        let asked = Instant::now();
        let deadline = asked + Duration::from_secs(10);
        let ttl = Duration::from_secs(1);
        let (a, b) = tokio::join!(
            flight.get_or_run(asked, deadline, ttl, run),
            flight.get_or_run(asked, deadline, ttl, run)
        );
        assert_eq!((a, b), (Some(1), Some(1)));
        // within the lifetime: reused
        let asked = Instant::now();
        assert_eq!(flight.get_or_run(asked, deadline, ttl, run).await, Some(1));
        // after it: a new run
        tokio::time::advance(Duration::from_secs(2)).await;
        let asked = Instant::now();
        let deadline = asked + Duration::from_secs(10);
        assert_eq!(flight.get_or_run(asked, deadline, ttl, run).await, Some(2));
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }
}
