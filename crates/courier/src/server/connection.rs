//! One native-protocol connection on the server side.
//!
//! One task runs the connection as an event loop: read a burst of bytes,
//! handle every complete frame in it, flush all replies with non-blocking
//! writes, then wait for more input, for the socket to take more output, or
//! for a late reply. Each handler is polled once right here; one that
//! finishes (most do) is answered without a task spawn or a thread wake-up,
//! and one that waits moves to a task of its own, tracked by call id so
//! that a cancel frame or the connection closing drops it. This is what
//! turns a burst of 64 requests into one read and one write.
//!
//! Input is not read while the write queue is above its high-water mark, so
//! a peer that sends pings or bad requests but never reads the answers is
//! simply not read from: our memory stays bounded by the queue's high-water
//! mark plus the limits on in-flight calls.
//!
//! Graceful shutdown uses a goaway followed by a ping: because TCP keeps
//! order, once the pong comes back every request the client sent before it
//! saw the goaway has arrived. The connection then closes as soon as those
//! calls are answered (or the drain timeout passes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::admission::ConnectionSlots;
use super::budget::Reservation;
use super::pipeline::{self, Incoming, Outcome, Target};
use super::{ServerConfig, ServerShared};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::native::{
    FLAG_END_STREAM, Frame, FrameEncoder, FrameError, FrameHeader, FrameKind, GoAway, HEADER_LEN, PING_LEN,
    PREFACE, RequestHead, decode_window_update, encode_message, encode_ping, encode_response,
    encode_window_update,
};
use crate::protocol::sniff::Protocol;
use crate::status::{Code, Status};
use crate::stream::credit::{DEFAULT_STREAM_WINDOW, FlowError};
use crate::stream::pipe::{Pipe, StreamWire};
use crate::transport::keepalive::{Keepalive, Verdict};
use crate::transport::progress::Progress;
use crate::transport::reader::{FrameReader, Partial, ReadError};
use crate::transport::tcp;
use crate::transport::write_queue::{Flusher, WriteQueue};

/// The ping body that marks the drain ping, so its pong is recognised.
const DRAIN_PING: [u8; PING_LEN] = *b"cdrain!!";
/// How long the last replies may take to flush when a connection closes.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// How long to linger reading after closing (see [`tcp::linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 32 * 1024 * 1024;
/// Request headers beyond this count are refused: each costs far more in
/// memory than its two bytes on the wire.
const MAX_HEADERS: usize = 256;
/// The largest payload a frame other than a request may declare (pings
/// carry 8 bytes, goaways a short message): a bigger one is a protocol
/// error as soon as its header arrives, before its bytes are buffered.
const MAX_CONTROL_PAYLOAD: u32 = 64 * 1024;

/// A running call, by call id.
struct CallEntry {
    handle: AbortHandle,
    /// One-way calls have no caller waiting, so they outlive a disconnect.
    one_way: bool,
}

/// The state a connection shares with its call tasks.
struct Conn {
    queue: WriteQueue,
    calls: Mutex<HashMap<u32, CallEntry>>,
    /// The open streams' pipes, by call id: where their messages, grants
    /// and half-closes are delivered.
    streams: Mutex<HashMap<u32, Arc<Pipe>>>,
    /// Signalled when the last in-flight call finishes.
    idle: Notify,
    max_frame_size: usize,
}

impl Conn {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u32, CallEntry>> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Pipe>>> {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stream(&self, call_id: u32) -> Option<Arc<Pipe>> {
        self.streams().get(&call_id).cloned()
    }

    /// End stream `call_id` for a flow-control violation: its handler is
    /// stopped and the client told why; the connection goes on.
    fn break_stream(&self, call_id: u32, codec: Codec, err: FlowError) {
        let Some(pipe) = self.streams().remove(&call_id) else { return };
        let status = Status::internal(format!("protocol error on stream {call_id}: {err}"));
        pipe.reset(status.clone());
        if let Some(entry) = self.calls().remove(&call_id) {
            entry.handle.abort();
        }
        self.reject(call_id, codec, status);
    }

    /// Abort running calls: all of them, or only those with a caller waiting.
    fn abort_calls(&self, including_one_way: bool) {
        self.calls().retain(|_, entry| {
            let abort = including_one_way || !entry.one_way;
            if abort {
                entry.handle.abort();
            }
            !abort
        });
    }

