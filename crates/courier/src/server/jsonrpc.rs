//! JSON-RPC 1.0 connections, as Go's `net/rpc/jsonrpc` clients expect.
//!
//! The connection's task reads requests (see [`crate::protocol::jsonrpc`]),
//! starts each as a task of its own, so pipelined requests run
//! concurrently as they do in Go's server, and replies go out in the order
//! they finish through one writer task, which gathers every reply ready
//! into one write. A request that cannot be served is answered with an
//! error and the connection goes on; bytes that are not a stream of JSON
//! objects end it, after an error reply with a null id (Go's server closes
//! too: it cannot tell where the next request starts).
//!
//! A peer that stops reading: every request takes a slot in the reply
//! queue before it is read, so once 1,024 replies wait, its requests wait
//! in its own socket; a call gives its concurrency slot back as soon as it
//! is done; and a write that makes no progress for the keepalive
//! interval ends the connection and cancels the calls still running on it.
//! A method returning nothing answers `{}`: Go's client fails a reply
//! whose result and error are both null.
//!
//! Arguments: Go sends one parameter, the argument struct; it becomes the
//! method's arguments as they are (one argument, or an object of named
//! arguments); as many parameters as the method has arguments fill them
//! in order. Field names match ignoring case when no field matches exactly,
//! as Go's decoder does (see [`crate::codec::lenient`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::ServerShared;
use super::admission::ConnectionSlots;
use super::budget::Reservation;
use super::pipeline::{self, Incoming, Target};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::jsonrpc::{Request, Splitter, encode_response, error_text, parse_request};
use crate::protocol::sniff::Protocol;
use crate::service::ArgDescriptor;
use crate::status::Status;
use crate::transport::progress::Progress;
use crate::transport::tcp;

/// Requests taken in and not yet written back, per connection. Each takes a
/// slot in the reply queue before it is read, so a peer that stops reading
/// replies stops having its requests read once this many are waiting.
const REPLY_SLOTS: usize = 1024;
/// Replies gathered into one write, in bytes (one reply may exceed it).
const BATCH_BYTES: usize = 256 * 1024;
/// How long the last replies may take to flush when the connection ends.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// A slot in the reply queue: a reply can always be handed over at once.
type ReplySlot = OwnedPermit<Vec<u8>>;

