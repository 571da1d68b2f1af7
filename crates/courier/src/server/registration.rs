//! Registering a server's services in a registry, for as long as it runs.
//!
//! After the listener is bound, one task per service registers an instance
//! and keeps its lease alive at a third of the TTL; a renewal may take only
//! as long as the lease has left, and a failed one is retried soon. If the
//! lease is lost (it ran out while the registry was unreachable, or the
//! registry forgot it), the task registers again after a short random pause;
//! if the registry cannot be reached, it retries with jittered backoff
//! (dubbo#5125: a lost session must re-register, and not all at the same
//! moment). On graceful shutdown the instance is deregistered first, even
//! mid-renewal, before the server drains, so consumers stop sending before
//! the server stops accepting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Backoff;
use crate::discovery::{Instance, Lease, Registry, RegistryError};
use crate::service::ServiceDescriptor;

/// How a server registers itself.
#[derive(Clone, Debug)]
pub(crate) struct RegistrationConfig {
    pub(crate) registry: Registry,
    pub(crate) advertise: Option<String>,
    pub(crate) ttl: Duration,
    pub(crate) weight: u32,
    pub(crate) zone: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) grace: Duration,
}

impl RegistrationConfig {
    pub(crate) fn new(registry: Registry) -> RegistrationConfig {
        RegistrationConfig {
            registry,
            advertise: None,
            ttl: Duration::from_secs(10),
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
            grace: Duration::ZERO,
        }
    }

    /// The address consumers should call. A server bound to a wildcard
    /// address with no `advertise` set registers the loopback address, which
    /// only works on one machine; it says so in the log.
    fn address(&self, bound: SocketAddr) -> String {
        if let Some(addr) = &self.advertise {
            return addr.clone();
        }
        if bound.ip().is_unspecified() {
            let loopback = if bound.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            tracing::warn!(%bound, "bound to a wildcard address with no advertise address; registering {loopback}");
            return format!("{loopback}:{}", bound.port());
        }
        bound.to_string()
    }

    fn instance(&self, service: &ServiceDescriptor, addr: &str) -> Instance {
        let mut instance =
            Instance::new(service.name, addr).with_version(service.version).with_weight(self.weight);
        instance.zone = self.zone.clone();
        instance.metadata = self.metadata.clone();
        instance
    }
}

