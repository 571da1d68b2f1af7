//! Server-streaming methods over HTTP/JSON: the replies as newline-
//! delimited JSON (`application/x-ndjson`, one message per line), or as
//! server-sent events when the client asks with `Accept:
//! text/event-stream`, so `curl -N` can follow a stream.
//!
//! The request body is the stream's one request. The response head waits
//! for the first reply or the end, whichever comes first: a call that fails
//! before replying answers its HTTP error status and error body as a unary
//! call would; once replies flow the status is 200, and an error after
//! them is the last line (`{"code":..,"message":..}` under an `"error"`
//! key in NDJSON, an `event: error` in SSE), so a cut stream never looks
//! like a clean end. A client that goes away drops the call (and so the
//! handler) at once.
//!
//! Flow control is local: the pipe's credit comes back as hyper takes the
//! lines to write, so a client that reads slowly holds the handler to a
//! window of replies plus one, as on the other protocols.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use super::pipeline::{Call, Outcome};
use crate::metadata::Metadata;
use crate::protocol::headers::put_metadata;
use crate::protocol::http as wire;
use crate::status::Status;
use crate::stream::credit::{DEFAULT_STREAM_WINDOW, cost};
use crate::stream::pipe::{Pipe, StreamWire};

/// How the replies are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `application/x-ndjson`: one JSON value per line.
    JsonLines,
    /// `text/event-stream`: `data: <json>` events.
    ServerSentEvents,
}

impl Framing {
    /// What the request's `Accept` header asks for.
    pub(crate) fn for_accept(accept: Option<&HeaderValue>) -> Framing {
        let asks_sse =
            accept.and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/event-stream"));
        if asks_sse { Framing::ServerSentEvents } else { Framing::JsonLines }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::JsonLines => "application/x-ndjson",
            Framing::ServerSentEvents => "text/event-stream",
        }
    }

    fn message(self, json: &[u8]) -> Bytes {
        let mut line = BytesMut::with_capacity(json.len() + 8);
        if self == Framing::ServerSentEvents {
            line.put_slice(b"data: ");
        }
        // A JSON value has no raw newline (strings escape it), so one line
        // (or one `data:` field) holds it whole.
        line.put_slice(json);
        line.put_slice(if self == Framing::ServerSentEvents { b"\n\n" } else { b"\n" });
        line.freeze()
    }

    fn error(self, status: &Status) -> Bytes {
        let body = wire::error_body(status);
        let mut line = BytesMut::with_capacity(body.len() + 24);
        match self {
            Framing::JsonLines => {
                line.put_slice(b"{\"error\":");
                line.put_slice(&body);
                line.put_slice(b"}\n");
            }
            Framing::ServerSentEvents => {
                line.put_slice(b"event: error\ndata: ");
                line.put_slice(&body);
                line.put_slice(b"\n\n");
            }
        }
        line.freeze()
    }
}

/// Where the handler's replies go: lines into the body's channel, each
/// one's credit given back to the pipe once hyper takes it.
struct LineWire {
    lines: mpsc::UnboundedSender<Line>,
    framing: Framing,
    /// Told once, when the first reply is ready (the head can go out).
    first: Mutex<Option<oneshot::Sender<()>>>,
}

/// A line of the body, and the credit it frees once taken.
struct Line {
    bytes: Bytes,
    credit: u32,
}

impl StreamWire for LineWire {
    fn message(&self, message: Bytes) -> Result<(), Status> {
        let credit = u32::try_from(cost(message.len())).unwrap_or(u32::MAX);
        let line = Line { bytes: self.framing.message(&message), credit };
        self.lines.send(line).map_err(|_| Status::cancelled("the HTTP client went away mid-stream"))?;
        if let Some(first) = self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = first.send(());
        }
        Ok(())
    }

    fn half_close(&self) {}

    /// The request is the whole body: nothing to grant.
    fn grant(&self, _increment: u32) {}

    fn cancel(&self) {}
}

/// The body of a streamed reply: lines as the handler sends them, ended
/// when the call is done (with the error line, if it failed).
pub(crate) struct JsonLines {
    lines: mpsc::UnboundedReceiver<Line>,
    pipe: Arc<Pipe>,
}

