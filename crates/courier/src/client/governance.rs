//! A discovered channel's governance: the policies its calls follow (retry
//! or hedging, per service and per method; breakers; the budget), the
//! per-method state they keep (a breaker, recent latencies), and the
//! counters an operator reads ([`GovernanceReport`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::resilience::breaker::Breaker;
use crate::resilience::latency::Latencies;
use crate::resilience::striped::Striped;
use crate::resilience::{BreakerPolicy, BreakerState, HedgeDelay, HedgingPolicy, RetryBudget, RetryPolicy};

/// Methods given state of their own at most (configured ones first);
/// calls of further methods (a proxy forwarding names it was sent, say)
/// share one, so a caller cannot grow the table without bound.
const MAX_METHODS: usize = 128;

/// What one method's calls follow: a retry policy, or a hedging policy
/// (for idempotent methods; others use the retry policy).
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodPolicy {
    pub(crate) retry: RetryPolicy,
    pub(crate) hedging: Option<HedgingPolicy>,
}

/// The policies as configured, before any call.
#[derive(Clone, Debug)]
pub(crate) struct Policies {
    pub(crate) service: MethodPolicy,
    pub(crate) methods: HashMap<String, MethodPolicy>,
    pub(crate) instance_breaker: BreakerPolicy,
    pub(crate) method_breaker: BreakerPolicy,
    /// The largest share of instances whose breakers may keep them out
    /// of rotation; beyond it, open ones are tried last rather than never.
    pub(crate) max_ejected_share: f64,
}

impl Default for Policies {
    fn default() -> Policies {
        Policies {
            service: MethodPolicy::default(),
            methods: HashMap::new(),
            instance_breaker: BreakerPolicy::default(),
            // Service-wide: a method fails fast once half of at least 50
            // calls in 10 s failed everywhere; probes as for instances.
            method_breaker: BreakerPolicy::default().min_calls(50).consecutive_failures(50),
            max_ejected_share: 0.5,
        }
    }
}

/// One method's policy and the state its calls share.
#[derive(Debug)]
pub(crate) struct MethodState {
    pub(crate) policy: MethodPolicy,
    pub(crate) breaker: Breaker,
    /// Recent latencies, kept only for an adaptive hedging delay.
    pub(crate) latencies: Option<Latencies>,
}

/// Counters of what governance did, since the channel was built (striped:
/// `calls` and `attempts` are bumped by every call, from every thread).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: Striped,
    pub(crate) attempts: Striped,
    pub(crate) retries: Striped,
    pub(crate) hedges: Striped,
    pub(crate) budget_refusals: Striped,
    pub(crate) breaker_refusals: Striped,
    pub(crate) pushbacks: Striped,
}

impl Counters {
    pub(crate) fn bump(counter: &Striped) {
        counter.add(1);
    }
}

/// A channel's governance: see the module docs.
pub(crate) struct Governance {
    pub(crate) policies: Policies,
    pub(crate) budget: Arc<RetryBudget>,
    /// An open-addressed table, filled once per slot and never emptied:
    /// finding a method's state is a hash and an atomic load, no lock and
    /// no reference count, on every call.
    methods: Box<[OnceLock<Box<MethodEntry>>]>,
    /// Shared by every method beyond [`MAX_METHODS`].
    overflow: MethodState,
    pub(crate) counters: Counters,
}

/// A method's name and state, in its slot.
type MethodEntry = (Box<str>, MethodState);

/// FNV-1a: a method name's slot.
fn slot_of(method: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in method.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash % MAX_METHODS as u64) as usize
}

impl Governance {
    pub(crate) fn new(policies: Policies, budget: Arc<RetryBudget>) -> Governance {
        let overflow = MethodState {
            policy: policies.service.clone(),
            breaker: Breaker::new(policies.method_breaker),
            latencies: None,
        };
        let methods = (0..MAX_METHODS).map(|_| OnceLock::new()).collect();
        let governance = Governance { policies, budget, methods, overflow, counters: Counters::default() };
        // Configured methods take their slots first.
        let configured: Vec<String> = governance.policies.methods.keys().cloned().collect();
        for method in configured {
            governance.method(&method);
        }
        governance
    }

