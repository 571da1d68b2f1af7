//! A stream's two halves, between the application (a handler, a caller)
//! and the protocol that carries it (a native connection, an HTTP/2
//! stream).
//!
//! The protocol side delivers what arrives ([`Pipe::deliver`], grants,
//! the end) into the shared [`Pipe`]; the application reads messages with a
//! [`RawReceiver`] and writes them with a [`RawSender`], which put their
//! frames on the wire through the protocol's [`StreamWire`] directly (the
//! native protocol appends them to the connection's write queue: no task
//! in between, no wake-up per message).
//!
//! Flow control is `credit`'s: the sender waits for credit before each
//! message; the receiver grants back what the application consumed.
//! Messages wait in the pipe only within the credit granted, so a slow
//! reader bounds its peer's memory and its own.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;

use super::credit::{FlowError, RecvWindow, SendCredit};
use crate::status::Status;

/// What the protocol does for the application's halves of one stream.
pub(crate) trait StreamWire: Send + Sync + 'static {
    /// Put one message on the wire (the caller checked the credit).
    fn message(&self, message: Bytes) -> Result<(), Status>;
    /// The application sends no more messages (the client's half-close;
    /// on a server the end goes with the call's status instead).
    fn half_close(&self);
    /// Give the peer `increment` more credit.
    fn grant(&self, increment: u32);
    /// The application gave up on the stream: tell the peer to stop.
    fn cancel(&self);
}

/// The state both halves and the protocol share.
pub(crate) struct Pipe {
    state: Mutex<State>,
}

struct State {
    inbound: VecDeque<Bytes>,
    recv: RecvWindow,
    /// How the inbound direction ended: `Ok` for a clean end (the peer's
    /// half-close, or an OK status), `Err` for an error or a reset.
    inbound_end: Option<Result<(), Status>>,
    reader: Option<Waker>,
    send: SendCredit,
    /// Why no more messages can be sent, once none can.
    outbound_closed: Option<Status>,
    writer: Option<Waker>,
    /// The reader is gone: what arrives is consumed (and granted back) at
    /// once, so the peer is never stalled by a reader that left.
    discarding: bool,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Pipe")
            .field("buffered", &state.inbound.len())
            .field("credit", &state.send.credit())
            .field("inbound_end", &state.inbound_end)
            .finish_non_exhaustive()
    }
}

