//! Code generation: the user's function, its signature and body spans kept, wrapped in a call
//! guard that records on every exit path.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Expr, FnArg, ItemFn, LitStr, ReturnType, Type};

use crate::attr::{QueryArgs, TransactionArgs};

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
            "missing operation: write #[track_query(select, \"content\")]; operations are \
             select, insert, update, delete, upsert, copy, call, ddl, other",
        ));
    };
    let site = SiteSpec::Query {
        variant: op.variant,
        op_span: op.span,
        table: args.table,
    };
    expand(site, args.name, args.metrics, item, "track_query")
}

pub(crate) fn track_transaction(args: TransactionArgs, item: ItemFn) -> syn::Result<TokenStream> {
    let name = args
        .name
        .unwrap_or_else(|| LitStr::new(&item.sig.ident.to_string(), item.sig.ident.span()));
    expand(
        SiteSpec::Transaction { name },
        None,
        args.metrics,
        item,
        "track_transaction",
    )
}

fn expand(
    site: SiteSpec,
    name: Option<LitStr>,
    metrics: Option<Expr>,
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

    let fn_name = name.unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span()));
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

    let metrics_source = match (&metrics, receiver) {
        (Some(expr), _) => {
            if shared_receiver || receiver.is_none() {
                quote_spanned! {expr.span()=>
                    let __dbmetrics_source = &(#expr);
                    let __dbmetrics_metrics = ::dbmetrics::__private::metrics_ref(__dbmetrics_source);
                }
            } else {
                quote_spanned! {expr.span()=>
                    let __dbmetrics_metrics = ::dbmetrics::__private::metrics_owned(&(#expr));
                }
            }
        }
        (None, Some(receiver)) => {
            let self_token = &receiver.self_token;
            if shared_receiver {
                quote_spanned! {receiver.self_token.span=>
                    let __dbmetrics_metrics =
                        <Self as ::dbmetrics::__private::TrackedRepository>::metrics(#self_token);
                }
            } else {
                quote_spanned! {receiver.self_token.span=>
                    let __dbmetrics_metrics = ::dbmetrics::__private::metrics_owned(
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
                    example = match site {
                        SiteSpec::Query { .. } => "select, \"content\"",
                        SiteSpec::Transaction { .. } => "\"archive_content\"",
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
            let variant = syn::Ident::new(variant, *op_span);
            let op = quote_spanned! {*op_span=> ::dbmetrics::__private::Operation::#variant };
            match table {
                Some(table) => (
                    quote! {
                        ::dbmetrics::__private::CallSite::query(
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
                            ::dbmetrics::__private::CallSite::query(
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
                ::dbmetrics::__private::CallSite::transaction(#name, #fn_name, ::core::module_path!())
            },
            name.to_token_stream(),
        ),
    };

    // The body runs in a closure that returns the declared type, so that `return`, `?` and the
    // tail expression are checked against it with the user's spans, as before the attribute.
    // `impl Trait` cannot be named there, and an elided lifetime would name a fresh lifetime
    // of the closure instead of the function's: those outputs are left to inference.
    let output_ty = match &sig.output {
        ReturnType::Default => Some(quote! { () }),
        ReturnType::Type(_, ty) if !needs_inference(ty) => Some(ty.to_token_stream()),
        ReturnType::Type(..) => None,
    };
    let run_body = match (&sig.asyncness, output_ty) {
        (Some(_), Some(ty)) => quote! { (async || -> #ty #block)().await },
        (Some(_), None) => quote! { async #block.await },
        (None, Some(ty)) => quote! { (|| -> #ty #block)() },
        (None, None) => quote! { (|| #block)() },
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            static __DBMETRICS_SITE: ::dbmetrics::__private::CallSite = #site_init;
            #metrics_source
            let __dbmetrics_guard = ::dbmetrics::__private::CallGuard::start(
                __dbmetrics_metrics,
                &__DBMETRICS_SITE,
                #table_expr,
            );
            #[allow(clippy::redundant_closure_call, unused_mut)]
            let __dbmetrics_output = #run_body;
            #[allow(clippy::needless_borrow, clippy::unnecessary_mut_passed)]
            let __dbmetrics_outcome = {
                #[allow(unused_imports)]
                use ::dbmetrics::__private::outcome::{
                    ViaAnyError as _, ViaClassify as _, ViaStdError as _, ViaValue as _,
                };
                (&&&&::dbmetrics::__private::outcome::Wrap(&__dbmetrics_output))
                    .__dbmetrics_outcome()
            };
            __dbmetrics_guard.finish(__dbmetrics_outcome);
            __dbmetrics_output
        }
    })
}

/// Whether `ty` holds `impl Trait` or an elided lifetime (`&T`, `'_`).
fn needs_inference(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            if r.lifetime.is_none() {
                self.0 = true;
            }
            syn::visit::visit_type_reference(self, r);
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            if l.ident == "_" {
                self.0 = true;
            }
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}
