//! Streaming calls on the client: open a stream on an endpoint (or the
//! first instance of a discovered service that takes it), then hand the
//! caller its halves.
//!
//! A stream is opened once and never moved: after its first message it
//! cannot be replayed on another instance, so neither retries nor hedging
//! apply. Opening it is retried on the next instance while nothing was
//! sent, as for unary calls. The call's deadline covers the whole stream.
//!
//! Requests a caller gives as a `Stream` are sent by a small task of the
//! call's own ("the pump"), which waits for flow-control credit before
//! each message and stops as soon as the call ends either way.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::endpoint::Endpoint;
use super::protocols::Transport;
use super::route::Route;
use super::{CallOptions, Channel};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::resilience::retry::AttemptError;
use crate::service::MethodKind;
use crate::status::Status;
use crate::stream::Streaming;
use crate::stream::pipe::{RawReceiver, RawSender};

/// A streaming call as an endpoint opens it.
#[derive(Debug)]
pub(crate) struct StreamCall<'a> {
    /// `Service.Method`.
    pub(crate) method: &'a str,
    /// The codec the caller asked for (an endpoint may carry another; the
    /// opened stream says which).
    pub(crate) codec: Codec,
    pub(crate) metadata: &'a Metadata,
    /// Over the whole stream.
    pub(crate) deadline: Option<Instant>,
}

/// The caller's halves of an opened stream.
#[derive(Debug)]
pub(crate) struct OpenedStream {
    pub(crate) sender: RawSender,
    /// The replies, then the end: `None` after an OK status, one `Err`
    /// for any other end (the deadline included: the endpoint sets it).
    pub(crate) receiver: RawReceiver,
    /// The codec messages travel in both ways.
    pub(crate) codec: Codec,
}

impl Channel {
    /// Open a stream for `method` with `options`. (No kind is sent: the
    /// server knows which way its methods stream.)
    pub(crate) async fn open_stream(
        &self,
        method: &str,
        options: &CallOptions,
    ) -> Result<OpenedStream, Status> {
        let deadline = Channel::deadline_for(options);
        let call = StreamCall { method, codec: options.codec(), metadata: options.metadata(), deadline };
        let open = async {
            match &self.route {
                Route::One(transport) => {
                    transport.open_stream(&call).await.map_err(AttemptError::into_status)
                }
                Route::Balanced(balanced) => balanced.open_stream(&call).await,
            }
        };
        match deadline {
            None => open.await,
            Some(at) => tokio::time::timeout_at(at.into(), open).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "{method}: the stream did not open before its deadline"
                )))
            }),
        }
    }
}

impl super::balanced::Balanced {
    /// Open `call` on the first instance, in the balancer's order, that
    /// takes it; while nothing was sent, the next is tried.
    async fn open_stream(&self, call: &StreamCall<'_>) -> Result<OpenedStream, Status> {
        let now = Instant::now();
        let set = self.snapshot();
        let order = self.order(&set, None, now);
        if order.is_empty() {
            return Err(self.nothing_known());
        }
        let mut last = None;
        for pick in order.iter().take(crate::resilience::retry::MAX_ATTEMPTS) {
            match pick.member.transport.open_stream(call).await {
                Ok(opened) => return Ok(opened),
                Err(AttemptError::NotSent(status)) => last = Some(status),
                Err(AttemptError::Failed(status)) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| self.nothing_known()))
    }
}

impl Transport {
    pub(crate) async fn open_stream(&self, call: &StreamCall<'_>) -> Result<OpenedStream, AttemptError> {
        match self {
            Transport::Native(native) => native.open_stream(call).await,
            #[cfg(feature = "grpc")]
            Transport::Grpc(grpc) => grpc.open_stream(call).await,
            Transport::Go(go) => Err(AttemptError::NotSent(Status::unimplemented(format!(
                "{}: Go's net/rpc has no streams ({} speaks it)",
                call.method,
                go.addr()
            )))),
        }
    }
}

