//! One native-protocol connection on the server side.
//!
//! The reader (this task) decodes frames and starts a task per call; call
//! tasks encode their replies into the connection's [`WriteQueue`], which a
//! writer task flushes with coalesced writes. A call is tracked by call id so
//! that a cancel frame or the connection closing drops its handler.
//!
//! Graceful shutdown uses a goaway followed by a ping: because TCP keeps
//! order, once the pong comes back every request the client sent before it
//! saw the goaway has arrived. The connection then closes as soon as those
//! calls are answered (or the drain timeout passes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::ServerShared;
use super::call;
use crate::codec::Codec;
use crate::context::Context;
use crate::metadata::Metadata;
use crate::protocol::native::{
    Frame, FrameEncoder, FrameError, FrameKind, GoAway, PING_LEN, PREFACE, RequestHead, encode_ping,
};
use crate::status::{Code, Status};
use crate::transport::keepalive::{self, Keepalive};
use crate::transport::reader::{FrameReader, ReadError};
use crate::transport::tcp;
use crate::transport::write_queue::WriteQueue;

/// The ping body that marks the drain ping, so its pong is recognised.
const DRAIN_PING: [u8; PING_LEN] = *b"cdrain!!";
/// How long to linger reading after closing (see [`tcp::linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 32 * 1024 * 1024;

/// The state a connection shares with its call tasks.
struct Conn {
    queue: WriteQueue,
    calls: Mutex<HashMap<u32, AbortHandle>>,
    /// Signalled when the last in-flight call finishes.
    idle: Notify,
    max_frame_size: usize,
}

impl Conn {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u32, AbortHandle>> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn finish(&self, call_id: u32) {
        let mut calls = self.calls();
        calls.remove(&call_id);
        if calls.is_empty() {
            self.idle.notify_one();
        }
    }

