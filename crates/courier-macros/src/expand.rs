//! Generate the trait, server stub, clients and descriptor from the model.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{Method, Output, Service, type_string};

pub(crate) fn expand(service: &Service) -> TokenStream {
    let wire_checks = wire_checks(service);
    let trait_def = expand_trait(service);
    // A client-streaming method's requests are its messages: no args struct.
    let args_structs =
        service.methods.iter().filter(|m| m.stream_in.is_none()).map(|m| args_struct(service, m));
    let server = expand_server(service);
    let client = expand_client(service);
    let blocking = expand_blocking_client(service);
    quote! {
        #wire_checks
        #trait_def
        #(#args_structs)*
        #server
        #client
        #blocking
    }
}

fn args_struct_ident(service: &Service, method: &Method) -> syn::Ident {
    format_ident!("__Courier{}{}Args", service.item.ident, method.wire_name)
}

/// The trait as users implement it: every method returns a `Send` future,
/// so the server can run handlers on any worker thread.
fn expand_trait(service: &Service) -> TokenStream {
    let item = &service.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let ident = &item.ident;
    let supertraits = &item.supertraits;
    let plus = if supertraits.is_empty() { quote!() } else { quote!(+) };
    let methods = service.methods.iter().map(|method| {
        let attrs = &method.attrs;
        let mut sig = method.sig.clone();
        sig.asyncness = None;
        let output = method.output.declared_type(&method.sig);
        sig.output = syn::parse_quote_spanned! {output.span()=>
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        match &method.default_body {
            Some(body) => quote! { #(#attrs)* #sig { async move #body } },
            None => quote! { #(#attrs)* #sig; },
        }
    });
    quote! {
        #(#attrs)*
        #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static #plus #supertraits {
            #(#methods)*
        }
    }
}

/// The arguments of one method as one serde struct: `{"a": 10, "b": 20}` in
/// JSON. A single argument is sent as itself (`#[serde(transparent)]`), as
/// Go's net/rpc sends its one argument, so JSON-RPC peers interoperate.
///
/// The struct is generic over its field types and instantiated with the
/// real ones at each use (see [`args_type`]). Why: serde's derive then
/// places its bounds on the impls instead of checking them inside its own
/// generated code, so a non-serde argument is reported once, by
/// [`wire_checks`], at the argument, instead of as a cascade of errors from
/// inside serde.
fn args_struct(service: &Service, method: &Method) -> TokenStream {
    let ident = args_struct_ident(service, method);
    let params: Vec<_> = (0..method.args.len()).map(|i| format_ident!("T{}", i)).collect();
    let fields = method.args.iter().zip(&params).map(|(arg, param)| {
        let name = &arg.ident;
        quote! { #name: #param }
    });
    let transparent = if method.args.len() == 1 { quote!(#[serde(transparent)]) } else { quote!() };
    let generics = if params.is_empty() { quote!() } else { quote!(<#(#params),*>) };
    quote! {
        #[derive(::courier::__private::serde::Serialize, ::courier::__private::serde::Deserialize)]
        #[serde(crate = "::courier::__private::serde")]
        #transparent
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        struct #ident #generics { #(#fields),* }
    }
}

/// The args struct instantiated with the method's argument types.
fn args_type(service: &Service, method: &Method) -> TokenStream {
    let ident = args_struct_ident(service, method);
    if method.args.is_empty() {
        return quote!(#ident);
    }
    let types = method.args.iter().map(|arg| &arg.ty);
    quote!(#ident<#(#types),*>)
}

/// Assert at each type's own span that it can cross the wire, so the error
/// points at the argument rather than into generated code.
fn wire_checks(service: &Service) -> TokenStream {
    let mut seen = std::collections::HashSet::new();
    let mut checks = Vec::new();
    for method in &service.methods {
        let mut types: Vec<&syn::Type> = match &method.stream_in {
            Some(inner) => vec![inner],
            None => method.args.iter().map(|arg| &arg.ty).collect(),
        };
        types.push(method.stream_out.as_ref().unwrap_or(method.output.ok_type()));
        if let Output::AppResult(_, err) = &method.output {
            types.push(err);
        }
        for ty in types {
            // One check per distinct type: the same error twice adds nothing.
            if seen.insert(type_string(ty)) {
                checks.push(quote_spanned! {ty.span()=> ::courier::__private::assert_wire::<#ty>(); });
            }
        }
        if let Output::AppResult(_, err) = &method.output {
            checks.push(quote_spanned! {err.span()=> ::courier::__private::assert_app_error::<#err>(); });
        }
    }
    quote! {
        const _: () = { #(#checks)* };
    }
}

fn descriptor(service: &Service) -> TokenStream {
    let name = &service.name;
    let version = match &service.version {
        Some(version) => quote!(#version),
        None => quote!(::core::env!("CARGO_PKG_VERSION")),
    };
    let docs = &service.docs;
    let methods = service.methods.iter().map(|method| {
        let wire = &method.wire_name;
        let full = format!("{}.{}", service.name, method.wire_name);
        let idempotent = method.idempotent;
        let one_way = method.one_way;
        let docs = &method.docs;
        let output = type_string(method.stream_out.as_ref().unwrap_or(method.output.ok_type()));
        let kind = match (method.stream_in.is_some(), method.stream_out.is_some()) {
            (false, false) => quote!(::courier::MethodKind::Unary),
            (false, true) => quote!(::courier::MethodKind::ServerStreaming),
            (true, false) => quote!(::courier::MethodKind::ClientStreaming),
            (true, true) => quote!(::courier::MethodKind::Bidirectional),
        };
        let error = match &method.output {
            Output::AppResult(_, err) => {
                let err = type_string(err);
                quote!(::core::option::Option::Some(#err))
            }
            Output::StatusResult(_) => quote!(::core::option::Option::Some("courier::Status")),
            Output::Plain(_) => quote!(::core::option::Option::None),
        };
        let args = method.args.iter().map(|arg| {
            let name = arg.ident.to_string();
            let name = name.trim_start_matches("r#");
            let ty = type_string(method.stream_in.as_ref().unwrap_or(&arg.ty));
            quote!(::courier::__private::ArgDescriptor { name: #name, ty: #ty })
        });
        quote! {
            ::courier::MethodDescriptor {
                name: #wire,
                full_name: #full,
                idempotent: #idempotent,
                one_way: #one_way,
                kind: #kind,
                args: &[#(#args),*],
                output: #output,
                error: #error,
                docs: #docs,
            }
        }
    });
    quote! {
        &::courier::ServiceDescriptor {
            name: #name,
            version: #version,
            docs: #docs,
            methods: &[#(#methods),*],
            schema: ::courier::Schema::Serde,
        }
    }
}

fn expand_server(service: &Service) -> TokenStream {
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let server = format_ident!("{}Server", trait_ident);
    let client = format_ident!("{}Client", trait_ident);
    let doc = format!(
        "Serves a [`{trait_ident}`] implementation; pass it to `courier::Server::builder().add_service(..)`."
    );
    let arms = service.methods.iter().enumerate().map(|(index, method)| {
        if method.stream_in.is_some() || method.stream_out.is_some() {
            return streaming_arm(service, index, method);
        }
        let args_ty = args_type(service, method);
        let full = format!("{}.{}", service.name, method.wire_name);
        let ident = &method.ident;
        let arg_names = method.args.iter().map(|arg| &arg.ident);
        let cx_arg = if method.takes_context { quote!(&cx,) } else { quote!() };
        let call = quote! { service.#ident(#cx_arg #(args.#arg_names),*).await };
        let finish = match &method.output {
            Output::Plain(_) => quote! {
                let output = #call;
                ::courier::__private::encode_result(codec, &output, #full)
            },
            Output::StatusResult(_) => quote! {
                let output = #call?;
                ::courier::__private::encode_result(codec, &output, #full)
            },
            Output::AppResult(..) => quote! {
                match #call {
                    ::core::result::Result::Ok(output) => ::courier::__private::encode_result(codec, &output, #full),
                    ::core::result::Result::Err(error) => ::core::result::Result::Err(
                        ::courier::__private::encode_app_error(codec, &error, #full),
                    ),
                }
            },
        };
        let decode = decode_args(service, method);
        quote! {
            #index => ::std::boxed::Box::pin(async move {
                let codec = cx.codec();
                let args: #args_ty = #decode;
                #finish
            }),
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<T> {
            service: ::std::sync::Arc<T>,
        }

        impl<T: #trait_ident> #server<T> {
            /// Serve `service`.
            pub fn new(service: T) -> Self {
                Self { service: ::std::sync::Arc::new(service) }
            }

            /// Serve a shared `service`.
            pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                Self { service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { service: ::std::sync::Arc::clone(&self.service) }
            }
        }

        impl<T: #trait_ident> ::courier::Service for #server<T> {
            fn descriptor(&self) -> &'static ::courier::ServiceDescriptor {
                #client::DESCRIPTOR
            }

            fn call(
                &self,
                method: usize,
                cx: ::courier::Context,
                body: ::courier::__private::Bytes,
            ) -> ::courier::__private::BoxFuture<'static, ::core::result::Result<::courier::__private::Bytes, ::courier::Status>> {
                let service = ::std::sync::Arc::clone(&self.service);
                match method {
                    #(#arms)*
                    _ => ::std::boxed::Box::pin(async move {
                        ::core::result::Result::Err(::courier::Status::unimplemented(
                            ::std::format!("method index {} is out of range", method),
                        ))
                    }),
                }
            }
        }
    }
}

/// A decoder of the method's arguments from `body`, in `cx`'s codec: a
/// single argument travels as itself; over JSON it may also come wrapped
/// in an object naming it, and a wrong shape is explained with its name
/// and type (`__private::decode_arg`).
fn decode_args(service: &Service, method: &Method) -> TokenStream {
    let full = format!("{}.{}", service.name, method.wire_name);
    match method.args.as_slice() {
        [arg] => {
            let name = arg.ident.to_string();
            let name = name.trim_start_matches("r#");
            let ty = type_string(&arg.ty);
            quote! {
                ::courier::__private::decode_arg(
                    &cx,
                    &body,
                    #full,
                    &::courier::__private::ArgDescriptor { name: #name, ty: #ty },
                )?
            }
        }
        _ => quote! { ::courier::__private::decode_args(&cx, &body, #full)? },
    }
}

/// The server arm of a streaming method: take the stream's halves from
/// the context, run the implementation, send what it answers. The future
/// resolves when the stream is over, with its status.
fn streaming_arm(service: &Service, index: usize, method: &Method) -> TokenStream {
    let full = format!("{}.{}", service.name, method.wire_name);
    let ident = &method.ident;
    let cx_arg = if method.takes_context { quote!(&cx,) } else { quote!() };
    let unwrap = match &method.output {
        Output::StatusResult(_) => quote!(?),
        _ => quote!(),
    };
    let body = match (&method.stream_in, &method.stream_out) {
        (None, Some(reply)) => {
            let args_ty = args_type(service, method);
            let decode = decode_args(service, method);
            let arg_names = method.args.iter().map(|arg| &arg.ident);
            quote! {
                let (body, sink) = ::courier::__private::single_request(&cx, #full).await?;
                let args: #args_ty = #decode;
                let replies = service.#ident(#cx_arg #(args.#arg_names),*).await #unwrap;
                sink.drive(codec, replies, ::courier::__private::encode_message_bytes::<#reply>).await
            }
        }
        (Some(request), Some(reply)) => quote! {
            let (requests, sink) = ::courier::__private::stream_requests(
                &cx, #full, ::courier::__private::decode_message::<#request>,
            )?;
            let replies = service.#ident(#cx_arg requests).await #unwrap;
            sink.drive(codec, replies, ::courier::__private::encode_message_bytes::<#reply>).await
        },
        (Some(request), None) => {
            let call = quote! { service.#ident(#cx_arg requests).await };
            let reply = match &method.output {
                Output::Plain(_) => quote! {
                    let output = #call;
                    ::courier::__private::encode_result(codec, &output, #full)?
                },
                Output::StatusResult(_) => quote! {
                    let output = #call?;
                    ::courier::__private::encode_result(codec, &output, #full)?
                },
                Output::AppResult(..) => quote! {
                    match #call {
                        ::core::result::Result::Ok(output) => ::courier::__private::encode_result(codec, &output, #full)?,
                        ::core::result::Result::Err(error) => return ::core::result::Result::Err(
                            ::courier::__private::encode_app_error(codec, &error, #full),
                        ),
                    }
                },
            };
            quote! {
                let (requests, sink) = ::courier::__private::stream_requests(
                    &cx, #full, ::courier::__private::decode_message::<#request>,
                )?;
                let reply = { #reply };
                sink.reply(reply).await
            }
        }
        (None, None) => unreachable!("a unary method has no streaming arm"),
    };
    quote! {
        #index => ::std::boxed::Box::pin(async move {
            let codec = cx.codec();
            let _ = &body;
            #body
        }),
    }
}

/// `(a: i64, b: i64)` parameters and the wire struct built from them.
fn client_params(method: &Method) -> (Vec<TokenStream>, Vec<&syn::Ident>) {
    let params = method
        .args
        .iter()
        .map(|arg| {
            let ident = &arg.ident;
            let ty = &arg.ty;
            quote!(#ident: #ty)
        })
        .collect();
    let names = method.args.iter().map(|arg| &arg.ident).collect();
    (params, names)
}

fn client_return(method: &Method) -> TokenStream {
    let ok = method.output.ok_type();
    quote!(::core::result::Result<#ok, ::courier::Status>)
}

fn expand_client(service: &Service) -> TokenStream {
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let descriptor = descriptor(service);
    let doc = format!(
        "Calls a remote [`{trait_ident}`]. Cheap to clone; clones share connections.\n\n\
         Each method returns `Err(courier::Status)` when the call fails; a service's own \
         error comes back inside the status (see `courier::Status::app_error`)."
    );
    let methods = service.methods.iter().map(|method| {
        if method.stream_in.is_some() || method.stream_out.is_some() {
            return streaming_client_method(service, method);
        }
        let ident = &method.ident;
        let spawn_ident = format_ident!("spawn_{}", ident.to_string().trim_start_matches("r#"));
        let full = format!("{}.{}", service.name, method.wire_name);
        let args_ty = args_struct_ident(service, method);
        let (params, names) = client_params(method);
        let ret = client_return(method);
        let ok = method.output.ok_type();
        let docs = method.attrs.iter().filter(|attr| attr.path().is_ident("doc"));
        // Idempotent methods may be retried on another instance when their
        // connection is lost mid-call.
        let idempotent = method.idempotent;
        let body = if method.one_way {
            quote! { self.stub.one_way(#full, &args).await }
        } else {
            match &method.output {
                Output::AppResult(_, err) => quote! {
                    self.stub.unary_with_app_error::<_, #ok, #err>(#full, &args, #idempotent).await
                },
                _ => quote! { self.stub.unary::<_, #ok>(#full, &args, #idempotent).await },
            }
        };
        let spawn_doc = format!("Start [`{client}::{ident}`] now and collect the result later by awaiting the handle. Must be called inside a tokio runtime.");
        quote! {
            #(#docs)*
            pub async fn #ident(&self, #(#params),*) -> #ret {
                let args = #args_ty { #(#names),* };
                #body
            }

            #[doc = #spawn_doc]
            pub fn #spawn_ident(&self, #(#params),*) -> ::courier::CallHandle<#ok> {
                let client = ::core::clone::Clone::clone(self);
                ::courier::CallHandle::spawn(async move { client.#ident(#(#names),*).await })
            }
        }
    });
    quote! {
        ::courier::__client_surface! {
            #[doc = #doc]
            #vis struct #client;
            options = ::courier::CallOptions::new();
        }

        impl #client {
            /// The service's name, version and methods.
            pub const DESCRIPTOR: &'static ::courier::ServiceDescriptor = #descriptor;

            #(#methods)*
        }
    }
}

/// A client method of a streaming method: replies come back as a
/// `courier::Streaming<T>`, requests are given as any `Stream`.
fn streaming_client_method(service: &Service, method: &Method) -> TokenStream {
    let ident = &method.ident;
    let full = format!("{}.{}", service.name, method.wire_name);
    let docs = method.attrs.iter().filter(|attr| attr.path().is_ident("doc"));
    let ok = method.output.ok_type();
    match (&method.stream_in, &method.stream_out) {
        (None, Some(reply)) => {
            let args_ty = args_struct_ident(service, method);
            let (params, names) = client_params(method);
            let args_full = args_type(service, method);
            quote! {
                #(#docs)*
                pub async fn #ident(&self, #(#params),*)
                    -> ::core::result::Result<::courier::Streaming<#reply>, ::courier::Status>
                {
                    let args = #args_ty { #(#names),* };
                    self.stub.server_streaming(
                        #full,
                        &args,
                        ::courier::__private::encode_message::<#args_full>,
                        ::courier::__private::decode_message::<#reply>,
                    ).await
                }
            }
        }
        (Some(request), Some(reply)) => {
            let param = method.args.first().map(|arg| &arg.ident);
            quote! {
                #(#docs)*
                pub async fn #ident(
                    &self,
                    #param: impl ::courier::stream::Stream<Item = #request> + ::core::marker::Send + 'static,
                ) -> ::core::result::Result<::courier::Streaming<#reply>, ::courier::Status> {
                    self.stub.bidirectional(
                        #full,
                        #param,
                        ::courier::__private::encode_message::<#request>,
                        ::courier::__private::decode_message::<#reply>,
                    ).await
                }
            }
        }
        (Some(request), None) => {
            let param = method.args.first().map(|arg| &arg.ident);
            let call = quote! {
                self.stub.client_streaming(
                    #full,
                    #param,
                    ::courier::__private::encode_message::<#request>,
                    ::courier::__private::decode_message::<#ok>,
                ).await
            };
            let call = match &method.output {
                Output::AppResult(_, err) => quote! {
                    #call.map_err(|status| ::courier::__private::decode_app_error::<#err>(self.stub.codec(), status))
                },
                _ => call,
            };
            quote! {
                #(#docs)*
                pub async fn #ident(
                    &self,
                    #param: impl ::courier::stream::Stream<Item = #request> + ::core::marker::Send + 'static,
                ) -> ::core::result::Result<#ok, ::courier::Status> {
                    #call
                }
            }
        }
        (None, None) => quote!(),
    }
}

fn expand_blocking_client(service: &Service) -> TokenStream {
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let blocking = format_ident!("{}BlockingClient", trait_ident);
    let doc = format!(
        "Calls a remote [`{trait_ident}`] from synchronous code: each call blocks until its \
         reply arrives. Owns a small runtime; needs none from the caller. Streaming methods \
         are on the async client only (`as_async()`)."
    );
    let methods =
        service.methods.iter().filter(|m| m.stream_in.is_none() && m.stream_out.is_none()).map(|method| {
            let ident = &method.ident;
            let (params, names) = client_params(method);
            let ret = client_return(method);
            let docs = method.attrs.iter().filter(|attr| attr.path().is_ident("doc"));
            quote! {
                #(#docs)*
                pub fn #ident(&self, #(#params),*) -> #ret {
                    let client = ::core::clone::Clone::clone(self.as_async());
                    self.block_on(async move { client.#ident(#(#names),*).await })
                }
            }
        });
    quote! {
        ::courier::__blocking_client_surface! {
            #[doc = #doc]
            #vis struct #blocking over #client;
        }

        impl #blocking {
            #(#methods)*
        }
    }
}
