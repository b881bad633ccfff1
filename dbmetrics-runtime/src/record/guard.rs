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
/// the TSC clock and the recorder's atomic updates. With the feature `tracing`, the call also
/// runs inside its own span (see `record::span`), entered while the body runs.
#[must_use = "a CallGuard records when it is finished or dropped"]
pub struct CallGuard<M: QueryMetrics> {
    metrics: M,
    site: &'static CallSite,
    table: &'static str,
    /// A raw reading of [`clock`].
    start: u64,
    armed: bool,
    /// What the body's polls see.
    call: Call,
}

/// The state a running body shares with its guard.
#[derive(Debug)]
struct Call {
    /// Set while the tracked body runs (is polled): a panic then is the call's own panic; a
    /// guard dropped while some other code unwinds is a cancelled call.
    in_body: AtomicBool,
    /// The call's span, entered while the body runs (`None` until a subscriber is set).
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

impl Call {
    /// Runs `f` as the body: flagged, and inside the call's span.
    #[inline]
    fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        let _entered = self.span.as_ref().map(tracing::Span::enter);
        self.in_body.store(true, Ordering::Relaxed);
        let output = f();
        // Not reached when `f` panics: the flag then says the body panicked.
        self.in_body.store(false, Ordering::Relaxed);
        output
    }
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
            call: Call {
                in_body: AtomicBool::new(false),
                #[cfg(feature = "tracing")]
                span: super::span::call_span(site, table),
            },
        }
    }

    /// Runs the body of a tracked sync fn.
    #[inline]
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        self.call.enter(body)
    }

    /// Wraps the body of a tracked async fn, to know when it is being polled (and, with the
    /// feature `tracing`, to enter the call's span on every poll).
    #[inline]
    pub fn body<F: Future>(&self, future: F) -> Body<'_, F> {
        Body {
            call: &self.call,
            finished: false,
            future,
            window: DropWindow::default(),
        }
    }

    /// Polls the body of a call tracked without an attribute (a hand-written future that holds
    /// the guard beside the body), with the flag set that tells its panics from a cancellation
    /// (and inside the call's span, with the feature `tracing`).
    #[inline]
    pub(crate) fn poll_body<F: Future>(
        &self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        self.call.enter(|| future.poll(cx))
    }

    /// Records the call as ended with `outcome`.
    #[inline]
    pub fn finish(mut self, outcome: Outcome) {
        self.finish_in_place(outcome);
    }

    /// Records the call as ended with `outcome`, in place (for a future that holds its guard
    /// in its state); the guard then records nothing more when dropped.
    #[inline]
    pub(crate) fn finish_in_place(&mut self, outcome: Outcome) {
        self.armed = false;
        self.record(outcome);
    }

    #[inline]
    fn record(&self, outcome: Outcome) {
        #[cfg(feature = "tracing")]
        super::span::record_outcome(&self.call.span, outcome);
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
            let outcome = if std::thread::panicking() && self.call.in_body.load(Ordering::Relaxed) {
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
    /// The body of a tracked async fn, polled with the guard's `in_body` flag set (and inside
    /// the call's span, with the feature `tracing`).
    ///
    /// Dropped before it finished (the call is cancelled), it drops the body's future inside a
    /// drop window, so that a connection the body holds knows it was left unfinished and is
    /// cleaned up (see `TrackedConnection`).
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Body<'a, F> {
        call: &'a Call,
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
        let future = this.future;
        let poll = this.call.enter(|| future.poll(cx));
        if poll.is_ready() {
            *this.finished = true;
        }
        poll
    }
}
