//! # courier
//!
//! An RPC framework with service registration and discovery built in.
//! Define a service once as a trait; get a client stub and a server stub;
//! calls look local.
//!
//! ```no_run
//! #[courier::service]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = courier::Server::builder()
//!     .add_service(CalculatorServer::new(Calc))
//!     .bind("127.0.0.1:0").await?
//!     .start();
//! let calc = CalculatorClient::connect(server.local_addr().to_string()).await?;
//! assert_eq!(calc.add(10, 20).await?, 30);
//! # Ok(()) }
//! ```
//!
//! ## What `#[courier::service]` generates
//!
//! For `trait Calculator`: the trait itself (each `async fn` returning a
//! `Send` future); `CalculatorServer<T>` to pass to
//! [`ServerBuilder::add_service`]; `CalculatorClient` with one async method
//! per trait method plus `with_timeout`, `with_metadata`, `with_codec` and
//! `spawn_<method>` (start now, await later); `CalculatorBlockingClient`
//! for synchronous code; and `CalculatorClient::DESCRIPTOR`, the service's
//! [`ServiceDescriptor`]. Method attributes: `#[courier(idempotent)]`,
//! `#[courier(one_way)]`, `#[courier(name = "Wire")]`; trait attributes:
//! `name = ".."`, `version = ".."`.
//!
//! Methods returning `Result<T, E>` with a serde error type send `E` back
//! inside the [`Status`]; [`Status::app_error`] gives it back typed.
//!
//! Over JSON (HTTP/JSON, JSON-RPC, the JSON codec, gRPC+JSON) arguments are
//! an object, `{"a":10,"b":20}`, except that a method with one argument
//! takes the argument itself, `"k1"`, as Go's net/rpc does. For those, an
//! object whose one key names the argument, `{"key":"k1"}`, is accepted
//! too, but only when the body does not decode as the argument itself; a
//! body of neither shape is refused with a message that names the
//! argument, its type and the shape expected.
//!
//! ## Layout (the path of one call)
//!
//! - [`service`](mod@service): the [`Service`] trait generated servers implement, and
//!   descriptors.
//! - [`codec`]: arguments and results to bytes ([`Codec::Binary`],
//!   [`Codec::Json`], [`Codec::Protobuf`] for `.proto` services,
//!   [`Codec::Gob`] for Go's `net/rpc`).
//! - [`protocol`]: sans-IO wire formats ([`protocol::native`], gRPC's
//!   framing, JSON-RPC, Go's `net/rpc`, protocol sniffing).
//! - `transport`: frames over TCP (coalesced writer, reader, keepalive),
//!   sniffed bytes replayed, HTTP/2 writes within the flow-control window.
//! - [`server`]: accept, tell the protocol, route, limit, run, shut down;
//!   native, gRPC, Go's `net/rpc` (gob), JSON-RPC and HTTP/JSON on one port.
//! - [`client`]: channels (native, gRPC or a Go `net/rpc` server's wire, one
//!   address or a discovered service), client layers, connection pools,
//!   call options.
//! - [`stream`]: streaming calls: [`Streaming`], [`ResponseStream`], the
//!   pipes between a handler or caller and its protocol, flow control.
//! - [`resilience`]: retries, budgets, hedging, circuit breakers,
//!   fallbacks, reconnect backoff.
//! - [`blocking`]: synchronous clients.
//! - [`discovery`]: the model of registration and discovery: instances,
//!   leases, watches, a consumer's cache, the [`registry::Registry`] handle.
//! - [`registry`]: registries by URL and their backends (`mem`, `courier`,
//!   `etcd`, `zookeeper`, `redis`).
//! - [`status`], [`context`], [`metadata`]: what crosses the wire with a call.
//!
//! ## Feature flags
//!
//! - `grpc` (on by default): gRPC over HTTP/2 on every listener (with the
//!   health and reflection services) and the [`Channel`] gRPC mode, through
//!   h2. Implies `protobuf`.
//! - `http-json` (on by default): HTTP/1.1 with JSON bodies on every
//!   listener, through hyper.
//! - `protobuf` (on by default): [`Codec::Protobuf`], for services
//!   generated from `.proto` files by `courier-build`.
//! - `etcd` (off by default): the `etcd://` registry backend, through the
//!   `etcd-client` crate. Building it needs `protoc`
//!   (`apt-get install protobuf-compiler`).
//! - `zookeeper` (off by default): the `zookeeper://` registry backend in
//!   Apache Dubbo's layout, through the `zookeeper-client` crate.
//! - `redis` (off by default): the `redis://` registry backend, through the
//!   `redis` crate.
//!
//! The native protocol, Go's `net/rpc` (gob), JSON-RPC, the binary, JSON
//! and gob codecs, the blocking client and the `mem://` and `courier://`
//! registries are always built.

