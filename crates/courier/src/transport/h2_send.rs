//! Writing to an HTTP/2 stream no faster than the peer reads it, and
//! carrying a streaming call's messages over one (gRPC's server and client
//! share this: see [`H2Wire`]).
//!
//! h2's `send_data` accepts any amount and buffers what the peer's
//! flow-control window does not yet allow, without bound. A peer that
//! keeps asking and never reads (never sends WINDOW_UPDATE) would grow that
//! buffer for as long as it likes. Here data is handed to h2 only as
//! capacity is assigned to the stream, so what h2 holds per stream stays
//! within its window and `max_send_buffer_size`; the rest waits, in the
//! caller's future, for at most a stall timeout.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};

use crate::protocol::grpc::{self as wire, Encoding, MessageDecoder};
use crate::status::Status;
use crate::stream::credit::cost;
use crate::stream::pipe::{Pipe, StreamWire};

/// Send `data` (not ending the stream), waiting for flow-control capacity
/// as needed, but no longer than `stall` at a time: a peer that grants no
/// window for that long is not reading, and the stream is reset (`CANCEL`)
/// so what waits for it is freed. Fails when the stream is reset or the
/// connection fails.
pub(crate) async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    stall: Option<Duration>,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        // Capacity is usually assigned at once (when the windows are open),
        // so the common case never waits.
        let mut available = stream.capacity();
        if available == 0 {
            let granted = poll_fn(|task| stream.poll_capacity(task));
            let granted = match stall {
                None => granted.await,
                Some(stall) => match tokio::time::timeout(stall, granted).await {
                    Ok(granted) => granted,
                    Err(_) => {
                        stream.send_reset(Reason::CANCEL);
                        return Err(Reason::CANCEL.into());
                    }
                },
            };
            available = match granted {
                Some(Ok(n)) => n,
                Some(Err(err)) => return Err(err),
                // The stream's sending side is closed.
                None => return Err(Reason::STREAM_CLOSED.into()),
            };
        }
        let chunk = data.split_to(available.min(data.len()));
        stream.send_data(chunk, false)?;
    }
    Ok(())
}

/// The streaming calls open on one HTTP/2 connection, each of which raises
/// the connection's receive window by one stream window for as long as it
/// lasts.
///
/// Why: a stream's data is released (its window given back) only as its
/// application reads it, and h2 gives back the connection's window only
/// with it. A reader that stalls holds up to one stream window of the
/// connection's too; without this, a few stalled streams would hold all of
/// it and starve every other call on the connection (grpc-go returns the
/// connection's window on receipt, so one stream never blocks another).
/// With it, what stalled streams hold is always extra: memory stays within
/// one stream window per stream, as the streams' own windows already bound.
#[derive(Debug, Default)]
pub(crate) struct StreamWindows {
    open: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl StreamWindows {
    /// One more stream: the connection's target grows until the guard goes.
    pub(crate) fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
        OpenStream(self.clone())
    }

