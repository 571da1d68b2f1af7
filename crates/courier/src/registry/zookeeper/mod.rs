//! `zookeeper://host:2181,host:2181[/chroot]`: Apache ZooKeeper in the
//! layout Apache Dubbo registers in (cargo feature `zookeeper`), so Dubbo's
//! consumers and tools see courier's providers and courier's consumers
//! call Dubbo's.
//!
//! # URL
//!
//! `zookeeper://h1:2181,h2:2181` names the ensemble (a host without a port
//! means 2181; `[::1]:2181` for IPv6); a path after the hosts is a chroot
//! (`zookeeper://h1:2181/apps/prod` keeps everything under `/apps/prod`,
//! as the connect string `h1:2181/apps/prod` of other clients does, and
//! is created when missing); Dubbo's `?backup=h2:2181,h3:2181` adds hosts.
//!
//! # Layout
//!
//! ```text
//! <chroot>/dubbo                                     persistent
//!   └ <service>                                      persistent (the name URL-encoded, as Dubbo does)
//!       └ providers                                  persistent
//!           └ <URL-encoded provider URL>             EPHEMERAL, one per instance, owned by its lease's session
//! ```
//!
//! The provider URL is the one Dubbo 3 writes,
//! `tri://10.0.0.7:50051/<service>?anyhost=false&application=courier&dubbo=2.0.2&interface=<service>&methods=..&pid=..&side=provider&timestamp=..&version=1.2.0&weight=100&courier.id=..&courier.protocols=courier,grpc&courier.state=serving[&courier.zone=..][&courier.meta.<key>=..]`
//! (parameters sorted; see [`url`] for the encoding). Its scheme is `tri`
//! (Dubbo 3's Triple, which is gRPC) when the instance offers gRPC, so
//! Dubbo's consumers can call it, and `courier` otherwise. `weight` is
//! courier's weight times 100 (Dubbo's default is 100, courier's 1);
//! `application` and `methods` come from the metadata keys of those names
//! when set. The node's data is the address, as Dubbo-python writes it.
//!
//! Every child of `providers` whose name decodes to a provider URL is an
//! instance: courier's own (with `courier.id`) exactly as registered;
//! others (Dubbo's, Dubbo-python's, a tool's) by address, with the version
//! from `version` (as semver: `1.0` is `1.0.0`, unparseable is `0.0.0`),
//! the weight from `weight` (divided by 100, rounded up), the protocols
//! from the scheme (`tri` and `grpc` are `grpc`, `courier` is courier's
//! own; any other, such as `dubbo`, Dubbo's binary protocol, which courier
//! does not speak, is listed by its name so consumers skip it), and the
//! parameters as metadata. Providers Dubbo would skip (`enabled=false`)
//! are skipped; names that are no provider URL are skipped with a warning.
//! An id with several nodes (a provider restarted before its old session
//! expired) is its newest node.
//!
//! # Sessions are leases
//!
//! Each [`register`](RegistryBackend::register) opens a ZooKeeper session
//! of its own, with the lease's TTL as its timeout (the server bounds it
//! by its `minSessionTimeout` and `maxSessionTimeout`, by default 2 and
//! 20 ticks; the lease's TTL is what was negotiated), and creates the
//! instance's node as an ephemeral node of that session. The lease id is
//! the session id (the node's `ephemeralOwner`). The client keeps the
//! session alive with pings; a provider that dies stops them, and the
//! server deletes its node when the session times out. A keep-alive checks
//! that the session is alive and still owns the node; once the session has
//! expired (a partition longer than the timeout) or the node is gone, it
//! reports [`RegistryError::LeaseNotFound`] and the server registers
//! again, in a new session. A lease nobody keeps alive for its TTL is
//! ended here, as ZooKeeper would end the session of a dead process.
//! Deregistering deletes the node at once, then closes the session.
//! Registering an id again replaces its node in one transaction (an
//! `Update` for watchers), as etcd's key does.
//!
//! # Watches and revisions
//!
//! One task per service watched or listed keeps a one-shot children watch
//! on `providers`, armed again by every read; each event (or reconnection,
//! or a session re-created after expiry, with jittered backoff) re-reads
//! the children and diffs them against the last read. Revisions are
//! ZooKeeper's zxids (a creation's `czxid`, the parent's `pzxid`), so they
//! grow, and mean the same in every process and across reconnections.
//! ZooKeeper keeps no history; the task keeps a bounded log, and a watch
//! resumed from a revision it can prove gets exactly the changes since;
//! from any other (before the log, across a change it could not order, or
//! in a new process) a complete `Reset`. See [`history`] for what is
//! provable.

