//! [`DiscoverBuilder`]: a channel (or client) that finds its servers in a
//! registry.
//!
//! ```no_run
//! # use courier::{Channel, balance::Balance};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = courier::registry::connect("courier://127.0.0.1:7600").await?;
//! let channel = Channel::discover(&registry, "Calculator")
//!     .version("^1.2")
//!     .zone("eu-west-1a")
//!     .balance(Balance::P2c)
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A background task keeps the instance set current: it watches the
//! service, applies each change, saves the set to a cache file, and when the
//! watch is lost re-watches from the last revision it saw, with jittered
//! backoff, for as long as the channel lives: dropping the last clone of
//! the channel ends the task, even mid-watch. While the registry is
//! unreachable, calls keep going to the last known instances.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::balanced::Balanced;
use super::builder::{ChannelBuilder, Parts};
use super::channel::{Channel, FromChannel};
use super::governance::{Governance, Policies};
use super::layer::{Layer, Layers};
use super::protocols::{Preference, Settings, Wire};
use super::route::Route;
use crate::balance::Balance;
use crate::discovery::cache::{self, Applied, ServiceView};
use crate::discovery::{Instance, Registry};
use crate::resilience::{Backoff, BreakerPolicy, HedgingPolicy, RetryBudget, RetryPolicy};

/// How often the watcher looks for suspects kept too long.
const SUSPECT_CHECK: Duration = Duration::from_secs(5);