    fn state_for(&self, method: &str) -> MethodState {
        let policy = self.policies.methods.get(method).unwrap_or(&self.policies.service).clone();
        let latencies = match &policy.hedging {
            Some(HedgingPolicy { delay: HedgeDelay::Adaptive { percentile, .. }, .. }) => {
                Some(Latencies::new(*percentile))
            }
            _ => None,
        };
        MethodState { policy, breaker: Breaker::new(self.policies.method_breaker), latencies }
    }

    /// The state of `method`'s calls, made on its first call.
    pub(crate) fn method(&self, method: &str) -> &MethodState {
        let start = slot_of(method);
        for probe in 0..MAX_METHODS {
            let slot = &self.methods[(start + probe) % MAX_METHODS];
            let entry = match slot.get() {
                Some(entry) => entry,
                // Free: take it (or find that another call just did).
                None => slot.get_or_init(|| Box::new((method.into(), self.state_for(method)))),
            };
            if &*entry.0 == method {
                return &entry.1;
            }
        }
        &self.overflow
    }

    /// The method breakers' states at `now`, by method.
    pub(crate) fn method_states(&self, now: Instant) -> Vec<(String, BreakerState)> {
        let mut states: Vec<(String, BreakerState)> = self
            .methods
            .iter()
            .filter_map(|slot| slot.get())
            .map(|entry| (entry.0.to_string(), entry.1.breaker.state(now)))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

/// What a discovered channel's governance did and where its breakers are:
/// see [`Channel::governance`](super::Channel::governance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GovernanceReport {
    /// Calls made.
    pub calls: u64,
    /// Attempts sent to instances (first attempts, retries and hedges).
    pub attempts: u64,
    /// Attempts that were retries of a failed attempt.
    pub retries: u64,
    /// Attempts that were hedges of a slow one.
    pub hedges: u64,
    /// Retries and hedges the retry budget refused.
    pub budget_refusals: u64,
    /// Calls a method's open breaker failed at once.
    pub breaker_refusals: u64,
    /// Server pushbacks honoured.
    pub pushbacks: u64,
    /// Each instance's breaker: the instance's id and address, and state.
    pub instances: Vec<(String, String, BreakerState)>,
    /// Each called method's service-wide breaker.
    pub methods: Vec<(String, BreakerState)>,
}

impl Governance {
    pub(crate) fn report(&self, instances: Vec<(String, String, BreakerState)>) -> GovernanceReport {
        let load = Striped::sum;
        let c = &self.counters;
        GovernanceReport {
            calls: load(&c.calls),
            attempts: load(&c.attempts),
            retries: load(&c.retries),
            hedges: load(&c.hedges),
            budget_refusals: load(&c.budget_refusals),
            breaker_refusals: load(&c.breaker_refusals),
            pushbacks: load(&c.pushbacks),
            instances,
            methods: self.method_states(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_gets_its_own_policy_or_the_services() {
        let mut policies = Policies::default();
        policies.methods.insert("S.Slow".into(), MethodPolicy { retry: RetryPolicy::none(), hedging: None });
        let governance = Governance::new(policies, Arc::default());
        assert_eq!(governance.method("S.Slow").policy.retry, RetryPolicy::none());
        assert_eq!(governance.method("S.Other").policy.retry, RetryPolicy::default());
        assert!(std::ptr::eq(governance.method("S.Other"), governance.method("S.Other")), "made once");
    }

    #[test]
    fn methods_beyond_the_cap_share_one_state() {
        let governance = Governance::new(Policies::default(), Arc::default());
        for n in 0..MAX_METHODS {
            governance.method(&format!("S.M{n}"));
        }
        let a = governance.method("S.Extra1");
        let b = governance.method("S.Extra2");
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, governance.method("S.M7")), "the first ones keep their own");
        assert_eq!(governance.method_states(Instant::now()).len(), MAX_METHODS);
    }
}
