//! [`CallGuard`]: records one tracked call on every exit path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use super::clock;
use super::unfinished::DropWindow;
use super::{CallSite, Outcome, QueryMetrics, Sample};

/// Records one tracked call when finished, dropped (`cancelled`) or unwound (`panic`).
///
/// Created by the code the macros generate and by the tracker; the hot path is two reads of
/// the TSC clock and the recorder's atomic updates.
#[must_use = "a CallGuard records when it is finished or dropped"]
pub struct CallGuard<M: QueryMetrics> {
    metrics: M,
    site: &'static CallSite,
    table: &'static str,
    /// A raw reading of [`clock`].
    start: u64,
    armed: bool,
    /// Set while the tracked body runs (is polled): a panic then is the call's own panic; a
    /// guard dropped while some other code unwinds is a cancelled call.
    in_body: AtomicBool,
}

impl<M: QueryMetrics> std::fmt::Debug for CallGuard<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGuard")
            .field("site", self.site)
            .field("table", &self.table)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<M: QueryMetrics> CallGuard<M> {
    /// Starts timing a call of `site`, which records into `metrics`.
    #[inline]
    pub fn start(metrics: M, site: &'static CallSite, table: &'static str) -> Self {
        Self {
            metrics,
            site,
            table,
            start: clock::now(),
            armed: true,
            in_body: AtomicBool::new(false),
        }
    }

    /// Runs the body of a tracked sync fn.
    #[inline]
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        self.in_body.store(true, Ordering::Relaxed);
        let output = body();
        self.in_body.store(false, Ordering::Relaxed);
        output
    }

    /// Wraps the body of a tracked async fn, to know when it is being polled.
    #[inline]
    pub fn body<F: Future>(&self, future: F) -> Body<'_, F> {
        Body {
            in_body: &self.in_body,
            finished: false,
            future,
            window: DropWindow::default(),
        }
    }

    /// Polls the body of a call tracked without an attribute (a hand-written future that holds
    /// the guard beside the body), with the flag set that tells its panics from a cancellation.
    #[inline]
    pub(crate) fn poll_body<F: Future>(
        &self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        self.in_body.store(true, Ordering::Relaxed);
        let poll = future.poll(cx);
        // Not reached when the poll panics: the flag then says the body panicked.
        self.in_body.store(false, Ordering::Relaxed);
        poll
    }

    /// Records the call as ended with `outcome`.
    #[inline]
    pub fn finish(mut self, outcome: Outcome) {
        self.armed = false;
        self.record(outcome);
    }

    #[inline]
    fn record(&self, outcome: Outcome) {
        let sample = Sample {
            site: self.site,
            table: self.table,
            outcome,
            elapsed: clock::elapsed_since(self.start),
        };
        self.metrics.record(&sample);
    }
}

impl<M: QueryMetrics> Drop for CallGuard<M> {
    fn drop(&mut self) {
        if self.armed {
            let outcome = if std::thread::panicking() && self.in_body.load(Ordering::Relaxed) {
                Outcome::Error {
                    error_type: crate::classify::PANIC,
                }
            } else {
                Outcome::Cancelled
            };
            self.record(outcome);
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of a tracked async fn, polled with the guard's `in_body` flag set.
    ///
    /// Dropped before it finished (the call is cancelled), it drops the body's future inside a
    /// drop window, so that a connection the body holds knows it was left unfinished and is
    /// cleaned up (see `TrackedConnection`).
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Body<'a, F> {
        in_body: &'a AtomicBool,
        finished: bool,
        #[pin]
        future: F,
        // After `future`: fields drop in order, so the window closes once the future is gone.
        window: DropWindow,
    }

    impl<F> PinnedDrop for Body<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.finished {
                this.window.open();
            }
        }
    }
}

impl<F: Future> Future for Body<'_, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.in_body.store(true, Ordering::Relaxed);
        let poll = this.future.poll(cx);
        // Not reached when the poll panics: the flag then says the body panicked.
        this.in_body.store(false, Ordering::Relaxed);
        if poll.is_ready() {
            *this.finished = true;
        }
        poll
    }
}
