//! JSON-RPC 1.0 connections, as Go's `net/rpc/jsonrpc` clients expect.
//!
//! The connection's task reads requests (see [`crate::protocol::jsonrpc`]),
//! starts each as a task of its own, so pipelined requests run
//! concurrently as they do in Go's server, and replies go out in the order
//! they finish through one writer task, which gathers every reply ready
//! into one write. A request that cannot be served is answered with an
//! error and the connection goes on; bytes that are not a stream of JSON
//! objects end it, after an error reply with a null id (Go's server closes
//! too: it cannot tell where the next request starts).
//!
//! Arguments: Go sends one parameter, the argument struct; it becomes the
//! method's arguments as they are (one argument, or an object of named
//! arguments); as many parameters as the method has arguments fill them
//! in order. Field names match ignoring case when no field matches exactly,
//! as Go's decoder does (see [`crate::codec::lenient`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::limits::Limit;
use super::{ServerShared, call};
use crate::codec::Codec;
use crate::context::Context;
use crate::protocol::jsonrpc::{Request, Splitter, encode_response, parse_request};
use crate::service::ArgDescriptor;
use crate::status::Status;
use crate::transport::tcp;

/// Replies waiting for the writer; past this, calls wait to hand theirs
/// over and the reader stops taking requests (the peer is not reading).
const REPLY_QUEUE: usize = 1024;
/// How long the last replies may take to flush when the connection ends.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Serve one JSON-RPC connection.
pub(crate) async fn serve(
    stream: TcpStream,
    sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut read, write) = stream.into_split();
    let (replies, queued) = mpsc::channel::<Vec<u8>>(REPLY_QUEUE);
    let writer = tokio::spawn(write_replies(write, queued));
    let config = &server.config;
    let per_connection = Limit::new(config.max_concurrent_calls_per_connection);
    let mut buf = sniffed;
    let mut splitter = Splitter::default();
    let mut calls = JoinSet::new();
    let mut reading = true;
    let mut stream_failed = false;
    let mut drain_deadline = None;
    loop {
        while reading {
            match splitter.next_object(&buf, config.max_frame_size) {
                Ok(Some((start, end))) => {
                    let request = buf.split_to(end);
                    splitter.consumed(end);
                    match parse_request(&request[start..]) {
                        Ok(request) => {
                            start_call(
                                request,
                                &server,
                                &per_connection,
                                &replies,
                                &mut calls,
                                peer,
                                &shutdown,
                            )
                            .await;
                        }
                        Err((err, id)) => {
                            let _ = replies.send(encode_response(&id, Err(&err.to_string()))).await;
                        }
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%peer, %err, "closing JSON-RPC connection");
                    let _ = replies.send(encode_response(&Value::Null, Err(&err.to_string()))).await;
                    reading = false;
                    stream_failed = true;
                }
            }
        }
        if !reading && calls.is_empty() {
            break;
        }
        let drain = async {
            match drain_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read_result = read.read_buf(&mut buf), if reading => match read_result {
                // The client is done sending: answer what it asked, then close.
                Ok(0) => reading = false,
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(%peer, %err, "JSON-RPC connection failed");
                    calls.abort_all();
                    break;
                }
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            changed = shutdown.changed(), if drain_deadline.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    // Take no more requests; finish the ones started.
                    reading = false;
                    drain_deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
                }
            }
            () = drain => {
                tracing::info!(%peer, "drain timeout: cancelling JSON-RPC calls still running");
                calls.abort_all();
                break;
            }
        }
    }
    while calls.join_next().await.is_some() {}
    drop(replies);
    if let Ok(Err(err)) =
        tokio::time::timeout(FLUSH_GRACE, writer).await.map(|joined| joined.unwrap_or(Ok(())))
    {
        tracing::debug!(%peer, %err, "could not send the last JSON-RPC replies");
    }
    if stream_failed {
        // Let the error reply arrive before the close (see `tcp::linger`).
        tcp::linger(read, Duration::from_secs(2), 1 << 20).await;
    }
}

/// Write replies as they come, every reply ready in one write.
async fn write_replies(
    mut write: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut batch = Vec::new();
    while let Some(reply) = queued.recv().await {
        batch.clear();
        batch.extend_from_slice(&reply);
        while let Ok(more) = queued.try_recv() {
            batch.extend_from_slice(&more);
        }
        write.write_all(&batch).await?;
    }
    write.shutdown().await
}

