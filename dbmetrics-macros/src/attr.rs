//! Parsing of the attribute arguments. Every error carries the span of the offending token and
//! says what to write instead.

use dbmetrics_labels::Operation;
use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitStr, Token};

mod kw {
    syn::custom_keyword!(op);
    syn::custom_keyword!(operation);
    syn::custom_keyword!(table);
    syn::custom_keyword!(name);
    syn::custom_keyword!(function);
    syn::custom_keyword!(metrics);
    syn::custom_keyword!(ok_if);
    syn::custom_keyword!(error_if);
}

/// A validated operation: the runtime variant name and the span it was written at.
pub(crate) struct Op {
    pub(crate) variant: &'static str,
    pub(crate) span: Span,
}

/// `ok_if = ...` and `error_if = ...`: what counts as a failure, decided from `&` the returned
/// value. Each is a path to a function or a closure.
#[derive(Default)]
pub(crate) struct Predicates {
    pub(crate) ok_if: Option<Expr>,
    pub(crate) error_if: Option<Expr>,
}

/// Arguments of `#[track_query(...)]`.
#[derive(Default)]
pub(crate) struct QueryArgs {
    pub(crate) op: Option<Op>,
    pub(crate) table: Option<LitStr>,
    pub(crate) function: Option<LitStr>,
    pub(crate) metrics: Option<Expr>,
    pub(crate) predicates: Predicates,
}

/// Arguments of `#[track_transaction(...)]`.
#[derive(Default)]
pub(crate) struct TransactionArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) metrics: Option<Expr>,
    pub(crate) predicates: Predicates,
}

impl Predicates {
    /// Parses `ok_if = ...` or `error_if = ...` when the input starts with one; `Ok(false)`
    /// when it starts with something else.
    fn parse_one(&mut self, input: ParseStream<'_>) -> syn::Result<bool> {
        if !input.peek2(Token![=]) {
            return Ok(false);
        }
        let (slot, key) = if input.peek(kw::ok_if) {
            (&mut self.ok_if, "ok_if")
        } else if input.peek(kw::error_if) {
            (&mut self.error_if, "error_if")
        } else {
            return Ok(false);
        };
        let key_ident: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let predicate = parse_predicate(input, key)?;
        set_once(
            slot,
            predicate,
            key_ident.span(),
            &format!("`{key}` predicate"),
        )?;
        Ok(true)
    }
}

/// A predicate: a path to a function (`is_not_found`, `Option::is_none`) or a closure
/// (`|r| matches!(r, Err(RepoError::NotFound))`), taking `&` the returned value.
fn parse_predicate(input: ParseStream<'_>, key: &str) -> syn::Result<Expr> {
    let expr: Expr = input.parse()?;
    match expr {
        Expr::Path(_) | Expr::Closure(_) => Ok(expr),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "`{key}` takes a function or a closure over `&` the returned value, e.g. \
                 `{key} = is_not_found` or `{key} = |r| matches!(r, Err(RepoError::NotFound))`"
            ),
        )),
    }
}

