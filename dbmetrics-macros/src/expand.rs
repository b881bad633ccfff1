//! Code generation: the user's function, its signature and body spans kept, wrapped in a call
//! guard that records on every exit path.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
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
                quote! {
                    let __dbmetrics_source = &(#expr);
                    let __dbmetrics_metrics = ::dbmetrics::__private::metrics_ref(__dbmetrics_source);
                }
            } else {
                quote! {
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
                            const { ::dbmetrics::__private::default_table::<Self>() }
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

    // Annotate the output with the declared return type so that `?` in the body converts
    // errors as it did before; `impl Trait` cannot be named in a `let`, so it is left inferred.
    let output_ty = match &sig.output {
        ReturnType::Default => Some(quote! { () }),
        ReturnType::Type(_, ty) if !contains_impl_trait(ty) => Some(ty.to_token_stream()),
        ReturnType::Type(..) => None,
    };
    let annotation = output_ty.map(|ty| quote! { : #ty });

    let run_body = if sig.asyncness.is_some() {
        quote! { async #block.await }
    } else {
        quote! { (|| #block)() }
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
            let __dbmetrics_output #annotation = #run_body;
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

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}
