//! [`Channel`]: where calls go. Either one address (one endpoint: a
//! pool of native or gRPC connections) or the instances of a discovered
//! service, balanced; through the channel's layers either way.
//!
//! The typed calls are here: arguments encoded in the codec the endpoint
//! carries the call in, and the reply decoded in the codec it came back
//! in. Everything below sees a [`Call`] and answers an [`Outcome`].

use std::borrow::Cow;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::call::{Call, CallKind, EncodeBody};
use super::endpoint::Endpoint;
use super::layer::Layers;
use super::options::CallOptions;
use super::protocols::Transport;
use super::route::Route;
use crate::codec::Codec;
use crate::resilience::retry::Retry;
use crate::status::Status;

/// Run a described call: through the channel's layers if it has any, or
/// else straight to its route (nothing boxed, nothing copied). A macro, not
/// an `async fn`, so the hot path has no state machine of its own between
/// the caller and the route: measured with callgrind, such a level costs a
/// native call about 70 instructions at 64 in flight.
macro_rules! run {
    ($channel:expr, $call:expr) => {
        if $channel.layers.is_empty() {
            $channel.route.send(&$call).await
        } else {
            $channel.layers.run(&$channel.route, &mut $call).await
        }
    };
}

/// A handle for calling services. Cheap to clone; clones share connections.
///
/// A channel to one address ([`Channel::connect`], [`Channel::lazy`],
/// [`Channel::builder`]) opens connections lazily and re-opens them after
/// failures, waiting a jittered, growing delay between failed attempts;
/// while a reconnect is backing off, calls fail fast with `Unavailable`
/// rather than queueing. It speaks courier's native protocol, or gRPC
/// ([`ChannelBuilder::grpc`](super::ChannelBuilder::grpc)).
///
/// A channel to a discovered service ([`Channel::discover`]) spreads calls
/// over the service's instances as the registry reports them, each called
/// in a protocol it offers, moving to the next instance when one cannot be
/// reached.
///
/// Generated clients wrap a channel; tools can call through it by name.
///
/// ```
/// #[courier::service]
/// trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
///
/// struct Polite;
/// impl Greeter for Polite {
///     async fn hello(&self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = courier::Server::builder()
///     .add_service(GreeterServer::new(Polite))
///     .bind("127.0.0.1:0")
///     .await?
///     .start();
/// let channel = courier::Channel::connect(server.local_addr().to_string()).await?;
///
/// let greeter = GreeterClient::new(channel.clone());
/// assert_eq!(greeter.hello("ada".into()).await?, "hello, ada");
///
/// // By name: a single argument travels as itself.
/// let options = courier::CallOptions::new();
/// let reply: String = channel.unary("Greeter.Hello", "bob", &options).await?;
/// assert_eq!(reply, "hello, bob");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    pub(super) route: Route,
    layers: Layers,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("target", &self.target()).finish_non_exhaustive()
    }
}

/// Builds a client (or a [`Channel`]) from a channel; implemented by
/// generated clients, so `discover` can build any of them.
pub trait FromChannel {
    /// Wrap `channel`.
    fn from_channel(channel: Channel) -> Self;
}

impl FromChannel for Channel {
    fn from_channel(channel: Channel) -> Channel {
        channel
    }
}

impl Channel {
    pub(crate) fn new(route: Route, layers: Layers) -> Channel {
        Channel { route, layers }
    }

    /// Where calls go: `host:port`, `grpc://host:port`, a Go server's
    /// `gorpc://`, `gorpc+http://` or `jsonrpc://host:port`, or
    /// `discover:Service`.
    pub fn target(&self) -> String {
        match &self.route {
            Route::One(Transport::Native(native)) => native.addr().to_owned(),
            #[cfg(feature = "grpc")]
            Route::One(Transport::Grpc(grpc)) => format!("grpc://{}", grpc.addr()),
            Route::One(Transport::Go(go)) => format!("{}://{}", go.wire().scheme(), go.addr()),
            Route::Balanced(balanced) => format!("discover:{}", balanced.service()),
        }
    }

    /// The instances a discovered channel knows now and can call (`None`
    /// for a channel to one address).
    pub fn instances(&self) -> Option<Vec<crate::discovery::Instance>> {
        match &self.route {
            Route::Balanced(balanced) => Some(balanced.instances()),
            Route::One(_) => None,
        }
    }

    /// What a discovered channel's governance did (calls, attempts,
    /// retries, hedges, budget and breaker refusals) and where each
    /// instance's and method's circuit breaker is (`None` for a channel to
    /// one address).
    pub fn governance(&self) -> Option<super::GovernanceReport> {
        match &self.route {
            Route::Balanced(balanced) => Some(balanced.report()),
            Route::One(_) => None,
        }
    }

    /// The codec calls made with `options` travel in. gRPC carries protobuf
    /// or JSON, so the binary codec becomes JSON on a gRPC channel. On a
    /// discovered channel it depends on the instance each call goes to
    /// (this says the codec of native instances); the statuses it returns
    /// note the codec their details are in, which
    /// generated clients use to decode a service's own errors.
    pub fn codec_for(&self, options: &CallOptions) -> Codec {
        match &self.route {
            Route::One(transport) => transport.wire_codec(options.codec()),
            Route::Balanced(_) => options.codec(),
        }
    }

