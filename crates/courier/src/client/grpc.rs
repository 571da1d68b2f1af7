//! [`GrpcEndpoint`]: calls to one address over gRPC (HTTP/2 via h2), for
//! servers that are not courier, or paths only HTTP/2 gets through.
//!
//! The same [`Pool`] as the native client keeps the connections (opened
//! lazily, reopened with backoff); each connection is an h2 client whose
//! driver task also sends keepalive pings (every 5 minutes by default, and
//! only while calls are in flight: grpc-go servers punish frequent or idle
//! pings). A call the
//! server refused unprocessed (GOAWAY, REFUSED_STREAM) moves to a fresh
//! connection. The response's head and trailers are read here, into the
//! call's [`Outcome`]: above, a gRPC answer looks like a native one. A
//! call is one stream: request
//! headers (`content-type` from the codec, `grpc-timeout` from the
//! deadline, metadata), one length-prefixed message, then the response's
//! message and `grpc-status` trailers, or a trailers-only error. Dropping
//! the call resets its stream, which the server sees as a cancel.
//!
//! A streaming call is one stream too, whose messages a task of its own
//! carries both ways within HTTP/2's flow control (`drive_stream`); its
//! replies end with `None` only after `grpc-status: 0`, and with an error
//! for anything else, a stream cut short included.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{Ping, Reason, RecvStream, SendStream};
use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use tokio::net::TcpStream;

use super::call::{Call, CallKind, Outcome};
use super::endpoint::Endpoint;
use super::error::ConnectError;
use super::pool::{Connect, Pool};
use super::settings::ChannelConfig;
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::grpc::{self as wire, Encoding, MessageDecoder};
use crate::resilience::retry::{AttemptError, MAX_DRAIN_RETRIES};
use crate::service::BoxFuture;
use crate::status::{Code, Status};
use crate::stream::credit::DEFAULT_STREAM_WINDOW;
use crate::stream::pipe::Pipe;
use crate::transport::h2_send::{self, H2Wire, Next, OpenStream, StreamWindows, WireShared};
use crate::transport::tcp;

/// Flow-control windows: large enough for multi-megabyte messages.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// One HTTP/2 connection.
pub(crate) struct GrpcConnection {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Calls in flight; keepalive pings only while there are some.
    active: Arc<AtomicUsize>,
    /// The `:authority` of every request, parsed once.
    authority: Authority,
    /// Streams open on it, each widening its window (see `StreamWindows`).
    windows: Arc<StreamWindows>,
}

impl Connect for GrpcConnection {
    type Options = ();

    fn connect(
        addr: String,
        config: ChannelConfig,
        (): (),
    ) -> BoxFuture<'static, Result<GrpcConnection, ConnectError>> {
        Box::pin(async move {
            let timeout = config.connect_timeout;
            let io_error = |source| ConnectError::Io { addr: addr.clone(), source };
            let handshake = async {
                let stream = TcpStream::connect(&addr).await.map_err(io_error)?;
                tcp::configure(&stream);
                h2::client::Builder::new()
                    .initial_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONNECTION_WINDOW)
                    .max_send_buffer_size(config.write_high_water)
                    .handshake::<_, Bytes>(stream)
                    .await
                    .map_err(|err| ConnectError::Handshake { addr: addr.clone(), reason: err.to_string() })
            };
            let (send, mut connection) = match tokio::time::timeout(timeout, handshake).await {
                Ok(result) => result?,
                Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
            };
            let closed = Arc::new(AtomicBool::new(false));
            let active = Arc::new(AtomicUsize::new(0));
            let ping_pong = connection.ping_pong();
            let pinging = active.clone();
            let driver_closed = closed.clone();
            let keepalive_interval = config.keepalive_interval;
            let windows = Arc::new(StreamWindows::default());
            let driver_windows = windows.clone();
            tokio::spawn(async move {
                let keepalive = keepalive(ping_pong, keepalive_interval, pinging);
                tokio::pin!(keepalive);
                loop {
                    tokio::select! {
                        result = &mut connection => {
                            if let Err(err) = result {
                                tracing::debug!(%err, "gRPC connection ended");
                            }
                            break;
                        }
                        () = &mut keepalive => {
                            tracing::info!("gRPC connection: the server stopped answering pings");
                            break;
                        }
                        () = driver_windows.changed() => {
                            connection.set_target_window_size(driver_windows.target(CONNECTION_WINDOW, STREAM_WINDOW));
                        }
                    }
                }
                driver_closed.store(true, Ordering::Release);
            });
            let authority = Authority::try_from(addr.as_str())
                .map_err(|err| ConnectError::Handshake { addr: addr.clone(), reason: err.to_string() })?;
            Ok(GrpcConnection { send, closed, active, authority, windows })
        })
    }

    fn is_usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }
}

