//! The registry's state machine: instances by service, leases with TTLs, a
//! revision counter, and a per-service event log that watchers resume from.
//!
//! Sans-IO and synchronous: callers pass the current time and get back the
//! changes to persist (the registry server writes them to disk before it
//! answers) and the services whose watchers to wake. The in-process `mem://`
//! backend and the bundled registry server both run on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Instance, WatchEvent};

/// How many events each service keeps for watchers that resume; a watcher
/// further behind gets a fresh `Reset`.
pub const EVENT_LOG_LEN: usize = 1024;

/// One registered instance with its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The instance.
    pub instance: Instance,
    /// The lease keeping it registered.
    pub lease: u64,
    /// When it was registered, in milliseconds since the Unix epoch.
    pub registered_unix_ms: u64,
}

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
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires_at: Instant,
    keys: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Service {
    instances: BTreeMap<String, Registration>,
    log: VecDeque<WatchEvent>,
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
    services: HashMap<String, Service>,
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
    /// lease id ever granted, so ids are never reused.
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
            store.leases.insert(id, Lease { ttl, expires_at: now + ttl, keys: Vec::new() });
        }
        for registration in registrations {
            let key = (registration.instance.service.clone(), registration.instance.id.clone());
            match store.leases.get_mut(&registration.lease) {
                Some(lease) => lease.keys.push(key.clone()),
                // A registration whose lease was lost is dropped.
                None => continue,
            }
            store
                .services
                .entry(key.0)
                .or_default()
                .instances
                .insert(registration.instance.id.clone(), registration);
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
        let mut outcome = Outcome::default();
        self.next_lease += 1;
        let lease_id = self.next_lease;
        let key = (instance.service.clone(), instance.id.clone());
        // Re-registering the same instance moves it to the new lease.
        if let Some(previous) = self.services.get(&key.0).and_then(|s| s.instances.get(&key.1)) {
            let old = previous.lease;
            if let Some(lease) = self.leases.get_mut(&old) {
                lease.keys.retain(|k| *k != key);
            }
        }
        self.leases.insert(lease_id, Lease { ttl, expires_at: now + ttl, keys: vec![key.clone()] });
        outcome.changes.push(Change::PutLease { id: lease_id, ttl });
        let registration = Registration { instance, lease: lease_id, registered_unix_ms: now_unix_ms };
        // A service new (or new again) cannot catch up a watcher that may
        // have missed the end of its previous life.
        let pruned_through = self.pruned_through;
        let service = self
            .services
            .entry(key.0.clone())
            .or_insert_with(|| Service { dropped_through: pruned_through, ..Service::default() });
        service.emptied_at = None;
        let existed = service.instances.insert(key.1.clone(), registration.clone()).is_some();
        self.revision += 1;
        let event = if existed {
            WatchEvent::Update { instance: registration.instance.clone(), revision: self.revision }
        } else {
            WatchEvent::Add { instance: registration.instance.clone(), revision: self.revision }
        };
        push_event(service, event);
        outcome.changes.push(Change::Put(registration));
        outcome.changes.push(Change::Revision(self.revision));
        outcome.touched.push(key.0);
        self.prune_emptied();
        Ok((lease_id, outcome))
    }

    /// Renew a lease for another TTL.
    pub fn keep_alive(&mut self, lease: u64, now: Instant) -> Result<Duration, StoreError> {
        let entry = self.leases.get_mut(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        entry.expires_at = now + entry.ttl;
        Ok(entry.ttl)
    }

    /// Revoke a lease, removing its instances.
    pub fn revoke(&mut self, lease: u64) -> Result<Outcome, StoreError> {
        let entry = self.leases.remove(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        let mut outcome = Outcome::default();
        outcome.changes.push(Change::DeleteLease(lease));
        self.remove_keys(entry.keys, &mut outcome);
        Ok(outcome)
    }

    /// Expire leases whose TTL passed; returns what changed and when the
    /// next lease expires.
    pub fn expire(&mut self, now: Instant) -> (Outcome, Option<Instant>) {
        let expired: Vec<u64> =
            self.leases.iter().filter(|(_, lease)| lease.expires_at <= now).map(|(id, _)| *id).collect();
        let mut outcome = Outcome::default();
        for id in expired {
            if let Some(lease) = self.leases.remove(&id) {
                outcome.changes.push(Change::DeleteLease(id));
                self.remove_keys(lease.keys, &mut outcome);
            }
        }
        (outcome, self.leases.values().map(|lease| lease.expires_at).min())
    }

    fn remove_keys(&mut self, keys: Vec<(String, String)>, outcome: &mut Outcome) {
        for (service_name, id) in keys {
            let Some(service) = self.services.get_mut(&service_name) else { continue };
            if service.instances.remove(&id).is_none() {
                continue;
            }
            self.revision += 1;
            push_event(service, WatchEvent::Remove { id: id.clone(), revision: self.revision });
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

    /// The instances of `service` and the current revision.
    pub fn list(&self, service: &str) -> (Vec<Instance>, u64) {
        let instances = self
            .services
            .get(service)
            .map(|s| s.instances.values().map(|r| r.instance.clone()).collect())
            .unwrap_or_default();
        (instances, self.revision)
    }

    /// Every registration, optionally of one service.
    pub fn registrations(&self, service: Option<&str>) -> Vec<Registration> {
        let mut out: Vec<Registration> = self
            .services
            .iter()
            .filter(|(name, _)| service.is_none_or(|wanted| wanted == name.as_str()))
            .flat_map(|(_, s)| s.instances.values().cloned())
            .collect();
        out.sort_by(|a, b| (&a.instance.service, &a.instance.id).cmp(&(&b.instance.service, &b.instance.id)));
        out
    }

    /// The TTL of a lease, if it exists.
    pub fn lease_ttl(&self, lease: u64) -> Option<Duration> {
        self.leases.get(&lease).map(|l| l.ttl)
    }

    /// What a watcher of `service` that has seen everything up to `after`
    /// needs next: the events since, or a `Reset` when the log no longer
    /// reaches back that far (or `after` is `None`). Empty when up to date.
    pub fn events_after(&self, service: &str, after: Option<u64>) -> Vec<WatchEvent> {
        let reset = || {
            let (instances, revision) = self.list(service);
            vec![WatchEvent::Reset { instances, revision }]
        };
        let Some(after) = after else { return reset() };
        if after > self.revision {
            // From the future: the watcher talked to another registry (or one
            // that lost data). Start it over.
            return reset();
        }
        if after < self.floor {
            return reset();
        }
        let Some(entry) = self.services.get(service) else {
            return if after < self.pruned_through { reset() } else { Vec::new() };
        };
        if after < entry.dropped_through {
            return reset();
        }
        entry.log.iter().filter(|event| event.revision() > after).cloned().collect()
    }
}

fn push_event(service: &mut Service, event: WatchEvent) {
    if service.log.len() >= EVENT_LOG_LEN
        && let Some(dropped) = service.log.pop_front()
    {
        service.dropped_through = dropped.revision();
    }
    service.log.push_back(event);
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
        for i in 0..(EVENT_LOG_LEN + 10) {
            store
                .register(instance(&"x".repeat(i % 5 + 1)), Duration::from_secs(5), t0, 0)
                .expect("register");
        }
        assert!(matches!(&store.events_after("Calc", Some(1))[..], [WatchEvent::Reset { .. }]));
        let recent = store.events_after("Calc", Some(store.revision() - 3));
        assert_eq!(recent.len(), 3);
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
    fn re_registering_an_instance_is_an_update_under_the_new_lease() {
        let t0 = Instant::now();
        let mut store = Store::new();
        let (old, _) = store.register(instance("a"), Duration::from_secs(2), t0, 0).expect("register");
        let (new, _) =
            store.register(instance("a").with_weight(5), Duration::from_secs(2), t0, 0).expect("again");
        assert!(matches!(&store.events_after("Calc", Some(1))[..], [WatchEvent::Update { .. }]));
        // Revoking the old lease no longer removes the instance.
        store.revoke(old).expect("revoke old");
        assert_eq!(store.list("Calc").0[0].weight, 5);
        store.revoke(new).expect("revoke new");
        assert!(store.list("Calc").0.is_empty());
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
