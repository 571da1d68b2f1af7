//! One native-protocol connection on the client side.
//!
//! Callers register a call id in the pending table, encode their request
//! straight into the shared [`WriteQueue`], and wait on a oneshot. One
//! connection task runs an event loop: route every response frame read to
//! its caller by call id (decoding is left to the caller's task, keeping
//! this loop lean), answer pings, send keepalive pings, and flush queued
//! requests with non-blocking writes. On any failure, or if it is dropped,
//! it fails every pending call so nobody waits forever.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};

use super::error::ConnectError;
use super::settings::ChannelConfig;
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::native::{
    Frame, FrameEncoder, FrameError, FrameKind, GoAway, HEADER_LEN, PING_LEN, PREFACE, RequestHead,
    ResponseHead, decode_window_update, encode_cancel, encode_half_close, encode_message, encode_ping,
    encode_window_update,
};
use crate::status::{Code, Status};
use crate::stream::credit::{DEFAULT_STREAM_WINDOW, FlowError};
use crate::stream::pipe::{Pipe, RawReceiver, RawSender, StreamWire};
use crate::transport::keepalive::{Keepalive, Verdict};
use crate::transport::reader::{FrameReader, ReadError};
use crate::transport::tcp;
use crate::transport::write_queue::{Flusher, WriteQueue, shutdown_write};

/// A response frame and when the connection task routed it.
struct Routed {
    frame: Frame,
    at: Instant,
}

type Reply = Result<Routed, CallError>;

/// Every this many calls made alone, spin regardless of the measured round
/// trip, so one slow call cannot switch spinning off for good.
const SPIN_RESAMPLE: u64 = 32;

/// How long a closing connection may take to flush its last frames (a
/// server that stopped reading would otherwise hold it forever).
const FLUSH_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Pending {
    calls: HashMap<u32, oneshot::Sender<Reply>>,
    /// Open streams, by call id (the same id space as calls).
    streams: HashMap<u32, Arc<Pipe>>,
    /// Set once the connection is dead; later calls fail with it.
    closed: Option<Status>,
}

struct Shared {
    queue: WriteQueue,
    /// The socket's write half and what is being written to it. The
    /// connection task flushes; a caller alone on the connection flushes
    /// its own request, saving a hand-off to the connection task.
    write: OwnedWriteHalf,
    flusher: Mutex<Flusher>,
    pending: Mutex<Pending>,
    next_id: AtomicU32,
    /// The server sent a goaway: finish what is in flight, start nothing new.
    draining: AtomicBool,
    /// Tells the connection task to stop (the last user dropped the connection).
    stop: Notify,
    max_frame_size: usize,
    peer: SocketAddr,
    /// See [`ChannelBuilder::spin_wait`](super::ChannelBuilder::spin_wait).
    spin_wait: Option<Duration>,
    /// Smoothed round-trip time of calls made alone on this connection,
    /// from sending to the reply being routed, in nanoseconds (0 until
    /// measured): spinning only pays off below it.
    lone_rtt_ns: AtomicU64,
    /// Calls made alone so far.
    lone_calls: AtomicU64,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flusher(&self) -> std::sync::MutexGuard<'_, Flusher> {
        self.flusher.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write what the socket takes now (see [`Flusher::flush`]).
    fn flush(&self) -> std::io::Result<bool> {
        self.flusher().flush(&self.queue, &self.write)
    }

