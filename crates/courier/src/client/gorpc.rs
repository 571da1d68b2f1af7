//! [`GoRpcEndpoint`]: calls to a Go `net/rpc` server that was never
//! changed, in any of the three ways Go serves it: gob over TCP
//! (`rpc.ServeConn`, as `rpc.Dial` calls it), gob after an HTTP `CONNECT`
//! (`rpc.HandleHTTP`, as `rpc.DialHTTP`), or JSON-RPC 1.0
//! (`jsonrpc.ServeConn`, as `jsonrpc.Dial`).
//!
//! Go's server answers many calls on one connection, in any order, matched
//! by sequence number; so a connection here is one writer (requests are
//! encoded and written under its lock, so gob's type definitions go out
//! before the values that use them, once per connection) and one reader
//! task that hands each reply to the call waiting for it. Arguments are
//! encoded in [`Codec::Gob`] (or JSON) by the stub, so Go's field names
//! and Rust's are matched by the codec; a Go error comes back as a status
//! whose message is Go's string (`rpc: can't find method ...` as
//! `Unimplemented`, a request Go could not decode as `InvalidArgument`,
//! the method's own errors as application errors, code `Unknown`). Go's
//! protocol has no deadlines, metadata or cancellation: the call's
//! deadline is kept here, and a call given up on leaves its reply to be
//! discarded when it comes. A lost connection fails the calls waiting on
//! it, and the pool opens another for the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::call::{Call, CallKind, Outcome};
use super::endpoint::Endpoint;
use super::error::ConnectError;
use super::pool::{Connect, Pool};
use super::settings::ChannelConfig;
use crate::codec::Codec;
use crate::codec::gob::{Limits, StreamDecoder, StreamEncoder};
use crate::metadata::Metadata;
use crate::protocol::gorpc::{CONNECT_REQUEST, RequestHeader, ResponseHeader, check_connected, header_end};
use crate::protocol::jsonrpc::{Splitter, encode_request, parse_response};
use crate::resilience::retry::AttemptError;
use crate::service::BoxFuture;
use crate::status::{Code, Status};
use crate::transport::tcp;

/// Which of Go's `net/rpc` wires a channel speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GoWire {
    /// Gob over a plain connection (`rpc.ServeConn`).
    Gob,
    /// Gob after `CONNECT /_goRPC_` (`rpc.HandleHTTP`).
    GobOverHttp,
    /// JSON-RPC 1.0 (`jsonrpc.ServeConn`).
    JsonRpc,
}

impl GoWire {
    /// The codec arguments and results travel in.
    pub(crate) fn codec(self) -> Codec {
        match self {
            GoWire::Gob | GoWire::GobOverHttp => Codec::Gob,
            GoWire::JsonRpc => Codec::Json,
        }
    }

    /// How a channel's target names it.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            GoWire::Gob => "gorpc",
            GoWire::GobOverHttp => "gorpc+http",
            GoWire::JsonRpc => "jsonrpc",
        }
    }
}

/// One address, a pool of connections to a Go `net/rpc` server. Cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct GoRpcEndpoint {
    pool: Arc<Pool<GoConnection>>,
    wire: GoWire,
}

impl GoRpcEndpoint {
    pub(crate) fn new(addr: String, config: ChannelConfig, wire: GoWire) -> GoRpcEndpoint {
        GoRpcEndpoint { pool: Arc::new(Pool::new(addr, config, wire)), wire }
    }

    /// The wire it speaks.
    pub(crate) fn wire(&self) -> GoWire {
        self.wire
    }
}

impl Endpoint for GoRpcEndpoint {
    fn addr(&self) -> &str {
        &self.pool.addr
    }

    fn wire_codec(&self, _requested: Codec) -> Codec {
        self.wire.codec()
    }

    async fn connect_now(&self) -> Result<(), ConnectError> {
        self.pool.connect_now().await
    }

    async fn call(&self, call: &Call<'_>) -> Result<Outcome, AttemptError> {
        let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
        connection.call(call).await
    }
}