/// The running registrations of one server.
pub(crate) struct Registrations {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Registrations {
    pub(crate) fn start(
        config: &RegistrationConfig,
        services: &[&'static ServiceDescriptor],
        bound: SocketAddr,
    ) -> Registrations {
        let addr = config.address(bound);
        let (stop, stopped) = watch::channel(false);
        let tasks = services
            .iter()
            .map(|service| {
                let instance = config.instance(service, &addr);
                let registration = Registration {
                    registry: config.registry.clone(),
                    instance,
                    ttl: config.ttl,
                    stopped: stopped.clone(),
                };
                tokio::spawn(registration.keep_registered())
            })
            .collect();
        Registrations { stop, tasks, grace: config.grace }
    }

    /// Deregister every instance (each task deregisters as it stops), then
    /// wait the grace period so consumers can see it.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        // The tasks stop together; one deadline covers them all.
        let deadline = tokio::time::Instant::now() + DEREGISTER_TIMEOUT + Duration::from_millis(500);
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        if !self.grace.is_zero() {
            tokio::time::sleep(self.grace).await;
        }
    }
}

impl Drop for Registrations {
    /// A server that stops without a graceful shutdown (its task aborted,
    /// its runtime gone) stops renewing its leases, so its instances expire
    /// like those of a crashed process, instead of being kept alive by
    /// orphaned tasks.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How long deregistering on a graceful stop may take; after that the
/// lease is left to expire.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// One instance kept registered by one task.
struct Registration {
    registry: Registry,
    instance: Instance,
    ttl: Duration,
    stopped: watch::Receiver<bool>,
}

/// Why a lease was given up.
enum Ended {
    /// A graceful stop (the instance was deregistered, or tried to be).
    Stopped,
    /// The lease is gone or has run out: register again.
    Lost,
}

impl Registration {
    async fn keep_registered(mut self) {
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            ..Backoff::default()
        };
        let mut failures = 0u32;
        loop {
            let asked = Instant::now();
            let registered = tokio::select! {
                registered = self.registry.register(self.instance.clone(), self.ttl) => registered,
                () = until_stopped(&mut self.stopped) => return,
            };
            match registered {
                Ok(lease) => {
                    if failures > 0 {
                        tracing::info!(instance = %self.instance, "registered again");
                    } else {
                        tracing::debug!(instance = %self.instance, lease = lease.id, "registered");
                    }
                    failures = 0;
                    match self.keep_alive(&lease, asked).await {
                        Ended::Stopped => return,
                        Ended::Lost => {
                            // Every provider of a restarted registry finds
                            // its lease gone at about the same moment:
                            // spread the re-registrations (dubbo#5125).
                            let spread = (self.ttl / 3).min(Duration::from_secs(1)).mul_f64(fastrand::f64());
                            if self.pause(spread).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff.delay(failures, fastrand::f64());
                    tracing::warn!(instance = %self.instance, %err, ?delay, "could not register; retrying");
                    if self.pause(delay).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Renew `lease` (granted no earlier than `granted`) until it is lost
    /// or the server stops.
    ///
    /// Renewals run on a fixed schedule, a third of the TTL after the last
    /// success, so two may fail before the lease runs out. A renewal may take
    /// only as long as the lease has left: one stuck on a dead connection
    /// would otherwise let the lease expire while the task waits. A failed
    /// renewal is retried soon, with backoff, rather than a period later.
    async fn keep_alive(&mut self, lease: &Lease, granted: Instant) -> Ended {
        let period = (lease.ttl / 3).max(Duration::from_millis(100));
        let retry = Backoff { initial: Duration::from_millis(100), max: period, ..Backoff::default() };
        let mut renewed = granted;
        let mut next = granted + period;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = until_stopped(&mut self.stopped) => return self.deregister(lease).await,
            }
            let started = Instant::now();
            let expires = renewed + lease.ttl;
            let Some(left) = expires.checked_duration_since(started).filter(|left| !left.is_zero()) else {
                tracing::warn!(instance = %self.instance, "the lease ran out before it could be renewed; registering again");
                return Ended::Lost;
            };
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(left, self.registry.keep_alive(lease)) => outcome,
                () = until_stopped(&mut self.stopped) => return self.deregister(lease).await,
            };
            match outcome {
                Ok(Ok(())) => {
                    if failures > 0 {
                        tracing::info!(instance = %self.instance, "lease renewed again");
                    }
                    failures = 0;
                    renewed = started;
                    next = started + period;
                }
                Ok(Err(RegistryError::LeaseNotFound(_))) => {
                    tracing::warn!(instance = %self.instance, "lease lost; registering again");
                    return Ended::Lost;
                }
                Ok(Err(err)) => {
                    failures = failures.saturating_add(1);
                    let delay = retry.delay(failures, fastrand::f64());
                    tracing::warn!(instance = %self.instance, %err, ?delay, "could not renew the lease; retrying");
                    next = Instant::now() + delay;
                }
                Err(_) => {
                    tracing::warn!(instance = %self.instance, "no answer to the renewal before the lease ran out; registering again");
                    return Ended::Lost;
                }
            }
        }
    }

    /// Graceful stop: deregister before the server drains, within
    /// `DEREGISTER_TIMEOUT`.
    async fn deregister(&self, lease: &Lease) -> Ended {
        let instance = &self.instance;
        match tokio::time::timeout(DEREGISTER_TIMEOUT, self.registry.deregister(lease)).await {
            Ok(Ok(())) => tracing::debug!(%instance, "deregistered"),
            Ok(Err(err)) => tracing::warn!(%instance, %err, "could not deregister; the lease will expire"),
            Err(_) => tracing::warn!(%instance, "deregistering timed out; the lease will expire"),
        }
        Ended::Stopped
    }

    /// Sleep `delay`; `Err` if the server stopped meanwhile.
    async fn pause(&mut self, delay: Duration) -> Result<(), ()> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = until_stopped(&mut self.stopped) => Err(()),
        }
    }
}

/// Resolves once a stop is requested (or the server is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = stopped.wait_for(|stop| *stop).await;
}
