//! The error type of setup calls. Recording itself never fails.

/// What can go wrong while setting dbmetrics up. Tracked queries never see this type: recording
/// a sample cannot fail a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A service or pool name that cannot be used in a Prometheus metric name or label.
    #[error(
        "invalid {what} name {name:?}: {reason}; a {what} name must match [a-zA-Z_][a-zA-Z0-9_]* \
         (ASCII letters, digits and underscores, not starting with a digit) and not start with \
         \"__\", e.g. \"content_service\""
    )]
    InvalidName {
        /// `"service"` or `"pool"`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Which character broke the rule, and where.
        reason: String,
    },

    /// A call that spawns a task was made outside a Tokio runtime.
    #[error(
        "{what} needs a Tokio runtime (it spawns {task}); call it from inside #[tokio::main], \
         #[tokio::test] or Runtime::block_on"
    )]
    NoRuntime {
        /// The call that was made.
        what: &'static str,
        /// The task it would have spawned.
        task: &'static str,
    },

    /// The same service and pool name were set up twice for two different pools.
    #[error(
        "service {service:?} already monitors a different pool under the pool name {pool:?}; \
         give the second pool its own name with DatabaseMetrics::builder(..).pool_name(\"replica\")"
    )]
    DuplicatePool {
        /// The service name.
        service: String,
        /// The pool label both pools would have had.
        pool: String,
    },

    /// The service (and pool) is set up already, with another value of an option given again
    /// now: the setup in force would silently win, so this one is refused.
    #[error(
        "service {service:?} (pool {pool:?}) is already set up with {option} = {existing}, and \
         this setup asks for {option} = {requested}; one setup's options hold for every handle \
         of it: give the same {option} (or leave it out to take the one in force)"
    )]
    ConflictingSetup {
        /// The service name.
        service: String,
        /// The pool label of the setup in force.
        pool: String,
        /// The builder option: `poll_interval`, `slow_query_threshold`, `label_limit`,
        /// `function_label`, `naming` (the last three hold for the whole service).
        option: &'static str,
        /// Its value in force.
        existing: String,
        /// The value asked for.
        requested: String,
    },

    /// A global `metrics` recorder is already installed; only one can be.
    #[error(
        "a metrics recorder is already installed in this process (the `metrics` crate allows one); \
         install the dbmetrics exporter once, at the start of main, or keep your own recorder and \
         skip dbmetrics::exporter"
    )]
    RecorderAlreadyInstalled,

    /// The Prometheus exporter could not be built or could not listen.
    #[error("the Prometheus exporter could not start: {0}")]
    Exporter(String),

    /// Invalid exporter configuration (e.g. empty or unsorted buckets).
    #[error("invalid exporter configuration: {0}")]
    Config(String),

    /// Invalid health check configuration (a zero timeout, a percentage outside 0–100).
    #[error("invalid health check configuration: {0}")]
    HealthConfig(String),
}
