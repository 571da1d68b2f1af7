//! [`Direct`]: calls to one address over a small pool of multiplexed
//! connections, reconnecting with jittered backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::Notify;

use super::ConnectError;
use super::config::ChannelConfig;
use super::connection::{CallError, Connection};
use super::options::CallOptions;
use crate::protocol::native::{Frame, FrameKind};
use crate::status::Status;

/// How often one call may move to a new connection because the one it
/// picked went away without processing it.
const MAX_DRAIN_RETRIES: usize = 3;

/// Why an attempt on one address failed.
pub(crate) enum AttemptError {
    /// Nothing reached the server (it could not be reached, or it refused
    /// the request unprocessed): another instance may be tried.
    NotSent(Status),
    /// The call failed, possibly after the server started on it.
    Failed(Status),
}

impl AttemptError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            AttemptError::NotSent(status) | AttemptError::Failed(status) => status,
        }
    }
}

/// One address, a pool of connections to it.
pub(crate) struct Direct {
    pub(crate) addr: String,
    pub(crate) config: ChannelConfig,
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

impl Direct {
    pub(crate) fn new(addr: String, config: ChannelConfig) -> Arc<Direct> {
        let slots = (0..config.pool_size).map(|_| Slot::default()).collect();
        Arc::new(Direct { addr, config, slots, next_slot: AtomicUsize::new(0) })
    }

    /// Send one call on a connection to this address. Calls the server
    /// provably never processed move to a fresh connection (at most
    /// `MAX_DRAIN_RETRIES` times).
    pub(crate) async fn attempt(
        self: &Arc<Self>,
        kind: FrameKind,
        method: &str,
        options: &CallOptions,
        deadline: Option<Instant>,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Option<Frame>, AttemptError> {
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.connection().await.map_err(AttemptError::NotSent)?;
            match connection
                .call(kind, method, options.codec(), deadline, options.metadata(), encode_body)
                .await
            {
                Ok(frame) => return Ok(frame),
                Err(CallError::Failed(status)) => return Err(AttemptError::Failed(status)),
                Err(CallError::Unprocessed) => continue,
            }
        }
        Err(AttemptError::NotSent(Status::unavailable(format!(
            "every connection to {} is shutting down",
            self.addr
        ))))
    }

    /// Establish the first slot's connection now.
    pub(crate) async fn connect_now(&self) -> Result<(), ConnectError> {
        let connection = Connection::connect(&self.addr, &self.config).await?;
        let slot = &self.slots[0];
        *lock(slot) = SlotState::Ready(Arc::new(connection));
        Ok(())
    }

    /// A usable connection, connecting (or waiting for a connect already
    /// under way) if needed.
    pub(crate) async fn connection(self: &Arc<Self>) -> Result<Arc<Connection>, Status> {
        let index = if self.slots.len() == 1 {
            0
        } else {
            self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len()
        };
        let slot = &self.slots[index];
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

    fn start_connect(self: &Arc<Self>, state: &mut SlotState, index: usize, failures: u32) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        *state = SlotState::Connecting(notify.clone());
        let inner = self.clone();
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
    inner: &'a Direct,
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
