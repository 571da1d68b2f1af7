//! `etcd://host:2379,host:2379`: an etcd v3 cluster (cargo feature `etcd`).
//!
//! The layout is the one grpc-go's etcd resolver
//! (`go.etcd.io/etcd/client/v3/naming/resolver`, in 3.4
//! `clientv3/naming/resolver`) reads and its endpoints manager writes: the
//! key is `<service>/<addr>` and the value is
//! `{"Op":0,"Addr":"host:port","Metadata":null,"courier":{...}}`, put under
//! a lease. courier's own fields (version, protocols, weight, zone,
//! metadata, state, registration time) live in the sibling key `courier`,
//! never in `Metadata`: the resolver copies `Metadata` into grpc-go's
//! `resolver.Address.Metadata`, and balancers such as `round_robin` use the
//! address as a map key, so a JSON object there makes every grpc-go client
//! of the service panic with `hash of unhashable type
//! map[string]interface {}` (etcd-io/etcd#19700, grpc/grpc-go#8225).
//! Go's JSON decoder ignores the unknown `courier` key, so Go clients and
//! `etcdctl` see courier's instances as plain endpoints.
//!
//! Reading is lenient, so courier consumers route to entries written by
//! others: what grpc-go's endpoints manager writes (`"Metadata":null`),
//! hand-written `{"Addr":"host:port"}` values, `Metadata` as a string or
//! anything else (ignored), and courier's earlier layout with its fields
//! in `Metadata.courier` (read when the sibling key is absent). The value's
//! keys `Op`, `Addr` and `Metadata` match case-insensitively, as Go's
//! decoder matches them. Entries without courier's fields get version
//! `0.0.0`, weight 1 and no protocols; malformed courier fields are
//! ignored the same way (with a warning). A value whose `Op` is not 0 (the
//! old grpc naming `Delete`) or that is not a JSON object names no
//! instance.
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

use crate::discovery::{
    Instance, InstanceState, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot,
    WatchEvent, WatchStream, unix_ms,
};
use crate::service::BoxFuture;

/// Timeout of every etcd request.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The sibling key of `Op`/`Addr`/`Metadata` that holds [`CourierFields`].
const COURIER_KEY: &str = "courier";

/// A value as courier writes it: grpc-go's endpoint plus courier's fields.
#[derive(Debug, Serialize)]
struct EndpointOut<'a> {
    #[serde(rename = "Op")]
    op: u8,
    #[serde(rename = "Addr")]
    addr: &'a str,
    /// Always `null`, as grpc-go's own endpoints manager writes it: grpc-go
    /// hashes this value (see the module docs), so it must never be an
    /// object. Written rather than omitted so the value reads the same as
    /// one Go wrote.
    #[serde(rename = "Metadata")]
    metadata: Option<&'a str>,
    courier: &'a CourierFields,
}

/// courier's fields, under the value's `courier` key (formerly under
/// `Metadata.courier`).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// The value courier writes for `instance`.
fn encode(instance: &Instance, registered_unix_ms: u64) -> Result<Vec<u8>, serde_json::Error> {
    let fields = CourierFields {
        version: Some(instance.version.clone()),
        protocols: instance.protocols.clone(),
        weight: Some(instance.weight),
        zone: instance.zone.clone(),
        metadata: instance.metadata.clone(),
        state: instance.state,
        registered_unix_ms,
    };
    serde_json::to_vec(&EndpointOut { op: 0, addr: &instance.addr, metadata: None, courier: &fields })
}

/// Field `name` of a JSON object as Go's `encoding/json` finds it for a
/// struct field: the exact key, else one equal ignoring (ASCII) case.
fn go_field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    object
        .get(name)
        .or_else(|| object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value))
}

