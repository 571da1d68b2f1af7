//! [`LocalRegistry`]: a registry in this process, on the [`Store`] state
//! machine. It is the `mem://` backend, and the engine of the bundled
//! registry server (which adds persistence around it).
//!
//! A background task expires leases (logging, at INFO, each instance that
//! goes and why); each watch runs a small task that sends the store's
//! events to the watcher and sleeps until its service changes. The tasks
//! hold only weak references, so dropping every handle to the registry
//! ends them.
//!
//! The `*_page` methods read within a byte budget, for the registry
//! server's answers (see [`Store::instances_page`]); in process, `mem://`
//! has no frames to fit and reads everything at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use self::store::{EventsPage, Outcome, RemovalCause, Store, StoreError};
use crate::discovery::unix_ms;
use crate::discovery::{
    Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchEvent,
    WatchStream,
};
use crate::service::BoxFuture;

pub mod store;

/// Events buffered per watcher before it is considered too slow.
const WATCH_BUFFER: usize = 256;

/// A registry in this process. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalRegistry {
    shared: Arc<Shared>,
}

/// Shared by the handles, the expiry task and the watch tasks.
struct Shared {
    store: Mutex<Store>,
    /// One per watched service, woken when its event log grows.
    changed: Mutex<HashMap<String, Arc<Notify>>>,
    /// Wakes the expiry task when a lease may now expire sooner.
    expiry: Notify,
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_for(&self, service: &str) -> Arc<Notify> {
        let mut changed = self.changed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        changed.entry(service.to_owned()).or_default().clone()
    }

    /// Drop the wake-up of services nobody is waiting on (watching names
    /// must not grow the registry's memory without bound).
    fn forget_idle_services(&self) {
        let mut changed = self.changed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        changed.retain(|_, notify| Arc::strong_count(notify) > 1);
    }

    /// Wake the watchers of every service an outcome touched.
    fn publish(&self, outcome: &Outcome) {
        for service in &outcome.touched {
            self.notify_for(service).notify_waiters();
        }
    }

    /// Events for a watcher at `after`, in about `budget` bytes, waiting
    /// up to `wait` for some.
    async fn wait_events(
        &self,
        service: &str,
        after: Option<Revision>,
        wait: Duration,
        budget: usize,
    ) -> EventsPage {
        let notify = self.notify_for(service);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let page = self.store().events_page(service, after, budget);
            if !page.events.is_empty() {
                return page;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return EventsPage::default();
            }
        }
    }

    /// Run the expiry loop until the registry is dropped. `persist` sees
    /// every outcome first (the registry server writes it to disk).
    async fn expire_forever(weak: Weak<Shared>, persist: impl Fn(&Outcome)) {
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let wake = shared.expiry.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let (outcome, next) = {
                let mut store = shared.store();
                let (outcome, next) = store.expire(Instant::now());
                if !outcome.changes.is_empty() {
                    persist(&outcome);
                }
                (outcome, next)
            };
            if !outcome.changes.is_empty() {
                shared.publish(&outcome);
            }
            log_expired(&outcome);
            shared.forget_idle_services();
            // Wake at least once a second, so a dropped registry is noticed
            // (the strong reference held here ends with this iteration).
            let sleep_for =
                next.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(Instant::now()));
            let _ = tokio::time::timeout(sleep_for.min(Duration::from_secs(1)), wake).await;
        }
    }
}

/// Say which instances expired, and why (operators ask "where did my
/// instance go?").
fn log_expired(outcome: &Outcome) {
    for removed in &outcome.removed {
        if let RemovalCause::Expired { ttl } = removed.cause {
            tracing::info!(
                service = %removed.service,
                instance = %removed.id,
                addr = %removed.addr,
                lease = removed.lease,
                ?ttl,
                "instance expired: its lease was not renewed within its TTL"
            );
        }
    }
}

impl LocalRegistry {
    /// An empty registry. Starts its lease-expiry task on the current tokio
    /// runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    // No `Default`: a default that spawns a task (and panics outside a
    // runtime) would surprise.
    #[allow(clippy::new_without_default)]
    pub fn new() -> LocalRegistry {
        LocalRegistry::with_store(Store::new(), |_| {})
    }

