//! In-process servers, providers and clients the tests start: a server with
//! the test services, a registered provider, a partitioning proxy, and a
//! bystander that must keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use courier::{ServerBuilder, ServerHandle};

use crate::services::{
    Calc, CalculatorServer, InteropImpl, Named, ProbeClient, ProbeImpl, ProbeServer, ProbeState,
    WhoamiServer, interop,
};

/// A provider named `name` (Whoami, Calculator and Probe) on 127.0.0.1:0,
/// registered in `registry` with a short TTL, configured by `configure`.
pub async fn start_provider(
    registry: &courier::registry::Registry,
    name: &str,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> ServerHandle {
    start_observed_provider(registry, name, configure).await.0
}

/// [`start_provider`], with what its probe's handlers saw (to wait until
/// calls are running on this provider).
pub async fn start_observed_provider(
    registry: &courier::registry::Registry,
    name: &str,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> (ServerHandle, Arc<ProbeState>) {
    let probe = ProbeImpl::default();
    let state = probe.state.clone();
    let builder = courier::Server::builder()
        .add_service(WhoamiServer::new(Named(name.to_owned())))
        .add_service(CalculatorServer::new(Calc))
        .add_service(ProbeServer::new(probe))
        .register_with(registry)
        .registration_ttl(Duration::from_secs(2));
    let handle = configure(builder).bind("127.0.0.1:0").await.expect("bind").start();
    (handle, state)
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

/// The bundled courier registry in this process, on disk in `dir`, on
/// 127.0.0.1:0 (its `add_to` pools, as `courier registry serve` runs it).
pub async fn start_registry(dir: &std::path::Path) -> ServerHandle {
    start_registry_on(dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`start_registry`] on `addr` (a lab's gateway, say).
pub async fn start_registry_on(dir: &std::path::Path, addr: SocketAddr) -> ServerHandle {
    let registry = courier_registry::open(dir).await.expect("open the registry");
    registry.add_to(courier::Server::builder()).bind(addr).await.expect("bind the registry").start()
}

/// A server with the calculator, the probe and the interop service on a
/// thread and runtime of its own, as another program would be (for tests
/// without a runtime: blocking clients, command-line tools). It serves
/// until the test process ends.
pub fn serve_on_thread() -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("server runtime");
        runtime.block_on(async move {
            let listening = courier::Server::builder()
                .add_service(CalculatorServer::new(Calc))
                .add_service(ProbeServer::new(ProbeImpl::default()))
                .add_service(interop::InteropServer::new(InteropImpl))
                .bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            addr_tx.send(listening.local_addr()).expect("send the address");
            let _ = listening.serve().await;
        });
    });
    addr_rx.recv_timeout(Duration::from_secs(30)).expect("the server thread bound an address")
}