/// A discovery channel could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The version requirement does not parse.
    #[error("invalid version requirement `{requirement}`: {reason}")]
    InvalidVersion {
        /// The requirement as given.
        requirement: String,
        /// Why it does not parse.
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum CacheSetting {
    Default,
    Dir(PathBuf),
    Off,
}

impl Channel {
    /// Calls to the instances of `service` in `registry`, balanced; see
    /// [`DiscoverBuilder`].
    pub fn discover(registry: &Registry, service: impl Into<String>) -> DiscoverBuilder<Channel> {
        DiscoverBuilder::new(registry.clone(), service.into())
    }
}

/// Configures discovery of one service; `build` gives a [`Channel`] or a
/// generated client.
///
/// Each instance is called in a protocol it offers: natively if it offers
/// courier's protocol, over gRPC if it offers only gRPC (or if it offers
/// both and the channels are configured `.grpc()`). Entries that name no
/// protocol (what grpc-go and `etcdctl` write to etcd) are called natively,
/// unless [`prefer_grpc_for_unlabelled`](DiscoverBuilder::prefer_grpc_for_unlabelled)
/// (or `.grpc()` channels) says gRPC. Instances offering neither are left
/// out.
#[must_use = "a builder does nothing until built"]
pub struct DiscoverBuilder<C> {
    registry: Registry,
    service: String,
    version: Option<String>,
    zone: Option<String>,
    balance: Balance,
    policies: Policies,
    retry_budget: Arc<RetryBudget>,
    cache: CacheSetting,
    initial_wait: Duration,
    settings: Settings,
    /// Call instances offering both protocols over gRPC (`.grpc()` channels).
    prefer_grpc: bool,
    /// Call instances that name no protocol over gRPC.
    unlabelled_grpc: bool,
    layers: Vec<Arc<dyn Layer>>,
    client: PhantomData<fn() -> C>,
}

impl<C: FromChannel> DiscoverBuilder<C> {
    /// Discover `service` in `registry` (generated clients call this).
    pub fn new(registry: Registry, service: String) -> DiscoverBuilder<C> {
        DiscoverBuilder {
            registry,
            service,
            version: None,
            zone: None,
            balance: Balance::default(),
            policies: Policies::default(),
            retry_budget: Arc::new(RetryBudget::default()),
            cache: CacheSetting::Default,
            initial_wait: Duration::from_secs(3),
            settings: ChannelBuilder::new(String::new()).into_parts().settings,
            prefer_grpc: false,
            unlabelled_grpc: false,
            layers: Vec::new(),
            client: PhantomData,
        }
    }

    /// Only use instances whose version satisfies `requirement` (semver,
    /// e.g. `^1.2`).
    pub fn version(mut self, requirement: impl Into<String>) -> DiscoverBuilder<C> {
        self.version = Some(requirement.into());
        self
    }

    /// Prefer instances in `zone` while one of them is healthy.
    pub fn zone(mut self, zone: impl Into<String>) -> DiscoverBuilder<C> {
        self.zone = Some(zone.into());
        self
    }

    /// How to spread calls (default round robin).
    pub fn balance(mut self, balance: Balance) -> DiscoverBuilder<C> {
        self.balance = balance;
        self
    }

    /// How calls are retried (default [`RetryPolicy::default`]: 3 attempts,
    /// `Unavailable` retried for idempotent methods, within the retry
    /// budget); methods given a policy of their own keep it.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> DiscoverBuilder<C> {
        self.policies.service.retry = policy;
        for method in self.policies.methods.values_mut() {
            if method.hedging.is_none() {
                method.retry = self.policies.service.retry.clone();
            }
        }
        self
    }

    /// How calls of `method` (`Service.Method`) are retried, instead of the
    /// service's policy.
    pub fn method_retry_policy(
        mut self,
        method: impl Into<String>,
        policy: RetryPolicy,
    ) -> DiscoverBuilder<C> {
        self.policies.methods.entry(method.into()).or_insert_with(|| self.policies.service.clone()).retry =
            policy;
        self
    }

    /// Hedge calls of every idempotent method (see [`HedgingPolicy`]);
    /// other methods keep retrying.
    pub fn hedging(mut self, policy: HedgingPolicy) -> DiscoverBuilder<C> {
        self.policies.service.hedging = Some(policy);
        self
    }

    /// Hedge calls of `method` (if it is idempotent).
    pub fn method_hedging(mut self, method: impl Into<String>, policy: HedgingPolicy) -> DiscoverBuilder<C> {
        let service = self.policies.service.clone();
        self.policies.methods.entry(method.into()).or_insert(service).hedging = Some(policy);
        self
    }

    /// The circuit breaker of each instance (default
    /// [`BreakerPolicy::default`]): an instance whose breaker is open is
    /// left out of rotation until probes succeed. It sees every attempt:
    /// failing to connect, losing connections, system failures, timeouts,
    /// and slow answers if the policy says what slow is.
    pub fn breaker(mut self, policy: BreakerPolicy) -> DiscoverBuilder<C> {
        self.policies.instance_breaker = policy;
        self
    }

    /// The circuit breaker of each method, service-wide (default: opens
    /// when half of at least 50 calls in 10 s failed): open, calls of the
    /// method fail fast with `Unavailable` (a fallback then answers them,
    /// if one is configured).
    pub fn method_breaker(mut self, policy: BreakerPolicy) -> DiscoverBuilder<C> {
        self.policies.method_breaker = policy;
        self
    }

    /// The largest share of instances breakers may keep out of rotation
    /// (default 0.5). Beyond it, instances with open breakers are tried
    /// last rather than never: when all look broken, keep trying them.
    pub fn max_ejected_share(mut self, share: f64) -> DiscoverBuilder<C> {
        self.policies.max_ejected_share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.5 };
        self
    }

    /// The retry budget calls draw on when they move to another instance
    /// (default: [`RetryBudget::default`], 20 % of calls plus 10 a second
    /// over 10 s). Share one `Arc` between channels to give them one budget.
    pub fn retry_budget(mut self, budget: impl Into<Arc<RetryBudget>>) -> DiscoverBuilder<C> {
        self.retry_budget = budget.into();
        self
    }

    /// Keep the cache file in `dir` (default: under `$XDG_CACHE_HOME` or
    /// `~/.cache`, per registry URL).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> DiscoverBuilder<C> {
        self.cache = CacheSetting::Dir(dir.into());
        self
    }

    /// Keep no cache file.
    pub fn no_cache(mut self) -> DiscoverBuilder<C> {
        self.cache = CacheSetting::Off;
        self
    }

    /// How long `build` waits for the first answer from the registry before
    /// returning anyway (with cached instances, or none yet). Default 3 s.
    pub fn initial_wait(mut self, wait: Duration) -> DiscoverBuilder<C> {
        self.initial_wait = wait;
        self
    }

    /// Settings of the connections to each instance: everything a
    /// [`ChannelBuilder`] sets except the address. `.grpc()` calls
    /// instances over gRPC wherever they offer it; layers added here run
    /// as if added with [`layer`](DiscoverBuilder::layer) at this point.
    pub fn configure_channels(
        mut self,
        configure: impl FnOnce(ChannelBuilder) -> ChannelBuilder,
    ) -> DiscoverBuilder<C> {
        let Parts { settings, wire, layers, .. } = configure(ChannelBuilder::new(String::new())).into_parts();
        self.settings = settings;
        self.prefer_grpc = match wire {
            #[cfg(feature = "grpc")]
            Wire::Grpc => true,
            Wire::Native => false,
            Wire::Go(go) => {
                // Registered instances are courier servers (Go's net/rpc
                // servers do not register): they are called natively.
                tracing::warn!(
                    wire = go.scheme(),
                    "Go's net/rpc modes are for one address; a discovered channel calls instances in courier's protocol"
                );
                false
            }
        };
        self.layers.extend(layers);
        self
    }

    /// Call instances that name no protocol (entries grpc-go or `etcdctl`
    /// wrote, such as `{"Addr":"10.0.0.7:50051"}`) over gRPC rather than
    /// courier's native protocol. Instances that name their protocols are
    /// called in one of them either way.
    #[cfg(feature = "grpc")]
    pub fn prefer_grpc_for_unlabelled(mut self, grpc: bool) -> DiscoverBuilder<C> {
        self.unlabelled_grpc = grpc;
        self
    }

    /// Run every call through `layer`, after the layers added before it.
    /// A layer sees each call once, before the balancer picks an instance
    /// and however many it tries; see [`Layer`] ("Order").
    pub fn layer(mut self, layer: impl Layer) -> DiscoverBuilder<C> {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Start discovering and return the client. Waits up to the initial wait
    /// for the registry's first answer.
    pub async fn build(self) -> Result<C, DiscoverError> {
        let requirement = match &self.version {
            Some(requirement) => Some(semver::VersionReq::parse(requirement).map_err(|err| {
                DiscoverError::InvalidVersion { requirement: requirement.clone(), reason: err.to_string() }
            })?),
            None => None,
        };
        let preference = Preference {
            #[cfg(feature = "grpc")]
            grpc: self.prefer_grpc,
            #[cfg(feature = "grpc")]
            unlabelled_grpc: self.unlabelled_grpc || self.prefer_grpc,
        };
        #[cfg(not(feature = "grpc"))]
        let _ = (self.prefer_grpc, self.unlabelled_grpc);
        let balanced = Arc::new(Balanced::new(
            self.service.clone(),
            self.balance,
            self.zone.clone(),
            Governance::new(self.policies, self.retry_budget.clone()),
            self.settings,
            preference,
        ));
        let cache_file = match &self.cache {
            CacheSetting::Default => cache::default_cache_dir(self.registry.url())
                .map(|dir| cache::cache_path(&dir, &self.service)),
            CacheSetting::Dir(dir) => Some(cache::cache_path(dir, &self.service)),
            CacheSetting::Off => None,
        };
        let (ready, first_answer) = oneshot::channel();
        let watcher = Watcher {
            balanced: Arc::downgrade(&balanced),
            registry: self.registry.clone(),
            service: self.service.clone(),
            requirement,
            cache_file,
        };
        tokio::spawn(watcher.run(ready, balanced.closed()));
        let _ = tokio::time::timeout(self.initial_wait, first_answer).await;
        Ok(C::from_channel(Channel::new(Route::Balanced(balanced), Layers::new(self.layers))))
    }
}