/// Resolves when a ping goes unanswered for `interval`; never without one.
/// No pings while no call is in flight (see `ChannelBuilder::keepalive_interval`).
async fn keepalive(ping_pong: Option<h2::PingPong>, interval: Option<Duration>, active: Arc<AtomicUsize>) {
    let (Some(mut ping_pong), Some(interval)) = (ping_pong, interval) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        if active.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(interval, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// One address spoken to in gRPC. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GrpcEndpoint {
    pool: Arc<Pool<GrpcConnection>>,
}

impl GrpcEndpoint {
    /// Open a streaming call: send its request headers and hand the
    /// caller its halves at once (a server may wait for the first request
    /// message before it sends its headers, so waiting for them here would
    /// deadlock a bidirectional call). A small task of the stream's own then
    /// carries its messages both ways (see `drive_stream`). A connection
    /// that refuses new streams (GOAWAY) moves the call to a fresh one;
    /// once the headers went out, nothing is retried.
    pub(crate) async fn open_stream(
        &self,
        call: &super::streams::StreamCall<'_>,
    ) -> Result<super::streams::OpenedStream, AttemptError> {
        let codec = self.wire_codec(call.codec);
        let method = call.method;
        let path = grpc_path(method).ok_or_else(|| {
            AttemptError::Failed(Status::invalid_argument(format!("`{method}` is not `Service.Method`")))
        })?;
        let max_message = self.pool.config.max_frame_size;
        let mut refused = None;
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
            let request =
                build_request(&connection.authority, path.clone(), codec, call.metadata, call.deadline)
                    .map_err(AttemptError::Failed)?;
            let active = Active::enter(connection.active.clone());
            let opened = match connection.send.clone().ready().await {
                Ok(mut send) => send.send_request(request, false),
                Err(err) => Err(err),
            };
            let (response, stream) = match opened {
                Ok(opened) => opened,
                Err(err) => match not_sent(&err) {
                    Attempt::Refused { status, retire } => {
                        if retire {
                            connection.closed.store(true, Ordering::Release);
                        }
                        refused = Some(status);
                        continue;
                    }
                    Attempt::Failed(err) => return Err(err),
                },
            };
            let shared = WireShared::new(DEFAULT_STREAM_WINDOW);
            // Requests go uncompressed: the server's encodings are not known
            // before its headers.
            let wire = Arc::new(H2Wire::new(shared.clone(), Encoding::Identity, max_message));
            let (pipe, sender, receiver) = crate::stream::client_halves(
                wire,
                DEFAULT_STREAM_WINDOW,
                DEFAULT_STREAM_WINDOW,
                call.deadline,
            );
            let window = connection.windows.open();
            tokio::spawn(drive_stream(response, stream, pipe, shared, max_message, codec, (active, window)));
            return Ok(super::streams::OpenedStream { sender, receiver, codec });
        }
        Err(AttemptError::NotSent(refused.unwrap_or_else(|| {
            Status::unavailable(format!("every connection to {} is shutting down", self.pool.addr))
        })))
    }

    pub(crate) fn new(addr: String, config: ChannelConfig) -> GrpcEndpoint {
        GrpcEndpoint { pool: Arc::new(Pool::new(addr, config, ())) }
    }

    /// Frame the request as one gRPC message.
    fn message(&self, call: &Call<'_>, codec: Codec) -> Result<Bytes, AttemptError> {
        let max_message = self.pool.config.max_frame_size;
        let mut body = BytesMut::new();
        // A request that cannot be encoded or sent is the call's own fault:
        // any other instance would refuse it the same way.
        (call.body)(codec, &mut body).map_err(AttemptError::Failed)?;
        if body.len() > max_message {
            return Err(AttemptError::Failed(Status::resource_exhausted(format!(
                "the request of {} bytes exceeds the limit of {max_message} bytes",
                body.len()
            ))));
        }
        let mut message = BytesMut::with_capacity(body.len() + wire::PREFIX_LEN);
        wire::encode_message(&mut message, false, &body)
            .map_err(|err| AttemptError::Failed(Status::resource_exhausted(err.to_string())))?;
        Ok(message.freeze())
    }

    /// One unary exchange: `path` is `/package.Service/Method`.
    async fn exchange(
        &self,
        path: PathAndQuery,
        codec: Codec,
        metadata: &Metadata,
        deadline: Option<Instant>,
        message: Bytes,
    ) -> Result<Outcome, AttemptError> {
        let max_message = self.pool.config.max_frame_size;
        // A connection the server is closing refuses new streams unprocessed
        // (GOAWAY, REFUSED_STREAM); such a call moves to a fresh connection.
        let mut refused = None;
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
            let request = build_request(&connection.authority, path.clone(), codec, metadata, deadline)
                .map_err(AttemptError::Failed)?;
            match attempt(&connection, request, message.clone(), max_message, codec).await {
                Err(Attempt::Refused { status, retire }) => {
                    if retire {
                        connection.closed.store(true, Ordering::Release);
                    }
                    refused = Some(status);
                }
                Err(Attempt::Failed(err)) => return Err(err),
                Ok(outcome) => return Ok(outcome),
            }
        }
        Err(AttemptError::NotSent(refused.unwrap_or_else(|| {
            Status::unavailable(format!("every connection to {} is shutting down", self.pool.addr))
        })))
    }
}

