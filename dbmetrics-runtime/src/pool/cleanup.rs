//! What becomes of a connection that a cancelled or panicking call left: [`Cleanup`].
//!
//! A tracked call whose future is dropped while a statement runs on its connection leaves the
//! statement running on the server, and the connection, returned to the pool as it is, makes
//! the next caller wait behind it. So a [`TrackedConnection`](crate::TrackedConnection) dropped
//! by an unfinished call is not returned directly: a task spawned on the current Tokio runtime
//! checks it first, and the dropping code never waits. Every step is bounded:
//!
//! 1. an empty query, for at most [`PROBE_TIMEOUT`]. Answered: the connection was idle (or its
//!    statement ended meanwhile), it goes back to the pool as if nothing happened.
//! 2. An error instead: the connection is closed, `discarded{reason="broken"}`.
//! 3. No answer in time: a statement is still running. The connection leaves the pool at once
//!    (its slot is free for the next caller), `discarded{reason="busy"}`; the driver's cancel
//!    request is sent and the connection waited for, [`CANCEL_TIMEOUT`] for both. If it answers,
//!    the statement has stopped: `queries_cancelled_on_server_total`. It is closed either way:
//!    PostgreSQL acts on a cancel request whenever its signal reaches the backend, and never
//!    says when, so a connection reused after one could see the next caller's statement
//!    cancelled instead.
//!
//! A driver that cannot take a connection out of its pool (bb8) drains it instead: in step 3
//! the connection keeps its slot while the cancel request is sent and answered, then stays idle
//! for [`CANCEL_GRACE`] (a cancel signal that arrives late finds an idle backend, which ignores
//! it) and goes back to the pool; if it does not answer within [`CANCEL_TIMEOUT`] it goes back
//! as it is. Nothing is counted as discarded for it but a broken connection, which the pool
//! itself closes.
//!
//! Without a Tokio runtime (dropped outside one, or the runtime shuts down before the check
//! ends) nothing can be checked: the connection is closed, `discarded{reason="no_runtime"}`
//! (a driver that cannot detach returns it as it is).
//!
//! A driver plugs in by implementing [`Unfinished`] for its connection and calling
//! [`Cleanup::start`] from `MonitoredPool::release_unfinished`.

// Without a driver feature there is no connection to clean up.
#![cfg_attr(
    not(any(feature = "deadpool", feature = "sqlx", feature = "bb8")),
    allow(dead_code)
)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::series::Checkouts;
use super::status::DiscardReason;

/// How long a connection left by an unfinished call has to answer an empty query before it
/// counts as busy (a statement still running on it).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long sending the cancel request and waiting for the busy connection to answer may take.
pub(crate) const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a drained connection stays idle after its cancelled statement ended, before it
/// goes back to the pool (drivers that cannot detach).
pub(crate) const CANCEL_GRACE: Duration = Duration::from_millis(100);

/// A driver's connection that an unfinished call left.
pub(crate) trait Unfinished: Send + Sized + 'static {
    /// The connection out of its pool: its slot is free, and dropping it closes it. For a
    /// driver that cannot detach, the connection itself, which goes back when dropped.
    type Detached: Send + 'static;

    /// Whether [`Unfinished::detach`] takes the connection out of its pool.
    const DETACHES: bool;

    /// Runs an empty query: `true` when it answered, so every statement sent before it has
    /// ended; `false` when the connection is broken.
    fn probe(&mut self) -> impl Future<Output = bool> + Send + '_;

    /// Takes the connection out of its pool (see [`Unfinished::DETACHES`]).
    fn detach(self) -> Self::Detached;

    /// Sends the driver's cancel request for what `detached` runs, then waits until it answers
    /// again: `true` when it did (the statement has stopped). `false` at once for a driver
    /// that has no cancel request.
    fn cancel(detached: &mut Self::Detached) -> impl Future<Output = bool> + Send + '_;
}

/// Where the cleanup of one connection counts what it did (the tracked pool's series).
#[doc(hidden)]
pub struct Cleanup {
    checkouts: Option<Arc<Checkouts>>,
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleanup").finish_non_exhaustive()
    }
}

impl Cleanup {
    pub(crate) fn new(checkouts: Option<Arc<Checkouts>>) -> Self {
        Self { checkouts }
    }

    /// Checks `connection` on a task of the current Tokio runtime (see the module
    /// documentation); without a runtime, closes it. Never blocks, never panics.
    pub(crate) fn start<C: Unfinished>(self, connection: C) {
        let left = Left {
            connection: Some(connection),
            cleanup: self,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // A runtime that shuts down drops the task, and `Left` closes the connection.
            runtime.spawn(left.check());
        }
        // else `left` is dropped here: closed, counted `no_runtime`.
    }

    fn count_discarded(&self, reason: DiscardReason) {
        if let Some(checkouts) = &self.checkouts {
            checkouts.count_discarded(reason);
        }
    }

    fn count_cancelled(&self) {
        if let Some(checkouts) = &self.checkouts {
            checkouts.count_cancelled_on_server();
        }
    }
}

/// A connection being checked; closed when dropped before the check decided.
struct Left<C: Unfinished> {
    connection: Option<C>,
    cleanup: Cleanup,
}

impl<C: Unfinished> Left<C> {
    async fn check(mut self) {
        let Some(connection) = &mut self.connection else {
            return;
        };
        let answered = tokio::time::timeout(PROBE_TIMEOUT, connection.probe()).await;
        let Some(connection) = self.connection.take() else {
            return;
        };
        match answered {
            // Idle: back to the pool.
            Ok(true) => drop(connection),
            Ok(false) => {
                // A driver that cannot detach gives the pool a broken connection, which it
                // closes itself.
                drop(connection.detach());
                self.cleanup.count_discarded(DiscardReason::Broken);
            }
            Err(_elapsed) => {
                let mut detached = connection.detach();
                if C::DETACHES {
                    self.cleanup.count_discarded(DiscardReason::Busy);
                }
                let stopped = matches!(
                    tokio::time::timeout(CANCEL_TIMEOUT, C::cancel(&mut detached)).await,
                    Ok(true)
                );
                if stopped {
                    self.cleanup.count_cancelled();
                    if !C::DETACHES {
                        tokio::time::sleep(CANCEL_GRACE).await;
                    }
                }
                // Closed, or (a driver that cannot detach) back to the pool.
                drop(detached);
            }
        }
    }
}

impl<C: Unfinished> Drop for Left<C> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            drop(connection.detach());
            if C::DETACHES {
                self.cleanup.count_discarded(DiscardReason::NoRuntime);
            }
        }
    }
}
