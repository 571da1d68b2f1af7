//! Shared pieces for courier's integration tests: test services that report
//! what happened to their handlers, servers in-process or as child
//! processes, and small helpers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::{Context, ServerBuilder, ServerHandle, Status};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub mod registry_flood;

/// Why a calculation failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    /// `b` was zero.
    #[error("division by zero")]
    DivisionByZero,
}

/// The classic net/rpc calculator.
#[courier::service(version = "1.0.0")]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`.
    #[courier(idempotent)]
    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError>;
}

/// The calculator implementation.
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError> {
        if b == 0.0 { Err(CalcError::DivisionByZero) } else { Ok(a / b) }
    }
}

/// A service whose handlers let tests observe the server side.
#[courier::service]
pub trait Probe {
    /// Return `message`.
    async fn echo(&self, message: String) -> String;
    /// Sleep, then return `millis`. Counts starts, finishes and handlers
    /// dropped before finishing.
    async fn sleep(&self, millis: u64) -> u64;
    /// Panic with `message`.
    async fn panic(&self, message: String) -> u32;
    /// The value of request header `key`.
    async fn header(&self, cx: &Context, key: String) -> Option<String>;
    /// Milliseconds left before the call's deadline.
    async fn deadline_ms(&self, cx: &Context) -> Option<u64>;
    /// The caller's TCP port (tells connections apart).
    async fn peer_port(&self, cx: &Context) -> u16;
    /// A string of `len` bytes.
    async fn sized(&self, len: u64) -> String;
    /// Fail with the given status code and message.
    async fn fail(&self, code: u32, message: String) -> Result<(), Status>;
    /// Record `value` (one-way: no reply).
    #[courier(one_way)]
    async fn record(&self, value: u64);
    /// Everything recorded so far.
    async fn recorded(&self) -> Vec<u64>;
    /// Block the thread for `millis` (synchronous work, no `.await`).
    async fn busy(&self, millis: u64) -> u64;
    /// Wait `millis`, then return `message`; safe to run twice.
    #[courier(idempotent)]
    async fn slow_echo(&self, message: String, millis: u64) -> String;
    /// Wait `millis`, then record `value` (one-way).
    #[courier(one_way)]
    async fn record_later(&self, value: u64, millis: u64);
}

/// What the probe's handlers saw.
#[derive(Default)]
pub struct ProbeState {
    started: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
    changed: Notify,
    recorded: Mutex<Vec<u64>>,
}

impl ProbeState {
    /// Wait until `condition` holds, up to `timeout`; returns whether it did.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&ProbeState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return condition(self);
            }
        }
    }

    /// `sleep` handlers started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// `sleep` handlers that completed.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// `sleep` handlers dropped before completing.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Values received by `record`.
    pub fn recorded(&self) -> Vec<u64> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The probe implementation.
#[derive(Clone, Default)]
pub struct ProbeImpl {
    /// Shared with the test.
    pub state: Arc<ProbeState>,
}

/// Marks a sleep handler dropped unless it finished.
struct DropWatch {
    state: Arc<ProbeState>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.state.bump(&self.state.dropped);
        }
    }
}

impl Probe for ProbeImpl {
    async fn echo(&self, message: String) -> String {
        message
    }

    async fn sleep(&self, millis: u64) -> u64 {
        let mut watch = DropWatch { state: self.state.clone(), finished: false };
        self.state.bump(&self.state.started);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        watch.finished = true;
        self.state.bump(&self.state.finished);
        millis
    }

    async fn panic(&self, message: String) -> u32 {
        panic!("{message}")
    }

    async fn header(&self, cx: &Context, key: String) -> Option<String> {
        cx.metadata().get(&key).map(str::to_owned)
    }

    async fn deadline_ms(&self, cx: &Context) -> Option<u64> {
        cx.remaining().map(|left| left.as_millis() as u64)
    }

    async fn peer_port(&self, cx: &Context) -> u16 {
        cx.peer_addr().map_or(0, |addr| addr.port())
    }

    async fn sized(&self, len: u64) -> String {
        "x".repeat(len as usize)
    }

