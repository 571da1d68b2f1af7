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
//! # Sessions and leases
//!
//! ZooKeeper has no leases, only sessions: a client's session stays alive
//! while its pings arrive, and its ephemeral nodes go with it. A session
//! per lease would make that the lease, but each is a TCP connection with
//! its own pings, and a process with many instances (a gateway's hundreds,
//! a benchmark's 100,000) would run ZooKeeper and itself out of
//! connections and file descriptors. So, as Apache Dubbo does (one session
//! per process for all its providers), leases share sessions: each
//! registry handle keeps at most one session per distinct TTL, started
//! when a registration first needs it, with the TTL as its timeout (the
//! server bounds it by its `minSessionTimeout` and `maxSessionTimeout`, by
//! default 2 and 20 ticks; the lease's TTL is what was negotiated), and
//! closed once it holds no lease any more. Registrations racing for a
//! TTL's first session wait for the one being started.
//!
//! A lease is then that session, the instance's ephemeral node in it, and
//! a lease id of our own: a counter of the process (unique across handles,
//! so a lease is never taken for another's; [`Registration::lease`] is
//! that id for the nodes a handle holds, and the owning session's id, all
//! another process can know, for the others). The session's pings prove
//! only that the process is alive, not that anyone still keeps this lease,
//! so each lease has a deadline of its own, its last keep-alive plus its
//! TTL, in the handle's [lease book](leases), ordered by deadline; one task
//! per handle sleeps until the earliest and deletes the node of every
//! lease due (what ZooKeeper would do for a dead process), so a lease not
//! kept alive goes within its TTL while the others in its session stay.
//! A process that dies stops the pings of all its sessions, and ZooKeeper
//! deletes all its nodes when the session times out: within the TTL.
//!
//! A keep-alive renews its lease's deadline, then checks that the session
//! is alive and still owns the node. Once the session has expired (a
//! partition longer than its timeout: ZooKeeper deleted every node in it)
//! every lease in it is lost, each reported as
//! [`RegistryError::LeaseNotFound`] on its next keep-alive, and new
//! registrations get a new session; a node gone (replaced by another
//! registration of the id, deleted by hand) or owned by another session is
//! reported the same way, and the server registers again. Deregistering
//! deletes the node at once. Registering an id again replaces its node in
//! one transaction (an `Update` for watchers), as etcd's key does, and
//! ends the lease of ours that held the old node. A registration that
//! fails after its node may have been written (ZooKeeper did not answer)
//! deletes it: the shared session would otherwise keep it for good.
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
mod leases;
pub(crate) mod url;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use zookeeper_client as zk;

use self::history::{Catchup, Child, History, Parent, Read};
use self::leases::{Book, Entry, Held};
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
    /// The leases granted here and the sessions holding them.
    book: std::sync::Mutex<Book<Arc<Session>>>,
    /// Lease sessions being started, by TTL: a registration needing one
    /// waits for the attempt under way (and shares its failure) instead of
    /// starting another. Locked before `book` when both are.
    connecting: std::sync::Mutex<HashMap<Duration, Attempt>>,
    /// Wakes the expiring task: a lease became the first due, or the
    /// registry is gone.
    wake: Arc<Notify>,
    /// Whether the expiring task was started (on the first registration:
    /// it needs the `Arc` and a runtime).
    expiring: AtomicBool,
    /// One watching task per service listed or watched.
    services: std::sync::Mutex<HashMap<String, Arc<Tracker>>>,
}

/// An attempt to start a session: `None` while under way, then how it
/// went.
type Attempt = watch::Receiver<Option<Result<(), RegistryError>>>;

/// A session holding leases: one per TTL in use per registry handle.
struct Session {
    client: zk::Client,
    /// The TTL it was asked for: its slot in the book.
    asked: Duration,
}

impl Session {
    fn id(&self) -> zk::SessionId {
        self.client.session_id()
    }

    fn alive(&self) -> bool {
        !self.client.state().is_terminated()
    }

    /// Whether a node with `stat` is one of this session's.
    fn owns(&self, stat: &zk::Stat) -> bool {
        stat.ephemeral_owner == self.id().0
    }
}