    /// Forget a call, if the entry for `call_id` is still the one of `task`
    /// (a cancelled call's id may already have been reused).
    fn forget(&self, call_id: u32, task: tokio::task::Id) {
        let mut calls = self.calls();
        if calls.get(&call_id).is_some_and(|entry| entry.handle.id() == task) {
            calls.remove(&call_id);
            // A stream's end (or its handler's abort): later frames for
            // its id are stale.
            self.streams().remove(&call_id);
        }
        if calls.is_empty() {
            self.idle.notify_one();
        }
    }

    /// Reply to a call without starting it (routing and limit errors).
    fn reject(&self, call_id: u32, codec: Codec, status: Status) {
        let _ = self.queue.append_local(|buf| {
            encode_response(buf, call_id, codec, &Err(status), &Metadata::new(), self.max_frame_size);
        });
    }

    fn goaway(&self, last_call_id: u32, code: Code, message: &str) {
        let _ = self.queue.push_now(|buf| {
            let mut frame = FrameEncoder::begin(buf, FrameKind::GoAway, 0, 0);
            GoAway { last_call_id, code: code.as_u32(), message }.encode(buf);
            frame.end_meta(buf);
            // A goaway is tiny; if the limit is smaller still, it is dropped
            // and the close itself tells the peer.
            let _ = frame.finish(buf, self.max_frame_size);
        });
    }
}

/// Removes a call from the connection's table when its task ends, however
/// it ends (completion, abort, or a panic outside the handler's guard).
struct Forget {
    conn: Arc<Conn>,
    call_id: u32,
    task: tokio::task::Id,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.conn.forget(self.call_id, self.task);
    }
}

/// Takes every call task down if the connection's own task is dropped (for
/// example when the server is aborted). Disarmed once the connection ended
/// normally and has aborted what it should, so surviving one-way calls run.
struct AbortOnDrop {
    conn: Arc<Conn>,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.conn.abort_calls(true);
        }
    }
}

/// Why the read loop ended; decides what the peer is told.
enum End {
    /// The client closed its side.
    PeerClosed,
    /// Drained after a graceful shutdown.
    Drained,
    /// Drain timeout passed with calls still running.
    DrainTimeout,
    /// The peer stopped answering pings.
    KeepaliveTimeout,
    /// The writer failed (peer reset, broken pipe).
    WriteFailed,
    /// A protocol violation or read error; the peer gets a goaway naming
    /// the last call id taken, so it can retry any later ones elsewhere.
    Error { code: Code, message: String, last_call_id: u32 },
}

pub(crate) async fn serve(
    stream: TcpStream,
    sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    shutdown: watch::Receiver<bool>,
) {
    let (read, write) = stream.into_split();
    let config = &server.config;
    // The bytes read to recognise the protocol are the start of the preface.
    let mut reader = FrameReader::new(read, sniffed, config.max_frame_size);
    let mut flusher = Flusher::default();

    let conn = Arc::new(Conn {
        queue: WriteQueue::new(config.write_high_water),
        calls: Mutex::new(HashMap::new()),
        streams: Mutex::new(HashMap::new()),
        idle: Notify::new(),
        max_frame_size: config.max_frame_size,
    });

    match tokio::time::timeout(config.handshake_timeout, reader.read_preface()).await {
        Ok(Ok(())) => {}
        Ok(Err(ReadError::Frame(err @ FrameError::UnsupportedVersion(_)))) => {
            // A courier peer from another version: tell it why, politely.
            tracing::debug!(%peer, %err, "refusing connection");
            let _ = conn.queue.append_local(|buf| buf.extend_from_slice(&PREFACE));
            conn.goaway(0, Code::Unimplemented, &err.to_string());
            let _ = tokio::time::timeout(FLUSH_GRACE, flusher.finish(&conn.queue, &write)).await;
            return;
        }
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "closing connection: bad preface");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "closing connection: no preface before the handshake timeout");
            return;
        }
    }

    let _ = conn.queue.append_local(|buf| buf.extend_from_slice(&PREFACE));
    let mut cleanup = AbortOnDrop { conn: conn.clone(), armed: true };
    let end = run(&mut reader, &write, &mut flusher, &conn, &server, peer, shutdown).await;
    let linger = match &end {
        End::PeerClosed => {
            tracing::trace!(%peer, "client closed the connection");
            // Nobody is waiting for replies; one-way calls may finish.
            conn.abort_calls(false);
            false
        }
        End::Drained => {
            tracing::trace!(%peer, "connection drained");
            true
        }
        End::DrainTimeout => {
            tracing::info!(%peer, "drain timeout: cancelling calls still running");
            conn.abort_calls(true);
            true
        }
        End::KeepaliveTimeout => {
            tracing::info!(%peer, "closing connection: peer stopped answering pings");
            conn.abort_calls(false);
            false
        }
        End::WriteFailed => {
            tracing::debug!(%peer, "closing connection: write failed");
            conn.abort_calls(false);
            false
        }
        End::Error { code, message, last_call_id } => {
            tracing::info!(%peer, %code, %message, "closing connection");
            conn.abort_calls(false);
            conn.goaway(*last_call_id, *code, message);
            true
        }
    };
    cleanup.armed = false;

    if !matches!(end, End::WriteFailed) {
        // Send the last replies and the goaway; a peer that stopped reading
        // gets a bounded wait.
        let _ = tokio::time::timeout(FLUSH_GRACE, flusher.finish(&conn.queue, &write)).await;
    }
    if linger {
        tcp::linger(reader.into_inner(), LINGER_TIME, LINGER_BYTES).await;
    }
}

