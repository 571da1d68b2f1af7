//! [`Channel`]: where calls go. Either one address (a pool of multiplexed
//! connections, see [`Direct`]) or the instances of a discovered service,
//! balanced (see [`Balanced`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ConnectError;
use super::balanced::Balanced;
use super::config::ChannelBuilder;
use super::direct::Direct;
use super::options::CallOptions;
use crate::codec::Codec;
use crate::protocol::native::{Frame, FrameKind, ResponseHead};
use crate::status::{Code, Status};

/// A handle for calling services. Cheap to clone; clones share connections.
///
/// A channel to one address ([`Channel::connect`], [`Channel::lazy`]) opens
/// connections lazily and re-opens them after failures, waiting a jittered,
/// growing delay between failed attempts; while a reconnect is backing off,
/// calls fail fast with `Unavailable` rather than queueing.
///
/// A channel to a discovered service ([`Channel::discover`]) spreads calls
/// over the service's instances as the registry reports them, moving to the
/// next instance when one cannot be reached.
#[derive(Clone)]
pub struct Channel {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Direct(Arc<Direct>),
    Balanced(Arc<Balanced>),
    #[cfg(feature = "grpc")]
    Grpc(Arc<super::grpc::GrpcChannel>),
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
    /// Configure a channel to `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder::new(addr)
    }

    /// A channel with default settings that connects on its first call.
    pub fn lazy(addr: impl Into<String>) -> Channel {
        ChannelBuilder::new(addr).build_lazy()
    }

    /// A channel with default settings, connected now.
    pub async fn connect(addr: impl Into<String>) -> Result<Channel, ConnectError> {
        ChannelBuilder::new(addr).connect().await
    }

    /// Calls to the instances of `service` in `registry`, balanced; see
    /// [`DiscoverBuilder`](super::DiscoverBuilder).
    pub fn discover(
        registry: &crate::registry::Registry,
        service: impl Into<String>,
    ) -> super::DiscoverBuilder<Channel> {
        super::DiscoverBuilder::new(registry.clone(), service.into())
    }

    pub(crate) fn direct(direct: Arc<Direct>) -> Channel {
        Channel { kind: Kind::Direct(direct) }
    }

    pub(crate) fn balanced(balanced: Arc<Balanced>) -> Channel {
        Channel { kind: Kind::Balanced(balanced) }
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn grpc(grpc: Arc<super::grpc::GrpcChannel>) -> Channel {
        Channel { kind: Kind::Grpc(grpc) }
    }

    /// Where calls go: `host:port`, `grpc://host:port`, or
    /// `discover:Service`.
    pub fn target(&self) -> String {
        match &self.kind {
            Kind::Direct(direct) => direct.addr().to_owned(),
            Kind::Balanced(balanced) => format!("discover:{}", balanced.service()),
            #[cfg(feature = "grpc")]
            Kind::Grpc(grpc) => format!("grpc://{}", grpc.addr()),
        }
    }

    /// The instances a discovered channel knows now (`None` for a channel
    /// to one address).
    pub fn instances(&self) -> Option<Vec<crate::discovery::Instance>> {
        match &self.kind {
            Kind::Balanced(balanced) => Some(balanced.instances()),
            _ => None,
        }
    }

    /// The codec calls made with `options` travel in. gRPC carries protobuf
    /// or JSON, so the binary codec becomes JSON on a gRPC channel.
    /// Generated clients decode a service's own errors with it.
    pub fn codec_for(&self, options: &CallOptions) -> Codec {
        match (&self.kind, options.codec()) {
            #[cfg(feature = "grpc")]
            (Kind::Grpc(_), Codec::Binary) => Codec::Json,
            (_, codec) => codec,
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
        let codec = self.codec_for(options);
        let body = self
            .send(FrameKind::Request, method, options, retry, &|buf| encode(codec, request, buf, method))
            .await?;
        let body = reply(body, method)?;
        codec
            .decode(&body)
            .map_err(|err| Status::internal(format!("could not decode the response of {method}: {err}")))
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
        let body = self.send(FrameKind::Request, method, options, retry, encode_body).await?;
        reply(body, method)
    }

    /// Call `method` with already-encoded arguments; returns the encoded
    /// result. For proxies and tools that do not know the types.
    pub async fn unary_bytes(
        &self,
        method: &str,
        body: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, Status> {
        let body = self
            .send(FrameKind::Request, method, options, Retry::IfNotSent, &|buf| {
                buf.extend_from_slice(&body);
                Ok(())
            })
            .await?;
        reply(body, method)
    }

    /// Send a one-way call: returns once the request is queued for sending;
    /// the server runs it and replies with nothing, not even an error.
    pub async fn one_way<Req>(&self, method: &str, request: &Req, options: &CallOptions) -> Result<(), Status>
    where
        Req: Serialize + Sync + ?Sized,
    {
        let codec = self.codec_for(options);
        self.send(FrameKind::OneWay, method, options, Retry::IfNotSent, &|buf| {
            encode(codec, request, buf, method)
        })
        .await
        .map(|_| ())
    }

    async fn send(
        &self,
        kind: FrameKind,
        method: &str,
        options: &CallOptions,
        retry: Retry,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Option<Bytes>, Status> {
        // One deadline for the whole call, moves between instances included.
        // A timeout too long to represent is no timeout.
        let deadline = options.timeout().and_then(|timeout| Instant::now().checked_add(timeout));
        let codec = self.codec_for(options);
        let attempt = async {
            let frame = match &self.kind {
                Kind::Direct(direct) => direct
                    .attempt(kind, method, options, deadline, encode_body)
                    .await
                    .map_err(super::direct::AttemptError::into_status),
                Kind::Balanced(balanced) => {
                    balanced.send(kind, method, options, deadline, retry, encode_body).await
                }
                #[cfg(feature = "grpc")]
                Kind::Grpc(grpc) => {
                    return self.send_grpc(grpc, kind, method, codec, options, deadline, encode_body).await;
                }
            }?;
            frame.map(|frame| reply_body(&frame, codec, method)).transpose()
        };
        let Some(deadline) = deadline else {
            return attempt.await;
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{method} did not complete within its {:?} timeout",
                options.timeout().unwrap_or_default()
            ))),
        }
    }
}

