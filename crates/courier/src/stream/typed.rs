//! The typed streams users see: [`Streaming`] (messages coming in),
//! [`ResponseStream`] (what a server-streaming handler returns) and
//! [`channel`] (a sender to feed a client stream from anywhere).

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::pipe::RawReceiver;
use crate::codec::Codec;
use crate::status::Status;

/// How one message type is read off the wire in a codec (serde's or
/// protobuf's, chosen by the generated code).
pub(crate) type DecodeFn<T> = fn(Codec, &Bytes) -> Result<T, Status>;

/// Messages coming in on a stream: a handler's requests (client-streaming
/// and bidirectional methods), a caller's replies (server-streaming and
/// bidirectional ones).
///
/// Yields each message as it arrives, then `None` when the peer ended the
/// stream cleanly. Anything else (an error status from the server, a
/// deadline, a connection lost mid-stream, a message that does not decode)
/// comes out as one `Err` before the end: a truncated stream never looks
/// like a clean one.
///
/// Reading is what grants the sender more credit: a stream nobody reads
/// stops its sender after one window (64 KiB by default).
pub struct Streaming<T> {
    raw: RawReceiver,
    codec: Codec,
    decode: DecodeFn<T>,
    failed: bool,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming").field("codec", &self.codec).field("raw", &self.raw).finish()
    }
}

impl<T> Streaming<T> {
    pub(crate) fn new(raw: RawReceiver, codec: Codec, decode: DecodeFn<T>) -> Streaming<T> {
        Streaming { raw, codec, decode, failed: false }
    }

    /// The next message; `Ok(None)` at a clean end.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        self.next().await.transpose()
    }
}

impl<T> Unpin for Streaming<T> {}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item = match self.raw.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        Poll::Ready(match item {
            None => None,
            Some(Ok(body)) => match (self.decode)(self.codec, &body) {
                Ok(message) => Some(Ok(message)),
                Err(status) => {
                    // A message that does not decode ends the stream: what
                    // follows could not be trusted to line up.
                    self.failed = true;
                    Some(Err(status))
                }
            },
            Some(Err(status)) => {
                self.failed = true;
                Some(Err(status))
            }
        })
    }
}

/// What a server-streaming (or bidirectional) handler returns: the
/// messages to send, each `Ok` or an `Err` that ends the stream with that
/// status. A clean end of the stream ends the call with `OK`.
///
/// ```
/// use courier::{ResponseStream, Status};
/// let numbers: ResponseStream<u32> = ResponseStream::iter(1..=3);
/// let failing: ResponseStream<u32> =
///     ResponseStream::new(futures_util::stream::iter([Ok(1), Err(Status::internal("no more"))]));
/// # drop((numbers, failing));
/// ```
pub struct ResponseStream<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
}

impl<T> fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStream").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ResponseStream<T> {
    /// Send what `stream` yields.
    pub fn new(stream: impl Stream<Item = Result<T, Status>> + Send + 'static) -> ResponseStream<T> {
        ResponseStream { inner: Box::pin(stream) }
    }

    /// Send these messages, then end with `OK`.
    pub fn iter<I>(messages: I) -> ResponseStream<T>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        ResponseStream::new(futures_util::stream::iter(messages.into_iter().map(Ok)))
    }

    /// Send nothing; end with `OK`.
    pub fn empty() -> ResponseStream<T> {
        ResponseStream::new(futures_util::stream::empty())
    }

    /// Send nothing; end with `status`.
    pub fn error(status: Status) -> ResponseStream<T> {
        ResponseStream::new(futures_util::stream::once(std::future::ready(Err(status))))
    }
}