impl Parse for QueryArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = QueryArgs::default();
        let mut position = 0usize;
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if (lookahead.peek(kw::op) || lookahead.peek(kw::operation)) && input.peek2(Token![=]) {
                let key: Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                let op = parse_op(input)?;
                set_once(&mut args.op, op, key.span(), "operation")?;
            } else if lookahead.peek(kw::table) && input.peek2(Token![=]) {
                let key: kw::table = input.parse()?;
                input.parse::<Token![=]>()?;
                let table = parse_table(input)?;
                set_once(&mut args.table, table, key.span, "table")?;
            } else if lookahead.peek(kw::function) && input.peek2(Token![=]) {
                let key: kw::function = input.parse()?;
                input.parse::<Token![=]>()?;
                let function = parse_non_empty(input, "function name")?;
                set_once(&mut args.function, function, key.span, "function name")?;
            } else if lookahead.peek(kw::name) && input.peek2(Token![=]) {
                let key: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let example = input
                    .parse::<LitStr>()
                    .map_or_else(|_| "lookup".to_owned(), |lit| lit.value());
                return Err(syn::Error::new(
                    key.span,
                    format!(
                        "`name` sets no label: write `function = {example:?}` to name the \
                         function in the slow-query log (and in the `function` label, when \
                         DatabaseMetrics::builder(..).function_label(true) turns it on); the \
                         labels of a query are its operation and table: \
                         #[track_query(select, \"content\")]"
                    ),
                ));
            } else if lookahead.peek(kw::metrics) && input.peek2(Token![=]) {
                let key: kw::metrics = input.parse()?;
                input.parse::<Token![=]>()?;
                let expr: Expr = input.parse()?;
                set_once(&mut args.metrics, expr, key.span, "metrics")?;
            } else if args.predicates.parse_one(input)? {
            } else if input.peek(Ident) && input.peek2(Token![=]) {
                let key: Ident = input.parse()?;
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{key}`; #[track_query] takes an operation, a table, \
                         and optionally `metrics = <expr>`, `ok_if = <fn>`, `error_if = <fn>` \
                         and `function = \"...\"`"
                    ),
                ));
            } else if position == 0
                && args.op.is_none()
                && (input.peek(Ident) || input.peek(LitStr))
            {
                args.op = Some(parse_op(input)?);
                position += 1;
            } else if position <= 1 && args.table.is_none() && input.peek(LitStr) {
                args.table = Some(parse_table(input)?);
                position = 2;
            } else if position == 1 && input.peek(Ident) {
                let ident: Ident = input.parse()?;
                return Err(syn::Error::new(
                    ident.span(),
                    format!("the table must be a string literal: write \"{ident}\""),
                ));
            } else {
                return Err(syn::Error::new(
                    input.span(),
                    "expected #[track_query(operation, \"table\")], e.g. \
                     #[track_query(select, \"content\")]",
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

impl Parse for TransactionArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TransactionArgs::default();
        while !input.is_empty() {
            if input.peek(kw::name) && input.peek2(Token![=]) {
                let key: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let name = parse_non_empty(input, "transaction name")?;
                set_once(&mut args.name, name, key.span, "name")?;
            } else if input.peek(kw::metrics) && input.peek2(Token![=]) {
                let key: kw::metrics = input.parse()?;
                input.parse::<Token![=]>()?;
                let expr: Expr = input.parse()?;
                set_once(&mut args.metrics, expr, key.span, "metrics")?;
            } else if input.peek(LitStr) && args.name.is_none() {
                args.name = Some(parse_non_empty(input, "transaction name")?);
            } else if args.predicates.parse_one(input)? {
            } else if input.peek(Ident) && input.peek2(Token![=]) {
                let key: Ident = input.parse()?;
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{key}`; #[track_transaction] takes a name \
                         (\"archive_content\") and optionally `metrics = <expr>`, \
                         `ok_if = <fn>` and `error_if = <fn>`"
                    ),
                ));
            } else if input.peek(Ident) {
                let ident: Ident = input.parse()?;
                return Err(syn::Error::new(
                    ident.span(),
                    format!("the transaction name must be a string literal: write \"{ident}\""),
                ));
            } else {
                return Err(syn::Error::new(
                    input.span(),
                    "expected #[track_transaction(\"name\")], e.g. \
                     #[track_transaction(\"archive_content\")]",
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, span: Span, what: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            span,
            format!("the {what} is given twice; keep one"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_op(input: ParseStream<'_>) -> syn::Result<Op> {
    let (text, span) = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        (lit.value(), lit.span())
    } else {
        let ident: Ident = input.parse()?;
        (ident.to_string(), ident.span())
    };
    match Operation::from_label(&text) {
        Some(op) => Ok(Op {
            variant: op.variant_name(),
            span,
        }),
        None => Err(syn::Error::new(span, unknown_operation(&text))),
    }
}

fn unknown_operation(text: &str) -> String {
    let list = Operation::list();
    let lower = text.to_ascii_lowercase();
    let suggestion = Operation::ALL
        .iter()
        .map(|op| (levenshtein(&lower, op.as_str()), op.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, name)| format!("; did you mean `{name}`?"))
        .unwrap_or_default();
    format!("unknown operation `{text}`{suggestion}\nexpected one of: {list}")
}

fn parse_table(input: ParseStream<'_>) -> syn::Result<LitStr> {
    if input.peek(Ident) {
        let ident: Ident = input.parse()?;
        return Err(syn::Error::new(
            ident.span(),
            format!("the table must be a string literal: write \"{ident}\""),
        ));
    }
    parse_non_empty(input, "table")
}

fn parse_non_empty(input: ParseStream<'_>, what: &str) -> syn::Result<LitStr> {
    let lit: LitStr = input.parse()?;
    if lit.value().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!("the {what} must not be empty"),
        ));
    }
    Ok(lit)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Arguments of `#[tracked(...)]` on a repository struct.
#[derive(Default)]
pub(crate) struct TrackedArgs {
    pub(crate) table: Option<LitStr>,
}

impl Parse for TrackedArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TrackedArgs::default();
        while !input.is_empty() {
            if input.peek(kw::table) && input.peek2(Token![=]) {
                let key: kw::table = input.parse()?;
                input.parse::<Token![=]>()?;
                let table = parse_table(input)?;
                set_once(&mut args.table, table, key.span, "table")?;
            } else {
                let tt: proc_macro2::TokenTree = input.parse()?;
                return Err(syn::Error::new(
                    tt.span(),
                    "expected `table = \"...\"`, e.g. #[tracked(table = \"content\")]",
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}
