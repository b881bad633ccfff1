//! What a pool reports: its numbers ([`PoolStatus`]), the stages a checkout can time out in
//! ([`TimeoutStage`]) and why a connection left by an unfinished call was closed
//! ([`DiscardReason`]).

/// A pool's numbers at one moment, as every driver reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Open connections, idle or checked out.
    pub open: usize,
    /// Open connections nobody holds.
    pub idle: usize,
    /// The configured maximum.
    pub max: usize,
    /// Callers waiting for a connection, when the driver counts them (`None`: the tracked
    /// pool's own count is used).
    pub waiting: Option<usize>,
}

impl PoolStatus {
    /// Connections checked out: `open - idle`.
    pub fn active(&self) -> usize {
        self.open.saturating_sub(self.idle)
    }
}

/// The stage at which a checkout timed out: the `stage` label of
/// `{service}_database_connection_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutStage {
    /// No connection became free in time.
    Wait,
    /// Opening a new connection took too long.
    Create,
    /// Checking an idle connection before handing it out took too long.
    Recycle,
}

impl TimeoutStage {
    /// Every stage, in the order of `as usize`.
    pub const ALL: [TimeoutStage; 3] = [
        TimeoutStage::Wait,
        TimeoutStage::Create,
        TimeoutStage::Recycle,
    ];

    /// The label value: `wait`, `create` or `recycle`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TimeoutStage::Wait => "wait",
            TimeoutStage::Create => "create",
            TimeoutStage::Recycle => "recycle",
        }
    }
}

/// Why a tracked pool closed a connection that a cancelled or panicking call left, instead of
/// returning it: the `reason` label of `{service}_database_connections_discarded_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// It did not answer an empty query in time: a statement was still running on it. A cancel
    /// request was sent for that statement.
    Busy,
    /// Its check failed: the connection was closed or answered with an error.
    Broken,
    /// No Tokio runtime could check it (dropped outside one, or while the runtime shut down).
    NoRuntime,
}

impl DiscardReason {
    /// Every reason, in the order of `as usize`.
    pub const ALL: [DiscardReason; 3] = [
        DiscardReason::Busy,
        DiscardReason::Broken,
        DiscardReason::NoRuntime,
    ];

    /// The label value: `busy`, `broken` or `no_runtime`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Busy => "busy",
            DiscardReason::Broken => "broken",
            DiscardReason::NoRuntime => "no_runtime",
        }
    }
}