impl<T> Stream for ResponseStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A sender and the stream it feeds, for a client-streaming or
/// bidirectional call whose messages are produced elsewhere (another task,
/// a reply just received): pass the stream to the call, keep the sender.
///
/// `send` waits while `capacity` messages are queued and the call has not
/// taken them (it takes them as flow control allows), and fails once the
/// call has ended. Dropping every sender ends the client's half of the
/// stream.
///
/// ```
/// # async fn demo() {
/// let (sender, requests) = courier::stream::channel::<String>(16);
/// tokio::spawn(async move {
///     for word in ["a", "b"] {
///         if sender.send(word.to_string()).await.is_err() {
///             break; // the call ended
///         }
///     }
/// });
/// # drop(requests);
/// # }
/// ```
pub fn channel<T: Send + 'static>(capacity: usize) -> (StreamSender<T>, Requests<T>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
    (StreamSender { sender }, Requests { receiver })
}

/// The sending half of [`channel`].
#[derive(Debug)]
pub struct StreamSender<T> {
    sender: tokio::sync::mpsc::Sender<T>,
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        StreamSender { sender: self.sender.clone() }
    }
}

impl<T: Send + 'static> StreamSender<T> {
    /// Queue `message`; fails with `Cancelled` once the call has ended (its
    /// stream is then dropped).
    pub async fn send(&self, message: T) -> Result<(), Status> {
        self.sender
            .send(message)
            .await
            .map_err(|_| Status::cancelled("the stream's call has ended; the message was not sent"))
    }

    /// Whether the call has ended.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The stream half of [`channel`]: pass it to a client-streaming or
/// bidirectional method.
#[derive(Debug)]
pub struct Requests<T> {
    receiver: tokio::sync::mpsc::Receiver<T>,
}

impl<T> Stream for Requests<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::status::Code;
    use crate::stream::pipe::{Pipe, StreamWire};

    struct Nowhere;
    impl StreamWire for Nowhere {
        fn message(&self, _: Bytes) -> Result<(), Status> {
            Ok(())
        }
        fn half_close(&self) {}
        fn grant(&self, _: u32) {}
        fn cancel(&self) {}
    }

    fn decode_u32(codec: Codec, body: &Bytes) -> Result<u32, Status> {
        codec.decode(body).map_err(|err| Status::internal(err.to_string()))
    }

    fn encoded(value: u32) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        Codec::Json.encode(&value, &mut buf).expect("encode");
        buf.freeze()
    }

    #[tokio::test]
    async fn messages_decode_and_a_bad_one_ends_the_stream_with_an_error() {
        let pipe = Pipe::new(4096, 4096);
        let raw = RawReceiver::new(pipe.clone(), Arc::new(Nowhere), true);
        let mut stream = Streaming::new(raw, Codec::Json, decode_u32);
        pipe.deliver(encoded(7)).expect("credit");
        pipe.deliver(Bytes::from_static(b"not json")).expect("credit");
        pipe.deliver(encoded(8)).expect("credit");
        pipe.end_inbound(Ok(()));
        assert_eq!(stream.message().await.expect("ok"), Some(7));
        assert_eq!(stream.message().await.expect_err("bad").code(), Code::Internal);
        assert_eq!(stream.message().await.expect("ended"), None, "nothing after the error");
    }

    #[tokio::test]
    async fn a_channel_feeds_its_stream_and_ends_when_the_senders_go() {
        let (sender, mut requests) = channel::<u32>(2);
        let copy = sender.clone();
        sender.send(1).await.expect("open");
        copy.send(2).await.expect("open");
        drop((sender, copy));
        assert_eq!(requests.next().await, Some(1));
        assert_eq!(requests.next().await, Some(2));
        assert_eq!(requests.next().await, None);

        let (sender, requests) = channel::<u32>(1);
        drop(requests);
        assert!(sender.is_closed());
        assert_eq!(sender.send(3).await.expect_err("closed").code(), Code::Cancelled);
    }

    #[tokio::test]
    async fn response_streams_from_iterators_and_errors() {
        let all: Vec<_> = ResponseStream::iter([1u32, 2]).collect().await;
        assert_eq!(all.len(), 2);
        let failed: Vec<_> = ResponseStream::<u32>::error(Status::not_found("x")).collect().await;
        assert!(matches!(failed.as_slice(), [Err(status)] if status.code() == Code::NotFound));
        assert!(ResponseStream::<u32>::empty().next().await.is_none());
    }
}