    async fn fail(&self, code: u32, message: String) -> Result<(), Status> {
        Err(Status::new(courier::Code::from_u32(code), message))
    }

    async fn record(&self, value: u64) {
        self.state.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(value);
        self.state.changed.notify_waiters();
    }

    async fn recorded(&self) -> Vec<u64> {
        self.state.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn busy(&self, millis: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(millis));
        millis
    }

    async fn slow_echo(&self, message: String, millis: u64) -> String {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        message
    }

    async fn record_later(&self, value: u64, millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.record(value).await;
    }
}

courier::include_protos!();

/// The `.proto`-defined service of `proto/interop.proto`.
#[derive(Debug, Default, Clone)]
pub struct InteropImpl;

impl interop::Interop for InteropImpl {
    async fn echo(&self, cx: &Context, request: interop::EchoRequest) -> Result<interop::EchoReply, Status> {
        let mut metadata = std::collections::HashMap::new();
        for key in &request.echo_metadata {
            if let Some(value) = cx.metadata().get(key) {
                metadata.insert(key.clone(), value.to_owned());
                cx.set_response_metadata(format!("echo-{key}"), value);
            }
        }
        Ok(interop::EchoReply { message: request.message, payload: request.payload, metadata })
    }

    async fn fail(&self, _cx: &Context, request: interop::FailRequest) -> Result<interop::Empty, Status> {
        let code = u32::try_from(request.code).unwrap_or(2);
        Err(Status::new(courier::Code::from_u32(code), request.message))
    }

    async fn sleep(&self, _cx: &Context, request: interop::SleepRequest) -> Result<interop::Empty, Status> {
        tokio::time::sleep(Duration::from_millis(request.millis)).await;
        Ok(interop::Empty {})
    }
}

/// Says which server answered, so tests can count where calls went.
#[courier::service(version = "1.0.0")]
pub trait Whoami {
    /// This server's name.
    async fn name(&self) -> String;
}

/// A `Whoami` answering `name`.
#[derive(Clone)]
pub struct Named(pub String);

impl Whoami for Named {
    async fn name(&self) -> String {
        self.0.clone()
    }
}

/// A provider named `name` (Whoami, Calculator and Probe) on 127.0.0.1:0,
/// registered in `registry` with a short TTL, configured by `configure`.
pub async fn start_provider(
    registry: &courier::registry::Registry,
    name: &str,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> ServerHandle {
    let builder = courier::Server::builder()
        .add_service(WhoamiServer::new(Named(name.to_owned())))
        .add_service(CalculatorServer::new(Calc))
        .add_service(ProbeServer::new(ProbeImpl::default()))
        .register_with(registry)
        .registration_ttl(Duration::from_secs(2));
    configure(builder).bind("127.0.0.1:0").await.expect("bind").start()
}

/// Wait until `condition` holds, polling every 10 ms, up to `timeout`.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy to `target` that can cut everyone off, to make a server
/// unreachable for some clients only (a network partition).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    blocked: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    /// Start forwarding 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        tokio::spawn({
            let (blocked, cut) = (blocked.clone(), cut.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if blocked.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            () = cut.notified() => {}
                        }
                    });
                }
            }
        });
        Proxy { addr, blocked, cut }
    }

    /// Close every forwarded connection and refuse new ones.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Forward again.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

/// A server with the calculator and the probe on 127.0.0.1:0, configured
/// by `configure`.
pub async fn start_server(
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> (ServerHandle, Arc<ProbeState>) {
    let probe = ProbeImpl::default();
    let state = probe.state.clone();
    let builder = courier::Server::builder()
        .add_service(CalculatorServer::new(Calc))
        .add_service(ProbeServer::new(probe))
        .add_service(interop::InteropServer::new(InteropImpl));
    let handle = configure(builder).bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0").start();
    (handle, state)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// This process's resident memory in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}

/// A test server in a child process; killed with SIGKILL when dropped.
pub struct ChildServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Start `courier-test-server` on `addr` and wait until it listens.
    pub fn start(binary: &str, addr: SocketAddr) -> ChildServer {
        ChildServer::start_with(binary, addr, &[])
    }

    /// Start it with extra arguments (`--registry URL --name NAME`, or
    /// `--registry-data DIR` to serve a registry instead).
    pub fn start_with(binary: &str, addr: SocketAddr, extra: &[&str]) -> ChildServer {
        let mut child = Command::new(binary)
            .arg(addr.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the test server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the server's first line");
        assert!(line.starts_with("listening on "), "unexpected server output: {line:?}");
        // What it actually bound (the address asked for may be port 0).
        let addr = line["listening on ".len()..].trim().parse().unwrap_or(addr);
        ChildServer { child, addr }
    }

    /// The server process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse().ok())
            })
            .expect("VmRSS of the server process")
    }

    /// SIGKILL the process and reap it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The behaviour every registry backend must have, run against `registry`.
