//! gRPC connections on the server side (cargo feature `grpc`), over h2.
//!
//! One task drives the HTTP/2 connection (h2 needs its connection polled
//! for any stream to make progress) and the streams on it: each stream is
//! a call, and its plumbing (reading the request, writing the answer) runs
//! on the connection's task too, so h2's shared state is never contended
//! across threads and no wake-up crosses to another worker. Handlers are
//! treated as on a native connection (see `super::inline`): a method whose
//! handlers are known to be quick is polled right here, and anything else,
//! or a handler that has to wait, moves to a task of its own. Closing the
//! connection drops every call on it.
//!
//! A call: check the content type and encoding, route it (see
//! `super::pipeline`), read the one request message (flow-control capacity
//! is handed back as it arrives, the size is checked before buffering),
//! hand it to the pipeline under the `grpc-timeout` deadline, dropping it
//! if the client resets the stream; answer with headers, the message and
//! `grpc-status` trailers, or a trailers-only error.
//!
//! A streaming method's call is `stream`'s: the same pipeline, with its
//! messages carried both ways while the handler runs.
//!
//! - `stream`: server-streaming, client-streaming and bidirectional calls.
//! - `health`: `grpc.health.v1.Health`.
//! - `reflection`: `grpc.reflection.v1` and `v1alpha`.

pub(crate) mod health;
pub(crate) mod reflection;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{Ping, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::admission::ConnectionSlots;
use super::budget::Reservation;
use super::pipeline::{self, Call, Incoming, Outcome, Target};
use super::{ServerConfig, ServerShared};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::grpc::{self as wire, Encoding, MessageDecoder, metadata_of, put_metadata, put_status};
use crate::protocol::sniff::Protocol;
use crate::status::Status;
use crate::transport::h2_send::StreamWindows;
pub(crate) use crate::transport::h2_send::send_data;
use crate::transport::progress::Progress;

/// Stream (per call) and connection flow-control windows. Larger than
/// HTTP/2's 64 KiB default so a multi-megabyte message is not throttled
/// to one window per round trip.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Serve one gRPC connection until the client leaves, it fails, or a
/// graceful shutdown has drained it.
pub(crate) async fn serve<T>(
    io: T,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &server.config;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(u32::try_from(config.max_concurrent_calls_per_connection).unwrap_or(u32::MAX))
        .max_header_list_size(u32::try_from(config.max_metadata_size).unwrap_or(u32::MAX))
        .max_send_buffer_size(config.write_high_water);
    let mut conn =
        match tokio::time::timeout(config.handshake_timeout, builder.handshake::<_, Bytes>(io)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "gRPC handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "gRPC handshake timed out");
                return;
            }
        };
    let keepalive = keepalive(conn.ping_pong(), config.keepalive_interval);
    tokio::pin!(keepalive);
    let mut calls = FuturesUnordered::new();
    let slots = Arc::new(server.admission.connection());
    // Streaming calls widen the connection's window (see `StreamWindows`).
    let windows = Arc::new(StreamWindows::default());
    let mut draining: Option<tokio::time::Instant> = None;
    let drain_timer = tokio::time::sleep(Duration::from_secs(u64::from(u32::MAX)));
    tokio::pin!(drain_timer);
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    calls.push(call(request, respond, server.clone(), slots.clone(), peer, shutdown.clone(), windows.clone()));
                }
                Some(Err(err)) => {
                    if !err.is_io() && !err.is_go_away() {
                        tracing::debug!(%peer, %err, "gRPC connection error");
                    }
                    break;
                }
                // The client closed, or a graceful shutdown finished: every
                // stream is done.
                None => break,
            },
            Some(()) = calls.next(), if !calls.is_empty() => {}
            () = windows.changed() => conn.set_target_window_size(windows.target(CONNECTION_WINDOW, STREAM_WINDOW)),
            () = &mut keepalive => {
                tracing::info!(%peer, "closing gRPC connection: peer stopped answering pings");
                break;
            }
            changed = shutdown.changed(), if draining.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    // GOAWAY now; h2 keeps the connection until the streams
                    // already started are answered.
                    conn.graceful_shutdown();
                    let deadline = tokio::time::Instant::now() + config.drain_timeout;
                    draining = Some(deadline);
                    drain_timer.as_mut().reset(deadline);
                }
            }
            () = &mut drain_timer, if draining.is_some() => {
                tracing::info!(%peer, "drain timeout: cancelling gRPC calls still running");
                break;
            }
        }
    }
    // Whatever is still running has nobody left to answer to: dropping the
    // calls drops their handlers (and aborts those in tasks of their own).
    drop(calls);
}

