//! [`Pool`]: a few connections to one address, opened lazily and reopened
//! after failures with jittered backoff. The native client and the gRPC
//! client share it; each brings its own connection type ([`Connect`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::error::ConnectError;
use super::settings::ChannelConfig;
use crate::service::BoxFuture;
use crate::status::Status;

/// A connection a [`Pool`] can open and check.
pub(crate) trait Connect: Send + Sync + Sized + 'static {
    /// What else a connection needs to know beyond the channel's settings
    /// (the Go client: which of Go's wires it speaks).
    type Options: Clone + Send + Sync + 'static;
    /// Open a connection to `addr`.
    fn connect(
        addr: String,
        config: ChannelConfig,
        options: Self::Options,
    ) -> BoxFuture<'static, Result<Self, ConnectError>>;
    /// Whether new calls may use it.
    fn is_usable(&self) -> bool;
}

/// One address, a pool of connections to it.
pub(crate) struct Pool<C: Connect> {
    pub(crate) addr: String,
    pub(crate) config: ChannelConfig,
    options: C::Options,
    slots: Box<[Slot<C>]>,
    next_slot: AtomicUsize,
}

struct Slot<C> {
    state: Mutex<SlotState<C>>,
}

enum SlotState<C> {
    Idle,
    /// An attempt is running; waiters are woken when it ends.
    Connecting(Arc<Notify>),
    Ready(Arc<C>),
    /// The last attempts failed; the next may start at `retry_at`.
    Failed {
        error: Status,
        retry_at: Instant,
        failures: u32,
    },
}

impl<C: Connect> Pool<C> {
    pub(crate) fn new(addr: String, config: ChannelConfig, options: C::Options) -> Pool<C> {
        let slots = (0..config.pool_size).map(|_| Slot { state: Mutex::new(SlotState::Idle) }).collect();
        Pool { addr, config, options, slots, next_slot: AtomicUsize::new(0) }
    }

    /// Establish the first slot's connection now.
    pub(crate) async fn connect_now(&self) -> Result<(), ConnectError> {
        let connection = C::connect(self.addr.clone(), self.config.clone(), self.options.clone()).await?;
        *lock(&self.slots[0]) = SlotState::Ready(Arc::new(connection));
        Ok(())
    }

    /// A usable connection, connecting (or waiting for a connect already
    /// under way) if needed.
    pub(crate) async fn connection(self: &Arc<Self>) -> Result<Arc<C>, Status> {
        let index = if self.slots.len() == 1 {
            0
        } else {
            self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len()
        };
        let slot = &self.slots[index];
        // A caller that waited for an attempt gets that attempt's error; the
        // retry hint is for callers turned away during the backoff.
        let mut waited = false;
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
                    SlotState::Failed { error, .. } if waited => return Err(error.clone()),
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
            waited = true;
        }
    }

    fn start_connect(self: &Arc<Self>, state: &mut SlotState<C>, index: usize, failures: u32) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        *state = SlotState::Connecting(notify.clone());
        let inner = self.clone();
        let done = notify.clone();
        tokio::spawn(async move {
            // If this task is dropped mid-attempt (its runtime shut down),
            // the slot must not stay `Connecting` with waiters asleep forever.
            let mut reset = ResetOnDrop { inner: &inner, index, notify: &done, armed: true };
            let outcome = C::connect(inner.addr.clone(), inner.config.clone(), inner.options.clone()).await;
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

struct ResetOnDrop<'a, C: Connect> {
    inner: &'a Pool<C>,
    index: usize,
    notify: &'a Notify,
    armed: bool,
}

impl<C: Connect> Drop for ResetOnDrop<'_, C> {
    fn drop(&mut self) {
        if self.armed {
            *lock(&self.inner.slots[self.index]) = SlotState::Idle;
            self.notify.notify_waiters();
        }
    }
}

fn lock<C>(slot: &Slot<C>) -> std::sync::MutexGuard<'_, SlotState<C>> {
    slot.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
