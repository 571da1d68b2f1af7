//! A discovered channel's governance: the policies its calls follow (retry
//! or hedging, per service and per method; breakers; the budget), the
//! per-method state they keep (a breaker, recent latencies), and the
//! counters an operator reads ([`GovernanceReport`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::resilience::breaker::Breaker;
use crate::resilience::latency::Latencies;
use crate::resilience::{BreakerPolicy, BreakerState, HedgeDelay, HedgingPolicy, RetryBudget, RetryPolicy};

/// Methods given state of their own at most; calls of further methods
/// (a proxy forwarding names it was sent, say) share one, so a caller
/// cannot grow the map without bound.
const MAX_METHODS: usize = 1024;

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

/// Counters of what governance did, since the channel was built.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) breaker_refusals: AtomicU64,
    pub(crate) pushbacks: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A channel's governance: see the module docs.
pub(crate) struct Governance {
    pub(crate) policies: Policies,
    pub(crate) budget: Arc<RetryBudget>,
    methods: RwLock<HashMap<Box<str>, Arc<MethodState>>>,
    /// Shared by every method beyond [`MAX_METHODS`].
    overflow: Arc<MethodState>,
    pub(crate) counters: Counters,
}

impl Governance {
    pub(crate) fn new(policies: Policies, budget: Arc<RetryBudget>) -> Governance {
        let overflow = Arc::new(MethodState {
            policy: policies.service.clone(),
            breaker: Breaker::new(policies.method_breaker),
            latencies: None,
        });
        Governance { policies, budget, methods: RwLock::default(), overflow, counters: Counters::default() }
    }

    /// The state of `method`'s calls, made on its first call.
    pub(crate) fn method(&self, method: &str) -> Arc<MethodState> {
        if let Some(state) = self.methods.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(method)
        {
            return state.clone();
        }
        let mut methods = self.methods.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(state) = methods.get(method) {
            return state.clone();
        }
        if methods.len() >= MAX_METHODS {
            return self.overflow.clone();
        }
        let policy = self.policies.methods.get(method).unwrap_or(&self.policies.service).clone();
        let latencies = match &policy.hedging {
            Some(HedgingPolicy { delay: HedgeDelay::Adaptive { percentile, .. }, .. }) => {
                Some(Latencies::new(*percentile))
            }
            _ => None,
        };
        let state =
            Arc::new(MethodState { policy, breaker: Breaker::new(self.policies.method_breaker), latencies });
        methods.insert(method.into(), state.clone());
        state
    }

    /// The method breakers' states at `now`, by method.
    pub(crate) fn method_states(&self, now: Instant) -> Vec<(String, BreakerState)> {
        let methods = self.methods.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut states: Vec<(String, BreakerState)> =
            methods.iter().map(|(name, state)| (name.to_string(), state.breaker.state(now))).collect();
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
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
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
        assert!(Arc::ptr_eq(&governance.method("S.Other"), &governance.method("S.Other")), "made once");
    }

    #[test]
    fn methods_beyond_the_cap_share_one_state() {
        let governance = Governance::new(Policies::default(), Arc::default());
        for n in 0..MAX_METHODS {
            governance.method(&format!("S.M{n}"));
        }
        let a = governance.method("S.Extra1");
        let b = governance.method("S.Extra2");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(governance.method_states(Instant::now()).len(), MAX_METHODS);
    }
}