/// The connection's event loop (see the module docs).
async fn run(
    reader: &mut FrameReader,
    write: &OwnedWriteHalf,
    flusher: &mut Flusher,
    conn: &Arc<Conn>,
    server: &Arc<ServerShared>,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let config = &server.config;
    let slots = Arc::new(server.admission.connection());
    let mut keepalive = config.keepalive_interval.map(|interval| Keepalive::new(interval, Instant::now()));
    let keepalive_timer =
        tokio::time::sleep_until(keepalive.as_ref().map_or_else(far_future, Keepalive::deadline).into());
    tokio::pin!(keepalive_timer);
    let drain_timer = tokio::time::sleep_until(far_future().into());
    tokio::pin!(drain_timer);

    let mut drain = Drain::default();
    let mut last_call_id = 0u32;
    // The request being received, if one is partly here: its progress (it
    // must keep arriving) and the budget reserved for it.
    let timeouts = config.request_timeouts;
    let mut progress = Progress::default();
    let mut received = reader.received();
    let mut reserved: Option<(u32, Reservation)> = None;
    let progress_timer = tokio::time::sleep_until(far_future().into());
    tokio::pin!(progress_timer);
    let mut progress_deadline: Option<Instant> = None;

    loop {
        // 1. Handle every complete frame already read, while there is room
        //    for the replies.
        let mut stopped_full = false;
        let mut budget = Budget::new();
        loop {
            if conn.queue.is_full() {
                stopped_full = true;
                break;
            }
            let frame = match reader.decode_buffered() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return read_error(err, conn, last_call_id, peer),
            };
            // A frame arrived whole: whatever follows is a new request.
            progress.complete();
            let reservation = match reserved.take() {
                Some((call_id, reservation)) if call_id == frame.header.call_id => Some(reservation),
                _ => None,
            };
            if let Some(end) = handle_frame(
                frame,
                reservation,
                conn,
                server,
                &slots,
                peer,
                &mut drain,
                &mut last_call_id,
                &mut budget,
                &shutdown,
            )
            .await
            {
                return end;
            }
        }
        if drain.acked && conn.calls().is_empty() {
            return End::Drained;
        }
        // What is left in the buffer is part of a request (or of a frame we
        // are throwing away): it must keep arriving, and its bytes must fit
        // the server's budget before they are buffered.
        if stopped_full {
            // We stopped reading, not the peer: nothing is overdue.
            progress.complete();
        } else {
            match reader.partial() {
                Partial::Nothing => progress.complete(),
                Partial::Header | Partial::Discarding => progress.start(Instant::now()),
                Partial::Frame(header) => {
                    progress.start(Instant::now());
                    if let Some(end) =
                        reserve_partial(&header, &mut reserved, reader, conn, server, last_call_id)
                    {
                        return end;
                    }
                }
            }
        }
        let deadline = progress.deadline(&timeouts);
        if deadline != progress_deadline {
            progress_deadline = deadline;
            progress_timer.as_mut().reset(deadline.unwrap_or_else(far_future).into());
        }

        // 2. Flush what the socket takes now.
        let flushed = match flusher.flush(&conn.queue, write) {
            Ok(flushed) => flushed,
            Err(err) => {
                tracing::debug!(%peer, %err, "write failed");
                return End::WriteFailed;
            }
        };
        if flushed && stopped_full {
            // Step 1 stopped for room that the flush just made, with frames
            // still read but unhandled: handle them before waiting for more.
            continue;
        }

        // 3. Wait. Biased, with reading last: control events are cheap to
        //    check and must not starve behind a client that keeps us busy.
        let can_read = !conn.queue.is_full();
        tokio::select! {
            biased;
            changed = shutdown.wait_for(|stop| *stop), if !drain.started => {
                // A dropped sender means the server itself went away: drain too.
                let _ = changed;
                drain.started = true;
                start_drain(conn, last_call_id);
                drain_timer.as_mut().reset(deadline_after(config.drain_timeout).into());
            }
            () = conn.idle.notified(), if drain.acked => {}
            () = &mut drain_timer, if drain.started => return End::DrainTimeout,
            () = &mut progress_timer, if progress_deadline.is_some() => {
                if let Err(overdue) = progress.check(Instant::now(), &timeouts) {
                    server.stats.request_timed_out();
                    return End::Error {
                        code: Code::DeadlineExceeded,
                        message: format!("closing the connection: {overdue}"),
                        last_call_id,
                    };
                }
            }
            () = &mut keepalive_timer, if keepalive.is_some() => {
                let Some(state) = keepalive.as_mut() else { continue };
                match state.tick(reader.last_read(), &conn.queue) {
                    Ok(next) => keepalive_timer.as_mut().reset(next.into()),
                    Err(Verdict::Dead) => return End::KeepaliveTimeout,
                    Err(Verdict::QueueClosed) => return End::WriteFailed,
                }
            }
            writable = write.writable(), if !flushed => {
                if writable.is_err() {
                    return End::WriteFailed;
                }
            }
            // A call task queued its reply.
            () = conn.queue.queued(), if flushed => {}
            read = reader.read_more(), if can_read => match read {
                Ok(true) => {
                    let now = reader.received();
                    progress.received(usize::try_from(now - received).unwrap_or(usize::MAX), Instant::now());
                    received = now;
                }
                Ok(false) => return End::PeerClosed,
                Err(err) => return read_error(err, conn, last_call_id, peer),
            },
        }
    }
}