    /// Send what is left (within a grace period), then stop the queue and
    /// send FIN whatever happened. Flushing goes through the same lock as
    /// callers' own flushes, so the two never interleave on the wire.
    async fn finish(&self) {
        self.queue.close();
        let drain = async {
            loop {
                match self.flush() {
                    Ok(true) | Err(_) => return,
                    Ok(false) => {
                        if self.write.writable().await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(FLUSH_GRACE, drain).await;
        self.queue.stop();
        let _ = shutdown_write(&self.write);
    }

    fn note_lone_rtt(&self, rtt: Duration) {
        let rtt = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        let old = self.lone_rtt_ns.load(Ordering::Relaxed);
        // An exponential moving average with weight 1/8; racing updates
        // just lose a sample.
        let new = if old == 0 { rtt } else { old - old / 8 + rtt / 8 };
        self.lone_rtt_ns.store(new, Ordering::Relaxed);
    }

    /// Fail every pending call and refuse new ones.
    fn close(&self, status: Status) {
        let (calls, streams) = {
            let mut pending = self.pending();
            pending.closed.get_or_insert(status.clone());
            (std::mem::take(&mut pending.calls), std::mem::take(&mut pending.streams))
        };
        for (_, caller) in calls {
            let _ = caller.send(Err(CallError::Failed(status.clone())));
        }
        // A stream cut by the connection ends in an error, never cleanly.
        for (_, pipe) in streams {
            pipe.reset(Status::unavailable(format!("the stream was cut: {}", status.message())));
        }
        self.queue.close();
    }

    /// The server closes for an error after taking call `last_call_id`:
    /// later calls were never processed, so release them for a retry.
    fn release_unprocessed(&self, last_call_id: u32) {
        let unprocessed: Vec<_> = {
            let mut pending = self.pending();
            let ids: Vec<u32> = pending.calls.keys().copied().filter(|&id| id > last_call_id).collect();
            ids.into_iter().filter_map(|id| pending.calls.remove(&id)).collect()
        };
        for caller in unprocessed {
            let _ = caller.send(Err(CallError::Unprocessed));
        }
        let streams: Vec<_> = {
            let mut pending = self.pending();
            let ids: Vec<u32> = pending.streams.keys().copied().filter(|&id| id > last_call_id).collect();
            ids.into_iter().filter_map(|id| pending.streams.remove(&id)).collect()
        };
        for pipe in streams {
            pipe.reset(Status::unavailable(format!(
                "the server at {} closed the connection before starting the stream",
                self.peer
            )));
        }
    }

    fn stream(&self, call_id: u32) -> Option<Arc<Pipe>> {
        self.pending().streams.get(&call_id).cloned()
    }
}

/// Why a call did not complete on this connection.
pub(crate) enum CallError {
    /// The call failed with this status.
    Failed(Status),
    /// The server never processed the request: the connection was draining
    /// before it was queued, or the server closed for an error before
    /// reaching it. It is safe to send again on another connection.
    Unprocessed,
}

impl From<Status> for CallError {
    fn from(status: Status) -> CallError {
        CallError::Failed(status)
    }
}

/// A live connection. Dropping the last clone closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

impl Connection {
    /// Dial and exchange prefaces, then start the connection task. Nothing
    /// is spawned until the handshake succeeds, so an attempt that fails or
    /// times out leaves nothing behind.
    pub(crate) async fn connect(addr: &str, config: &ChannelConfig) -> Result<Connection, ConnectError> {
        let timeout = config.connect_timeout;
        let io_error = |source| ConnectError::Io { addr: addr.to_owned(), source };
        let handshake = async {
            let stream = TcpStream::connect(addr).await.map_err(io_error)?;
            tcp::configure(&stream);
            let peer = stream.peer_addr().map_err(io_error)?;
            let (read, mut write) = stream.into_split();
            write.write_all(&PREFACE).await.map_err(io_error)?;
            let mut reader = FrameReader::new(read, BytesMut::new(), config.max_frame_size);
            reader
                .read_preface()
                .await
                .map_err(|err| ConnectError::Handshake { addr: addr.to_owned(), reason: err.to_string() })?;
            Ok((peer, reader, write))
        };
        let (peer, reader, write) = match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result?,
            Err(_) => return Err(ConnectError::Timeout { addr: addr.to_owned(), timeout }),
        };
        let shared = Arc::new(Shared {
            queue: WriteQueue::new(config.write_high_water),
            write,
            flusher: Mutex::new(Flusher::default()),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU32::new(1),
            draining: AtomicBool::new(false),
            stop: Notify::new(),
            max_frame_size: config.max_frame_size,
            peer,
            spin_wait: config.spin_wait,
            lone_rtt_ns: AtomicU64::new(0),
            lone_calls: AtomicU64::new(0),
        });
        tokio::spawn(run(shared.clone(), reader, config.keepalive_interval));
        Ok(Connection { shared })
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        !self.shared.draining.load(Ordering::Acquire) && self.shared.pending().closed.is_none()
    }

    /// Send one call and wait for its response frame (`None` for one-way
    /// calls, which return once the request is queued). Dropping the future
    /// before the reply arrives sends a cancel.
    pub(crate) async fn call(
        &self,
        kind: FrameKind,
        method: &str,
        codec: Codec,
        deadline: Option<Instant>,
        metadata: &Metadata,
        encode_body: impl Fn(&mut BytesMut) -> Result<(), Status>,
    ) -> Result<Option<Frame>, CallError> {
        let shared = &self.shared;
        // Alone on the connection, a caller sends its request itself: there is
        // nothing to batch it with, and waking the connection task to write it
        // would cost a task switch per round trip.
        let alone;
        let (call_id, reply) = if kind == FrameKind::Request {
            let (tx, rx) = oneshot::channel();
            let mut pending = shared.pending();
            if let Some(status) = &pending.closed {
                return Err(self.unusable(status.clone()));
            }
            alone = pending.calls.is_empty();
            // After 2^32 calls ids wrap; skip any still waiting for a reply.
            let mut call_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            while pending.calls.contains_key(&call_id) {
                call_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            }
            pending.calls.insert(call_id, tx);
            (call_id, Some(rx))
        } else {
            alone = shared.pending().calls.is_empty();
            (shared.next_id.fetch_add(1, Ordering::Relaxed), None)
        };
        let mut guard = CallGuard { shared, call_id, sent: false, done: false };

        let max_frame_size = shared.max_frame_size;
        let queued = shared
            .queue
            .push_quiet(|buf| {
                // Checked under the queue's lock: the reader answers the drain
                // ping under the same lock after setting the flag, so a request
                // queued here is guaranteed to reach the server before its pong.
                if shared.draining.load(Ordering::Acquire) {
                    return Err(CallError::Unprocessed);
                }
                let mut frame = FrameEncoder::begin(buf, kind, codec.id(), call_id);
                let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                RequestHead::encode(buf, method, remaining, metadata.iter());
                frame.end_meta(buf);
                if let Err(status) = encode_body(buf) {
                    frame.abandon(buf);
                    return Err(status.into());
                }
                frame.finish(buf, max_frame_size).map_err(|err| {
                    Status::resource_exhausted(format!("the request to {method} is too large to send: {err}"))
                        .into()
                })
            })
            .await;
        match queued {
            Ok(Ok(())) => guard.sent = true,
            Ok(Err(err)) => return Err(err),
            Err(_closed) => return Err(self.unusable(self.closed_status())),
        }
        // Flush it ourselves if alone and the socket takes it all; otherwise
        // (or on any error, which the connection task will report) wake the
        // connection task to send it.
        let sent_alone = alone && matches!(shared.flush(), Ok(true));
        if !sent_alone {
            shared.queue.wake();
        }

        let Some(mut rx) = reply else {
            guard.done = true;
            return Ok(None);
        };
        let sent_at = Instant::now();
        let early = if sent_alone { spin_for_reply(shared, &mut rx).await } else { None };
        let reply = match early {
            Some(reply) => reply,
            None => rx.await,
        };
        guard.done = true;
        match reply {
            Ok(Ok(routed)) => {
                if sent_alone {
                    shared.note_lone_rtt(routed.at.saturating_duration_since(sent_at));
                }
                Ok(Some(routed.frame))
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(self.closed_status().into()),
        }
    }

    /// Open a stream for `method` on this connection: the caller's halves,
    /// failing at `deadline`. The halves keep the connection alive.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        method: &str,
        codec: Codec,
        deadline: Option<Instant>,
        metadata: &Metadata,
    ) -> Result<(RawSender, RawReceiver), CallError> {
        let shared = &self.shared;
        let (call_id, pipe, sender, receiver) = {
            let mut pending = shared.pending();
            if let Some(status) = &pending.closed {
                return Err(self.unusable(status.clone()));
            }
            let mut call_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            while pending.calls.contains_key(&call_id) || pending.streams.contains_key(&call_id) {
                call_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            }
            let wire = Arc::new(ClientStreamWire { connection: self.clone(), call_id, codec: codec.id() });
            let (pipe, sender, receiver) =
                crate::stream::client_halves(wire, DEFAULT_STREAM_WINDOW, DEFAULT_STREAM_WINDOW, deadline);
            pending.streams.insert(call_id, pipe.clone());
            (call_id, pipe, sender, receiver)
        };
        let max_frame_size = shared.max_frame_size;
        let queued = shared
            .queue
            .push(|buf| {
                if shared.draining.load(Ordering::Acquire) {
                    return Err(CallError::Unprocessed);
                }
                let mut frame = FrameEncoder::begin(buf, FrameKind::StreamOpen, codec.id(), call_id);
                let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                RequestHead::encode(buf, method, remaining, metadata.iter());
                frame.end_meta(buf);
                frame.finish(buf, max_frame_size).map_err(|err| {
                    Status::resource_exhausted(format!("the stream of {method} cannot open: {err}")).into()
                })
            })
            .await;
        let failed = match queued {
            Ok(Ok(())) => return Ok((sender, receiver)),
            Ok(Err(err)) => err,
            Err(_closed) => self.unusable(self.closed_status()),
        };
        // Nothing went out: forget the stream without telling the server.
        shared.pending().streams.remove(&call_id);
        pipe.reset(Status::cancelled("the stream did not open"));
        std::mem::forget(receiver);
        drop(sender);
        Err(failed)
    }

    /// The error for a call that could not be queued: a drained connection
    /// sent nothing, so the call may go elsewhere.
    fn unusable(&self, status: Status) -> CallError {
        if self.shared.draining.load(Ordering::Acquire) { CallError::Unprocessed } else { status.into() }
    }

    fn closed_status(&self) -> Status {
        self.shared
            .pending()
            .closed
            .clone()
            .unwrap_or_else(|| Status::unavailable(format!("the connection to {} closed", self.shared.peer)))
    }
}

/// How a caller's stream halves reach the connection: frames straight into
/// the write queue.
struct ClientStreamWire {
    /// Held so the connection stays open while the stream does.
    connection: Arc<Connection>,
    call_id: u32,
    codec: u8,
}

impl ClientStreamWire {
    fn shared(&self) -> &Shared {
        &self.connection.shared
    }
}

impl StreamWire for ClientStreamWire {
    fn message(&self, message: bytes::Bytes) -> Result<(), Status> {
        let shared = self.shared();
        let max_frame_size = shared.max_frame_size;
        match shared
            .queue
            .push_now(|buf| encode_message(buf, self.call_id, self.codec, &message, false, max_frame_size))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                Err(Status::resource_exhausted(format!("a stream message is too large to send: {err}")))
            }
            Err(_closed) => {
                Err(Status::unavailable(format!("the connection to {} closed mid-stream", shared.peer)))
            }
        }
    }

    fn half_close(&self) {
        let _ = self.shared().queue.push_now(|buf| encode_half_close(buf, self.call_id));
    }

    fn grant(&self, increment: u32) {
        let _ = self.shared().queue.push_now(|buf| encode_window_update(buf, self.call_id, increment));
    }

    fn cancel(&self) {
        let shared = self.shared();
        if shared.pending().streams.remove(&self.call_id).is_some() {
            let _ = shared.queue.push_now(|buf| encode_cancel(buf, self.call_id));
        }
    }
}

/// For a call sent alone on the connection: instead of parking at once, yield
/// and check for the reply for up to the spin budget, when the connection's
/// round trips are short enough for that to pay.
///
/// Why: on tokio's multi-threaded runtime, a worker that parks while waiting
/// for a reply is often woken through another thread when it arrives, which
/// measured here as doubling a loopback round trip (p50 60 us against 21 us).
/// Each yield polls the I/O driver without parking, so a reply that arrives
/// within the budget is picked up on this thread. The cost is CPU while
/// spinning (about 20 % more per call in the ping-pong benchmark); on links
/// slower than the budget it never spins.
async fn spin_for_reply(
    shared: &Shared,
    rx: &mut oneshot::Receiver<Reply>,
) -> Option<Result<Reply, oneshot::error::RecvError>> {
    let budget = shared.spin_wait?;
    let rtt = Duration::from_nanos(shared.lone_rtt_ns.load(Ordering::Relaxed));
    // Round trips are timed to when the reply is routed, not to when this
    // caller wakes, so the estimate does not include the wake-up delay that
    // spinning avoids. Every SPIN_RESAMPLE-th call spins anyway, so a burst
    // of slow calls cannot switch spinning off for good.
    let resample = shared.lone_calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(SPIN_RESAMPLE);
    if rtt > budget && !resample {
        return None;
    }
    let until = Instant::now() + budget;
    loop {
        tokio::task::yield_now().await;
        match rx.try_recv() {
            Ok(reply) => return Some(Ok(reply)),
            Err(oneshot::error::TryRecvError::Closed) => return None,
            Err(oneshot::error::TryRecvError::Empty) if Instant::now() >= until => return None,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
    }
}

/// Cleans up a call whose future was dropped before its reply arrived:
/// forget the call id and tell the server to stop working on it.
struct CallGuard<'a> {
    shared: &'a Shared,
    call_id: u32,
    sent: bool,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let was_pending = self.shared.pending().calls.remove(&self.call_id).is_some();
        if self.sent && was_pending {
            let _ = self.shared.queue.push_now(|buf| encode_cancel(buf, self.call_id));
        }
    }
}

