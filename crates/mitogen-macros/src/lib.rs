//! Procedural macros of [mitogen](https://docs.rs/mitogen): `#[remote]`
//! exposes a function to parent contexts, `#[main]` makes `main` the entry
//! point of both the master and its children, `#[with_router]` runs a
//! function with a router of its own, `#[service]` exposes methods of a
//! service.
//!
//! Use them through the `mitogen` crate (`#[mitogen::remote]`,
//! `#[mitogen::main]`), whose documentation describes them.

#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{parse_macro_input, spanned::Spanned, FnArg, ItemFn, ReturnType, Type};

mod service;

/// Exposes the `#[expose]` methods of a service's impl block. See
/// `mitogen::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let block = parse_macro_input!(item as syn::ItemImpl);
    match service::expand(attr.into(), block) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Exposes a free function to parent contexts. See `mitogen::remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let concurrent = match remote_args(attr.into()) {
        Ok(c) => c,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = parse_macro_input!(item as ItemFn);
    match expand_remote(&f, concurrent) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Parses the arguments of `#[remote(...)]`: nothing, or `concurrent`.
/// Returns whether the function runs on the child's worker pool.
fn remote_args(attr: TokenStream2) -> syn::Result<bool> {
    use syn::parse::Parser;
    let args =
        syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated.parse2(attr)?;
    let mut concurrent = false;
    for arg in &args {
        match arg {
            syn::Meta::Path(p) if p.is_ident("concurrent") => {
                if concurrent {
                    return Err(syn::Error::new(p.span(), "`concurrent` given twice"));
                }
                concurrent = true;
            }
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "unknown argument to #[mitogen::remote]: the only one is `concurrent` \
                     (run on the child's worker pool instead of its main thread)",
                ))
            }
        }
    }
    Ok(concurrent)
}

/// What an injected parameter receives.
enum Injected {
    Router,
    Econtext,
    /// Service methods only: who called.
    Caller,
}

/// `&Router` / `&ExternalContext` (any path ending so) are injected, and
/// for service methods `&Caller`.
fn injected(ty: &Type, service: bool) -> Option<Injected> {
    let Type::Reference(r) = ty else { return None };
    let Type::Path(p) = &*r.elem else { return None };
    let last = p.path.segments.last()?.ident.to_string();
    match last.as_str() {
        "Router" => Some(Injected::Router),
        "ExternalContext" => Some(Injected::Econtext),
        "Caller" if service => Some(Injected::Caller),
        _ => None,
    }
}

/// The parameters of a remote function or service method, split into
/// what is sent (types, and the names bound when decoding) and what the
/// call passes (sent values and injected ones; `env` is the expression
/// of the `CallEnv`).
struct Params {
    sent_types: Vec<TokenStream2>,
    sent_names: Vec<syn::Ident>,
    call_args: Vec<TokenStream2>,
}

