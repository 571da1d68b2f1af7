//! Registering a server's services in a registry, for as long as it runs.
//!
//! After the listener is bound, one task per service registers an instance
//! and keeps its lease alive at a third of the TTL. If the lease is lost
//! (it expired while the registry was unreachable, or the registry forgot
//! it), the task registers again at once; if the registry cannot be
//! reached, it retries with jittered backoff (dubbo#5125: a lost session
//! must re-register, and not all at the same moment). On graceful shutdown
//! the instance is deregistered first, before the server drains, so
//! consumers stop sending before the server stops accepting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Backoff;
use crate::discovery::{Instance, Registry, RegistryError};
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
                tokio::spawn(keep_registered(config.registry.clone(), instance, config.ttl, stopped.clone()))
            })
            .collect();
        Registrations { stop, tasks, grace: config.grace }
    }

    /// Deregister every instance (each task deregisters as it stops), then
    /// wait the grace period so consumers can see it.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
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

async fn keep_registered(
    registry: Registry,
    instance: Instance,
    ttl: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let backoff =
        Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(5), ..Backoff::default() };
    let mut failures = 0u32;
    'register: loop {
        let lease = tokio::select! {
            registered = registry.register(instance.clone(), ttl) => registered,
            () = until_stopped(&mut stopped) => return,
        };
        let lease = match lease {
            Ok(lease) => {
                if failures > 0 {
                    tracing::info!(%instance, "registered again");
                } else {
                    tracing::debug!(%instance, lease = lease.id, "registered");
                }
                failures = 0;
                lease
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let delay = backoff.delay(failures, fastrand::f64());
                tracing::warn!(%instance, %err, ?delay, "could not register; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue 'register,
                    () = until_stopped(&mut stopped) => return,
                }
            }
        };
        // Keep it alive at a third of the TTL: two renewals may fail before
        // the lease runs out.
        let period = (lease.ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = until_stopped(&mut stopped) => {
                    // Graceful stop: deregister before the server drains.
                    match tokio::time::timeout(Duration::from_secs(2), registry.deregister(&lease)).await {
                        Ok(Ok(())) => tracing::debug!(%instance, "deregistered"),
                        Ok(Err(err)) => tracing::warn!(%instance, %err, "could not deregister; the lease will expire"),
                        Err(_) => tracing::warn!(%instance, "deregistering timed out; the lease will expire"),
                    }
                    return;
                }
            }
            match registry.keep_alive(&lease).await {
                Ok(()) => {}
                Err(RegistryError::LeaseNotFound(_)) => {
                    tracing::warn!(%instance, "lease lost; registering again");
                    continue 'register;
                }
                Err(err) => tracing::warn!(%instance, %err, "could not renew the lease; will retry"),
            }
        }
    }
}

/// Resolves once a stop is requested (or the server is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = stopped.wait_for(|stop| *stop).await;
}
