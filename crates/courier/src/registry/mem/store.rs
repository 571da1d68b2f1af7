//! The registry's state machine: instances by service, leases with TTLs, a
//! revision counter, and a per-service event log that watchers resume from.
//!
//! Sans-IO and synchronous: callers pass the current time and get back the
//! changes to persist (the registry server writes them to disk before it
//! answers) and the services whose watchers to wake. The in-process `mem://`
//! backend and the bundled registry server both run on it.
//!
//! Rules it keeps:
//!
//! - An instance id belongs to the lease that registered it: registering
//!   an id another live lease holds is refused
//!   ([`StoreError::AlreadyExists`]), never silently moved, and renewing a
//!   lease that holds no instance any more (its record was lost) fails
//!   ([`StoreError::LeaseHoldsNothing`]), so its provider registers again.
//! - Instances are limited in size at registration
//!   ([`crate::discovery::instance::MAX_INSTANCE_BYTES`]), and whatever a service
//!   adds up to, it can be read in pages of a byte budget
//!   ([`Store::instances_page`], [`Store::events_page`],
//!   [`Store::registrations_page`]): no answer has to exceed a frame.
//! - Memory per service is bounded: its event log keeps at most
//!   [`EVENT_LOG_LEN`] events and [`EVENT_LOG_BYTES`] bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::discovery::instance::json_len;
use crate::discovery::{Instance, Registration, RegistryError, WatchEvent};

/// How many events each service keeps for watchers that resume; a watcher
/// further behind gets a fresh `Reset`.
pub const EVENT_LOG_LEN: usize = 1024;

/// How many bytes of events (as JSON) each service's log keeps at most:
/// a log of large instances is shorter, so a service cannot hold many
/// megabytes of history. A watcher further behind gets a fresh `Reset`.
pub const EVENT_LOG_BYTES: usize = 4 * 1024 * 1024;

/// What an event adds to its instance's (or id's) JSON size, at most
/// (`{"Update":{"instance":..,"revision":18446744073709551615}}`).
const EVENT_OVERHEAD: usize = 64;

/// What a registration adds to its instance's JSON size, at most.
const REGISTRATION_OVERHEAD: usize = 96;

/// A change to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Store (or replace) a registration.
    Put(Registration),
    /// Remove the registration of instance `id` of `service`.
    Delete {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
    },
    /// Store (or replace) a lease and its TTL.
    PutLease {
        /// Lease id.
        id: u64,
        /// Its time to live.
        ttl: Duration,
    },
    /// Remove a lease.
    DeleteLease(u64),
    /// The revision counter moved.
    Revision(u64),
}

/// What a mutation did: what to persist, which services' watchers to wake.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes to persist, in order.
    pub changes: Vec<Change>,
    /// Services whose event logs grew.
    pub touched: Vec<String>,
    /// Instances removed, and why (for logs).
    pub removed: Vec<Removal>,
}

/// An instance a mutation removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Its service.
    pub service: String,
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// The lease it was registered under.
    pub lease: u64,
    /// Why it went.
    pub cause: RemovalCause,
}

/// Why an instance was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its lease was not renewed within its TTL.
    Expired {
        /// The lease's TTL.
        ttl: Duration,
    },
    /// Its lease was revoked (the provider deregistered).
    Revoked,
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The lease does not exist (it expired or was revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(u64),
    /// The instance cannot be registered.
    #[error("invalid instance: {0}")]
    InvalidInstance(String),
    /// The TTL is out of range.
    #[error("invalid TTL {0:?}: must be between 1 s and 1 h")]
    InvalidTtl(Duration),
    /// Another live lease holds this instance id.
    #[error("instance `{id}` of `{service}` is already registered under another live lease")]
    AlreadyExists {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
    },
    /// The lease is alive but holds no instance any more (its record was
    /// lost): renewing it would keep nothing registered.
    #[error("lease {0} holds no instance any more (its registration was lost); register again")]
    LeaseHoldsNothing(u64),
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires_at: Instant,
    /// What it registered: the same registration the service holds and its
    /// log names, shared, not a copy (memory per instance is the registry's
    /// main cost).
    keys: Vec<Arc<Registration>>,
}

/// A registration with the size of its instance as JSON, measured once.
#[derive(Debug)]
struct Held {
    registration: Arc<Registration>,
    bytes: usize,
}

impl Held {
    fn new(registration: Arc<Registration>) -> Held {
        let bytes = registration.instance.encoded_len();
        Held { registration, bytes }
    }
}

/// An event as the log keeps it: an addition shares its registration with
/// the service's set; it becomes a [`WatchEvent`] when a watcher reads it.
#[derive(Debug)]
enum LoggedEvent {
    Add(Arc<Registration>),
    Remove(String),
}

/// An event, its revision, and its size as JSON (at most).
#[derive(Debug)]
struct Logged {
    event: LoggedEvent,
    revision: u64,
    bytes: usize,
}

impl Logged {
    fn to_event(&self) -> WatchEvent {
        match &self.event {
            LoggedEvent::Add(registration) => {
                WatchEvent::Add { instance: registration.instance.clone(), revision: self.revision }
            }
            LoggedEvent::Remove(id) => WatchEvent::Remove { id: id.clone(), revision: self.revision },
        }
    }
}

#[derive(Debug, Default)]
struct Service {
    instances: BTreeMap<String, Held>,
    log: VecDeque<Logged>,
    /// The bytes of the events in `log`.
    log_bytes: usize,
    /// The highest revision dropped from the front of `log`: a watcher that
    /// has not seen it cannot be caught up from the log.
    dropped_through: u64,
    /// The revision at which the last instance went, while none is back.
    emptied_at: Option<u64>,
}