fn params<'a>(
    inputs: impl Iterator<Item = &'a syn::PatType>,
    env: TokenStream2,
    service: bool,
) -> Params {
    let mut p = Params {
        sent_types: Vec::new(),
        sent_names: Vec::new(),
        call_args: Vec::new(),
    };
    for (i, pt) in inputs.enumerate() {
        match injected(&pt.ty, service) {
            Some(Injected::Router) => p.call_args.push(quote!(#env.router)),
            Some(Injected::Econtext) => p.call_args.push(quote!(#env.econtext)),
            Some(Injected::Caller) => p.call_args.push(quote!(__env.caller)),
            None => {
                let v = format_ident!("__a{}", i);
                let ty = &pt.ty;
                p.sent_types.push(quote!(#ty));
                p.sent_names.push(v.clone());
                p.call_args.push(quote!(#v));
            }
        }
    }
    p
}

/// The output type sent to the caller, and the statement turning the
/// function's value `__r` into `__out` (a `Result` is split).
fn output(ret: &ReturnType) -> (TokenStream2, TokenStream2) {
    match ret {
        ReturnType::Default => (quote!(()), quote!(let __out = ();)),
        ReturnType::Type(_, ty) if returns_result(ty) => (
            quote!(<#ty as ::mitogen::__private::IntoRemoteResult>::Ok),
            quote!(let __out = ::mitogen::__private::IntoRemoteResult::into_remote(__r)?;),
        ),
        ReturnType::Type(_, ty) => (quote!(#ty), quote!(let __out = __r;)),
    }
}

/// `true` when the return type is spelled `...Result<..>`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn expand_remote(f: &ItemFn, concurrent: bool) -> syn::Result<TokenStream2> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "remote functions cannot be generic",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "remote functions cannot be async",
        ));
    }
    let name = &sig.ident;
    let vis = &f.vis;
    let mut typed = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Typed(pt) => typed.push(pt),
            FnArg::Receiver(_) => {
                return Err(syn::Error::new(
                    arg.span(),
                    "remote functions cannot take self",
                ))
            }
        }
    }
    let Params {
        sent_types,
        sent_names,
        call_args,
    } = params(typed.into_iter(), quote!(__env), false);
    let (output, convert) = output(&sig.output);
    let doc = format!(
        "Remote-call marker of [`fn@{name}`]: `ctx.call::<{name}>(args)` runs it in `ctx`."
    );
    let name_str = name.to_string();
    Ok(quote! {
        #f

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        impl ::mitogen::RemoteFn for #name {
            type Args = (#(#sent_types,)*);
            type Output = #output;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name_str);
        }

        const _: () = {
            #[::mitogen::__private::linkme::distributed_slice(::mitogen::__private::REMOTE_FNS)]
            #[linkme(crate = ::mitogen::__private::linkme)]
            static __ENTRY: ::mitogen::__private::Entry = ::mitogen::__private::Entry {
                name: ::core::concat!(::core::module_path!(), "::", #name_str),
                invoke: __invoke,
                concurrent: #concurrent,
            };

            fn __invoke(
                __env: &::mitogen::__private::CallEnv<'_>,
                __payload: ::std::vec::Vec<u8>,
                __at: usize,
            ) -> ::core::result::Result<
                ::std::boxed::Box<dyn ::mitogen::__private::Output>,
                ::mitogen::CallError,
            > {
                let (#(#sent_names,)*): (#(#sent_types,)*) = ::mitogen::__private::decode_args_owned(
                    <#name as ::mitogen::RemoteFn>::NAME,
                    __payload,
                    __at,
                )?;
                let __r = #name(#(#call_args),*);
                #convert
                ::core::result::Result::Ok(::std::boxed::Box::new(::mitogen::__private::OutputOf(__out)))
            }
        };
    })
}

/// Makes `main` the entry point of the master and of every child context.
/// See `mitogen::main`.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let e = syn::Error::new(Span::call_site(), "#[mitogen::main] takes no arguments");
        return e.to_compile_error().into();
    }
    let f = parse_macro_input!(item as ItemFn);
    let attrs = &f.attrs;
    let vis = &f.vis;
    let name = &f.sig.ident;
    let body = &f.block;
    let output = &f.sig.output;
    let ret = match output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let param = match f.sig.inputs.len() {
        0 => quote!(_),
        1 => match &f.sig.inputs[0] {
            FnArg::Typed(pt) => {
                let pat = &pt.pat;
                let ty = &pt.ty;
                quote!(#pat: #ty)
            }
            other => {
                return syn::Error::new(other.span(), "main cannot take self")
                    .to_compile_error()
                    .into()
            }
        },
        _ => {
            return syn::Error::new(
                f.sig.inputs.span(),
                "#[mitogen::main] fn takes at most one parameter: the Router",
            )
            .to_compile_error()
            .into()
        }
    };
    quote! {
        #(#attrs)*
        #vis fn #name() #output {
            ::mitogen::main(move |#param| -> #ret #body)
        }
    }
    .into()
}

/// Runs a function with a fresh router that is shut down when it returns.
/// See `mitogen::with_router`.
#[proc_macro_attribute]
pub fn with_router(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let e = syn::Error::new(
            Span::call_site(),
            "#[mitogen::with_router] takes no arguments",
        );
        return e.to_compile_error().into();
    }
    let f = parse_macro_input!(item as ItemFn);
    let mut sig = f.sig.clone();
    let first =
        match sig.inputs.first() {
            Some(FnArg::Typed(pt)) => pt.clone(),
            _ => return syn::Error::new(
                f.sig.span(),
                "#[mitogen::with_router] needs a first parameter `router: &Router` (or `Router`)",
            )
            .to_compile_error()
            .into(),
        };
    sig.inputs = sig.inputs.into_iter().skip(1).collect();
    let pat = &first.pat;
    let ty = &first.ty;
    let bind = match &**ty {
        Type::Reference(_) => quote!(let #pat: #ty = &__mitogen_router;),
        _ => quote!(let #pat: #ty = __mitogen_router;),
    };
    let ret = match &f.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let attrs = &f.attrs;
    let vis = &f.vis;
    let body = &f.block;
    quote! {
        #(#attrs)*
        #vis #sig {
            match ::mitogen::run_with_router(move |__mitogen_router: ::mitogen::Router| -> #ret {
                #bind
                #body
            }) {
                ::core::result::Result::Ok(r) => r,
                ::core::result::Result::Err(e) => {
                    ::core::panic!("mitogen: cannot start a router: {}", e)
                }
            }
        }
    }
    .into()
}