/// Fails pending calls if the connection task is dropped without finishing
/// (its runtime shut down), so no caller waits forever.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(Status::unavailable(format!("the connection to {} was shut down", self.0.peer)));
    }
}

/// The connection task: run the event loop until the connection ends, then
/// fail what is pending and send what is left (within a grace period).
async fn run(shared: Arc<Shared>, mut reader: FrameReader, keepalive_interval: Option<Duration>) {
    let _close = CloseOnDrop(shared.clone());
    let status = event_loop(&shared, &mut reader, keepalive_interval).await;
    tracing::debug!(peer = %shared.peer, %status, "client connection closed");
    shared.close(status);
    shared.finish().await;
}

async fn event_loop(
    shared: &Shared,
    reader: &mut FrameReader,
    keepalive_interval: Option<Duration>,
) -> Status {
    let peer = shared.peer;
    let mut keepalive = keepalive_interval.map(|interval| Keepalive::new(interval, Instant::now()));
    let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(keepalive.as_ref().map_or(far_future, Keepalive::deadline).into());
    tokio::pin!(timer);
    // The goaway's reason, used to explain the close that follows it.
    let mut goaway_reason: Option<Status> = None;

    loop {
        // 1. Route every complete frame already read. Replies are routed
        //    whatever our own backlog of requests: the server may be waiting
        //    for us to read before it reads again, and stopping here too
        //    would deadlock both (pongs, our only answers, are bounded in
        //    `handle_frame`).
        loop {
            match reader.decode_buffered() {
                Ok(Some(frame)) => {
                    if let Err(status) = handle_frame(shared, frame, &mut goaway_reason) {
                        return status;
                    }
                }
                Ok(None) => break,
                Err(ReadError::Frame(FrameError::TooLarge { call_id, kind, size, limit }))
                    if kind == FrameKind::Response as u8 =>
                {
                    // The framing is intact: fail that call alone and skip
                    // the body as it arrives.
                    let caller = shared.pending().calls.remove(&call_id);
                    if let Some(caller) = caller {
                        let _ = caller.send(Err(CallError::Failed(Status::resource_exhausted(format!(
                            "the response of {size} bytes exceeds this client's limit of {limit} bytes"
                        )))));
                    }
                    reader.skip(HEADER_LEN as u64 + size);
                }
                Err(err) => return Status::unavailable(format!("the connection to {peer} failed: {err}")),
            }
        }
        if shared.draining.load(Ordering::Acquire) && shared.pending().calls.is_empty() {
            // Drained: every call answered. Closing now lets the server
            // finish its own drain without waiting for a timeout.
            return Status::unavailable(format!("the server at {peer} is shutting down"));
        }

        // 2. Send what the socket takes now.
        let flushed = match shared.flush() {
            Ok(flushed) => flushed,
            Err(err) => return Status::unavailable(format!("the connection to {peer} failed: {err}")),
        };

        // 3. Wait.
        tokio::select! {
            biased;
            () = shared.stop.notified() => return Status::unavailable("the connection was closed by the client"),
            () = &mut timer, if keepalive.is_some() => {
                let Some(state) = keepalive.as_mut() else { continue };
                match state.tick(reader.last_read(), &shared.queue) {
                    Ok(next) => timer.as_mut().reset(next.into()),
                    Err(Verdict::Dead) => {
                        return Status::unavailable(format!(
                            "the server at {peer} stopped responding (no answer to a keepalive ping)"
                        ));
                    }
                    Err(Verdict::QueueClosed) => return Status::unavailable(format!("the connection to {peer} closed")),
                }
            }
            writable = shared.write.writable(), if !flushed => {
                if let Err(err) = writable {
                    return Status::unavailable(format!("the connection to {peer} failed: {err}"));
                }
            }
            () = shared.queue.queued(), if flushed => {
                // A caller queued a request. Let the other callers that are
                // ready to run queue theirs too, so one write carries them all.
                tokio::task::yield_now().await;
            }
            read = reader.read_more() => match read {
                Ok(true) => {}
                Ok(false) => {
                    return goaway_reason
                        .take()
                        .unwrap_or_else(|| Status::unavailable(format!("the server at {peer} closed the connection")));
                }
                Err(ReadError::Io(err)) => {
                    return goaway_reason
                        .take()
                        .unwrap_or_else(|| Status::unavailable(format!("the connection to {peer} failed: {err}")));
                }
                Err(err) => return Status::unavailable(format!("the connection to {peer} failed: {err}")),
            },
        }
    }
}