impl Endpoint for GrpcEndpoint {
    fn addr(&self) -> &str {
        &self.pool.addr
    }

    /// gRPC carries protobuf or JSON: the binary codec becomes JSON.
    fn wire_codec(&self, requested: Codec) -> Codec {
        match requested {
            // gRPC carries protobuf or JSON: serde types go as JSON, whatever
            // other codec they were asked in.
            Codec::Binary | Codec::Gob => Codec::Json,
            codec => codec,
        }
    }

    async fn connect_now(&self) -> Result<(), ConnectError> {
        self.pool.connect_now().await
    }

    /// One call: `method` is `package.Service.Method`. gRPC has no one-way
    /// calls: a one-way call runs as a unary call whose reply nobody waits
    /// for, in a task of its own.
    async fn call(&self, call: &Call<'_>) -> Result<Outcome, AttemptError> {
        let codec = self.wire_codec(call.codec);
        let method = call.method;
        let path = grpc_path(method).ok_or_else(|| {
            AttemptError::Failed(Status::invalid_argument(format!("`{method}` is not `Service.Method`")))
        })?;
        let message = self.message(call, codec)?;
        match call.kind {
            CallKind::Unary => self.exchange(path, codec, &call.metadata, call.deadline, message).await,
            CallKind::OneWay => {
                let (endpoint, metadata, deadline) =
                    (self.clone(), call.metadata.clone().into_owned(), call.deadline);
                tokio::spawn(async move {
                    let sent = endpoint.exchange(path, codec, &metadata, deadline, message).await;
                    let failure = match sent {
                        Ok(outcome) => outcome.into_result().err(),
                        Err(err) => Some(err.into_status()),
                    };
                    if let Some(status) = failure {
                        tracing::debug!(%status, "one-way gRPC call failed");
                    }
                });
                Ok(Outcome::sent(codec))
            }
        }
    }
}

/// Counts a call in flight on a connection while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a stream in flight on a connection for as long as its task runs.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: Arc<AtomicUsize>) -> Active {
        count.fetch_add(1, Ordering::Relaxed);
        Active(count)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Carry one stream's messages: the caller's requests out as HTTP/2