/// Serve one JSON-RPC connection.
pub(crate) async fn serve(
    stream: TcpStream,
    sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut read, write) = stream.into_split();
    let (replies, queued) = mpsc::channel::<Vec<u8>>(REPLY_SLOTS);
    let config = &server.config;
    let mut writer = WriterTask(tokio::spawn(write_replies(write, queued, config.keepalive_interval)));
    let slots = Arc::new(server.admission.connection());
    let mut buf = sniffed;
    let mut splitter = Splitter::default();
    let mut calls = JoinSet::new();
    let mut slot: Option<ReplySlot> = None;
    let mut reading = true;
    let mut stream_failed = false;
    let mut writer_ended = false;
    let mut drain_deadline = None;
    // The bytes read and not yet handed to calls are held against the
    // server's budget; a request partly here must keep arriving.
    let mut memory = server.budget.empty();
    let timeouts = config.request_timeouts;
    let mut progress = Progress::default();
    loop {
        while reading {
            // Every request is answered, so it needs its reply's slot first.
            if slot.is_none() {
                match replies.clone().try_reserve_owned() {
                    Ok(reserved) => slot = Some(reserved),
                    // Full: wait for the writer below, reading nothing.
                    Err(_) => break,
                }
            }
            let next = splitter.next_object(&buf, config.max_frame_size);
            if matches!(next, Ok(None)) {
                break;
            }
            let Some(reply) = slot.take() else { break };
            match next {
                Ok(Some((start, end))) => {
                    let request = buf.split_to(end);
                    splitter.consumed(end);
                    progress.complete();
                    // The request's share of what was reserved goes with it.
                    let held = memory.split_off(end);
                    match parse_request(&request[start..]) {
                        Ok(request) => {
                            start_call(request, held, reply, &server, &slots, &mut calls, peer, &shutdown);
                        }
                        Err((err, id)) => {
                            reply.send(encode_response(&id, Err(&err.to_string())));
                        }
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(%peer, %err, "closing JSON-RPC connection");
                    reply.send(encode_response(&Value::Null, Err(&err.to_string())));
                    reading = false;
                    stream_failed = true;
                }
            }
        }
        // A request partly here: its bytes must fit the budget, and it
        // must keep arriving. Between requests neither applies.
        if reading && !stream_failed {
            // Waiting for the writer (the peer is not reading our
            // replies) is not the peer being slow to send.
            if splitter.in_object() && slot.is_some() {
                progress.start(std::time::Instant::now());
            } else {
                progress.complete();
            }
            if let Err(status) = memory.grow_to(buf.len()) {
                // It cannot be stepped over (its end is not known until it
                // is read): refuse it and close, as for a broken stream.
                tracing::info!(%peer, %status, "closing JSON-RPC connection: a request does not fit the memory budget");
                refuse_stream(&replies, &mut slot, &status).await;
                buf = BytesMut::new();
                memory.shrink_to(0);
                reading = false;
                stream_failed = true;
            }
        }
        if !reading && calls.is_empty() {
            break;
        }
        let overdue = async {
            match progress.deadline(&timeouts) {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        let drain = async {
            match drain_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read_result = read.read_buf(&mut buf), if reading && slot.is_some() => match read_result {
                // The client is done sending: answer what it asked, then close.
                Ok(0) => reading = false,
                Ok(n) => progress.received(n, std::time::Instant::now()),
                Err(err) => {
                    tracing::debug!(%peer, %err, "JSON-RPC connection failed");
                    calls.abort_all();
                    break;
                }
            },
            reserved = replies.clone().reserve_owned(), if reading && slot.is_none() => {
                slot = reserved.ok();
            }
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            written = &mut writer.0 => {
                // The peer is gone or stopped taking replies: nobody is left
                // to answer, so stop the calls.
                writer_ended = true;
                if let Ok(Err(err)) = written {
                    tracing::debug!(%peer, %err, "closing JSON-RPC connection: replies cannot be written");
                }
                calls.abort_all();
                break;
            }
            changed = shutdown.changed(), if drain_deadline.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    // Take no more requests; finish the ones started.
                    reading = false;
                    drain_deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
                }
            }
            () = overdue, if reading => {
                if let Err(overdue) = progress.check(std::time::Instant::now(), &timeouts) {
                    server.stats.request_timed_out();
                    tracing::info!(%peer, %overdue, "closing JSON-RPC connection: its request is overdue");
                    let status = Status::deadline_exceeded(format!("request not received in time: {overdue}"));
                    refuse_stream(&replies, &mut slot, &status).await;
                    buf = BytesMut::new();
                    memory.shrink_to(0);
                    reading = false;
                    stream_failed = true;
                }
            }
            () = drain => {
                tracing::info!(%peer, "drain timeout: cancelling JSON-RPC calls still running");
                calls.abort_all();
                break;
            }
        }
    }
    while calls.join_next().await.is_some() {}
    drop((replies, slot));
    if !writer_ended
        && let Ok(Err(err)) =
            tokio::time::timeout(FLUSH_GRACE, &mut writer.0).await.map(|joined| joined.unwrap_or(Ok(())))
    {
        tracing::debug!(%peer, %err, "could not send the last JSON-RPC replies");
    }
    if stream_failed {
        // Let the error reply arrive before the close (see `tcp::linger`).
        tcp::linger(read, Duration::from_secs(2), 1 << 20).await;
    }
}

/// Answer a stream we stop reading with a null-id error, as for bytes that
/// are not JSON (the request's own id is not known until it is read).
async fn refuse_stream(replies: &mpsc::Sender<Vec<u8>>, slot: &mut Option<ReplySlot>, status: &Status) {
    let reply = match slot.take() {
        Some(reply) => Some(reply),
        None => {
            tokio::time::timeout(FLUSH_GRACE, replies.clone().reserve_owned()).await.ok().and_then(Result::ok)
        }
    };
    if let Some(reply) = reply {
        reply.send(encode_response(&Value::Null, Err(error_text(status))));
    }
}

/// The writer's task, aborted if the connection ends without it.
struct WriterTask(JoinHandle<std::io::Result<()>>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Write replies as they come, every reply ready in one write. A write that
/// makes no progress for `stall` (the keepalive interval) means the peer is
/// not reading: the connection is given up.
async fn write_replies(
    mut write: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Vec<u8>>,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let mut batch = Vec::new();
    while let Some(reply) = queued.recv().await {
        // A big buffer left by a burst of large replies is not kept for the
        // life of the connection.
        if batch.capacity() > BATCH_BYTES * 2 {
            batch = Vec::new();
        }
        batch.clear();
        batch.extend_from_slice(&reply);
        // Gather what is ready, up to a bound: taking a reply out of the
        // queue frees its slot, so gathering without one would let a
        // non-reading peer's replies pile up beyond the queue.
        while batch.len() < BATCH_BYTES
            && let Ok(more) = queued.try_recv()
        {
            batch.extend_from_slice(&more);
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let written = match stall {
                Some(stall) => tokio::time::timeout(stall, write.write(rest)).await.map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading replies")
                })??,
                None => write.write(rest).await?,
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            rest = &rest[written..];
        }
    }
    write.shutdown().await
}