/// End a stream with the server's response frame: its status (and
/// trailers, which the status carries as its metadata when it fails).
fn end_stream(pipe: &Pipe, frame: &Frame, peer: SocketAddr) {
    let end = match ResponseHead::decode(&frame.meta) {
        Ok(head) if head.code == 0 => Ok(()),
        Ok(head) => {
            let code = Code::from_u32(head.code);
            let details = bytes::Bytes::copy_from_slice(head.details);
            let status = if head.application_error {
                Status::application(code, head.message, details)
            } else {
                Status::new(code, head.message).with_details(details)
            };
            let codec = Codec::from_id(frame.header.codec).unwrap_or_default();
            Err(status.with_details_codec(codec))
        }
        Err(err) => Err(Status::internal(format!("protocol error from {peer}: the end of a stream: {err}"))),
    };
    match end {
        Ok(()) => {
            pipe.end_inbound(Ok(()));
            pipe.close_outbound(Status::failed_precondition("the server ended the stream"));
        }
        Err(status) => pipe.reset(status),
    }
}

/// The server broke a stream's flow control: fail it alone and tell the
/// server to stop it.
fn break_stream(shared: &Shared, call_id: u32, pipe: &Pipe, err: FlowError) {
    shared.pending().streams.remove(&call_id);
    pipe.reset(Status::internal(format!("protocol error from {} on a stream: {err}", shared.peer)));
    let _ = shared.queue.append_local(|buf| encode_cancel(buf, call_id));
}