impl Pipe {
    /// A pipe whose receiver grants `recv_window` and whose sender starts
    /// with the peer's `send_window`.
    pub(crate) fn new(recv_window: u32, send_window: u32) -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(State {
                inbound: VecDeque::new(),
                recv: RecvWindow::new(recv_window),
                inbound_end: None,
                reader: None,
                send: SendCredit::new(send_window),
                outbound_closed: None,
                writer: None,
                discarding: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A message arrived. `Ok(Some(grant))`: the reader is gone, grant this
    /// back at once. `Err`: the peer had no credit for it (reset the
    /// stream).
    pub(crate) fn deliver(&self, message: Bytes) -> Result<Option<u32>, FlowError> {
        let mut state = self.lock();
        if state.inbound_end.is_some() {
            // After the end (a reset raced with the peer's last frames):
            // nothing reads it, and the stream is over.
            return Ok(None);
        }
        state.recv.received(message.len())?;
        if state.discarding {
            return Ok(state.recv.consumed(message.len()));
        }
        state.inbound.push_back(message);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
        Ok(None)
    }

    /// The inbound direction ended (a first end wins).
    pub(crate) fn end_inbound(&self, end: Result<(), Status>) {
        let mut state = self.lock();
        if state.inbound_end.is_none() {
            state.inbound_end = Some(end);
        }
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// The peer granted `increment` more credit.
    pub(crate) fn grant(&self, increment: u32) -> Result<(), FlowError> {
        let mut state = self.lock();
        state.send.grant(increment)?;
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// No more messages can be sent (a first reason wins).
    pub(crate) fn close_outbound(&self, why: Status) {
        let mut state = self.lock();
        if state.outbound_closed.is_none() {
            state.outbound_closed = Some(why);
        }
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// The stream is over in both directions with `status` (a reset, a
    /// lost connection, a flow-control violation).
    pub(crate) fn reset(&self, status: Status) {
        self.end_inbound(Err(status.clone()));
        self.close_outbound(status);
    }

    /// Bytes received and not yet read, with their frames' share (what the
    /// stream holds of the peer's data).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> i64 {
        self.lock().recv.buffered()
    }
}

/// The application's reading half: a `Stream` of encoded messages that
/// ends with `None` on a clean end and with one `Err` on any other.
pub(crate) struct RawReceiver {
    pipe: Arc<Pipe>,
    wire: Arc<dyn StreamWire>,
    /// A caller's receiver cancels the stream when dropped before its end;
    /// a handler's leaves the rest to be discarded.
    cancel_on_drop: bool,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl fmt::Debug for RawReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReceiver").field("pipe", &self.pipe).field("done", &self.done).finish()
    }
}

impl RawReceiver {
    pub(crate) fn new(pipe: Arc<Pipe>, wire: Arc<dyn StreamWire>, cancel_on_drop: bool) -> RawReceiver {
        RawReceiver { pipe, wire, cancel_on_drop, deadline: None, done: false }
    }

    /// Fail the stream with `DeadlineExceeded` (and cancel it) at
    /// `deadline`.
    pub(crate) fn with_deadline(mut self, deadline: Option<Instant>) -> RawReceiver {
        self.deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        self
    }

    /// The one message of a stream that must carry exactly one (the
    /// request of a server-streaming method, the reply of a
    /// client-streaming one).
    pub(crate) async fn single(&mut self, what: &str) -> Result<Bytes, Status> {
        use futures_util::StreamExt;
        let first = match self.next().await {
            Some(Ok(message)) => message,
            Some(Err(status)) => return Err(status),
            None => {
                return Err(Status::invalid_argument(format!(
                    "{what}: the stream ended without its message"
                )));
            }
        };
        match self.next().await {
            None => Ok(first),
            Some(Err(status)) => Err(status),
            Some(Ok(_)) => {
                Err(Status::invalid_argument(format!("{what}: more than one message where one is expected")))
            }
        }
    }
}

impl Stream for RawReceiver {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut state = self.pipe.lock();
        if let Some(message) = state.inbound.pop_front() {
            let grant = state.recv.consumed(message.len());
            drop(state);
            if let Some(grant) = grant {
                self.wire.grant(grant);
            }
            return Poll::Ready(Some(Ok(message)));
        }
        if let Some(end) = &state.inbound_end {
            let end = end.clone();
            drop(state);
            self.done = true;
            return Poll::Ready(end.err().map(Err));
        }
        state.reader = Some(cx.waker().clone());
        drop(state);
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            self.wire.cancel();
            let status = Status::deadline_exceeded("the stream's deadline passed");
            self.pipe.reset(status.clone());
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Pending
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.cancel_on_drop {
            self.wire.cancel();
            self.pipe.reset(Status::cancelled("the stream's reader went away"));
            return;
        }
        let mut state = self.pipe.lock();
        state.discarding = true;
        let mut grant = 0u64;
        while let Some(message) = state.inbound.pop_front() {
            grant += u64::from(state.recv.consumed(message.len()).unwrap_or(0));
        }
        drop(state);
        if grant > 0 {
            self.wire.grant(u32::try_from(grant).unwrap_or(u32::MAX));
        }
    }
}

/// The application's writing half.
pub(crate) struct RawSender {
    pipe: Arc<Pipe>,
    wire: Arc<dyn StreamWire>,
    finished: bool,
}

impl fmt::Debug for RawSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSender").field("pipe", &self.pipe).field("finished", &self.finished).finish()
    }
}