/// How much inline polling one burst may still do (see `inline`).
struct Budget {
    started: Instant,
}

impl Budget {
    fn new() -> Budget {
        Budget { started: Instant::now() }
    }

    fn allows_inline(&self) -> bool {
        self.started.elapsed() < super::inline::BURST_BUDGET
    }
}

/// Graceful-drain progress of one connection.
#[derive(Default)]
struct Drain {
    /// The goaway and drain ping were sent.
    started: bool,
    /// The drain ping's pong arrived: every request the client sent before
    /// it saw the goaway has been read.
    acked: bool,
}

/// What a failed read means for the connection.
fn read_error(err: ReadError, conn: &Conn, last_call_id: u32, peer: SocketAddr) -> End {
    match err {
        ReadError::TruncatedFrame => End::PeerClosed,
        ReadError::Io(err) => {
            tracing::debug!(%peer, %err, "read failed");
            End::PeerClosed
        }
        ReadError::Frame(FrameError::TooLarge { call_id, kind, size, limit }) => {
            let message = format!("frame of {size} bytes exceeds this server's limit of {limit} bytes");
            if kind == FrameKind::Request as u8 {
                conn.reject(call_id, Codec::default(), Status::resource_exhausted(message.clone()));
            }
            End::Error { code: Code::ResourceExhausted, message, last_call_id }
        }
        ReadError::Frame(err) => protocol_error(format!("{err}"), last_call_id),
    }
}

