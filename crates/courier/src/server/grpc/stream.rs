//! Streaming calls on a gRPC connection: server-streaming,
//! client-streaming and bidirectional methods over one HTTP/2 stream.
//!
//! The call runs through the pipeline like a unary one (its handler in a
//! task of its own, under the `grpc-timeout` deadline, for as long as the
//! stream lasts); its messages go through a pipe (`crate::stream`) whose
//! wire is `transport::h2_send::H2Wire`. Three things run together on the
//! connection's task:
//!
//! - the reader: request messages into the pipe, as the handler's credit
//!   allows (HTTP/2 capacity is released only then, so a handler that reads
//!   slowly stops its client at the stream's window); the client's
//!   END_STREAM ends the handler's requests cleanly, a reset or a lost
//!   connection with an error;
//! - the writer: the handler's replies onto the stream as HTTP/2 capacity
//!   allows, the response headers (with the response metadata the handler
//!   has set by then) before the first;
//! - the handler's future, whose end is the stream's end: the writer
//!   drains what is queued, then the trailers carry its status (or, if
//!   nothing was sent, one trailers-only response).
//!
//! A client that resets the stream has gone: the handler is dropped at
//! once (and its halves fail with `Cancelled`, for anything it spawned).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue};
use tokio::sync::watch;

use super::{AbortOnDrop, ServerShared, response_head, send_trailers_only};
use crate::codec::Codec;
use crate::context::ResponseMetadata;
use crate::metadata::Metadata;
use crate::protocol::grpc::{self as wire, Encoding, metadata_of, put_metadata};
use crate::protocol::sniff::Protocol;
use crate::server::admission::ConnectionSlots;
use crate::server::pipeline::{self, Incoming, Outcome};
use crate::server::router::Route;
use crate::status::Status;
use crate::stream::credit::DEFAULT_STREAM_WINDOW;
use crate::stream::pipe::Pipe;
use crate::transport::h2_send::{self, H2Wire, Next, WireShared};

/// What a streaming call needs from the request, checked by the caller.
pub(super) struct StreamRequest<'a> {
    pub(super) route: Route,
    pub(super) codec: Codec,
    pub(super) headers: &'a HeaderMap,
    /// Of the request messages.
    pub(super) encoding: Encoding,
    /// Of the reply messages.
    pub(super) reply_encoding: Encoding,
    pub(super) deadline: Option<Instant>,
    pub(super) peer: SocketAddr,
}

/// Resets the pipe when the call goes (however it goes: the connection
/// closing drops it), so halves a handler spawned never wait forever.
struct ResetOnDrop(Arc<Pipe>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        self.0.reset(Status::unavailable("the gRPC stream is gone"));
    }
}

/// How the writer stopped.
enum Written {
    /// Everything the handler sent is on the wire: the stream, once the
    /// headers went out.
    Drained(Option<SendStream<Bytes>>),
    /// The client reset the stream, or it failed.
    Gone(Status),
}

