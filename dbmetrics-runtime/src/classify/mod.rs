//! Error classification: every error becomes one bounded `error_type` label value.
//!
//! PostgreSQL errors are named by their SQLSTATE condition (`unique_violation`,
//! `serialization_failure`, ...; the full table of PostgreSQL's Appendix A). Errors without a
//! SQLSTATE become `connection_closed`, `connection`, `pool_timeout`, `pool_closed`,
//! `row_not_found` (sqlx's `RowNotFound`), or `other`.
//! The label never holds SQL text, parameter values or driver messages.

mod chain;
pub(crate) mod classes;
mod sqlstate;

pub use chain::classify;
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub use chain::{classify_pool, classify_postgres};
pub(crate) use classes::ClassifyError;
pub use classes::{
    CONNECTION, CONNECTION_CLOSED, OTHER, PANIC, POOL_CLOSED, POOL_TIMEOUT, ROW_NOT_FOUND,
    classify_io, sqlstate_code, sqlstate_name,
};
