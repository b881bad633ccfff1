//! Whether a drop happens because a call did not finish: a tracked call's future dropped while
//! pending (a timeout, a client gone, an aborted task) or a panic unwinding.
//!
//! [`Body`](super::Body) (the macros) and [`Watched`] (the tracker, the middleware,
//! `transaction::run`) open a [`DropWindow`] while they drop a tracked future that has not
//! finished, so whatever that future owns (a connection it checked out) is dropped inside the
//! window and can tell: [`dropping_unfinished`]. A call that finishes opens no window, so the
//! success path costs a flag store.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many unfinished tracked futures this thread is dropping right now (they nest).
    static DROPPING: Cell<u32> = const { Cell::new(0) };
}

/// While open, what this thread drops is dropped by an unfinished tracked call.
#[derive(Debug, Default)]
pub(crate) struct DropWindow {
    open: bool,
}

impl DropWindow {
    /// Opens the window until `self` is dropped.
    pub(crate) fn open(&mut self) {
        if !self.open {
            self.open = true;
            let _ = DROPPING.try_with(|depth| depth.set(depth.get().saturating_add(1)));
        }
    }
}

impl Drop for DropWindow {
    fn drop(&mut self) {
        if self.open {
            let _ = DROPPING.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }
}

/// Whether what is being dropped now is dropped because a call did not finish: inside a
/// [`DropWindow`], or while the thread unwinds from a panic.
pub(crate) fn dropping_unfinished() -> bool {
    std::thread::panicking() || DROPPING.try_with(|depth| depth.get() > 0).unwrap_or(false)
}

pin_project_lite::pin_project! {
    /// A tracked future that, dropped after its first poll and before it finished, is dropped
    /// inside a [`DropWindow`].
    pub(crate) struct Watched<F> {
        #[pin]
        future: F,
        started: bool,
        finished: bool,
        // After `future`: fields drop in order, so the window closes once the future is gone.
        window: DropWindow,
    }

    impl<F> PinnedDrop for Watched<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.started && !*this.finished {
                this.window.open();
            }
        }
    }
}

impl<F> Watched<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future,
            started: false,
            finished: false,
            window: DropWindow::default(),
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        *this.started = true;
        let poll = this.future.poll(cx);
        if poll.is_ready() {
            *this.finished = true;
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_nest_and_close() {
        assert!(!dropping_unfinished());
        let mut outer = DropWindow::default();
        outer.open();
        {
            let mut inner = DropWindow::default();
            inner.open();
            inner.open(); // opening twice counts once
            assert!(dropping_unfinished());
        }
        assert!(dropping_unfinished());
        drop(outer);
        assert!(!dropping_unfinished());
        drop(DropWindow::default()); // never opened: closes nothing
        assert!(!dropping_unfinished());
    }

    #[test]
    fn a_panic_is_unfinished() {
        struct Probe(std::sync::mpsc::Sender<bool>);
        impl Drop for Probe {
            fn drop(&mut self) {
                let _ = self.0.send(dropping_unfinished());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let result = std::panic::catch_unwind(move || {
            let _probe = Probe(tx);
            panic!("unwinding");
        });
        assert!(result.is_err());
        assert_eq!(rx.recv(), Ok(true));
    }
}
