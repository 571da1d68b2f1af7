//! The `RegistryApi` handlers: apply to the in-memory registry, make the
//! change durable, then tell watchers. Listings and watch answers wait
//! until the disk holds everything up to their revision, so nobody hears
//! of a change a crash could still lose. Answers come in pages of about
//! [`PAGE_BYTES`], so no service is too large to list or watch.

use std::time::Duration;

use courier::discovery::{Instance, Revision};
use courier::registry::courier::api::{
    LeaseGrant, ListPage, MAX_WATCH_WAIT_MS, PAGE_BYTES, PageToken, RegistrationsPage, RegistrationsToken,
    RegistryApi, WatchPage, status_of,
};
use courier::registry::mem::store::{RemovalCause, StoreError};
use courier::{Context, ResponseStream, Status};

use crate::RegistryServer;

fn unavailable(err: crate::PersistError) -> Status {
    Status::unavailable(format!("the registry could not save the change: {err}"))
}

impl RegistryApi for RegistryServer {
    async fn register(&self, instance: Instance, ttl_ms: u64) -> Result<LeaseGrant, Status> {
        let mut receipt = None;
        let (service, id, addr) = (instance.service.clone(), instance.id.clone(), instance.addr.clone());
        let registered = self.local.register_with(instance, Duration::from_millis(ttl_ms), |outcome| {
            receipt = Some(self.persistence.enqueue(outcome.changes.clone()));
        });
        let (lease, outcome) = match registered {
            Ok(registered) => registered,
            Err(err) => {
                // Refusals are the caller's to report; here they are only
                // worth a look when debugging (a provider retrying
                // `AlreadyExists` asks again every few seconds).
                tracing::debug!(%service, instance = %id, %addr, %err, "registration refused");
                return Err(status_of(err));
            }
        };
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
            tracing::warn!(%service, instance = %id, %err, "registration not saved; refused");
            return Err(unavailable(err));
        }
        // Watchers hear of it only once it is on disk.
        self.local.publish(&outcome);
        tracing::info!(%service, instance = %id, %addr, lease = lease.id, ttl_ms, "instance registered");
        Ok(LeaseGrant { id: lease.id, ttl_ms })
    }

    async fn keep_alive(&self, lease: u64) -> Result<u64, Status> {
        // Not persisted: every lease gets a fresh TTL when the registry starts.
        match self.local.renew(lease) {
            Ok(ttl) => Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            // Gone, or alive but holding nothing: either way the provider
            // must register again. Keep the store's words; it logs them.
            Err(err @ (StoreError::LeaseNotFound(_) | StoreError::LeaseHoldsNothing(_))) => {
                Err(Status::not_found(err.to_string()))
            }
            Err(err) => Err(status_of(err.into())),
        }
    }

    async fn deregister(&self, lease: u64) -> Result<(), Status> {
        let mut receipt = None;
        let outcome = self
            .local
            .revoke_with(lease, |outcome| receipt = Some(self.persistence.enqueue(outcome.changes.clone())))
            .map_err(status_of)?;
        // Wake watchers at once: the instance is gone from memory either
        // way, and consumers should stop calling it as soon as the disk
        // agrees (their answers wait for it; see `watch`).
        self.local.publish(&outcome);
        for removed in outcome.removed.iter().filter(|r| r.cause == RemovalCause::Revoked) {
            tracing::info!(
                service = %removed.service,
                instance = %removed.id,
                addr = %removed.addr,
                lease,
                "instance deregistered"
            );
        }
        match receipt {
            Some(receipt) => receipt.durable().await.map_err(unavailable),
            None => Ok(()),
        }
    }

    async fn list(&self, service: String, page: Option<PageToken>) -> ListPage {
        let after = page.as_ref().map(|token| token.after_id.as_str());
        let (instances, next, revision) = self.local.instances_page(&service, after, PAGE_BYTES);
        self.persistence.durable_through(revision).await;
        // Every page of a listing carries its first page's revision: the
        // one the caller may resume a watch from.
        let revision = page.map_or(revision, |token| token.revision);
        ListPage { instances, revision, next: next.map(|after_id| PageToken { revision, after_id }) }
    }

    async fn watch(&self, cx: &Context, service: String, after: Option<Revision>, wait_ms: u64) -> WatchPage {
        let wait = Duration::from_millis(wait_ms.min(MAX_WATCH_WAIT_MS));
        let page = tokio::select! {
            page = self.local.wait_events_page(&service, after, wait, PAGE_BYTES) => page,
            // Shutting down: end the long poll now (empty: nothing changed)
            // rather than hold up the drain; the client polls again.
            () = cx.shutdown() => return WatchPage { events: Vec::new(), next: None },
        };
        if let Some(last) = page.events.last() {
            self.persistence.durable_through(last.revision()).await;
        }
        let next = match (page.more_after, page.events.last()) {
            (Some(after_id), Some(reset)) => Some(PageToken { revision: reset.revision(), after_id }),
            _ => None,
        };
        WatchPage { events: page.events, next }
    }

    async fn follow(
        &self,
        cx: &Context,
        service: String,
        after: Option<Revision>,
    ) -> ResponseStream<WatchPage> {
        let registry = self.clone();
        let cx = cx.clone();
        // Each step waits for the next events (a long wait, renewed while
        // nothing changes), then hands on the page once the disk holds it.
        ResponseStream::new(courier::stream::unfold(after, move |after| {
            let (registry, cx, service) = (registry.clone(), cx.clone(), service.clone());
            async move {
                let wait = Duration::from_millis(MAX_WATCH_WAIT_MS);
                loop {
                    let page = tokio::select! {
                        page = registry.local.wait_events_page(&service, after, wait, PAGE_BYTES) => page,
                        // Shutting down: end the stream cleanly, so the
                        // drain does not wait for it; the follower follows
                        // again (elsewhere, or after the restart).
                        () = cx.shutdown() => return None,
                    };
                    let Some(last) = page.events.last() else { continue };
                    let revision = last.revision();
                    registry.persistence.durable_through(revision).await;
                    let next = page.more_after.map(|after_id| PageToken { revision, after_id });
                    return Some((Ok(WatchPage { events: page.events, next }), Some(revision)));
                }
            }
        }))
    }

    async fn registrations(
        &self,
        service: Option<String>,
        page: Option<RegistrationsToken>,
    ) -> RegistrationsPage {
        let after = page.as_ref().map(|token| (token.service.as_str(), token.id.as_str()));
        let (registrations, next) = self.local.registrations_page(service.as_deref(), after, PAGE_BYTES);
        RegistrationsPage {
            registrations,
            next: next.map(|(service, id)| RegistrationsToken { service, id }),
        }
    }
}
