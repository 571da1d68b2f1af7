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
//! mid-renewal or mid-registration (a registration in flight is seen
//! through, then taken back), before the server drains, so consumers stop sending before
//! the server stops accepting.
//!
//! An instance registers the protocols the server actually answers on its
//! port (`courier`, `grpc`, `jsonrpc`, `http`, `gorpc`): those switched on in its
//! config and compiled in, so other tools and languages can pick one they
//! speak.
//!
//! An instance id another live lease holds is refused (`AlreadyExists`:
//! another process uses the id, or this server restarted before its old
//! lease ran out); the task keeps trying with backoff until the id is
//! free. If it gave up on a lease only because a renewal went unanswered,
//! it first tries renewing that lease again: if it still holds the
//! instance, it carries on with it.
//!
//! The log says, at INFO, when an instance is registered (service, id,
//! address, lease), deregistered, and registered or renewed again after
//! failures; losing a lease is a WARN. Repeated failures do not flood it:
//! the first of a run is a WARN, then one every 30 s with the attempt
//! count, the others DEBUG.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dispatch::Protocols;
use crate::discovery::{Instance, Lease, Registry, RegistryError};
use crate::protocol::sniff::Protocol;
use crate::resilience::Backoff;
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

    fn instance(&self, service: &ServiceDescriptor, addr: &str, protocols: &[String]) -> Instance {
        let mut instance =
            Instance::new(service.name, addr).with_version(service.version).with_weight(self.weight);
        instance.protocols = protocols.to_vec();
        instance.zone = self.zone.clone();
        instance.metadata = self.metadata.clone();
        instance
    }
}

/// The name a registry entry uses for `protocol`, if this build serves it.
fn registered_name(protocol: Protocol) -> Option<&'static str> {
    match protocol {
        Protocol::Native => Some("courier"),
        Protocol::Grpc => cfg!(feature = "grpc").then_some("grpc"),
        Protocol::JsonRpc => Some("jsonrpc"),
        Protocol::HttpJson => cfg!(feature = "http-json").then_some("http"),
        Protocol::GoRpc => Some("gorpc"),
    }
}

/// The protocols to register: those `enabled` in the server's config that
/// are also compiled in, by their registry names.
pub(crate) fn advertised_protocols(enabled: Protocols) -> Vec<String> {
    Protocol::ALL
        .iter()
        .filter(|protocol| enabled.contains(**protocol))
        .filter_map(|protocol| registered_name(*protocol))
        .map(str::to_owned)
        .collect()
}