/// Resolves when the peer stops answering pings sent after `interval`
/// without a pong; never, without an interval.
async fn keepalive(ping_pong: Option<h2::PingPong>, interval: Option<Duration>) {
    let (Some(mut ping_pong), Some(interval)) = (ping_pong, interval) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(interval, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            // The connection is closing; its own loop notices.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// A call's answer, before it is written.
struct Reply {
    codec: Codec,
    encoding: Encoding,
    metadata: Metadata,
    outcome: Result<Bytes, Status>,
}

impl Reply {
    fn error(codec: Codec, status: Status) -> Reply {
        Reply { codec, encoding: Encoding::Identity, metadata: Metadata::new(), outcome: Err(status) }
    }
}

/// One stream: answer it, then write the answer.
async fn call(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    server: Arc<ServerShared>,
    slots: Arc<ConnectionSlots>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    windows: Arc<StreamWindows>,
) {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        send_http_error(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return;
    }
    let content_type =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(codec) = wire::codec_of_content_type(content_type) else {
        send_http_error(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return;
    };
    let path = parts.uri.path();
    if health::handles(path) {
        return health::serve(path, &parts.headers, codec, body, respond, &server, shutdown).await;
    }
    if reflection::handles(path) {
        return reflection::serve(codec, body, respond, &server, shutdown).await;
    }
    let reply =
        answer(&parts.headers, path, codec, body, &mut respond, &server, &slots, peer, shutdown, &windows)
            .await;
    if let Some(reply) = reply {
        send_reply(&mut respond, reply, &server.config).await;
    }
}

/// Route, read, and run through the pipeline: the reply to write, or
/// `None` for a streaming call, which wrote its own.
#[allow(clippy::too_many_arguments)]
async fn answer(
    headers: &HeaderMap,
    path: &str,
    codec: Codec,
    mut body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    windows: &Arc<StreamWindows>,
) -> Option<Reply> {
    let route = match pipeline::route(server, Target::Path(path), codec) {
        Ok(route) => route,
        Err(status) => return Some(Reply::error(codec, status)),
    };
    let encoding = match request_encoding(headers) {
        Ok(encoding) => encoding,
        Err(status) => return Some(Reply::error(codec, status)),
    };
    let deadline = match headers.get(wire::names::TIMEOUT) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(wire::parse_timeout) {
            // A deadline too far away to represent is no deadline.
            Some(timeout) => Instant::now().checked_add(timeout),
            None => {
                return Some(Reply::error(codec, Status::invalid_argument("malformed grpc-timeout header")));
            }
        },
    };
    // Replies are compressed as the request was, if the client takes it.
    let reply_encoding =
        if encoding == Encoding::Gzip && accepts_gzip(headers) { Encoding::Gzip } else { Encoding::Identity };
    if route.method.kind.is_streaming() {
        let request =
            stream::StreamRequest { route, codec, headers, encoding, reply_encoding, deadline, peer };
        let _window = windows.open();
        stream::serve(request, body, respond, server, slots, &shutdown).await;
        return None;
    }
    let read = read_unary(&mut body, encoding, server);
    let request = match deadline {
        None => read.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(request) => request,
            Err(_) => Err(Status::deadline_exceeded("the deadline passed before the request arrived")),
        },
    };
    let (request, memory) = match request {
        Ok(request) => request,
        Err(status) => return Some(Reply::error(codec, status)),
    };
    // Admission happens once the request is here: a client that sends its
    // request slowly holds only its own stream's flow-control window.
    let incoming = Incoming {
        route,
        protocol: Protocol::Grpc,
        codec,
        deadline,
        metadata: metadata_of(headers),
        peer,
        body: request,
        memory,
        stream: None,
    };
    let call = match pipeline::start(server, slots, incoming, &shutdown) {
        Ok(call) => call,
        Err(status) => return Some(Reply::error(codec, status)),
    };
    // A client that resets the stream has given up: drop the handler.
    let reset = std::future::poll_fn(|task| respond.poll_reset(task));
    let outcome = tokio::select! {
        outcome = run_call(call) => outcome,
        _ = reset => Outcome::error(Status::cancelled("the client cancelled the call")),
    };
    Some(Reply { codec, encoding: reply_encoding, metadata: outcome.metadata, outcome: outcome.result })
}

/// Run a call: polled here if its method is known to be quick and it
/// finishes at once, in a task of its own otherwise (aborted if this
/// future is dropped).
async fn run_call(call: Call) -> Outcome {
    let call = if call.may_run_inline() {
        let mut call = call;
        match std::future::poll_fn(|task| std::task::Poll::Ready(call.poll_inline(task))).await {
            Some(result) => return call.finish(result),
            None => call,
        }
    } else {
        call
    };
    let mut task = AbortOnDrop(tokio::spawn(call.run()));
    match (&mut task.0).await {
        Ok(outcome) => outcome,
        Err(err) => Outcome::error(Status::internal(format!("the handler's task failed: {err}"))),
    }
}

/// Aborts a handler's task when the call is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Outcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `grpc-encoding` a request declares, or the error for one we lack.
pub(crate) fn request_encoding(headers: &HeaderMap) -> Result<Encoding, Status> {
    match headers.get(wire::names::ENCODING).map(|v| v.to_str().ok().and_then(Encoding::parse)) {
        None => Ok(Encoding::Identity),
        Some(Some(encoding)) => Ok(encoding),
        Some(None) => Err(Status::unimplemented(format!(
            "unsupported grpc-encoding; this server accepts {}",
            wire::ACCEPT_ENCODING
        ))),
    }
}

/// Read a unary call's one request message, with its bytes reserved
/// against the server's memory budget (held until the call is done). The
/// message must keep arriving (see `transport::progress`): a stream whose
/// body stalls or trickles is answered with an error, which resets it.
///
/// One empty, uncompressed message after the request is ignored: Apache
/// Dubbo-python's Triple client (`apache-dubbo` 3.0.0b1) ends every unary
/// request with one (its `done_writing` frames `b""` instead of sending a
/// bare END_STREAM). It carries nothing; anything more is refused.
pub(crate) async fn read_unary(
    body: &mut RecvStream,
    encoding: Encoding,
    server: &ServerShared,
) -> Result<(Bytes, Reservation), Status> {
    let max_message = server.config.max_frame_size;
    let timeouts = server.config.request_timeouts;
    let mut decoder = MessageDecoder::new(max_message);
    let mut memory = server.budget.empty();
    let mut message = None;
    let mut empty_trailer = false;
    // The stream's headers are here; its body must follow.
    let mut progress = Progress::default();
    progress.start(Instant::now());
    loop {
        let next = match progress.deadline(&timeouts) {
            None => body.data().await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), body.data()).await {
                Ok(next) => next,
                Err(_) => match progress.check(Instant::now(), &timeouts) {
                    Err(overdue) => {
                        server.stats.request_timed_out();
                        tracing::info!(%overdue, "resetting a gRPC stream: its request is overdue");
                        return Err(Status::deadline_exceeded(format!(
                            "request not received in time: {overdue}"
                        )));
                    }
                    Ok(()) => continue,
                },
            },
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|err| Status::cancelled(format!("the request stream failed: {err}")))?;
        progress.received(chunk.len(), Instant::now());
        // Give the window back as the bytes are taken in; the decoder's
        // limit and the budget bound what they can add up to.
        let _ = body.flow_control().release_capacity(chunk.len());
        decoder.push(&chunk);
        // Reserve what the message says it will take as soon as its prefix
        // is here, before its bytes are buffered.
        if let Some(declared) = decoder.pending_len()
            && declared <= max_message.saturating_add(5)
        {
            memory.grow_to(message.as_ref().map_or(0, |m: &wire::Message| m.data.len()) + declared)?;
        }
        while let Some(next) = decoder.next_message().map_err(decode_error)? {
            if message.is_some() && !empty_trailer && next.data.is_empty() && !next.compressed {
                empty_trailer = true;
                continue;
            }
            if message.replace(next).is_some() {
                return Err(Status::unimplemented(
                    "a unary method takes exactly one request message; got several",
                ));
            }
        }
    }
    decoder.finish().map_err(decode_error)?;
    let message = message.ok_or_else(|| Status::unimplemented("the request carried no message"))?;
    let compressed = message.compressed;
    let bytes = wire::decompress(message, encoding, max_message).map_err(decode_error)?;
    if compressed {
        // What the call holds now is the inflated message.
        memory.grow_to(bytes.len())?;
        memory.shrink_to(bytes.len());
    }
    Ok((bytes, memory))
}

