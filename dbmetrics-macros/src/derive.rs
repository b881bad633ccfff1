//! `#[derive(TrackedRepository)]`: parse the struct, find the metrics field, generate the impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Member, Type};

use crate::attr::TrackedArgs;

/// The derive's output; when it fails, the error plus the `DefaultTable` impl if the table
/// itself was fine, so that methods do not also report a missing default table.
pub(crate) fn derive(input: DeriveInput) -> TokenStream {
    match tracked_repository(&input) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.into_compile_error();
            let table = tracked_args(&input)
                .ok()
                .and_then(|args| args.table)
                .map(|table| default_table_impl(&input, &table));
            quote! { #error #table }
        }
    }
}

fn tracked_args(input: &DeriveInput) -> syn::Result<TrackedArgs> {
    let mut args = TrackedArgs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("tracked")) {
        let parsed: TrackedArgs = attr.parse_args()?;
        if let Some(table) = parsed.table {
            if args.table.is_some() {
                return Err(syn::Error::new(
                    table.span(),
                    "the default table is given twice; keep one",
                ));
            }
            args.table = Some(table);
        }
    }
    Ok(args)
}

fn default_table_impl(input: &DeriveInput, table: &syn::LitStr) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::dbmetrics::__private::DefaultTable for #ident #ty_generics #where_clause {
            const TABLE: &'static str = #table;
        }
    }
}

fn tracked_repository(input: &DeriveInput) -> syn::Result<TokenStream> {
    let args = tracked_args(input)?;
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => {
            return Err(syn::Error::new(
                data.enum_token.span,
                "#[derive(TrackedRepository)] needs a struct with a metrics field, not an enum",
            ));
        }
        Data::Union(data) => {
            return Err(syn::Error::new(
                data.union_token.span,
                "#[derive(TrackedRepository)] needs a struct with a metrics field, not a union",
            ));
        }
    };

    let members: Vec<(Member, &syn::Field)> = match fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|f| (Member::Named(f.ident.clone().expect("named field")), f))
            .collect(),
        Fields::Unnamed(unnamed) => unnamed
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| (Member::Unnamed(i.into()), f))
            .collect(),
        Fields::Unit => Vec::new(),
    };

    let marked: Vec<_> = members
        .iter()
        .filter(|(_, f)| f.attrs.iter().any(|a| a.path().is_ident("metrics")))
        .collect();
    if let Some((_, second)) = marked.get(1) {
        let attr = second
            .attrs
            .iter()
            .find(|a| a.path().is_ident("metrics"))
            .expect("marked field has the attribute");
        return Err(syn::Error::new_spanned(
            attr,
            "only one field can be #[metrics]: tracked methods record into exactly one",
        ));
    }
    for (_, field) in &marked {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("metrics")) {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new_spanned(
                    attr,
                    "#[metrics] takes no arguments: write #[metrics] on the field",
                ));
            }
        }
    }

    let (member, field) = match marked.first() {
        Some((member, field)) => (member.clone(), *field),
        None => {
            let candidates: Vec<_> = members
                .iter()
                .filter(|(_, f)| is_database_metrics(&f.ty))
                .collect();
            match candidates.as_slice() {
                [(member, field)] => (member.clone(), *field),
                [] => {
                    return Err(syn::Error::new(
                        input.ident.span(),
                        format!(
                            "`{}` has no metrics field: add a `DatabaseMetrics` field, or mark \
                             the field that holds the metrics with #[metrics]",
                            input.ident
                        ),
                    ));
                }
                [_, (_, second), ..] => {
                    return Err(syn::Error::new(
                        second.ty.span(),
                        "several fields are `DatabaseMetrics`: mark the one tracked methods \
                         record into with #[metrics]",
                    ));
                }
            }
        }
    };

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let ty = &field.ty;
    let default_table = args
        .table
        .as_ref()
        .map(|table| default_table_impl(input, table));
    let metrics_ty = quote_spanned! {ty.span()=> type Metrics = #ty; };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::dbmetrics::__private::TrackedRepository for #ident #ty_generics #where_clause {
            #metrics_ty
            #[inline]
            fn metrics(&self) -> &Self::Metrics {
                &self.#member
            }
        }
        #default_table
    })
}

fn is_database_metrics(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "DatabaseMetrics"),
        _ => false,
    }
}
