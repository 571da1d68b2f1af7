//! The courier code for one `.proto` service: the trait to implement, the
//! server stub, the async and blocking clients, and the descriptor. It
//! mirrors what `#[courier::service]` generates for a Rust trait, with one
//! request message in and one reply message out per method, and a
//! `&courier::Context` for every handler.

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_build::{Method, Service, ServiceGenerator};
use prost_types::method_options::IdempotencyLevel;

/// prost-build's hook: called once per `service`.
pub(crate) struct Courier {
    descriptor_path: PathBuf,
}

impl Courier {
    pub(crate) fn new(descriptor_path: PathBuf) -> Courier {
        Courier { descriptor_path }
    }
}

impl ServiceGenerator for Courier {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let methods: Vec<&Method> = service
            .methods
            .iter()
            .filter(|method| {
                let streaming = method.client_streaming || method.server_streaming;
                if streaming {
                    println!(
                        "cargo:warning=courier-build: skipping {}.{}.{}: courier calls are unary, streaming methods are not generated",
                        service.package, service.proto_name, method.proto_name
                    );
                }
                !streaming
            })
            .collect();
        let full_service = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let spec = Spec { service: &service, methods, full_service, descriptor_path: &self.descriptor_path };
        write_trait(&spec, buf);
        write_server(&spec, buf);
        write_client(&spec, buf);
        write_blocking_client(&spec, buf);
    }
}

/// What the code for one service is made from.
struct Spec<'a> {
    service: &'a Service,
    methods: Vec<&'a Method>,
    full_service: String,
    descriptor_path: &'a PathBuf,
}

impl Spec<'_> {
    fn name(&self) -> &str {
        &self.service.name
    }

    fn full_method(&self, method: &Method) -> String {
        format!("{}.{}", self.full_service, method.proto_name)
    }
}

fn docs_of(comments: &prost_build::Comments) -> String {
    comments.leading.iter().map(|line| line.trim()).collect::<Vec<_>>().join("\n")
}

fn idempotent(method: &Method) -> bool {
    matches!(
        IdempotencyLevel::try_from(method.options.idempotency_level.unwrap_or(0)),
        Ok(IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent)
    )
}

fn spawn_name(method: &Method) -> String {
    format!("spawn_{}", method.name.trim_start_matches("r#"))
}

fn write_trait(spec: &Spec<'_>, buf: &mut String) {
    spec.service.comments.append_with_indent(0, buf);
    let _ =
        writeln!(buf, "pub trait {}: ::core::marker::Send + ::core::marker::Sync + 'static {{", spec.name());
    for method in &spec.methods {
        method.comments.append_with_indent(1, buf);
        let _ = writeln!(
            buf,
            "    fn {name}(&self, cx: &::courier::Context, request: {input}) -> impl ::core::future::Future<Output = ::core::result::Result<{output}, ::courier::Status>> + ::core::marker::Send;",
            name = method.name,
            input = method.input_type,
            output = method.output_type,
        );
    }
    buf.push_str("}\n\n");
}

fn write_server(spec: &Spec<'_>, buf: &mut String) {
    let name = spec.name();
    let mut arms = String::new();
    for (index, method) in spec.methods.iter().enumerate() {
        let full = spec.full_method(method);
        let _ = write!(
            arms,
            r#"            {index}usize => ::std::boxed::Box::pin(async move {{
                let request: {input} = ::courier::__private::proto::decode_request(&cx, &body, "{full}")?;
                let reply = service.{method}(&cx, request).await?;
                ::courier::__private::proto::encode_reply(cx.codec(), &reply, "{full}")
            }}),
"#,
            input = method.input_type,
            method = method.name,
        );
    }
    let _ = write!(
        buf,
        r#"/// Serves a [`{name}`] implementation; pass it to `courier::Server::builder().add_service(..)`.
pub struct {name}Server<T> {{
    service: ::std::sync::Arc<T>,
}}

impl<T: {name}> {name}Server<T> {{
    /// Serve `service`.
    pub fn new(service: T) -> Self {{
        Self {{ service: ::std::sync::Arc::new(service) }}
    }}

    /// Serve a shared `service`.
    pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {{
        Self {{ service }}
    }}
}}

impl<T> ::core::clone::Clone for {name}Server<T> {{
    fn clone(&self) -> Self {{
        Self {{ service: ::std::sync::Arc::clone(&self.service) }}
    }}
}}

impl<T: {name}> ::courier::Service for {name}Server<T> {{
    fn descriptor(&self) -> &'static ::courier::ServiceDescriptor {{
        {name}Client::DESCRIPTOR
    }}

    fn call(
        &self,
        method: usize,
        cx: ::courier::Context,
        body: ::courier::__private::Bytes,
    ) -> ::courier::__private::BoxFuture<'static, ::core::result::Result<::courier::__private::Bytes, ::courier::Status>> {{
        let service = ::std::sync::Arc::clone(&self.service);
        match method {{
{arms}            _ => ::std::boxed::Box::pin(async move {{
                ::core::result::Result::Err(::courier::Status::unimplemented(::std::format!(
                    "method index {{}} is out of range",
                    method
                )))
            }}),
        }}
    }}
}}

