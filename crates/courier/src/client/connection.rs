//! One native-protocol connection on the client side.
//!
//! Callers register a call id in the pending table, encode their request
//! straight into the shared [`WriteQueue`], and wait on a oneshot. A reader
//! task routes each response frame to its caller by call id (decoding is
//! left to the caller's task, keeping the reader lean), answers pings,
//! sends keepalive pings, and on any failure fails every pending call with
//! `Unavailable` so nobody hangs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, oneshot};

use super::ConnectError;
use super::config::ChannelConfig;
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::native::{
    Frame, FrameEncoder, FrameKind, GoAway, PING_LEN, PREFACE, RequestHead, encode_cancel, encode_ping,
};
use crate::status::{Code, Status};
use crate::transport::keepalive::{self, Keepalive};
use crate::transport::reader::{FrameReader, ReadError};
use crate::transport::tcp;
use crate::transport::write_queue::WriteQueue;

type Reply = Result<Frame, Status>;

#[derive(Default)]
struct Pending {
    calls: HashMap<u32, oneshot::Sender<Reply>>,
    /// Set once the connection is dead; later calls fail with it.
    closed: Option<Status>,
}

struct Shared {
    queue: WriteQueue,
    pending: Mutex<Pending>,
    next_id: AtomicU32,
    /// The server sent a goaway: finish what is in flight, start nothing new.
    draining: AtomicBool,
    /// Tells the reader task to stop (the last user dropped the connection).
    stop: Notify,
    max_frame_size: usize,
    peer: SocketAddr,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fail every pending call and refuse new ones.
    fn close(&self, status: Status) {
        let calls = {
            let mut pending = self.pending();
            pending.closed.get_or_insert(status.clone());
            std::mem::take(&mut pending.calls)
        };
        for (_, caller) in calls {
            let _ = caller.send(Err(status.clone()));
        }
        self.queue.close();
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
    /// Dial, exchange prefaces, and start the reader and writer tasks.
    pub(crate) async fn connect(addr: &str, config: &ChannelConfig) -> Result<Connection, ConnectError> {
        let timeout = config.connect_timeout;
        let attempt = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Io { addr: addr.to_owned(), source })?;
            tcp::configure(&stream);
            let peer =
                stream.peer_addr().map_err(|source| ConnectError::Io { addr: addr.to_owned(), source })?;
            let (read, write) = stream.into_split();
            let shared = Arc::new(Shared {
                queue: WriteQueue::new(config.write_high_water),
                pending: Mutex::new(Pending::default()),
                next_id: AtomicU32::new(1),
                draining: AtomicBool::new(false),
                stop: Notify::new(),
                max_frame_size: config.max_frame_size,
                peer,
            });
            let _ = shared.queue.push_now(|buf| buf.extend_from_slice(&PREFACE));
            tokio::spawn({
                let shared = shared.clone();
                async move {
                    if let Err(err) = shared.queue.run_writer(write).await {
                        shared.close(Status::unavailable(format!(
                            "connection to {} failed: {err}",
                            shared.peer
                        )));
                    }
                }
            });
            let mut reader = FrameReader::new(read, BytesMut::new(), config.max_frame_size);
            if let Err(err) = reader.read_preface().await {
                shared.close(Status::unavailable("handshake failed"));
                return Err(ConnectError::Handshake { addr: addr.to_owned(), reason: err.to_string() });
            }
            tokio::spawn(read_loop(shared.clone(), reader, config.keepalive_interval));
            Ok(Connection { shared })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout { addr: addr.to_owned(), timeout }),
        }
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
        encode_body: impl FnOnce(&mut BytesMut) -> Result<(), Status>,
    ) -> Result<Option<Frame>, Status> {
        let shared = &self.shared;
        let call_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut guard = CallGuard { shared, call_id, sent: false, done: false };
        let reply = if kind == FrameKind::Request {
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = shared.pending();
                if let Some(status) = &pending.closed {
                    return Err(status.clone());
                }
                pending.calls.insert(call_id, tx);
            }
            Some(rx)
        } else {
            None
        };

        let max_frame_size = shared.max_frame_size;
        let queued = shared
            .queue
            .push(|buf| {
                let mut frame = FrameEncoder::begin(buf, kind, codec.id(), call_id);
                let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                RequestHead::encode(buf, method, remaining, metadata.iter());
                frame.end_meta(buf);
                if let Err(status) = encode_body(buf) {
                    frame.abandon(buf);
                    return Err(status);
                }
                frame.finish(buf, max_frame_size).map_err(|err| {
                    Status::resource_exhausted(format!("the request to {method} is too large to send: {err}"))
                })
            })
            .await;
        match queued {
            Ok(Ok(())) => guard.sent = true,
            Ok(Err(status)) => return Err(status),
            Err(_closed) => return Err(self.closed_status()),
        }

        let Some(rx) = reply else {
            guard.done = true;
            return Ok(None);
        };
        let reply = rx.await;
        guard.done = true;
        match reply {
            Ok(Ok(frame)) => Ok(Some(frame)),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(self.closed_status()),
        }
    }

    fn closed_status(&self) -> Status {
        self.shared
            .pending()
            .closed
            .clone()
            .unwrap_or_else(|| Status::unavailable(format!("the connection to {} closed", self.shared.peer)))
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

async fn read_loop(
    shared: Arc<Shared>,
    mut reader: FrameReader<OwnedReadHalf>,
    keepalive_interval: Option<Duration>,
) {
    let peer = shared.peer;
    let mut keepalive = keepalive_interval.map(|interval| Keepalive::new(interval, Instant::now()));
    let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(keepalive.as_ref().map_or(far_future, Keepalive::deadline).into());
    tokio::pin!(timer);
    // The goaway's reason, used to explain the close that follows it.
    let mut goaway_reason: Option<Status> = None;

    let status = loop {
        tokio::select! {
            biased;
            () = shared.stop.notified() => break Status::unavailable("the connection was closed by the client"),
            () = &mut timer, if keepalive.is_some() => {
                let Some(state) = keepalive.as_mut() else { continue };
                match state.poll(Instant::now(), reader.last_read()) {
                    keepalive::Action::Wait => {}
                    keepalive::Action::SendPing => {
                        let _ = shared.queue.push_now(|buf| encode_ping(buf, FrameKind::Ping, *b"ckeepalv"));
                    }
                    keepalive::Action::Dead => {
                        break Status::unavailable(format!(
                            "the server at {peer} stopped responding (no answer to a keepalive ping)"
                        ));
                    }
                }
                timer.as_mut().reset(state.deadline().into());
            }
            read = reader.next() => match read {
                Ok(Some(frame)) => match frame.header.kind {
                    FrameKind::Response => {
                        let caller = shared.pending().calls.remove(&frame.header.call_id);
                        if let Some(caller) = caller {
                            let _ = caller.send(Ok(frame));
                        }
                    }
                    FrameKind::Ping => {
                        if let Ok(payload) = <[u8; PING_LEN]>::try_from(&frame.body[..]) {
                            let _ = shared.queue.push_now(|buf| encode_ping(buf, FrameKind::Pong, payload));
                        } else {
                            break Status::internal(format!("protocol error from {peer}: ping body must be 8 bytes"));
                        }
                    }
                    FrameKind::Pong => {}
                    FrameKind::GoAway => {
                        shared.draining.store(true, Ordering::Release);
                        match GoAway::decode(&frame.meta) {
                            Ok(goaway) if goaway.code != 0 => {
                                goaway_reason = Some(Status::new(
                                    Code::Unavailable,
                                    format!("the server at {peer} closed the connection: {}", goaway.message),
                                ));
                            }
                            Ok(_) => tracing::debug!(%peer, "server is shutting down; draining connection"),
                            Err(err) => break Status::internal(format!("protocol error from {peer}: {err}")),
                        }
                    }
                    FrameKind::Request | FrameKind::OneWay | FrameKind::Cancel => {
                        break Status::internal(format!("protocol error from {peer}: unexpected {:?} frame", frame.header.kind));
                    }
                },
                Ok(None) => {
                    break goaway_reason.take().unwrap_or_else(|| {
                        Status::unavailable(format!("the server at {peer} closed the connection"))
                    });
                }
                Err(ReadError::Io(err)) => {
                    break goaway_reason.take().unwrap_or_else(|| {
                        Status::unavailable(format!("the connection to {peer} failed: {err}"))
                    });
                }
                Err(err) => break Status::unavailable(format!("the connection to {peer} failed: {err}")),
            }
        }
    };
    tracing::debug!(%peer, %status, "client connection closed");
    shared.close(status);
}