/// The state machine.
#[derive(Debug, Default)]
pub struct Store {
    revision: u64,
    next_lease: u64,
    leases: HashMap<u64, Lease>,
    /// Every lease by the instant it expires, soonest first: expiry takes
    /// what is due from the front, so its cost is that of the leases that
    /// expire, not of all leases (a registry with 100,000 leases expires
    /// one without looking at the others).
    deadlines: BTreeSet<(Instant, u64)>,
    /// In name order, so listings of every service page by name.
    services: BTreeMap<String, Service>,
    /// Watchers that saw nothing at or after this revision cannot be caught
    /// up from the event logs: set on restore (the logs are not persisted).
    floor: u64,
    /// Services left with no instance, oldest first, with the revision at
    /// which they emptied; forgotten `EMPTY_SERVICE_RETENTION` revisions
    /// later.
    emptied: VecDeque<(u64, String)>,
    /// The last revision of any service forgotten: a watcher of a service
    /// that is not (or no longer, or not yet again) known, and that has not
    /// seen this revision, may have missed that service's last events.
    pruned_through: u64,
}

/// How many revisions an empty service's event log is kept, so watchers
/// see its last instances go as removals (not as an empty full set, which
/// consumers distrust). Any client can name services, so logs of empty
/// ones cannot be kept forever; this bounds them to the services emptied
/// in the last this-many changes.
pub const EMPTY_SERVICE_RETENTION: u64 = 1024;

/// How far revisions jump when a store is restored, so no revision a
/// watcher may have seen before a crash (of a change that never reached
/// disk) is ever given to a different change.
pub const RESTORE_REVISION_GAP: u64 = 1 << 20;