// Lets `#[courier::service]` (whose output names `::courier::...`) be used
// inside this crate too, for the registry's own API.
extern crate self as courier;

mod arguments;
pub mod balance;
pub mod blocking;
pub mod client;
pub mod codec;
pub mod context;
pub mod discovery;
pub mod metadata;
pub mod protocol;
pub mod registry;
pub mod resilience;
pub mod server;
pub mod service;
pub mod status;
pub mod stream;
mod transport;

pub use balance::Balance;
pub use client::{CallHandle, CallOptions, Channel, ConnectError};
pub use codec::Codec;
pub use context::Context;
pub use courier_macros::service;
pub use metadata::Metadata;
pub use server::{
    AdaptiveLimit, MethodLimit, Protocol, ServeError, Server, ServerBuilder, ServerHandle, ServerStats,
};
pub use service::{MethodDescriptor, MethodKind, Schema, Service, ServiceDescriptor};
pub use status::{Code, Status};
pub use stream::{ResponseStream, Streaming};

/// Used by generated code; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use bytes::{Bytes, BytesMut};
    pub use serde;

    pub use crate::arguments::{decode_arg, decode_args};
    pub use crate::service::{ArgDescriptor, BoxFuture};
    pub use crate::stream::{__requests as stream_requests, __single_request as single_request, ReplySink};

    use crate::codec::Codec;
    use crate::status::{Code, Status};

    /// Encode a method's result.
    pub fn encode_result<T: serde::Serialize + ?Sized>(
        codec: Codec,
        value: &T,
        method: &str,
    ) -> Result<Bytes, Status> {
        let mut buf = BytesMut::new();
        codec
            .encode(value, &mut buf)
            .map_err(|err| Status::internal(format!("the result of {method} does not encode: {err}")))?;
        Ok(buf.freeze())
    }

    /// Encode one message of a stream (serde types).
    pub fn encode_message<T: serde::Serialize>(
        codec: Codec,
        value: &T,
        buf: &mut BytesMut,
    ) -> Result<(), Status> {
        codec
            .encode(value, buf)
            .map_err(|err| Status::internal(format!("a stream message does not encode: {err}")))
    }

    /// Encode one message of a stream into bytes of its own (serde types).
    pub fn encode_message_bytes<T: serde::Serialize>(codec: Codec, value: &T) -> Result<Bytes, Status> {
        let mut buf = BytesMut::new();
        encode_message(codec, value, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Decode one message of a stream (serde types).
    pub fn decode_message<T: serde::de::DeserializeOwned>(codec: Codec, body: &Bytes) -> Result<T, Status> {
        codec
            .decode(body)
            .map_err(|err| Status::invalid_argument(format!("a stream message does not decode: {err}")))
    }

    /// Turn a handler's own error into a status carrying it.
    pub fn encode_app_error<E: serde::Serialize + std::fmt::Display>(
        codec: Codec,
        error: &E,
        method: &str,
    ) -> Status {
        let mut buf = BytesMut::new();
        match codec.encode(error, &mut buf) {
            Ok(()) => Status::application(Code::Unknown, error.to_string(), buf.freeze()),
            Err(err) => Status::internal(format!("the error returned by {method} does not encode: {err}")),
        }
    }

    /// Decode the handler's own error carried by `status`, if it has one.
    pub fn decode_app_error<E>(codec: Codec, status: Status) -> Status
    where
        E: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        if !status.is_application_error() {
            return status;
        }
        // The codec the answer came in, when the channel knows it: on a
        // discovered channel it depends on the instance that answered.
        let codec = status.details_codec().unwrap_or(codec);
        match codec.decode::<E>(status.details()) {
            Ok(error) => status.with_app_error(error),
            Err(_) => status,
        }
    }

    /// Compile-time check with a readable error for argument and return
    /// types that cannot cross the wire.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot cross the wire: courier arguments and results must implement serde's `Serialize` and `Deserialize`",
        label = "not serde-serializable",
        note = "derive them with `#[derive(serde::Serialize, serde::Deserialize)]`"
    )]
    pub trait Wire {}
    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Wire for T {}

    /// Used by generated code to assert `T: Wire` at the type's span.
    pub const fn assert_wire<T: Wire>() {}

    /// Compile-time check for a service's own error type.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is returned as a service error, so it must implement `std::fmt::Display` (its text becomes the status message)",
        label = "no `Display`",
        note = "`#[derive(thiserror::Error)]` with `#[error(\"..\")]` provides it"
    )]
    pub trait AppError {}
    impl<T: std::fmt::Display> AppError for T {}

    /// Used by generated code to assert `E: AppError` at the type's span.
    pub const fn assert_app_error<E: AppError>() {}

    #[cfg(feature = "protobuf")]
    pub use prost;

    /// Encoding and decoding for code generated by courier-build.
    #[cfg(feature = "protobuf")]
    pub mod proto {
        use bytes::{Bytes, BytesMut};

        use crate::codec::Codec;
        use crate::codec::protobuf::{self, Message};
        use crate::status::Status;

        /// Decode a request in the call's codec (leniently for JSON-RPC).
        pub fn decode_request<M: Message>(
            cx: &crate::Context,
            body: &[u8],
            method: &str,
        ) -> Result<M, Status> {
            let decoded = if cx.codec() == Codec::Json && cx.lenient_json() {
                crate::codec::lenient::from_slice(body).map_err(|err| err.to_string())
            } else {
                protobuf::decode(cx.codec(), body).map_err(|err| err.to_string())
            };
            decoded.map_err(|err| {
                Status::invalid_argument(format!("the request to {method} does not decode: {err}"))
            })
        }

        /// Encode a handler's reply.
        pub fn encode_reply<M: Message>(codec: Codec, reply: &M, method: &str) -> Result<Bytes, Status> {
            let mut buf = BytesMut::new();
            protobuf::encode(codec, reply, &mut buf)
                .map_err(|err| Status::internal(format!("the reply of {method} does not encode: {err}")))?;
            Ok(buf.freeze())
        }

        /// Encode a client's request.
        pub fn encode_request<M: Message>(
            codec: Codec,
            request: &M,
            buf: &mut BytesMut,
            method: &str,
        ) -> Result<(), Status> {
            protobuf::encode(codec, request, buf).map_err(|err| {
                Status::invalid_argument(format!("the request to {method} does not encode: {err}"))
            })
        }

        /// Encode one message of a stream.
        pub fn encode_message<M: Message>(
            codec: Codec,
            message: &M,
            buf: &mut BytesMut,
        ) -> Result<(), Status> {
            protobuf::encode(codec, message, buf)
                .map_err(|err| Status::internal(format!("a stream message does not encode: {err}")))
        }

        /// Encode one message of a stream into bytes of its own.
        pub fn encode_message_bytes<M: Message>(codec: Codec, message: &M) -> Result<Bytes, Status> {
            let mut buf = BytesMut::new();
            encode_message(codec, message, &mut buf)?;
            Ok(buf.freeze())
        }

        /// Decode one message of a stream.
        pub fn decode_message<M: Message>(codec: Codec, body: &Bytes) -> Result<M, Status> {
            protobuf::decode(codec, body)
                .map_err(|err| Status::invalid_argument(format!("a stream message does not decode: {err}")))
        }

        /// Decode the reply a client got.
        pub fn decode_reply<M: Message>(codec: Codec, body: &[u8], method: &str) -> Result<M, Status> {
            protobuf::decode(codec, body)
                .map_err(|err| Status::internal(format!("the reply of {method} does not decode: {err}")))
        }
    }
}