/// One connection: its writer, and the reader task's shared state.
pub(crate) struct GoConnection {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

struct Shared {
    wire: GoWire,
    addr: String,
    max_frame_size: usize,
    writer: tokio::sync::Mutex<Writer>,
    pending: Mutex<Pending>,
    next_seq: AtomicU64,
}

/// The writing half, with what it keeps between requests.
struct Writer {
    write: OwnedWriteHalf,
    /// Which gob types this connection has defined.
    encoder: StreamEncoder,
    /// The request being written, reused.
    buf: BytesMut,
}

/// What a waiting call is handed.
enum Delivery {
    /// The server's answer: the reply, or the error it sent.
    Answer(Result<Bytes, Status>),
    /// The connection went before the answer came.
    Lost(Status),
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Delivery>>,
    /// Why the connection is no longer usable, once it is not.
    closed: Option<Status>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hand `seq`'s answer to its caller; a reply nobody waits for (the
    /// caller gave up, or a one-way call) is dropped.
    fn deliver(&self, seq: u64, answer: Result<Bytes, Status>) {
        if let Some(waiting) = self.pending().calls.remove(&seq) {
            let _ = waiting.send(Delivery::Answer(answer));
        }
    }

    /// No more calls here: fail the waiting ones with `status`.
    fn close(&self, status: Status) {
        let waiting = {
            let mut pending = self.pending();
            if pending.closed.is_none() {
                pending.closed = Some(status.clone());
            }
            std::mem::take(&mut pending.calls)
        };
        for (_, waiting) in waiting {
            let _ = waiting.send(Delivery::Lost(status.clone()));
        }
    }
}

impl Drop for GoConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connect for GoConnection {
    type Options = GoWire;

    fn connect(
        addr: String,
        config: ChannelConfig,
        wire: GoWire,
    ) -> BoxFuture<'static, Result<GoConnection, ConnectError>> {
        Box::pin(async move {
            let timeout = config.connect_timeout;
            let deadline = tokio::time::Instant::now() + timeout;
            let io_error = |source| ConnectError::Io { addr: addr.clone(), source };
            let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(&addr)).await {
                Ok(connected) => connected.map_err(io_error)?,
                Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
            };
            tcp::configure(&stream);
            let mut read_ahead = BytesMut::new();
            if wire == GoWire::GobOverHttp {
                let handshake = async {
                    stream.write_all(CONNECT_REQUEST).await.map_err(io_error)?;
                    http_handshake(&mut stream, &mut read_ahead, &addr).await
                };
                // Connected, but no answer: say what was asked (a plain gob
                // server takes `CONNECT` for the start of a message and waits
                // for the rest).
                let Ok(answered) = tokio::time::timeout_at(deadline, handshake).await else {
                    return Err(ConnectError::Handshake {
                        addr,
                        reason: format!(
                            "Go net/rpc over HTTP: no answer to `CONNECT /_goRPC_` within {timeout:?} \
                             (is it a server that rpc.HandleHTTPs?)"
                        ),
                    });
                };
                answered?;
            }
            let (read, write) = stream.into_split();
            let shared = Arc::new(Shared {
                wire,
                addr,
                max_frame_size: config.max_frame_size,
                writer: tokio::sync::Mutex::new(Writer {
                    write,
                    encoder: StreamEncoder::new(),
                    buf: BytesMut::new(),
                }),
                pending: Mutex::new(Pending::default()),
                next_seq: AtomicU64::new(0),
            });
            let reader = tokio::spawn(read_replies(shared.clone(), read, read_ahead));
            Ok(GoConnection { shared, reader })
        })
    }

    fn is_usable(&self) -> bool {
        self.shared.pending().closed.is_none()
    }
}

/// Read Go's answer to `CONNECT`; what follows it is kept in `read_ahead`.
async fn http_handshake(
    stream: &mut TcpStream,
    read_ahead: &mut BytesMut,
    addr: &str,
) -> Result<(), ConnectError> {
    let handshake_error = |reason: String| ConnectError::Handshake {
        addr: addr.to_owned(),
        reason: format!("Go net/rpc over HTTP: {reason}"),
    };
    loop {
        if let Some(end) = header_end(read_ahead).map_err(|err| handshake_error(err.to_string()))? {
            check_connected(&read_ahead[..end]).map_err(|err| handshake_error(err.to_string()))?;
            let _ = read_ahead.split_to(end);
            return Ok(());
        }
        let read = stream
            .read_buf(read_ahead)
            .await
            .map_err(|source| ConnectError::Io { addr: addr.to_owned(), source })?;
        if read == 0 {
            return Err(handshake_error("the server closed the connection".to_owned()));
        }
    }
}