impl Channel {
    /// A call over gRPC. gRPC has no one-way calls: a one-way call runs as
    /// a unary call whose reply nobody waits for.
    #[cfg(feature = "grpc")]
    #[allow(clippy::too_many_arguments)]
    async fn send_grpc(
        &self,
        grpc: &Arc<super::grpc::GrpcChannel>,
        kind: FrameKind,
        method: &str,
        codec: Codec,
        options: &CallOptions,
        deadline: Option<Instant>,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Option<Bytes>, Status> {
        if kind == FrameKind::OneWay {
            let mut body = BytesMut::new();
            encode_body(&mut body)?;
            let body = body.freeze();
            let (grpc, method, options) = (grpc.clone(), method.to_owned(), options.clone());
            tokio::spawn(async move {
                let sent = grpc
                    .unary(&method, codec, &options, deadline, &|buf| {
                        buf.extend_from_slice(&body);
                        Ok(())
                    })
                    .await;
                if let Err(err) = sent {
                    tracing::debug!(status = %err.into_status(), "one-way gRPC call failed");
                }
            });
            return Ok(None);
        }
        grpc.unary(method, codec, options, deadline, encode_body)
            .await
            .map(Some)
            .map_err(super::direct::AttemptError::into_status)
    }
}

/// When a call may move to another instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only if nothing was sent (the instance could not be reached).
    IfNotSent,
    /// Also if the connection was lost after sending (idempotent methods).
    IfLost,
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

fn reply(body: Option<Bytes>, method: &str) -> Result<Bytes, Status> {
    body.ok_or_else(|| Status::internal(format!("no response for {method}")))
}

/// The body of a successful reply, or the status the server sent.
fn reply_body(frame: &Frame, codec: Codec, method: &str) -> Result<Bytes, Status> {
    let head = ResponseHead::decode(&frame.meta)
        .map_err(|err| Status::internal(format!("malformed response to {method}: {err}")))?;
    if head.code != 0 {
        let code = Code::from_u32(head.code);
        let details = Bytes::copy_from_slice(head.details);
        return Err(if head.application_error {
            Status::application(code, head.message, details)
        } else {
            Status::new(code, head.message).with_details(details)
        });
    }
    if frame.header.codec != codec.id() {
        return Err(Status::internal(format!(
            "the response to {method} used codec {} but the call used {codec}",
            frame.header.codec
        )));
    }
    Ok(frame.body.clone())
}