/// The instance the value under `key` describes, with its registration
/// time (0 when unknown), if it describes one.
fn decode(key: &str, value: &[u8]) -> Option<(Instance, u64)> {
    use serde_json::Value;

    let (service, id) = split_key(key)?;
    let Ok(Value::Object(entry)) = serde_json::from_slice::<Value>(value) else { return None };
    // Go's decoder leaves a null field at its zero value and rejects a
    // wrongly typed one (the resolver then skips the entry); do the same.
    let op = match go_field(&entry, "Op") {
        None | Some(Value::Null) => 0,
        Some(op) => op.as_u64()?,
    };
    if op != 0 {
        return None;
    }
    let addr = match go_field(&entry, "Addr") {
        None | Some(Value::Null) => "",
        Some(addr) => addr.as_str()?,
    };
    // The value's address wins; a key suffix is the address when the value
    // names none.
    let addr = if addr.is_empty() { id.to_owned() } else { addr.to_owned() };
    // courier's fields: the sibling key, else the layout courier wrote
    // before (`Metadata.courier`); a `Metadata` that is a string, null or
    // anything else is somebody else's and not ours to read.
    let fields = entry
        .get(COURIER_KEY)
        .or_else(|| go_field(&entry, "Metadata").and_then(Value::as_object).and_then(|m| m.get(COURIER_KEY)));
    let fields: CourierFields = match fields {
        None => CourierFields::default(),
        Some(fields) => CourierFields::deserialize(fields).unwrap_or_else(|err| {
            tracing::warn!(%key, %err, "etcd entry with malformed courier fields; routing to it with defaults");
            CourierFields::default()
        }),
    };
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
    decode(kv.key_str().ok()?, kv.value())
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
            let value =
                encode(&instance, unix_ms()).map_err(|err| RegistryError::Rejected(err.to_string()))?;
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

    fn instance(addr: &str) -> Instance {
        let mut instance = Instance::new("Calculator", addr);
        instance.version = "1.2.0".to_owned();
        instance.protocols = ["courier", "grpc", "jsonrpc", "http"].map(str::to_owned).to_vec();
        instance.weight = 3;
        instance.zone = Some("eu-1".to_owned());
        instance.metadata.insert("team".to_owned(), "blue".to_owned());
        instance.state = InstanceState::Draining;
        instance
    }

    fn json(value: &[u8]) -> serde_json::Value {
        serde_json::from_slice(value).expect("valid JSON")
    }

    /// What a consumer sees for an entry courier did not write: defaults.
    fn foreign(service: &str, id: &str, addr: &str) -> Instance {
        let mut instance = Instance::new(service, addr);
        instance.id = id.to_owned();
        instance.protocols = Vec::new();
        instance
    }

    #[test]
    fn courier_writes_null_metadata_and_its_fields_beside_it() {
        let value = json(&encode(&instance("127.0.0.1:7000"), 1234).expect("encode"));
        assert_eq!(
            value,
            serde_json::json!({
                "Op": 0,
                "Addr": "127.0.0.1:7000",
                // Present and null, exactly as grpc-go's endpoints manager
                // writes it: grpc-go hashes it.
                "Metadata": null,
                "courier": {
                    "version": "1.2.0",
                    "protocols": ["courier", "grpc", "jsonrpc", "http"],
                    "weight": 3,
                    "zone": "eu-1",
                    "metadata": {"team": "blue"},
                    "state": "draining",
                    "registered_unix_ms": 1234,
                },
            })
        );
    }

    #[test]
    fn what_courier_writes_reads_back_whole() {
        for protocols in [vec![], vec!["courier".to_owned()], vec!["grpc".to_owned(), "http".to_owned()]] {
            let mut written = instance("127.0.0.1:7000");
            written.protocols = protocols;
            let value = encode(&written, 99).expect("encode");
            assert_eq!(decode("Calculator/127.0.0.1:7000", &value), Some((written, 99)));
        }
    }

    #[test]
    fn the_earlier_layout_with_fields_in_metadata_is_still_read() {
        let value = br#"{"Op":0,"Addr":"127.0.0.1:7000","Metadata":{"courier":{
            "version":"1.2.0","protocols":["courier","grpc","jsonrpc","http"],"weight":3,"zone":"eu-1",
            "metadata":{"team":"blue"},"state":"draining","registered_unix_ms":1234}}}"#;
        assert_eq!(decode("Calculator/127.0.0.1:7000", value), Some((instance("127.0.0.1:7000"), 1234)));
    }

    #[test]
    fn the_sibling_key_wins_over_the_earlier_layout() {
        let value = br#"{"Addr":"127.0.0.1:7000","Metadata":{"courier":{"version":"0.1.0"}},
            "courier":{"version":"2.0.0"}}"#;
        let (read, _) = decode("Calculator/127.0.0.1:7000", value).expect("an instance");
        assert_eq!(read.version, "2.0.0");
    }

    #[test]
    fn entries_written_by_others_are_routed_to_with_defaults() {
        let addr = "127.0.0.1:7000";
        let key = "Calculator/127.0.0.1:7000";
        let values: &[&[u8]] = &[
            // grpc-go's endpoints manager.
            br#"{"Op":0,"Addr":"127.0.0.1:7000","Metadata":null}"#,
            // etcdctl by hand.
            br#"{"Addr":"127.0.0.1:7000"}"#,
            // Metadata as a string (what grpc-go can hash), or anything else.
            br#"{"Op":0,"Addr":"127.0.0.1:7000","Metadata":"zone=eu-1"}"#,
            br#"{"Addr":"127.0.0.1:7000","Metadata":42}"#,
            br#"{"Addr":"127.0.0.1:7000","Metadata":["a","b"]}"#,
            br#"{"Addr":"127.0.0.1:7000","Metadata":{"zone":"eu-1","courier":"not an object"}}"#,
            br#"{"Addr":"127.0.0.1:7000","Metadata":{"zone":"eu-1"}}"#,
            // No address in the value: the key's suffix is the address.
            br#"{"Op":0,"Metadata":null}"#,
            br#"{"Addr":"","Metadata":null}"#,
            br#"{"Op":null,"Addr":null}"#,
            // courier's fields malformed: ignored, the address still routed.
            br#"{"Addr":"127.0.0.1:7000","courier":{"weight":"heavy","version":"9.9.9"}}"#,
            br#"{"Addr":"127.0.0.1:7000","courier":"1.2.0"}"#,
        ];
        for value in values {
            let read = decode(key, value);
            let shown = String::from_utf8_lossy(value);
            assert_eq!(read, Some((foreign("Calculator", addr, addr), 0)), "{shown}");
        }
    }

    #[test]
    fn field_names_match_ignoring_case_as_go_matches_them() {
        let read = decode(
            "Calculator/e1",
            br#"{"op":0,"ADDR":"10.0.0.1:50051","metadata":{"courier":{"weight":4}}}"#,
        );
        let mut expected = foreign("Calculator", "e1", "10.0.0.1:50051");
        expected.weight = 4;
        assert_eq!(read, Some((expected, 0)));
        // The exact name wins over a case-insensitive one.
        let read = decode("Calculator/e1", br#"{"addr":"10.0.0.2:1","Addr":"10.0.0.1:50051"}"#);
        assert_eq!(read.map(|(instance, _)| instance.addr), Some("10.0.0.1:50051".to_owned()));
        assert_eq!(decode("Calculator/e1", br#"{"oP":1,"Addr":"10.0.0.1:50051"}"#), None);
    }

    #[test]
    fn an_entry_keyed_by_name_is_that_instance() {
        let read = decode("svc/grpc/e1", br#"{"Addr":"10.0.0.1:50051","Metadata":"m"}"#);
        assert_eq!(read, Some((foreign("svc/grpc", "e1", "10.0.0.1:50051"), 0)));
    }

    #[test]
    fn values_that_name_no_instance_are_skipped() {
        let key = "Calculator/127.0.0.1:7000";
        let values: &[&[u8]] = &[
            // grpc's old naming `Delete`.
            br#"{"Op":1,"Addr":"127.0.0.1:7000"}"#,
            // Types Go's decoder rejects (the resolver skips the entry).
            br#"{"Op":"add","Addr":"127.0.0.1:7000"}"#,
            br#"{"Op":-1,"Addr":"127.0.0.1:7000"}"#,
            br#"{"Addr":7000}"#,
            // Not a JSON object.
            b"127.0.0.1:7000",
            b"",
            b"null",
            br#"["127.0.0.1:7000"]"#,
            br#""127.0.0.1:7000""#,
            br#"{"Addr":"127.0.0.1:7000""#,
        ];
        for value in values {
            assert_eq!(decode(key, value), None, "{}", String::from_utf8_lossy(value));
        }
        assert_eq!(decode("no-slash", br#"{"Addr":"127.0.0.1:7000"}"#), None);
        assert_eq!(decode("Calculator/", br#"{"Addr":"127.0.0.1:7000"}"#), None);
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
