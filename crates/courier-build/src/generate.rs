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
    let _ = write!(
        buf,
        r#"/// Calls a remote [`{name}`]. Cheap to clone; clones share connections.
///
/// Calls use protobuf (natively or over gRPC); `with_codec(courier::Codec::Json)`
/// switches to JSON.
#[derive(Clone, Debug)]
pub struct {name}Client {{
    channel: ::courier::Channel,
    options: ::courier::CallOptions,
}}

impl ::courier::client::FromChannel for {name}Client {{
    fn from_channel(channel: ::courier::Channel) -> Self {{
        Self::new(channel)
    }}
}}

impl {name}Client {{
"#
    );
    write_descriptor(spec, buf);
    let _ = write!(
        buf,
        r#"    /// Connect to a server at `addr` (`host:port`).
    pub async fn connect(addr: impl ::core::convert::Into<::std::string::String>) -> ::core::result::Result<Self, ::courier::ConnectError> {{
        ::core::result::Result::Ok(Self::new(::courier::Channel::connect(addr).await?))
    }}

    /// A client over an existing channel (native, gRPC or discovered).
    pub fn new(channel: ::courier::Channel) -> Self {{
        Self {{ channel, options: ::courier::CallOptions::new().with_codec(::courier::Codec::Protobuf) }}
    }}

    /// A client that finds the instances of `service` in `registry` and
    /// balances calls over them; configure, then `.build().await`.
    pub fn discover(
        registry: &::courier::registry::Registry,
        service: impl ::core::convert::Into<::std::string::String>,
    ) -> ::courier::client::DiscoverBuilder<Self> {{
        ::courier::client::DiscoverBuilder::new(::core::clone::Clone::clone(registry), service.into())
    }}

    /// The channel calls go through.
    pub fn channel(&self) -> &::courier::Channel {{
        &self.channel
    }}

    /// The options applied to every call.
    pub fn options(&self) -> &::courier::CallOptions {{
        &self.options
    }}

    /// A copy of this client with `options`.
    #[must_use]
    pub fn with_options(&self, options: ::courier::CallOptions) -> Self {{
        Self {{ channel: ::core::clone::Clone::clone(&self.channel), options }}
    }}

    /// A copy of this client whose calls time out after `timeout`.
    #[must_use]
    pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {{
        self.with_options(::core::clone::Clone::clone(&self.options).with_timeout(timeout))
    }}

    /// A copy of this client that sends a header with every call.
    #[must_use]
    pub fn with_metadata(&self, key: impl ::core::convert::AsRef<str>, value: impl ::core::convert::Into<::std::string::String>) -> Self {{
        self.with_options(::core::clone::Clone::clone(&self.options).with_metadata(key, value))
    }}

    /// A copy of this client that encodes calls with `codec` (protobuf or JSON).
    #[must_use]
    pub fn with_codec(&self, codec: ::courier::Codec) -> Self {{
        self.with_options(::core::clone::Clone::clone(&self.options).with_codec(codec))
    }}

"#
    );
    for method in &spec.methods {
        let full = spec.full_method(method);
        method.comments.append_with_indent(1, buf);
        let _ = write!(
            buf,
            r#"    pub async fn {method}(&self, request: {input}) -> ::core::result::Result<{output}, ::courier::Status> {{
        let codec = self.channel.codec_for(&self.options);
        let body = self
            .channel
            .unary_encoded({full:?}, &self.options, {idempotent}, &|buf| {{
                ::courier::__private::proto::encode_request(codec, &request, buf, {full:?})
            }})
            .await?;
        ::courier::__private::proto::decode_reply(codec, &body, {full:?})
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
        r#"/// Calls a remote [`{name}`] from synchronous code: each call blocks until
/// its reply arrives. Owns a small runtime; needs none from the caller.
#[derive(Clone, Debug)]
pub struct {name}BlockingClient {{
    client: {name}Client,
    channel: ::courier::blocking::Channel,
}}

impl {name}BlockingClient {{
    /// Connect to a server at `addr` (`host:port`), blocking until connected.
    pub fn connect(addr: impl ::core::convert::Into<::std::string::String>) -> ::core::result::Result<Self, ::courier::ConnectError> {{
        ::core::result::Result::Ok(Self::new(::courier::blocking::Channel::connect(addr)?))
    }}

    /// A client over an existing blocking channel.
    pub fn new(channel: ::courier::blocking::Channel) -> Self {{
        Self {{ client: {name}Client::new(::core::clone::Clone::clone(channel.as_async())), channel }}
    }}

    /// A copy of this client whose calls time out after `timeout`.
    #[must_use]
    pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {{
        Self {{ client: self.client.with_timeout(timeout), channel: ::core::clone::Clone::clone(&self.channel) }}
    }}

    /// A copy of this client that sends a header with every call.
    #[must_use]
    pub fn with_metadata(&self, key: impl ::core::convert::AsRef<str>, value: impl ::core::convert::Into<::std::string::String>) -> Self {{
        Self {{ client: self.client.with_metadata(key, value), channel: ::core::clone::Clone::clone(&self.channel) }}
    }}

"#
    );
    for method in &spec.methods {
        method.comments.append_with_indent(1, buf);
        let _ = write!(
            buf,
            r#"    pub fn {method}(&self, request: {input}) -> ::core::result::Result<{output}, ::courier::Status> {{
        let client = ::core::clone::Clone::clone(&self.client);
        self.channel.call(async move {{ client.{method}(request).await }})
    }}

"#,
            method = method.name,
            input = method.input_type,
            output = method.output_type,
        );
    }
    buf.push_str("}\n\n");
}