/// capacity allows (then END_STREAM at its half-close), the replies into
/// the pipe as the caller reads them, and the end: `grpc-status: 0` ends
/// the replies cleanly; any other status, a reset, a lost connection or
/// missing trailers end them with an error. The caller dropping its
/// receiver (or its deadline passing) resets the stream with `CANCEL`,
/// which the server sees as a cancel.
async fn drive_stream(
    response: ResponseFuture,
    mut stream: SendStream<Bytes>,
    pipe: Arc<Pipe>,
    shared: Arc<WireShared>,
    max_message: usize,
    codec: Codec,
    _held: (Active, OpenStream),
) {
    let writer = async {
        let mut broken = false;
        loop {
            match std::future::poll_fn(|task| shared.poll_next(task)).await {
                // After a failed send the stream takes nothing more; what the
                // caller had queued is dropped (its sends fail already).
                Next::Message(..) if broken => {}
                // No stall timeout: the call's deadline bounds the wait, and
                // what waits is bounded by the pipe's window.
                Next::Message(framed, len) => {
                    if let Err(err) = h2_send::send_message(&mut stream, &pipe, framed, len, None).await {
                        // The reader reports why the stream ended; the
                        // caller's sends fail from now on.
                        broken = true;
                        pipe.close_outbound(h2_send::status_of_h2_error(&err, "the request stream"));
                    }
                }
                Next::HalfClose => {
                    if !broken {
                        let _ = stream.send_data(Bytes::new(), true);
                    }
                }
                Next::Cancel => {
                    stream.send_reset(Reason::CANCEL);
                    return;
                }
                // Only a server's wire finishes; a client's waits for a cancel.
                Next::Finished => std::future::pending::<()>().await,
            }
        }
    };
    let reader = async {
        let end = read_stream_reply(response, &pipe, &shared, max_message).await;
        match end {
            Ok(()) => pipe.end_inbound(Ok(())),
            Err(status) => pipe.reset(status.with_details_codec(codec)),
        }
        // The server has answered: nothing more goes out (the caller's
        // pump stops).
        pipe.close_outbound(Status::failed_precondition("the server has ended the call"));
    };
    // Whichever ends first ends the stream: the replies' end (dropping the
    // send side then resets a stream the caller had not finished), or a
    // cancel.
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

/// The replies of a stream, into `pipe`; `Ok` only for `grpc-status: 0`.
async fn read_stream_reply(
    response: ResponseFuture,
    pipe: &Pipe,
    shared: &WireShared,
    max_message: usize,
) -> Result<(), Status> {
    let response = response.await.map_err(|err| h2_send::status_of_h2_error(&err, "the stream"))?;
    let (parts, mut body) = response.into_parts();
    if parts.status != http::StatusCode::OK && parts.headers.get(wire::names::STATUS).is_none() {
        return Err(Status::new(
            wire::code_of_http_status(parts.status.as_u16()),
            format!("the server answered HTTP {}", parts.status),
        ));
    }
    // Trailers-only: the status, and no message.
    if let Some(status) = status_of(&parts.headers) {
        return status;
    }
    let encoding =
        match parts.headers.get(wire::names::ENCODING).map(|v| v.to_str().ok().and_then(Encoding::parse)) {
            None => Encoding::Identity,
            Some(Some(encoding)) => encoding,
            Some(None) => return Err(Status::internal("the response uses an unsupported grpc-encoding")),
        };
    h2_send::read_messages(&mut body, pipe, shared, encoding, max_message, "the response stream").await?;
    match body.trailers().await {
        Ok(Some(trailers)) => status_of(&trailers)
            .unwrap_or_else(|| Err(Status::internal("the response stream ended without a grpc-status"))),
        // END_STREAM on a DATA frame: the server never said how it ended.
        Ok(None) => Err(Status::internal("the response stream ended without trailers")),
        Err(err) => Err(h2_send::status_of_h2_error(&err, "the response stream")),
    }
}

/// How one try on one connection failed.
enum Attempt {
    /// The server never processed the call: try a fresh connection.
    Refused {
        status: Status,
        /// Whether the connection is going away (GOAWAY, closed) rather
        /// than refusing just this stream (REFUSED_STREAM: over the
        /// server's stream limit, which says nothing about the connection).
        retire: bool,
    },
    /// The call failed for good.
    Failed(AttemptError),
}

/// Send one request on `connection` and read its reply.
async fn attempt(
    connection: &GrpcConnection,
    request: Request<()>,
    message: Bytes,
    max_message: usize,
    codec: Codec,
) -> Result<Outcome, Attempt> {
    let _active = InFlight::enter(&connection.active);
    let mut send = connection.send.clone().ready().await.map_err(|err| not_sent(&err))?;
    let (response, mut stream) = send.send_request(request, false).map_err(|err| not_sent(&err))?;
    stream.send_data(message, true).map_err(|err| sent_error(&err))?;
    let response = response.await.map_err(|err| sent_error(&err))?;
    read_reply(response, max_message, codec).await.map_err(Attempt::Failed)
}

/// `package.Service.Method` to `/package.Service/Method`.
fn grpc_path(method: &str) -> Option<PathAndQuery> {
    let (service, name) = method.rsplit_once('.')?;
    if service.is_empty() || name.is_empty() {
        return None;
    }
    PathAndQuery::from_maybe_shared(Bytes::from(format!("/{service}/{name}"))).ok()
}

fn build_request(
    authority: &Authority,
    path: PathAndQuery,
    codec: Codec,
    metadata: &Metadata,
    deadline: Option<Instant>,
) -> Result<Request<()>, Status> {
    let mut uri = Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(path);
    let uri = Uri::from_parts(uri)
        .map_err(|err| Status::invalid_argument(format!("cannot build the request: {err}")))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(wire::content_type_of(codec)));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(wire::names::ACCEPT_ENCODING, HeaderValue::from_static(wire::ACCEPT_ENCODING));
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("courier/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(deadline) = deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(value) = HeaderValue::from_str(&wire::format_timeout(remaining)) {
            request.headers_mut().insert(wire::names::TIMEOUT, value);
        }
    }
    wire::put_metadata(request.headers_mut(), metadata);
    Ok(request)
}