/// The background task that keeps a balanced channel's instances current.
struct Watcher {
    balanced: Weak<Balanced>,
    registry: Registry,
    service: String,
    requirement: Option<semver::VersionReq>,
    cache_file: Option<PathBuf>,
}

impl Watcher {
    /// Whether `instance` meets the version requirement. (Whether this
    /// client speaks a protocol it offers, the balanced channel decides.)
    fn usable(&self, instance: &Instance) -> bool {
        // Entries written by other tools (a grpc-go etcd registration, say)
        // name no version: they match only when no version is required.
        self.requirement.as_ref().is_none_or(|requirement| instance.matches(requirement))
    }

    /// Push the view to the channel; false if the channel is gone.
    fn publish(&self, view: &ServiceView) -> bool {
        let Some(balanced) = self.balanced.upgrade() else { return false };
        balanced.replace(view.instances().into_iter().filter(|i| self.usable(i)).collect());
        true
    }

    fn note_error(&self, error: Option<String>) -> bool {
        let Some(balanced) = self.balanced.upgrade() else { return false };
        balanced.set_discovery_error(error);
        true
    }

    /// Drop suspects kept too long; false if the channel is gone.
    fn expire_suspects(&self, view: &mut ServiceView) -> bool {
        if view.expire_suspects(Instant::now()) {
            tracing::info!(service = %self.service, "the registry still lists no instances; dropping the kept ones");
            if !self.publish(view) {
                return false;
            }
            self.save(view);
        }
        true
    }