/// Serve one streaming call to its end.
pub(super) async fn serve(
    request: StreamRequest<'_>,
    mut body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    shutdown: &watch::Receiver<bool>,
) {
    let StreamRequest { route, codec, headers, encoding, reply_encoding, deadline, peer } = request;
    let config = &server.config;
    let max_message = config.max_frame_size;
    let shared = WireShared::new(DEFAULT_STREAM_WINDOW);
    let wire = Arc::new(H2Wire::new(shared.clone(), reply_encoding, max_message));
    let (pipe, slot) = crate::stream::server_halves(wire, DEFAULT_STREAM_WINDOW, DEFAULT_STREAM_WINDOW);
    let _reset = ResetOnDrop(pipe.clone());
    let incoming = Incoming {
        route,
        protocol: Protocol::Grpc,
        codec,
        deadline,
        metadata: metadata_of(headers),
        peer,
        body: Bytes::new(),
        // The stream's messages are bounded by its windows, not reserved
        // one by one.
        memory: server.budget.empty(),
        stream: Some(slot),
    };
    let call = match pipeline::start(server, slots, incoming, shutdown) {
        Ok(call) => call,
        Err(status) => return send_trailers_only(respond, codec, &status, &Metadata::new()),
    };
    // What the handler set before its first reply goes in the headers; the
    // rest in the trailers.
    let early_metadata = call.response_metadata();
    // A stream's handler waits on its peer by nature: it always gets a task
    // of its own, aborted if this future is dropped.
    let mut task = AbortOnDrop(tokio::spawn(call.run()));
    let mut head = response_head(codec);
    if reply_encoding == Encoding::Gzip {
        head.headers_mut().insert(wire::names::ENCODING, HeaderValue::from_static("gzip"));
    }
    let stall = config.keepalive_interval;
    // The writer borrows `respond` until it is done: the trailers come after.
    let (outcome, written) = {
        let writer = write_replies(respond, &shared, &pipe, head, &early_metadata, stall);
        tokio::pin!(writer);
        let reader = async {
            let end = h2_send::read_messages(
                &mut body,
                &pipe,
                &shared,
                encoding,
                max_message,
                "the request stream",
            )
            .await;
            match end {
                // The client's END_STREAM: its requests are complete.
                Ok(()) => {
                    pipe.end_inbound(Ok(()));
                    Ok(())
                }
                Err(status) => {
                    pipe.reset(status.clone());
                    Err(status)
                }
            }
        };
        tokio::pin!(reader);
        let mut reading = true;
        let outcome = loop {
            tokio::select! {
                joined = &mut task.0 => break joined.unwrap_or_else(|err| {
                    Outcome::error(Status::internal(format!("the handler's task failed: {err}")))
                }),
                read = &mut reader, if reading => {
                    reading = false;
                    // A broken request stream ends the call with its status; the
                    // handler has nothing more to answer to.
                    if let Err(status) = read {
                        break Outcome::error(status);
                    }
                }
                written = &mut writer => {
                    // The writer only stops early when the stream is gone.
                    let status = match written {
                        Written::Gone(status) => status,
                        Written::Drained(_) => Status::internal("the stream's writer stopped early"),
                    };
                    tracing::debug!(%status, "gRPC stream gone; dropping its handler");
                    pipe.reset(status);
                    return;
                }
            }
        };
        drop(task);
        // Nothing is sent after the status: halves the handler left behind fail.
        pipe.close_outbound(Status::failed_precondition("the call is over"));
        shared.finish();
        (outcome, writer.await)
    };
    let stream = match written {
        Written::Drained(stream) => stream,
        Written::Gone(status) => {
            tracing::debug!(%status, "gRPC stream gone before its status");
            return;
        }
    };
    let status = outcome.result.err();
    match stream {
        // Nothing was sent: one trailers-only response.
        None => match status {
            Some(status) => send_trailers_only(respond, codec, &status, &outcome.metadata),
            None => {
                let mut response = response_head(codec);
                put_metadata(response.headers_mut(), &outcome.metadata);
                response.headers_mut().insert(wire::names::STATUS, HeaderValue::from_static("0"));
                let _ = respond.send_response(response, true);
            }
        },
        Some(mut stream) => {
            let mut trailers = HeaderMap::new();
            put_metadata(&mut trailers, &outcome.metadata);
            match &status {
                None => {
                    trailers.insert(wire::names::STATUS, HeaderValue::from_static("0"));
                }
                Some(status) => wire::put_status(&mut trailers, status),
            }
            let _ = stream.send_trailers(trailers);
        }
    }
}

/// Put the handler's replies on the stream: the headers before the first,
/// each as the client's window allows; stop once the call is finished and
/// everything queued is sent, or when the client resets the stream.
async fn write_replies(
    respond: &mut SendResponse<Bytes>,
    shared: &WireShared,
    pipe: &Pipe,
    head: http::Response<()>,
    early_metadata: &ResponseMetadata,
    stall: Option<std::time::Duration>,
) -> Written {
    let mut head = Some(head);
    let mut stream: Option<SendStream<Bytes>> = None;
    loop {
        // The next thing to send, or the client's reset, whichever first.
        let next = poll_fn(|task| {
            if let std::task::Poll::Ready(next) = shared.poll_next(task) {
                return std::task::Poll::Ready(Ok(next));
            }
            let reset = match stream.as_mut() {
                Some(stream) => stream.poll_reset(task),
                None => respond.poll_reset(task),
            };
            reset.map(|reset| {
                let err = reset.map_or_else(|err| err, h2::Error::from);
                Err(h2_send::status_of_h2_error(&err, "the call"))
            })
        })
        .await;
        match next {
            Err(status) => return Written::Gone(status),
            Ok(Next::Message(framed, len)) => {
                if stream.is_none()
                    && let Some(mut head) = head.take()
                {
                    put_metadata(head.headers_mut(), &early_metadata.take());
                    match respond.send_response(head, false) {
                        Ok(sending) => stream = Some(sending),
                        Err(err) => return Written::Gone(h2_send::status_of_h2_error(&err, "the call")),
                    }
                }
                let Some(sending) = stream.as_mut() else {
                    return Written::Gone(Status::internal("the response stream is missing"));
                };
                if let Err(err) = h2_send::send_message(sending, pipe, framed, len, stall).await {
                    return Written::Gone(h2_send::status_of_h2_error(&err, "the call"));
                }
            }
            Ok(Next::Finished) => return Written::Drained(stream),
            // A server never half-closes or cancels through its wire (its
            // end is the status); take either as the end.
            Ok(Next::HalfClose | Next::Cancel) => return Written::Drained(stream),
        }
    }
}
