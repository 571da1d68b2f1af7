//! `etcd://host:2379,host:2379`: an etcd v3 cluster (cargo feature `etcd`).
//!
//! The layout is the one grpc-go's etcd resolver
//! (`go.etcd.io/etcd/client/v3/naming`) reads and writes: the key is
//! `<service>/<addr>` and the value is
//! `{"Op":0,"Addr":"host:port","Metadata":{...}}`, put under a lease.
//! courier keeps its own fields (version, weight, zone, ...) inside
//! `Metadata.courier`, so Go gRPC clients and `etcdctl` see courier's
//! instances, and courier consumers route to entries written by others
//! (with version `0.0.0` and no protocols when those fields are absent).
//!
//! An instance's id is its key's last segment: the address for entries
//! courier and grpc-go write, whatever another tool chose otherwise.
//! Revisions are etcd's own: a watch resumes from the revision it saw, and
//! falls back to a full set when etcd has compacted that far.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use super::local::unix_ms;
use super::{
    Instance, InstanceState, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot,
    WatchEvent, WatchStream,
};
use crate::service::BoxFuture;

/// Timeout of every etcd request.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One endpoint, as grpc-go's naming package writes it.
#[derive(Debug, Serialize, Deserialize)]
struct Endpoint {
    #[serde(rename = "Op", default)]
    op: u8,
    #[serde(rename = "Addr", default)]
    addr: String,
    #[serde(rename = "Metadata", default, skip_serializing_if = "serde_json::Value::is_null")]
    metadata: serde_json::Value,
}

/// courier's fields, under `Metadata.courier`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CourierFields {
    version: Option<String>,
    #[serde(default)]
    protocols: Vec<String>,
    weight: Option<u32>,
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    state: InstanceState,
    #[serde(default)]
    registered_unix_ms: u64,
}

pub(crate) struct EtcdRegistry {
    endpoints: Vec<String>,
    client: Mutex<Option<Client>>,
}

fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {err}"))
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

/// etcd reports an unknown lease as an error message; as a registry error
/// it means "register again".
fn lease_error(err: RegistryError, lease: u64) -> RegistryError {
    match err {
        RegistryError::Unavailable(message) if message.contains("lease not found") => {
            RegistryError::LeaseNotFound(lease)
        }
        other => other,
    }
}

fn prefix(service: &str) -> String {
    format!("{service}/")
}

/// Split a key into service and instance id. The id is the last path
/// segment (grpc-go writes `<target>/<addr>`; other tools write whatever
/// they like there), so a key always names the instance its delete event
/// removes.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('/').filter(|(service, id)| !service.is_empty() && !id.is_empty())
}

/// The instance a key/value describes, if it describes one.
fn parse(kv: &KeyValue) -> Option<(Instance, u64)> {
    let (service, id) = split_key(kv.key_str().ok()?)?;
    let endpoint: Endpoint = serde_json::from_slice(kv.value()).ok()?;
    if endpoint.op != 0 {
        return None;
    }
    // The value's address wins; a key suffix is the address when the value
    // names none.
    let addr = if endpoint.addr.is_empty() { id.to_owned() } else { endpoint.addr };
    let fields: CourierFields = endpoint
        .metadata
        .get("courier")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let instance = Instance {
        service: service.to_owned(),
        version: fields.version.unwrap_or_else(|| "0.0.0".to_owned()),
        id: id.to_owned(),
        addr,
        protocols: fields.protocols,
        weight: fields.weight.unwrap_or(1),
        zone: fields.zone,
        metadata: fields.metadata,
        state: fields.state,
    };
    Some((instance, fields.registered_unix_ms))
}

