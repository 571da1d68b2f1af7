//! [`Balanced`]: calls spread over the instances of a discovered service.
//!
//! The instance set is replaced as the registry reports changes (see
//! [`super::discover`]); each instance keeps its own endpoint (native or
//! gRPC, chosen from the protocols it offers and the consumer's
//! preference), outstanding-call count and health. A call asks the
//! balancer for an order and tries instances in it, as
//! `resilience::retry` judges each failure: an instance that cannot be
//! reached (nothing was sent) counts a failure against its health and the
//! call moves on; a connection lost after the request was sent moves on
//! only for idempotent methods, since retrying anything else could run it
//! twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use super::call::{Call, Outcome};
use super::endpoint::Endpoint;
use super::protocols::{Preference, Settings, Transport};
use crate::balance::{Balance, Candidate, Picker, Ring};
use crate::discovery::{Instance, InstanceState};
use crate::resilience::outlier::Health;
use crate::resilience::retry::{MAX_ATTEMPTS, Verdict, judge};
use crate::resilience::{Ejection, RetryBudget};
use crate::status::Status;

/// One instance of the set: where it is, how to reach it, how it is doing.
pub(crate) struct Member {
    pub(crate) instance: Instance,
    transport: Transport,
    /// Shared by the members of one instance across updates of its
    /// details, so calls in flight and its health carry over.
    load: Arc<Load>,
}

/// Calls outstanding on an instance, and its health.
#[derive(Default)]
struct Load {
    outstanding: AtomicUsize,
    health: Health,
}

/// The instances at one moment, and the hash ring over them.
struct Set {
    members: Vec<Arc<Member>>,
    ring: Option<Ring>,
}

pub(crate) struct Balanced {
    service: String,
    policy: Balance,
    zone: Option<String>,
    ejection: Ejection,
    /// What moving a call to another instance draws on.
    budget: Arc<RetryBudget>,
    settings: Settings,
    preference: Preference,
    picker: Picker,
    set: RwLock<Arc<Set>>,
    /// Why discovery last failed, for error messages while no instance is known.
    discovery_error: Mutex<Option<String>>,
    /// Never sent on: dropping it (with the channel) tells the discovery
    /// task to stop.
    closed: watch::Sender<()>,
}

/// Counts a call as outstanding on an instance while alive.
struct Outstanding<'a>(&'a Load);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balanced {
    pub(crate) fn new(
        service: String,
        policy: Balance,
        zone: Option<String>,
        ejection: Ejection,
        settings: Settings,
        preference: Preference,
    ) -> Balanced {
        Balanced {
            service,
            policy,
            zone,
            ejection,
            budget: Arc::new(RetryBudget::default()),
            settings,
            preference,
            picker: Picker::default(),
            set: RwLock::new(Arc::new(Set { members: Vec::new(), ring: None })),
            discovery_error: Mutex::new(None),
            closed: watch::Sender::new(()),
        }
    }

    /// Draw retries on `budget` instead of a budget of its own.
    #[must_use]
    pub(crate) fn with_retry_budget(mut self, budget: Arc<RetryBudget>) -> Balanced {
        self.budget = budget;
        self
    }

