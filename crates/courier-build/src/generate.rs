//! The courier code for one `.proto` service: the trait to implement, the
//! server stub, the async and blocking clients, and the descriptor. It
//! mirrors what `#[courier::service]` generates for a Rust trait, with a
//! `&courier::Context` for every handler, and the four kinds of method:
//!
//! | `.proto` | handler takes | handler returns | client returns |
//! |---|---|---|---|
//! | `rpc M (A) returns (B)` | `A` | `B` | `B` |
//! | `rpc M (A) returns (stream B)` | `A` | `ResponseStream<B>` | `Streaming<B>` |
//! | `rpc M (stream A) returns (B)` | `Streaming<A>` | `B` | `B` (given a `Stream` of `A`) |
//! | `rpc M (stream A) returns (stream B)` | `Streaming<A>` | `ResponseStream<B>` | `Streaming<B>` (given a `Stream` of `A`) |
//!
//! Every stream a caller or handler reads yields `Result<T, Status>`: a
//! stream cut short ends in an error, never in a clean end. The blocking
//! client has the unary methods only (a stream is read asynchronously).

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
        let methods: Vec<&Method> = service.methods.iter().collect();
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

/// Which of the four kinds a method is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidirectional,
}

fn kind(method: &Method) -> Kind {
    match (method.client_streaming, method.server_streaming) {
        (false, false) => Kind::Unary,
        (false, true) => Kind::ServerStreaming,
        (true, false) => Kind::ClientStreaming,
        (true, true) => Kind::Bidirectional,
    }
}

impl Kind {
    /// The `courier::MethodKind` variant.
    fn variant(self) -> &'static str {
        match self {
            Kind::Unary => "Unary",
            Kind::ServerStreaming => "ServerStreaming",
            Kind::ClientStreaming => "ClientStreaming",
            Kind::Bidirectional => "Bidirectional",
        }
    }

    fn client_streams(self) -> bool {
        matches!(self, Kind::ClientStreaming | Kind::Bidirectional)
    }

    fn server_streams(self) -> bool {
        matches!(self, Kind::ServerStreaming | Kind::Bidirectional)
    }
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
        let kind = kind(method);
        let argument = if kind.client_streams() {
            format!("requests: ::courier::Streaming<{}>", method.input_type)
        } else {
            format!("request: {}", method.input_type)
        };
        let output = if kind.server_streams() {
            format!("::courier::ResponseStream<{}>", method.output_type)
        } else {
            method.output_type.clone()
        };
        let _ = writeln!(
            buf,
            "    fn {name}(&self, cx: &::courier::Context, {argument}) -> impl ::core::future::Future<Output = ::core::result::Result<{output}, ::courier::Status>> + ::core::marker::Send;",
            name = method.name,
        );
    }
    buf.push_str("}\n\n");
}

fn write_server(spec: &Spec<'_>, buf: &mut String) {
    let name = spec.name();
    let mut arms = String::new();
    for (index, method) in spec.methods.iter().enumerate() {
        let full = spec.full_method(method);
        let (input, output, name) = (&method.input_type, &method.output_type, &method.name);
        // A streaming handler takes its halves from the call's context; the
        // future resolves when the stream is over, with its status.
        let body = match kind(method) {
            Kind::Unary => format!(
                r#"                let request: {input} = ::courier::__private::proto::decode_request(&cx, &body, "{full}")?;
                let reply = service.{name}(&cx, request).await?;
                ::courier::__private::proto::encode_reply(cx.codec(), &reply, "{full}")"#
            ),
            Kind::ServerStreaming => format!(
                r#"                let _ = body;
                let (body, sink) = ::courier::__private::single_request(&cx, "{full}").await?;
                let request: {input} = ::courier::__private::proto::decode_request(&cx, &body, "{full}")?;
                let replies = service.{name}(&cx, request).await?;
                sink.drive(cx.codec(), replies, ::courier::__private::proto::encode_message_bytes::<{output}>).await"#
            ),
            Kind::ClientStreaming => format!(
                r#"                let _ = body;
                let (requests, sink) = ::courier::__private::stream_requests(&cx, "{full}", ::courier::__private::proto::decode_message::<{input}>)?;
                let reply = service.{name}(&cx, requests).await?;
                sink.reply(::courier::__private::proto::encode_reply(cx.codec(), &reply, "{full}")?).await"#
            ),
            Kind::Bidirectional => format!(
                r#"                let _ = body;
                let (requests, sink) = ::courier::__private::stream_requests(&cx, "{full}", ::courier::__private::proto::decode_message::<{input}>)?;
                let replies = service.{name}(&cx, requests).await?;
                sink.drive(cx.codec(), replies, ::courier::__private::proto::encode_message_bytes::<{output}>).await"#
            ),
        };
        let _ = writeln!(
            arms,
            "            {index}usize => ::std::boxed::Box::pin(async move {{\n{body}\n            }}),"
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
                kind: ::courier::MethodKind::{kind},
                args: &[::courier::__private::ArgDescriptor {{ name: {arg:?}, ty: {input:?} }}],
                output: {output:?},
                error: ::core::option::Option::Some("courier::Status"),
                docs: {docs:?},
            }},
"#,
            name = method.proto_name,
            full = spec.full_method(method),
            idempotent = idempotent(method),
            kind = kind(method).variant(),
            arg = if kind(method).client_streams() { "requests" } else { "request" },
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
        if kind(method) != Kind::Unary {
            write_streaming_client_method(method, kind(method), &full, buf);
            continue;
        }
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

/// A streaming method of the async client: one `Stub` call. Requests a
/// caller streams are any `Stream` (`courier::stream::channel` gives one fed
/// from elsewhere); replies come as a `Streaming` of `Result`s.
fn write_streaming_client_method(method: &Method, kind: Kind, full: &str, buf: &mut String) {
    let (name, input, output) = (&method.name, &method.input_type, &method.output_type);
    let codecs = format!(
        "::courier::__private::proto::encode_message::<{input}>, ::courier::__private::proto::decode_message::<{output}>"
    );
    let _ = match kind {
        Kind::ServerStreaming => write!(
            buf,
            r#"    pub async fn {name}(&self, request: {input}) -> ::core::result::Result<::courier::Streaming<{output}>, ::courier::Status> {{
        self.stub.server_streaming({full:?}, &request, {codecs}).await
    }}

"#
        ),
        Kind::ClientStreaming => write!(
            buf,
            r#"    pub async fn {name}(&self, requests: impl ::courier::stream::Stream<Item = {input}> + ::core::marker::Send + 'static) -> ::core::result::Result<{output}, ::courier::Status> {{
        self.stub.client_streaming({full:?}, requests, {codecs}).await
    }}

"#
        ),
        Kind::Bidirectional => write!(
            buf,
            r#"    pub async fn {name}(&self, requests: impl ::courier::stream::Stream<Item = {input}> + ::core::marker::Send + 'static) -> ::core::result::Result<::courier::Streaming<{output}>, ::courier::Status> {{
        self.stub.bidirectional({full:?}, requests, {codecs}).await
    }}

"#
        ),
        Kind::Unary => Ok(()),
    };
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
    // A stream is read asynchronously: streaming methods are on the async
    // client only.
    for method in spec.methods.iter().filter(|method| kind(method) == Kind::Unary) {
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
