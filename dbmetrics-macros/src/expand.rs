//! Code generation: the user's function, its signature and body spans kept, wrapped in a call
//! guard that records on every exit path.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, ReturnType, Type};

use dbmetrics_labels::Operation;

use crate::attr::{Predicates, QueryArgs, TransactionArgs};

/// What the call site static is.
enum SiteSpec {
    Query {
        variant: &'static str,
        op_span: Span,
        table: Option<LitStr>,
    },
    Transaction {
        name: LitStr,
    },
}

pub(crate) fn track_query(args: QueryArgs, item: ItemFn) -> syn::Result<TokenStream> {
    let Some(op) = args.op else {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "missing operation: write #[track_query(select, \"content\")]; operations are {}",
                Operation::list()
            ),
        ));
    };
    let site = SiteSpec::Query {
        variant: op.variant,
        op_span: op.span,
        table: args.table,
    };
    expand(
        site,
        args.function,
        args.metrics,
        args.predicates,
        item,
        "track_query",
    )
}

pub(crate) fn track_transaction(args: TransactionArgs, item: ItemFn) -> syn::Result<TokenStream> {
    let name = args
        .name
        .unwrap_or_else(|| LitStr::new(&item.sig.ident.to_string(), item.sig.ident.span()));
    expand(
        SiteSpec::Transaction { name },
        None,
        args.metrics,
        args.predicates,
        item,
        "track_transaction",
    )
}