/// Uses service names prefixed with `prefix` so runs do not collide.
pub async fn registry_contract(registry: &courier::registry::Registry, prefix: &str) {
    use courier::registry::{Instance, RegistryError, WatchEvent};

    let service = format!("{prefix}Contract");
    let instance = |port: u16| {
        Instance::new(service.clone(), format!("127.0.0.1:{port}")).with_version("1.2.3").with_weight(2)
    };
    let ttl = Duration::from_secs(2);

    // Nothing registered yet.
    let empty = registry.list(&service).await.expect("list");
    assert!(empty.instances.is_empty());

    // A watch starts with the full set, then sees every change in order.
    let mut watch = registry.watch(&service, None).await.expect("watch");
    let first = next_event(&mut watch).await;
    assert!(matches!(&first, WatchEvent::Reset { instances, .. } if instances.is_empty()), "{first:?}");

    let lease_a = registry.register(instance(7001), ttl).await.expect("register a");
    let lease_b = registry.register(instance(7002), ttl).await.expect("register b");
    let added = [next_event(&mut watch).await, next_event(&mut watch).await];
    let mut added_addrs: Vec<String> = added
        .iter()
        .map(|event| match event {
            WatchEvent::Add { instance, .. } => instance.addr.clone(),
            other => panic!("expected Add, got {other:?}"),
        })
        .collect();
    added_addrs.sort();
    assert_eq!(added_addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
    assert!(added[0].revision() < added[1].revision(), "revisions increase");

    let listed = registry.list(&service).await.expect("list");
    assert_eq!(listed.instances.len(), 2);
    let a = listed.instances.iter().find(|i| i.addr == "127.0.0.1:7001").expect("a listed");
    assert_eq!((a.version.as_str(), a.weight), ("1.2.3", 2), "details survive the round trip");
    assert!(listed.revision >= added[1].revision());

    // Deregistration removes at once.
    registry.deregister(&lease_b).await.expect("deregister");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, lease_b.instance_id),
        other => panic!("expected Remove, got {other:?}"),
    }
    assert_eq!(registry.keep_alive(&lease_b).await, Err(RegistryError::LeaseNotFound(lease_b.id)));

    // A kept-alive lease outlives its TTL; an abandoned one expires.
    let lease_c = registry.register(instance(7003), ttl).await.expect("register c");
    let _ = next_event(&mut watch).await;
    let started = Instant::now();
    while started.elapsed() < ttl + Duration::from_millis(1500) {
        registry.keep_alive(&lease_a).await.expect("keep a alive");
        tokio::time::sleep(ttl / 4).await;
    }
    let remaining = registry.list(&service).await.expect("list");
    let addrs: Vec<&str> = remaining.instances.iter().map(|i| i.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:7001"], "c expired within TTL + 1.5 s, a was kept alive");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, lease_c.instance_id),
        other => panic!("expected c's Remove, got {other:?}"),
    }

    // A new watch can resume from a revision it saw.
    let revision = remaining.revision;
    let lease_d = registry.register(instance(7004), ttl).await.expect("register d");
    let mut resumed = registry.watch(&service, Some(revision)).await.expect("resume");
    match next_event(&mut resumed).await {
        WatchEvent::Add { instance, .. } => assert_eq!(instance.addr, "127.0.0.1:7004"),
        WatchEvent::Reset { instances, .. } => assert_eq!(instances.len(), 2, "a reset must be complete"),
        other => panic!("expected the change since {revision}, got {other:?}"),
    }

    // Listings for `courier ls`.
    let registrations = registry.registrations(Some(&service)).await.expect("registrations");
    assert_eq!(registrations.len(), 2);
    assert!(registrations.iter().all(|r| r.registered_unix_ms > 0));

    // Nonsense is refused.
    let bad = Instance::new(service.clone(), "no-port");
    assert!(registry.register(bad, ttl).await.is_err());

    registry.deregister(&lease_a).await.expect("deregister a");
    registry.deregister(&lease_d).await.expect("deregister d");
}

