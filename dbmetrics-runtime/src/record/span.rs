//! The `tracing` span of one tracked call (feature `tracing`): created when the call starts, a
//! child of the caller's current span, entered on every poll of the call's body, ended when the
//! call ends (also when its future is dropped). `tracing-opentelemetry` turns it into an
//! OpenTelemetry span of kind `CLIENT` named by its `otel.name` field.
//!
//! | field | query span `db.query` | transaction span `db.transaction` |
//! |---|---|---|
//! | `otel.name` | `"{DB_OPERATION} {table}"`, e.g. `"SELECT content"` | `"transaction {name}"` |
//! | `otel.kind` | `"client"` | (internal) |
//! | `db.system.name` | `"postgresql"` | `"postgresql"` |
//! | `db.operation.name` | the SQL keyword: `SELECT`, `INSERT`, ... | |
//! | `db.collection.name` | the table | |
//! | `dbmetrics.transaction.name` | | the transaction name |
//! | `error.type` | on failure: the `error_type` class; `"cancelled"` for a dropped future | same |
//! | `db.response.status_code` | on a server error: the SQLSTATE, e.g. `"42P01"` | same |
//! | `otel.status_code` | `"error"` on failure and cancellation | same |
//!
//! `TrackedPool::get` opens a `pool.acquire` span over the wait for a connection, with
//! `db.system.name`, `db.client.connection.pool.name` and, when the checkout fails,
//! `error.type` and `otel.status_code = "error"`.
//!
//! Never SQL text or parameter values. Level `INFO`, target `dbmetrics`. Until a `tracing`
//! subscriber is set (globally or for a scope), no span is made at all: a call pays one
//! relaxed atomic load (`tracing::dispatcher::has_been_set`). A subscriber that filters the
//! target out pays the callsite's interest check.

use tracing::Span;
use tracing::field::Empty;

use super::{CallSite, Outcome, SiteKind};
use crate::classify::sqlstate_code;

/// The span of one call of `site` on `table` (the transaction name for transactions); `None`
/// while no subscriber has ever been set, so that the call does not even enter a disabled span.
#[inline]
pub(crate) fn call_span(site: &CallSite, table: &'static str) -> Option<Span> {
    if !tracing::dispatcher::has_been_set() {
        return None;
    }
    Some(match site.kind() {
        SiteKind::Query { operation, .. } => tracing::info_span!(
            target: "dbmetrics",
            "db.query",
            otel.name = format_args!("{} {}", operation.sql_keyword(), table),
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = operation.sql_keyword(),
            db.collection.name = table,
            error.type = Empty,
            db.response.status_code = Empty,
            otel.status_code = Empty,
        ),
        SiteKind::Transaction { name } => tracing::info_span!(
            target: "dbmetrics",
            "db.transaction",
            otel.name = format_args!("transaction {name}"),
            db.system.name = "postgresql",
            dbmetrics.transaction.name = name,
            error.type = Empty,
            db.response.status_code = Empty,
            otel.status_code = Empty,
        ),
    })
}

/// The span of one checkout from the pool labelled `pool`.
#[inline]
pub(crate) fn acquire_span(pool: &str) -> Span {
    tracing::info_span!(
        target: "dbmetrics",
        "pool.acquire",
        db.system.name = "postgresql",
        db.client.connection.pool.name = pool,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records how the call ended on its span: nothing for a success; `error.type`,
/// `db.response.status_code` (server errors) and `otel.status_code = "error"` otherwise.
#[inline]
pub(crate) fn record_outcome(span: &Option<Span>, outcome: Outcome) {
    let Some(span) = span else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let error_type = match outcome {
        Outcome::Success => return,
        Outcome::Error { error_type } => error_type,
        Outcome::Cancelled => Outcome::Cancelled.result(),
    };
    record_error(span, error_type);
}

/// Marks `span` as failed with class `error_type`.
#[cold]
pub(crate) fn record_error(span: &Span, error_type: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    if let Some(code) = sqlstate_code(error_type) {
        span.record("db.response.status_code", code);
    }
    span.record("otel.status_code", "error");
}