    /// A registry on `store` (restored from disk, say); `persist` sees the
    /// outcome of every expiry, under the store lock (so in order with every
    /// other change), before watchers are told.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_store(store: Store, persist: impl Fn(&Outcome) + Send + 'static) -> LocalRegistry {
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changed: Mutex::new(HashMap::new()),
            expiry: Notify::new(),
        });
        tokio::spawn(Shared::expire_forever(Arc::downgrade(&shared), persist));
        LocalRegistry { shared }
    }

    /// Grant a lease and register `instance`. The change is applied but
    /// watchers are not told until [`LocalRegistry::publish`], so a caller
    /// can persist it first.
    pub fn register(&self, instance: Instance, ttl: Duration) -> Result<(Lease, Outcome), RegistryError> {
        self.register_with(instance, ttl, |_| {})
    }

    /// [`LocalRegistry::register`], calling `enqueue` with the change while
    /// the store is still locked: changes reach `enqueue` (a persistence
    /// queue, say) in exactly the order they were made.
    pub fn register_with(
        &self,
        instance: Instance,
        ttl: Duration,
        enqueue: impl FnOnce(&Outcome),
    ) -> Result<(Lease, Outcome), RegistryError> {
        let (service, instance_id) = (instance.service.clone(), instance.id.clone());
        let (id, outcome) = {
            let mut store = self.shared.store();
            let (id, outcome) = store.register(instance, ttl, Instant::now(), unix_ms())?;
            enqueue(&outcome);
            (id, outcome)
        };
        self.shared.expiry.notify_one();
        Ok((Lease { id, ttl, service, instance_id }, outcome))
    }

    /// Renew a lease; returns its TTL.
    pub fn keep_alive(&self, lease: u64) -> Result<Duration, RegistryError> {
        Ok(self.renew(lease)?)
    }

    /// [`LocalRegistry::keep_alive`] with the store's own error, which
    /// tells a lease that is gone from one that holds nothing any more.
    pub fn renew(&self, lease: u64) -> Result<Duration, StoreError> {
        self.shared.store().keep_alive(lease, Instant::now())
    }

    /// Revoke a lease (applied, not yet published).
    pub fn revoke(&self, lease: u64) -> Result<Outcome, RegistryError> {
        self.revoke_with(lease, |_| {})
    }

    /// [`LocalRegistry::revoke`], calling `enqueue` under the store lock (see
    /// [`LocalRegistry::register_with`]).
    pub fn revoke_with(&self, lease: u64, enqueue: impl FnOnce(&Outcome)) -> Result<Outcome, RegistryError> {
        let mut store = self.shared.store();
        let outcome = store.revoke(lease)?;
        enqueue(&outcome);
        Ok(outcome)
    }

    /// Tell the watchers of the services `outcome` touched.
    pub fn publish(&self, outcome: &Outcome) {
        self.shared.publish(outcome);
    }

    /// The instances of `service`.
    pub fn list(&self, service: &str) -> Snapshot {
        let (instances, revision) = self.shared.store().list(service);
        Snapshot { instances, revision }
    }

    /// Every registration, optionally of one service.
    pub fn registrations(&self, service: Option<&str>) -> Vec<Registration> {
        self.shared.store().registrations(service)
    }

    /// A page of the instances of `service` after `after_id`, in about
    /// `budget` bytes; the id to go on after, if more are left; and the
    /// current revision. See [`Store::instances_page`].
    pub fn instances_page(
        &self,
        service: &str,
        after_id: Option<&str>,
        budget: usize,
    ) -> (Vec<Instance>, Option<String>, Revision) {
        let store = self.shared.store();
        let (instances, next) = store.instances_page(service, after_id, budget);
        (instances, next, store.revision())
    }

    /// A page of the registrations (of one service, if given) after
    /// `after` (a service and an id), in about `budget` bytes; and where to
    /// go on, if more are left.
    pub fn registrations_page(
        &self,
        service: Option<&str>,
        after: Option<(&str, &str)>,
        budget: usize,
    ) -> (Vec<Registration>, Option<(String, String)>) {
        self.shared.store().registrations_page(service, after, budget)
    }

    /// Events for a watcher that has seen up to `after`, waiting up to
    /// `wait` for some (a long poll); empty if nothing changed meanwhile.
    pub async fn wait_events(
        &self,
        service: &str,
        after: Option<Revision>,
        wait: Duration,
    ) -> Vec<WatchEvent> {
        self.shared.wait_events(service, after, wait, usize::MAX).await.events
    }

    /// [`LocalRegistry::wait_events`] in about `budget` bytes: the events
    /// that fit, or a `Reset` with the instances that fit and the id to
    /// go on after (see [`Store::events_page`]).
    pub async fn wait_events_page(
        &self,
        service: &str,
        after: Option<Revision>,
        wait: Duration,
        budget: usize,
    ) -> EventsPage {
        self.shared.wait_events(service, after, wait, budget).await
    }

    /// A stream of the events of `service` after `after`.
    pub fn watch(&self, service: &str, after: Option<Revision>) -> WatchStream {
        spawn_watch(&self.shared, service, after)
    }
}

/// Feed a watcher from `shared` until it hangs up or the registry is gone.
fn spawn_watch(shared: &Arc<Shared>, service: &str, after: Option<Revision>) -> WatchStream {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let weak = Arc::downgrade(shared);
    let service = service.to_owned();
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let events = tokio::select! {
                page = shared.wait_events(&service, after, Duration::from_secs(1), usize::MAX) => page.events,
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

/// `mem://`: changes are published as soon as they are applied.
impl RegistryBackend for LocalRegistry {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            let (lease, outcome) = LocalRegistry::register(self, instance, ttl)?;
            self.publish(&outcome);
            Ok(lease)
        })
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { LocalRegistry::keep_alive(self, lease.id).map(|_| ()) })
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let outcome = self.revoke(lease.id)?;
            self.publish(&outcome);
            Ok(())
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move { Ok(LocalRegistry::list(self, service)) })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move { Ok(LocalRegistry::watch(self, service, after)) })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(async move { Ok(LocalRegistry::registrations(self, service)) })
    }
}