/// What a registry must refuse, run against `registry` (`mem://` and the
/// courier registry; see `tests/registry.rs`): an instance id another live
/// lease holds is never silently moved (`AlreadyExists`), and instances
/// over the size limit are refused (`Rejected`, `InvalidArgument` on the
/// wire) while those at it are fine. Service names are prefixed with
/// `prefix`.
pub async fn registry_ownership_contract(registry: &courier::registry::Registry, prefix: &str) {
    use courier::discovery::instance::MAX_INSTANCE_BYTES;
    use courier::registry::{Instance, RegistryError};

    let service = format!("{prefix}Owned");
    let ttl = Duration::from_secs(5);
    let first = Instance::new(service.clone(), "127.0.0.1:7101").with_id("shared-id").with_weight(1);
    let lease = registry.register(first.clone(), ttl).await.expect("register the first");

    // Another provider with the same id, while the first lease lives.
    let second = Instance::new(service.clone(), "127.0.0.1:7102").with_id("shared-id").with_weight(9);
    let refused = registry.register(second.clone(), ttl).await;
    assert_eq!(
        refused.map(|lease| lease.id),
        Err(RegistryError::AlreadyExists { service: service.clone(), id: "shared-id".to_owned() }),
        "a live lease's instance is not taken over"
    );
    // The first still holds it, unchanged, and renewing it still means
    // something.
    let listed = registry.list(&service).await.expect("list");
    assert_eq!(listed.instances, vec![first.clone()]);
    registry.keep_alive(&lease).await.expect("the first lease still holds its instance");
    // Once it is gone, the id is free.
    registry.deregister(&lease).await.expect("deregister");
    let taken = registry.register(second.clone(), ttl).await.expect("the id is free now");
    assert_eq!(registry.list(&service).await.expect("list").instances, vec![second]);
    registry.deregister(&taken).await.expect("deregister");

    // Size: the 9 MiB of metadata is refused with the reason; an
    // instance right at the limit is accepted.
    let huge = Instance::new(service.clone(), "127.0.0.1:7103").with_metadata("blob", "x".repeat(9 << 20));
    match registry.register(huge, ttl).await {
        Err(RegistryError::Rejected(reason)) => {
            assert!(reason.contains("over the limit of 65536") && reason.contains("metadata"), "{reason}");
        }
        other => panic!("a 9 MiB instance must be rejected, got {other:?}"),
    }
    let base = Instance::new(service.clone(), "127.0.0.1:7104").with_metadata("blob", "");
    let fitting = base.clone().with_metadata("blob", "x".repeat(MAX_INSTANCE_BYTES - base.encoded_len()));
    let lease = registry.register(fitting, ttl).await.expect("an instance at the limit is accepted");
    registry.deregister(&lease).await.expect("deregister");
}

async fn next_event(watch: &mut courier::registry::WatchStream) -> courier::registry::WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("the watch is still open")
        .expect("no watch error")
}

/// A real single-node etcd (Debian's `etcd-server`), on free ports with a
/// temporary data directory; killed when dropped.
pub struct EtcdServer {
    child: Child,
    /// `127.0.0.1:<client port>`.
    pub endpoint: String,
    peer_port: u16,
    _data: tempfile::TempDir,
}

impl EtcdServer {
    /// Start etcd and wait until it answers.
    ///
    /// # Panics
    /// If etcd is not installed: `scripts/test.sh` installs it; a test run
    /// without it must fail, not skip.
    pub fn start() -> EtcdServer {
        EtcdServer::start_on(free_port(), free_port())
    }