/// Forgets a call's entry when the call is dropped (its deadline passed,
/// its caller went away) before its answer came.
struct Forget<'a> {
    shared: &'a Shared,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.pending().calls.remove(&self.seq);
    }
}

impl GoConnection {
    async fn call(&self, call: &Call<'_>) -> Result<Outcome, AttemptError> {
        let shared = &*self.shared;
        let codec = shared.wire.codec();
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut pending = shared.pending();
            if let Some(closed) = &pending.closed {
                return Err(AttemptError::NotSent(closed.clone()));
            }
            pending.calls.insert(seq, answer);
        }
        let _forget = Forget { shared, seq };
        // The arguments, in the stub's codec, before the connection's
        // state is touched: a value that does not encode costs nothing else.
        let mut body = BytesMut::new();
        if let Err(status) = (call.body)(codec, &mut body) {
            return Ok(Outcome::from(status));
        }
        {
            let mut writer = shared.writer.lock().await;
            let Writer { write, encoder, buf } = &mut *writer;
            buf.clear();
            if let Err(status) = encode(shared.wire, encoder, call.method, seq, &body, buf) {
                // The encoder may have noted definitions that never went
                // out: later requests could not be read. Start afresh.
                shared.close(Status::unavailable(format!(
                    "the connection to {} was closed: a request could not be encoded",
                    shared.addr
                )));
                return Ok(Outcome::from(status));
            }
            if buf.len() > shared.max_frame_size {
                // Nothing was written, but the encoder counts this
                // request's definitions as sent.
                shared.close(Status::unavailable(format!(
                    "the connection to {} was closed after an oversized request",
                    shared.addr
                )));
                return Ok(Outcome::from(Status::resource_exhausted(format!(
                    "the request to {} is {} bytes, over the limit of {}",
                    call.method,
                    buf.len(),
                    shared.max_frame_size
                ))));
            }
            if let Err(err) = write.write_all(buf).await {
                let status = Status::unavailable(format!("the connection to {} failed: {err}", shared.addr));
                shared.close(status.clone());
                // Some of it may have gone out: the server may have run it.
                return Err(AttemptError::Failed(status));
            }
        }
        if call.kind == CallKind::OneWay {
            // Go has no one-way calls: its reply is discarded when it comes.
            return Ok(Outcome::sent(codec));
        }
        match answered.await {
            Ok(Delivery::Answer(result)) => Ok(Outcome::answer(result, Metadata::new(), codec)),
            Ok(Delivery::Lost(status)) => Err(AttemptError::Failed(status)),
            Err(_) => Err(AttemptError::Failed(Status::unavailable(format!(
                "the connection to {} was lost before the reply came",
                shared.addr
            )))),
        }
    }
}