/// A lease TTL in etcd's whole seconds, rounded up (never below one).
fn lease_seconds(ttl: Duration) -> i64 {
    let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

impl EtcdRegistry {
    /// `hosts` is the part after `etcd://`: `host:port,host:port`.
    pub(crate) fn new(hosts: &str) -> Result<EtcdRegistry, String> {
        let endpoints: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| if h.contains("://") { h.to_owned() } else { format!("http://{h}") })
            .collect();
        if endpoints.is_empty() {
            return Err("expected etcd://host:port[,host:port...]".to_owned());
        }
        Ok(EtcdRegistry { endpoints, client: Mutex::new(None) })
    }

    /// The client, connecting on first use (so connecting to the registry
    /// works while etcd is down; calls fail until it is back).
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut client = self.client.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let connected = timed(Client::connect(&self.endpoints, Some(options))).await?;
        *client = Some(connected.clone());
        Ok(connected)
    }

    /// etcd's current revision (read through a count-only get).
    async fn current_revision(&self, service: &str) -> Result<Revision, RegistryError> {
        let mut client = self.client().await?;
        let options = GetOptions::new().with_prefix().with_count_only();
        let response = timed(client.get(prefix(service), Some(options))).await?;
        Ok(revision_of(response.header()))
    }

    async fn list(&self, service: &str) -> Result<Snapshot, RegistryError> {
        let mut client = self.client().await?;
        let response = timed(client.get(prefix(service), Some(GetOptions::new().with_prefix()))).await?;
        let instances = response.kvs().iter().filter_map(parse).map(|(instance, _)| instance).collect();
        Ok(Snapshot { instances, revision: revision_of(response.header()) })
    }
}

