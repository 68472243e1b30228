//! `#[derive(Trace)]` for `pymem::Gc`.
//!
//! Generates an `unsafe impl pymem::Trace` that visits every field (except
//! those marked `#[trace(skip)]`) and answers `may_contain_gc` with the OR
//! of the fields' answers, so a struct of atomic fields is untracked.
//!
//! The answer is a pure function of the field types, computed through
//! `__may_contain_gc_within::<D>()`, where `D` is a type-level budget of
//! indirections that containers spend (see `pymem::Trace`): mutually
//! recursive types (`Expr` holding a `Vec<Stmt>`, `Stmt` a `Box<Expr>`)
//! compile and are tracked when in doubt. A field that reaches the type
//! itself, with the same generic arguments, through std wrappers only
//! (`Box<Self>`, `Vec<Option<Box<Node<T>>>>` in `Node<T>`) counts as
//! adding nothing (the least fixed point); `Node<Gc<X>>` inside `Node<T>`
//! is a different type and counts in full.
//!
//! Type parameters used by traced fields get a `Trace + 'static` bound,
//! lifetime parameters a `'static` one.
use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    parse_macro_input, parse_quote, Data, DeriveInput, Error, Field, Fields, GenericArgument,
    GenericParam, Ident, PathArguments, Result, Type,
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

/// std wrappers whose `Trace` impls ask their type arguments and nothing
/// else (no extra bounds), so that a self-reference inside them can be
/// replaced by `SelfReference` without changing anything but the answer
/// for the type itself.
const TRANSPARENT: &[&str] = &[
    "Box",
    "Vec",
    "VecDeque",
    "LinkedList",
    "BinaryHeap",
    "BTreeSet",
    "HashSet",
    "BTreeMap",
    "HashMap",
    "Option",
    "Result",
    "Cell",
    "RefCell",
    "Mutex",
    "RwLock",
    "OnceCell",
    "Reverse",
];

/// Replaces the type's references to itself (`Self`, or its own name with
/// exactly its own generic arguments) by `::pymem::__private::SelfReference`
/// where they are reached through [`TRANSPARENT`] wrappers, tuples, arrays
/// and slices only; anything else is left as written.
struct SelfRefs<'a> {
    name: &'a Ident,
    /// The type's own generic arguments, as written in `Name<...>`.
    own_args: Vec<String>,
    /// A type parameter shares the type's name: no rewriting.
    disabled: bool,
}