"#
    );
}

fn write_descriptor(spec: &Spec<'_>, buf: &mut String) {
    let mut methods = String::new();
    for method in &spec.methods {
        let _ = write!(
            methods,
            r#"            ::courier::MethodDescriptor {{
                name: {name:?},
                full_name: {full:?},
                idempotent: {idempotent},
                one_way: false,
                kind: ::courier::MethodKind::Unary,
                args: &[::courier::__private::ArgDescriptor {{ name: "request", ty: {input:?} }}],
                output: {output:?},
                error: ::core::option::Option::Some("courier::Status"),
                docs: {docs:?},
            }},
"#,
            name = method.proto_name,
            full = spec.full_method(method),
            idempotent = idempotent(method),
            input = method.input_proto_type.trim_start_matches('.'),
            output = method.output_proto_type.trim_start_matches('.'),
            docs = docs_of(&method.comments),
        );
    }
    let _ = write!(
        buf,
        r#"    /// The service's name, version and methods.
    pub const DESCRIPTOR: &'static ::courier::ServiceDescriptor = &::courier::ServiceDescriptor {{
        name: {full_service:?},
        version: ::core::env!("CARGO_PKG_VERSION"),
        docs: {docs:?},
        methods: &[
{methods}        ],
        schema: ::courier::Schema::Protobuf {{ file_descriptor_set: ::core::include_bytes!({path:?}) }},
    }};

"#,
        full_service = spec.full_service,
        docs = docs_of(&spec.service.comments),
        path = spec.descriptor_path.display().to_string(),
    );
}

fn write_client(spec: &Spec<'_>, buf: &mut String) {
    let name = spec.name();
    // The shared surface (connect, new, discover, with_*) is courier's
    // `__client_surface!`, the same the `#[courier::service]` macro emits.
    let _ = write!(
        buf,
        r#"::courier::__client_surface! {{
    /// Calls a remote [`{name}`]. Cheap to clone; clones share connections.
    ///
    /// Calls use protobuf (natively or over gRPC); `with_codec(courier::Codec::Json)`
    /// switches to JSON.
    pub struct {name}Client;
    options = ::courier::CallOptions::new().with_codec(::courier::Codec::Protobuf);
}}

impl {name}Client {{
"#
    );
    write_descriptor(spec, buf);
    for method in &spec.methods {
        let full = spec.full_method(method);
        method.comments.append_with_indent(1, buf);
        let _ = write!(
            buf,
            r#"    pub async fn {method}(&self, request: {input}) -> ::core::result::Result<{output}, ::courier::Status> {{
        self.stub.unary_proto::<_, {output}>({full:?}, &request, {idempotent}).await
    }}

    /// Start [`{name}Client::{method}`] now and collect the result later by
    /// awaiting the handle. Must be called inside a tokio runtime.
    pub fn {spawn}(&self, request: {input}) -> ::courier::CallHandle<{output}> {{
        let client = ::core::clone::Clone::clone(self);
        ::courier::CallHandle::spawn(async move {{ client.{method}(request).await }})
    }}

"#,
            method = method.name,
            input = method.input_type,
            output = method.output_type,
            idempotent = idempotent(method),
            spawn = spawn_name(method),
        );
    }
    buf.push_str("}\n\n");
}

fn write_blocking_client(spec: &Spec<'_>, buf: &mut String) {
    let name = spec.name();
    let _ = write!(
        buf,
        r#"::courier::__blocking_client_surface! {{
    /// Calls a remote [`{name}`] from synchronous code: each call blocks until
    /// its reply arrives. Owns a small runtime; needs none from the caller.
    pub struct {name}BlockingClient over {name}Client;
}}

impl {name}BlockingClient {{
"#
    );
    for method in &spec.methods {
        method.comments.append_with_indent(1, buf);
        let _ = write!(
            buf,
            r#"    pub fn {method}(&self, request: {input}) -> ::core::result::Result<{output}, ::courier::Status> {{
        let client = ::core::clone::Clone::clone(self.as_async());
        self.block_on(async move {{ client.{method}(request).await }})
    }}

"#,
            method = method.name,
            input = method.input_type,
            output = method.output_type,
        );
    }
    buf.push_str("}\n\n");
}
