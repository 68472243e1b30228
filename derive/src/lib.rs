//! `#[derive(Trace)]` for `pymem::Gc`.
//!
//! Generates `unsafe impl pymem::Trace` that visits every field (except
//! those marked `#[trace(skip)]`) and sets `MAY_CONTAIN_GC` to the OR of
//! the fields' values, so a struct of atomic fields is untracked. A field
//! whose type mentions the type itself (`Box<Self>`, `Vec<Expr>`)
//! contributes what the rest of its type contributes (the least fixed
//! point), so recursive types derive without a const-evaluation cycle.
//! Type parameters used by traced fields get a `Trace + 'static` bound.
use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{
    parse_macro_input, parse_quote, Data, DeriveInput, Error, Field, Fields, Ident, Result, Type,
};

/// Derives `pymem::Trace`. See the `pymem` crate docs.
#[proc_macro_derive(Trace, attributes(trace))]
pub fn derive_trace(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn is_skipped(field: &Field) -> Result<bool> {
    let mut skip = false;
    for attr in &field.attrs {
        if !attr.path().is_ident("trace") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("pymem: expected `#[trace(skip)]`"))
            }
        })?;
    }
    Ok(skip)
}

/// Replaces `Self` and paths naming the type being derived by `()`.
struct Unself<'a> {
    name: &'a Ident,
}

impl VisitMut for Unself<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(tp) = ty {
            if tp.qself.is_none() {
                if let Some(last) = tp.path.segments.last() {
                    let own = last.ident == *self.name && tp.path.segments.len() == 1;
                    if own || tp.path.is_ident("Self") {
                        *ty = parse_quote!(());
                        return;
                    }
                }
            }
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

/// Collects which of the type parameters a type mentions.
struct Uses<'a> {
    params: &'a [Ident],
    used: Vec<bool>,
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if let Some(first) = p.segments.first() {
            if let Some(i) = self.params.iter().position(|x| *x == first.ident) {
                self.used[i] = true;
            }
        }
        syn::visit::visit_path(self, p);
    }
}

fn expand(input: DeriveInput) -> Result<TokenStream2> {
    let name = &input.ident;
    let params: Vec<Ident> = input
        .generics
        .type_params()
        .map(|t| t.ident.clone())
        .collect();
    let mut uses = Uses {
        params: &params,
        used: vec![false; params.len()],
    };
    let mut consts: Vec<TokenStream2> = Vec::new();
    let mut note_field = |f: &Field| -> Result<bool> {
        if is_skipped(f)? {
            return Ok(false);
        }
        uses.visit_type(&f.ty);
        let mut ty = f.ty.clone();
        Unself { name }.visit_type_mut(&mut ty);
        consts.push(quote!(<#ty as ::pymem::Trace>::MAY_CONTAIN_GC));
        Ok(true)
    };

    let body = match &input.data {
        Data::Struct(s) => {
            let (pat, calls) = fields_pattern(&s.fields, &mut note_field)?;
            quote!(let Self #pat = self; #(#calls)*)
        }
        Data::Enum(e) => {
            let mut arms = Vec::new();
            for v in &e.variants {
                let vname = &v.ident;
                let (pat, calls) = fields_pattern(&v.fields, &mut note_field)?;
                arms.push(quote!(Self::#vname #pat => { #(#calls)* }));
            }
            if arms.is_empty() {
                quote!(match *self {})
            } else {
                quote!(match self { #(#arms)* })
            }
        }
        Data::Union(u) => {
            return Err(Error::new_spanned(
                u.union_token,
                "pymem: #[derive(Trace)] does not support unions",
            ))
        }
    };

    let mut generics = input.generics.clone();
    {
        let wc = generics.make_where_clause();
        for (p, used) in params.iter().zip(&uses.used) {
            if *used {
                wc.predicates
                    .push(parse_quote!(#p: ::pymem::Trace + 'static));
            }
        }
    }
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    // SAFETY (of the generated impl): it visits every field that is not
    // `#[trace(skip)]`, each once, through the field type's own `Trace`.
    Ok(quote! {
        #[automatically_derived]
        #[allow(unused_variables, non_shorthand_field_patterns, clippy::needless_borrow)]
        unsafe impl #impl_g ::pymem::Trace for #name #ty_g #where_c {
            const MAY_CONTAIN_GC: bool = false #(|| #consts)*;
            #[inline]
            fn trace(&self, tracer: &mut ::pymem::Tracer) {
                if !<Self as ::pymem::Trace>::MAY_CONTAIN_GC {
                    return;
                }
                #body
            }
        }
    })
}

/// A pattern binding the traced fields, and the calls tracing them.
fn fields_pattern(
    fields: &Fields,
    note: &mut impl FnMut(&Field) -> Result<bool>,
) -> Result<(TokenStream2, Vec<TokenStream2>)> {
    let mut binds = Vec::new();
    let mut calls = Vec::new();
    match fields {
        Fields::Named(named) => {
            for (i, f) in named.named.iter().enumerate() {
                let id = f.ident.as_ref().expect("named field");
                if note(f)? {
                    let b = format_ident!("__pymem_{}", i);
                    binds.push(quote!(#id: #b));
                    calls.push(quote!(::pymem::Trace::trace(#b, tracer);));
                }
            }
            Ok((quote!({ #(#binds,)* .. }), calls))
        }
        Fields::Unnamed(unnamed) => {
            for (i, f) in unnamed.unnamed.iter().enumerate() {
                if note(f)? {
                    let b = Ident::new(&format!("__pymem_{i}"), Span::call_site());
                    binds.push(quote!(#b));
                    calls.push(quote!(::pymem::Trace::trace(#b, tracer);));
                } else {
                    binds.push(quote!(_));
                }
            }
            Ok((quote!(( #(#binds,)* )), calls))
        }
        Fields::Unit => Ok((quote!(), calls)),
    }
}
