//! [`Balanced`]: calls spread over the instances of a discovered service.
//!
//! The instance set is replaced as the registry reports changes (see
//! [`super::discover`]); each instance keeps its own [`Direct`] channel,
//! outstanding-call count and health. A call asks the balancer for an order
//! and tries instances in it: an instance that cannot be reached (nothing
//! was sent) counts a failure against its health and the call moves on; a
//! connection lost after the request was sent moves on only for idempotent
//! methods, since retrying anything else could run it twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::BytesMut;

use super::channel::Retry;
use super::config::ChannelConfig;
use super::direct::{AttemptError, Direct};
use super::options::CallOptions;
use crate::balance::{Balance, Candidate, Picker, Ring};
use crate::discovery::{Instance, InstanceState};
use crate::protocol::native::{Frame, FrameKind};
use crate::resilience::Ejection;
use crate::resilience::outlier::Health;
use crate::status::{Code, Status};

/// Instances tried per call at most.
const MAX_ATTEMPTS: usize = 3;

/// One instance: where it is, how to reach it, how it is doing.
pub(crate) struct Endpoint {
    pub(crate) instance: Instance,
    direct: Arc<Direct>,
    outstanding: AtomicUsize,
    health: Health,
}

/// The instances at one moment, and the hash ring over them.
struct Set {
    endpoints: Vec<Arc<Endpoint>>,
    ring: Option<Ring>,
}

pub(crate) struct Balanced {
    service: String,
    policy: Balance,
    zone: Option<String>,
    ejection: Ejection,
    config: ChannelConfig,
    picker: Picker,
    set: RwLock<Arc<Set>>,
    /// Why discovery last failed, for error messages while no instance is known.
    discovery_error: Mutex<Option<String>>,
}

/// Counts a call as outstanding on an endpoint while alive.
struct Outstanding<'a>(&'a Endpoint);

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
        config: ChannelConfig,
    ) -> Balanced {
        Balanced {
            service,
            policy,
            zone,
            ejection,
            config,
            picker: Picker::default(),
            set: RwLock::new(Arc::new(Set { endpoints: Vec::new(), ring: None })),
            discovery_error: Mutex::new(None),
        }
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn snapshot(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The instances calls may go to now.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.snapshot().endpoints.iter().map(|e| e.instance.clone()).collect()
    }

    pub(crate) fn set_discovery_error(&self, error: Option<String>) {
        *self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Replace the instance set. Endpoints of instances that stay (same id
    /// and address) are kept, with their connections and health.
    pub(crate) fn replace(&self, instances: Vec<Instance>) {
        let old = self.snapshot();
        let endpoints: Vec<Arc<Endpoint>> = instances
            .into_iter()
            .map(|instance| {
                match old
                    .endpoints
                    .iter()
                    .find(|e| e.instance.id == instance.id && e.instance.addr == instance.addr)
                {
                    Some(existing) if existing.instance == instance => existing.clone(),
                    Some(existing) => Arc::new(Endpoint {
                        instance,
                        direct: existing.direct.clone(),
                        outstanding: AtomicUsize::new(existing.outstanding.load(Ordering::Relaxed)),
                        health: Health::default(),
                    }),
                    None => Arc::new(Endpoint {
                        direct: Direct::new(instance.addr.clone(), self.config.clone()),
                        instance,
                        outstanding: AtomicUsize::new(0),
                        health: Health::default(),
                    }),
                }
            })
            .collect();
        let ring = (self.policy == Balance::ConsistentHash)
            .then(|| Ring::new(endpoints.iter().map(|e| (e.instance.id.as_str(), e.instance.weight))));
        *self.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(Set { endpoints, ring });
    }

    /// The endpoints a call may use, in the order to try them.
    fn order(&self, set: &Set, options: &CallOptions) -> Vec<Arc<Endpoint>> {
        let now = Instant::now();
        let serving: Vec<usize> = (0..set.endpoints.len())
            .filter(|&i| set.endpoints[i].instance.state == InstanceState::Serving)
            .collect();
        let healthy = |i: &usize| !set.endpoints[*i].health.is_ejected(now);
        // Prefer the consumer's zone while it has a healthy instance.
        let in_zone: Vec<usize> = match &self.zone {
            Some(zone) => serving
                .iter()
                .copied()
                .filter(|&i| set.endpoints[i].instance.zone.as_deref() == Some(zone.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let pool = if in_zone.iter().any(healthy) { in_zone } else { serving };
        // Ejected instances only when nothing else is left (better a try
        // than a certain failure).
        let mut usable: Vec<usize> = pool.iter().copied().filter(healthy).collect();
        if usable.is_empty() {
            usable = pool;
        }
        let candidates: Vec<Candidate> = usable
            .iter()
            .map(|&i| {
                let e = &set.endpoints[i];
                Candidate { weight: e.instance.weight, outstanding: e.outstanding.load(Ordering::Relaxed) }
            })
            .collect();
        let mut random = fastrand::Rng::new();
        let order: Vec<usize> = match (&set.ring, options.hash_key()) {
            // The ring covers every endpoint; keep the usable ones, in ring order.
            (Some(ring), Some(key)) => ring
                .walk(key, set.endpoints.len())
                .into_iter()
                .filter_map(|i| usable.iter().position(|&u| u == i))
                .collect(),
            _ => self.picker.order(self.policy, &candidates, None, None, &mut random),
        };
        order.into_iter().map(|position| set.endpoints[usable[position]].clone()).collect()
    }

    pub(crate) async fn send(
        &self,
        kind: FrameKind,
        method: &str,
        options: &CallOptions,
        deadline: Option<Instant>,
        retry: Retry,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Option<Frame>, Status> {
        let set = self.snapshot();
        let order = self.order(&set, options);
        if order.is_empty() {
            let why = self.discovery_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            return Err(Status::unavailable(match why {
                Some(why) => format!("no instance of {} is known ({why})", self.service),
                None => format!("no instance of {} is registered", self.service),
            }));
        }
        let mut last_error = None;
        for endpoint in order.into_iter().take(MAX_ATTEMPTS) {
            endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
            let _outstanding = Outstanding(&endpoint);
            match endpoint.direct.attempt(kind, method, options, deadline, encode_body).await {
                Ok(frame) => {
                    endpoint.health.success();
                    return Ok(frame);
                }
                Err(AttemptError::NotSent(status)) => {
                    if endpoint.health.failure(Instant::now(), &self.ejection) {
                        tracing::info!(instance = %endpoint.instance, %status, "ejecting an unreachable instance");
                    }
                    last_error = Some(status);
                }
                Err(AttemptError::Failed(status)) if status.code() == Code::Unavailable => {
                    // The connection was lost after the request went out: it
                    // may have run. Only an idempotent call moves on.
                    endpoint.health.failure(Instant::now(), &self.ejection);
                    if retry == Retry::IfNotSent {
                        return Err(status);
                    }
                    last_error = Some(status);
                }
                Err(AttemptError::Failed(status)) => {
                    endpoint.health.success();
                    return Err(status);
                }
            }
        }
        let last = last_error.map_or_else(String::new, |status| status.to_string());
        Err(Status::unavailable(format!("no instance of {} could be reached; last: {last}", self.service)))
    }
}
