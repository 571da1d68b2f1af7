//! [`Channel`]: calls to one address over a small pool of multiplexed
//! connections, reconnecting with backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::ConnectError;
use super::config::{ChannelBuilder, ChannelConfig};
use super::connection::{CallError, Connection};
use super::options::CallOptions;
use crate::codec::Codec;
use crate::protocol::native::{Frame, FrameKind, ResponseHead};
use crate::status::{Code, Status};

/// How often one call may move to a new connection because the one it
/// picked went away without processing it.
const MAX_DRAIN_RETRIES: usize = 3;

/// A handle for calling services at one address. Cheap to clone; clones
/// share connections.
///
/// Connections are opened lazily and re-opened after failures, waiting a
/// jittered, growing delay between failed attempts. While a reconnect is
/// backing off, calls fail fast with `Unavailable` rather than queueing.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    config: ChannelConfig,
    slots: Box<[Slot]>,
    next_slot: AtomicUsize,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Idle,
    /// An attempt is running; waiters are woken when it ends.
    Connecting(Arc<Notify>),
    Ready(Arc<Connection>),
    /// The last attempts failed; the next may start at `retry_at`.
    Failed {
        error: Status,
        retry_at: Instant,
        failures: u32,
    },
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

impl Channel {
    /// Configure a channel to `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder::new(addr)
    }

    /// A channel with default settings that connects on its first call.
    pub fn lazy(addr: impl Into<String>) -> Channel {
        ChannelBuilder::new(addr).build_lazy()
    }

    /// A channel with default settings, connected now.
    pub async fn connect(addr: impl Into<String>) -> Result<Channel, ConnectError> {
        ChannelBuilder::new(addr).connect().await
    }

    pub(crate) fn from_builder(builder: ChannelBuilder) -> Channel {
        let slots = (0..builder.config.pool_size).map(|_| Slot::default()).collect();
        Channel {
            inner: Arc::new(Inner {
                addr: builder.addr,
                config: builder.config,
                slots,
                next_slot: AtomicUsize::new(0),
            }),
        }
    }

    /// The address this channel calls.
    pub fn target(&self) -> &str {
        &self.inner.addr
    }

    /// Call `method` (`Service.Method`) with `request`, decoding the reply
    /// as `Resp`. Generated clients call this.
    pub async fn unary<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let codec = options.codec();
        let frame = self
            .send(FrameKind::Request, method, options, |buf| {
                codec.encode(request, buf).map_err(|err| {
                    Status::invalid_argument(format!("could not encode the request to {method}: {err}"))
                })
            })
            .await?;
        let frame = reply_frame(frame, method)?;
        let body = reply_body(&frame, codec, method)?;
        codec
            .decode(&body)
            .map_err(|err| Status::internal(format!("could not decode the response of {method}: {err}")))
    }

    /// Call `method` with already-encoded arguments; returns the encoded
    /// result. For proxies and tools that do not know the types.
    pub async fn unary_bytes(
        &self,
        method: &str,
        body: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, Status> {
        let frame = self
            .send(FrameKind::Request, method, options, |buf| {
                buf.extend_from_slice(&body);
                Ok(())
            })
            .await?;
        let frame = reply_frame(frame, method)?;
        reply_body(&frame, options.codec(), method)
    }

    /// Send a one-way call: returns once the request is queued for sending;
    /// the server runs it and replies with nothing, not even an error.
    pub async fn one_way<Req>(&self, method: &str, request: &Req, options: &CallOptions) -> Result<(), Status>
    where
        Req: Serialize + ?Sized,
    {
        let codec = options.codec();
        self.send(FrameKind::OneWay, method, options, |buf| {
            codec.encode(request, buf).map_err(|err| {
                Status::invalid_argument(format!("could not encode the request to {method}: {err}"))
            })
        })
        .await
        .map(|_| ())
    }

    async fn send(
        &self,
        kind: FrameKind,
        method: &str,
        options: &CallOptions,
        encode_body: impl Fn(&mut bytes::BytesMut) -> Result<(), Status>,
    ) -> Result<Option<Frame>, Status> {
        // A timeout too long to represent is no timeout.
        let deadline = options.timeout().and_then(|timeout| Instant::now().checked_add(timeout));
        let attempt = async {
            // A request the server provably never processed (its connection
            // began draining first, or closed for an error before reaching
            // it) goes to a fresh connection. Bounded, in case every new
            // connection is refused the same way.
            for _ in 0..MAX_DRAIN_RETRIES {
                let connection = self.connection().await?;
                match connection
                    .call(kind, method, options.codec(), deadline, options.metadata(), &encode_body)
                    .await
                {
                    Ok(frame) => return Ok(frame),
                    Err(CallError::Failed(status)) => return Err(status),
                    Err(CallError::Unprocessed) => continue,
                }
            }
            Err(Status::unavailable(format!("every connection to {} is shutting down", self.inner.addr)))
        };
        let Some(deadline) = deadline else {
            return attempt.await;
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{method} did not complete within its {:?} timeout",
                options.timeout().unwrap_or_default()
            ))),
        }
    }

    /// Establish the first slot's connection now.
    pub(crate) async fn connect_now(&self) -> Result<(), ConnectError> {
        let connection = Connection::connect(&self.inner.addr, &self.inner.config).await?;
        let slot = &self.inner.slots[0];
        *lock(slot) = SlotState::Ready(Arc::new(connection));
        Ok(())
    }

    /// A usable connection, connecting (or waiting for a connect already
    /// under way) if needed.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Status> {
        let index = if self.inner.slots.len() == 1 {
            0
        } else {
            self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len()
        };
        let slot = &self.inner.slots[index];
        loop {
            let notify = {
                let mut state = lock(slot);
                match &*state {
                    SlotState::Ready(connection) if connection.is_usable() => {
                        return Ok(connection.clone());
                    }
                    // The connection worked before, so reconnect at once.
                    SlotState::Ready(_) | SlotState::Idle => self.start_connect(&mut state, index, 0),
                    SlotState::Connecting(notify) => notify.clone(),
                    SlotState::Failed { error, retry_at, .. } if Instant::now() < *retry_at => {
                        let wait = retry_at.saturating_duration_since(Instant::now());
                        return Err(Status::new(
                            error.code(),
                            format!("{} (next attempt in {} ms)", error.message(), wait.as_millis()),
                        ));
                    }
                    SlotState::Failed { failures, .. } => {
                        let failures = *failures;
                        self.start_connect(&mut state, index, failures)
                    }
                }
            };
            // Register for the wake-up first, then re-check: the connect task
            // updates the state before notifying, so either the re-check
            // sees its result or the notification reaches us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if matches!(&*lock(slot), SlotState::Connecting(n) if Arc::ptr_eq(n, &notify)) {
                notified.await;
            }
        }
    }

    fn start_connect(&self, state: &mut SlotState, index: usize, failures: u32) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        *state = SlotState::Connecting(notify.clone());
        let inner = self.inner.clone();
        let done = notify.clone();
        tokio::spawn(async move {
            // If this task is dropped mid-attempt (its runtime shut down),
            // the slot must not stay `Connecting` with waiters asleep forever.
            let mut reset = ResetOnDrop { inner: &inner, index, notify: &done, armed: true };
            let outcome = Connection::connect(&inner.addr, &inner.config).await;
            reset.armed = false;
            let slot = &inner.slots[index];
            {
                let mut state = lock(slot);
                *state = match outcome {
                    Ok(connection) => SlotState::Ready(Arc::new(connection)),
                    Err(err) => {
                        let failures = failures.saturating_add(1);
                        let delay = inner.config.backoff.delay(failures, fastrand::f64());
                        tracing::debug!(addr = %inner.addr, %err, ?delay, "connect failed");
                        SlotState::Failed {
                            error: Status::from(err),
                            retry_at: Instant::now().checked_add(delay).unwrap_or_else(Instant::now),
                            failures,
                        }
                    }
                };
            }
            done.notify_waiters();
        });
        notify
    }
}

struct ResetOnDrop<'a> {
    inner: &'a Inner,
    index: usize,
    notify: &'a Notify,
    armed: bool,
}

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            *lock(&self.inner.slots[self.index]) = SlotState::Idle;
            self.notify.notify_waiters();
        }
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, SlotState> {
    slot.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reply_frame(frame: Option<Frame>, method: &str) -> Result<Frame, Status> {
    frame.ok_or_else(|| Status::internal(format!("no response frame for {method}")))
}

/// The body of a successful reply, or the status the server sent.
fn reply_body(frame: &Frame, codec: Codec, method: &str) -> Result<Bytes, Status> {
    let head = ResponseHead::decode(&frame.meta)
        .map_err(|err| Status::internal(format!("malformed response to {method}: {err}")))?;
    if head.code != 0 {
        let code = Code::from_u32(head.code);
        let details = Bytes::copy_from_slice(head.details);
        return Err(if head.application_error {
            Status::application(code, head.message, details)
        } else {
            Status::new(code, head.message).with_details(details)
        });
    }
    if frame.header.codec != codec.id() {
        return Err(Status::internal(format!(
            "the response to {method} used codec {} but the call used {codec}",
            frame.header.codec
        )));
    }
    Ok(frame.body.clone())
}