    /// The connection window to aim for: `base` plus `per_stream` for each
    /// open stream, within HTTP/2's largest window.
    pub(crate) fn target(&self, base: u32, per_stream: u32) -> u32 {
        let open = u64::try_from(self.open.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(u64::MAX);
        let target = u64::from(base).saturating_add(open.saturating_mul(u64::from(per_stream)));
        u32::try_from(target.min(MAX_WINDOW)).unwrap_or(u32::MAX >> 1)
    }

    /// Resolves when a stream opened or closed since the last time.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// HTTP/2's largest flow-control window (h2 panics above it).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// A streaming call's share of its connection's window (see
/// [`StreamWindows`]), given back when dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<StreamWindows>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// The status a failed HTTP/2 stream means, by gRPC's table
/// (`PROTOCOL.md`, "Errors"): the peer's `CANCEL` is `Cancelled`, a refused
/// stream or a lost connection (GOAWAY, I/O, EOF) `Unavailable`: never
/// `Internal` for a connection that merely went away.
pub(crate) fn status_of_h2_error(err: &h2::Error, what: &str) -> Status {
    if err.is_io() || err.is_go_away() {
        return Status::unavailable(format!("{what}: the connection was lost: {err}"));
    }
    match err.reason() {
        Some(Reason::CANCEL) => Status::cancelled(format!("{what}: the peer cancelled the stream")),
        Some(Reason::REFUSED_STREAM) => Status::unavailable(format!("{what}: the peer refused the stream")),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(format!("{what}: {err}")),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(format!("{what}: {err}")),
        // A reset with another reason (PROTOCOL_ERROR, FLOW_CONTROL_ERROR,
        // ...) is a broken peer or transport: still never a clean end.
        Some(_) => Status::internal(format!("{what}: the stream was reset: {err}")),
        None => Status::unavailable(format!("{what}: {err}")),
    }
}

/// One message of a stream, framed for the wire, with the length the
/// application's pipe counted it at.
struct Outgoing {
    framed: Bytes,
    len: usize,
}

/// What a stream's two HTTP/2 tasks (the writer, the reader) and the
/// application's halves share.
#[derive(Default)]
struct WireState {
    /// Messages the application sent, waiting for HTTP/2 capacity. Bounded
    /// by the pipe's send credit: the writer grants it back only as h2
    /// takes the messages.
    outbound: VecDeque<Outgoing>,
    /// The client sends no more (END_STREAM after the last message).
    half_closed: bool,
    /// The server's call is over: drain, then the trailers.
    finished: bool,
    /// The application gave up: reset the stream.
    cancelled: bool,
    /// The credit the application's receiver has granted for messages not
    /// yet delivered (the pipe's own reckoning, mirrored: a message is
    /// delivered only while it is above zero, so the pipe never refuses).
    credit: i64,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

/// What the writer should do next.
pub(crate) enum Next {
    /// Send these framed messages (one or several, in one DATA frame);
    /// then give the pipe back this much credit.
    Message(Bytes, u32),
    /// End the stream (client).
    HalfClose,
    /// Reset the stream (`CANCEL`).
    Cancel,
    /// Everything is sent; write the call's status (server).
    Finished,
}

/// The shared state of one HTTP/2 stream carrying a streaming call.
pub(crate) struct WireShared {
    state: Mutex<WireState>,
}

impl WireShared {
    /// Shared state whose reader may deliver `recv_window` of credit before
    /// the application grants more (the pipe's receive window).
    pub(crate) fn new(recv_window: u32) -> Arc<WireShared> {
        let state = WireState { credit: i64::from(recv_window.max(1024)), ..WireState::default() };
        Arc::new(WireShared { state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(waker: Option<Waker>) {
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// What the writer does next, once there is something.
    pub(crate) fn poll_next(&self, task: &mut TaskContext<'_>) -> Poll<Next> {
        let mut state = self.lock();
        if state.cancelled {
            return Poll::Ready(Next::Cancel);
        }
        if let Some(Outgoing { framed, len }) = state.outbound.pop_front() {
            let mut credit = cost(len);
            if state.outbound.front().is_none_or(|next| framed.len() + next.framed.len() > COALESCE_UP_TO) {
                return Poll::Ready(Next::Message(framed, u32::try_from(credit).unwrap_or(u32::MAX)));
            }
            // Small messages queued together go out in one DATA frame:
            // fewer frames to write, and to a peer's h2 fewer small frames
            // to count against its budget for them (h2 ends a connection
            // that sends too many with ENHANCE_YOUR_CALM, and also counts
            // those that arrive for a stream whose reader is gone).
            let mut batch = bytes::BytesMut::from(&framed[..]);
            while let Some(next) = state.outbound.front()
                && batch.len() + next.framed.len() <= COALESCE_UP_TO
            {
                let Some(Outgoing { framed, len }) = state.outbound.pop_front() else { break };
                batch.extend_from_slice(&framed);
                credit = credit.saturating_add(cost(len));
            }
            return Poll::Ready(Next::Message(batch.freeze(), u32::try_from(credit).unwrap_or(u32::MAX)));
        }
        if state.half_closed {
            state.half_closed = false;
            return Poll::Ready(Next::HalfClose);
        }
        if state.finished {
            return Poll::Ready(Next::Finished);
        }
        state.writer = Some(task.waker().clone());
        Poll::Pending
    }

    /// The server's call is over: the writer drains what is queued, then
    /// ends.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        let writer = state.writer.take();
        drop(state);
        WireShared::wake(writer);
    }

    /// Ready once a message may be delivered; `false` if the stream was
    /// cancelled meanwhile.
    fn poll_credit(&self, task: &mut TaskContext<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.cancelled {
            return Poll::Ready(false);
        }
        if state.credit > 0 {
            return Poll::Ready(true);
        }
        state.reader = Some(task.waker().clone());
        Poll::Pending
    }

    fn spend(&self, len: usize) {
        let mut state = self.lock();
        state.credit = state.credit.saturating_sub(cost(len));
    }

    fn refund(&self, increment: u32) {
        let mut state = self.lock();
        state.credit = state.credit.saturating_add(i64::from(increment));
        let reader = state.reader.take();
        drop(state);
        WireShared::wake(reader);
    }
}

/// The application's halves of a stream, carried on HTTP/2. Everything
/// here runs on the application's task and only queues: messages are
/// framed (and compressed) here, so that work is the application's, and
/// the stream's writer puts them on the wire as capacity allows.
pub(crate) struct H2Wire {
    shared: Arc<WireShared>,
    /// How messages sent are compressed (the response's `grpc-encoding`).
    encoding: Encoding,
    max_message: usize,
}

impl H2Wire {
    pub(crate) fn new(shared: Arc<WireShared>, encoding: Encoding, max_message: usize) -> H2Wire {
        H2Wire { shared, encoding, max_message }
    }
}

impl StreamWire for H2Wire {
    fn message(&self, message: Bytes) -> Result<(), Status> {
        let framed = frame(&message, self.encoding, self.max_message)?;
        let mut state = self.shared.lock();
        if state.cancelled {
            return Err(Status::cancelled("the stream was cancelled"));
        }
        state.outbound.push_back(Outgoing { framed, len: message.len() });
        let writer = state.writer.take();
        drop(state);
        WireShared::wake(writer);
        Ok(())
    }

    fn half_close(&self) {
        let mut state = self.shared.lock();
        state.half_closed = true;
        let writer = state.writer.take();
        drop(state);
        WireShared::wake(writer);
    }

    fn grant(&self, increment: u32) {
        self.shared.refund(increment);
    }

    fn cancel(&self) {
        let mut state = self.shared.lock();
        state.cancelled = true;
        let (writer, reader) = (state.writer.take(), state.reader.take());
        drop(state);
        WireShared::wake(writer);
        WireShared::wake(reader);
    }
}

/// A message as one length-prefixed gRPC message, compressed if asked.
pub(crate) fn frame(body: &[u8], encoding: Encoding, max_message: usize) -> Result<Bytes, Status> {
    if body.len() > max_message {
        return Err(Status::resource_exhausted(format!(
            "a message of {} bytes exceeds the limit of {max_message} bytes",
            body.len()
        )));
    }
    let mut buf = BytesMut::new();
    let framed = match encoding {
        Encoding::Gzip => wire::encode_message(&mut buf, true, &wire::gzip(body)),
        Encoding::Identity => wire::encode_message(&mut buf, false, body),
    };
    framed.map_err(|err| Status::resource_exhausted(err.to_string()))?;
    Ok(buf.freeze())
}

/// Small queued messages are sent together in DATA frames up to this size.
const COALESCE_UP_TO: usize = 16 * 1024;

/// Send one message the writer took, then give the pipe its credit back:
/// the application may queue another only once h2 has this one, so what
/// waits between them stays within the pipe's window.
pub(crate) async fn send_message(
    stream: &mut SendStream<Bytes>,
    pipe: &Pipe,
    framed: Bytes,
    credit: u32,
    stall: Option<Duration>,
) -> Result<(), h2::Error> {
    send_data(stream, framed, stall).await?;
    // Within the pipe's window by construction (what is granted back was
    // spent): an overflow cannot happen, and would only stall this stream.
    let _ = pipe.grant(credit);
    Ok(())
}

/// Read `body`'s messages into `pipe`, decompressed by `encoding`, as fast
/// as the application reads them: a message is delivered only while the
/// application has credit left.
///
/// HTTP/2 frames are always taken from h2 at once, whatever the credit:
/// h2 counts the frames it buffers against a budget (a flood of small DATA
/// frames is an attack it ends with `ENHANCE_YOUR_CALM`), and a peer that
/// sends a message per frame, as grpc-go and courier do, would exhaust it
/// against a slow reader. The flow control is in the capacity released
/// instead: while a whole message waits for credit, what arrives is kept
/// here with its capacity held back, so the peer stops at its window. What
/// this holds is then at most two HTTP/2 windows and one message.
///
/// `Ok` once the body ended with every message delivered (not yet the
/// stream's end: the caller decides that, from END_STREAM or trailers).
pub(crate) async fn read_messages(
    body: &mut RecvStream,
    pipe: &Pipe,
    shared: &WireShared,
    encoding: Encoding,
    max_message: usize,
    what: &str,
) -> Result<(), Status> {
    let mut decoder = MessageDecoder::new(max_message);
    // A whole message waiting for credit, and the bytes read meanwhile
    // whose capacity is held back until it goes.
    let mut waiting: Option<Bytes> = None;
    let mut held = 0usize;
    let mut ended = false;
    loop {
        if waiting.is_none()
            && let Some(message) = decoder.next_message().map_err(|err| malformed(&err, what))?
        {
            let message =
                wire::decompress(message, encoding, max_message).map_err(|err| malformed(&err, what))?;
            waiting = Some(message);
        }
        if let Some(message) = waiting.take() {
            match poll_fn(|task| Poll::Ready(shared.poll_credit(task))).await {
                Poll::Ready(false) => {
                    return Err(Status::cancelled(format!("{what}: the stream was cancelled")));
                }
                Poll::Ready(true) => {
                    shared.spend(message.len());
                    match pipe.deliver(message) {
                        Ok(None) => {}
                        // The reader left: what arrives is discarded, its
                        // credit given back at once.
                        Ok(Some(grant)) => shared.refund(grant),
                        Err(err) => return Err(Status::internal(format!("{what}: {err}"))),
                    }
                    if held > 0 {
                        let _ = body.flow_control().release_capacity(held);
                        held = 0;
                    }
                    continue;
                }
                Poll::Pending => waiting = Some(message),
            }
        }
        if ended && waiting.is_none() {
            decoder.finish().map_err(|err| malformed(&err, what))?;
            return Ok(());
        }
        tokio::select! {
            biased;
            credit = poll_fn(|task| shared.poll_credit(task)), if waiting.is_some() => {
                if !credit {
                    return Err(Status::cancelled(format!("{what}: the stream was cancelled")));
                }
            }
            data = body.data(), if !ended => match data {
                None => ended = true,
                Some(Ok(chunk)) => {
                    if waiting.is_some() {
                        held += chunk.len();
                    } else {
                        // The message being assembled needs these bytes
                        // whatever its size: the peer may send more.
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    decoder.push(&chunk);
                }
                Some(Err(err)) => return Err(status_of_h2_error(&err, what)),
            },
        }
    }
}

fn malformed(err: &wire::GrpcError, what: &str) -> Status {
    match err {
        wire::GrpcError::TooLarge { .. } => Status::resource_exhausted(format!("{what}: {err}")),
        // A message cut short by a clean END_STREAM is the peer's protocol
        // error (a lost connection is reported as such, above).
        other => Status::internal(format!("{what}: malformed stream: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    #[test]
    fn each_open_stream_adds_a_window_to_the_connections() {
        let windows = Arc::new(StreamWindows::default());
        assert_eq!(windows.target(4 << 20, 1 << 20), 4 << 20);
        let (a, b) = (windows.open(), windows.open());
        assert_eq!(windows.target(4 << 20, 1 << 20), 6 << 20);
        drop(a);
        assert_eq!(windows.target(4 << 20, 1 << 20), 5 << 20);
        let many: Vec<_> = (0..5000).map(|_| windows.open()).collect();
        assert_eq!(u64::from(windows.target(4 << 20, 1 << 20)), MAX_WINDOW, "capped");
        drop((b, many));
    }

    #[test]
    fn resets_map_by_grpcs_table() {
        // (A lost connection, which h2 reports as I/O, is in the
        // integration tests: h2 builds no such error from outside.)
        assert_eq!(status_of_h2_error(&Reason::CANCEL.into(), "s").code(), Code::Cancelled);
        assert_eq!(status_of_h2_error(&Reason::REFUSED_STREAM.into(), "s").code(), Code::Unavailable);
        assert_eq!(
            status_of_h2_error(&Reason::ENHANCE_YOUR_CALM.into(), "s").code(),
            Code::ResourceExhausted
        );
        assert_eq!(status_of_h2_error(&Reason::PROTOCOL_ERROR.into(), "s").code(), Code::Internal);
    }

    #[test]
    fn messages_queue_in_order_then_the_half_close_then_a_cancel_wins() {
        let shared = WireShared::new(1024);
        let wire = H2Wire::new(shared.clone(), Encoding::Identity, 100);
        wire.message(Bytes::from_static(b"ab")).expect("queued");
        wire.half_close();
        assert!(wire.message(Bytes::from(vec![0; 101])).is_err(), "over the limit");
        let mut task = TaskContext::from_waker(Waker::noop());
        match shared.poll_next(&mut task) {
            Poll::Ready(Next::Message(framed, credit)) => {
                // The credit given back is the pipe's cost of the message.
                assert_eq!((&framed[..], credit), (&[0, 0, 0, 0, 2, b'a', b'b'][..], 18));
            }
            _ => panic!("the message first"),
        }
        assert!(matches!(shared.poll_next(&mut task), Poll::Ready(Next::HalfClose)));
        assert!(shared.poll_next(&mut task).is_pending());
        wire.cancel();
        assert!(matches!(shared.poll_next(&mut task), Poll::Ready(Next::Cancel)));
        assert!(wire.message(Bytes::new()).is_err(), "nothing is queued after a cancel");
    }

    #[test]
    fn small_queued_messages_go_out_together_and_large_ones_alone() {
        let shared = WireShared::new(1 << 20);
        let wire = H2Wire::new(shared.clone(), Encoding::Identity, 1 << 20);
        for _ in 0..100 {
            wire.message(Bytes::from_static(b"abc")).expect("queued");
        }
        wire.message(Bytes::from(vec![7; COALESCE_UP_TO])).expect("queued");
        wire.message(Bytes::from_static(b"z")).expect("queued");
        let mut task = TaskContext::from_waker(Waker::noop());
        let Poll::Ready(Next::Message(batch, credit)) = shared.poll_next(&mut task) else {
            panic!("a batch first")
        };
        assert_eq!(batch.len(), 100 * 8, "the hundred small messages in one frame, each with its prefix");
        assert_eq!(u64::from(credit), 100 * 19, "and the credit of all of them");
        let Poll::Ready(Next::Message(large, _)) = shared.poll_next(&mut task) else {
            panic!("the large one")
        };
        assert_eq!(large.len(), COALESCE_UP_TO + 5, "alone: it would not fit with the next");
        let Poll::Ready(Next::Message(last, credit)) = shared.poll_next(&mut task) else {
            panic!("the last")
        };
        assert_eq!((last.len(), credit), (6, 17));
    }

    #[test]
    fn the_reader_delivers_only_within_the_credit_the_application_grants() {
        let shared = WireShared::new(1024);
        let mut task = TaskContext::from_waker(Waker::noop());
        assert_eq!(shared.poll_credit(&mut task), Poll::Ready(true));
        shared.spend(2000);
        assert!(shared.poll_credit(&mut task).is_pending(), "past the credit: wait");
        shared.refund(2000);
        assert_eq!(shared.poll_credit(&mut task), Poll::Ready(true));
        H2Wire::new(shared.clone(), Encoding::Identity, 100).cancel();
        assert_eq!(shared.poll_credit(&mut task), Poll::Ready(false));
    }
}
