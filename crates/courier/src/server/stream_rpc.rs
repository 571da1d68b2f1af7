//! Request/reply protocols on a plain byte stream, one connection each:
//! JSON-RPC 1.0 ([`super::jsonrpc`]) and Go's `net/rpc` with gob
//! ([`super::gorpc`]). A protocol is an adapter ([`StreamProtocol`]) that
//! cuts requests out of the bytes read and writes replies; everything
//! else about such a connection is here, once:
//!
//! - The connection's task reads requests and starts each as a task of its
//!   own, so pipelined requests run concurrently as they do in Go's server;
//!   replies go out in the order they finish through one writer task,
//!   which gathers every reply ready into one write (and holds the
//!   protocol's per-connection reply state: gob sends each type's
//!   definition once per connection).
//! - A request that cannot be served is answered with an error and the
//!   connection goes on; bytes that cannot be cut into requests end it,
//!   after whatever the protocol says to such a stream (JSON-RPC: an error
//!   reply with a null id, as Go's server; gob: nothing, as Go's).
//! - A peer that stops reading: every request takes a slot in the reply
//!   queue before it is read, so once [`REPLY_SLOTS`] replies wait, its
//!   requests wait in its own socket; a call gives its concurrency slot
//!   back as soon as it is done; and a write that makes no progress for
//!   the keepalive interval ends the connection and cancels the calls still
//!   running on it.
//! - The bytes read and not yet handed to calls are held against the
//!   server's memory budget, and a request partly received must keep
//!   arriving (the request timeouts); either failing ends the stream.
//! - Neither protocol carries a deadline: the server's call timeout, if
//!   set, is the only one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::ServerShared;
use super::admission::ConnectionSlots;
use super::budget::Reservation;
use super::pipeline::{self, Incoming, Target};
use super::router::Route;
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::sniff::Protocol;
use crate::status::Status;
use crate::transport::progress::Progress;
use crate::transport::tcp;

/// Requests taken in and not yet written back, per connection. Each takes a
/// slot in the reply queue before it is read, so a peer that stops reading
/// replies stops having its requests read once this many are waiting.
pub(crate) const REPLY_SLOTS: usize = 1024;
/// Replies gathered into one write, in bytes (one reply may exceed it).
const BATCH_BYTES: usize = 256 * 1024;
/// How long the last replies may take to flush when the connection ends.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// One protocol's side of a stream connection: cutting requests out of the
/// bytes read. Sans-IO: it sees only buffers.
pub(crate) trait StreamProtocol: Send + 'static {
    /// What a reply carries back to be matched to its request (JSON-RPC's
    /// id; net/rpc's sequence number and method name).
    type Tag: Send + 'static;
    /// A request's arguments as the protocol received them, made into the
    /// method's body by [`StreamProtocol::arguments`] once it is routed.
    type Args: Send;
    /// Writes replies; runs in the writer task.
    type Writer: ReplyWriter<Tag = Self::Tag>;

    /// The protocol, for the pipeline and the logs.
    const PROTOCOL: Protocol;
    /// The codec the method reads its arguments in and writes its result in.
    const CODEC: Codec;

    /// Take the next request from the front of `buf` (removing its bytes),
    /// or `Ok(None)` if it is not all here yet. `Err`: the bytes cannot be
    /// cut into requests; the stream ends.
    fn next_request(&mut self, buf: &mut BytesMut, max_frame: usize) -> Next<Self>;

    /// Whether a request has started and not ended in the bytes seen so
    /// far (the peer is in the middle of one, so it must keep sending).
    fn in_request(&self, buf: &[u8]) -> bool;

    /// The body the routed method decodes, from the request's arguments.
    fn arguments(route: &Route, args: Self::Args) -> Result<Bytes, Status>;

    /// Say why a method could not be routed, in the protocol's words.
    fn routing_error(server: &ServerShared, method: &str, status: Status) -> Status {
        let _ = (server, method);
        status
    }

    /// The connection's reply writer.
    fn writer(&self) -> Self::Writer;
}

