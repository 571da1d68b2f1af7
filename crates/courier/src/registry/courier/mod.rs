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
//!
//! Watches follow the registry's stream of events (`Follow`, a
//! server-streaming method): each change arrives as soon as it is durable,
//! with no call per poll. A registry older than `Follow` answers
//! `Unimplemented`, and the watch long-polls (`Watch`) instead. Either way
//! a lost watch resumes from the last revision seen.

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

/// Why following a service's events stopped.
enum Followed {
    /// The registry predates `Follow` (or refuses it): long-poll instead.
    Unsupported,
    /// The watcher dropped its stream.
    WatcherGone,
    /// The stream was lost (the registry went away, a bad page): the
    /// watcher re-watches from the last revision it saw, after a backoff.
    Lost(RegistryError),
}

/// Follow `service`'s events from `after` (moved along as events are
/// handed on) into `tx`, until the stream ends: `Ok(true)` if it ended
/// cleanly after at least one page.
async fn follow(
    client: &RegistryApiClient,
    list_client: &RegistryApiClient,
    service: &str,
    after: &mut Option<Revision>,
    tx: &mpsc::Sender<Result<WatchEvent, RegistryError>>,
) -> Result<bool, Followed> {
    let lost = |status: Status| {
        if status.code() == Code::Unimplemented {
            Followed::Unsupported
        } else {
            Followed::Lost(error_of(status))
        }
    };
    let mut pages = tokio::select! {
        pages = client.follow(service.to_owned(), *after) => pages.map_err(lost)?,
        () = tx.closed() => return Err(Followed::WatcherGone),
    };
    let mut delivered = false;
    loop {
        let page = tokio::select! {
            page = pages.message() => page,
            () = tx.closed() => return Err(Followed::WatcherGone),
        };
        let page = match page {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(delivered),
            // An old registry answers an unknown method at its first
            // message; after pages it is a lost stream like any other.
            Err(status) if !delivered => return Err(lost(status)),
            Err(status) => return Err(Followed::Lost(error_of(status))),
        };
        delivered = true;
        let mut events = page.events;
        // A `Reset` too large for one page: read the rest of its set before
        // handing it on, so the watcher never takes part of a set for all.
        if let Some(token) = page.next {
            match events.last_mut() {
                Some(WatchEvent::Reset { instances, .. }) => {
                    rest_of(list_client, service, token, instances).await.map_err(Followed::Lost)?;
                }
                _ => {
                    return Err(Followed::Lost(RegistryError::Unavailable(
                        "the registry sent a page token without a Reset".to_owned(),
                    )));
                }
            }
        }
        for event in events {
            *after = Some(event.revision());
            if tx.send(Ok(event)).await.is_err() {
                return Err(Followed::WatcherGone);
            }
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
            let follow_client = self.client.with_options(self.client.options().clone().without_timeout());
            tokio::spawn(async move {
                let mut after = after;
                // The streaming watch first; long polls for a registry too
                // old to have it.
                let mut streaming = true;
                loop {
                    if streaming {
                        match follow(&follow_client, &list_client, &service, &mut after, &tx).await {
                            // The registry ended the stream after pages (it
                            // is shutting down): follow again, from `after`.
                            Ok(true) => continue,
                            Ok(false) => {
                                // Ended before anything: not a registry to
                                // follow again at once (a tight loop).
                                let _ = tx
                                    .send(Err(RegistryError::Unavailable(
                                        "the registry ended the watch at once".to_owned(),
                                    )))
                                    .await;
                                return;
                            }
                            Err(Followed::Unsupported) => {
                                tracing::debug!(%service, "the registry has no streaming watch; long-polling");
                                streaming = false;
                                continue;
                            }
                            Err(Followed::WatcherGone) => return,
                            Err(Followed::Lost(err)) => {
                                let _ = tx.send(Err(err)).await;
                                return;
                            }
                        }
                    }
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