    /// Follow the registry until the channel is dropped. `closed` reports
    /// the drop even while the task is parked on a watch that sees no
    /// events, so an idle watch does not outlive its channel.
    async fn run(self, ready: oneshot::Sender<()>, mut closed: watch::Receiver<()>) {
        let mut ready = Some(ready);
        // Start from the cache file, so calls can go out even if the
        // registry is down right now.
        let mut view = match self.cache_file.as_deref().and_then(|path| cache::load(path, &self.service)) {
            Some(cached) => {
                // Say how old it is: instances cached a week ago are a guess.
                let path = self.cache_file.as_deref().unwrap_or_else(|| std::path::Path::new(""));
                let written = std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|time| time.elapsed().ok())
                    .map_or_else(
                        || "at an unknown time".to_owned(),
                        |age| format!("{} s ago", age.as_secs()),
                    );
                tracing::info!(service = %self.service, instances = cached.instances().len(), path = %path.display(), "using the registry cache file written {written}");
                if !self.publish(&cached) {
                    return;
                }
                cached
            }
            None => ServiceView::default(),
        };
        // The first watch asks for a fresh full set; later ones resume.
        let mut resume = None;
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            ..Backoff::default()
        };
        let mut suspect_check = tokio::time::interval(SUSPECT_CHECK);
        suspect_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            let watch = tokio::select! {
                _ = closed.changed() => return,
                watch = self.registry.watch(&self.service, resume) => watch,
            };
            let lost = match watch {
                Ok(mut stream) => loop {
                    let event = tokio::select! {
                        _ = closed.changed() => return,
                        _ = suspect_check.tick() => {
                            if !self.expire_suspects(&mut view) {
                                return;
                            }
                            continue;
                        }
                        event = stream.next() => event,
                    };
                    match event {
                        Some(Ok(event)) => {
                            failures = 0;
                            let applied = view.apply(event);
                            resume = view.revision();
                            match applied {
                                Applied::Changed => {
                                    if !self.publish(&view) {
                                        return;
                                    }
                                    self.save(&view);
                                }
                                Applied::EmptyIgnored => tracing::warn!(
                                    service = %self.service,
                                    "the registry reported no instances; keeping the {} last known",
                                    view.instances().len()
                                ),
                                Applied::Unchanged => {}
                            }
                            if !self.note_error(None) {
                                return;
                            }
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        Some(Err(err)) => break err.to_string(),
                        None => break "the registry watch ended".to_owned(),
                    }
                },
                Err(err) => err.to_string(),
            };
            // Keep routing to what we know; tell callers why if we know nothing.
            tracing::debug!(service = %self.service, reason = %lost, "registry watch lost; retrying");
            // `lost` already says what failed ("the registry is unreachable: ..").
            if !self.note_error(Some(lost)) {
                return;
            }
            // Having told the builder nothing yet, stop making it wait: the
            // cache (if any) is all there is for now.
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            failures = failures.saturating_add(1);
            let pause = tokio::time::sleep(backoff.delay(failures, fastrand::f64()));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = closed.changed() => return,
                    _ = suspect_check.tick() => {
                        if !self.expire_suspects(&mut view) {
                            return;
                        }
                    }
                    _ = &mut pause => break,
                }
            }
        }
    }

    fn save(&self, view: &ServiceView) {
        if let Some(path) = &self.cache_file
            && let Err(err) = cache::save(path, &self.service, view)
        {
            tracing::warn!(path = %path.display(), %err, "could not write the registry cache file");
        }
    }
}