impl SelfRefs<'_> {
    fn is_self(&self, ty: &Type) -> bool {
        let Type::Path(tp) = ty else { return false };
        if tp.qself.is_some() || tp.path.leading_colon.is_some() || tp.path.segments.len() != 1 {
            return false;
        }
        let seg = &tp.path.segments[0];
        if seg.ident == "Self" {
            return seg.arguments.is_empty();
        }
        if seg.ident != *self.name {
            return false;
        }
        let args: Vec<String> = match &seg.arguments {
            PathArguments::None => Vec::new(),
            PathArguments::AngleBracketed(a) => {
                a.args.iter().map(|g| quote!(#g).to_string()).collect()
            }
            PathArguments::Parenthesized(_) => return false,
        };
        args == self.own_args
    }

    /// Rewrites `ty` in place; returns whether it contained a rewritten
    /// self-reference.
    fn rewrite(&self, ty: &mut Type) -> bool {
        if self.is_self(ty) {
            *ty = parse_quote!(::pymem::__private::SelfReference);
            return true;
        }
        match ty {
            Type::Paren(p) => self.rewrite(&mut p.elem),
            Type::Group(g) => self.rewrite(&mut g.elem),
            Type::Tuple(t) => t.elems.iter_mut().fold(false, |a, e| self.rewrite(e) | a),
            Type::Array(a) => self.rewrite(&mut a.elem),
            Type::Slice(s) => self.rewrite(&mut s.elem),
            Type::Path(tp) if tp.qself.is_none() => {
                let Some(last) = tp.path.segments.last_mut() else {
                    return false;
                };
                if !TRANSPARENT.iter().any(|w| last.ident == w) {
                    return false;
                }
                let PathArguments::AngleBracketed(args) = &mut last.arguments else {
                    return false;
                };
                let mut any = false;
                for arg in args.args.iter_mut() {
                    if let GenericArgument::Type(t) = arg {
                        any |= self.rewrite(t);
                    }
                }
                any
            }
            _ => false,
        }
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
    let self_refs = SelfRefs {
        name,
        own_args: input
            .generics
            .params
            .iter()
            .map(|p| match p {
                GenericParam::Type(t) => t.ident.to_string(),
                GenericParam::Lifetime(l) => quote!(#l).to_string(),
                GenericParam::Const(c) => c.ident.to_string(),
            })
            .collect(),
        disabled: params.iter().any(|p| p == name),
    };
    let mut uses = Uses {
        params: &params,
        used: vec![false; params.len()],
    };
    let mut answers: Vec<TokenStream2> = Vec::new();
    // Whether every traced field is flat (see `is_flat`), and how many.
    let (mut all_flat, mut traced) = (true, 0usize);
    let mut note_field = |f: &Field| -> Result<bool> {
        if is_skipped(f)? {
            return Ok(false);
        }
        all_flat &= is_flat(&f.ty);
        traced += 1;
        uses.visit_type(&f.ty);
        let mut ty = f.ty.clone();
        if !self_refs.disabled {
            self_refs.rewrite(&mut ty);
        }
        // Spanned at the field, so that a missing `Trace` is reported there.
        answers.push(quote_spanned!(f.ty.span()=>
            <#ty as ::pymem::Trace>::__may_contain_gc_within::<__PymemBudget>()
        ));
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

    // Inlined everywhere only when that cannot multiply: see `is_flat`.
    let inline = if all_flat && traced <= MAX_FLAT_FIELDS {
        quote!(#[inline(always)])
    } else {
        quote!(#[inline])
    };

    let mut generics = input.generics.clone();
    let lifetimes: Vec<syn::Lifetime> = input
        .generics
        .lifetimes()
        .map(|l| l.lifetime.clone())
        .collect();
    {
        let wc = generics.make_where_clause();
        for (p, used) in params.iter().zip(&uses.used) {
            if *used {
                wc.predicates
                    .push(parse_quote!(#p: ::pymem::Trace + 'static));
            }
        }
        // A `Gc` holds only `'static` values: `Token<'a>` is `Trace` for
        // `'a = 'static`, and borrowing a local is reported where the value
        // is put in a `Gc`.
        for l in &lifetimes {
            wc.predicates.push(parse_quote!(#l: 'static));
        }
    }
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    // SAFETY (of the generated impl, see `pymem::Trace`'s contract): it
    // visits every field that is not `#[trace(skip)]`, each once, through
    // the field type's own `Trace`; `may_contain_gc` is an OR of the field
    // types' answers, a constant.
    Ok(quote! {
        #[automatically_derived]
        #[allow(unused_variables, non_shorthand_field_patterns, clippy::needless_borrow)]
        unsafe impl #impl_g ::pymem::Trace for #name #ty_g #where_c {
            #inline
            fn trace(&self, tracer: &mut ::pymem::Tracer) {
                if !<Self as ::pymem::Trace>::may_contain_gc() {
                    return;
                }
                #body
            }
            #[inline(always)]
            fn may_contain_gc() -> bool {
                <Self as ::pymem::Trace>::__may_contain_gc_within::<::pymem::__private::DefaultDepth>()
            }
            #[inline(always)]
            fn __may_contain_gc_within<__PymemBudget: ::pymem::__private::Depth>() -> bool {
                false #(|| #answers)*
            }
        }
    })
}

/// The most traced fields a derived `trace` may have and still be
/// inlined everywhere (see [`is_flat`]).
const MAX_FLAT_FIELDS: usize = 16;

/// Names whose `Trace` impls trace their type arguments' values and
/// nothing else, and the types with no `Gc` inside: a field made only of
/// these (and of `Gc`/`Weak`, whose `trace` reports one edge and never
/// looks at the value) has a `trace` of a few instructions per edge that
/// calls no derived `trace`.
const FLAT_NAMES: &[&str] = &[
    "Option",
    "RefCell",
    "Cell",
    "Vec",
    "VecDeque",
    "Box",
    "String",
    "PhantomData",
    "bool",
    "char",
    "str",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
    "isize",
    "f32",
    "f64",
];

/// Whether a field of type `ty` is *flat*: built only of [`FLAT_NAMES`]
/// and handles (`Gc<..>`, `Weak<..>`, whatever they point to), so that its
/// `trace` calls no other derived `trace`.
///
/// The collector traces each object through one copy of its type's
/// `trace` per collector mode, with the mode a constant
/// (`pymem`'s `Tracer::trace_in`), which pays only when the body is
/// inlined into each copy: `#[inline(always)]`. That is safe for a type
/// whose fields are flat (its size is a few instructions per field). A
/// type holding another derived type by value is not given it: forcing
/// the inlining through every level would copy a tree of nested types
/// into each entry, exponentially in its depth (two fields of the level
/// below per level, 12 levels: 338 s to compile instead of half a
/// second), so there LLVM decides.
fn is_flat(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let Some(seg) = p.path.segments.last() else {
                return false;
            };
            if seg.ident == "Gc" || seg.ident == "Weak" {
                return true;
            }
            if !FLAT_NAMES.iter().any(|n| seg.ident == n) {
                return false;
            }
            match &seg.arguments {
                PathArguments::None => true,
                PathArguments::AngleBracketed(args) => args.args.iter().all(|a| match a {
                    GenericArgument::Type(t) => is_flat(t),
                    GenericArgument::Lifetime(_) | GenericArgument::Const(_) => true,
                    _ => false,
                }),
                PathArguments::Parenthesized(_) => false,
            }
        }
        Type::Tuple(t) => t.elems.iter().all(is_flat),
        Type::Array(a) => is_flat(&a.elem),
        Type::Slice(s) => is_flat(&s.elem),
        Type::Reference(r) => is_flat(&r.elem),
        Type::Paren(p) => is_flat(&p.elem),
        Type::Group(g) => is_flat(&g.elem),
        _ => false,
    }
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
                    calls.push(trace_call(&b, f));
                }
            }
            Ok((quote!({ #(#binds,)* .. }), calls))
        }
        Fields::Unnamed(unnamed) => {
            for (i, f) in unnamed.unnamed.iter().enumerate() {
                if note(f)? {
                    let b = Ident::new(&format!("__pymem_{i}"), Span::call_site());
                    binds.push(quote!(#b));
                    calls.push(trace_call(&b, f));
                } else {
                    binds.push(quote!(_));
                }
            }
            Ok((quote!(( #(#binds,)* )), calls))
        }
        Fields::Unit => Ok((quote!(), calls)),
    }
}

/// `Trace::trace(binding, tracer)`, spanned at the field's type.
fn trace_call(binding: &Ident, f: &Field) -> TokenStream2 {
    let ty = &f.ty;
    quote_spanned!(f.ty.span()=> <#ty as ::pymem::Trace>::trace(#binding, tracer);)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attribute the derive puts on `trace` for `input`.
    fn trace_inline(input: DeriveInput) -> String {
        let out = expand(input).unwrap().to_string();
        let at = out.find("fn trace").unwrap();
        let attr = out[..at].rfind("# [inline").unwrap();
        out[attr..at].trim().to_string()
    }

    #[test]
    fn flat_types_are_inlined_everywhere() {
        let node: DeriveInput = parse_quote! {
            struct DNode {
                next: RefCell<Option<Gc<DNode>>>,
                prev: std::cell::RefCell<Option<pymem::Weak<DNode>>>,
                items: Vec<(u32, Gc<Other>)>,
                name: String,
            }
        };
        assert_eq!(trace_inline(node), "# [inline (always)]");
        let tree: DeriveInput = parse_quote! {
            enum TreeNode { Nested { left: Gc<TreeNode>, right: Gc<TreeNode> }, End }
        };
        assert_eq!(trace_inline(tree), "# [inline (always)]");
    }

    #[test]
    fn nested_types_leave_inlining_to_llvm() {
        // Two of the level below by value: forcing the inlining through
        // every level grows exponentially with the depth.
        let level: DeriveInput = parse_quote! { struct T3 { a: T2, b: T2 } };
        assert_eq!(trace_inline(level), "# [inline]");
        let boxed: DeriveInput = parse_quote! { struct L { next: Option<Box<L>>, v: Gc<u8> } };
        assert_eq!(trace_inline(boxed), "# [inline]");
        let generic: DeriveInput = parse_quote! { struct W<T> { t: T } };
        assert_eq!(trace_inline(generic), "# [inline]");
        let wide: DeriveInput = syn::parse_str(&format!(
            "struct Wide {{ {} }}",
            (0..=MAX_FLAT_FIELDS)
                .map(|i| format!("f{i}: Option<Gc<u8>>,"))
                .collect::<String>()
        ))
        .unwrap();
        assert_eq!(trace_inline(wide), "# [inline]");
    }
}
