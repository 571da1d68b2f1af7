//! The `RegistryApi` handlers: apply to the in-memory registry, make the
//! change durable, then tell watchers.

use std::time::Duration;

use courier::discovery::protocol::{LeaseGrant, MAX_WATCH_WAIT_MS, RegistryApi, status_of};
use courier::discovery::{Instance, Registration, Revision, Snapshot, WatchEvent};
use courier::{Context, Status};

use crate::RegistryServer;

fn unavailable(err: crate::PersistError) -> Status {
    Status::unavailable(format!("the registry could not save the change: {err}"))
}

impl RegistryApi for RegistryServer {
    async fn register(&self, instance: Instance, ttl_ms: u64) -> Result<LeaseGrant, Status> {
        let mut receipt = None;
        let (lease, outcome) = self
            .local
            .register_with(instance, Duration::from_millis(ttl_ms), |outcome| {
                receipt = Some(self.persistence.enqueue(outcome.changes.clone()));
            })
            .map_err(status_of)?;
        let durable = match receipt {
            Some(receipt) => receipt.durable().await,
            None => Ok(()),
        };
        if let Err(err) = durable {
            // Undo in memory too (and tell watchers): the caller was told it
            // failed and will retry.
            if let Ok(undo) = self.local.revoke_with(lease.id, |undo| {
                let _ = self.persistence.enqueue(undo.changes.clone());
            }) {
                self.local.publish(&undo);
            }
            return Err(unavailable(err));
        }
        // Watchers hear of it only once it is on disk.
        self.local.publish(&outcome);
        Ok(LeaseGrant { id: lease.id, ttl_ms })
    }

    async fn keep_alive(&self, lease: u64) -> Result<u64, Status> {
        // Not persisted: every lease gets a fresh TTL when the registry starts.
        let ttl = self.local.keep_alive(lease).map_err(status_of)?;
        Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    async fn deregister(&self, lease: u64) -> Result<(), Status> {
        let mut receipt = None;
        let outcome = self
            .local
            .revoke_with(lease, |outcome| receipt = Some(self.persistence.enqueue(outcome.changes.clone())))
            .map_err(status_of)?;
        // Tell watchers at once: the instance is gone from memory either way,
        // and consumers should stop calling it now.
        self.local.publish(&outcome);
        match receipt {
            Some(receipt) => receipt.durable().await.map_err(unavailable),
            None => Ok(()),
        }
    }

    async fn list(&self, service: String) -> Snapshot {
        self.local.list(&service)
    }

    async fn watch(
        &self,
        cx: &Context,
        service: String,
        after: Option<Revision>,
        wait_ms: u64,
    ) -> Vec<WatchEvent> {
        let wait = Duration::from_millis(wait_ms.min(MAX_WATCH_WAIT_MS));
        tokio::select! {
            events = self.local.wait_events(&service, after, wait) => events,
            // Shutting down: end the long poll now (empty: nothing changed)
            // rather than hold up the drain; the client polls again.
            () = cx.shutdown() => Vec::new(),
        }
    }

    async fn registrations(&self, service: Option<String>) -> Vec<Registration> {
        self.local.registrations(service.as_deref())
    }
}