/// Reserve the server's budget for a request whose header has arrived and
/// whose payload is on its way, before its bytes are buffered. A request
/// that does not fit is refused with `ResourceExhausted` and stepped over
/// (its bytes are read and dropped); the connection goes on. A frame of
/// another kind that claims a large payload is a protocol error at once.
fn reserve_partial(
    header: &FrameHeader,
    reserved: &mut Option<(u32, Reservation)>,
    reader: &mut FrameReader,
    conn: &Conn,
    server: &ServerShared,
    last_call_id: u32,
) -> Option<End> {
    if header.kind == FrameKind::Message {
        // Bounded by the stream's credit (and the frame limit), not the
        // budget: a stream's messages are held only within its window.
        return None;
    }
    if !matches!(header.kind, FrameKind::Request | FrameKind::OneWay | FrameKind::StreamOpen) {
        if header.payload_len > MAX_CONTROL_PAYLOAD {
            return Some(protocol_error(
                format!("a {:?} frame of {} bytes", header.kind, header.payload_len),
                last_call_id,
            ));
        }
        return None;
    }
    if reserved.as_ref().is_some_and(|(call_id, _)| *call_id == header.call_id) {
        return None;
    }
    match server.budget.reserve(HEADER_LEN + header.payload_len as usize) {
        Ok(reservation) => *reserved = Some((header.call_id, reservation)),
        Err(status) => {
            tracing::debug!(call_id = header.call_id, %status, "refusing a request over the memory budget");
            if header.kind != FrameKind::OneWay {
                conn.reject(header.call_id, Codec::from_id(header.codec).unwrap_or_default(), status);
            }
            reader.skip_partial(header);
        }
    }
    None
}

/// Act on one frame; `Some` ends the connection.
#[allow(clippy::too_many_arguments)]
async fn handle_frame(
    frame: Frame,
    reservation: Option<Reservation>,
    conn: &Arc<Conn>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    peer: SocketAddr,
    drain: &mut Drain,
    last_call_id: &mut u32,
    budget: &mut Budget,
    shutdown: &watch::Receiver<bool>,
) -> Option<End> {
    match frame.header.kind {
        FrameKind::Request | FrameKind::OneWay | FrameKind::StreamOpen => {
            let call_id = frame.header.call_id;
            // (An open stream's id is in `calls` too: streams always run
            // in a task of their own, entered there as they start.)
            if conn.calls().contains_key(&call_id) {
                return Some(protocol_error(
                    format!("call id {call_id} is already in flight"),
                    *last_call_id,
                ));
            }
            *last_call_id = (*last_call_id).max(call_id);
            if drain.acked {
                // Sent after the client saw the goaway and answered the
                // drain ping: a misbehaving client.
                if frame.header.kind != FrameKind::OneWay {
                    conn.reject(
                        call_id,
                        Codec::default(),
                        Status::unavailable("the server is shutting down"),
                    );
                }
                return None;
            }
            start_call(frame, reservation, conn, server, slots, peer, budget, shutdown).await;
        }
        FrameKind::Message => {
            let call_id = frame.header.call_id;
            // A stream that already ended (its handler returned, it was
            // cancelled) is over: late messages are dropped.
            let pipe = conn.stream(call_id)?;
            let end = frame.header.flags & FLAG_END_STREAM != 0;
            match pipe.deliver(frame.body) {
                Ok(grant) => {
                    if let Some(grant) = grant {
                        let _ = conn.queue.append_local(|buf| encode_window_update(buf, call_id, grant));
                    }
                    if end {
                        pipe.end_inbound(Ok(()));
                    }
                }
                Err(err) => {
                    conn.break_stream(call_id, Codec::from_id(frame.header.codec).unwrap_or_default(), err)
                }
            }
        }
        FrameKind::HalfClose => {
            if let Some(pipe) = conn.stream(frame.header.call_id) {
                pipe.end_inbound(Ok(()));
            }
        }
        FrameKind::WindowUpdate => {
            let increment = match decode_window_update(&frame.body) {
                Ok(increment) => increment,
                Err(err) => return Some(protocol_error(err.to_string(), *last_call_id)),
            };
            if let Some(pipe) = conn.stream(frame.header.call_id)
                && let Err(err) = pipe.grant(increment)
            {
                conn.break_stream(frame.header.call_id, Codec::default(), err);
            }
        }
        FrameKind::Cancel => {
            if let Some(pipe) = conn.streams().remove(&frame.header.call_id) {
                pipe.reset(Status::cancelled("the caller cancelled the stream"));
            }
            let entry = conn.calls().remove(&frame.header.call_id);
            if let Some(entry) = entry {
                entry.handle.abort();
                if conn.calls().is_empty() {
                    conn.idle.notify_one();
                }
            }
        }
        FrameKind::Ping => {
            let Ok(payload) = <[u8; PING_LEN]>::try_from(&frame.body[..]) else {
                return Some(protocol_error("ping body must be 8 bytes".into(), *last_call_id));
            };
            let _ = conn.queue.append_local(|buf| encode_ping(buf, FrameKind::Pong, payload));
        }
        FrameKind::Pong => {
            if drain.started && frame.body[..] == DRAIN_PING {
                drain.acked = true;
            }
        }
        FrameKind::GoAway => {
            // The client is leaving; it will close once its calls are
            // answered, which ends the loop with PeerClosed.
        }
        FrameKind::Response => {
            return Some(protocol_error("a client sent a response frame".into(), *last_call_id));
        }
    }
    None
}