mod history;
pub(crate) mod url;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use zookeeper_client as zk;

use self::history::{Catchup, Child, History, Parent, Read};
use self::url::Target;
use crate::discovery::{
    Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchEvent,
    WatchStream, unix_ms,
};
use crate::resilience::Backoff;
use crate::service::BoxFuture;

/// Timeout of every ZooKeeper request.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of establishing a session (every host is tried once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The session timeout asked for the session consumers read through (it
/// holds no ephemeral nodes, so only reconnection time depends on it).
const READER_SESSION: Duration = Duration::from_secs(10);

/// How many changes of one service are kept to resume watches from.
const LOG_LIMIT: usize = 1024;

/// The longest node name (the encoded provider URL) courier writes: every
/// consumer reads all of a service's in one answer, whose size ZooKeeper
/// limits (`jute.maxbuffer`, 1 MiB by default).
const MAX_NODE_NAME: usize = 32 * 1024;

/// How many reads of new children go in one multi-read.
const READ_BATCH: usize = 256;

fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("zookeeper: {err}"))
}

/// A ZooKeeper error as a registry error.
fn registry_error(err: zk::Error) -> RegistryError {
    match err {
        zk::Error::NoAuth | zk::Error::InvalidAcl | zk::Error::BadArguments(_) | zk::Error::QuotaExceeded => {
            RegistryError::Rejected(format!("zookeeper: {err}"))
        }
        other => unavailable(other),
    }
}

/// `call`, failing if ZooKeeper does not answer within `limit` (requests
/// wait while the client reconnects).
async fn timed<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, zk::Error>>,
) -> Result<T, zk::Error> {
    tokio::time::timeout(limit, call).await.unwrap_or(Err(zk::Error::Timeout))
}