impl Body for JsonLines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.lines.poll_recv(cx) {
            Poll::Ready(Some(line)) => {
                if line.credit > 0 {
                    // A flow-control error here would be our own overflow
                    // of a window we never exceed; ignore it.
                    let _ = self.pipe.grant(line.credit);
                }
                Poll::Ready(Some(Ok(Frame::data(line.bytes))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The two ends of a server-streaming call over HTTP: the wire the
/// handler's halves write to, and what the adapter runs the call with.
pub(crate) struct HttpStream {
    pub(crate) slot: crate::stream::StreamSlot,
    pipe: Arc<Pipe>,
    lines: mpsc::UnboundedSender<Line>,
    body: JsonLines,
    first: oneshot::Receiver<()>,
    framing: Framing,
}

impl HttpStream {
    /// A stream whose one request is `request`.
    pub(crate) fn new(request: Bytes, framing: Framing) -> HttpStream {
        let (lines, receiver) = mpsc::unbounded_channel();
        let (first_tx, first) = oneshot::channel();
        let wire = Arc::new(LineWire { lines: lines.clone(), framing, first: Mutex::new(Some(first_tx)) });
        let (pipe, slot) = crate::stream::server_halves(wire, DEFAULT_STREAM_WINDOW, DEFAULT_STREAM_WINDOW);
        // The request, whole, and the client's end of it: delivered within
        // the window we grant ourselves.
        let _ = pipe.deliver(request);
        pipe.end_inbound(Ok(()));
        let body = JsonLines { lines: receiver, pipe: pipe.clone() };
        HttpStream { slot, pipe, lines, body, first, framing }
    }

    /// Run `call`: the reply once its first message is ready (200, the
    /// lines following as the handler sends them, an error line last if
    /// it fails) or once it failed before any (its error reply).
    pub(crate) async fn run<B>(
        self,
        call: Call,
        error_reply: impl FnOnce(&Status, &Metadata) -> Response<Either<Full<Bytes>, B>>,
        streamed: impl FnOnce(JsonLines) -> B,
    ) -> Response<Either<Full<Bytes>, B>> {
        let HttpStream { slot: _, pipe, lines, body, first, framing } = self;
        let response = call.response_metadata();
        let (ended_tx, ended) = oneshot::channel::<Outcome>();
        let watch_lines = lines.clone();
        tokio::spawn(async move {
            tokio::select! {
                outcome = call.run() => {
                    let _ = ended_tx.send(outcome);
                }
                // The client went away (hyper dropped the body): drop the
                // call, and with it the handler.
                () = watch_lines.closed() => {}
            }
        });
        let mut ended = ended;
        tokio::select! {
            biased;
            Ok(()) = first => {}
            outcome = &mut ended => {
                // Done before any reply: answer as a unary call would (an
                // empty stream is a 200 with no lines).
                let outcome = outcome.unwrap_or_else(|_| Outcome::error(Status::internal("the stream's handler panicked")));
                if let Err(status) = &outcome.result {
                    return error_reply(status, &outcome.metadata);
                }
                let mut reply = Response::new(Either::Right(streamed(body)));
                put_headers(&mut reply, framing, &outcome.metadata);
                return reply;
            }
        }
        let mut reply = Response::new(Either::Right(streamed(body)));
        put_headers(&mut reply, framing, &response.snapshot());
        // The end comes after the head: an error becomes the last line, and
        // the body ends once every line is in.
        tokio::spawn(async move {
            let outcome =
                ended.await.unwrap_or_else(|_| Outcome::error(Status::cancelled("the client went away")));
            if let Err(status) = &outcome.result {
                let _ = lines.send(Line { bytes: framing.error(status), credit: 0 });
            }
            drop(pipe);
        });
        reply
    }
}

fn put_headers<B>(reply: &mut Response<B>, framing: Framing, metadata: &Metadata) {
    put_metadata(reply.headers_mut(), metadata);
    reply.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(framing.content_type()));
    reply.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *reply.status_mut() = StatusCode::OK;
}
