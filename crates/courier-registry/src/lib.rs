//! courier's bundled registry server, as a library.
//!
//! It serves [`courier::registry::courier::api::RegistryApi`] (so consumers and
//! providers reach it at `courier://host:port`) on top of
//! [`courier::registry::mem::LocalRegistry`], and keeps every registration and
//! lease on disk in a [redb](https://docs.rs/redb) database. A change is
//! acknowledged only once it is durable, and on restart, even after
//! `kill -9`, every lease gets a fresh TTL (as etcd's lessor does on a leader
//! change), so consumers see the same instances as before.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = courier_registry::open("/var/lib/courier-registry").await?;
//! registry
//!     .add_to(courier::Server::builder())
//!     .serve("0.0.0.0:7600")
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## What one client cannot do to it
//!
//! - **Take the capacity others need.** [`RegistryServer::add_to`] gives
//!   `Watch` (a long poll that holds its slot for up to 30 s) and
//!   `KeepAlive` concurrency pools of their own, server-wide and per
//!   connection ([`courier::MethodLimit`]; [`WATCH_LIMIT`],
//!   [`WATCH_LIMIT_PER_CONNECTION`], [`KEEP_ALIVE_LIMIT`],
//!   [`KEEP_ALIVE_LIMIT_PER_CONNECTION`]): a flood of watches fills only
//!   the watch pool (calls over it get `ResourceExhausted` at once), and
//!   registrations and renewals keep their slots, so no lease is lost to
//!   it.
//! - **Take over an instance.** An instance id held by a live lease cannot
//!   be registered again (`AlreadyExists`), and a lease that no longer
//!   holds its instance is not renewed (`NotFound`), so its provider
//!   registers again instead of renewing nothing.
//! - **Poison a service.** Instances over
//!   [`MAX_INSTANCE_BYTES`](courier::discovery::instance::MAX_INSTANCE_BYTES)
//!   are refused (`InvalidArgument`), and listings, watches and
//!   registrations are answered in pages, so a service of any size can
//!   be discovered.
//!
//! Every registration, deregistration and expiry is logged at INFO, with
//! the service, instance, address and lease.
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

use courier::registry::courier::api::{FOLLOW_METHOD, KEEP_ALIVE_METHOD, RegistryApiServer, WATCH_METHOD};
use courier::registry::mem::LocalRegistry;
use courier::{MethodLimit, ServerBuilder};

pub use persist::PersistError;

/// Watches waiting at once, server-wide, by default. A waiting watch costs
/// a small task; this bounds what a flood of them can hold.
pub const WATCH_LIMIT: usize = 8192;
/// Watches waiting at once on one connection, by default: a process
/// watches one service per consumer it runs (all of them share its
/// registry connection), so this leaves room for many, while a flood
/// needs 32 connections to fill the server-wide pool.
pub const WATCH_LIMIT_PER_CONNECTION: usize = 256;
/// Renewals at once, server-wide, by default. A renewal takes a few
/// microseconds, so this pool is never full but for a flood; and being
/// its own, no flood of other calls can starve renewals.
pub const KEEP_ALIVE_LIMIT: usize = 4096;
/// Renewals at once on one connection, by default.
pub const KEEP_ALIVE_LIMIT_PER_CONNECTION: usize = 256;

/// A registry with its state on disk. Cheap to clone.
#[derive(Clone)]
pub struct RegistryServer {
    local: LocalRegistry,
    persistence: Arc<persist::Persistence>,
    watch_limit: MethodLimit,
    keep_alive_limit: MethodLimit,
}

impl RegistryServer {
    /// Add the registry to a server, with the concurrency pools it needs
    /// for `Watch` and `KeepAlive` (see the crate docs). This is how to
    /// serve it.
    pub fn add_to(self, builder: ServerBuilder) -> ServerBuilder {
        builder
            .method_limit(WATCH_METHOD, self.watch_limit)
            // The streaming watch, in a pool of the same size of its own.
            .method_limit(FOLLOW_METHOD, self.watch_limit)
            .method_limit(KEEP_ALIVE_METHOD, self.keep_alive_limit)
            .add_service(self.into_service())
    }

    /// The courier service alone. Served without [`RegistryServer::add_to`]'s
    /// limits, its long polls share the server's concurrency slots with
    /// every other call, and enough of them starve renewals.
    pub fn into_service(self) -> RegistryApiServer<RegistryServer> {
        RegistryApiServer::new(self)
    }

    /// Set the `Watch` pool [`RegistryServer::add_to`] configures (default
    /// [`WATCH_LIMIT`], [`WATCH_LIMIT_PER_CONNECTION`] per connection).
    #[must_use]
    pub fn watch_limit(mut self, limit: MethodLimit) -> RegistryServer {
        self.watch_limit = limit;
        self
    }

    /// Set the `KeepAlive` pool [`RegistryServer::add_to`] configures
    /// (default [`KEEP_ALIVE_LIMIT`], [`KEEP_ALIVE_LIMIT_PER_CONNECTION`]
    /// per connection).
    #[must_use]
    pub fn keep_alive_limit(mut self, limit: MethodLimit) -> RegistryServer {
        self.keep_alive_limit = limit;
        self
    }

    /// The in-process registry behind the server (for embedding).
    pub fn local(&self) -> &LocalRegistry {
        &self.local
    }
}

/// How to open a registry's data directory.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    allow_empty_data: bool,
}

impl OpenOptions {
    /// The defaults: an empty (0-byte) data file is refused.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Start an empty registry even if the data file is empty (0 bytes),
    /// saying so in the log, instead of refusing to start. Every provider
    /// registers again when its next renewal finds its lease unknown.
    #[must_use]
    pub fn allow_empty_data(mut self, allow: bool) -> OpenOptions {
        self.allow_empty_data = allow;
        self
    }

    /// Open (or create) the registry stored in `data_dir` and restore its
    /// state. Must be called inside a tokio runtime (it starts the
    /// lease-expiry task).
    pub async fn open(&self, data_dir: impl AsRef<Path>) -> Result<RegistryServer, PersistError> {
        let data_dir = data_dir.as_ref().to_owned();
        let allow_empty = self.allow_empty_data;
        let (persistence, store) =
            tokio::task::spawn_blocking(move || persist::Persistence::open(&data_dir, allow_empty))
                .await
                .map_err(|err| PersistError::Io(std::io::Error::other(err)))??;
        let persistence = Arc::new(persistence);
        let expiry_persistence = persistence.clone();
        let local = LocalRegistry::with_store(store, move |outcome| {
            // Queued in order with every other change; not waited for:
            // losing an expiry in a crash only means the lease expires
            // again after the restart.
            let _ = expiry_persistence.enqueue(outcome.changes.clone());
        });
        Ok(RegistryServer {
            local,
            persistence,
            watch_limit: MethodLimit::new(WATCH_LIMIT).per_connection(WATCH_LIMIT_PER_CONNECTION),
            keep_alive_limit: MethodLimit::new(KEEP_ALIVE_LIMIT)
                .per_connection(KEEP_ALIVE_LIMIT_PER_CONNECTION),
        })
    }
}

/// Open (or create) the registry stored in `data_dir` and restore its state,
/// with the default [`OpenOptions`]. Must be called inside a tokio runtime
/// (it starts the lease-expiry task).
pub async fn open(data_dir: impl AsRef<Path>) -> Result<RegistryServer, PersistError> {
    OpenOptions::new().open(data_dir).await
}
