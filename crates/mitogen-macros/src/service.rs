//! `#[service]` on an `impl` block: registers each `#[expose]`d method in
//! the link-time registry of service methods and makes a marker type for
//! it, in a module named after the service type in snake case.

use crate::{output, params, Params};
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{spanned::Spanned, FnArg, ImplItem, ItemImpl, Type, Visibility};

/// How visible the marker module is, and its markers inside it.
fn visibility(attr: TokenStream2) -> syn::Result<(TokenStream2, TokenStream2)> {
    let vis: Visibility = syn::parse2(attr)?;
    match &vis {
        Visibility::Inherited => Ok((quote!(), quote!(pub(super)))),
        Visibility::Public(_) => Ok((quote!(pub), quote!(pub))),
        Visibility::Restricted(r) if r.path.is_ident("crate") && r.in_token.is_none() => {
            Ok((quote!(pub(crate)), quote!(pub(crate))))
        }
        other => Err(syn::Error::new(
            other.span(),
            "#[mitogen::service] takes nothing, `pub` or `pub(crate)`: how visible the markers of its methods are",
        )),
    }
}

/// `FileService` → `file_service`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `#[expose]` → `Some(false)`, `#[expose(policy = any)]` → `Some(true)`,
/// `#[expose(policy = parents)]` → `Some(false)`, no `expose` → `None`.
fn exposed(attrs: &[syn::Attribute]) -> syn::Result<Option<bool>> {
    let mut found = None;
    for a in attrs.iter().filter(|a| a.path().is_ident("expose")) {
        if found.is_some() {
            return Err(syn::Error::new(a.span(), "`#[expose]` given twice"));
        }
        let mut any = false;
        if let syn::Meta::List(_) = &a.meta {
            a.parse_nested_meta(|m| {
                if !m.path.is_ident("policy") {
                    return Err(
                        m.error("the only argument of #[expose] is `policy = parents | any`")
                    );
                }
                let v: syn::Ident = m.value()?.parse()?;
                any = match v.to_string().as_str() {
                    "any" => true,
                    "parents" => false,
                    _ => {
                        return Err(syn::Error::new(
                            v.span(),
                            "policy is `parents` (the default) or `any`",
                        ))
                    }
                };
                Ok(())
            })?;
        }
        found = Some(any);
    }
    Ok(found)
}

pub(crate) fn expand(attr: TokenStream2, mut block: ItemImpl) -> syn::Result<TokenStream2> {
    let (mod_vis, marker_vis) = visibility(attr)?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[mitogen::service] goes on the type's own impl block, not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new(
            block.generics.span(),
            "a service type cannot be generic",
        ));
    }
    let self_ty = (*block.self_ty).clone();
    let Type::Path(tp) = &self_ty else {
        return Err(syn::Error::new(self_ty.span(), "expected a type name"));
    };
    let type_name = match tp.path.segments.last() {
        Some(s) => s.ident.to_string(),
        None => return Err(syn::Error::new(self_ty.span(), "expected a type name")),
    };
    let module = format_ident!("{}", snake_case(&type_name));
    let mut markers = Vec::new();
    let mut glue = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(any) = exposed(&f.attrs)? else {
            continue;
        };
        f.attrs.retain(|a| !a.path().is_ident("expose"));
        let sig = &f.sig;
        if !sig.generics.params.is_empty() {
            return Err(syn::Error::new(
                sig.generics.span(),
                "exposed methods cannot be generic",
            ));
        }
        if let Some(a) = &sig.asyncness {
            return Err(syn::Error::new(a.span(), "exposed methods cannot be async"));
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            other => {
                let span = other.map_or(sig.span(), |o| o.span());
                return Err(syn::Error::new(
                    span,
                    "an exposed method takes `&self`: calls run concurrently, so state lives behind locks",
                ));
            }
        }
        let mut typed = Vec::new();
        for arg in inputs {
            if let FnArg::Typed(pt) = arg {
                typed.push(pt);
            }
        }
        let Params {
            sent_types,
            sent_names,
            call_args,
        } = params(typed.into_iter(), quote!(__env.call), true);
        let (out_ty, convert) = output(&sig.output);
        let method = &sig.ident;
        let method_str = method.to_string();
        let allow = if any { quote!(Any) } else { quote!(Parents) };
        let doc = format!(
            "Service-call marker of `{type_name}::{method_str}`: \
             `ctx.call_service::<{module}::{method_str}>(args)` runs it in `ctx`."
        );
        markers.push(quote! {
            #[doc = #doc]
            #[allow(non_camel_case_types)]
            #marker_vis struct #method {}
        });
        glue.push(quote! {
            impl ::mitogen::service::ServiceMethod for #module::#method {
                type Service = #self_ty;
                type Args = (#(#sent_types,)*);
                type Output = #out_ty;
                const METHOD: &'static str = #method_str;
            }

            const _: () = {
                #[::mitogen::__private::linkme::distributed_slice(::mitogen::__private::SERVICE_METHODS)]
                #[linkme(crate = ::mitogen::__private::linkme)]
                static __ENTRY: ::mitogen::__private::MethodEntry = ::mitogen::__private::MethodEntry {
                    service: <#self_ty as ::mitogen::service::Service>::NAME,
                    method: #method_str,
                    allow: ::mitogen::service::Allow::#allow,
                    activate: ::mitogen::__private::activate::<#self_ty>,
                    invoke: __invoke,
                };

                fn __invoke(
                    __inst: &::mitogen::__private::Instance,
                    __env: &::mitogen::__private::ServiceEnv<'_>,
                    __bytes: &[u8],
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::mitogen::CallError> {
                    let __svc = ::mitogen::__private::instance::<#self_ty>(__inst)?;
                    let (#(#sent_names,)*): (#(#sent_types,)*) =
                        ::mitogen::__private::decode_args(#method_str, __bytes)?;
                    let __r = __svc.#method(#(#call_args),*);
                    #convert
                    ::mitogen::__private::encode_output(&__out)
                }
            };
        });
    }
    if markers.is_empty() {
        return Err(syn::Error::new(
            block.self_ty.span(),
            "no method is marked #[expose]: nothing to serve",
        ));
    }
    let mod_doc =
        format!("Markers of the exposed methods of `{type_name}`, for `Context::call_service`.");
    Ok(quote! {
        #block

        #[doc = #mod_doc]
        #mod_vis mod #module {
            #(#markers)*
        }

        #(#glue)*
    })
}