/// Check a request and start it, or answer it with why not.
async fn start_call(
    request: Request,
    server: &Arc<ServerShared>,
    per_connection: &Arc<Limit>,
    replies: &mpsc::Sender<Vec<u8>>,
    calls: &mut JoinSet<()>,
    peer: SocketAddr,
    shutdown: &watch::Receiver<bool>,
) {
    let Request { method, params, id } = request;
    let admitted = (|| {
        let route = server.router.route(&method)?.clone();
        let body = arguments(route.method.args, params)?;
        let connection_permit = per_connection.try_acquire().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many concurrent calls on this connection (limit {})",
                per_connection.max()
            ))
        })?;
        let server_permit = server.limit.try_acquire().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "the server is at its limit of {} concurrent calls",
                server.limit.max()
            ))
        })?;
        Ok::<_, Status>((route, body, (connection_permit, server_permit)))
    })();
    let (route, body, permits) = match admitted {
        Ok(admitted) => admitted,
        Err(status) => {
            let _ = replies.send(encode_response(&id, Err(error_text(&status)))).await;
            return;
        }
    };
    let cx = Context::new(route.method.full_name, Codec::Json)
        .with_lenient_json()
        .with_peer(Some(peer))
        .with_shutdown(shutdown.clone());
    let handler = route.service.call(route.index, cx, body.into());
    let replies = replies.clone();
    calls.spawn(async move {
        let _permits = permits;
        let outcome = call::run(handler, None, None).await;
        let reply = match &outcome {
            Ok(result) => encode_response(&id, Ok(result)),
            Err(status) => encode_response(&id, Err(error_text(status))),
        };
        let _ = replies.send(reply).await;
    });
}

/// The method's arguments from the request's parameters.
fn arguments(args: &[ArgDescriptor], mut params: Vec<Value>) -> Result<Vec<u8>, Status> {
    let value = match (args.len(), params.len()) {
        // Go always sends one parameter; a method with none takes `{}`.
        (0, 0) => Value::Object(Map::new()),
        (0, 1) if params[0].is_null() || params[0].as_object().is_some_and(Map::is_empty) => {
            Value::Object(Map::new())
        }
        (_, 1) => params.remove(0),
        // Positional: one parameter per argument, in order.
        (n, given) if n > 1 && given == n => {
            Value::Object(args.iter().map(|arg| arg.name.to_owned()).zip(params).collect())
        }
        (n, given) => {
            return Err(Status::invalid_argument(format!(
                "expected one parameter (the method's {n} argument{}), got {given}",
                if n == 1 { "" } else { "s" }
            )));
        }
    };
    serde_json::to_vec(&value).map_err(|err| Status::invalid_argument(err.to_string()))
}

/// The error text Go's clients show: the status message.
fn error_text(status: &Status) -> &str {
    if status.message().is_empty() { status.code().grpc_name() } else { status.message() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NONE: &[ArgDescriptor] = &[];
    const ONE: &[ArgDescriptor] = &[ArgDescriptor { name: "text", ty: "String" }];
    const TWO: &[ArgDescriptor] =
        &[ArgDescriptor { name: "a", ty: "i64" }, ArgDescriptor { name: "b", ty: "i64" }];

    #[test]
    fn go_style_parameters_become_arguments() {
        assert_eq!(arguments(TWO, vec![json!({"A": 1, "B": 2})]).expect("one object"), br#"{"A":1,"B":2}"#);
        assert_eq!(arguments(TWO, vec![json!(1), json!(2)]).expect("positional"), br#"{"a":1,"b":2}"#);
        assert_eq!(arguments(ONE, vec![json!("hi")]).expect("one value"), br#""hi""#);
        assert_eq!(arguments(NONE, vec![]).expect("nothing"), b"{}");
        assert_eq!(arguments(NONE, vec![json!({})]).expect("empty object"), b"{}");
        assert!(arguments(ONE, vec![]).is_err());
        assert!(arguments(ONE, vec![json!(1), json!(2)]).is_err());
        assert!(arguments(TWO, vec![json!(1), json!(2), json!(3)]).is_err());
    }
}
