//! HTTP/1.1 with JSON bodies (cargo feature `http-json`), on hyper.
//!
//! `POST /Service/Method` with the method's arguments as a JSON body (one
//! argument as itself, several as an object of named arguments, none as
//! `{}` or an empty body) answers `200` with the result as JSON. Errors
//! answer the HTTP status that matches their code (the mapping of Google's
//! HTTP APIs) and `{"code": "INVALID_ARGUMENT", "message": ".."}`, plus
//! `"error"` holding a service's own error. `GET /` lists the services and
//! their methods. Request headers other than HTTP's own become the call's
//! metadata; `x-courier-timeout-ms` sets its deadline; response metadata
//! comes back as headers. Connections are kept alive, for 60 s between
//! requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming as Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::ServerShared;
use super::admission::ConnectionSlots;
use super::budget::Reservation;
use super::http_stream::{Framing, HttpStream, JsonLines};
use super::pipeline::{self, Incoming, Outcome, Target};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::headers::{metadata_of, put_metadata};
use crate::protocol::http::{self as wire, method_name};
use crate::protocol::sniff::Protocol;
use crate::service::MethodKind;
use crate::status::Status;
use crate::transport::progress::Progress;
use crate::transport::watched::{HeadWatch, Watched};

/// How long a kept-alive connection may sit between requests. hyper's
/// header-read timeout also runs while it waits for the next request, so
/// this is that timeout; the handshake timeout would close idle
/// connections a client pool expects to reuse after 5 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serve one HTTP/1.1 connection.
pub(crate) async fn serve<T>(
    io: T,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &server.config;
    let drain_timeout = config.drain_timeout;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT.max(config.handshake_timeout))
        .max_buf_size(config.max_metadata_size.max(8192));
    let handler_server = server.clone();
    let handler_shutdown = shutdown.clone();
    let slots = Arc::new(server.admission.connection());
    // hyper parses the heads; we watch that a head which has started keeps
    // arriving (hyper's header timeout also covers idle time between
    // requests, so it cannot be the 20 s stall limit).
    let heads = HeadWatch::default();
    let handler_heads = heads.clone();
    let service = hyper::service::service_fn(move |request| {
        let server = handler_server.clone();
        let shutdown = handler_shutdown.clone();
        let slots = slots.clone();
        let handling = handler_heads.handling();
        async move {
            let reply = handle(request, &server, &slots, peer, shutdown).await;
            drop(handling);
            Ok::<_, Infallible>(reply)
        }
    });
    // A reply that makes no progress for a keepalive interval (the peer
    // stopped reading) ends the connection, as on the other protocols.
    let io = Watched::new(io, heads.clone()).with_write_stall(config.keepalive_interval);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "HTTP connection ended");
            }
            return;
        }
        overdue = heads.overdue(config.request_timeouts) => {
            server.stats.request_timed_out();
            tracing::info!(%peer, %overdue, "closing HTTP connection: a request head is overdue");
            return;
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    // Finish the request in progress (if any), then close.
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(drain_timeout, connection).await.is_err() {
        tracing::info!(%peer, "drain timeout: closing an HTTP connection mid-request");
    }
}

/// A reply: a whole JSON body, or a server-streaming method's lines.
type Reply = Response<Either<Full<Bytes>, JsonLines>>;

async fn handle(
    request: Request<Body>,
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Reply {
    let path = request.uri().path().to_owned();
    if path == "/" {
        return match *request.method() {
            Method::GET | Method::HEAD => json_reply(StatusCode::OK, &listing(server), &Metadata::new()),
            _ => method_not_allowed("GET"),
        };
    }
    let Some(method) = method_name(&path) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            &Status::not_found(format!("no such path `{}`", shorten(&path))),
        );
    };
    let route = match pipeline::route(server, Target::Name(&method), Codec::Json) {
        Ok(route) => route,
        // An unknown method is an unknown resource.
        Err(status) => return error_reply(StatusCode::NOT_FOUND, &status),
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    if let Some(content_type) = request.headers().get(http::header::CONTENT_TYPE)
        && !wire::is_json(content_type)
    {
        return error_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Status::invalid_argument("send the arguments as JSON (content-type: application/json)"),
        );
    }
    let deadline = match request.headers().get(wire::TIMEOUT_HEADER).map(wire::parse_timeout) {
        None => None,
        // A deadline too far away to represent is no deadline.
        Some(Ok(timeout)) => Instant::now().checked_add(timeout),
        Some(Err(status)) => return error_reply(StatusCode::BAD_REQUEST, &status),
    };
    let metadata = metadata_of(request.headers());
    let framing = Framing::for_accept(request.headers().get(http::header::ACCEPT));
    let content_length = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (body, memory) = match read_body(request.into_body(), content_length, server).await {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    // No body means no arguments.
    let body = if body.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { body };
    // A server-streaming method's request is its stream's one message.
    let streamed =
        (route.method.kind == MethodKind::ServerStreaming).then(|| HttpStream::new(body.clone(), framing));
    let incoming = Incoming {
        route,
        protocol: Protocol::HttpJson,
        codec: Codec::Json,
        deadline,
        metadata,
        peer,
        body,
        memory,
        stream: streamed.as_ref().map(|stream| stream.slot.clone()),
    };
    if let Some(stream) = streamed {
        return match pipeline::start(server, slots, incoming, &shutdown) {
            Ok(call) => {
                stream
                    .run(
                        call,
                        |status, metadata| {
                            let mut response = error_reply(wire::status_of(status.code()), status);
                            put_metadata(response.headers_mut(), metadata);
                            response
                        },
                        |lines| lines,
                    )
                    .await
            }
            Err(status) => error_reply(wire::status_of(status.code()), &status),
        };
    }
    let outcome = match pipeline::start(server, slots, incoming, &shutdown) {
        Ok(call) => call.run().await,
        Err(status) => Outcome::error(status),
    };
    match outcome.result {
        Ok(result) => {
            let mut response = Response::new(Either::Left(Full::new(result)));
            put_json_headers(&mut response, &outcome.metadata);
            response
        }
        Err(status) => {
            let mut response = error_reply(wire::status_of(status.code()), &status);
            put_metadata(response.headers_mut(), &outcome.metadata);
            response
        }
    }
}

