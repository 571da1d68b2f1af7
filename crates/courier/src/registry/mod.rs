//! Registries by URL: `courier::registry::connect("mem://")`, and the
//! backends behind each scheme. (The model they share, instances, events,
//! the [`Registry`] handle, is [`crate::discovery`]; its items are
//! re-exported here under the name users reach for.)
//!
//! - [`mem`]: `mem://`, in this process: [`LocalRegistry`](mem::LocalRegistry)
//!   on the [`store`](mem::store) state machine, which is also the engine
//!   of the bundled registry server. Each `connect` makes a new, empty
//!   registry; share it by cloning the handle.
//! - [`courier`]: `courier://host:port`, the bundled registry server
//!   (`courier registry serve`): its API as a courier service
//!   ([`courier::api`]) and the client backend.
//! - `etcd`: `etcd://host:2379,host:2379`, an etcd v3 cluster (cargo
//!   feature `etcd`), in the key layout grpc-go's etcd resolver reads.
//! - `redis`: `redis://host:6379[/db][?prefix=courier/]`, a Redis server
//!   (cargo feature `redis`): instances as keys under a TTL, a revision and
//!   a bounded change log per service, expiry by every client's reaper.
//! - `zookeeper`: `zookeeper://host:2181,host:2181[/chroot]`, an Apache
//!   ZooKeeper ensemble (cargo feature `zookeeper`), in Apache Dubbo's
//!   layout (`/dubbo/<service>/providers/<URL>`, ephemeral nodes in one
//!   session per TTL, each lease with a deadline of its own), read and
//!   written by Dubbo's tools too.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), courier::registry::RegistryError> {
//! use std::time::Duration;
//! use courier::registry::{self, Instance, WatchEvent};
//!
//! let registry = registry::connect("mem://").await?;
//! let lease = registry.register(Instance::new("Greeter", "127.0.0.1:9000"), Duration::from_secs(10)).await?;
//! let mut watch = registry.watch("Greeter", None).await?;
//! match watch.next().await {
//!     Some(Ok(WatchEvent::Reset { instances, .. })) => assert_eq!(instances.len(), 1),
//!     other => panic!("expected the full set first, got {other:?}"),
//! }
//! registry.deregister(&lease).await?;
//! # Ok(())
//! # }
//! ```

pub mod courier;
#[cfg(feature = "etcd")]
mod etcd;
pub mod mem;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "zookeeper")]
mod zookeeper;

pub use crate::discovery::{
    Instance, InstanceState, Lease, Registration, Registry, RegistryBackend, RegistryError, Revision,
    Snapshot, WatchEvent, WatchStream,
};

/// Connect to the registry at `url` (see the module docs for the schemes).
pub async fn connect(url: &str) -> Result<Registry, RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("expected scheme://..."))?;
    match scheme {
        "mem" => Ok(Registry::from_backend(url, mem::LocalRegistry::new())),
        "courier" => {
            let addr = rest.trim_end_matches('/');
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(invalid("expected courier://host:port"));
            }
            Ok(Registry::from_backend(url, courier::RemoteRegistry::new(addr)))
        }
        #[cfg(feature = "etcd")]
        "etcd" => {
            let backend = etcd::EtcdRegistry::new(rest).map_err(|reason| invalid(&reason))?;
            Ok(Registry::from_backend(url, std::sync::Arc::new(backend)))
        }
        #[cfg(not(feature = "etcd"))]
        "etcd" => Err(RegistryError::NotBuilt { scheme: "etcd".to_owned(), feature: "etcd".to_owned() }),
        #[cfg(feature = "redis")]
        "redis" => {
            let backend = self::redis::RedisRegistry::connect(url).map_err(|reason| invalid(&reason))?;
            // Shown (and naming the cache directory) without its password.
            Ok(Registry::from_backend(self::redis::redacted_url(url), backend))
        }
        #[cfg(not(feature = "redis"))]
        "redis" => Err(RegistryError::NotBuilt { scheme: "redis".to_owned(), feature: "redis".to_owned() }),
        #[cfg(feature = "zookeeper")]
        "zookeeper" => {
            let backend = zookeeper::ZooKeeperRegistry::new(rest).map_err(|reason| invalid(&reason))?;
            Ok(Registry::from_backend(url, std::sync::Arc::new(backend)))
        }
        #[cfg(not(feature = "zookeeper"))]
        "zookeeper" => {
            Err(RegistryError::NotBuilt { scheme: "zookeeper".to_owned(), feature: "zookeeper".to_owned() })
        }
        other => Err(invalid(&format!(
            "unknown scheme `{other}` (expected mem, courier, etcd, zookeeper or redis)"
        ))),
    }
}