/// Feed `tx` from etcd's watch of `service`, starting after `after`.
async fn watch_loop(
    registry: std::sync::Weak<EtcdRegistry>,
    service: String,
    after: Option<Revision>,
    tx: mpsc::Sender<Result<WatchEvent, RegistryError>>,
) {
    let mut after = after;
    loop {
        let Some(this) = registry.upgrade() else { return };
        // A revision from the future means etcd lost its data (restored
        // from an old snapshot, or a new cluster): waiting for that revision
        // would miss everything until then, so start over with a full set.
        if let Some(revision) = after {
            match this.current_revision(&service).await {
                Ok(current) if revision > current => {
                    tracing::warn!(%service, revision, current, "etcd is behind the watch; re-reading the service");
                    after = None;
                }
                Ok(_) => {}
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        }
        // Without a revision to resume from, start with the full set.
        let start = match after {
            Some(revision) => revision + 1,
            None => match this.list(&service).await {
                Ok(snapshot) => {
                    let revision = snapshot.revision;
                    if tx
                        .send(Ok(WatchEvent::Reset { instances: snapshot.instances, revision }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    revision + 1
                }
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            },
        };
        let mut client = match this.client().await {
            Ok(client) => client,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
        drop(this);
        let options =
            WatchOptions::new().with_prefix().with_start_revision(i64::try_from(start).unwrap_or(i64::MAX));
        let mut stream = match timed(client.watch(prefix(&service), Some(options))).await {
            Ok(stream) => stream,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = tx.closed() => return,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let _ = tx.send(Err(unavailable("the watch stream ended"))).await;
                    return;
                }
                Err(err) => {
                    let _ = tx.send(Err(unavailable(err))).await;
                    return;
                }
            };
            if response.compact_revision() > 0 {
                // etcd no longer has the history we asked for: start over
                // with a full set.
                after = None;
                break;
            }
            if response.canceled() {
                // Dropped for another reason (etcd shutting down, say): let
                // the consumer back off and resume rather than spin here.
                let reason = response.cancel_reason();
                let _ = tx.send(Err(unavailable(format!("etcd cancelled the watch: {reason}")))).await;
                return;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                let change = match event.event_type() {
                    EventType::Put => match parse(kv) {
                        Some((instance, _)) if kv.create_revision() == kv.mod_revision() => {
                            WatchEvent::Add { instance, revision }
                        }
                        Some((instance, _)) => WatchEvent::Update { instance, revision },
                        None => continue,
                    },
                    EventType::Delete => {
                        let Some((_, id)) = kv.key_str().ok().and_then(split_key) else { continue };
                        WatchEvent::Remove { id: id.to_owned(), revision }
                    }
                };
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl RegistryBackend for std::sync::Arc<EtcdRegistry> {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            instance.validate().map_err(RegistryError::Rejected)?;
            if instance.addr.contains('/') {
                // The key is `<service>/<addr>`: a slash would change the id.
                return Err(RegistryError::Rejected(format!(
                    "an etcd address has no `/`: {}",
                    instance.addr
                )));
            }
            let mut client = self.client().await?;
            let grant = timed(client.lease_grant(lease_seconds(ttl), None)).await?;
            let fields = CourierFields {
                version: Some(instance.version.clone()),
                protocols: instance.protocols.clone(),
                weight: Some(instance.weight),
                zone: instance.zone.clone(),
                metadata: instance.metadata.clone(),
                state: instance.state,
                registered_unix_ms: unix_ms(),
            };
            let endpoint = Endpoint {
                op: 0,
                addr: instance.addr.clone(),
                metadata: serde_json::json!({ "courier": fields }),
            };
            let value =
                serde_json::to_vec(&endpoint).map_err(|err| RegistryError::Rejected(err.to_string()))?;
            let key = format!("{}/{}", instance.service, instance.addr);
            timed(client.put(key, value, Some(PutOptions::new().with_lease(grant.id())))).await?;
            Ok(Lease {
                id: u64::try_from(grant.id()).unwrap_or(0),
                ttl: Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(1)),
                service: instance.service,
                instance_id: instance.addr,
            })
        })
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let id = i64::try_from(lease.id).unwrap_or(i64::MAX);
            let renewed = async {
                let (mut keeper, mut responses) = timed(client.lease_keep_alive(id)).await?;
                timed(keeper.keep_alive()).await?;
                timed(responses.message()).await
            };
            match renewed.await.map_err(|err| lease_error(err, lease.id))? {
                // A TTL of zero is etcd saying the lease is gone.
                Some(response) if response.ttl() > 0 => Ok(()),
                Some(_) => Err(RegistryError::LeaseNotFound(lease.id)),
                None => Err(unavailable("the keep-alive stream ended")),
            }
        })
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            timed(client.lease_revoke(i64::try_from(lease.id).unwrap_or(i64::MAX)))
                .await
                .map(|_| ())
                .map_err(|err| lease_error(err, lease.id))
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move { EtcdRegistry::list(self, service).await })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(watch_loop(std::sync::Arc::downgrade(self), service.to_owned(), after, tx));
            Ok(WatchStream::new(rx))
        })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let response = match service {
                Some(service) => {
                    timed(client.get(prefix(service), Some(GetOptions::new().with_prefix()))).await?
                }
                None => timed(client.get("", Some(GetOptions::new().with_all_keys()))).await?,
            };
            let mut registrations: Vec<Registration> = response
                .kvs()
                .iter()
                .filter_map(|kv| {
                    parse(kv).map(|(instance, registered_unix_ms)| Registration {
                        instance,
                        lease: u64::try_from(kv.lease()).unwrap_or(0),
                        registered_unix_ms,
                    })
                })
                .collect();
            registrations.sort_by(|a, b| {
                (&a.instance.service, &a.instance.id).cmp(&(&b.instance.service, &b.instance.id))
            });
            Ok(registrations)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_round_up_and_never_reach_zero() {
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_millis(500)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(2)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(lease_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn a_key_splits_at_its_last_slash() {
        assert_eq!(split_key("Calculator/127.0.0.1:7000"), Some(("Calculator", "127.0.0.1:7000")));
        assert_eq!(split_key("svc/grpc/e1"), Some(("svc/grpc", "e1")));
        assert_eq!(split_key("Calculator/"), None);
        assert_eq!(split_key("/e1"), None);
        assert_eq!(split_key("no-slash"), None);
    }
}
