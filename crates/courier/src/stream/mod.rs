//! Streams: server-streaming, client-streaming and bidirectional methods.
//!
//! A streaming call runs through the same pipeline as a unary one (route,
//! deadline, layers, admission, the handler), for as long as the stream
//! lasts: its deadline covers the whole stream, its admission slot is held
//! to the end, and the handler's future resolving is the stream's end,
//! with its status. What differs is only where the messages go: the
//! protocol adapter opens a [`pipe`] for the call, and the handler reads
//! its requests from one half and writes its replies into the other.
//!
//! ## Layout
//!
//! - `credit`: per-stream flow control, sans-IO (credit granted by the
//!   receiver, spent by the sender, in wire bytes).
//! - `pipe`: the shared state of one stream and its application halves;
//!   the protocol plugs in through `StreamWire`.
//! - `typed`: [`Streaming`], [`ResponseStream`], [`channel`], what
//!   generated code and users see.

pub mod credit;
pub(crate) mod pipe;
mod typed;

use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use futures_util::stream::{Stream, StreamExt, iter, unfold};
pub use typed::{Requests, ResponseStream, StreamSender, Streaming, channel};

use crate::codec::Codec;
use crate::context::Context;
use crate::status::Status;
use pipe::{RawReceiver, RawSender};

/// The two halves a streaming handler is given, through its [`Context`].
#[derive(Debug)]
pub(crate) struct StreamIo {
    pub(crate) receiver: RawReceiver,
    pub(crate) sender: RawSender,
}

/// Where a call's stream halves wait for the handler to take them (once).
#[derive(Clone, Debug)]
pub(crate) struct StreamSlot(Arc<Mutex<Option<StreamIo>>>);

impl StreamSlot {
    pub(crate) fn new(io: StreamIo) -> StreamSlot {
        StreamSlot(Arc::new(Mutex::new(Some(io))))
    }

    pub(crate) fn take(&self) -> Option<StreamIo> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// A server's halves of a new stream carried by `wire`: the pipe the
/// adapter delivers into, and the slot the handler takes its halves from.
/// The handler's receiver discards what arrives after it is dropped (a
/// handler may stop reading and keep answering).
pub(crate) fn server_halves(
    wire: Arc<dyn pipe::StreamWire>,
    recv_window: u32,
    send_window: u32,
) -> (Arc<pipe::Pipe>, StreamSlot) {
    let pipe = pipe::Pipe::new(recv_window, send_window);
    let io = StreamIo {
        receiver: RawReceiver::new(pipe.clone(), wire.clone(), false),
        sender: RawSender::new(pipe.clone(), wire),
    };
    (pipe, StreamSlot::new(io))
}

/// A caller's halves of a new stream carried by `wire`, failing at
/// `deadline`: the pipe the endpoint delivers into, and the halves. The
/// receiver cancels the stream when dropped before its end.
pub(crate) fn client_halves(
    wire: Arc<dyn pipe::StreamWire>,
    recv_window: u32,
    send_window: u32,
    deadline: Option<std::time::Instant>,
) -> (Arc<pipe::Pipe>, RawSender, RawReceiver) {
    let pipe = pipe::Pipe::new(recv_window, send_window);
    let receiver = RawReceiver::new(pipe.clone(), wire.clone(), true).with_deadline(deadline);
    let sender = RawSender::new(pipe.clone(), wire);
    (pipe, sender, receiver)
}

fn take_io(cx: &Context, method: &str) -> Result<StreamIo, Status> {
    cx.take_stream().ok_or_else(|| {
        Status::internal(format!(
            "{method} is a streaming method, but the call carries no stream (or it was taken)"
        ))
    })
}

/// The request of a server-streaming method (its one message), and the
/// sender for its replies.
#[doc(hidden)]
pub fn __single_request(
    cx: &Context,
    method: &str,
) -> impl Future<Output = Result<(Bytes, ReplySink), Status>> + Send {
    let io = take_io(cx, method);
    let method = method.to_string();
    async move {
        let StreamIo { mut receiver, sender } = io?;
        let request = receiver.single(&method).await?;
        Ok((request, ReplySink { sender, method }))
    }
}

/// The requests of a client-streaming or bidirectional method, and the
/// sender for its replies.
#[doc(hidden)]
pub fn __requests<T>(
    cx: &Context,
    method: &str,
    decode: fn(Codec, &Bytes) -> Result<T, Status>,
) -> Result<(Streaming<T>, ReplySink), Status> {
    let StreamIo { receiver, sender } = take_io(cx, method)?;
    Ok((Streaming::new(receiver, cx.codec(), decode), ReplySink { sender, method: method.to_string() }))
}

/// Where a streaming handler's replies go.
#[doc(hidden)]
#[derive(Debug)]
pub struct ReplySink {
    sender: RawSender,
    method: String,
}

impl ReplySink {
    /// Send each message `replies` yields, encoded by `encode`; the first
    /// `Err` ends the call with that status, a clean end with `OK`.
    pub async fn drive<T>(
        mut self,
        codec: Codec,
        mut replies: ResponseStream<T>,
        encode: fn(Codec, &T) -> Result<Bytes, Status>,
    ) -> Result<Bytes, Status> {
        while let Some(reply) = replies.next().await {
            let body = encode(codec, &reply?).map_err(|status| {
                Status::internal(format!("a reply of {} does not encode: {}", self.method, status.message()))
            })?;
            self.sender.send(body).await?;
        }
        Ok(Bytes::new())
    }

    /// Send the one reply of a client-streaming method.
    pub async fn reply(mut self, body: Bytes) -> Result<Bytes, Status> {
        self.sender.send(body).await?;
        Ok(Bytes::new())
    }
}