/// Act on one frame from the server; an error ends the connection.
fn handle_frame(shared: &Shared, frame: Frame, goaway_reason: &mut Option<Status>) -> Result<(), Status> {
    let peer = shared.peer;
    match frame.header.kind {
        FrameKind::Response => {
            let (caller, stream) = {
                let mut pending = shared.pending();
                match pending.calls.remove(&frame.header.call_id) {
                    Some(caller) => (Some(caller), None),
                    None => (None, pending.streams.remove(&frame.header.call_id)),
                }
            };
            if let Some(caller) = caller {
                let _ = caller.send(Ok(Routed { frame, at: Instant::now() }));
            } else if let Some(pipe) = stream {
                end_stream(&pipe, &frame, peer);
            }
        }
        FrameKind::Message => {
            let call_id = frame.header.call_id;
            // A stream the caller cancelled or that already ended: late.
            let Some(pipe) = shared.stream(call_id) else { return Ok(()) };
            match pipe.deliver(frame.body) {
                Ok(Some(grant)) => {
                    let _ = shared.queue.append_local(|buf| encode_window_update(buf, call_id, grant));
                }
                Ok(None) => {}
                Err(err) => break_stream(shared, call_id, &pipe, err),
            }
        }
        FrameKind::WindowUpdate => {
            let increment = decode_window_update(&frame.body)
                .map_err(|err| Status::internal(format!("protocol error from {peer}: {err}")))?;
            if let Some(pipe) = shared.stream(frame.header.call_id)
                && let Err(err) = pipe.grant(increment)
            {
                break_stream(shared, frame.header.call_id, &pipe, err);
            }
        }
        FrameKind::Ping => {
            let Ok(payload) = <[u8; PING_LEN]>::try_from(&frame.body[..]) else {
                return Err(Status::internal(format!(
                    "protocol error from {peer}: ping body must be 8 bytes"
                )));
            };
            let _ = shared.queue.append_local(|buf| encode_ping(buf, FrameKind::Pong, payload));
        }
        FrameKind::Pong => {}
        FrameKind::GoAway => {
            let goaway = GoAway::decode(&frame.meta)
                .map_err(|err| Status::internal(format!("protocol error from {peer}: {err}")))?;
            shared.draining.store(true, Ordering::Release);
            if goaway.code == 0 {
                tracing::debug!(%peer, "server is shutting down; draining connection");
            } else {
                *goaway_reason = Some(Status::new(
                    Code::Unavailable,
                    format!("the server at {peer} closed the connection: {}", goaway.message),
                ));
                shared.release_unprocessed(goaway.last_call_id);
            }
        }
        FrameKind::Request
        | FrameKind::OneWay
        | FrameKind::Cancel
        | FrameKind::StreamOpen
        | FrameKind::HalfClose => {
            return Err(Status::internal(format!(
                "protocol error from {peer}: unexpected {:?} frame",
                frame.header.kind
            )));
        }
    }
    Ok(())
}
