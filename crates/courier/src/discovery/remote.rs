//! `courier://host:port`: the bundled registry server, over courier's own
//! protocol (see [`super::protocol`]).
//!
//! The channel connects lazily, so `connect` succeeds while the registry is
//! down (a consumer can then start from its disk cache); calls fail with
//! [`RegistryError::Unavailable`] until it is back.

use std::time::Duration;

use tokio::sync::mpsc;

use super::protocol::RegistryApiClient;
use super::{Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchStream};
use crate::client::{Backoff, Channel};
use crate::service::BoxFuture;
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

impl RegistryBackend for RemoteRegistry {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            let (service, instance_id) = (instance.service.clone(), instance.id.clone());
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let grant = self.client.register(instance, ttl_ms).await.map_err(error_of)?;
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
        Box::pin(async move { self.client.list(service.to_owned()).await.map_err(error_of) })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(256);
            let client = self.client.with_timeout(WATCH_WAIT + CALL_TIMEOUT);
            let service = service.to_owned();
            let wait_ms = u64::try_from(WATCH_WAIT.as_millis()).unwrap_or(u64::MAX);
            tokio::spawn(async move {
                let mut after = after;
                loop {
                    let events = tokio::select! {
                        events = client.watch(service.clone(), after, wait_ms) => events,
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
                        Err(status) => {
                            // The watch is lost; the watcher re-watches from
                            // the last revision it saw.
                            let _ = tx.send(Err(error_of(status))).await;
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
        Box::pin(async move { self.client.registrations(service.map(str::to_owned)).await.map_err(error_of) })
    }
}