fn protocol_error(what: String, last_call_id: u32) -> End {
    End::Error { code: Code::InvalidArgument, message: format!("protocol error: {what}"), last_call_id }
}

/// `now + timeout`, or a far-off instant if that overflows.
fn deadline_after(timeout: Duration) -> Instant {
    Instant::now().checked_add(timeout).unwrap_or_else(far_future)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn start_drain(conn: &Conn, last_call_id: u32) {
    conn.goaway(last_call_id, Code::Ok, "the server is shutting down");
    let _ = conn.queue.push_now(|buf| encode_ping(buf, FrameKind::Ping, DRAIN_PING));
}

/// Read a request frame into a routed call, with its bytes reserved; on
/// refusal, the codec to answer in and the status to send.
fn incoming(
    frame: Frame,
    reservation: Option<Reservation>,
    conn: &Arc<Conn>,
    server: &ServerShared,
    peer: SocketAddr,
) -> Result<Incoming, (Codec, Status)> {
    let config: &ServerConfig = &server.config;
    let Some(codec) = Codec::from_id(frame.header.codec) else {
        return Err((
            Codec::default(),
            Status::invalid_argument(format!("unknown codec id {}", frame.header.codec)),
        ));
    };
    if frame.meta.len() > config.max_metadata_size {
        return Err((
            codec,
            Status::resource_exhausted(format!(
                "request metadata of {} bytes exceeds this server's limit of {} bytes",
                frame.meta.len(),
                config.max_metadata_size
            )),
        ));
    }
    let head = RequestHead::decode(&frame.meta)
        .map_err(|err| (codec, Status::invalid_argument(format!("malformed request metadata: {err}"))))?;
    if head.headers.len() > MAX_HEADERS {
        return Err((
            codec,
            Status::resource_exhausted(format!(
                "{} request headers exceed the limit of {MAX_HEADERS}",
                head.headers.len()
            )),
        ));
    }
    let route =
        pipeline::route(server, Target::Name(head.method), codec).map_err(|status| (codec, status))?;
    let opens_stream = frame.header.kind == FrameKind::StreamOpen;
    if opens_stream != route.method.kind.is_streaming() {
        return Err((
            codec,
            Status::invalid_argument(if opens_stream {
                format!("{} is a unary method: call it with a request, not a stream", route.method.full_name)
            } else {
                format!("{} is a streaming method: open a stream to call it", route.method.full_name)
            }),
        ));
    }
    if opens_stream && !frame.body.is_empty() {
        return Err((codec, Status::invalid_argument("a stream-open frame carries no body: send messages")));
    }
    // Whole frames that arrived in one read are reserved here; larger ones
    // were reserved when their header arrived.
    let memory = match reservation {
        Some(reservation) => reservation,
        None => {
            server.budget.reserve(HEADER_LEN + frame.meta.len() + frame.body.len()).map_err(|s| (codec, s))?
        }
    };
    let stream = opens_stream.then(|| {
        let call_id = frame.header.call_id;
        let wire = Arc::new(ServerStreamWire { conn: conn.clone(), call_id, codec: codec.id() });
        let (pipe, slot) = crate::stream::server_halves(wire, DEFAULT_STREAM_WINDOW, DEFAULT_STREAM_WINDOW);
        conn.streams().insert(call_id, pipe);
        slot
    });
    Ok(Incoming {
        route,
        protocol: Protocol::Native,
        codec,
        // A deadline too far away to represent is no deadline.
        deadline: head.deadline.and_then(|remaining| Instant::now().checked_add(remaining)),
        metadata: head.headers.collect(),
        peer,
        body: frame.body,
        memory,
        stream,
    })
}

/// How a handler's stream halves reach this connection: messages and
/// grants go straight into the write queue, in order with the call's end.
struct ServerStreamWire {
    conn: Arc<Conn>,
    call_id: u32,
    codec: u8,
}

impl StreamWire for ServerStreamWire {
    fn message(&self, message: bytes::Bytes) -> Result<(), Status> {
        let max_frame_size = self.conn.max_frame_size;
        match self
            .conn
            .queue
            .push_now(|buf| encode_message(buf, self.call_id, self.codec, &message, false, max_frame_size))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                Err(Status::resource_exhausted(format!("a stream message is too large to send: {err}")))
            }
            Err(_closed) => Err(Status::unavailable("the connection closed mid-stream")),
        }
    }

    /// The end goes out with the call's status.
    fn half_close(&self) {}

    fn grant(&self, increment: u32) {
        let _ = self.conn.queue.push_now(|buf| encode_window_update(buf, self.call_id, increment));
    }

    /// A handler never cancels: it ends the stream by returning.
    fn cancel(&self) {}
}