fn decode_error(err: wire::GrpcError) -> Status {
    match err {
        wire::GrpcError::TooLarge { .. } => Status::resource_exhausted(format!("request rejected: {err}")),
        other => Status::internal(format!("malformed request body: {other}")),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(wire::names::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(wire::accepts_gzip)
}

/// A `200` with gRPC's response headers for `codec`.
pub(crate) fn response_head(codec: Codec) -> Response<()> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(wire::content_type_of(codec)));
    headers.insert(wire::names::ACCEPT_ENCODING, HeaderValue::from_static(wire::ACCEPT_ENCODING));
    response
}

/// Write the answer: headers, the message and trailers, or, for an error,
/// one trailers-only response. The message goes out as the client's
/// flow-control window allows (see `transport::h2_send`).
async fn send_reply(respond: &mut SendResponse<Bytes>, reply: Reply, config: &ServerConfig) {
    let max_message = config.max_frame_size;
    let message = match reply.outcome.and_then(|body| frame_message(&body, reply.encoding, max_message)) {
        Ok(message) => message,
        Err(status) => return send_trailers_only(respond, reply.codec, &status, &reply.metadata),
    };
    let mut response = response_head(reply.codec);
    if reply.encoding == Encoding::Gzip {
        response.headers_mut().insert(wire::names::ENCODING, HeaderValue::from_static("gzip"));
    }
    put_metadata(response.headers_mut(), &reply.metadata);
    let Ok(mut stream) = respond.send_response(response, false) else { return };
    if send_data(&mut stream, message, config.keepalive_interval).await.is_ok() {
        send_ok_trailers(&mut stream);
    }
}

/// End a stream with `grpc-status: 0`.
pub(crate) fn send_ok_trailers(stream: &mut SendStream<Bytes>) {
    let mut trailers = HeaderMap::new();
    trailers.insert(wire::names::STATUS, HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// A result as one length-prefixed message, compressed if asked.
pub(crate) fn frame_message(body: &[u8], encoding: Encoding, max_message: usize) -> Result<Bytes, Status> {
    crate::transport::h2_send::frame(body, encoding, max_message)
}

/// An error as a trailers-only response.
pub(crate) fn send_trailers_only(
    respond: &mut SendResponse<Bytes>,
    codec: Codec,
    status: &Status,
    metadata: &Metadata,
) {
    let mut response = response_head(codec);
    put_metadata(response.headers_mut(), metadata);
    put_status(response.headers_mut(), status);
    let _ = respond.send_response(response, true);
}

/// A request that is not gRPC at all gets a plain HTTP status.
fn send_http_error(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    if let Ok(response) = Response::builder().status(status).body(()) {
        let _ = respond.send_response(response, true);
    }
}