/// One request's bytes on `wire`.
fn encode(
    wire: GoWire,
    encoder: &mut StreamEncoder,
    method: &str,
    seq: u64,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<(), Status> {
    match wire {
        GoWire::JsonRpc => {
            let mut request = Vec::with_capacity(body.len() + method.len() + 48);
            encode_request(method, body, seq, &mut request);
            out.extend_from_slice(&request);
        }
        GoWire::Gob | GoWire::GobOverHttp => {
            let encoding =
                |err: String| Status::internal(format!("the request to {method} does not encode: {err}"));
            let mut header = BytesMut::new();
            Codec::Gob
                .encode(&RequestHeader { service_method: method.to_owned(), seq }, &mut header)
                .map_err(|err| encoding(err.to_string()))?;
            encoder.write_value(&header, out).map_err(|err| encoding(err.to_string()))?;
            encoder.write_value(body, out).map_err(|err| encoding(err.to_string()))?;
        }
    }
    Ok(())
}

/// A reply's sequence number and answer.
type Answered = (u64, Result<Bytes, Status>);

/// Cuts replies out of what the server sends.
enum Replies {
    Gob { decoder: StreamDecoder, header: Option<ResponseHeader> },
    Json { splitter: Splitter },
}

impl Replies {
    /// The next whole reply in `buf`: its sequence number and answer.
    fn next(&mut self, buf: &mut BytesMut, max_frame: usize) -> Result<Option<Answered>, String> {
        match self {
            Replies::Gob { decoder, header } => loop {
                let Some(value) = decoder.next_value(buf).map_err(|err| format!("gob: {err}"))? else {
                    return Ok(None);
                };
                match header.take() {
                    None => {
                        *header = Some(
                            Codec::Gob
                                .decode(&value)
                                .map_err(|err| format!("a response header does not decode: {err}"))?,
                        );
                    }
                    Some(ResponseHeader { seq, error, .. }) if error.is_empty() => {
                        return Ok(Some((seq, Ok(value))));
                    }
                    // The body of a failed call is Go's empty struct.
                    Some(ResponseHeader { seq, error, .. }) => return Ok(Some((seq, Err(go_error(error))))),
                }
            },
            Replies::Json { splitter } => {
                let Some((start, end)) =
                    splitter.next_object(buf, max_frame).map_err(|err| err.to_string())?
                else {
                    return Ok(None);
                };
                let reply = buf.split_to(end);
                splitter.consumed(end);
                let reply = parse_response(&reply[start..])
                    .map_err(|err| format!("a reply does not parse: {err}"))?;
                Ok(Some((reply.id, reply.outcome.map(Bytes::from).map_err(go_error))))
            }
        }
    }
}

/// The reader task: replies to their callers until the connection ends.
async fn read_replies(shared: Arc<Shared>, mut read: OwnedReadHalf, mut buf: BytesMut) {
    let mut replies = match shared.wire {
        GoWire::Gob | GoWire::GobOverHttp => Replies::Gob {
            decoder: StreamDecoder::new(Limits { max_message: shared.max_frame_size, ..Limits::default() }),
            header: None,
        },
        GoWire::JsonRpc => Replies::Json { splitter: Splitter::default() },
    };
    let reason = 'read: loop {
        loop {
            match replies.next(&mut buf, shared.max_frame_size) {
                Ok(Some((seq, answer))) => shared.deliver(seq, answer),
                Ok(None) => break,
                Err(err) => break 'read format!("the server sent what is not a reply ({err})"),
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) => break "the server closed it".to_owned(),
            Ok(_) => {}
            Err(err) => break err.to_string(),
        }
    };
    tracing::debug!(addr = %shared.addr, %reason, "Go net/rpc connection ended");
    shared.close(Status::unavailable(format!("the connection to {} was lost: {reason}", shared.addr)));
}

/// A Go server's error string as a status: Go's own routing and decoding
/// errors by what they mean, the method's errors as application errors.
fn go_error(text: String) -> Status {
    const NOT_FOUND: [&str; 3] =
        ["rpc: can't find service ", "rpc: can't find method ", "rpc: service/method request ill-formed"];
    const UNDECODABLE: [&str; 4] = ["rpc: server cannot decode request", "gob: ", "json: ", "reading body "];
    if NOT_FOUND.iter().any(|prefix| text.starts_with(prefix)) {
        Status::unimplemented(text)
    } else if UNDECODABLE.iter().any(|prefix| text.starts_with(prefix)) {
        Status::invalid_argument(text)
    } else {
        Status::application(Code::Unknown, text, Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gos_errors_keep_their_text_and_gain_a_meaning() {
        let status = go_error("rpc: can't find method Arith.Nope".to_owned());
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unimplemented, "rpc: can't find method Arith.Nope")
        );
        assert_eq!(go_error("gob: type mismatch".to_owned()).code(), Code::InvalidArgument);
        let own = go_error("divide by zero".to_owned());
        assert_eq!((own.code(), own.is_application_error()), (Code::Unknown, true));
    }

    #[test]
    fn a_json_rpc_reply_is_cut_from_the_stream_and_matched_by_id() {
        let mut replies = Replies::Json { splitter: Splitter::default() };
        let mut buf =
            BytesMut::from(&b"{\"id\":1,\"result\":56,\"error\":null}\n{\"id\":2,\"result\":null,\"err"[..]);
        let (seq, answer) = replies.next(&mut buf, 1 << 20).expect("valid").expect("one whole reply");
        assert_eq!((seq, answer.expect("a result")), (1, Bytes::from_static(b"56")));
        assert!(
            replies.next(&mut buf, 1 << 20).expect("valid so far").is_none(),
            "the second is not all here"
        );
        buf.extend_from_slice(b"or\":\"divide by zero\"}\n");
        let (seq, answer) = replies.next(&mut buf, 1 << 20).expect("valid").expect("now whole");
        assert_eq!((seq, answer.expect_err("an error").message()), (2, "divide by zero"));
        buf.extend_from_slice(b"[1]");
        assert!(replies.next(&mut buf, 1 << 20).is_err(), "not a reply");
    }
}