/// Read a request body within the frame limit, its bytes reserved against
/// the server's budget (a declared length up front, before any is read),
/// arriving steadily (see `transport::progress`). A refusal is the reply to
/// send; a request whose body is not read to its end closes the connection
/// once answered.
async fn read_body(
    mut body: Body,
    content_length: Option<u64>,
    server: &ServerShared,
) -> Result<(Bytes, Reservation), Reply> {
    let limit = server.config.max_frame_size;
    let too_large = || {
        closing(error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Status::resource_exhausted(format!("the body exceeds this server's limit of {limit} bytes")),
        ))
    };
    let over_budget = |status: Status| closing(error_reply(wire::status_of(status.code()), &status));
    let mut memory = server.budget.empty();
    if let Some(declared) = content_length {
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        if declared > limit {
            return Err(too_large());
        }
        memory.grow_to(declared).map_err(over_budget)?;
    }
    let timeouts = server.config.request_timeouts;
    let mut progress = Progress::default();
    progress.start(Instant::now());
    let mut collected = BytesMut::new();
    loop {
        let frame = match progress.deadline(&timeouts) {
            None => body.frame().await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                Ok(frame) => frame,
                Err(_) => match progress.check(Instant::now(), &timeouts) {
                    Err(overdue) => {
                        server.stats.request_timed_out();
                        tracing::info!(%overdue, "closing HTTP connection: a request body is overdue");
                        return Err(closing(error_reply(
                            StatusCode::REQUEST_TIMEOUT,
                            &Status::deadline_exceeded(format!("request not received in time: {overdue}")),
                        )));
                    }
                    Ok(()) => continue,
                },
            },
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|err| {
            error_reply(
                StatusCode::BAD_REQUEST,
                &Status::invalid_argument(format!("could not read the body: {err}")),
            )
        })?;
        let Ok(data) = frame.into_data() else { continue }; // trailers
        progress.received(data.len(), Instant::now());
        if collected.len() + data.len() > limit {
            return Err(too_large());
        }
        memory.grow_to(collected.len() + data.len()).map_err(over_budget)?;
        collected.extend_from_slice(&data);
    }
    memory.shrink_to(collected.len());
    Ok((collected.freeze(), memory))
}

/// A reply after which the connection is closed (its request's body was
/// not read to the end, so the next request's start is unknown).
fn closing(mut reply: Reply) -> Reply {
    reply.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    reply
}

fn shorten(text: &str) -> &str {
    match text.char_indices().nth(128) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

fn put_json_headers(response: &mut Reply, metadata: &Metadata) {
    put_metadata(response.headers_mut(), metadata);
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
}

fn json_reply(status: StatusCode, body: &Value, metadata: &Metadata) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    put_json_headers(&mut response, metadata);
    response
}

/// An error reply: the HTTP status, and the body of [`wire::error_body`].
fn error_reply(http_status: StatusCode, status: &Status) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(wire::error_body(status))));
    *response.status_mut() = http_status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut response =
        error_reply(StatusCode::METHOD_NOT_ALLOWED, &Status::unimplemented(format!("use {allow} here")));
    response.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `GET /`: every service, its methods and how to call them.
fn listing(server: &ServerShared) -> Value {
    let services: Vec<Value> = server
        .router
        .services()
        .iter()
        .map(|service| {
            let descriptor = service.descriptor();
            let methods: Vec<Value> = descriptor
                .methods
                .iter()
                .map(|method| {
                    json!({
                        "name": method.name,
                        "path": format!("/{}/{}", descriptor.name, method.name),
                        "args": method.args.iter().map(|arg| json!({"name": arg.name, "type": arg.ty})).collect::<Vec<_>>(),
                        "output": method.output,
                        "error": method.error,
                        "idempotent": method.idempotent,
                        "docs": method.docs,
                    })
                })
                .collect();
            json!({ "name": descriptor.name, "version": descriptor.version, "docs": descriptor.docs, "methods": methods })
        })
        .collect();
    json!({ "services": services })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_have_the_status_and_a_json_body() {
        let status = Status::application(
            crate::Code::Unknown,
            "division by zero",
            Bytes::from_static(b"\"DivisionByZero\""),
        );
        let response = error_reply(StatusCode::INTERNAL_SERVER_ERROR, &status);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(http_body_util::BodyExt::collect(response.into_body()))
            .expect("a whole body in memory cannot fail")
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("a JSON body");
        assert_eq!(
            body,
            json!({"code": "UNKNOWN", "message": "division by zero", "error": "DivisionByZero"})
        );
    }
}