fn expand(
    site: SiteSpec,
    function: Option<LitStr>,
    metrics: Option<Expr>,
    predicates: Predicates,
    item: ItemFn,
    macro_name: &str,
) -> syn::Result<TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;

    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            format!("#[{macro_name}] cannot track a `const fn`: it runs at compile time"),
        ));
    }
    // `#![inner]` attributes of the body were parsed into `attrs`: they go back into the body.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));

    let fn_name = function.unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span()));
    let receiver = sig.inputs.first().and_then(|arg| match arg {
        FnArg::Receiver(r) => Some(r),
        FnArg::Typed(_) => None,
    });
    // A shared-reference receiver can lend the metrics for the whole call; any other receiver
    // (by value, `&mut self`, `Arc<Self>`, ...) may be moved or borrowed mutably by the body,
    // so the guard holds its own clone (an `Arc` increment for `DatabaseMetrics`).
    let shared_receiver = receiver.is_some_and(|r| match &*r.ty {
        Type::Reference(reference) => reference.mutability.is_none(),
        _ => false,
    });
    // A plain `fn` returning a future (`#[async_trait]` methods, `-> impl Future`): the call is
    // the returned future, which the guard has to travel with.
    let returns_future = match (&sig.asyncness, &sig.output) {
        (None, ReturnType::Type(_, ty)) => future_shape(ty),
        _ => None,
    };

    // Internal names are hygienic: user code can neither see nor shadow them.
    let metrics_var = Ident::new("__dbmetrics_metrics", Span::mixed_site());
    // Located at the `metrics = ...` expression, so that a type error points at it.
    let source_var = Ident::new(
        "__dbmetrics_source",
        Span::mixed_site().located_at(metrics.as_ref().map_or_else(Span::call_site, |e| e.span())),
    );
    let guard_var = Ident::new("__dbmetrics_guard", Span::mixed_site());
    let output_var = Ident::new("__dbmetrics_output", Span::mixed_site());
    let outcome_var = Ident::new("__dbmetrics_outcome", Span::mixed_site());
    let future_var = Ident::new("__dbmetrics_future", Span::mixed_site());
    let ret_var = Ident::new("__dbmetrics_ret", Span::mixed_site());

    let metrics_source = match (&metrics, receiver) {
        (Some(expr), _) => {
            if (shared_receiver || receiver.is_none()) && returns_future.is_none() {
                quote_spanned! {expr.span()=>
                    let #source_var = &(#expr);
                    let #metrics_var = ::dbmetrics::__private::metrics_ref(#source_var);
                }
            } else {
                quote_spanned! {expr.span()=>
                    let #metrics_var = ::dbmetrics::__private::metrics_owned(&(#expr));
                }
            }
        }
        (None, Some(receiver)) => {
            let self_token = &receiver.self_token;
            if shared_receiver {
                quote_spanned! {receiver.self_token.span=>
                    let #metrics_var =
                        <Self as ::dbmetrics::__private::TrackedRepository>::metrics(#self_token);
                }
            } else {
                quote_spanned! {receiver.self_token.span=>
                    let #metrics_var = ::dbmetrics::__private::metrics_owned(
                        <Self as ::dbmetrics::__private::TrackedRepository>::metrics(&#self_token),
                    );
                }
            }
        }
        (None, None) => {
            let ident = &sig.ident;
            return Err(syn::Error::new(
                ident.span(),
                format!(
                    "#[{macro_name}] on `{ident}` has no `self` to record through: name the \
                     metrics, e.g. #[{macro_name}({example}, metrics = metrics)] where `metrics` \
                     is a `&DatabaseMetrics` parameter",
                    example = match &site {
                        SiteSpec::Query { variant, table, .. } => format!(
                            "{}, {}",
                            variant.to_lowercase(),
                            table
                                .as_ref()
                                .map(|t| format!("{:?}", t.value()))
                                .unwrap_or_else(|| "\"content\"".into())
                        ),
                        SiteSpec::Transaction { name } => format!("{:?}", name.value()),
                    }
                ),
            ));
        }
    };

    let (site_init, table_expr) = match &site {
        SiteSpec::Query {
            variant,
            op_span,
            table,
        } => {
            let variant = Ident::new(variant, *op_span);
            let op = quote_spanned! {*op_span=> ::dbmetrics::__private::Operation::#variant };
            match table {
                Some(table) => (
                    quote! {
                        ::dbmetrics::__private::query_site(
                            #op, ::core::option::Option::Some(#table), #fn_name, ::core::module_path!())
                    },
                    table.to_token_stream(),
                ),
                None => {
                    if receiver.is_none() {
                        return Err(syn::Error::new(
                            Span::call_site(),
                            "missing table: write #[track_query(select, \"content\", ...)]; only \
                             methods of a #[tracked(table = \"...\")] repository may leave it out",
                        ));
                    }
                    (
                        quote! {
                            ::dbmetrics::__private::query_site(
                                #op, ::core::option::Option::None, #fn_name, ::core::module_path!())
                        },
                        quote! {
                            <Self as ::dbmetrics::__private::DefaultTable>::TABLE
                        },
                    )
                }
            }
        }
        SiteSpec::Transaction { name } => (
            quote! {
                ::dbmetrics::__private::transaction_site(#name, #fn_name, ::core::module_path!())
            },
            name.to_token_stream(),
        ),
    };

    // What counts as a failure: `ok_if`, then `error_if`, then the returned value's own
    // outcome. Each predicate is applied where it was written, so that a wrong one is an error
    // at the user's expression; neither runs before the call has ended.
    let wrap_var = Ident::new("__dbmetrics_wrap", Span::mixed_site());
    let mut decide = quote! { #wrap_var.__dbmetrics_outcome() };
    if let Some(error_if) = &predicates.error_if {
        let test = quote_spanned! {error_if.span()=>
            ::dbmetrics::__private::outcome::test(&#output_var, #error_if)
        };
        decide = quote! {
            if #test {
                ::dbmetrics::__private::outcome::forced_error(#wrap_var.__dbmetrics_class())
            } else {
                #decide
            }
        };
    }
    if let Some(ok_if) = &predicates.ok_if {
        let test = quote_spanned! {ok_if.span()=>
            ::dbmetrics::__private::outcome::test(&#output_var, #ok_if)
        };
        decide = quote! {
            if #test {
                ::dbmetrics::__private::Outcome::Success
            } else {
                #decide
            }
        };
    }
    let outcome = quote! {
        #[allow(clippy::needless_borrow, clippy::unnecessary_mut_passed)]
        let #outcome_var = {
            #[allow(unused_imports)]
            use ::dbmetrics::__private::outcome::{
                ViaAnyError as _, ViaAsRefError as _, ViaClassify as _, ViaClassifyValue as _,
                ViaStdError as _, ViaValue as _,
            };
            let #wrap_var = &&&&&&::dbmetrics::__private::outcome::Wrap(&#output_var);
            #decide
        };
    };
    let record = quote! {
        let #guard_var = ::dbmetrics::__private::CallGuard::start(
            #metrics_var,
            &__DBMETRICS_SITE,
            #table_expr,
        );
    };

    if let Some(shape) = returns_future {
        // The body builds the future; timing starts when the future is first polled, as it
        // would for an `async fn`.
        let make_future = match output_type(&sig.output) {
            Some(ty) => quote! { (|| -> #ty #block)() },
            None => quote! { (|| #block)() },
        };
        let tracked = quote! {
            async move {
                #record
                let #output_var = #guard_var.body(#future_var).await;
                #outcome
                #guard_var.finish(#outcome_var);
                #output_var
            }
        };
        let tail = match shape {
            FutureShape::Impl => tracked,
            FutureShape::Boxed => quote! { ::std::boxed::Box::pin(#tracked) },
        };
        return Ok(quote! {
            #(#outer_attrs)*
            #vis #sig {
                #(#inner_attrs)*
                static __DBMETRICS_SITE: ::dbmetrics::__private::CallSite = #site_init;
                #metrics_source
                #[allow(clippy::redundant_closure_call)]
                let #future_var = #make_future;
                #tail
            }
        });
    }

    // The body runs with the declared return type as its expected type, so that `return`, `?`,
    // coercions and the tail are checked as they were before the attribute: the first
    // (never taken) `return` fixes the type of every later one (the `async-trait` trick).
    // `impl Trait` in the declared type is left to inference (`_`).
    let typed_body = match output_type(&sig.output) {
        Some(ty) => quote! {
            {
                #[allow(unreachable_code)]
                if let ::core::option::Option::Some(#ret_var) = ::core::option::Option::None::<#ty> {
                    return #ret_var;
                }
                #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                let #ret_var: #ty = #block;
                #[allow(unreachable_code)]
                #ret_var
            }
        },
        None => block.to_token_stream(),
    };
    let run_body = if sig.asyncness.is_some() {
        quote! { #guard_var.body(async move #typed_body).await }
    } else {
        quote! { #guard_var.run(move || #typed_body) }
    };

    Ok(quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            static __DBMETRICS_SITE: ::dbmetrics::__private::CallSite = #site_init;
            #metrics_source
            #record
            #[allow(clippy::redundant_closure_call, unused_mut)]
            let #output_var = #run_body;
            #outcome
            #guard_var.finish(#outcome_var);
            #output_var
        }
    })
}

/// The declared return type with every `impl Trait` replaced by `_` (`()` when none is
/// declared); `None` when nothing useful is left to annotate with.
fn output_type(output: &ReturnType) -> Option<TokenStream> {
    match output {
        ReturnType::Default => Some(quote! { () }),
        ReturnType::Type(_, ty) => {
            if matches!(**ty, Type::ImplTrait(_)) {
                return None;
            }
            let mut ty = (**ty).clone();
            struct Infer;
            impl VisitMut for Infer {
                fn visit_type_mut(&mut self, ty: &mut Type) {
                    if matches!(ty, Type::ImplTrait(_)) {
                        *ty = Type::Infer(syn::TypeInfer {
                            underscore_token: Default::default(),
                        });
                    } else {
                        syn::visit_mut::visit_type_mut(self, ty);
                    }
                }
            }
            Infer.visit_type_mut(&mut ty);
            Some(ty.to_token_stream())
        }
    }
}

/// How a plain `fn` returns a future, if it does.
enum FutureShape {
    /// `-> impl Future<Output = T> (+ ...)`
    Impl,
    /// `-> Pin<Box<dyn Future<Output = T> + ...>>` (what `#[async_trait]` writes) or
    /// `BoxFuture<'_, T>` / `LocalBoxFuture<'_, T>`
    Boxed,
}

fn future_shape(ty: &Type) -> Option<FutureShape> {
    fn is_future_bound(bound: &syn::TypeParamBound) -> bool {
        matches!(bound, syn::TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Future"))
    }
    fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
        match ty {
            Type::Path(p) => p.path.segments.last(),
            _ => None,
        }
    }
    fn first_type_arg(segment: &syn::PathSegment) -> Option<&Type> {
        match &segment.arguments {
            syn::PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            }),
            _ => None,
        }
    }
    match ty {
        Type::ImplTrait(t) if t.bounds.iter().any(is_future_bound) => Some(FutureShape::Impl),
        _ => {
            let segment = last_segment(ty)?;
            if segment.ident == "BoxFuture" || segment.ident == "LocalBoxFuture" {
                return Some(FutureShape::Boxed);
            }
            if segment.ident != "Pin" {
                return None;
            }
            let boxed = last_segment(first_type_arg(segment)?)?;
            if boxed.ident != "Box" {
                return None;
            }
            match first_type_arg(boxed)? {
                Type::TraitObject(object) if object.bounds.iter().any(is_future_bound) => {
                    Some(FutureShape::Boxed)
                }
                _ => None,
            }
        }
    }
}
