//! Service registration and discovery: the model every registry backend
//! and every consumer share.
//!
//! Providers [`Registry::register`] an [`Instance`] under a lease with a TTL
//! and keep the lease alive; a lease that is not renewed expires and its
//! instances disappear. Consumers [`Registry::list`] a service and
//! [`Registry::watch`] it: a watch yields the full set first
//! ([`WatchEvent::Reset`]), then changes, each with the registry's revision,
//! and can resume from the last revision it saw.
//!
//! The backends (`mem://`, `courier://`, `etcd://`) and
//! [`connect`](crate::registry::connect) are in [`crate::registry`].
//!
//! - [`instance`]: [`Instance`] and its state.
//! - [`cache`]: a consumer's view of a service, and its cache file.
//! - here: [`Registry`], the handle every backend is used through, the
//!   [`RegistryBackend`] trait they implement, and what they answer
//!   ([`WatchEvent`], [`Lease`], [`Snapshot`], [`Registration`],
//!   [`RegistryError`]).

pub mod cache;
pub mod instance;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use instance::{Instance, InstanceState};

use crate::service::BoxFuture;

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

/// Milliseconds since the Unix epoch, now (registration times).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A registry revision: every change increments it.
pub type Revision = u64;

/// A change to the instances of a watched service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// The complete set: replace whatever you knew.
    Reset {
        /// Every instance of the service.
        instances: Vec<Instance>,
        /// The revision of this set.
        revision: Revision,
    },
    /// A new instance.
    Add {
        /// The instance.
        instance: Instance,
        /// The revision of the change.
        revision: Revision,
    },
    /// An instance registered again with new details.
    Update {
        /// The instance as it is now.
        instance: Instance,
        /// The revision of the change.
        revision: Revision,
    },
    /// An instance is gone (deregistered, or its lease expired).
    Remove {
        /// Its id.
        id: String,
        /// The revision of the change.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision this event brings a watcher up to.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Reset { revision, .. }
            | WatchEvent::Add { revision, .. }
            | WatchEvent::Update { revision, .. }
            | WatchEvent::Remove { revision, .. } => *revision,
        }
    }
}

/// A granted lease: keep it alive at least every `ttl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The registry's lease id.
    pub id: u64,
    /// Its time to live.
    pub ttl: Duration,
    /// The service of the instance registered under it.
    pub service: String,
    /// The instance registered under it.
    pub instance_id: String,
}

/// The instances of a service at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The instances.
    pub instances: Vec<Instance>,
    /// The revision they are at.
    pub revision: Revision,
}

/// Why a registry operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The URL could not be parsed.
    #[error("invalid registry URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend for this scheme is not built into this binary.
    #[error(
        "{scheme}:// needs courier's `{feature}` feature: in Cargo.toml, courier = {{ version = \"{version}\", features = [\"{feature}\"] }}",
        version = env!("CARGO_PKG_VERSION")
    )]
    NotBuilt {
        /// The URL scheme.
        scheme: String,
        /// The feature to enable.
        feature: String,
    },
    /// The registry cannot be reached; retrying later may succeed.
    #[error("the registry is unreachable: {0}")]
    Unavailable(String),
    /// The lease expired or was revoked: register again.
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(u64),
    /// The registry refused the request.
    #[error("the registry refused the request: {0}")]
    Rejected(String),
    /// The instance's id is held by another live lease (another process
    /// with the same id, or this one's earlier lease not expired yet).
    #[error("instance `{id}` of `{service}` is already registered under another live lease")]
    AlreadyExists {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
    },
}

/// A stream of [`WatchEvent`]s. It ends (or yields an error) when the watch
/// is lost; watch again with the last revision seen to resume.
#[derive(Debug)]
pub struct WatchStream {
    events: mpsc::Receiver<Result<WatchEvent, RegistryError>>,
}

impl WatchStream {
    /// A stream fed through `events` by a backend task.
    pub fn new(events: mpsc::Receiver<Result<WatchEvent, RegistryError>>) -> WatchStream {
        WatchStream { events }
    }

    /// The next event; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, RegistryError>> {
        self.events.recv().await
    }
}

/// What a registry backend implements. Use it through [`Registry`].
pub trait RegistryBackend: Send + Sync + 'static {
    /// Grant a lease of `ttl` and register `instance` under it.
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>>;
    /// Renew a lease.
    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Revoke a lease, removing its instance at once.
    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// The instances of `service`.
    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>>;
    /// Watch `service`, starting after revision `after` (or with a `Reset`).
    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>>;
    /// Every registration (of one service, if given), for listings.
    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>>;
}

/// A connection to a registry. Cheap to clone. Made by
/// [`registry::connect`](crate::registry::connect) from a URL, or from a
/// backend of your own with [`Registry::from_backend`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), courier::registry::RegistryError> {
/// use std::time::Duration;
/// use courier::registry::{self, Instance};
///
/// let registry = registry::connect("mem://").await?;
/// // A provider: register, and keep the lease alive (a courier server
/// // does both itself with `ServerBuilder::register_with`).
/// let lease = registry.register(Instance::new("Greeter", "127.0.0.1:9000"), Duration::from_secs(10)).await?;
/// registry.keep_alive(&lease).await?;
/// // A consumer: list (or watch) the service.
/// let snapshot = registry.list("Greeter").await?;
/// assert_eq!(snapshot.instances[0].addr, "127.0.0.1:9000");
/// registry.deregister(&lease).await?;
/// assert!(registry.list("Greeter").await?.instances.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Registry {
    backend: Arc<dyn RegistryBackend>,
    url: Arc<str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Registry {
    /// Wrap a backend.
    pub fn from_backend(url: impl Into<String>, backend: impl RegistryBackend) -> Registry {
        Registry { backend: Arc::new(backend), url: url.into().into() }
    }

    /// The URL this registry was connected with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Grant a lease of `ttl` and register `instance` under it.
    pub async fn register(&self, instance: Instance, ttl: Duration) -> Result<Lease, RegistryError> {
        self.backend.register(instance, ttl).await
    }

    /// Renew a lease; [`RegistryError::LeaseNotFound`] means register again.
    pub async fn keep_alive(&self, lease: &Lease) -> Result<(), RegistryError> {
        self.backend.keep_alive(lease).await
    }

    /// Revoke a lease, removing its instance at once.
    pub async fn deregister(&self, lease: &Lease) -> Result<(), RegistryError> {
        self.backend.deregister(lease).await
    }

    /// The instances of `service`.
    pub async fn list(&self, service: &str) -> Result<Snapshot, RegistryError> {
        self.backend.list(service).await
    }

    /// Watch `service`: a `Reset` with the full set first (or, with `after`,
    /// the changes since that revision), then every change.
    pub async fn watch(&self, service: &str, after: Option<Revision>) -> Result<WatchStream, RegistryError> {
        self.backend.watch(service, after).await
    }

    /// Every registration (of one service, if given), for listings.
    pub async fn registrations(&self, service: Option<&str>) -> Result<Vec<Registration>, RegistryError> {
        self.backend.registrations(service).await
    }
}