/// Include the Rust code courier-build generated from `.proto` files in
/// `build.rs`: one module per protobuf package, nested as the package name
/// is (`helloworld`, `google::protobuf`, ...).
#[cfg(feature = "protobuf")]
#[macro_export]
macro_rules! include_protos {
    () => {
        include!(concat!(env!("OUT_DIR"), "/courier_protos.rs"));
    };
}

#[cfg(test)]
mod tests {
    use crate::codec::Codec;
    use crate::status::{Code, Status};

    /// A discovered channel may get a service's error from an instance it
    /// called over gRPC, in JSON, while the client's options say binary:
    /// the codec the status notes wins.
    #[test]
    fn a_service_error_decodes_in_the_codec_its_status_notes() {
        let details = bytes::Bytes::from_static(br#""DivisionByZero""#);
        let status = Status::application(Code::Unknown, "division by zero", details);
        let untagged = super::__private::decode_app_error::<String>(Codec::Binary, status.clone());
        assert_eq!(untagged.app_error::<String>(), None, "not binary");
        let tagged = status.with_details_codec(Codec::Json);
        let decoded = super::__private::decode_app_error::<String>(Codec::Binary, tagged);
        assert_eq!(decoded.app_error::<String>().map(String::as_str), Some("DivisionByZero"));
    }

    /// Without the feature, an `etcd://` URL says which crate's feature to
    /// turn on, and how, rather than only that something is missing.
    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn etcd_without_its_feature_says_how_to_turn_it_on() {
        let err = crate::registry::connect("etcd://127.0.0.1:2379").await.expect_err("not built");
        assert_eq!(
            err.to_string(),
            format!(
                "etcd:// needs courier's `etcd` feature: in Cargo.toml, courier = {{ version = \"{}\", \
                 features = [\"etcd\"] }}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