/// Why a connection could not take a call: nothing was sent.
fn not_sent(err: &h2::Error) -> Attempt {
    // h2 reports what it refuses to send (a header HTTP/2 forbids, say)
    // as an error with no reason that is not I/O: the call's own fault,
    // which another connection would refuse the same way.
    if !err.is_io() && !err.is_go_away() && !err.is_reset() && err.reason().is_none() {
        return Attempt::Failed(AttemptError::Failed(Status::invalid_argument(format!(
            "the request cannot be sent over HTTP/2: {err}"
        ))));
    }
    Attempt::Refused {
        status: Status::unavailable(format!("the gRPC connection is gone: {err}")),
        retire: true,
    }
}

/// A failure after the request went out. A stream the server refused
/// never ran: `REFUSED_STREAM`, or a graceful GOAWAY whose last stream is
/// below it. (A GOAWAY with an error code also fails streams the server
/// may have run, so it is not taken as proof.)
fn sent_error(err: &h2::Error) -> Attempt {
    if err.reason() == Some(Reason::REFUSED_STREAM) {
        return Attempt::Refused {
            status: Status::unavailable(format!("the server refused the stream: {err}")),
            retire: false,
        };
    }
    if err.is_go_away() && err.is_remote() && err.reason() == Some(Reason::NO_ERROR) {
        return Attempt::Refused {
            status: Status::unavailable(format!("the server is shutting down: {err}")),
            retire: true,
        };
    }
    if err.reason() == Some(Reason::CANCEL) {
        return Attempt::Failed(AttemptError::Failed(Status::cancelled(format!(
            "the server cancelled the call: {err}"
        ))));
    }
    Attempt::Failed(AttemptError::Failed(Status::unavailable(format!("the gRPC call failed: {err}"))))
}