    /// Reply to a call without starting it (routing and limit errors).
    fn reject(&self, call_id: u32, codec: Codec, status: Status) {
        let _ = self.queue.push_now(|buf| {
            call::encode_response(buf, call_id, codec, &Err(status), self.max_frame_size);
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
    /// A protocol violation or read error; the peer gets a goaway.
    Error(Code, String),
}

pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    shutdown: watch::Receiver<bool>,
) {
    tcp::configure(&stream);
    let (read, write) = stream.into_split();
    let config = &server.config;
    let mut reader = FrameReader::new(read, BytesMut::new(), config.max_frame_size);

    let conn = Arc::new(Conn {
        queue: WriteQueue::new(config.write_high_water),
        calls: Mutex::new(HashMap::new()),
        idle: Notify::new(),
        max_frame_size: config.max_frame_size,
    });

    match tokio::time::timeout(config.handshake_timeout, reader.read_preface()).await {
        Ok(Ok(())) => {}
        Ok(Err(ReadError::Frame(err @ FrameError::UnsupportedVersion(_)))) => {
            // A courier peer from another version: tell it why, politely.
            tracing::debug!(%peer, %err, "refusing connection");
            let _ = conn.queue.push_now(|buf| buf.extend_from_slice(&PREFACE));
            conn.goaway(0, Code::Unimplemented, &err.to_string());
            conn.queue.close();
            let _ = conn.queue.run_writer(write).await;
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

    let _ = conn.queue.push_now(|buf| buf.extend_from_slice(&PREFACE));
    let mut writer = tokio::spawn({
        let conn = conn.clone();
        async move { conn.queue.run_writer(write).await }
    });

    let end = read_loop(&mut reader, &conn, &server, peer, shutdown, &mut writer).await;
    match &end {
        End::PeerClosed | End::Drained => tracing::trace!(%peer, "connection closed"),
        End::DrainTimeout => tracing::info!(%peer, "drain timeout: cancelling calls still running"),
        End::KeepaliveTimeout => {
            tracing::info!(%peer, "closing connection: peer stopped answering pings")
        }
        End::WriteFailed => tracing::debug!(%peer, "closing connection: write failed"),
        End::Error(code, message) => {
            tracing::info!(%peer, %code, %message, "closing connection");
            conn.goaway(0, *code, message);
        }
    }

    // Whatever is still running belongs to a caller we will not answer.
    for (_, handle) in conn.calls().drain() {
        handle.abort();
    }
    conn.queue.close();
    if !matches!(end, End::WriteFailed) {
        // Let the writer flush the last replies and the goaway.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    }
    writer.abort();
    if matches!(end, End::Error(..) | End::DrainTimeout) {
        tcp::linger(reader.into_inner(), LINGER_TIME, LINGER_BYTES).await;
    }
}

async fn read_loop(
    reader: &mut FrameReader<OwnedReadHalf>,
    conn: &Arc<Conn>,
    server: &Arc<ServerShared>,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    writer: &mut tokio::task::JoinHandle<std::io::Result<()>>,
) -> End {
    let config = &server.config;
    let per_connection = super::limits::Limit::new(config.max_concurrent_calls_per_connection);
    let mut keepalive = config.keepalive_interval.map(|interval| Keepalive::new(interval, Instant::now()));
    let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
    let keepalive_timer =
        tokio::time::sleep_until(keepalive.as_ref().map_or(far_future, Keepalive::deadline).into());
    tokio::pin!(keepalive_timer);
    let drain_timer = tokio::time::sleep_until(far_future.into());
    tokio::pin!(drain_timer);

    let mut draining = *shutdown.borrow();
    let mut drain_acked = false;
    let mut last_call_id = 0u32;
    if draining {
        start_drain(conn, 0);
        drain_timer.as_mut().reset((Instant::now() + config.drain_timeout).into());
    }

    loop {
        // Biased, with the reader last: control events (shutdown, timers, a
        // dead writer) are cheap to check and must not starve behind a
        // client that keeps the read side busy.
        tokio::select! {
            biased;
            changed = shutdown.changed(), if !draining => {
                // A dropped sender means the server itself went away: drain too.
                let _ = changed;
                draining = true;
                start_drain(conn, last_call_id);
                drain_timer.as_mut().reset((Instant::now() + config.drain_timeout).into());
            }
            () = conn.idle.notified(), if drain_acked => {
                if conn.calls().is_empty() {
                    return End::Drained;
                }
            }
            () = &mut drain_timer, if draining => return End::DrainTimeout,
            () = &mut keepalive_timer, if keepalive.is_some() => {
                let Some(state) = keepalive.as_mut() else { continue };
                match state.poll(Instant::now(), reader.last_read()) {
                    keepalive::Action::Wait => {}
                    keepalive::Action::SendPing => {
                        let _ = conn.queue.push_now(|buf| encode_ping(buf, FrameKind::Ping, *b"ckeepalv"));
                    }
                    keepalive::Action::Dead => return End::KeepaliveTimeout,
                }
                keepalive_timer.as_mut().reset(state.deadline().into());
            }
            _ = &mut *writer => return End::WriteFailed,
            read = reader.next() => {
                let frame = match read {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return End::PeerClosed,
                    Err(ReadError::Frame(FrameError::TooLarge { call_id, kind, size, limit })) => {
                        let message = format!("frame of {size} bytes exceeds this server's limit of {limit} bytes");
                        if kind == FrameKind::Request as u8 {
                            conn.reject(call_id, Codec::default(), Status::resource_exhausted(message.clone()));
                        }
                        return End::Error(Code::ResourceExhausted, message);
                    }
                    Err(ReadError::Frame(err)) => return End::Error(Code::InvalidArgument, format!("protocol error: {err}")),
                    Err(ReadError::TruncatedFrame) => return End::PeerClosed,
                    Err(ReadError::Io(err)) => {
                        tracing::debug!(%peer, %err, "read failed");
                        return End::PeerClosed;
                    }
                };
                match frame.header.kind {
                    FrameKind::Request | FrameKind::OneWay => {
                        let call_id = frame.header.call_id;
                        if conn.calls().contains_key(&call_id) {
                            return End::Error(Code::InvalidArgument, format!("protocol error: call id {call_id} is already in flight"));
                        }
                        last_call_id = last_call_id.max(call_id);
                        if drain_acked {
                            conn.reject(call_id, Codec::default(), Status::unavailable("the server is shutting down"));
                            continue;
                        }
                        start_call(frame, conn, server, &per_connection, peer);
                    }
                    FrameKind::Cancel => {
                        let handle = conn.calls().remove(&frame.header.call_id);
                        if let Some(handle) = handle {
                            handle.abort();
                            if conn.calls().is_empty() {
                                conn.idle.notify_one();
                            }
                        }
                    }
                    FrameKind::Ping => {
                        let mut payload = [0u8; PING_LEN];
                        if frame.body.len() != PING_LEN {
                            return End::Error(Code::InvalidArgument, "protocol error: ping body must be 8 bytes".into());
                        }
                        payload.copy_from_slice(&frame.body);
                        let _ = conn.queue.push_now(|buf| encode_ping(buf, FrameKind::Pong, payload));
                    }
                    FrameKind::Pong => {
                        if draining && frame.body[..] == DRAIN_PING {
                            drain_acked = true;
                            if conn.calls().is_empty() {
                                return End::Drained;
                            }
                        }
                    }
                    FrameKind::GoAway => {
                        // The client is leaving; it will close once its calls
                        // are answered, which ends this loop with PeerClosed.
                    }
                    FrameKind::Response => {
                        return End::Error(Code::InvalidArgument, "protocol error: a client sent a response frame".into());
                    }
                }
            }
        }
    }
}

fn start_drain(conn: &Conn, last_call_id: u32) {
    conn.goaway(last_call_id, Code::Ok, "the server is shutting down");
    let _ = conn.queue.push_now(|buf| encode_ping(buf, FrameKind::Ping, DRAIN_PING));
}

fn start_call(
    frame: Frame,
    conn: &Arc<Conn>,
    server: &Arc<ServerShared>,
    per_connection: &Arc<super::limits::Limit>,
    peer: SocketAddr,
) {
    let call_id = frame.header.call_id;
    let one_way = frame.header.kind == FrameKind::OneWay;
    let reject = |codec: Codec, status: Status| {
        if one_way {
            tracing::debug!(%peer, %status, "dropping one-way call");
        } else {
            conn.reject(call_id, codec, status);
        }
    };
    let Some(codec) = Codec::from_id(frame.header.codec) else {
        reject(
            Codec::default(),
            Status::invalid_argument(format!("unknown codec id {}", frame.header.codec)),
        );
        return;
    };
    let head = match RequestHead::decode(&frame.meta) {
        Ok(head) => head,
        Err(err) => {
            reject(codec, Status::invalid_argument(format!("malformed request metadata: {err}")));
            return;
        }
    };
    let route = match server.router.route(head.method) {
        Ok(route) => route.clone(),
        Err(status) => {
            reject(codec, status);
            return;
        }
    };
    let Some(connection_permit) = per_connection.try_acquire() else {
        reject(
            codec,
            Status::resource_exhausted(format!(
                "too many concurrent calls on this connection (limit {})",
                per_connection.max()
            )),
        );
        return;
    };
    let Some(server_permit) = server.limit.try_acquire() else {
        reject(
            codec,
            Status::resource_exhausted(format!(
                "the server is at its limit of {} concurrent calls",
                server.limit.max()
            )),
        );
        return;
    };
    let deadline = head.deadline.map(|remaining| Instant::now() + remaining);
    let metadata: Metadata = head.headers.collect();
    let cx = Context::new(route.method.full_name, codec)
        .with_deadline(deadline)
        .with_metadata(metadata)
        .with_peer(Some(peer));
    let body: Bytes = frame.body;
    let handler = route.service.call(route.index, cx, body);

    let task_conn = conn.clone();
    let max_frame_size = conn.max_frame_size;
    // Hold the map's lock across the spawn so the task cannot finish (and
    // remove itself) before it is inserted.
    let mut calls = conn.calls();
    let task = tokio::spawn(async move {
        let _permits = (connection_permit, server_permit);
        let outcome = call::run(handler, deadline).await;
        if !one_way {
            let _ = task_conn
                .queue
                .push(|buf| call::encode_response(buf, call_id, codec, &outcome, max_frame_size))
                .await;
        } else if let Err(status) = &outcome {
            tracing::debug!(%status, "one-way call failed");
        }
        task_conn.finish(call_id);
    });
    calls.insert(call_id, task.abort_handle());
}