    /// Kill this etcd and start an empty one on the same ports: a cluster
    /// that lost its data (or was replaced), as its clients see it.
    pub fn replace_with_empty(mut self) -> EtcdServer {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = |endpoint: &str| endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        let client = port(&self.endpoint).expect("the endpoint has a port");
        EtcdServer::start_on(client, self.peer_port)
    }

    fn start_on(client: u16, peer: u16) -> EtcdServer {
        let data = tempfile::tempdir().expect("etcd data dir");
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(data.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "courier-test", "--data-dir"])
            .arg(data.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("courier-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("could not start etcd ({err}); install it with `apt-get install etcd-server` (scripts/test.sh does)")
            });
        let server =
            EtcdServer { child, endpoint: format!("127.0.0.1:{client}"), peer_port: peer, _data: data };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let healthy = server.etcdctl(&["endpoint", "health"]).status.success();
            if healthy {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within 20 s");
    }

    /// Run `etcdctl` (v3 API) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()
            .expect("etcdctl (package etcd-client) is installed")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client calling in a loop until stopped; every call must succeed.
pub struct Bystander {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Bystander {
    /// Start calling the server at `addr` over the native protocol.
    pub async fn start(addr: SocketAddr) -> Bystander {
        let probe = ProbeClient::connect(addr.to_string()).await.expect("bystander connects");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut calls = 0;
                while !stop.load(Ordering::SeqCst) {
                    let message = format!("bystander {calls}");
                    let reply = probe.echo(message.clone()).await.expect("the bystander's calls never fail");
                    assert_eq!(reply, message);
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                calls
            }
        });
        Bystander { stop, task }
    }

    /// Stop; how many calls it made (at least one).
    pub async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let calls = self.task.await.expect("bystander task");
        assert!(calls > 0, "the bystander made calls throughout");
        calls
    }
}

pub mod go;

/// Python peers: the virtualenv `scripts/test.sh` creates under
/// `target/pyenv` (grpcio and its tools), stubs generated from
/// `proto/interop.proto`, and a grpcio server of the interop service.
pub mod python {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;

    /// The tests' directory (where `proto/` and `python/` are).
    pub fn tests_dir() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// The Python interpreter with grpcio; the test fails without it.
    pub fn python() -> PathBuf {
        let python = std::env::var_os("COURIER_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| tests_dir().join("../target/pyenv/bin/python"));
        assert!(
            python.exists(),
            "no Python with grpcio at {}: run ./scripts/test.sh (it creates target/pyenv), or set COURIER_TEST_PYTHON",
            python.display()
        );
        python
    }

    /// Python stubs for `proto/interop.proto`, generated now with grpcio-tools.
    pub async fn python_stubs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = Command::new(python())
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(tests_dir().join("proto"))
            .arg(format!("--python_out={}", dir.path().display()))
            .arg(format!("--grpc_python_out={}", dir.path().display()))
            .arg("interop.proto")
            .output()
            .await
            .expect("run grpc_tools.protoc");
        assert!(output.status.success(), "protoc failed: {}", String::from_utf8_lossy(&output.stderr));
        dir
    }

    /// A Python grpcio server of the interop service, stopped when dropped.
    pub struct PythonServer {
        child: tokio::process::Child,
        /// The port it listens on, on 127.0.0.1.
        pub port: u16,
        _stubs: tempfile::TempDir,
    }

    impl PythonServer {
        /// Start it and wait for its port.
        pub async fn start() -> PythonServer {
            let stubs = python_stubs().await;
            let mut child = Command::new(python())
                .arg(tests_dir().join("python/interop_server.py"))
                .arg(stubs.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start the Python server");
            let stdout = child.stdout.take().expect("stdout");
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line))
                .await
                .expect("the Python server starts")
                .expect("read its port");
            let port = line.trim().parse().unwrap_or_else(|_| panic!("a port, got {line:?}"));
            PythonServer { child, port, _stubs: stubs }
        }
    }

    impl Drop for PythonServer {
        fn drop(&mut self) {
            let _ = self.child.start_kill();
        }
    }
}