/// What [`StreamProtocol::next_request`] found: a request, nothing yet, or
/// why the stream cannot be read.
pub(crate) type Next<P> =
    Result<Option<Parsed<<P as StreamProtocol>::Tag, <P as StreamProtocol>::Args>>, String>;

/// A request cut from the stream.
pub(crate) enum Parsed<Tag, Args> {
    /// A call to make.
    Call {
        /// `Service.Method`.
        method: String,
        /// Its arguments.
        args: Args,
        /// What its reply carries back.
        tag: Tag,
    },
    /// A request that cannot be served: answered with `status`; the
    /// connection goes on.
    Refused {
        /// What its reply carries back.
        tag: Tag,
        /// Why.
        status: Status,
    },
}

/// What the writer is handed.
pub(crate) enum Reply<Tag> {
    /// A request's answer.
    Answer {
        /// Its request's tag.
        tag: Tag,
        /// The encoded result, or the error.
        result: Result<Bytes, Status>,
        /// The method returns `()`.
        returns_nothing: bool,
    },
    /// The stream is given up (broken, over the memory budget, overdue):
    /// the last thing written, if the protocol has words for it.
    StreamRefused(Status),
}

/// Turns replies into bytes. Runs in the writer task, so it may keep
/// per-connection state.
pub(crate) trait ReplyWriter: Send + 'static {
    /// The protocol's [`StreamProtocol::Tag`].
    type Tag: Send + 'static;
    /// Append the encoding of `reply` to `out`. An error ends the
    /// connection (a reply that cannot be encoded cannot be skipped: the
    /// client waits for it).
    fn write(&mut self, reply: Reply<Self::Tag>, out: &mut BytesMut) -> Result<(), String>;
}

/// A slot in the reply queue: a reply can always be handed over at once.
type ReplySlot<Tag> = OwnedPermit<Reply<Tag>>;

