//! The bundled registry's API, itself a courier service.
//!
//! The server side lives in the `courier-registry` crate (it adds
//! persistence); the `courier://` backend (`remote`) calls it.
//! Watches are long polls: each call returns the events after a revision,
//! waiting up to `wait_ms` for some, so the native protocol's plain
//! request/response is enough and a lost connection just means the next
//! poll resumes from the last revision seen.
//!
//! No answer grows with the size of a service: listings come in pages of
//! about [`PAGE_BYTES`] (each with a [`PageToken`] for the next), a watch
//! returns as many events as fit (the next poll, from the last one's
//! revision, gets the rest), and a `Reset` too large for one answer
//! carries the instances that fit and a token to `List` the rest of the
//! set at the `Reset`'s revision. With instances limited to
//! [`MAX_INSTANCE_BYTES`](crate::discovery::instance::MAX_INSTANCE_BYTES) at
//! registration, every answer stays far below the frame limit however
//! many instances a service has.
//!
//! Calls to `Watch` wait, so the registry server gives them a concurrency
//! pool of their own (and `KeepAlive` one too): a flood of long polls
//! cannot take the slots registrations and renewals need. A watch refused
//! for being over that pool's limit fails with `ResourceExhausted`; the
//! consumer keeps its instances and polls again later.

use serde::{Deserialize, Serialize};

use crate::discovery::{Instance, Registration, Revision, WatchEvent};
use crate::status::{Code, Status};

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

/// About how many bytes (of JSON, the largest encoding) of instances,
/// events or registrations one answer carries; an answer holds at least
/// one item, and an item is at most
/// [`MAX_INSTANCE_BYTES`](crate::discovery::instance::MAX_INSTANCE_BYTES) and a
/// little.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Where a listing of a service's instances goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    /// The revision of the listing (that of its first page). Later pages
    /// are read from the state as it is then, and may already show changes
    /// made after it; the events after it bring any listing up to date.
    pub revision: Revision,
    /// The id of the last instance the previous page held.
    pub after_id: String,
}

/// One page of a service's instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// Instances, in id order.
    pub instances: Vec<Instance>,
    /// The revision of the listing.
    pub revision: Revision,
    /// Set if more instances follow: ask `List` again with it.
    pub next: Option<PageToken>,
}

/// What one watch poll returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPage {
    /// Events, oldest first; empty if nothing changed while it waited.
    pub events: Vec<WatchEvent>,
    /// Set if the last event is a `Reset` whose instances continue: `List`
    /// the service with it (and on, page by page) for the rest of the set,
    /// which belongs to that `Reset`.
    pub next: Option<PageToken>,
}

/// Where a listing of registrations goes on: after this instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationsToken {
    /// The service of the last registration the previous page held.
    pub service: String,
    /// Its instance id.
    pub id: String,
}

/// One page of registrations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationsPage {
    /// Registrations, in (service, id) order.
    pub registrations: Vec<Registration>,
    /// Set if more follow: ask `Registrations` again with it.
    pub next: Option<RegistrationsToken>,
}

/// The registry service. Errors: `NotFound` for an unknown lease (or one
/// that no longer holds its instance: register again), `AlreadyExists`
/// for an instance id another live lease holds, `InvalidArgument` for an
/// instance (too large, say) or TTL the registry refuses, `Unavailable` if
/// it cannot persist a change, `ResourceExhausted` when a method is at its
/// concurrency limit.
#[crate::service(name = "CourierRegistry", version = "1.2.0")]
pub trait RegistryApi {
    /// Grant a lease of `ttl_ms` and register `instance` under it.
    async fn register(&self, instance: Instance, ttl_ms: u64) -> Result<LeaseGrant, Status>;
    /// Renew a lease; returns its TTL in milliseconds.
    async fn keep_alive(&self, lease: u64) -> Result<u64, Status>;
    /// Revoke a lease, removing its instance.
    async fn deregister(&self, lease: u64) -> Result<(), Status>;
    /// A page of the instances of `service`: the first, or the one `page`
    /// points at.
    #[courier(idempotent)]
    async fn list(&self, service: String, page: Option<PageToken>) -> ListPage;
    /// The events of `service` after revision `after` (a `Reset` first if
    /// `after` is `None` or too old), waiting up to `wait_ms` for some.
    #[courier(idempotent)]
    async fn watch(
        &self,
        cx: &crate::Context,
        service: String,
        after: Option<Revision>,
        wait_ms: u64,
    ) -> WatchPage;
    /// The events of `service` after revision `after` (a `Reset` first if
    /// `after` is `None` or too old), as a stream: each page as soon as it
    /// is durable, for as long as the caller follows. Ends cleanly when the
    /// registry shuts down: follow again from the last revision seen.
    /// (Since 1.2.0; `Watch` is its long-polling form.)
    #[courier(idempotent)]
    async fn follow(
        &self,
        cx: &crate::Context,
        service: String,
        after: Option<Revision>,
    ) -> crate::ResponseStream<WatchPage>;
    /// A page of every registration, or of those of one service.
    #[courier(idempotent)]
    async fn registrations(
        &self,
        service: Option<String>,
        page: Option<RegistrationsToken>,
    ) -> RegistrationsPage;
}

/// The full name of the `Watch` method on the wire, for
/// [`ServerBuilder::method_limit`](crate::ServerBuilder::method_limit).
pub const WATCH_METHOD: &str = "CourierRegistry.Watch";
/// The full name of the `Follow` method on the wire (the streaming watch;
/// it shares `Watch`'s limits).
pub const FOLLOW_METHOD: &str = "CourierRegistry.Follow";
/// The full name of the `KeepAlive` method on the wire.
pub const KEEP_ALIVE_METHOD: &str = "CourierRegistry.KeepAlive";

/// The status for a registry error, as the server sends it.
pub fn status_of(err: crate::discovery::RegistryError) -> Status {
    match err {
        crate::discovery::RegistryError::LeaseNotFound(id) => {
            Status::not_found(format!("lease {id} not found"))
        }
        err @ crate::discovery::RegistryError::AlreadyExists { .. } => {
            Status::new(Code::AlreadyExists, err.to_string())
        }
        crate::discovery::RegistryError::Rejected(why) => Status::invalid_argument(why),
        other => Status::unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_names_are_those_on_the_wire() {
        let methods: Vec<&str> = RegistryApiClient::DESCRIPTOR.methods.iter().map(|m| m.full_name).collect();
        assert!(methods.contains(&WATCH_METHOD), "{methods:?}");
        assert!(methods.contains(&FOLLOW_METHOD), "{methods:?}");
        assert!(methods.contains(&KEEP_ALIVE_METHOD), "{methods:?}");
    }
}
