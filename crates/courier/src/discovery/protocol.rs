//! The bundled registry's API, itself a courier service.
//!
//! The server side lives in the `courier-registry` crate (it adds
//! persistence); the `courier://` backend (`remote`) calls it.
//! Watches are long polls: each call returns the events after a revision,
//! waiting up to `wait_ms` for some, so the native protocol's plain
//! request/response is enough and a lost connection just means the next
//! poll resumes from the last revision seen.

use serde::{Deserialize, Serialize};

use super::{Instance, Registration, Revision, Snapshot, WatchEvent};
use crate::status::Status;

/// A lease granted by the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The lease id.
    pub id: u64,
    /// Its time to live, in milliseconds.
    pub ttl_ms: u64,
}

/// The longest a watch call waits for events before returning empty.
pub const MAX_WATCH_WAIT_MS: u64 = 30_000;

/// The registry service. Errors: `NotFound` for an unknown lease,
/// `InvalidArgument` for an instance or TTL the registry refuses,
/// `Unavailable` if it cannot persist a change.
#[crate::service(name = "CourierRegistry", version = "1.0.0")]
pub trait RegistryApi {
    /// Grant a lease of `ttl_ms` and register `instance` under it.
    async fn register(&self, instance: Instance, ttl_ms: u64) -> Result<LeaseGrant, Status>;
    /// Renew a lease; returns its TTL in milliseconds.
    async fn keep_alive(&self, lease: u64) -> Result<u64, Status>;
    /// Revoke a lease, removing its instance.
    async fn deregister(&self, lease: u64) -> Result<(), Status>;
    /// The instances of `service`.
    #[courier(idempotent)]
    async fn list(&self, service: String) -> Snapshot;
    /// The events of `service` after revision `after` (a `Reset` first if
    /// `after` is `None` or too old), waiting up to `wait_ms` for some.
    #[courier(idempotent)]
    async fn watch(
        &self,
        cx: &crate::Context,
        service: String,
        after: Option<Revision>,
        wait_ms: u64,
    ) -> Vec<WatchEvent>;
    /// Every registration, or those of one service.
    #[courier(idempotent)]
    async fn registrations(&self, service: Option<String>) -> Vec<Registration>;
}

/// The status for a registry error, as the server sends it.
pub fn status_of(err: super::RegistryError) -> Status {
    match err {
        super::RegistryError::LeaseNotFound(id) => Status::not_found(format!("lease {id} not found")),
        super::RegistryError::Rejected(why) => Status::invalid_argument(why),
        other => Status::unavailable(other.to_string()),
    }
}