/// Check a request and start it, or answer it with why not.
#[allow(clippy::too_many_arguments)]
fn start_call(
    request: Request,
    mut memory: Reservation,
    reply: ReplySlot,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    calls: &mut JoinSet<()>,
    peer: SocketAddr,
    shutdown: &watch::Receiver<bool>,
) {
    let Request { method, params, id } = request;
    let started = (move || {
        let route = pipeline::route(server, Target::Name(&method), Codec::Json)?;
        let body = arguments(route.method.args, params)?;
        // What the call holds while it runs is its arguments.
        memory.grow_to(body.len())?;
        memory.shrink_to(body.len());
        // Go's client takes a null result for a missing one and fails the
        // call; a method returning nothing answers `{}`, as a Go method
        // would.
        let returns_nothing = route.method.output == "()";
        let incoming = Incoming {
            route,
            protocol: Protocol::JsonRpc,
            codec: Codec::Json,
            // JSON-RPC carries no deadline; the server's call timeout, if
            // set, is the only one.
            deadline: None,
            metadata: Metadata::new(),
            peer,
            body: body.into(),
            memory,
        };
        Ok::<_, Status>((pipeline::start(server, slots, incoming, shutdown)?, returns_nothing))
    })();
    let (call, returns_nothing) = match started {
        Ok(started) => started,
        Err(status) => {
            reply.send(encode_response(&id, Err(error_text(&status))));
            return;
        }
    };
    calls.spawn(async move {
        // The call gives its slots back when it is done; what is left is
        // only a reply waiting to be written.
        let outcome = call.run().await;
        let encoded = match &outcome.result {
            Ok(_) if returns_nothing => encode_response(&id, Ok(b"{}")),
            Ok(result) => encode_response(&id, Ok(result)),
            Err(status) => encode_response(&id, Err(error_text(status))),
        };
        reply.send(encoded);
    });
}

/// The method's arguments from the request's parameters.
fn arguments(args: &[ArgDescriptor], mut params: Vec<Value>) -> Result<Vec<u8>, Status> {
    let value = match (args.len(), params.len()) {
        // Go always sends one parameter; a method with none takes `{}`.
        (0, 0) => Value::Object(Map::new()),
        (0, 1) if params[0].is_null() || params[0].as_object().is_some_and(Map::is_empty) => {
            Value::Object(Map::new())
        }
        (_, 1) => params.remove(0),
        // Positional: one parameter per argument, in order.
        (n, given) if n > 1 && given == n => {
            Value::Object(args.iter().map(|arg| arg.name.to_owned()).zip(params).collect())
        }
        (n, given) => {
            return Err(Status::invalid_argument(format!(
                "expected one parameter (the method's {n} argument{}), got {given}",
                if n == 1 { "" } else { "s" }
            )));
        }
    };
    serde_json::to_vec(&value).map_err(|err| Status::invalid_argument(err.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NONE: &[ArgDescriptor] = &[];
    const ONE: &[ArgDescriptor] = &[ArgDescriptor { name: "text", ty: "String" }];
    const TWO: &[ArgDescriptor] =
        &[ArgDescriptor { name: "a", ty: "i64" }, ArgDescriptor { name: "b", ty: "i64" }];

    #[test]
    fn go_style_parameters_become_arguments() {
        assert_eq!(arguments(TWO, vec![json!({"A": 1, "B": 2})]).expect("one object"), br#"{"A":1,"B":2}"#);
        assert_eq!(arguments(TWO, vec![json!(1), json!(2)]).expect("positional"), br#"{"a":1,"b":2}"#);
        assert_eq!(arguments(ONE, vec![json!("hi")]).expect("one value"), br#""hi""#);
        assert_eq!(arguments(NONE, vec![]).expect("nothing"), b"{}");
        assert_eq!(arguments(NONE, vec![json!({})]).expect("empty object"), b"{}");
        assert!(arguments(ONE, vec![]).is_err());
        assert!(arguments(ONE, vec![json!(1), json!(2)]).is_err());
        assert!(arguments(TWO, vec![json!(1), json!(2), json!(3)]).is_err());
    }
}