/// The response: its one message, or the status it carries, and the
/// metadata the server sent (in its headers and its trailers). An error
/// status is an answer; a stream that breaks before the trailers is not.
async fn read_reply(
    response: http::Response<RecvStream>,
    max_message: usize,
    codec: Codec,
) -> Result<Outcome, AttemptError> {
    let (parts, mut body) = response.into_parts();
    let mut metadata = wire::metadata_of(&parts.headers);
    let answer = |result: Result<Bytes, Status>, metadata| {
        Ok(Outcome::answer(result.map_err(|s| s.with_details_codec(codec)), metadata, codec))
    };
    if parts.status != http::StatusCode::OK {
        // Not a gRPC answer (a proxy, or no such path on a plain HTTP/2
        // server), unless it still carries a gRPC status.
        if parts.headers.get(wire::names::STATUS).is_none() {
            let status = Status::new(
                wire::code_of_http_status(parts.status.as_u16()),
                format!("the server answered HTTP {}", parts.status),
            );
            return answer(Err(status), metadata);
        }
    }
    if let Some(status) = status_of(&parts.headers) {
        // Trailers-only.
        return answer(
            match status {
                Ok(()) => Err(Status::internal("the server answered OK with no message")),
                Err(status) => Err(status),
            },
            metadata,
        );
    }
    let encoding = match parts
        .headers
        .get(wire::names::ENCODING)
        .map(|v| v.to_str().ok().and_then(Encoding::parse))
    {
        None => Encoding::Identity,
        Some(Some(encoding)) => encoding,
        Some(None) => {
            return answer(Err(Status::internal("the response uses an unsupported grpc-encoding")), metadata);
        }
    };
    let broken = |err: h2::Error| {
        AttemptError::Failed(Status::unavailable(format!("the response stream failed: {err}")))
    };
    let mut decoder = MessageDecoder::new(max_message);
    let mut message = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(broken)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        decoder.push(&chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(next)) => {
                    if message.replace(next).is_some() {
                        let status = Status::internal("a unary response carried several messages");
                        return answer(Err(status), metadata);
                    }
                }
                Ok(None) => break,
                Err(err) => return answer(Err(reply_error(&err)), metadata),
            }
        }
    }
    if let Err(err) = decoder.finish() {
        return answer(Err(reply_error(&err)), metadata);
    }
    let trailers = body.trailers().await.map_err(broken)?.unwrap_or_default();
    for (key, value) in wire::metadata_of(&trailers).iter() {
        metadata.append(key, value);
    }
    let result = match status_of(&trailers) {
        Some(Ok(())) => {
            message.ok_or_else(|| Status::internal("the server answered OK with no message")).and_then(
                |message| wire::decompress(message, encoding, max_message).map_err(|err| reply_error(&err)),
            )
        }
        Some(Err(status)) => Err(status),
        None => Err(Status::internal("the response ended without a grpc-status")),
    };
    answer(result, metadata)
}

fn reply_error(err: &wire::GrpcError) -> Status {
    match err {
        wire::GrpcError::TooLarge { .. } => Status::resource_exhausted(format!("response rejected: {err}")),
        other => Status::internal(format!("malformed response body: {other}")),
    }
}

/// The status in a header block, if it has `grpc-status`.
fn status_of(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get(wire::names::STATUS)?;
    let Some(code) = code.to_str().ok().and_then(|c| c.parse::<u32>().ok()) else {
        return Some(Err(Status::internal("malformed grpc-status")));
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get(wire::names::MESSAGE)
        .map(|m| wire::decode_message_header(m.as_bytes()))
        .unwrap_or_default();
    let details = headers.get(wire::names::STATUS_DETAILS).map(HeaderValue::as_bytes);
    let status = wire::status_from_parts(code, message, details);
    // A server that sends code 0's number for an error would be lying; keep
    // what it says but never report success without a message.
    Some(Err(if status.code() == Code::Ok { Status::internal("malformed grpc-status") } else { status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_become_paths() {
        assert_eq!(
            grpc_path("helloworld.Greeter.SayHello").as_ref().map(PathAndQuery::as_str),
            Some("/helloworld.Greeter/SayHello")
        );
        assert_eq!(grpc_path("Calculator.Add").as_ref().map(PathAndQuery::as_str), Some("/Calculator/Add"));
        assert_eq!(grpc_path("NoDot"), None);
        assert_eq!(grpc_path("Trailing."), None);
    }

    #[test]
    fn statuses_come_from_headers() {
        let mut headers = HeaderMap::new();
        assert!(status_of(&headers).is_none());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(matches!(status_of(&headers), Some(Ok(()))));
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert("grpc-message", HeaderValue::from_static("no%20such%20user"));
        let status = status_of(&headers).and_then(Result::err).expect("an error");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such user");
        headers.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(status_of(&headers).and_then(Result::err).map(|s| s.code()), Some(Code::Internal));
    }

    #[test]
    fn requests_carry_the_deadline_and_metadata() {
        let metadata = Metadata::from_iter([("x-token", "abc")]);
        let request = build_request(
            &Authority::from_static("127.0.0.1:1"),
            PathAndQuery::from_static("/Calculator/Add"),
            Codec::Json,
            &metadata,
            Some(Instant::now() + Duration::from_secs(2)),
        )
        .expect("request");
        assert_eq!(request.uri().path(), "/Calculator/Add");
        assert_eq!(request.headers()["content-type"], "application/grpc+json");
        assert_eq!(request.headers()["x-token"], "abc");
        let timeout = request.headers()["grpc-timeout"].to_str().ok().and_then(wire::parse_timeout);
        assert!(timeout.is_some_and(|t| t <= Duration::from_secs(2) && t > Duration::from_secs(1)));
    }
}
