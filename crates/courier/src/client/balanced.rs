//! [`Balanced`]: calls spread over the instances of a discovered service.
//!
//! The instance set is replaced as the registry reports changes (see
//! [`super::discover`]); each instance keeps its own endpoint (native or
//! gRPC, chosen from the protocols it offers and the consumer's
//! preference), outstanding-call count and circuit breaker. A call asks
//! for an order ([`Balanced::order`]): healthy instances as the balancer
//! ranks them, those whose breakers are open left out (or, beyond the
//! share that may be, tried last). [`super::attempts`] sends it along that
//! order under the method's retry or hedging policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use super::governance::{Governance, GovernanceReport};
use super::protocols::{Preference, Settings, Transport};
use crate::balance::{Balance, Candidate, Picker, Ring};
use crate::discovery::{Instance, InstanceState};
use crate::resilience::BreakerPolicy;
use crate::resilience::breaker::Breaker;
use crate::resilience::policy::MAX_ATTEMPTS_CAP;
use crate::status::Status;

/// One instance of the set: where it is, how to reach it, how it is doing.
pub(crate) struct Member {
    pub(crate) instance: Instance,
    pub(crate) transport: Transport,
    /// Shared by the members of one instance across updates of its
    /// details, so calls in flight and its breaker carry over.
    pub(crate) load: Arc<Load>,
}

/// Calls outstanding on an instance, and its breaker.
pub(crate) struct Load {
    outstanding: AtomicUsize,
    pub(crate) breaker: Breaker,
}

impl Load {
    fn new(policy: BreakerPolicy) -> Load {
        Load { outstanding: AtomicUsize::new(0), breaker: Breaker::new(policy) }
    }

    /// Count a call outstanding here until the guard drops.
    pub(crate) fn start(&self) -> Outstanding<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self)
    }
}

/// The instances at one moment, and the hash ring over them.
pub(crate) struct Set {
    pub(super) members: Vec<Arc<Member>>,
    ring: Option<Ring>,
}

/// One instance a call may try, in order.
pub(crate) struct Pick {
    pub(crate) member: Arc<Member>,
    /// Its breaker is open, but so many are that it is tried anyway (last).
    pub(crate) forced: bool,
}