/// A session id as a lease id (its bits: ids are positive in practice).
fn lease_id(session: zk::SessionId) -> u64 {
    session.0.cast_unsigned()
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// The `zookeeper://` backend.
pub(crate) struct ZooKeeperRegistry {
    target: Target,
    /// The session lists and watches read through, connected on first use
    /// (so connecting works while ZooKeeper is down) and again after it
    /// expires.
    reader: tokio::sync::Mutex<Option<zk::Client>>,
    /// Leases granted here, by id: each its own session.
    leases: std::sync::Mutex<HashMap<u64, Arc<LeaseSession>>>,
    /// One watching task per service listed or watched.
    services: std::sync::Mutex<HashMap<String, Arc<Tracker>>>,
}

/// One lease: a session holding one ephemeral node.
struct LeaseSession {
    client: zk::Client,
    /// The node's full path.
    path: String,
    ttl: Duration,
    /// The last keep-alive call: the owner is alive.
    renewed: std::sync::Mutex<Instant>,
}

impl ZooKeeperRegistry {
    /// `rest` is what follows `zookeeper://` (see the module docs).
    pub(crate) fn new(rest: &str) -> Result<ZooKeeperRegistry, String> {
        Ok(ZooKeeperRegistry {
            target: Target::parse(rest)?,
            reader: tokio::sync::Mutex::new(None),
            leases: std::sync::Mutex::new(HashMap::new()),
            services: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A new session of `timeout` (the server may bound it).
    async fn connect(&self, timeout: Duration) -> Result<zk::Client, RegistryError> {
        let connector = zk::Client::connector().with_session_timeout(timeout).with_fail_eagerly();
        timed(CONNECT_TIMEOUT, connector.connect(&self.target.hosts)).await.map_err(registry_error)
    }

    /// The reading session, connecting (again) if there is none alive.
    async fn reader(&self) -> Result<zk::Client, RegistryError> {
        let mut reader = self.reader.lock().await;
        if let Some(client) = reader.as_ref().filter(|client| !client.state().is_terminated()) {
            return Ok(client.clone());
        }
        if reader.take().is_some() {
            tracing::warn!(hosts = %self.target.hosts, "zookeeper session of the watches ended; starting a new one");
        }
        let client = self.connect(READER_SESSION).await?;
        *reader = Some(client.clone());
        Ok(client)
    }

    fn lease(&self, id: u64) -> Option<Arc<LeaseSession>> {
        self.leases.lock().ok()?.get(&id).cloned()
    }

    /// Forget lease `id` (its session closes when the last use of it ends).
    fn end_lease(&self, id: u64) -> Option<Arc<LeaseSession>> {
        self.leases.lock().ok()?.remove(&id)
    }

    /// The watching task of `service`, started if it is not running.
    fn tracker(self: &Arc<Self>, service: &str) -> Arc<Tracker> {
        let mut services = match self.services.lock() {
            Ok(services) => services,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(tracker) = services.get(service) {
            return tracker.clone();
        }
        let (refresh, requests) = mpsc::unbounded_channel();
        let (changed, subscribed) = watch::channel(0);
        let tracker = Arc::new(Tracker {
            service: service.to_owned(),
            path: self.target.providers(service),
            history: std::sync::Mutex::new(History::new(LOG_LIMIT)),
            changed: subscribed,
            refresh,
        });
        services.insert(service.to_owned(), tracker.clone());
        tokio::spawn(track(Arc::downgrade(self), tracker.clone(), changed, requests));
        tracker
    }

    async fn register(self: &Arc<Self>, instance: Instance, ttl: Duration) -> Result<Lease, RegistryError> {
        instance.validate().map_err(RegistryError::Rejected)?;
        let name = url::node_name(&instance, unix_ms(), std::process::id());
        if name.len() > MAX_NODE_NAME {
            return Err(RegistryError::Rejected(format!(
                "instance `{}` of `{}` makes a provider URL of {} bytes, over the limit of {MAX_NODE_NAME}: \
                 keep large data out of the registry",
                instance.id,
                instance.service,
                name.len()
            )));
        }
        let client = self.connect(ttl).await?;
        let providers = self.target.providers(&instance.service);
        timed(CALL_TIMEOUT, client.mkdir(&providers, &persistent())).await.map_err(registry_error)?;
        let path = format!("{providers}/{name}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The id's current nodes (a restart's, or an earlier lease's)
            // are replaced in the same transaction: one change for watchers.
            let children =
                timed(CALL_TIMEOUT, client.list_children(&providers)).await.map_err(registry_error)?;
            let mut multi = client.new_multi_writer();
            for child in &children {
                let same_id = url::decode_node(&instance.service, child)
                    .ok()
                    .flatten()
                    .is_some_and(|provider| provider.instance.id == instance.id);
                if same_id {
                    multi.add_delete(&format!("{providers}/{child}"), None).map_err(registry_error)?;
                }
            }
            multi.add_create(&path, instance.addr.as_bytes(), &ephemeral()).map_err(registry_error)?;
            match timed(CALL_TIMEOUT, async { multi.commit().await.map_err(zk::Error::from) }).await {
                Ok(_) => break,
                // Raced with another writer of this id: look again.
                Err(zk::Error::NoNode | zk::Error::NodeExists) if attempts < 5 => continue,
                Err(err) => return Err(registry_error(err)),
            }
        }
        let id = lease_id(client.session_id());
        let ttl = client.session_timeout();
        let session =
            Arc::new(LeaseSession { client, path, ttl, renewed: std::sync::Mutex::new(Instant::now()) });
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(id, session);
        }
        tokio::spawn(expire_when_abandoned(Arc::downgrade(self), id));
        Ok(Lease { id, ttl, service: instance.service, instance_id: instance.id })
    }

    async fn keep_alive(&self, lease: &Lease) -> Result<(), RegistryError> {
        let Some(session) = self.lease(lease.id) else { return Err(RegistryError::LeaseNotFound(lease.id)) };
        if let Ok(mut renewed) = session.renewed.lock() {
            *renewed = Instant::now();
        }
        match session.client.state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {}
            // The session may well be alive: ZooKeeper keeps it for its
            // timeout, and the client reconnects within it if it can.
            zk::SessionState::Disconnected => {
                return Err(unavailable("disconnected; reconnecting within the session timeout"));
            }
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                self.end_lease(lease.id);
                return Err(RegistryError::LeaseNotFound(lease.id));
            }
        }
        match timed(CALL_TIMEOUT, session.client.check_stat(&session.path)).await {
            Ok(Some(stat)) if stat.ephemeral_owner.cast_unsigned() == lease.id => Ok(()),
            // Gone (replaced by another registration of the id, or deleted
            // by hand), or expired meanwhile: register again.
            Ok(_) | Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => {
                self.end_lease(lease.id);
                Err(RegistryError::LeaseNotFound(lease.id))
            }
            Err(err) => Err(registry_error(err)),
        }
    }

    async fn deregister(&self, lease: &Lease) -> Result<(), RegistryError> {
        let Some(session) = self.end_lease(lease.id) else {
            return Err(RegistryError::LeaseNotFound(lease.id));
        };
        // Deleted now, not when the session's closing is processed: a
        // listing right after must not show it. Only if it is still this
        // session's (another registration of the id may have replaced it).
        let deleted = async {
            match session.client.check_stat(&session.path).await? {
                Some(stat) if stat.ephemeral_owner.cast_unsigned() == lease.id => {
                    match session.client.delete(&session.path, Some(stat.version)).await {
                        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                        Err(err) => Err(err),
                    }
                }
                _ => Ok(()),
            }
        };
        // Dropping `session` afterwards closes the session either way.
        timed(CALL_TIMEOUT, deleted).await.map_err(registry_error)
    }

    async fn registrations(&self, service: Option<&str>) -> Result<Vec<Registration>, RegistryError> {
        let client = self.reader().await?;
        let services = match service {
            Some(service) => vec![service.to_owned()],
            None => match timed(CALL_TIMEOUT, client.list_children(&self.target.root)).await {
                Ok(names) => names.iter().filter_map(|name| url::decode_component(name)).collect(),
                Err(zk::Error::NoNode) => Vec::new(),
                Err(err) => return Err(registry_error(err)),
            },
        };
        let mut registrations = Vec::new();
        for service in services {
            let providers = self.target.providers(&service);
            let children = match timed(CALL_TIMEOUT, client.list_children(&providers)).await {
                Ok(children) => children,
                Err(zk::Error::NoNode) => continue,
                Err(err) => return Err(registry_error(err)),
            };
            let stats = read_stats(&client, &providers, &children).await.map_err(registry_error)?;
            for (name, stat) in children.iter().zip(stats) {
                let Some(stat) = stat else { continue };
                if let Some(provider) = decode_logged(&service, name) {
                    registrations.push(Registration {
                        instance: provider.instance,
                        lease: stat.ephemeral_owner.cast_unsigned(),
                        registered_unix_ms: provider.registered_unix_ms,
                    });
                }
            }
        }
        registrations.sort_by(|a, b| {
            (&a.instance.service, &a.instance.id).cmp(&(&b.instance.service, &b.instance.id))
        });
        Ok(registrations)
    }
}

/// End lease `id` once nobody has kept it alive for its TTL: closing the
/// session deletes its node, as ZooKeeper does for a process that died.
async fn expire_when_abandoned(registry: Weak<ZooKeeperRegistry>, id: u64) {
    loop {
        let Some(deadline) = registry
            .upgrade()
            .and_then(|registry| registry.lease(id))
            .and_then(|session| session.renewed.lock().ok().map(|renewed| *renewed + session.ttl))
        else {
            return; // deregistered, lost, or the registry is gone
        };
        if Instant::now() >= deadline {
            if let Some(registry) = registry.upgrade()
                && let Some(session) = registry.end_lease(id)
            {
                tracing::debug!(lease = id, path = %session.path, "lease not kept alive within its TTL; closing its session");
            }
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The stat of each of `children` of `parent` (`None` for one deleted
/// meanwhile), in multi-reads of [`READ_BATCH`].
async fn read_stats(
    client: &zk::Client,
    parent: &str,
    children: &[String],
) -> Result<Vec<Option<zk::Stat>>, zk::Error> {
    let mut stats = Vec::with_capacity(children.len());
    for batch in children.chunks(READ_BATCH) {
        let mut reader = client.new_multi_reader();
        for child in batch {
            reader.add_get_data(&format!("{parent}/{child}"))?;
        }
        for result in timed(CALL_TIMEOUT, reader.commit()).await? {
            stats.push(match result {
                zk::MultiReadResult::Data { stat, .. } => Some(stat),
                zk::MultiReadResult::Error { err: zk::Error::NoNode } => None,
                zk::MultiReadResult::Error { err } => return Err(err),
                // Only data was asked for.
                _ => None,
            });
        }
    }
    Ok(stats)
}

/// The provider a child names, warning about garbage (once per read of a
/// new child, so a bad node is reported when it appears, not at every
/// change).
fn decode_logged(service: &str, name: &str) -> Option<url::Provider> {
    match url::decode_node(service, name) {
        Ok(provider) => provider,
        Err(reason) => {
            tracing::warn!(%service, node = %name, %reason, "skipping a providers child that is no provider URL");
            None
        }
    }
}

/// One service's watching task and what it learnt.
struct Tracker {
    service: String,
    /// `/dubbo/<service>/providers`.
    path: String,
    history: std::sync::Mutex<History>,
    /// Bumped after every read that changed something; closed when the
    /// task ends (its sender is the task's).
    changed: watch::Receiver<u64>,
    /// Asks the task for a fresh read; answered once it is committed.
    refresh: mpsc::UnboundedSender<oneshot::Sender<Result<(), RegistryError>>>,
}

impl Tracker {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        match self.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Read the service now (consumers want what is there, not what the
    /// last event said).
    async fn refresh(&self) -> Result<(), RegistryError> {
        let (answer, answered) = oneshot::channel();
        self.refresh.send(answer).map_err(|_| unavailable("the watching task ended"))?;
        match tokio::time::timeout(CONNECT_TIMEOUT + CALL_TIMEOUT, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable("the watching task ended")),
            Err(_) => Err(unavailable("no answer from zookeeper in time")),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let history = self.history();
        Snapshot { instances: history.instances(), revision: history.revision() }
    }
}

/// What woke the watching task.
enum Wake {
    /// The watch fired (or the session changed): read again.
    Changed(zk::WatchedEvent),
    /// Someone wants a fresh read.
    Refresh(oneshot::Sender<Result<(), RegistryError>>),
}

/// Keep `tracker` up to date: read, arm the watch, wait for it (or for a
/// refresh request), read again. Ends with the registry.
async fn track(
    registry: Weak<ZooKeeperRegistry>,
    tracker: Arc<Tracker>,
    changed: watch::Sender<u64>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), RegistryError>>>,
) {
    let backoff =
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5), ..Backoff::default() };
    let mut failures = 0u32;
    let mut waiting: Vec<oneshot::Sender<Result<(), RegistryError>>> = Vec::new();
    // The armed watch's next event.
    let mut watcher: Option<BoxFuture<'static, zk::WatchedEvent>> = None;
    loop {
        if watcher.is_none() || !waiting.is_empty() {
            let Some(this) = registry.upgrade() else { return };
            let read = read_providers(&this, &tracker).await;
            drop(this);
            match read {
                Ok((read, armed)) => {
                    failures = 0;
                    let changes = tracker.history().commit(read);
                    if !changes.is_empty() {
                        tracing::debug!(service = %tracker.service, changes = changes.len(), "providers changed");
                        changed.send_modify(|version| *version += 1);
                    }
                    for answer in waiting.drain(..) {
                        let _ = answer.send(Ok(()));
                    }
                    watcher = Some(Box::pin(armed.changed()));
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    for answer in waiting.drain(..) {
                        let _ = answer.send(Err(err.clone()));
                    }
                    if failures == 1 {
                        tracing::warn!(service = %tracker.service, %err, "could not read the providers; retrying");
                    }
                    watcher = None;
                    // Jittered, so the watchers of a restarted ensemble do
                    // not all come back at once.
                    let pause = tokio::time::sleep(backoff.delay(failures, fastrand::f64()));
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            request = requests.recv() => match request {
                                Some(answer) => waiting.push(answer),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            }
        }
        let fired = async {
            match watcher.as_mut() {
                Some(fired) => fired.await,
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            event = fired => Wake::Changed(event),
            request = requests.recv() => match request {
                Some(answer) => Wake::Refresh(answer),
                None => return,
            },
        };
        match wake {
            Wake::Changed(event) => {
                if event.event_type == zk::EventType::Session {
                    tracing::info!(service = %tracker.service, state = %event.session_state, "watch session changed; reading the providers again");
                }
                watcher = None;
            }
            Wake::Refresh(answer) => waiting.push(answer),
        }
        // A refresh keeps the armed watch (the read arms another); either
        // way the next loop reads.
    }
}

/// Read `tracker`'s providers node and arm a watch on it: the children
/// (with each new one's `czxid`) and the parent's stat, or its absence.
async fn read_providers(
    registry: &ZooKeeperRegistry,
    tracker: &Tracker,
) -> Result<(Read, zk::OneshotWatcher), RegistryError> {
    let client = registry.reader().await?;
    // Through the leader: a follower that was behind must not make the
    // read older than what a provider just registered.
    timed(CALL_TIMEOUT, client.sync("/")).await.map_err(registry_error)?;
    for _ in 0..5 {
        let (children, stat, watcher) =
            match timed(CALL_TIMEOUT, client.get_and_watch_children(&tracker.path)).await {
                Ok(found) => found,
                Err(zk::Error::NoNode) => {
                    match timed(CALL_TIMEOUT, client.check_and_watch_stat(&tracker.path)).await {
                        // Not registered yet: watch for it to appear.
                        Ok((None, watcher)) => return Ok((Read::default(), watcher)),
                        Ok((Some(_), _)) => continue,
                        Err(err) => return Err(registry_error(err)),
                    }
                }
                Err(err) => return Err(registry_error(err)),
            };
        let known: BTreeMap<String, Child> = tracker.history().children().cloned().unwrap_or_default();
        let new: Vec<String> = children.iter().filter(|name| !known.contains_key(*name)).cloned().collect();
        let stats = read_stats(&client, &tracker.path, &new).await.map_err(registry_error)?;
        if stats.iter().any(Option::is_none) {
            // A new child is gone already: the watch fired; read again.
            continue;
        }
        let mut read_children = BTreeMap::new();
        for name in children {
            let child = match known.get(&name) {
                Some(child) => child.clone(),
                None => {
                    let czxid = new
                        .iter()
                        .position(|n| *n == name)
                        .and_then(|i| stats.get(i).copied().flatten())
                        .map_or(0, |stat| stat.czxid);
                    Child { czxid, instance: decode_logged(&tracker.service, &name).map(|p| p.instance) }
                }
            };
            read_children.insert(name, child);
        }
        let parent = Parent { czxid: stat.czxid, pzxid: stat.pzxid, cversion: stat.cversion };
        return Ok((Read { parent: Some(parent), children: read_children }, watcher));
    }
    Err(unavailable(format!("the providers of `{}` keep changing; try again", tracker.service)))
}

/// Feed one watch from `tracker`, starting after `cursor` (or with a
/// `Reset`).
async fn feed(
    tracker: Arc<Tracker>,
    mut cursor: Option<history::Cursor>,
    tx: mpsc::Sender<Result<WatchEvent, RegistryError>>,
) {
    let mut changed = tracker.changed.clone();
    loop {
        changed.mark_unchanged();
        let (catchup, now) = {
            let history = tracker.history();
            let catchup = match cursor {
                Some(cursor) => history.since(cursor),
                None => Catchup::Reset { instances: history.instances(), revision: history.revision() },
            };
            (catchup, history.cursor())
        };
        cursor = Some(now);
        let events = match catchup {
            Catchup::Events(events) => events,
            Catchup::Reset { instances, revision } => vec![WatchEvent::Reset { instances, revision }],
        };
        for event in events {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = changed.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

impl RegistryBackend for Arc<ZooKeeperRegistry> {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(ZooKeeperRegistry::register(self, instance, ttl))
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(ZooKeeperRegistry::keep_alive(self, lease))
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(ZooKeeperRegistry::deregister(self, lease))
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move {
            let tracker = self.tracker(service);
            tracker.refresh().await?;
            Ok(tracker.snapshot())
        })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let tracker = self.tracker(service);
            // Up to date first: resuming is judged against what is there now.
            tracker.refresh().await?;
            let cursor = after.and_then(|revision| tracker.history().resume_at(revision));
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(feed(tracker, cursor, tx));
            Ok(WatchStream::new(rx))
        })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(ZooKeeperRegistry::registrations(self, service))
    }
}