impl Channel {
    /// Call a streaming `method` of `kind` with already-encoded messages
    /// (in [`Channel::codec_for`] the options), for tools and proxies that
    /// do not know the types: sends what `requests` yields (one message
    /// for a server-streaming method), then half-closes; the replies come
    /// back encoded (one for a client-streaming method).
    pub async fn stream_bytes<S>(
        &self,
        method: &str,
        kind: MethodKind,
        requests: S,
        options: &CallOptions,
    ) -> Result<Streaming<Bytes>, Status>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        if kind == MethodKind::Unary {
            return Err(Status::invalid_argument(format!(
                "{method}: a unary method has no stream; call it with unary_bytes"
            )));
        }
        let OpenedStream { sender, receiver, codec } = self.open_stream(method, options).await?;
        tokio::spawn(pump(sender, codec, requests, copy_bytes, method.to_string()));
        Ok(Streaming::new(receiver, codec, |_, body| Ok(body.clone())))
    }
}

fn copy_bytes(_: Codec, message: &Bytes, buf: &mut BytesMut) -> Result<(), Status> {
    buf.extend_from_slice(message);
    Ok(())
}

/// How the request messages of a stream are encoded.
pub(crate) type EncodeFn<T> = fn(Codec, &T, &mut BytesMut) -> Result<(), Status>;

/// Send each of `requests`, then half-close; stop early when the call
/// ends (the sender's stream is closed) or a message does not encode.
async fn pump<T, S>(mut sender: RawSender, codec: Codec, requests: S, encode: EncodeFn<T>, method: String)
where
    S: Stream<Item = T> + Send + 'static,
{
    let mut requests = std::pin::pin!(requests);
    loop {
        // Wait for the next request, unless the call ends meanwhile.
        let next = tokio::select! {
            biased;
            _ = sender.closed() => return,
            next = requests.next() => next,
        };
        let Some(request) = next else { break };
        let mut buf = BytesMut::new();
        if let Err(status) = encode(codec, &request, &mut buf) {
            tracing::debug!(%method, %status, "a stream request does not encode; cancelling the stream");
            sender.cancel(Status::invalid_argument(format!(
                "a request of {method} does not encode: {}",
                status.message()
            )));
            return;
        }
        if sender.send(buf.freeze()).await.is_err() {
            return;
        }
    }
    sender.finish();
}

impl super::Stub {
    /// Call a server-streaming method: one request, a stream of replies.
    pub async fn server_streaming<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        encode: EncodeFn<Req>,
        decode: fn(Codec, &Bytes) -> Result<Resp, Status>,
    ) -> Result<Streaming<Resp>, Status> {
        let OpenedStream { mut sender, receiver, codec } =
            self.channel().open_stream(method, self.options()).await?;
        let mut buf = BytesMut::new();
        encode(codec, request, &mut buf)?;
        sender.send(buf.freeze()).await?;
        sender.finish();
        Ok(Streaming::new(receiver, codec, decode))
    }

    /// Call a client-streaming method: a stream of requests, one reply.
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        method: &str,
        requests: S,
        encode: EncodeFn<Req>,
        decode: fn(Codec, &Bytes) -> Result<Resp, Status>,
    ) -> Result<Resp, Status>
    where
        Req: Send + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        let OpenedStream { sender, mut receiver, codec } =
            self.channel().open_stream(method, self.options()).await?;
        let pump = tokio::spawn(pump(sender, codec, requests, encode, method.to_string()));
        // Dropping this future (the caller gave up) drops the receiver,
        // which cancels the stream, which stops the pump.
        let _stop_pump = AbortOnDrop(pump);
        let reply = receiver.single(method).await?;
        decode(codec, &reply)
    }

    /// Call a bidirectional method: a stream each way.
    pub async fn bidirectional<Req, Resp, S>(
        &self,
        method: &str,
        requests: S,
        encode: EncodeFn<Req>,
        decode: fn(Codec, &Bytes) -> Result<Resp, Status>,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: Send + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        let OpenedStream { sender, receiver, codec } =
            self.channel().open_stream(method, self.options()).await?;
        // The pump ends by itself once the replies' end closes its side.
        tokio::spawn(pump(sender, codec, requests, encode, method.to_string()));
        Ok(Streaming::new(receiver, codec, decode))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