/// The running registrations of one server.
pub(crate) struct Registrations {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Registrations {
    /// Register `services` at the address for `bound`, offering the
    /// `protocols` the server has switched on.
    pub(crate) fn start(
        config: &RegistrationConfig,
        services: &[&'static ServiceDescriptor],
        bound: SocketAddr,
        protocols: Protocols,
    ) -> Registrations {
        let addr = config.address(bound);
        let protocols = advertised_protocols(protocols);
        let (stop, stopped) = watch::channel(false);
        let tasks = services
            .iter()
            .map(|service| {
                let instance = config.instance(service, &addr, &protocols);
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

/// After the first warning of a run of failures, how often another one
/// (with the attempt count) is logged; the rest are DEBUG.
const REPEAT_WARNING: Duration = Duration::from_secs(30);

/// A run of failures of one kind, for logging it without flooding the log
/// (a registry down for an hour would otherwise be thousands of warnings).
#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last_warned: Option<Instant>,
}

impl Failures {
    /// Count a failure at `now`; whether to log it as a warning (the first
    /// of the run, or the first for `REPEAT_WARNING`).
    fn record(&mut self, now: Instant) -> bool {
        self.count = self.count.saturating_add(1);
        let warn = self.last_warned.is_none_or(|at| now.saturating_duration_since(at) >= REPEAT_WARNING);
        if warn {
            self.last_warned = Some(now);
        }
        warn
    }

    /// End the run; how many failures it had.
    fn clear(&mut self) -> u32 {
        let count = self.count;
        *self = Failures::default();
        count
    }
}

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
    /// The lease is gone or has run out: register again. `maybe_alive` if
    /// the registry never said it was gone (its renewals went unanswered),
    /// so it may still hold the instance.
    Lost { lease: Lease, maybe_alive: bool },
}

impl Registration {
    async fn keep_registered(mut self) {
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            ..Backoff::default()
        };
        let mut failures = Failures::default();
        let mut maybe_ours: Option<Lease> = None;
        // The lease lost last, until registered again (for the log).
        let mut lost: Option<u64> = None;
        loop {
            let asked = Instant::now();
            let registered = {
                let register = self.registry.register(self.instance.clone(), self.ttl);
                tokio::pin!(register);
                tokio::select! {
                    registered = &mut register => registered,
                    () = until_stopped(&mut self.stopped) => {
                        // A registration in flight may already hold the
                        // instance (consumers may even be calling it): see it
                        // through, then take it back, rather than leave it to
                        // expire with its lease.
                        if let Ok(Ok(lease)) = tokio::time::timeout(DEREGISTER_TIMEOUT, register).await {
                            self.deregister(&lease).await;
                        }
                        return;
                    }
                }
            };
            let ended = match registered {
                Ok(lease) => {
                    let attempts = failures.clear();
                    self.log_registered(&lease, attempts, lost.take());
                    self.keep_alive(&lease, asked).await
                }
                Err(RegistryError::AlreadyExists { .. }) if maybe_ours.is_some() => {
                    // Refused because an id is held, and we may hold it: a
                    // lease given up on for want of an answer can still be
                    // alive. Renew it; if it works, it is still ours.
                    let Some(lease) = maybe_ours.take() else { continue };
                    let asked = Instant::now();
                    let renewed = tokio::select! {
                        renewed = tokio::time::timeout(lease.ttl, self.registry.keep_alive(&lease)) => renewed,
                        () = until_stopped(&mut self.stopped) => return,
                    };
                    if let Ok(Ok(())) = renewed {
                        failures.clear();
                        tracing::info!(
                            service = %self.instance.service,
                            instance = %self.instance.id,
                            addr = %self.instance.addr,
                            lease = lease.id,
                            "lease regained: it still holds the instance; renewing it again"
                        );
                        self.keep_alive(&lease, asked).await
                    } else {
                        if self
                            .retry_later(&mut failures, &backoff, "the instance id is held by another lease")
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                }
                Err(err) => {
                    let reason = match err {
                        RegistryError::AlreadyExists { .. } => format!(
                            "{err} (another server uses this id, or this one restarted before its old lease \
                             expired; retrying until the id is free)"
                        ),
                        other => other.to_string(),
                    };
                    if self.retry_later(&mut failures, &backoff, &reason).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match ended {
                Ended::Stopped => return,
                Ended::Lost { lease, maybe_alive } => {
                    lost = Some(lease.id);
                    maybe_ours = maybe_alive.then_some(lease);
                    // Every provider of a restarted registry finds its lease
                    // gone at about the same moment: spread the
                    // re-registrations (dubbo#5125).
                    let spread = (self.ttl / 3).min(Duration::from_secs(1)).mul_f64(fastrand::f64());
                    if self.pause(spread).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn log_registered(&self, lease: &Lease, failed_attempts: u32, lost: Option<u64>) {
        let instance = &self.instance;
        if lost.is_some() || failed_attempts > 0 {
            tracing::info!(
                service = %instance.service,
                instance = %instance.id,
                addr = %instance.addr,
                lease = lease.id,
                lost_lease = ?lost,
                failed_attempts,
                "registered again"
            );
        } else {
            tracing::info!(
                service = %instance.service,
                instance = %instance.id,
                addr = %instance.addr,
                lease = lease.id,
                ttl = ?lease.ttl,
                protocols = ?instance.protocols,
                "registered"
            );
        }
    }

    /// A registration failed for `reason`: log it (see [`Failures`]) and
    /// wait the backoff. `Err` if the server stopped meanwhile.
    async fn retry_later(
        &mut self,
        failures: &mut Failures,
        backoff: &Backoff,
        reason: &str,
    ) -> Result<(), ()> {
        let warn = failures.record(Instant::now());
        let delay = backoff.delay(failures.count, fastrand::f64());
        let (service, id, attempts) = (&self.instance.service, &self.instance.id, failures.count);
        if warn {
            tracing::warn!(%service, instance = %id, %reason, attempts, ?delay, "could not register; retrying");
        } else {
            tracing::debug!(%service, instance = %id, %reason, attempts, ?delay, "could not register; retrying");
        }
        self.pause(delay).await
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
        let mut failures = Failures::default();
        let (service, id, lease_id) = (self.instance.service.clone(), self.instance.id.clone(), lease.id);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = until_stopped(&mut self.stopped) => return self.deregister(lease).await,
            }
            let started = Instant::now();
            let expires = renewed + lease.ttl;
            let Some(left) = expires.checked_duration_since(started).filter(|left| !left.is_zero()) else {
                tracing::warn!(%service, instance = %id, lease = lease_id, failed_renewals = failures.count, "lease lost: it ran out before it could be renewed; registering again");
                return Ended::Lost { lease: lease.clone(), maybe_alive: true };
            };
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(left, self.registry.keep_alive(lease)) => outcome,
                () = until_stopped(&mut self.stopped) => return self.deregister(lease).await,
            };
            match outcome {
                Ok(Ok(())) => {
                    let failed = failures.clear();
                    if failed > 0 {
                        tracing::info!(%service, instance = %id, lease = lease_id, failed_renewals = failed, "lease renewed again");
                    }
                    renewed = started;
                    next = started + period;
                }
                Ok(Err(RegistryError::LeaseNotFound(_))) => {
                    // Expired, revoked, forgotten by the registry, or alive
                    // but no longer holding the instance: registering again
                    // is the only way back.
                    tracing::warn!(%service, instance = %id, lease = lease_id, "lease lost: the registry no longer has it holding this instance; registering again");
                    return Ended::Lost { lease: lease.clone(), maybe_alive: false };
                }
                Ok(Err(err)) => {
                    let warn = failures.record(Instant::now());
                    let delay = retry.delay(failures.count, fastrand::f64());
                    let attempts = failures.count;
                    if warn {
                        tracing::warn!(%service, instance = %id, lease = lease_id, %err, attempts, ?delay, "could not renew the lease; retrying");
                    } else {
                        tracing::debug!(%service, instance = %id, lease = lease_id, %err, attempts, ?delay, "could not renew the lease; retrying");
                    }
                    next = Instant::now() + delay;
                }
                Err(_) => {
                    tracing::warn!(%service, instance = %id, lease = lease_id, "lease lost: no answer to the renewal before it ran out; registering again");
                    return Ended::Lost { lease: lease.clone(), maybe_alive: true };
                }
            }
        }
    }

    /// Graceful stop: deregister before the server drains, within
    /// `DEREGISTER_TIMEOUT`.
    async fn deregister(&self, lease: &Lease) -> Ended {
        let (service, id, addr) = (&self.instance.service, &self.instance.id, &self.instance.addr);
        match tokio::time::timeout(DEREGISTER_TIMEOUT, self.registry.deregister(lease)).await {
            Ok(Ok(())) => tracing::info!(%service, instance = %id, %addr, lease = lease.id, "deregistered"),
            Ok(Err(err)) => {
                tracing::warn!(%service, instance = %id, lease = lease.id, %err, "could not deregister; the lease will expire");
            }
            Err(_) => {
                tracing::warn!(%service, instance = %id, lease = lease.id, "deregistering timed out; the lease will expire");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_offer_what_the_server_serves() {
        let all = advertised_protocols(Protocols::default());
        let mut expected = vec!["courier"];
        if cfg!(feature = "grpc") {
            expected.push("grpc");
        }
        expected.push("jsonrpc");
        if cfg!(feature = "http-json") {
            expected.push("http");
        }
        expected.push("gorpc");
        assert_eq!(all, expected);
        let no_json_rpc = advertised_protocols(Protocols::default().without(Protocol::JsonRpc));
        assert!(!no_json_rpc.iter().any(|p| p == "jsonrpc") && no_json_rpc.iter().any(|p| p == "courier"));
        assert_eq!(advertised_protocols(Protocols::of([Protocol::JsonRpc])), vec!["jsonrpc"]);
    }

    #[test]
    fn repeated_failures_warn_first_then_rarely() {
        let t0 = Instant::now();
        let mut failures = Failures::default();
        assert!(failures.record(t0), "the first failure is a warning");
        let quiet = (1..100).filter(|i| failures.record(t0 + Duration::from_millis(200 * i))).count();
        assert_eq!(quiet, 0, "retries within 30 s are not");
        assert!(failures.record(t0 + REPEAT_WARNING), "then one warning per 30 s");
        assert!(!failures.record(t0 + REPEAT_WARNING + Duration::from_secs(1)));
        assert_eq!(failures.count, 102);
        assert_eq!(failures.clear(), 102);
        assert!(failures.record(t0 + REPEAT_WARNING + Duration::from_secs(2)), "a new run warns at once");
    }
}
