//! Procedural macros of [dbmetrics](https://docs.rs/dbmetrics). Use them through the
//! `dbmetrics` crate, which re-exports them and the runtime their expansion calls
//! (`::dbmetrics::__private`).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use proc_macro::TokenStream;
use syn::{DeriveInput, ItemFn, parse_macro_input};

mod attr;
mod derive;
mod expand;

/// Records one call of the function as a tracked query: its duration in
/// `{service}_database_query_duration_seconds{operation, table, result}` and, when it fails,
/// `{service}_database_errors_total{operation, table, error_type}`.
///
/// ```text
/// #[track_query(select, "content")]                  // operation ident (or "select"), table
/// #[track_query(insert)]                             // table from #[tracked(table = "...")]
/// #[track_query(op = "update", table = "content", function = "touch")]
/// #[track_query(select, "content", metrics = metrics)]  // free fn: name the metrics
/// #[track_query(select, "items", ok_if = not_found)]    // a NotFound is a success
/// #[track_query(select, "items", error_if = Option::is_none)]
/// ```
///
/// Arguments:
/// - operation (first, or `op = ...`): one of `select`, `insert`, `update`, `delete`, `upsert`,
///   `copy`, `call`, `ddl`, `other`; anything else is a compile error at the typo;
/// - table (second, or `table = "..."`): a string literal; a method of a
///   `#[derive(TrackedRepository)]` struct with `#[tracked(table = "...")]` may leave it out;
/// - `function = "..."`: the function name in the slow-query log and in the optional
///   `function` label (default: the fn's name); `name = "..."` is an error that says so;
/// - `metrics = <expr>`: what to record into (anything implementing `QueryMetrics`, e.g. a
///   `&DatabaseMetrics` parameter); required when there is no `self`, else `self` must derive
///   `TrackedRepository`;
/// - `ok_if = <fn or closure>`: a call whose returned value it holds for records `success`
///   (a `NotFound` is no database failure);
/// - `error_if = <fn or closure>`: a call whose returned value it holds for records `error`
///   (class of the `Err` it holds, or the value's own `ClassifyError` class, else `other`).
///   Both take `&` the returned value and return `bool`; `ok_if` wins when both hold.
///
/// Works on `async fn` and plain `fn`, with any receiver, generics and `impl Trait`; the
/// signature is kept as written. `result` is `success` unless the function returns `Err`
/// (`error`, classified by `ClassifyError` or the error's `source()` chain; a success when
/// `ClassifyError::is_failure` says it is no failure, or `ok_if` holds), panics (`error`,
/// `error_type="panic"`; the panic continues) or its future is dropped before it finished
/// (`cancelled`).
#[proc_macro_attribute]
pub fn track_query(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let item = match parse_fn(item, "track_query") {
        Ok(item) => item,
        Err(Unparsed::Syntax) => return original.into(),
        Err(Unparsed::NotAFunction(error)) => return with_original_on_error(Err(error), original),
    };
    let expanded =
        syn::parse::<attr::QueryArgs>(args).and_then(|args| expand::track_query(args, item));
    with_original_on_error(expanded, original)
}

/// Records one call of the function as a tracked transaction:
/// `{service}_database_transaction_duration_seconds{transaction, result}`,
/// `{service}_database_transactions_total{transaction, result}` and, when it fails,
/// `{service}_database_errors_total{operation="transaction", table=<name>, error_type}`.
///
/// ```text
/// #[track_transaction("archive_content")]
/// #[track_transaction]                                    // named after the function
/// #[track_transaction("nightly", metrics = metrics)]      // free fn: name the metrics
/// #[track_transaction("move_item", ok_if = not_found)]    // what counts as a failure
/// ```
///
/// Tracked queries called inside record as well. The rules for receivers, results,
/// cancellation, panics, `ok_if` and `error_if` are those of `#[track_query]`.
#[proc_macro_attribute]
pub fn track_transaction(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let item = match parse_fn(item, "track_transaction") {
        Ok(item) => item,
        Err(Unparsed::Syntax) => return original.into(),
        Err(Unparsed::NotAFunction(error)) => return with_original_on_error(Err(error), original),
    };
    let expanded = syn::parse::<attr::TransactionArgs>(args)
        .and_then(|args| expand::track_transaction(args, item));
    with_original_on_error(expanded, original)
}

/// Lets `#[track_query]` methods record through `self`.
///
/// The metrics field is the one marked `#[metrics]`, else the one field whose type is
/// `DatabaseMetrics`; its type must implement `QueryMetrics` (`DatabaseMetrics`,
/// `NoopMetrics`, `InMemoryMetrics`, `Arc<dyn QueryMetrics>`, ...). `#[tracked(table = "...")]`
/// on the struct sets the table of methods whose `#[track_query]` names none.
///
/// ```text
/// #[derive(Clone, TrackedRepository)]
/// #[tracked(table = "content")]
/// struct ContentRepository {
///     pool: deadpool_postgres::Pool,
///     #[metrics]
///     metrics: DatabaseMetrics,
/// }
/// ```
#[proc_macro_derive(TrackedRepository, attributes(metrics, tracked))]
pub fn derive_tracked_repository(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive::derive(input).into()
}

/// On an error, emit it beside the item as written, so that the one error shown is ours and not
/// a cascade (unused imports, unknown functions at call sites).
fn with_original_on_error(
    expanded: syn::Result<proc_macro2::TokenStream>,
    original: proc_macro2::TokenStream,
) -> TokenStream {
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let error = error.into_compile_error();
            quote::quote! { #error #original }.into()
        }
    }
}

/// Why the item is not a function the attribute can wrap.
enum Unparsed {
    /// A function with a syntax error: the item is passed through unchanged, so that the
    /// compiler reports that error where it is, exactly as without the attribute.
    Syntax,
    /// Another item (a struct, a trait method without a body): our error says where the
    /// attribute goes.
    NotAFunction(syn::Error),
}

/// The function the attribute is on.
fn parse_fn(item: TokenStream, macro_name: &str) -> Result<ItemFn, Unparsed> {
    let tokens = proc_macro2::TokenStream::from(item);
    if let Ok(function) = syn::parse2::<ItemFn>(tokens.clone()) {
        return Ok(function);
    }
    let without_body = syn::parse2::<syn::TraitItemFn>(tokens.clone())
        .is_ok_and(|function| function.default.is_none());
    let other_item = matches!(
        syn::parse2::<syn::Item>(tokens.clone()),
        Ok(item) if !matches!(item, syn::Item::Fn(_))
    );
    if !without_body && !other_item {
        return Err(Unparsed::Syntax);
    }
    let span = tokens
        .into_iter()
        .next()
        .map(|t| t.span())
        .unwrap_or_else(proc_macro2::Span::call_site);
    Err(Unparsed::NotAFunction(syn::Error::new(
        span,
        format!(
            "#[{macro_name}] goes on a function or method with a body, e.g. \
             `async fn get(&self, id: i64) -> Result<Row, Error> {{ ... }}`"
        ),
    )))
}