    /// Resolves (with an error) once this channel is dropped.
    pub(crate) fn closed(&self) -> watch::Receiver<()> {
        self.closed.subscribe()
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn snapshot(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The instances calls may go to now.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.snapshot().members.iter().map(|m| m.instance.clone()).collect()
    }

    pub(crate) fn set_discovery_error(&self, error: Option<String>) {
        *self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Replace the instance set with those of `instances` this client can
    /// call. Members of instances that stay (same id and address) keep their
    /// health and calls in flight, and their connections while the protocol
    /// chosen for them stays the same.
    pub(crate) fn replace(&self, instances: Vec<Instance>) {
        let old = self.snapshot();
        let members: Vec<Arc<Member>> = instances
            .into_iter()
            .filter_map(|instance| {
                let Some(wire) = self.preference.choose(&instance.protocols) else {
                    tracing::debug!(%instance, protocols = ?instance.protocols, "skipping an instance that offers no protocol this client speaks");
                    return None;
                };
                let existing =
                    old.members.iter().find(|m| m.instance.id == instance.id && m.instance.addr == instance.addr);
                Some(match existing {
                    Some(existing) if existing.instance == instance => existing.clone(),
                    Some(existing) => Arc::new(Member {
                        transport: if existing.transport.wire() == wire {
                            existing.transport.clone()
                        } else {
                            self.settings.open(wire, instance.addr.clone())
                        },
                        instance,
                        load: existing.load.clone(),
                    }),
                    None => Arc::new(Member {
                        transport: self.settings.open(wire, instance.addr.clone()),
                        instance,
                        load: Arc::default(),
                    }),
                })
            })
            .collect();
        let ring = (self.policy == Balance::ConsistentHash)
            .then(|| Ring::new(members.iter().map(|m| (m.instance.id.as_str(), m.instance.weight))));
        *self.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Set { members, ring });
    }

    /// The members a call may use, in the order to try them (at most
    /// `MAX_ATTEMPTS`). Three tiers, each ordered by the balancer: healthy
    /// instances in the consumer's zone, then other healthy instances, then
    /// ejected ones and those of weight 0 (better a try than a certain
    /// failure). A call that cannot reach one moves down the list.
    fn order(&self, set: &Set, hash_key: Option<u64>, now: Instant) -> Vec<Arc<Member>> {
        let tier = |member: &Member| -> Option<usize> {
            let instance = &member.instance;
            if instance.state != InstanceState::Serving {
                return None;
            }
            if instance.weight == 0 || member.load.health.is_ejected(now) {
                return Some(2);
            }
            match &self.zone {
                Some(zone) if instance.zone.as_deref() == Some(zone.as_str()) => Some(0),
                _ => Some(1),
            }
        };
        let tiers: Vec<Option<usize>> = set.members.iter().map(|m| tier(m)).collect();
        let mut random = fastrand::Rng::new();
        let mut order = Vec::with_capacity(MAX_ATTEMPTS);
        for wanted in 0..3 {
            let need = MAX_ATTEMPTS - order.len();
            if need == 0 {
                break;
            }
            let members: Vec<usize> = (0..set.members.len()).filter(|&i| tiers[i] == Some(wanted)).collect();
            if members.is_empty() {
                continue;
            }
            let picked: Vec<usize> = match (&set.ring, hash_key) {
                // The ring covers every member; walk it for this tier only.
                (Some(ring), Some(key)) => {
                    ring.walk_where(key, set.members.len(), need, |i| tiers[i] == Some(wanted))
                }
                _ => {
                    let candidates: Vec<Candidate> = members
                        .iter()
                        .map(|&i| {
                            let m = &set.members[i];
                            Candidate {
                                weight: m.instance.weight.max(1),
                                outstanding: m.load.outstanding.load(Ordering::Relaxed),
                            }
                        })
                        .collect();
                    self.picker
                        .order(self.policy, &candidates, &mut random)
                        .into_iter()
                        .take(need)
                        .map(|position| members[position])
                        .collect()
                }
            };
            order.extend(picked.into_iter().map(|i| set.members[i].clone()));
        }
        order
    }

    /// Send `call` to the instances in the balancer's order until one
    /// answers or the call may not move on.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Outcome, Status> {
        let set = self.snapshot();
        let now = Instant::now();
        let order = self.order(&set, call.hash_key, now);
        if order.is_empty() {
            let why = self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            return Err(Status::unavailable(match why {
                Some(why) => format!("no instance of {} is known ({why})", self.service),
                None => format!("no instance of {} is registered", self.service),
            }));
        }
        let mut last_error = None;
        self.budget.deposit(now);
        // Whether the last attempt may have reached its server: moving on
        // after one is a retry that loads the servers again, so it must fit
        // the budget (an outage is then not multiplied by retries). Moving
        // on from an instance nothing reached costs the servers nothing.
        let mut retrying = false;
        for member in order {
            if retrying && !self.budget.try_withdraw(Instant::now()) {
                let last = last_error.map_or_else(String::new, |status: Status| status.to_string());
                return Err(Status::unavailable(format!(
                    "the retry budget of {} is spent (too many calls are failing); last: {last}",
                    self.service
                )));
            }
            member.load.outstanding.fetch_add(1, Ordering::Relaxed);
            let _outstanding = Outstanding(&member.load);
            let error = match member.transport.call(call).await {
                Ok(outcome) => {
                    // An answer, whatever its status: the instance works.
                    member.load.health.success();
                    return Ok(outcome);
                }
                Err(error) => error,
            };
            match judge(&error, call.retry) {
                Verdict::Unreachable => {
                    retrying = false;
                    let status = error.into_status();
                    if member.load.health.failure(Instant::now(), &self.ejection) {
                        tracing::info!(instance = %member.instance, %status, "ejecting an unreachable instance");
                    }
                    last_error = Some(status);
                }
                Verdict::Lost { move_on } => {
                    member.load.health.failure(Instant::now(), &self.ejection);
                    let status = error.into_status();
                    if !move_on {
                        return Err(status);
                    }
                    retrying = true;
                    last_error = Some(status);
                }
                Verdict::Failed => {
                    member.load.health.success();
                    return Err(error.into_status());
                }
            }
        }
        let last = last_error.map_or_else(String::new, |status| status.to_string());
        Err(Status::unavailable(format!("no instance of {} could be reached; last: {last}", self.service)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced(zone: Option<&str>, policy: Balance) -> Balanced {
        Balanced::new(
            "S".into(),
            policy,
            zone.map(str::to_owned),
            Ejection::default(),
            Settings::default(),
            Preference::default(),
        )
    }

    fn instance(id: &str, zone: &str) -> Instance {
        Instance::new("S", format!("127.0.0.1:1{}", id.len())).with_id(id).with_zone(zone)
    }

    fn ids(order: &[Arc<Member>]) -> Vec<&str> {
        order.iter().map(|e| e.instance.id.as_str()).collect()
    }

    #[test]
    fn an_update_keeps_the_calls_in_flight_and_the_health_of_an_instance() {
        let b = balanced(None, Balance::P2c);
        b.replace(vec![instance("a", "z")]);
        let load = b.snapshot().members[0].load.clone();
        load.outstanding.fetch_add(2, Ordering::Relaxed);
        for _ in 0..3 {
            load.health.failure(Instant::now(), &Ejection::default());
        }
        b.replace(vec![instance("a", "z").with_weight(7)]);
        let after = b.snapshot();
        assert_eq!(after.members[0].instance.weight, 7);
        assert!(Arc::ptr_eq(&load, &after.members[0].load), "the load is shared, not copied");
        // A call that started before the update finishes after it: the
        // count goes back down rather than staying inflated.
        drop(Outstanding(&after.members[0].load));
        assert_eq!(load.outstanding.load(Ordering::Relaxed), 1);
        assert!(after.members[0].load.health.is_ejected(Instant::now()), "health carries over");
    }

    #[test]
    fn instances_offering_no_protocol_this_client_speaks_are_left_out() {
        let b = balanced(None, Balance::RoundRobin);
        let mut foreign = instance("json-only", "z");
        foreign.protocols = vec!["jsonrpc".to_owned(), "http".to_owned()];
        let mut unlabelled = instance("etcdctl", "z");
        unlabelled.protocols = Vec::new();
        b.replace(vec![instance("native", "z"), foreign, unlabelled]);
        let ids: Vec<String> = b.instances().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["native", "etcdctl"]);
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn a_change_of_protocol_opens_a_new_endpoint_and_keeps_the_health() {
        use super::super::protocols::Wire;
        let b = balanced(None, Balance::RoundRobin);
        let mut both = instance("a", "z");
        both.protocols = vec!["courier".to_owned(), "grpc".to_owned()];
        b.replace(vec![both.clone()]);
        let before = b.snapshot().members[0].clone();
        assert_eq!(before.transport.wire(), Wire::Native, "native is preferred");
        // A new weight only: the same endpoint.
        b.replace(vec![both.clone().with_weight(2)]);
        assert_eq!(b.snapshot().members[0].transport.wire(), Wire::Native);
        // Restarted offering gRPC only: the same instance, now called over gRPC.
        let mut grpc_only = both;
        grpc_only.protocols = vec!["grpc".to_owned()];
        b.replace(vec![grpc_only]);
        let after = b.snapshot().members[0].clone();
        assert_eq!(after.transport.wire(), Wire::Grpc);
        assert!(Arc::ptr_eq(&before.load, &after.load), "health and calls in flight carry over");
    }

    #[test]
    fn the_order_is_own_zone_then_other_zones_then_ejected() {
        let b = balanced(Some("near"), Balance::RoundRobin);
        b.replace(vec![instance("n", "near"), instance("f1", "far"), instance("ejected", "near")]);
        let set = b.snapshot();
        let ejected = set.members.iter().find(|e| e.instance.id == "ejected").map(|e| e.load.clone());
        let ejected = ejected.expect("the instance is there");
        for _ in 0..3 {
            ejected.health.failure(Instant::now(), &Ejection::default());
        }
        for _ in 0..10 {
            assert_eq!(ids(&b.order(&set, None, Instant::now())), ["n", "f1", "ejected"]);
        }
    }

    #[test]
    fn at_most_three_instances_are_tried_and_draining_ones_never() {
        let b = balanced(None, Balance::RoundRobin);
        let mut instances: Vec<Instance> =
            ["a", "bb", "ccc", "dddd"].iter().map(|id| instance(id, "z")).collect();
        instances[0].state = InstanceState::Draining;
        b.replace(instances);
        let set = b.snapshot();
        for _ in 0..10 {
            let order = b.order(&set, None, Instant::now());
            assert_eq!(order.len(), MAX_ATTEMPTS);
            assert!(!ids(&order).contains(&"a"));
        }
    }

    #[test]
    fn consistent_hashing_falls_back_along_the_ring_within_each_tier() {
        let b = balanced(Some("near"), Balance::ConsistentHash);
        b.replace(vec![instance("n1", "near"), instance("n22", "near"), instance("f333", "far")]);
        let set = b.snapshot();
        let key = Some(crate::balance::hash_key(b"user-42"));
        let first =
            ids(&b.order(&set, key, Instant::now())).iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(first.len(), 3);
        assert!(first[0].starts_with('n') && first[1].starts_with('n'), "own zone first: {first:?}");
        assert_eq!(first[2], "f333");
        for _ in 0..10 {
            assert_eq!(ids(&b.order(&set, key, Instant::now())), first, "the same key, the same order");
        }
    }
}