/// The smallest and largest TTL a lease may have.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// See [`MIN_TTL`].
pub const MAX_TTL: Duration = Duration::from_secs(3600);

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Rebuild from persisted state. Every lease gets a fresh TTL from `now`,
    /// as etcd's lessor does on a leader change: downtime of the registry
    /// must not evict the instances it knew. `last_lease` is the highest
    /// lease id ever granted, so ids are never reused. Registrations are
    /// taken as given: check them first ([`Instance::validate`]) if they
    /// may predate today's limits. A lease left holding no registration
    /// answers renewals with [`StoreError::LeaseHoldsNothing`].
    pub fn restore(
        revision: u64,
        last_lease: u64,
        leases: impl IntoIterator<Item = (u64, Duration)>,
        registrations: impl IntoIterator<Item = Registration>,
        now: Instant,
    ) -> Store {
        // Revisions jump past anything a watcher may have seen but the disk
        // did not keep; every watcher resuming from before gets a `Reset`.
        // (A store with no history has nothing to protect.)
        let revision = if revision == 0 { 0 } else { revision.saturating_add(RESTORE_REVISION_GAP) };
        let mut store = Store { revision, next_lease: last_lease, floor: revision, ..Store::default() };
        for (id, ttl) in leases {
            store.next_lease = store.next_lease.max(id);
            store.insert_lease(id, ttl, now + ttl, Vec::new());
        }
        for registration in registrations {
            let registration = Arc::new(registration);
            match store.leases.get_mut(&registration.lease) {
                Some(lease) => lease.keys.push(registration.clone()),
                // A registration whose lease was lost is dropped.
                None => continue,
            }
            let (service, id) = (registration.instance.service.clone(), registration.instance.id.clone());
            store.services.entry(service).or_default().instances.insert(id, Held::new(registration));
        }
        store
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Grant a lease and register `instance` under it.
    pub fn register(
        &mut self,
        instance: Instance,
        ttl: Duration,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<(u64, Outcome), StoreError> {
        instance.validate().map_err(StoreError::InvalidInstance)?;
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(StoreError::InvalidTtl(ttl));
        }
        // Registered instances always belong to a live lease (a lease that
        // goes takes its instances with it), so an id present is an id
        // held. Moving it to the new lease would leave the first provider
        // renewing a lease that holds nothing, succeeding, and never
        // noticing: refuse instead, and let the caller retry once the
        // other lease is gone.
        if self.services.get(&instance.service).is_some_and(|s| s.instances.contains_key(&instance.id)) {
            return Err(StoreError::AlreadyExists { service: instance.service, id: instance.id });
        }
        let mut outcome = Outcome::default();
        self.next_lease += 1;
        let lease_id = self.next_lease;
        let key = (instance.service.clone(), instance.id.clone());
        let registration =
            Arc::new(Registration { instance, lease: lease_id, registered_unix_ms: now_unix_ms });
        self.insert_lease(lease_id, ttl, now + ttl, vec![registration.clone()]);
        outcome.changes.push(Change::PutLease { id: lease_id, ttl });
        let held = Held::new(registration.clone());
        let event_bytes = held.bytes + EVENT_OVERHEAD;
        // A service new (or new again) cannot catch up a watcher that may
        // have missed the end of its previous life.
        let pruned_through = self.pruned_through;
        let service = self
            .services
            .entry(key.0.clone())
            .or_insert_with(|| Service { dropped_through: pruned_through, ..Service::default() });
        service.emptied_at = None;
        service.instances.insert(key.1, held);
        self.revision += 1;
        push_event(service, LoggedEvent::Add(registration.clone()), self.revision, event_bytes);
        outcome.changes.push(Change::Put(Registration::clone(&registration)));
        outcome.changes.push(Change::Revision(self.revision));
        outcome.touched.push(key.0);
        self.prune_emptied();
        Ok((lease_id, outcome))
    }

    /// Renew a lease for another TTL. A lease that holds no instance any
    /// more is not renewed ([`StoreError::LeaseHoldsNothing`]): its
    /// provider must hear that it is no longer registered.
    pub fn keep_alive(&mut self, lease: u64, now: Instant) -> Result<Duration, StoreError> {
        let entry = self.leases.get_mut(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        if entry.keys.is_empty() {
            return Err(StoreError::LeaseHoldsNothing(lease));
        }
        let expires_at = now + entry.ttl;
        let previous = std::mem::replace(&mut entry.expires_at, expires_at);
        let ttl = entry.ttl;
        self.deadlines.remove(&(previous, lease));
        self.deadlines.insert((expires_at, lease));
        Ok(ttl)
    }

    /// Revoke a lease, removing its instances.
    pub fn revoke(&mut self, lease: u64) -> Result<Outcome, StoreError> {
        let entry = self.leases.remove(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        self.deadlines.remove(&(entry.expires_at, lease));
        let mut outcome = Outcome::default();
        outcome.changes.push(Change::DeleteLease(lease));
        self.remove_keys(entry.keys, lease, RemovalCause::Revoked, &mut outcome);
        Ok(outcome)
    }

    /// Expire leases whose TTL passed; returns what changed and when the
    /// next lease expires.
    pub fn expire(&mut self, now: Instant) -> (Outcome, Option<Instant>) {
        let mut outcome = Outcome::default();
        while let Some(&(expires_at, id)) = self.deadlines.first() {
            if expires_at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(lease) = self.leases.remove(&id) {
                outcome.changes.push(Change::DeleteLease(id));
                let cause = RemovalCause::Expired { ttl: lease.ttl };
                self.remove_keys(lease.keys, id, cause, &mut outcome);
            }
        }
        (outcome, self.deadlines.first().map(|&(expires_at, _)| expires_at))
    }

    /// Add a lease and its place in the expiry order.
    fn insert_lease(&mut self, id: u64, ttl: Duration, expires_at: Instant, keys: Vec<Arc<Registration>>) {
        if let Some(replaced) = self.leases.insert(id, Lease { ttl, expires_at, keys }) {
            // Ids are never granted twice; a restore listing one twice
            // keeps the last, with one deadline.
            self.deadlines.remove(&(replaced.expires_at, id));
        }
        self.deadlines.insert((expires_at, id));
    }

    fn remove_keys(
        &mut self,
        keys: Vec<Arc<Registration>>,
        lease: u64,
        cause: RemovalCause,
        outcome: &mut Outcome,
    ) {
        for registration in keys {
            let (service_name, id) =
                (registration.instance.service.clone(), registration.instance.id.clone());
            let Some(service) = self.services.get_mut(&service_name) else { continue };
            let Some(held) = service.instances.remove(&id) else { continue };
            outcome.removed.push(Removal {
                service: service_name.clone(),
                id: id.clone(),
                addr: held.registration.instance.addr.clone(),
                lease,
                cause,
            });
            self.revision += 1;
            let bytes = json_len(&id) + EVENT_OVERHEAD;
            push_event(service, LoggedEvent::Remove(id.clone()), self.revision, bytes);
            if service.instances.is_empty() {
                service.emptied_at = Some(self.revision);
                self.emptied.push_back((self.revision, service_name.clone()));
            }
            outcome.changes.push(Change::Delete { service: service_name.clone(), id });
            outcome.changes.push(Change::Revision(self.revision));
            if !outcome.touched.contains(&service_name) {
                outcome.touched.push(service_name);
            }
        }
        self.prune_emptied();
    }

    /// Forget services that have been empty for `EMPTY_SERVICE_RETENTION`
    /// revisions (and not filled again since).
    fn prune_emptied(&mut self) {
        while let Some((emptied_at, _)) = self.emptied.front() {
            if emptied_at.saturating_add(EMPTY_SERVICE_RETENTION) > self.revision {
                break;
            }
            let Some((emptied_at, name)) = self.emptied.pop_front() else { break };
            if self.services.get(&name).is_some_and(|service| service.emptied_at == Some(emptied_at)) {
                self.services.remove(&name);
                self.pruned_through = self.pruned_through.max(emptied_at);
            }
        }
    }

    /// The instances of `service` (in id order) and the current revision.
    pub fn list(&self, service: &str) -> (Vec<Instance>, u64) {
        let (instances, _) = self.instances_page(service, None, usize::MAX);
        (instances, self.revision)
    }

    /// A page of the instances of `service`: those with ids after
    /// `after_id` (all, if `None`), in id order, as many as fit in
    /// `budget` bytes of JSON (at least one, if any is left). Returns them
    /// and, if more are left, the id to continue after.
    ///
    /// Pages are read from the state as it is when each is asked for, so
    /// a listing in pages that a change overtakes may already show that
    /// change in its later pages; read from the revision of its first
    /// page, the events after that revision bring it up to date whatever
    /// it saw (each event states an instance's whole state).
    pub fn instances_page(
        &self,
        service: &str,
        after_id: Option<&str>,
        budget: usize,
    ) -> (Vec<Instance>, Option<String>) {
        let Some(entry) = self.services.get(service) else { return (Vec::new(), None) };
        let lower = after_id.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<Instance> = Vec::new();
        let mut used = 0usize;
        for held in entry.instances.range::<str, _>((lower, Bound::Unbounded)).map(|(_, held)| held) {
            if let Some(last) = page.last()
                && used.saturating_add(held.bytes) > budget
            {
                let next = last.id.clone();
                return (page, Some(next));
            }
            used = used.saturating_add(held.bytes);
            page.push(held.registration.instance.clone());
        }
        (page, None)
    }

    /// Every registration, optionally of one service, in (service, id)
    /// order.
    pub fn registrations(&self, service: Option<&str>) -> Vec<Registration> {
        self.registrations_page(service, None, usize::MAX).0
    }

    /// A page of [`Store::registrations`]: those after `after` (a service
    /// and an id), as many as fit in `budget` bytes (at least one, if any
    /// is left); and where to continue, if more are left.
    pub fn registrations_page(
        &self,
        service: Option<&str>,
        after: Option<(&str, &str)>,
        budget: usize,
    ) -> (Vec<Registration>, Option<(String, String)>) {
        let services: Box<dyn Iterator<Item = (&String, &Service)> + '_> = match (service, after) {
            (Some(name), _) => Box::new(self.services.get_key_value(name).into_iter()),
            (None, Some((name, _))) => {
                Box::new(self.services.range::<str, _>((Bound::Included(name), Bound::Unbounded)))
            }
            (None, None) => Box::new(self.services.iter()),
        };
        let mut page: Vec<Registration> = Vec::new();
        let mut used = 0usize;
        for (name, entry) in services {
            let lower = match after {
                Some((after_service, after_id)) if after_service == name.as_str() => {
                    Bound::Excluded(after_id)
                }
                _ => Bound::Unbounded,
            };
            for held in entry.instances.range::<str, _>((lower, Bound::Unbounded)).map(|(_, held)| held) {
                let bytes = held.bytes + REGISTRATION_OVERHEAD;
                if let Some(last) = page.last()
                    && used.saturating_add(bytes) > budget
                {
                    let next = (last.instance.service.clone(), last.instance.id.clone());
                    return (page, Some(next));
                }
                used = used.saturating_add(bytes);
                page.push(Registration::clone(&held.registration));
            }
        }
        (page, None)
    }

    /// The TTL of a lease, if it exists.
    pub fn lease_ttl(&self, lease: u64) -> Option<Duration> {
        self.leases.get(&lease).map(|l| l.ttl)
    }

    /// What a watcher of `service` that has seen everything up to `after`
    /// needs next: the events since, or a `Reset` when the log no longer
    /// reaches back that far (or `after` is `None`). Empty when up to date.
    pub fn events_after(&self, service: &str, after: Option<u64>) -> Vec<WatchEvent> {
        self.events_page(service, after, usize::MAX).events
    }

    /// [`Store::events_after`] in about `budget` bytes of JSON (at least
    /// one event, if any): the events that fit (the watcher asks again
    /// from the last one's revision for the rest), or a `Reset` with the
    /// instances that fit and the id to continue the set after (see
    /// [`Store::instances_page`]; the rest belongs to the `Reset`, at its
    /// revision).
    pub fn events_page(&self, service: &str, after: Option<u64>, budget: usize) -> EventsPage {
        if self.needs_reset(service, after) {
            let (instances, more_after) = self.instances_page(service, None, budget);
            return EventsPage {
                events: vec![WatchEvent::Reset { instances, revision: self.revision }],
                more_after,
            };
        }
        let (Some(after), Some(entry)) = (after, self.services.get(service)) else {
            return EventsPage::default();
        };
        let first = entry.log.partition_point(|logged| logged.revision <= after);
        let mut events = Vec::new();
        let mut used = 0usize;
        for logged in entry.log.range(first..) {
            if !events.is_empty() && used.saturating_add(logged.bytes) > budget {
                break;
            }
            used = used.saturating_add(logged.bytes);
            events.push(logged.to_event());
        }
        EventsPage { events, more_after: None }
    }

    /// Whether a watcher of `service` at `after` must start over from a
    /// full set.
    fn needs_reset(&self, service: &str, after: Option<u64>) -> bool {
        let Some(after) = after else { return true };
        // From the future: the watcher talked to another registry (or one
        // that lost data). Start it over.
        if after > self.revision || after < self.floor {
            return true;
        }
        match self.services.get(service) {
            Some(entry) => after < entry.dropped_through,
            None => after < self.pruned_through,
        }
    }
}

/// What a watcher needs next, within a byte budget; see
/// [`Store::events_page`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsPage {
    /// The events, oldest first.
    pub events: Vec<WatchEvent>,
    /// If the last event is a `Reset` whose instances did not all fit: the
    /// id of the last one in it; the rest follow from
    /// [`Store::instances_page`].
    pub more_after: Option<String>,
}

