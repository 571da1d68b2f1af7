//! `mem://`: an in-process registry on the shared [`Store`].
//!
//! A background task expires leases; each watch runs a small task that sends
//! the store's events to the watcher and sleeps until its service changes.
//! The tasks hold only weak references, so dropping every handle to the
//! registry ends them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use super::store::{Outcome, Store};
use super::{Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchStream};
use crate::service::BoxFuture;

/// Events buffered per watcher before it is considered too slow.
const WATCH_BUFFER: usize = 256;

pub(crate) struct MemRegistry {
    shared: Arc<Shared>,
}

/// Shared by the handle, the expiry task and the watch tasks.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// One per watched service, woken when its event log grows.
    changed: Mutex<HashMap<String, Arc<Notify>>>,
    /// Wakes the expiry task when a lease may now expire sooner.
    expiry: Notify,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    pub(crate) fn new(store: Store) -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::new(store),
            changed: Mutex::new(HashMap::new()),
            expiry: Notify::new(),
        })
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_for(&self, service: &str) -> Arc<Notify> {
        let mut changed = self.changed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        changed.entry(service.to_owned()).or_default().clone()
    }

    /// Wake the watchers of every service an outcome touched.
    pub(crate) fn publish(&self, outcome: &Outcome) {
        for service in &outcome.touched {
            self.notify_for(service).notify_waiters();
        }
    }

    pub(crate) fn register(
        &self,
        instance: Instance,
        ttl: Duration,
    ) -> Result<(Lease, Outcome), RegistryError> {
        let (service, instance_id) = (instance.service.clone(), instance.id.clone());
        let (id, outcome) = self.store().register(instance, ttl, Instant::now(), unix_ms())?;
        self.expiry.notify_one();
        Ok((Lease { id, ttl, service, instance_id }, outcome))
    }

    pub(crate) fn keep_alive(&self, lease: u64) -> Result<Duration, RegistryError> {
        Ok(self.store().keep_alive(lease, Instant::now())?)
    }

    pub(crate) fn revoke(&self, lease: u64) -> Result<Outcome, RegistryError> {
        Ok(self.store().revoke(lease)?)
    }

    /// Events for a watcher at `after`, waiting up to `wait` for some.
    pub(crate) async fn wait_events(
        &self,
        service: &str,
        after: Option<Revision>,
        wait: Duration,
    ) -> Vec<super::WatchEvent> {
        let notify = self.notify_for(service);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let events = self.store().events_after(service, after);
            if !events.is_empty() {
                return events;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Run the expiry loop until the registry is dropped. `persist` sees
    /// every outcome first (the registry server writes it to disk).
    pub(crate) async fn expire_forever(weak: Weak<Shared>, persist: impl Fn(&Outcome)) {
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let wake = shared.expiry.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let (outcome, next) = shared.store().expire(Instant::now());
            if !outcome.changes.is_empty() {
                persist(&outcome);
                shared.publish(&outcome);
            }
            // Wake at least once a second, so a dropped registry is noticed
            // (the strong reference held here ends with this iteration).
            let sleep_for =
                next.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(Instant::now()));
            let _ = tokio::time::timeout(sleep_for.min(Duration::from_secs(1)), wake).await;
        }
    }
}

impl MemRegistry {
    pub(crate) fn new() -> MemRegistry {
        let shared = Shared::new(Store::new());
        tokio::spawn(Shared::expire_forever(Arc::downgrade(&shared), |_| {}));
        MemRegistry { shared }
    }
}

/// Feed a watcher from `shared` until it hangs up or the registry is gone.
pub(crate) fn spawn_watch(shared: &Arc<Shared>, service: &str, after: Option<Revision>) -> WatchStream {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let weak = Arc::downgrade(shared);
    let service = service.to_owned();
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let events = tokio::select! {
                events = shared.wait_events(&service, after, Duration::from_secs(1)) => events,
                () = tx.closed() => return,
            };
            drop(shared);
            for event in events {
                after = Some(event.revision());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    WatchStream::new(rx)
}

impl RegistryBackend for MemRegistry {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            let (lease, outcome) = self.shared.register(instance, ttl)?;
            self.shared.publish(&outcome);
            Ok(lease)
        })
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.shared.keep_alive(lease.id).map(|_| ()) })
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let outcome = self.shared.revoke(lease.id)?;
            self.shared.publish(&outcome);
            Ok(())
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move {
            let (instances, revision) = self.shared.store().list(service);
            Ok(Snapshot { instances, revision })
        })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move { Ok(spawn_watch(&self.shared, service, after)) })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(async move { Ok(self.shared.store().registrations(service)) })
    }
}
