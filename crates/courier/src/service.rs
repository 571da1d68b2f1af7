//! The seam between generated code and the runtime.
//!
//! `#[courier::service]` turns a trait into a server stub that implements
//! [`Service`]: given a method index, a [`Context`] and the encoded
//! arguments, it decodes, calls the user's implementation and encodes the
//! result. Transports only ever see `dyn Service`, so every protocol reaches
//! every service without generics leaking into their types.
//!
//! Each service also has a static [`ServiceDescriptor`] (names, version,
//! methods, idempotency) used for routing, registration and reflection.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::codec::Codec;
use crate::context::Context;
use crate::status::Status;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service the server can route calls to. Implemented by generated
/// `XxxServer` types; implement it by hand only for dynamic services.
pub trait Service: Send + Sync + 'static {
    /// The service's static description.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Call `descriptor().methods[method]` with `body` encoded in
    /// `cx.codec()`; resolves to the encoded result in the same codec.
    fn call(&self, method: usize, cx: Context, body: Bytes) -> BoxFuture<'static, Result<Bytes, Status>>;
}

/// A service's static description.
#[derive(Debug)]
pub struct ServiceDescriptor {
    /// The service name on the wire (`Calculator`).
    pub name: &'static str,
    /// The service version (semver).
    pub version: &'static str,
    /// Doc comment of the trait, if any.
    pub docs: &'static str,
    /// The methods, in declaration order.
    pub methods: &'static [MethodDescriptor],
    /// Where the service's types come from, which decides its codecs.
    pub schema: Schema,
}

/// Where a service's message types come from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Schema {
    /// Rust types with serde derives (`#[courier::service]`): the binary,
    /// JSON and gob codecs.
    Serde,
    /// Messages generated from a `.proto` file (`courier-build`): protobuf
    /// and JSON.
    Protobuf {
        /// The encoded `FileDescriptorSet` of the `.proto` file and its
        /// imports, for gRPC server reflection.
        file_descriptor_set: &'static [u8],
    },
}

impl Schema {
    /// Whether messages of this schema can be encoded with `codec`.
    pub fn accepts(&self, codec: Codec) -> bool {
        match self {
            Schema::Serde => matches!(codec, Codec::Binary | Codec::Json | Codec::Gob),
            Schema::Protobuf { .. } => matches!(codec, Codec::Protobuf | Codec::Json),
        }
    }

    /// The codec clients of this schema use unless told otherwise.
    pub fn default_codec(&self) -> Codec {
        match self {
            Schema::Serde => Codec::Binary,
            Schema::Protobuf { .. } => Codec::Protobuf,
        }
    }
}

impl ServiceDescriptor {
    /// Find a method by its short name (`Add`).
    pub fn method(&self, name: &str) -> Option<(usize, &'static MethodDescriptor)> {
        self.methods.iter().enumerate().find(|(_, m)| m.name == name)
    }
}

/// One method of a service.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// The method name on the wire (`Add`).
    pub name: &'static str,
    /// `Service.Method` (`Calculator.Add`).
    pub full_name: &'static str,
    /// Whether repeating the call is harmless, so it may be retried or hedged.
    pub idempotent: bool,
    /// Whether the caller expects no reply.
    pub one_way: bool,
    /// Unary, or which way it streams.
    pub kind: MethodKind,
    /// Arguments, in order (a client-streaming method's one argument is
    /// the type of each request message).
    pub args: &'static [ArgDescriptor],
    /// The Rust type of the successful result.
    pub output: &'static str,
    /// The Rust type of the service's own error, for `Result<T, E>` methods.
    pub error: Option<&'static str>,
    /// Doc comment of the method, if any.
    pub docs: &'static str,
}

/// Whether a method streams, and which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MethodKind {
    /// One request, one reply.
    Unary,
    /// One request, a stream of replies.
    ServerStreaming,
    /// A stream of requests, one reply.
    ClientStreaming,
    /// A stream each way.
    Bidirectional,
}

impl MethodKind {
    /// Whether the caller sends a stream of requests.
    pub fn client_streams(self) -> bool {
        matches!(self, MethodKind::ClientStreaming | MethodKind::Bidirectional)
    }

    /// Whether the server answers with a stream.
    pub fn server_streams(self) -> bool {
        matches!(self, MethodKind::ServerStreaming | MethodKind::Bidirectional)
    }

    /// Whether it streams at all.
    pub fn is_streaming(self) -> bool {
        self != MethodKind::Unary
    }
}

/// One argument of a method.
#[derive(Debug)]
pub struct ArgDescriptor {
    /// The argument name (also its JSON field name).
    pub name: &'static str,
    /// The Rust type, as written.
    pub ty: &'static str,
}