fn push_event(service: &mut Service, event: LoggedEvent, revision: u64, bytes: usize) {
    service.log.push_back(Logged { event, revision, bytes });
    service.log_bytes = service.log_bytes.saturating_add(bytes);
    // The newest event always stays, so a watcher one change behind can
    // always be caught up without a full set.
    while service.log.len() > EVENT_LOG_LEN || (service.log_bytes > EVENT_LOG_BYTES && service.log.len() > 1)
    {
        let Some(dropped) = service.log.pop_front() else { break };
        service.log_bytes = service.log_bytes.saturating_sub(dropped.bytes);
        service.dropped_through = dropped.revision;
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> RegistryError {
        match err {
            StoreError::LeaseNotFound(id) | StoreError::LeaseHoldsNothing(id) => {
                RegistryError::LeaseNotFound(id)
            }
            StoreError::AlreadyExists { service, id } => RegistryError::AlreadyExists { service, id },
            other => RegistryError::Rejected(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance::new("Calc", format!("127.0.0.1:{}", 9000 + id.len())).with_id(id).with_version("1.0.0")
    }

    #[test]
    fn register_keep_alive_expire_and_revoke() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (a, outcome) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        assert_eq!(outcome.touched, vec!["Calc".to_owned()]);
        let (b, _) = store.register(instance("bb"), Duration::from_secs(2), t0, 0).expect("register");
        assert_eq!(store.list("Calc").0.len(), 2);
        assert_eq!(store.revision(), 2);

        // `a` is kept alive, `b` is not.
        assert_eq!(store.keep_alive(a, t0 + Duration::from_secs(1)), Ok(Duration::from_secs(2)));
        let (outcome, next) = store.expire(t0 + Duration::from_millis(2500));
        assert!(outcome.changes.contains(&Change::Delete { service: "Calc".into(), id: "bb".into() }));
        assert_eq!(next, Some(t0 + Duration::from_secs(3)));
        assert_eq!(store.keep_alive(b, t0), Err(StoreError::LeaseNotFound(b)));

        store.revoke(a).expect("revoke");
        assert!(store.list("Calc").0.is_empty());
        assert_eq!(store.revision(), 4);
    }

    #[test]
    fn watchers_resume_from_their_revision_or_get_a_reset() {
        let t0 = Instant::now();
        let mut store = Store::new();
        store.register(instance("a"), Duration::from_secs(5), t0, 0).expect("register");
        let first = store.events_after("Calc", None);
        assert!(matches!(&first[..], [WatchEvent::Reset { instances, revision: 1 }] if instances.len() == 1));
        let (lease, _) = store.register(instance("bb"), Duration::from_secs(5), t0, 0).expect("register");
        store.revoke(lease).expect("revoke");
        let next = store.events_after("Calc", Some(1));
        assert!(matches!(
            &next[..],
            [WatchEvent::Add { revision: 2, .. }, WatchEvent::Remove { revision: 3, .. }]
        ));
        assert!(store.events_after("Calc", Some(3)).is_empty());
        assert!(matches!(&store.events_after("Calc", Some(99))[..], [WatchEvent::Reset { .. }]));
    }

    #[test]
    fn a_watcher_too_far_behind_gets_a_reset() {
        let t0 = Instant::now();
        let mut store = Store::new();
        for i in 0..(EVENT_LOG_LEN / 2 + 10) {
            let (lease, _) =
                store.register(instance(&format!("x{i}")), Duration::from_secs(5), t0, 0).expect("register");
            store.revoke(lease).expect("revoke");
        }
        assert!(matches!(&store.events_after("Calc", Some(1))[..], [WatchEvent::Reset { .. }]));
        let recent = store.events_after("Calc", Some(store.revision() - 3));
        assert_eq!(recent.len(), 3);
    }

    /// An instance of `Calc` with id `id` and `size` bytes of metadata.
    fn big(id: &str, size: usize) -> Instance {
        instance(id).with_metadata("blob", "x".repeat(size))
    }

    #[test]
    fn the_event_log_is_bounded_in_bytes_too() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let size = 60 * 1024;
        let count = EVENT_LOG_BYTES / size + 10;
        for i in 0..count {
            store.register(big(&format!("i{i:03}"), size), Duration::from_secs(5), t0, 0).expect("register");
        }
        let entry = store.services.get("Calc").expect("service");
        assert!(entry.log_bytes <= EVENT_LOG_BYTES, "{} bytes of log", entry.log_bytes);
        assert!(entry.log.len() < count, "old events were dropped");
        // A watcher from before the dropped events starts over.
        assert!(matches!(&store.events_after("Calc", Some(1))[..], [WatchEvent::Reset { .. }]));
        assert_eq!(store.events_after("Calc", Some(store.revision() - 1)).len(), 1);
    }

    #[test]
    fn large_services_are_read_in_pages_within_the_budget() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let size = 10_000;
        for i in 0..50 {
            store.register(big(&format!("i{i:02}"), size), Duration::from_secs(5), t0, 0).expect("register");
        }
        let budget = 4 * size;
        // Listing: pages of at most the budget, in id order, nothing
        // missed or repeated.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = store.instances_page("Calc", after.as_deref(), budget);
            let bytes: usize = page.iter().map(Instance::encoded_len).sum();
            assert!(!page.is_empty() && bytes <= budget, "{} instances, {bytes} bytes", page.len());
            seen.extend(page.into_iter().map(|i| i.id));
            assert!(seen.len() <= 50, "paging goes on past every instance");
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..50).map(|i| format!("i{i:02}")).collect();
        assert_eq!(seen, expected);
        // A budget smaller than one instance still makes progress.
        let (page, next) = store.instances_page("Calc", None, 1);
        assert_eq!((page.len(), next.as_deref()), (1, Some("i00")));

        // A fresh watcher gets a partial `Reset` and where to go on from.
        let first = store.events_page("Calc", None, budget);
        assert!(
            matches!(&first.events[..], [WatchEvent::Reset { instances, revision: 50 }] if instances.len() == 3),
            "{:?}",
            first.events.len()
        );
        assert_eq!(first.more_after.as_deref(), Some("i02"));
        // A watcher behind by many events gets them in budget-sized runs.
        let run = store.events_page("Calc", Some(10), budget);
        assert_eq!(run.events.len(), 3, "events of about 10 KB each in a 40 KB budget");
        assert_eq!(run.events.last().map(WatchEvent::revision), Some(13));
        assert!(run.more_after.is_none());
        assert_eq!(store.events_page("Calc", Some(10), usize::MAX).events.len(), 40);

        // Registrations of every service page by (service, id).
        store
            .register(Instance::new("Aardvark", "127.0.0.1:1"), Duration::from_secs(5), t0, 0)
            .expect("register");
        let mut listed = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let (page, next) = store.registrations_page(
                None,
                after.as_ref().map(|(service, id)| (service.as_str(), id.as_str())),
                budget,
            );
            // At least one per page while any is left, and never more than
            // there are: a broken cursor fails here instead of looping.
            assert!(!page.is_empty(), "an empty page before the end");
            listed.extend(page.into_iter().map(|r| (r.instance.service, r.instance.id)));
            assert!(listed.len() <= 51, "paging goes on past every registration");
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed.len(), 51);
        assert_eq!(listed[0].0, "Aardvark");
        assert_eq!(
            listed,
            store
                .registrations(None)
                .into_iter()
                .map(|r| (r.instance.service, r.instance.id))
                .collect::<Vec<_>>()
        );
        assert_eq!(store.registrations_page(Some("Aardvark"), None, 1).0.len(), 1);
    }

    #[test]
    fn removals_say_what_went_and_why() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (a, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        let (b, _) = store.register(instance("bb"), Duration::from_secs(3), t0, 0).expect("register");
        let revoked = store.revoke(a).expect("revoke");
        assert_eq!(revoked.removed.len(), 1);
        assert_eq!((revoked.removed[0].id.as_str(), revoked.removed[0].lease), ("a", a));
        assert_eq!(revoked.removed[0].cause, RemovalCause::Revoked);
        let (expired, _) = store.expire(t0 + Duration::from_secs(4));
        assert_eq!(expired.removed.len(), 1);
        assert_eq!(expired.removed[0].addr, "127.0.0.1:9002");
        assert_eq!(
            (expired.removed[0].lease, expired.removed[0].cause),
            (b, RemovalCause::Expired { ttl: Duration::from_secs(3) })
        );
    }

    #[test]
    fn restore_gives_every_lease_a_fresh_ttl() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 7).expect("register");
        let registrations = store.registrations(None);
        let later = t0 + Duration::from_secs(60);
        let mut restored =
            Store::restore(store.revision(), lease, [(lease, Duration::from_secs(2))], registrations, later);
        assert_eq!(restored.list("Calc").0.len(), 1);
        // Revisions jump, and a watcher from before the restart starts over.
        assert_eq!(restored.revision(), store.revision() + RESTORE_REVISION_GAP);
        assert!(matches!(
            &restored.events_after("Calc", Some(store.revision()))[..],
            [WatchEvent::Reset { .. }]
        ));
        assert!(restored.events_after("Calc", Some(restored.revision())).is_empty());
        assert_eq!(
            restored.expire(later + Duration::from_secs(1)).0.changes.len(),
            0,
            "not expired after restart"
        );
        let (next_lease, _) =
            restored.register(instance("bb"), Duration::from_secs(2), later, 0).expect("register");
        assert!(next_lease > lease, "lease ids are not reused");
    }

    #[test]
    fn an_instance_held_by_a_live_lease_cannot_be_taken_over() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (first, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        let revision = store.revision();
        let refused = store.register(instance("a").with_weight(5), Duration::from_secs(2), t0, 0);
        assert_eq!(
            refused.map(|(lease, _)| lease),
            Err(StoreError::AlreadyExists { service: "Calc".into(), id: "a".into() })
        );
        // Nothing changed: no revision, no lease, the first one still holds it.
        assert_eq!(store.revision(), revision);
        assert_eq!(store.leases.len(), 1);
        assert_eq!(store.registrations(None)[0].lease, first);
        assert_eq!(store.list("Calc").0[0].weight, 1);
        assert!(store.keep_alive(first, t0).is_ok());
        // Once the first lease is gone, the id is free.
        store.revoke(first).expect("revoke");
        let (second, _) =
            store.register(instance("a").with_weight(5), Duration::from_secs(2), t0, 0).expect("free");
        assert_eq!(store.registrations(None)[0].lease, second);
    }

    #[test]
    fn renewing_a_lease_that_lost_its_instance_says_so() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        // Restored with the lease but not its registration (a record lost
        // or unreadable): renewing must not pretend it is registered.
        let mut restored = Store::restore(store.revision(), lease, [(lease, Duration::from_secs(2))], [], t0);
        assert_eq!(restored.keep_alive(lease, t0), Err(StoreError::LeaseHoldsNothing(lease)));
        assert_eq!(
            RegistryError::from(StoreError::LeaseHoldsNothing(lease)),
            RegistryError::LeaseNotFound(lease),
            "providers take it as a lost lease and register again"
        );
    }

    #[test]
    fn an_empty_service_keeps_its_log_for_a_while_then_late_watchers_start_over() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        let seen = store.revision();
        store.revoke(lease).expect("revoke");
        // Watchers see the last instance go as a removal, not an empty set.
        assert!(matches!(&store.events_after("Calc", Some(seen))[..], [WatchEvent::Remove { .. }]));
        let emptied = store.revision();
        // Other services change; the empty one is forgotten in time.
        for i in 0..EMPTY_SERVICE_RETENTION {
            let other = Instance::new("Other", format!("127.0.0.1:{}", 1000 + i)).with_id(format!("o{i}"));
            store.register(other, Duration::from_secs(2), t0, 0).expect("register");
        }
        assert!(!store.services.contains_key("Calc"), "no log kept for long for a service with no instances");
        assert!(store.emptied.is_empty());
        // One that saw the removal is up to date; one that did not starts over.
        assert!(store.events_after("Calc", Some(emptied)).is_empty());
        assert!(
            matches!(&store.events_after("Calc", Some(seen))[..], [WatchEvent::Reset { instances, .. }] if instances.is_empty())
        );
        // Back again: a watcher from before the gap starts over too, rather
        // than hearing of the new instance but never of the old one's end.
        store.register(instance("b"), Duration::from_secs(2), t0, 0).expect("register");
        assert!(matches!(
            &store.events_after("Calc", Some(seen))[..],
            [WatchEvent::Reset { instances, .. }] if instances.len() == 1
        ));
        assert!(matches!(&store.events_after("Calc", Some(emptied))[..], [WatchEvent::Add { .. }]));
    }

    #[test]
    fn a_service_filled_again_is_not_pruned_by_its_old_emptying() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        store.revoke(lease).expect("revoke");
        store.register(instance("b"), Duration::from_secs(2), t0, 0).expect("register");
        for i in 0..EMPTY_SERVICE_RETENTION {
            let other = Instance::new("Other", format!("127.0.0.1:{}", 1000 + i)).with_id(format!("o{i}"));
            store.register(other, Duration::from_secs(2), t0, 0).expect("register");
        }
        assert_eq!(store.list("Calc").0.len(), 1);
        assert_eq!(store.pruned_through, 0);
    }

    #[test]
    fn a_registration_persists_its_lease_instance_and_revision() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, outcome) =
            store.register(instance("a"), Duration::from_secs(7), t0, 1234).expect("register");
        let registration = Registration { instance: instance("a"), lease, registered_unix_ms: 1234 };
        assert_eq!(
            outcome.changes,
            vec![
                Change::PutLease { id: lease, ttl: Duration::from_secs(7) },
                Change::Put(registration),
                Change::Revision(1)
            ]
        );
        assert_eq!(store.lease_ttl(lease), Some(Duration::from_secs(7)));
        let revoked = store.revoke(lease).expect("revoke");
        assert_eq!(
            revoked.changes,
            vec![
                Change::DeleteLease(lease),
                Change::Delete { service: "Calc".into(), id: "a".into() },
                Change::Revision(2)
            ]
        );
        assert_eq!(store.lease_ttl(lease), None);
        assert_eq!(store.revoke(lease).map(|_| ()), Err(StoreError::LeaseNotFound(lease)));
    }

    #[test]
    fn the_ttl_range_is_inclusive() {
        let t0 = Instant::now();
        let mut store = Store::new();
        assert!(store.register(instance("a"), MIN_TTL, t0, 0).is_ok());
        assert!(store.register(instance("bb"), MAX_TTL, t0, 0).is_ok());
        let just_under = MIN_TTL - Duration::from_nanos(1);
        assert_eq!(
            store.register(instance("c"), just_under, t0, 0).map(|_| ()),
            Err(StoreError::InvalidTtl(just_under))
        );
        let just_over = MAX_TTL + Duration::from_nanos(1);
        assert_eq!(
            store.register(instance("c"), just_over, t0, 0).map(|_| ()),
            Err(StoreError::InvalidTtl(just_over))
        );
    }

    #[test]
    fn a_lease_expires_at_the_instant_expire_reported() {
        // The registry sleeps until the instant `expire` returns and calls
        // it again: that call must expire the lease, or it would spin.
        let t0 = Instant::now();
        let mut store = Store::new();
        store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        store.register(instance("bb"), Duration::from_secs(2), t0, 0).expect("register");
        let (nothing, next) = store.expire(t0 + Duration::from_secs(1));
        assert!(nothing.changes.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_secs(2)));
        let (expired, next) = store.expire(t0 + Duration::from_secs(2));
        assert_eq!(expired.removed.len(), 2);
        // Both instances of one service: its watchers are woken once.
        assert_eq!(expired.touched, vec!["Calc".to_owned()]);
        assert_eq!(next, None, "no lease left");
    }

    #[test]
    fn the_expiry_order_follows_every_renewal_and_revocation() {
        // Expiry reads the deadline index, not the leases: it must hold
        // exactly one entry per lease, at the lease's current deadline.
        let t0 = Instant::now();
        let mut store = Store::new();
        let consistent = |store: &Store| {
            store.deadlines.len() == store.leases.len()
                && store.leases.iter().all(|(id, lease)| store.deadlines.contains(&(lease.expires_at, *id)))
        };
        let mut leases = Vec::new();
        for i in 0..50u64 {
            let ttl = Duration::from_secs(1 + i % 7);
            leases.push(store.register(instance(&format!("x{i}")), ttl, t0, 0).expect("register").0);
        }
        assert!(consistent(&store));
        for (i, lease) in leases.iter().enumerate() {
            match i % 3 {
                0 => drop(store.keep_alive(*lease, t0 + Duration::from_millis(500)).expect("renew")),
                1 => drop(store.revoke(*lease).expect("revoke")),
                _ => {}
            }
        }
        assert!(consistent(&store));
        // Due in deadline order; what is renewed past `now` stays.
        let (expired, next) = store.expire(t0 + Duration::from_secs(3));
        assert!(consistent(&store));
        let left: Vec<Instant> = store.leases.values().map(|lease| lease.expires_at).collect();
        assert!(left.iter().all(|at| *at > t0 + Duration::from_secs(3)));
        assert_eq!(next, left.iter().min().copied());
        assert!(!expired.removed.is_empty());
        let (rest, next) = store.expire(t0 + Duration::from_secs(3600));
        assert_eq!(expired.removed.len() + rest.removed.len() + 17, 50, "17 revoked, the rest expired");
        assert_eq!((next, store.deadlines.len()), (None, 0));
    }

    #[test]
    fn a_lease_kept_alive_holds_its_instance_for_another_ttl() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        assert_eq!(store.keep_alive(lease, t0 + Duration::from_secs(1)), Ok(Duration::from_secs(2)));
        let (outcome, next) = store.expire(t0 + Duration::from_secs(2));
        assert!(outcome.removed.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn the_log_keeps_exactly_event_log_len_events() {
        let t0 = Instant::now();
        let mut store = Store::new();
        for i in 0..=EVENT_LOG_LEN {
            store.register(instance(&format!("x{i}")), Duration::from_secs(5), t0, 0).expect("register");
        }
        // Revisions 1..=1025: the first was dropped, the other 1024 kept.
        assert_eq!(store.services["Calc"].log.len(), EVENT_LOG_LEN);
        // A watcher that saw the dropped event is caught up from the log.
        let caught_up = store.events_after("Calc", Some(1));
        assert_eq!(caught_up.len(), EVENT_LOG_LEN);
        assert!(matches!(caught_up[0], WatchEvent::Add { revision: 2, .. }));
        // One that did not see it starts over.
        assert!(matches!(&store.events_after("Calc", Some(0))[..], [WatchEvent::Reset { .. }]));
    }

    #[test]
    fn a_restored_empty_store_starts_at_revision_zero() {
        let store = Store::restore(0, 0, [], [], Instant::now());
        assert_eq!(store.revision(), 0);
        assert_eq!(Store::restore(5, 0, [], [], Instant::now()).revision(), 5 + RESTORE_REVISION_GAP);
    }

    #[test]
    fn restore_never_reuses_a_lease_id_it_was_given() {
        let t0 = Instant::now();
        // The highest lease id seen may be a lease's, above `last_lease`.
        let mut store = Store::restore(3, 2, [(9, Duration::from_secs(2))], [], t0);
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        assert_eq!(lease, 10);
        // Leases up to `last_lease` were granted, even if none is left:
        // their providers may still hold them, so they are not given again.
        let mut store = Store::restore(3, 20, [(9, Duration::from_secs(2))], [], t0);
        let (lease, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        assert_eq!(lease, 21);
    }

    /// Registers `count` small `Calc` instances `i00`, `i01`, ...
    fn filled(count: usize) -> Store {
        let t0 = Instant::now();
        let mut store = Store::new();
        for i in 0..count {
            store.register(instance(&format!("i{i:02}")), Duration::from_secs(5), t0, 0).expect("register");
        }
        store
    }

    #[test]
    fn a_page_holds_as_many_as_fit_exactly_in_the_budget() {
        let store = filled(5);
        let sizes: Vec<usize> = store.list("Calc").0.iter().map(Instance::encoded_len).collect();
        // A budget of exactly two instances' JSON holds both, not a third.
        let (page, next) = store.instances_page("Calc", None, sizes[0] + sizes[1]);
        assert_eq!((page.len(), next.as_deref()), (2, Some("i01")));
        let (page, next) = store.instances_page("Calc", None, sizes[0] + sizes[1] - 1);
        assert_eq!((page.len(), next.as_deref()), (1, Some("i00")));
        let (page, next) = store.instances_page("Calc", Some("i01"), usize::MAX);
        assert_eq!((page.len(), next), (3, None));

        // Registrations are counted with their overhead, which is an upper
        // bound of what they add to the instance's JSON.
        let registrations = store.registrations(None);
        for registration in &registrations {
            let json = serde_json::to_vec(registration).expect("JSON").len();
            assert!(json <= registration.instance.encoded_len() + REGISTRATION_OVERHEAD, "{json} bytes");
        }
        let cost = |r: &Registration| r.instance.encoded_len() + REGISTRATION_OVERHEAD;
        let two = cost(&registrations[0]) + cost(&registrations[1]);
        let (page, next) = store.registrations_page(None, None, two);
        assert_eq!((page.len(), next), (2, Some(("Calc".to_owned(), "i01".to_owned()))));
        let (page, _) = store.registrations_page(None, None, two - 1);
        assert_eq!(page.len(), 1);
        let (page, next) = store.registrations_page(Some("Calc"), Some(("Calc", "i03")), usize::MAX);
        assert_eq!((page.len(), next), (1, None));

        // Events too, with theirs.
        let events = store.events_after("Calc", Some(0));
        for event in &events {
            let WatchEvent::Add { instance, .. } = event else { panic!("{event:?}") };
            let json = serde_json::to_vec(event).expect("JSON").len();
            assert!(json <= instance.encoded_len() + EVENT_OVERHEAD, "{json} bytes");
        }
        let two = sizes[0] + sizes[1] + 2 * EVENT_OVERHEAD;
        assert_eq!(store.events_page("Calc", Some(0), two).events.len(), 2);
        assert_eq!(store.events_page("Calc", Some(0), two - 1).events.len(), 1);
        assert_eq!(store.events_page("Calc", Some(0), 0).events.len(), 1, "at least one");
    }

    #[test]
    fn registration_pages_cross_services_whatever_their_ids() {
        // The cursor's id applies to its own service only: the next service
        // is listed from its first id, even one that sorts before the cursor.
        let t0 = Instant::now();
        let mut store = Store::new();
        for (service, id) in [("A", "m1"), ("A", "m2"), ("B", "a1"), ("B", "z9")] {
            let instance = Instance::new(service, "127.0.0.1:1").with_id(id);
            store.register(instance, Duration::from_secs(5), t0, 0).expect("register");
        }
        let mut listed = Vec::new();
        let mut after: Option<(String, String)> = None;
        for _ in 0..4 {
            let cursor = after.as_ref().map(|(service, id)| (service.as_str(), id.as_str()));
            let (page, next) = store.registrations_page(None, cursor, 1);
            listed.extend(page.into_iter().map(|r| format!("{}/{}", r.instance.service, r.instance.id)));
            after = next;
        }
        assert_eq!(listed, ["A/m1", "A/m2", "B/a1", "B/z9"]);
        assert_eq!(after, None, "the last page says it is the last");
    }

    #[test]
    fn removal_events_are_counted_by_their_id() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let mut leases = Vec::new();
        for id in ["a", "bb", "ccc"] {
            leases.push(store.register(instance(id), Duration::from_secs(5), t0, 0).expect("register").0);
        }
        let seen = store.revision();
        for lease in leases {
            store.revoke(lease).expect("revoke");
        }
        let removals = store.events_after("Calc", Some(seen));
        let cost = |event: &WatchEvent| match event {
            WatchEvent::Remove { id, .. } => json_len(id) + EVENT_OVERHEAD,
            other => panic!("{other:?}"),
        };
        for event in &removals {
            assert!(serde_json::to_vec(event).expect("JSON").len() <= cost(event));
        }
        let two = cost(&removals[0]) + cost(&removals[1]);
        assert_eq!(store.events_page("Calc", Some(seen), two).events.len(), 2);
        assert_eq!(store.events_page("Calc", Some(seen), two - 1).events.len(), 1);
    }

    #[test]
    fn unknown_services_have_nothing_to_list_or_watch() {
        let store = filled(1);
        assert_eq!(store.instances_page("Nope", None, usize::MAX), (Vec::new(), None));
        assert!(store.registrations(Some("Nope")).is_empty());
        // A watcher of a service never seen, up to date, waits quietly.
        assert!(store.events_after("Nope", Some(store.revision())).is_empty());
        assert!(matches!(
            &store.events_after("Nope", None)[..],
            [WatchEvent::Reset { instances, revision: 1 }] if instances.is_empty()
        ));
    }

    #[test]
    fn invalid_registrations_are_refused() {
        let mut store = Store::new();
        let t0 = Instant::now();
        assert!(matches!(
            store.register(Instance::new("Calc", "nohost"), Duration::from_secs(2), t0, 0),
            Err(StoreError::InvalidInstance(_))
        ));
        assert!(matches!(
            store.register(instance("a"), Duration::from_millis(10), t0, 0),
            Err(StoreError::InvalidTtl(_))
        ));
    }
}