impl RawSender {
    pub(crate) fn new(pipe: Arc<Pipe>, wire: Arc<dyn StreamWire>) -> RawSender {
        RawSender { pipe, wire, finished: false }
    }

    /// Ready once a message may be sent: credit is left, or the stream
    /// can no longer carry messages (the error says why).
    pub(crate) fn poll_ready(&self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        let mut state = self.pipe.lock();
        if let Some(why) = &state.outbound_closed {
            return Poll::Ready(Err(why.clone()));
        }
        if state.send.can_send() {
            return Poll::Ready(Ok(()));
        }
        state.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Send `message` once the peer has credit for it.
    pub(crate) async fn send(&mut self, message: Bytes) -> Result<(), Status> {
        if self.finished {
            return Err(Status::failed_precondition("the stream was already finished"));
        }
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        let mut state = self.pipe.lock();
        if let Some(why) = &state.outbound_closed {
            return Err(why.clone());
        }
        state.send.sent(message.len());
        drop(state);
        self.wire.message(message)
    }

    /// Resolves once no more messages can be sent (the call ended, was
    /// reset or cancelled).
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.pipe.lock();
            if state.outbound_closed.is_some() {
                return Poll::Ready(());
            }
            state.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Give up on the stream: the peer is told to stop, and both halves
    /// end with `status`.
    pub(crate) fn cancel(&mut self, status: Status) {
        self.finished = true;
        self.wire.cancel();
        self.pipe.reset(status);
    }

    /// Send no more (once).
    pub(crate) fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.wire.half_close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use futures_util::StreamExt;

    use super::*;
    use crate::status::Code;

    /// A wire that records what the halves asked for.
    #[derive(Default)]
    struct Recorder {
        sent: StdMutex<Vec<Bytes>>,
        grants: StdMutex<Vec<u32>>,
        half_closed: StdMutex<bool>,
        cancelled: StdMutex<bool>,
    }

    impl StreamWire for Recorder {
        fn message(&self, message: Bytes) -> Result<(), Status> {
            self.sent.lock().expect("lock").push(message);
            Ok(())
        }
        fn half_close(&self) {
            *self.half_closed.lock().expect("lock") = true;
        }
        fn grant(&self, increment: u32) {
            self.grants.lock().expect("lock").push(increment);
        }
        fn cancel(&self) {
            *self.cancelled.lock().expect("lock") = true;
        }
    }

    fn halves(window: u32, cancel_on_drop: bool) -> (Arc<Pipe>, Arc<Recorder>, RawReceiver, RawSender) {
        let pipe = Pipe::new(window, window);
        let wire = Arc::new(Recorder::default());
        let receiver = RawReceiver::new(pipe.clone(), wire.clone(), cancel_on_drop);
        let sender = RawSender::new(pipe.clone(), wire.clone());
        (pipe, wire, receiver, sender)
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_clean_end_is_none() {
        let (pipe, _wire, mut receiver, _sender) = halves(1024, true);
        pipe.deliver(Bytes::from_static(b"a")).expect("credit");
        pipe.deliver(Bytes::from_static(b"b")).expect("credit");
        pipe.end_inbound(Ok(()));
        assert_eq!(receiver.next().await.transpose().expect("ok"), Some(Bytes::from_static(b"a")));
        assert_eq!(receiver.next().await.transpose().expect("ok"), Some(Bytes::from_static(b"b")));
        assert!(receiver.next().await.is_none());
        assert!(receiver.next().await.is_none(), "stays ended");
    }

    #[tokio::test]
    async fn a_reset_is_an_error_never_a_clean_end() {
        let (pipe, _wire, mut receiver, mut sender) = halves(1024, true);
        pipe.deliver(Bytes::from_static(b"a")).expect("credit");
        pipe.reset(Status::unavailable("connection lost"));
        assert!(receiver.next().await.expect("the buffered message").is_ok());
        let end = receiver.next().await.expect("an item, not the end").expect_err("an error");
        assert_eq!(end.code(), Code::Unavailable);
        assert!(receiver.next().await.is_none());
        let sent = sender.send(Bytes::from_static(b"x")).await.expect_err("closed");
        assert_eq!(sent.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn the_sender_waits_for_credit() {
        let (pipe, wire, _receiver, mut sender) = halves(1024, true);
        sender.send(Bytes::from(vec![0; 2000])).await.expect("credit above zero");
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(20), sender.send(Bytes::new())).await;
        assert!(blocked.is_err(), "no credit: the send waits");
        pipe.grant(4096).expect("grant");
        sender.send(Bytes::from_static(b"y")).await.expect("credit again");
        assert_eq!(wire.sent.lock().expect("lock").len(), 2);
        sender.finish();
        assert!(*wire.half_closed.lock().expect("lock"));
    }

    #[tokio::test]
    async fn reading_grants_credit_back_in_batches() {
        let (pipe, wire, mut receiver, _sender) = halves(4096, true);
        for _ in 0..40 {
            pipe.deliver(Bytes::from(vec![0; 84])).expect("credit");
        }
        for _ in 0..40 {
            receiver.next().await.expect("message").expect("ok");
        }
        let grants = wire.grants.lock().expect("lock").clone();
        assert_eq!(grants, vec![2100], "one grant at half the window: {grants:?}");
    }

    #[tokio::test]
    async fn a_peer_past_its_credit_is_refused() {
        let (pipe, _wire, _receiver, _sender) = halves(1024, true);
        pipe.deliver(Bytes::from(vec![0; 5000])).expect("the credit was above zero");
        assert_eq!(pipe.deliver(Bytes::new()), Err(FlowError::NoCredit));
    }

    #[tokio::test]
    async fn a_callers_receiver_dropped_early_cancels_a_handlers_discards() {
        let (_pipe, wire, receiver, _sender) = halves(1024, true);
        drop(receiver);
        assert!(*wire.cancelled.lock().expect("lock"));

        let (pipe, wire, receiver, _sender) = halves(1024, false);
        pipe.deliver(Bytes::from(vec![0; 600])).expect("credit");
        drop(receiver);
        assert!(!*wire.cancelled.lock().expect("lock"));
        assert_eq!(*wire.grants.lock().expect("lock"), vec![616], "what was buffered is granted back");
        assert_eq!(pipe.deliver(Bytes::from(vec![0; 600])), Ok(Some(616)), "and what comes later at once");
        assert_eq!(pipe.buffered(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_fails_and_cancels_the_stream() {
        let (_pipe, wire, receiver, mut sender) = halves(1024, true);
        let mut receiver =
            receiver.with_deadline(Some(Instant::now() + std::time::Duration::from_millis(50)));
        let end = receiver.next().await.expect("an item").expect_err("deadline");
        assert_eq!(end.code(), Code::DeadlineExceeded);
        assert!(*wire.cancelled.lock().expect("lock"));
        assert_eq!(sender.send(Bytes::new()).await.expect_err("closed").code(), Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn single_takes_exactly_one_message() {
        let (pipe, _wire, mut receiver, _sender) = halves(1024, false);
        pipe.deliver(Bytes::from_static(b"one")).expect("credit");
        pipe.end_inbound(Ok(()));
        assert_eq!(receiver.single("M").await.expect("one"), Bytes::from_static(b"one"));

        let (pipe, _wire, mut receiver, _sender) = halves(1024, false);
        pipe.end_inbound(Ok(()));
        assert_eq!(receiver.single("M").await.expect_err("none").code(), Code::InvalidArgument);

        let (pipe, _wire, mut receiver, _sender) = halves(1024, false);
        pipe.deliver(Bytes::from_static(b"one")).expect("credit");
        pipe.deliver(Bytes::from_static(b"two")).expect("credit");
        assert_eq!(receiver.single("M").await.expect_err("two").code(), Code::InvalidArgument);
    }
}