    /// Call `method` (`Service.Method`) with `request`, decoding the reply
    /// as `Resp`. Generated clients call this.
    pub async fn unary<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned,
    {
        self.unary_with(method, request, options, Retry::IfNotSent).await
    }

    /// Like [`Channel::unary`], for a method that is safe to run twice
    /// (`#[courier(idempotent)]`): if the connection is lost after the
    /// request went out, the call is tried on the next instance instead of
    /// failing. Generated clients call this for idempotent methods.
    pub async fn unary_idempotent<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned,
    {
        self.unary_with(method, request, options, Retry::IfLost).await
    }

    async fn unary_with<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: &CallOptions,
        retry: Retry,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned,
    {
        let encode_body = |codec, buf: &mut BytesMut| encode(codec, request, buf, method);
        let mut call = Channel::describe(method, CallKind::Unary, options, retry, &encode_body);
        let (body, codec) = run!(self, call).into_reply()?;
        // A Go server's JSON (`net/rpc/jsonrpc` sends `{"Quo":2}` for
        // Rust's `quo`) matches field names as Go does; courier's own
        // replies name them exactly.
        let decoded = if codec == Codec::Json && matches!(self.route, Route::One(Transport::Go(_))) {
            crate::codec::lenient::from_slice(&body)
                .map_err(|err| crate::codec::CodecError::Decode { codec: "json", message: err.to_string() })
        } else {
            codec.decode(&body)
        };
        decoded.map_err(|err| Status::internal(format!("could not decode the response of {method}: {err}")))
    }

    /// Call `method` with arguments `encode_body` writes (in
    /// [`Channel::codec_for`] the options); returns the encoded result.
    /// `idempotent` lets a discovered channel retry it on another instance
    /// when the connection is lost mid-call. Code generated from `.proto`
    /// files calls this.
    pub async fn unary_encoded(
        &self,
        method: &str,
        options: &CallOptions,
        idempotent: bool,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Bytes, Status> {
        let retry = if idempotent { Retry::IfLost } else { Retry::IfNotSent };
        let encode_body = |_: Codec, buf: &mut BytesMut| encode_body(buf);
        let mut call = Channel::describe(method, CallKind::Unary, options, retry, &encode_body);
        run!(self, call).into_result()
    }

    /// Call `method` with already-encoded arguments; returns the encoded
    /// result. For proxies and tools that do not know the types.
    pub async fn unary_bytes(
        &self,
        method: &str,
        body: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, Status> {
        let encode_body = |_: Codec, buf: &mut BytesMut| {
            buf.extend_from_slice(&body);
            Ok(())
        };
        let mut call = Channel::describe(method, CallKind::Unary, options, Retry::IfNotSent, &encode_body);
        run!(self, call).into_result()
    }

    /// Send a one-way call: returns once the request is queued for sending;
    /// the server runs it and replies with nothing, not even an error.
    pub async fn one_way<Req>(&self, method: &str, request: &Req, options: &CallOptions) -> Result<(), Status>
    where
        Req: Serialize + Sync + ?Sized,
    {
        let encode_body = |codec, buf: &mut BytesMut| encode(codec, request, buf, method);
        let mut call = Channel::describe(method, CallKind::OneWay, options, Retry::IfNotSent, &encode_body);
        run!(self, call).into_result().map(|_| ())
    }

    /// The deadline of a call made now with `options`, and the timeout
    /// it comes from (`None` when the deadline is inherited).
    fn deadline_and_timeout(options: &CallOptions) -> (Option<Instant>, Option<std::time::Duration>) {
        let own = options.timeout().and_then(|timeout| Instant::now().checked_add(timeout));
        // Made from a handler: the call being served bounds this one too.
        match (own, crate::context::current::deadline()) {
            (Some(own), Some(inherited)) if inherited < own => (Some(inherited), None),
            (None, Some(inherited)) => (Some(inherited), None),
            (own, _) => (own, options.timeout()),
        }
    }

    /// The deadline of a call made now with `options`.
    pub(crate) fn deadline_for(options: &CallOptions) -> Option<Instant> {
        Channel::deadline_and_timeout(options).0
    }

    /// Describe a call once. One deadline covers all of it, layers and
    /// moves between instances included; a timeout too long to represent is
    /// no timeout.
    fn describe<'a>(
        method: &'a str,
        kind: CallKind,
        options: &'a CallOptions,
        retry: Retry,
        body: EncodeBody<'a>,
    ) -> Call<'a> {
        let (deadline, timeout) = Channel::deadline_and_timeout(options);
        Call {
            method,
            kind,
            codec: options.codec(),
            metadata: Cow::Borrowed(options.metadata()),
            deadline,
            timeout,
            hash_key: options.hash_key(),
            retry,
            body,
        }
    }
}

fn encode<Req: Serialize + ?Sized>(
    codec: Codec,
    request: &Req,
    buf: &mut BytesMut,
    method: &str,
) -> Result<(), Status> {
    codec
        .encode(request, buf)
        .map_err(|err| Status::invalid_argument(format!("could not encode the request to {method}: {err}")))
}
