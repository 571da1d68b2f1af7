//! `courier://host:port`: the bundled registry server, over courier's own
//! protocol (see [`api`]).
//!
//! The channel connects lazily, so `connect` succeeds while the registry is
//! down (a consumer can then start from its disk cache); calls fail with
//! [`RegistryError::Unavailable`] until it is back.
//!
//! Listings arrive in pages, and a `Reset` too large for one answer comes
//! with a token for the rest of its set: this client reads every page
//! before it hands over a listing or a `Reset`, so callers see whole sets,
//! as from every other backend. A watch refused because the registry is at
//! its limit of watches (`ResourceExhausted`) ends like a lost watch; the
//! consumer keeps what it knows and watches again after a backoff.

use std::time::Duration;

use tokio::sync::mpsc;

use self::api::{PageToken, RegistrationsToken, RegistryApiClient};
use crate::client::Channel;
use crate::discovery::{
    Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchEvent,
    WatchStream,
};
use crate::resilience::Backoff;
use crate::service::BoxFuture;

pub mod api;
use crate::status::{Code, Status};

/// How long one long-poll watch call waits on the server.
const WATCH_WAIT: Duration = Duration::from_secs(10);
/// Timeout of every other registry call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct RemoteRegistry {
    client: RegistryApiClient,
}

impl RemoteRegistry {
    pub(crate) fn new(addr: &str) -> RemoteRegistry {
        // Keepalive on the registry connection finds a dead registry within
        // two intervals even while only long polls are in flight. One
        // connection per process is cheap to retry, and every second without
        // it is a second of stale instances: reconnect within a second.
        let backoff = Backoff { max: Duration::from_secs(1), ..Backoff::default() };
        let channel = Channel::builder(addr)
            .keepalive_interval(Some(Duration::from_secs(5)))
            .backoff(backoff)
            .build_lazy();
        RemoteRegistry { client: RegistryApiClient::new(channel).with_timeout(CALL_TIMEOUT) }
    }
}

fn error_of(status: Status) -> RegistryError {
    match status.code() {
        Code::NotFound => RegistryError::LeaseNotFound(0),
        Code::InvalidArgument => RegistryError::Rejected(status.message().to_owned()),
        _ => RegistryError::Unavailable(status.to_string()),
    }
}

/// A registry whose pages do not move forward is broken (or hostile):
/// stop rather than ask for the same page forever.
fn stuck(what: &str) -> RegistryError {
    RegistryError::Unavailable(format!("the registry's pages of {what} do not advance"))
}

/// The rest of a listing of `service`, from `token` on.
async fn rest_of(
    client: &RegistryApiClient,
    service: &str,
    mut token: PageToken,
    instances: &mut Vec<Instance>,
) -> Result<(), RegistryError> {
    loop {
        let page = client.list(service.to_owned(), Some(token.clone())).await.map_err(error_of)?;
        instances.extend(page.instances);
        match page.next {
            Some(next) if next.after_id > token.after_id => token = next,
            Some(_) => return Err(stuck("instances")),
            None => return Ok(()),
        }
    }
}

impl RegistryBackend for RemoteRegistry {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            let (service, instance_id) = (instance.service.clone(), instance.id.clone());
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let grant = match self.client.register(instance, ttl_ms).await {
                Ok(grant) => grant,
                Err(status) if status.code() == Code::AlreadyExists => {
                    return Err(RegistryError::AlreadyExists { service, id: instance_id });
                }
                Err(status) => return Err(error_of(status)),
            };
            Ok(Lease { id: grant.id, ttl: Duration::from_millis(grant.ttl_ms), service, instance_id })
        })
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            match self.client.keep_alive(lease.id).await {
                Ok(_) => Ok(()),
                Err(status) if status.code() == Code::NotFound => Err(RegistryError::LeaseNotFound(lease.id)),
                Err(status) => Err(error_of(status)),
            }
        })
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            match self.client.deregister(lease.id).await {
                Ok(()) => Ok(()),
                Err(status) if status.code() == Code::NotFound => Err(RegistryError::LeaseNotFound(lease.id)),
                Err(status) => Err(error_of(status)),
            }
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move {
            let first = self.client.list(service.to_owned(), None).await.map_err(error_of)?;
            let mut instances = first.instances;
            if let Some(token) = first.next {
                rest_of(&self.client, service, token, &mut instances).await?;
            }
            Ok(Snapshot { instances, revision: first.revision })
        })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(256);
            let client = self.client.with_timeout(WATCH_WAIT + CALL_TIMEOUT);
            let list_client = self.client.clone();
            let service = service.to_owned();
            let wait_ms = u64::try_from(WATCH_WAIT.as_millis()).unwrap_or(u64::MAX);
            tokio::spawn(async move {
                let mut after = after;
                loop {
                    let page = async {
                        let page = client.watch(service.clone(), after, wait_ms).await.map_err(error_of)?;
                        let mut events = page.events;
                        // A `Reset` too large for one answer: read the rest of
                        // its set before handing it on, so the watcher never
                        // takes part of a set for all of it.
                        if let Some(token) = page.next {
                            match events.last_mut() {
                                Some(WatchEvent::Reset { instances, .. }) => {
                                    rest_of(&list_client, &service, token, instances).await?;
                                }
                                _ => {
                                    return Err(RegistryError::Unavailable(
                                        "the registry sent a page token without a Reset".to_owned(),
                                    ));
                                }
                            }
                        }
                        Ok(events)
                    };
                    let events = tokio::select! {
                        events = page => events,
                        () = tx.closed() => return,
                    };
                    match events {
                        Ok(events) => {
                            for event in events {
                                after = Some(event.revision());
                                if tx.send(Ok(event)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(err) => {
                            // The watch is lost (or refused: the registry is
                            // at its limit of watches); the watcher keeps
                            // what it knows and re-watches from the last
                            // revision it saw, after a backoff.
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    }
                }
            });
            Ok(WatchStream::new(rx))
        })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(async move {
            let mut registrations = Vec::new();
            let mut token: Option<RegistrationsToken> = None;
            loop {
                let page = self
                    .client
                    .registrations(service.map(str::to_owned), token.clone())
                    .await
                    .map_err(error_of)?;
                registrations.extend(page.registrations);
                match (page.next, &token) {
                    (None, _) => return Ok(registrations),
                    (Some(next), Some(last)) if (&next.service, &next.id) <= (&last.service, &last.id) => {
                        return Err(stuck("registrations"));
                    }
                    (Some(next), _) => token = Some(next),
                }
            }
        })
    }
}
