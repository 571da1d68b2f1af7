//! courier's bundled registry server, as a library.
//!
//! It serves [`courier::discovery::protocol::RegistryApi`] (so consumers and
//! providers reach it at `courier://host:port`) on top of
//! [`courier::discovery::LocalRegistry`], and keeps every registration and
//! lease on disk in a [redb](https://docs.rs/redb) database. A change is
//! acknowledged only once it is durable, and on restart, even after
//! `kill -9`, every lease gets a fresh TTL (as etcd's lessor does on a leader
//! change), so consumers see the same instances as before.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = courier_registry::open("/var/lib/courier-registry").await?;
//! courier::Server::builder()
//!     .add_service(registry.into_service())
//!     .serve("0.0.0.0:7600")
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - `persist`: the redb tables and the group-commit writer thread.
//! - `service`: the `RegistryApi` handlers.
//!
//! ## Feature flags
//!
//! None.

mod persist;
mod service;

use std::path::Path;
use std::sync::Arc;

use courier::discovery::LocalRegistry;
use courier::discovery::protocol::RegistryApiServer;

pub use persist::PersistError;

/// A registry with its state on disk. Cheap to clone.
#[derive(Clone)]
pub struct RegistryServer {
    local: LocalRegistry,
    persistence: Arc<persist::Persistence>,
}

impl RegistryServer {
    /// The courier service to add to a server.
    pub fn into_service(self) -> RegistryApiServer<RegistryServer> {
        RegistryApiServer::new(self)
    }

    /// The in-process registry behind the server (for embedding).
    pub fn local(&self) -> &LocalRegistry {
        &self.local
    }
}

/// Open (or create) the registry stored in `data_dir` and restore its state.
/// Must be called inside a tokio runtime (it starts the lease-expiry task).
pub async fn open(data_dir: impl AsRef<Path>) -> Result<RegistryServer, PersistError> {
    let data_dir = data_dir.as_ref().to_owned();
    let (persistence, store) = tokio::task::spawn_blocking(move || persist::Persistence::open(&data_dir))
        .await
        .map_err(|err| PersistError::Io(std::io::Error::other(err)))??;
    let persistence = Arc::new(persistence);
    let expiry_persistence = persistence.clone();
    let local = LocalRegistry::with_store(store, move |outcome| {
        // Queued in order with every other change; not waited for: losing an
        // expiry in a crash only means the lease expires again after the
        // restart.
        let _ = expiry_persistence.enqueue(outcome.changes.clone());
    });
    Ok(RegistryServer { local, persistence })
}