/// Lease ids, for every registry handle of the process: unique across
/// them, so a lease handed to the wrong handle is not found there rather
/// than renewing another.
static LEASE_IDS: AtomicU64 = AtomicU64::new(1);

/// How many due leases have their nodes deleted at once (concurrent
/// requests, pipelined in their sessions).
const EXPIRE_BATCH: usize = 256;

/// How soon deleting the node of a lease that ran out is tried again when
/// ZooKeeper could not be asked or did not answer.
const RETRY_DELETE: Duration = Duration::from_secs(1);

/// How often the expiring task repeats its warning while it cannot delete.
const WARN_EVERY: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Delete `path` if `session` owns it (another registration of the id may
/// have replaced it since).
async fn delete_owned(session: &Session, path: &str) -> Result<(), zk::Error> {
    let deleted = async {
        match session.client.check_stat(path).await? {
            Some(stat) if session.owns(&stat) => {
                match session.client.delete(path, Some(stat.version)).await {
                    // Gone, or changed meanwhile: ours never change, so it is
                    // not the node just checked.
                    Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(()),
                    Err(err) => Err(err),
                }
            }
            _ => Ok(()),
        }
    };
    timed(CALL_TIMEOUT, deleted).await
}

/// A registration's use of a session until it is a lease. Dropped before
/// (the registration failed, or its caller gave up), it releases the
/// session and deletes the node if it may have been written: in a shared
/// session nothing else would.
struct Reservation {
    registry: Arc<ZooKeeperRegistry>,
    serial: u64,
    session: Arc<Session>,
    /// The node, while a transaction creating it may have been applied.
    written: Option<String>,
    granted: bool,
}

impl Reservation {
    fn held(&self) -> Held<Arc<Session>> {
        Held { key: self.session.asked, serial: self.serial, session: self.session.clone() }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut book = self.registry.book();
        if let Some(session) = book.release(self.session.asked, self.serial) {
            tracing::debug!(session = %session.id(), "closing a zookeeper session that holds no lease");
        }
        let Some(path) = self.written.take() else { return };
        // Deleted by the expiring task (checking it is this session's), as
        // a lease that ran out would be: with retries, and no runtime
        // needed here.
        tracing::debug!(%path, "a registration failed after its node may have been written; deleting it");
        let id = LEASE_IDS.fetch_add(1, Ordering::Relaxed);
        let earliest = book.orphan(id, self.held(), path, Instant::now());
        drop(book);
        if earliest {
            self.registry.wake.notify_one();
        }
    }
}

impl ZooKeeperRegistry {
    /// `rest` is what follows `zookeeper://` (see the module docs).
    pub(crate) fn new(rest: &str) -> Result<ZooKeeperRegistry, String> {
        Ok(ZooKeeperRegistry {
            target: Target::parse(rest)?,
            reader: tokio::sync::Mutex::new(None),
            book: std::sync::Mutex::new(Book::new()),
            connecting: std::sync::Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            expiring: AtomicBool::new(false),
            services: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book<Arc<Session>>> {
        lock(&self.book)
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

    /// The session of `ttl`, if one is alive, reserved for a registration.
    fn try_reserve(self: &Arc<Self>, ttl: Duration) -> Option<Reservation> {
        let reserved = self.book().reserve(ttl, |session| session.alive());
        match reserved {
            Ok(Some((serial, session))) => {
                Some(Reservation { registry: self.clone(), serial, session, written: None, granted: false })
            }
            Ok(None) => None,
            Err((session, users)) => {
                session_ended(&session, users);
                None
            }
        }
    }

    /// The session of `ttl` for a registration: the one there is, or a new
    /// one (one at a time per TTL: registrations racing for it share it).
    async fn reserve(self: &Arc<Self>, ttl: Duration) -> Result<Reservation, RegistryError> {
        loop {
            let attempt = {
                let mut connecting = lock(&self.connecting);
                // Looked up under `connecting`: a new session is in the
                // book before its attempt leaves `connecting`.
                if let Some(reservation) = self.try_reserve(ttl) {
                    return Ok(reservation);
                }
                match connecting.get(&ttl) {
                    // Under way (its starter has not given up).
                    Some(attempt) if attempt.has_changed().is_ok() => Err(attempt.clone()),
                    _ => {
                        let (done, attempt) = watch::channel(None);
                        connecting.insert(ttl, attempt);
                        Ok(done)
                    }
                }
            };
            let done = match attempt {
                Ok(done) => done,
                Err(mut attempt) => {
                    if let Ok(outcome) = attempt.wait_for(Option::is_some).await
                        && let Some(Err(err)) = &*outcome
                    {
                        return Err(err.clone());
                    }
                    // Started (or its starter gave up): look again.
                    continue;
                }
            };
            // If this registration is dropped here, `done` goes with it and
            // those waiting look again.
            let connected = self.connect(ttl).await;
            let reserved = connected.map(|client| {
                let session = Arc::new(Session { client, asked: ttl });
                let (serial, sessions) = {
                    let mut book = self.book();
                    (book.install(ttl, session.clone()), book.sessions())
                };
                tracing::info!(
                    session = %session.id(),
                    sessions,
                    ?ttl,
                    timeout = ?session.client.session_timeout(),
                    hosts = %self.target.hosts,
                    "started a zookeeper session for this registry's leases of this TTL"
                );
                Reservation { registry: self.clone(), serial, session, written: None, granted: false }
            });
            lock(&self.connecting).remove(&ttl);
            done.send_replace(Some(reserved.as_ref().map(|_| ()).map_err(Clone::clone)));
            return reserved;
        }
    }

    /// Start the task ending leases nobody keeps alive, if it is not
    /// running.
    fn start_expiring(self: &Arc<Self>) {
        if !self.expiring.swap(true, Ordering::AcqRel) {
            tokio::spawn(expire_abandoned(Arc::downgrade(self), self.wake.clone()));
        }
    }

    /// Lease `id` is lost (its session ended, its node is gone or not
    /// ours): forget it.
    fn lose(&self, id: u64, why: &str) {
        let removed = self.book().remove(id);
        if let Some((entry, closed)) = removed {
            tracing::debug!(lease = id, session = %entry.session.id(), path = %entry.path, why, "lease lost");
            if closed.is_some() {
                tracing::debug!(session = %entry.session.id(), "closing a zookeeper session that holds no lease");
            }
        }
    }

    /// `session` (serial `serial`) ended: new registrations get a new one.
    fn forget_session(&self, session: &Session, serial: u64) {
        let users = self.book().forget(session.asked, serial);
        if let Some(users) = users {
            session_ended(session, users);
        }
    }

    /// The watching task of `service`, started if it is not running.
    fn tracker(self: &Arc<Self>, service: &str) -> Arc<Tracker> {
        let mut services = lock(&self.services);
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
        self.start_expiring();
        let mut reservation = self.reserve(ttl).await?;
        let session = reservation.session.clone();
        let client = &session.client;
        let providers = self.target.providers(&instance.service);
        timed(CALL_TIMEOUT, client.mkdir(&providers, &persistent())).await.map_err(registry_error)?;
        let path = format!("{providers}/{name}");
        let mut attempts = 0;
        let replaced = loop {
            attempts += 1;
            // The id's current nodes (a restart's, or an earlier lease's)
            // are replaced in the same transaction: one change for watchers.
            let children =
                timed(CALL_TIMEOUT, client.list_children(&providers)).await.map_err(registry_error)?;
            let mut multi = client.new_multi_writer();
            let mut replaced = Vec::new();
            for child in &children {
                let same_id = url::decode_node(&instance.service, child)
                    .ok()
                    .flatten()
                    .is_some_and(|provider| provider.instance.id == instance.id);
                if same_id {
                    let old = format!("{providers}/{child}");
                    multi.add_delete(&old, None).map_err(registry_error)?;
                    replaced.push(old);
                }
            }
            multi.add_create(&path, instance.addr.as_bytes(), &ephemeral()).map_err(registry_error)?;
            reservation.written = Some(path.clone());
            match timed(CALL_TIMEOUT, async { multi.commit().await.map_err(zk::Error::from) }).await {
                Ok(_) => break replaced,
                // Raced with another writer of this id: look again.
                Err(zk::Error::NoNode | zk::Error::NodeExists) if attempts < 5 => {
                    reservation.written = None;
                    continue;
                }
                Err(err) => {
                    // Refused for certain: nothing was written. Otherwise
                    // (no answer) the node may be there; dropping the
                    // reservation deletes it.
                    if !matches!(err, zk::Error::Timeout | zk::Error::ConnectionLoss) {
                        reservation.written = None;
                    }
                    return Err(registry_error(err));
                }
            }
        };
        let id = LEASE_IDS.fetch_add(1, Ordering::Relaxed);
        let lease_ttl = client.session_timeout();
        let (granted, ended) = {
            let mut book = self.book();
            // Leases of ours whose nodes the transaction deleted are over.
            let mut ended: Vec<_> =
                replaced.iter().filter(|old| **old != path).filter_map(|old| book.take_holder(old)).collect();
            let granted = book.grant(id, reservation.held(), path.clone(), lease_ttl, Instant::now());
            reservation.granted = true;
            ended.extend(granted.replaced);
            (granted.earliest, ended)
        };
        if granted {
            self.wake.notify_one();
        }
        for (old, closed) in ended {
            tracing::debug!(lease = old.id, path = %old.path, by = id, "lease ended: its id was registered again");
            if closed.is_some() {
                tracing::debug!(session = %old.session.id(), "closing a zookeeper session that holds no lease");
            }
        }
        tracing::debug!(lease = id, session = %session.id(), %path, ttl = ?lease_ttl, "registered");
        Ok(Lease { id, ttl: lease_ttl, service: instance.service, instance_id: instance.id })
    }

    async fn keep_alive(&self, lease: &Lease) -> Result<(), RegistryError> {
        // Renewed first: the call itself shows the owner is alive, even if
        // ZooKeeper cannot be asked right now.
        let Some(entry) = self.book().renew(lease.id, Instant::now()) else {
            return Err(RegistryError::LeaseNotFound(lease.id));
        };
        match entry.session.client.state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {}
            // The session may well be alive: ZooKeeper keeps it for its
            // timeout, and the client reconnects within it if it can.
            zk::SessionState::Disconnected => {
                return Err(unavailable("disconnected; reconnecting within the session timeout"));
            }
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                self.forget_session(&entry.session, entry.serial);
                self.lose(lease.id, "its session ended");
                return Err(RegistryError::LeaseNotFound(lease.id));
            }
        }
        match timed(CALL_TIMEOUT, entry.session.client.check_stat(&entry.path)).await {
            // Still ours, unless deregistered, replaced or run out meanwhile.
            Ok(Some(stat)) if entry.session.owns(&stat) => match self.book().get(lease.id) {
                Some(_) => Ok(()),
                None => Err(RegistryError::LeaseNotFound(lease.id)),
            },
            // Gone (replaced by another registration of the id, or deleted
            // by hand), or another session's: register again.
            Ok(_) => {
                self.lose(lease.id, "its node is gone or another session's");
                Err(RegistryError::LeaseNotFound(lease.id))
            }
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => {
                self.forget_session(&entry.session, entry.serial);
                self.lose(lease.id, "its session ended");
                Err(RegistryError::LeaseNotFound(lease.id))
            }
            Err(err) => Err(registry_error(err)),
        }
    }

    async fn deregister(&self, lease: &Lease) -> Result<(), RegistryError> {
        let Some(entry) = self.book().get(lease.id).cloned() else {
            return Err(RegistryError::LeaseNotFound(lease.id));
        };
        // Deleted now: a listing right after must not show it. The lease
        // stays until then, so if ZooKeeper does not answer, it runs out
        // and the expiring task deletes the node (the session, shared,
        // would keep it).
        match delete_owned(&entry.session, &entry.path).await {
            // Its session ended: ZooKeeper deleted the node with it.
            Ok(()) | Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => {}
            Err(err) => return Err(registry_error(err)),
        }
        let removed = self.book().remove(lease.id);
        if let Some((_, Some(session))) = removed {
            tracing::debug!(session = %session.id(), "closing a zookeeper session that holds no lease");
        }
        Ok(())
    }

    /// Delete the nodes of the leases due now, in batches; a deletion that
    /// fails is tried again later. How many failed, and the first error.
    async fn expire_due(&self) -> (usize, Option<zk::Error>) {
        let mut failed = 0usize;
        let mut first = None;
        loop {
            let (due, closed) = self.book().take_due(Instant::now(), EXPIRE_BATCH);
            if due.is_empty() {
                return (failed, first);
            }
            let results = futures_util::future::join_all(due.iter().map(|entry| self.expire(entry))).await;
            for (entry, result) in due.iter().zip(results) {
                match result {
                    Ok(()) => self.book().finish(entry.id),
                    Err(err) => {
                        failed += 1;
                        first.get_or_insert(err);
                        self.book().retry(entry.id, Instant::now() + RETRY_DELETE);
                    }
                }
            }
            for session in closed {
                tracing::debug!(session = %session.id(), "closing a zookeeper session that holds no lease");
            }
        }
    }

    /// Delete the node of a lease that ran out (`Err`: try again later).
    async fn expire(&self, entry: &Entry<Arc<Session>>) -> Result<(), zk::Error> {
        match entry.session.client.state() {
            // ZooKeeper deleted the session's nodes with it.
            state if state.is_terminated() => return Ok(()),
            // Not asked while it cannot answer: requests would wait out
            // their timeout, batch after batch.
            zk::SessionState::Disconnected => return Err(zk::Error::ConnectionLoss),
            _ => {}
        }
        if self.book().holder(&entry.path) != Some(entry.id) {
            return Ok(()); // a new registration of the id took the node
        }
        tracing::debug!(
            lease = entry.id,
            session = %entry.session.id(),
            path = %entry.path,
            ttl = ?entry.ttl,
            "lease not kept alive within its TTL (or a registration that failed); deleting its node"
        );
        match delete_owned(&entry.session, &entry.path).await {
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => Ok(()),
            other => other,
        }
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
            let book = self.book();
            for (name, stat) in children.iter().zip(stats) {
                let Some(stat) = stat else { continue };
                let Some(provider) = decode_logged(&service, name) else { continue };
                // Our lease id for the nodes this handle holds; for the
                // others (other processes', or handles') the session
                // owning the node, all that can be known of their lease.
                let lease = book
                    .holder(&format!("{providers}/{name}"))
                    .and_then(|id| book.get(id))
                    .filter(|entry| entry.session.owns(&stat))
                    .map_or(stat.ephemeral_owner.cast_unsigned(), |entry| entry.id);
                registrations.push(Registration {
                    instance: provider.instance,
                    lease,
                    registered_unix_ms: provider.registered_unix_ms,
                });
            }
        }
        registrations.sort_by(|a, b| {
            (&a.instance.service, &a.instance.id).cmp(&(&b.instance.service, &b.instance.id))
        });
        Ok(registrations)
    }
}

impl Drop for ZooKeeperRegistry {
    fn drop(&mut self) {
        // The expiring task holds only a `Weak` while it sleeps: let it
        // find the registry gone now rather than at the next deadline.
        self.wake.notify_one();
    }
}

/// Log that a session of leases ended, with `users` leases (and
/// registrations under way) it held.
fn session_ended(session: &Session, users: usize) {
    tracing::warn!(
        session = %session.id(),
        state = %session.client.state(),
        leases = users,
        "zookeeper session of leases ended (ZooKeeper deleted its nodes); each lease is reported lost \
         at its next keep-alive, and new registrations get a new session"
    );
}

/// End the leases of `registry` nobody keeps alive, each at its deadline:
/// sleep until the earliest (or a new earlier one), delete what is due.
/// Ends with the registry.
async fn expire_abandoned(registry: Weak<ZooKeeperRegistry>, wake: Arc<Notify>) {
    // Failed deletions are retried every second while ZooKeeper cannot be
    // asked: warn at most once every 30 s.
    let mut warned: Option<Instant> = None;
    loop {
        let (next, (failed, err)) = {
            let Some(registry) = registry.upgrade() else { return };
            let outcome = registry.expire_due().await;
            (registry.book().next_deadline(), outcome)
        };
        match err {
            Some(err) if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) => {
                tracing::warn!(failed, %err, "could not delete the nodes of leases that ran out; trying again");
                warned = Some(Instant::now());
            }
            Some(err) => {
                tracing::debug!(failed, %err, "could not delete the nodes of leases that ran out; trying again")
            }
            None => {}
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
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