pub(crate) struct Balanced {
    service: String,
    policy: Balance,
    zone: Option<String>,
    pub(crate) governance: Governance,
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
pub(crate) struct Outstanding<'a>(&'a Load);

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
        governance: Governance,
        settings: Settings,
        preference: Preference,
    ) -> Balanced {
        Balanced {
            service,
            policy,
            zone,
            governance,
            settings,
            preference,
            picker: Picker::default(),
            set: RwLock::new(Arc::new(Set { members: Vec::new(), ring: None })),
            discovery_error: Mutex::new(None),
            closed: watch::Sender::new(()),
        }
    }

    /// Resolves (with an error) once this channel is dropped.
    pub(crate) fn closed(&self) -> watch::Receiver<()> {
        self.closed.subscribe()
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn snapshot(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The instances calls may go to now.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.snapshot().members.iter().map(|m| m.instance.clone()).collect()
    }

    /// What governance did, and every breaker's state now.
    pub(crate) fn report(&self) -> GovernanceReport {
        let now = Instant::now();
        let instances = self
            .snapshot()
            .members
            .iter()
            .map(|m| (m.instance.id.clone(), m.instance.addr.clone(), m.load.breaker.state(now)))
            .collect();
        self.governance.report(instances)
    }

    pub(crate) fn set_discovery_error(&self, error: Option<String>) {
        *self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// The error for a call with no instance to go to.
    pub(crate) fn nothing_known(&self) -> Status {
        let why = self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        Status::unavailable(match why {
            Some(why) => format!("no instance of {} is known ({why})", self.service),
            None => format!("no instance of {} is registered", self.service),
        })
    }

    /// Replace the instance set with those of `instances` this client can
    /// call. Members of instances that stay (same id and address) keep their
    /// breaker and calls in flight, and their connections while the protocol
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
                        load: Arc::new(Load::new(self.governance.policies.instance_breaker)),
                    }),
                })
            })
            .collect();
        let ring = (self.policy == Balance::ConsistentHash)
            .then(|| Ring::new(members.iter().map(|m| (m.instance.id.as_str(), m.instance.weight))));
        *self.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Set { members, ring });
    }

    /// The instances a call may try, in order (at most
    /// [`MAX_ATTEMPTS_CAP`]). Three tiers, each ordered by the balancer:
    /// instances in the consumer's zone, then the others, then those of
    /// weight 0. Instances whose breakers are open are left out, unless
    /// more than the configured share of all are: then they come last,
    /// after the weight-0 ones (when everything looks broken, trying beats
    /// certain failure). Draining instances are never tried.
    pub(crate) fn order(&self, set: &Set, hash_key: Option<u64>, now: Instant) -> Vec<Pick> {
        let open: Vec<bool> = set.members.iter().map(|m| !m.load.breaker.would_pass(now)).collect();
        let serving = set.members.iter().filter(|m| m.instance.state == InstanceState::Serving).count();
        let open_count = open
            .iter()
            .zip(&set.members)
            .filter(|(open, m)| **open && m.instance.state == InstanceState::Serving)
            .count();
        // The share is of the instances serving, rounded down: of 3 with
        // the default half, 1 may be out.
        let may_be_out = (self.governance.policies.max_ejected_share * serving as f64).floor() as usize;
        let keep_open = open_count > may_be_out;
        let tier = |i: usize| -> Option<usize> {
            let instance = &set.members[i].instance;
            if instance.state != InstanceState::Serving {
                return None;
            }
            if open[i] {
                return keep_open.then_some(3);
            }
            if instance.weight == 0 {
                return Some(2);
            }
            match &self.zone {
                Some(zone) if instance.zone.as_deref() == Some(zone.as_str()) => Some(0),
                _ => Some(1),
            }
        };
        let tiers: Vec<Option<usize>> = (0..set.members.len()).map(tier).collect();
        let mut random = fastrand::Rng::new();
        let mut order = Vec::with_capacity(MAX_ATTEMPTS_CAP as usize);
        for wanted in 0..4 {
            let need = MAX_ATTEMPTS_CAP as usize - order.len();
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
            order.extend(
                picked.into_iter().map(|i| Pick { member: set.members[i].clone(), forced: wanted == 3 }),
            );
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::governance::Policies;
    use crate::resilience::breaker::Verdict;

    fn balanced(zone: Option<&str>, policy: Balance) -> Balanced {
        Balanced::new(
            "S".into(),
            policy,
            zone.map(str::to_owned),
            Governance::new(Policies::default(), Arc::default()),
            Settings::default(),
            Preference::default(),
        )
    }

    /// Open `load`'s breaker (the default opens after 5 failures in a row).
    fn trip(load: &Load) {
        let now = Instant::now();
        for _ in 0..5 {
            let pass = load.breaker.try_pass(now).expect("closed");
            load.breaker.record(pass, Verdict::Failure, now);
        }
    }

    fn instance(id: &str, zone: &str) -> Instance {
        Instance::new("S", format!("127.0.0.1:1{}", id.len())).with_id(id).with_zone(zone)
    }

    fn ids(order: &[Pick]) -> Vec<&str> {
        order.iter().map(|p| p.member.instance.id.as_str()).collect()
    }

    #[test]
    fn an_update_keeps_the_calls_in_flight_and_the_breaker_of_an_instance() {
        let b = balanced(None, Balance::P2c);
        b.replace(vec![instance("a", "z")]);
        let load = b.snapshot().members[0].load.clone();
        load.outstanding.fetch_add(2, Ordering::Relaxed);
        trip(&load);
        b.replace(vec![instance("a", "z").with_weight(7)]);
        let after = b.snapshot();
        assert_eq!(after.members[0].instance.weight, 7);
        assert!(Arc::ptr_eq(&load, &after.members[0].load), "the load is shared, not copied");
        // A call that started before the update finishes after it: the
        // count goes back down rather than staying inflated.
        drop(Outstanding(&after.members[0].load));
        assert_eq!(load.outstanding.load(Ordering::Relaxed), 1);
        assert!(!after.members[0].load.breaker.would_pass(Instant::now()), "the open breaker carries over");
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
    fn a_change_of_protocol_opens_a_new_endpoint_and_keeps_the_breaker() {
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
        assert!(Arc::ptr_eq(&before.load, &after.load), "the breaker and calls in flight carry over");
    }

    #[test]
    fn the_order_is_own_zone_then_other_zones_and_open_breakers_are_left_out() {
        let b = balanced(Some("near"), Balance::RoundRobin);
        b.replace(vec![instance("n", "near"), instance("f1", "far"), instance("open", "near")]);
        let set = b.snapshot();
        let open = set.members.iter().find(|m| m.instance.id == "open").map(|m| m.load.clone());
        trip(&open.expect("the instance is there"));
        for _ in 0..10 {
            assert_eq!(ids(&b.order(&set, None, Instant::now())), ["n", "f1"]);
        }
    }

    #[test]
    fn beyond_the_share_that_may_be_out_open_instances_are_tried_last() {
        let b = balanced(None, Balance::RoundRobin);
        b.replace(vec![instance("a", "z"), instance("bb", "z"), instance("ccc", "z")]);
        let set = b.snapshot();
        // Two of three open: more than half, so both stay, last and forced.
        for m in set.members.iter().filter(|m| m.instance.id != "a") {
            trip(&m.load);
        }
        let order = b.order(&set, None, Instant::now());
        assert_eq!(ids(&order)[0], "a");
        assert_eq!(order.len(), 3);
        assert!(!order[0].forced && order[1].forced && order[2].forced);
        // All open: all tried.
        trip(&set.members[0].load);
        assert_eq!(b.order(&set, None, Instant::now()).len(), 3);
    }

    #[test]
    fn at_most_five_instances_are_tried_and_draining_ones_never() {
        let b = balanced(None, Balance::RoundRobin);
        let mut instances: Vec<Instance> = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg"]
            .iter()
            .map(|id| instance(id, "z"))
            .collect();
        instances[0].state = InstanceState::Draining;
        b.replace(instances);
        let set = b.snapshot();
        for _ in 0..10 {
            let order = b.order(&set, None, Instant::now());
            assert_eq!(order.len(), MAX_ATTEMPTS_CAP as usize);
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