/// Serve one connection in protocol `P`, from the bytes already read.
pub(crate) async fn serve<P: StreamProtocol>(
    mut protocol: P,
    stream: TcpStream,
    sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = P::PROTOCOL.name();
    let (mut read, write) = stream.into_split();
    let (replies, queued) = mpsc::channel::<Reply<P::Tag>>(REPLY_SLOTS);
    let config = &server.config;
    let mut writer =
        WriterTask(tokio::spawn(write_replies(write, protocol.writer(), queued, config.keepalive_interval)));
    let slots = Arc::new(server.admission.connection());
    let mut buf = sniffed;
    let mut calls = JoinSet::new();
    let mut slot: Option<ReplySlot<P::Tag>> = None;
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
            let before = buf.len();
            let next = protocol.next_request(&mut buf, config.max_frame_size);
            // The request's share of what was reserved goes with it.
            let held = memory.split_off(before - buf.len());
            match next {
                Ok(None) => break,
                Ok(Some(parsed)) => {
                    progress.complete();
                    let Some(reply) = slot.take() else { break };
                    match parsed {
                        Parsed::Call { method, args, tag } => {
                            start_call::<P>(
                                method, args, tag, held, reply, &server, &slots, &mut calls, peer, &shutdown,
                            );
                        }
                        Parsed::Refused { tag, status } => {
                            reply.send(Reply::Answer { tag, result: Err(status), returns_nothing: false });
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(%peer, %err, protocol = name, "closing connection: the stream is broken");
                    if let Some(reply) = slot.take() {
                        reply.send(Reply::StreamRefused(Status::invalid_argument(err)));
                    }
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
            if protocol.in_request(&buf) && slot.is_some() {
                progress.start(std::time::Instant::now());
            } else {
                progress.complete();
            }
            if let Err(status) = memory.grow_to(buf.len()) {
                // It cannot be stepped over (its end is not known until it
                // is read): refuse it and close, as for a broken stream.
                tracing::info!(%peer, %status, protocol = name, "closing connection: a request does not fit the memory budget");
                refuse_stream(&replies, &mut slot, status).await;
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
                    tracing::debug!(%peer, %err, protocol = name, "connection failed");
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
                    tracing::debug!(%peer, %err, protocol = name, "closing connection: replies cannot be written");
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
                    tracing::info!(%peer, %overdue, protocol = name, "closing connection: its request is overdue");
                    let status = Status::deadline_exceeded(format!("request not received in time: {overdue}"));
                    refuse_stream(&replies, &mut slot, status).await;
                    buf = BytesMut::new();
                    memory.shrink_to(0);
                    reading = false;
                    stream_failed = true;
                }
            }
            () = drain => {
                tracing::info!(%peer, protocol = name, "drain timeout: cancelling calls still running");
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
        tracing::debug!(%peer, %err, protocol = name, "could not send the last replies");
    }
    if stream_failed {
        // Let the last reply arrive before the close (see `tcp::linger`).
        tcp::linger(read, Duration::from_secs(2), 1 << 20).await;
    }
}

/// Tell a stream we stop reading why (the request's own tag is not known
/// until it is read).
async fn refuse_stream<Tag: Send + 'static>(
    replies: &mpsc::Sender<Reply<Tag>>,
    slot: &mut Option<ReplySlot<Tag>>,
    status: Status,
) {
    let reply = match slot.take() {
        Some(reply) => Some(reply),
        None => {
            tokio::time::timeout(FLUSH_GRACE, replies.clone().reserve_owned()).await.ok().and_then(Result::ok)
        }
    };
    if let Some(reply) = reply {
        reply.send(Reply::StreamRefused(status));
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
async fn write_replies<W: ReplyWriter>(
    mut write: impl AsyncWrite + Unpin,
    mut encoder: W,
    mut queued: mpsc::Receiver<Reply<W::Tag>>,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(reply) = queued.recv().await {
        // A big buffer left by a burst of large replies is not kept for the
        // life of the connection.
        if batch.capacity() > BATCH_BYTES * 2 {
            batch = BytesMut::new();
        }
        batch.clear();
        encoder.write(reply, &mut batch).map_err(std::io::Error::other)?;
        // Gather what is ready, up to a bound: taking a reply out of the
        // queue frees its slot, so gathering without one would let a
        // non-reading peer's replies pile up beyond the queue.
        while batch.len() < BATCH_BYTES
            && let Ok(more) = queued.try_recv()
        {
            encoder.write(more, &mut batch).map_err(std::io::Error::other)?;
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

/// Route a request and start it, or answer it with why not.
#[allow(clippy::too_many_arguments)]
fn start_call<P: StreamProtocol>(
    method: String,
    args: P::Args,
    tag: P::Tag,
    mut memory: Reservation,
    reply: ReplySlot<P::Tag>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    calls: &mut JoinSet<()>,
    peer: SocketAddr,
    shutdown: &watch::Receiver<bool>,
) {
    let started = (|| {
        let route = pipeline::route(server, Target::Name(&method), P::CODEC)
            .map_err(|status| P::routing_error(server, &method, status))?;
        let body = P::arguments(&route, args)?;
        // What the call holds while it runs is its arguments.
        memory.grow_to(body.len())?;
        memory.shrink_to(body.len());
        let returns_nothing = route.method.output == "()";
        let incoming = Incoming {
            route,
            protocol: P::PROTOCOL,
            codec: P::CODEC,
            deadline: None,
            metadata: Metadata::new(),
            peer,
            body,
            memory,
            stream: None,
        };
        Ok::<_, Status>((pipeline::start(server, slots, incoming, shutdown)?, returns_nothing))
    })();
    let (call, returns_nothing) = match started {
        Ok(started) => started,
        Err(status) => {
            reply.send(Reply::Answer { tag, result: Err(status), returns_nothing: false });
            return;
        }
    };
    calls.spawn(async move {
        // The call gives its slots back when it is done; what is left is
        // only a reply waiting to be written.
        let outcome = call.run().await;
        reply.send(Reply::Answer { tag, result: outcome.result, returns_nothing });
    });
}