#[allow(clippy::too_many_arguments)]
async fn start_call(
    frame: Frame,
    reservation: Option<Reservation>,
    conn: &Arc<Conn>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    peer: SocketAddr,
    budget: &Budget,
    shutdown: &watch::Receiver<bool>,
) {
    let call_id = frame.header.call_id;
    let one_way = frame.header.kind == FrameKind::OneWay;
    let streaming = frame.header.kind == FrameKind::StreamOpen;
    let started = incoming(frame, reservation, conn, server, peer).and_then(|incoming| {
        let codec = incoming.codec;
        pipeline::start(server, slots, incoming, shutdown).map(|call| (codec, call)).map_err(|s| (codec, s))
    });
    let (codec, call) = match started {
        Ok(started) => started,
        Err((codec, status)) => {
            conn.streams().remove(&call_id);
            if one_way {
                tracing::debug!(%peer, %status, "dropping one-way call");
            } else {
                conn.reject(call_id, codec, status);
            }
            return;
        }
    };
    let max_frame_size = conn.max_frame_size;

    // Handlers of methods known to be quick to their first `.await` are
    // polled right here; most then finish and are answered at once.
    // (A stream lives long: never on the connection's own task.)
    let call = if !streaming && call.may_run_inline() && budget.allows_inline() {
        let mut call = call;
        match std::future::poll_fn(|task| std::task::Poll::Ready(call.poll_inline(task))).await {
            Some(result) => {
                let outcome = call.finish(result);
                return answer_inline(conn, call_id, one_way, codec, &outcome, max_frame_size);
            }
            None => call,
        }
    } else {
        call
    };

    // It is waiting on something (or not known to be quick): give it a
    // task of its own.
    let task_conn = conn.clone();
    // Hold the table's lock across the spawn so the task cannot finish (and
    // try to remove itself) before it is inserted.
    let mut calls = conn.calls();
    let task = tokio::spawn(async move {
        let _forget = Forget { conn: task_conn.clone(), call_id, task: tokio::task::id() };
        let outcome = call.run().await;
        if !one_way {
            let _ = task_conn
                .queue
                .push(|buf| {
                    encode_response(buf, call_id, codec, &outcome.result, &outcome.metadata, max_frame_size);
                })
                .await;
        } else if let Err(status) = &outcome.result {
            tracing::debug!(%status, "one-way call failed");
        }
    });
    calls.insert(call_id, CallEntry { handle: task.abort_handle(), one_way });
}

/// Queue the reply of a call answered on the connection's own task.
fn answer_inline(
    conn: &Conn,
    call_id: u32,
    one_way: bool,
    codec: Codec,
    outcome: &Outcome,
    max_frame_size: usize,
) {
    if one_way {
        if let Err(status) = &outcome.result {
            tracing::debug!(%status, "one-way call failed");
        }
    } else {
        let _ = conn.queue.append_local(|buf| {
            encode_response(buf, call_id, codec, &outcome.result, &outcome.metadata, max_frame_size);
        });
    }
}
