//! The server: accept connections, route calls, enforce limits, shut down
//! gracefully.
//!
//! ```no_run
//! # use courier::Server;
//! # async fn run(service: impl courier::Service) -> Result<(), courier::ServeError> {
//! Server::builder()
//!     .add_service(service)
//!     .serve_with_shutdown("0.0.0.0:9000", async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```
//!
//! Every listener serves every protocol courier speaks, on one port:
//! `dispatch` reads a connection's first bytes and hands it to the
//! native protocol, gRPC, JSON-RPC or HTTP/JSON.
//!
//! - `router`: `Service.Method` to a service and method index.
//! - `dispatch`: protocol sniffing, and which protocols are switched on.
//! - `connection`: one native connection (reader, call tasks, writer).
//! - `grpc`: one gRPC connection over h2, plus the health and reflection
//!   services (feature `grpc`).
//! - `stream_rpc`: request/reply protocols on a plain byte stream (reply
//!   queue, writer task, budget and timeouts), with their adapters:
//!   - `jsonrpc`: JSON-RPC 1.0, as Go's `net/rpc/jsonrpc`;
//!   - `gorpc`: Go's `net/rpc` with gob, over TCP or after HTTP `CONNECT`.
//! - `http`: one HTTP/1.1 connection with JSON bodies (feature
//!   `http-json`).
//! - `admission`: the concurrency slots every call takes, on every
//!   protocol (server-wide, per connection, or a method's own).
//! - `budget`: the server-wide memory budget for requests being received
//!   and calls in flight.
//! - `pipeline`: the one path of a call, whatever its protocol: route,
//!   deadline, the server's [`Layer`]s, admission, the handler run (inline
//!   or in a task, panics isolated); each protocol module above is an
//!   adapter from its wire to this and back.
//! - `inline`: when a handler may be polled on its connection's task.
//! - `limits`: the counter behind every concurrency limit.
//! - `accept`: the listener loop (connection cap, accept errors).
//! - `stats`: counters of what was refused or closed, and why.
//! - `registration`: keeping the services registered in a registry.
//!
//! What a server protects itself with, whatever its peers do: a cap on
//! open connections (those beyond it are closed at once), a handshake
//! timeout for a connection's first bytes, progress timeouts for a request
//! that has started arriving (no gap over 20 s, about 60 s in all for a
//! trickle; see [`ServerBuilder::request_timeout`]), concurrency limits
//! (server-wide, per connection and per method), and a memory budget
//! across every request being received and every call in flight.

mod accept;
mod adaptive;
mod admission;
mod budget;
mod connection;
mod dispatch;
mod gorpc;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http-json")]
mod http;
#[cfg(feature = "http-json")]
mod http_stream;
mod inline;
mod jsonrpc;
mod limits;
mod pipeline;
mod registration;
mod router;
mod stats;
mod stream_rpc;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use adaptive::AdaptiveLimit;
pub use admission::MethodLimit;
pub use pipeline::{Layer, Next};
pub use router::DuplicateService;
pub use stats::ServerStats;

pub use crate::protocol::sniff::Protocol;

use crate::protocol::native::DEFAULT_MAX_FRAME_SIZE;
use crate::service::Service;

/// Errors from building or running a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// Two services with one name were added.
    #[error(transparent)]
    DuplicateService(#[from] DuplicateService),
    /// The listener failed in a way that cannot be retried.
    #[error("the listener failed: {0}")]
    Accept(io::Error),
}

/// Server settings; see the [`ServerBuilder`] methods for each.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) max_concurrent_calls: usize,
    pub(crate) max_concurrent_calls_per_connection: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) max_metadata_size: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) write_high_water: usize,
    pub(crate) protocols: dispatch::Protocols,
    /// Connections open at once; `None` until set (then derived from the
    /// open-file limit when the server starts).
    pub(crate) max_connections: Option<usize>,
    /// Bytes of requests being received and calls in flight; `None` for
    /// the default (see `budget::default_budget`).
    pub(crate) memory_budget: Option<usize>,
    pub(crate) request_timeouts: crate::transport::progress::RequestTimeouts,
    pub(crate) method_limits: std::collections::HashMap<String, MethodLimit>,
    pub(crate) adaptive: Option<AdaptiveLimit>,
    /// The longest the server lets a call run, whatever the caller asked.
    pub(crate) call_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_concurrent_calls: 10_000,
            max_concurrent_calls_per_connection: 1_000,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_metadata_size: 16 * 1024,
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Some(Duration::from_secs(60)),
            write_high_water: 4 * 1024 * 1024,
            protocols: dispatch::Protocols::default(),
            max_connections: None,
            memory_budget: None,
            request_timeouts: crate::transport::progress::RequestTimeouts::default(),
            method_limits: std::collections::HashMap::new(),
            adaptive: None,
            call_timeout: None,
        }
    }
}

/// Registration settings gathered by the builder; used if a registry is set.
#[derive(Clone, Debug)]
struct RegistrationOptions {
    registry: Option<crate::discovery::Registry>,
    advertise: Option<String>,
    ttl: Duration,
    weight: u32,
    zone: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
    grace: Duration,
}

impl Default for RegistrationOptions {
    fn default() -> RegistrationOptions {
        RegistrationOptions {
            registry: None,
            advertise: None,
            ttl: Duration::from_secs(10),
            weight: 1,
            zone: None,
            metadata: std::collections::BTreeMap::new(),
            grace: Duration::ZERO,
        }
    }
}

impl RegistrationOptions {
    fn config(&self) -> Option<registration::RegistrationConfig> {
        let registry = self.registry.clone()?;
        let mut config = registration::RegistrationConfig::new(registry);
        config.advertise = self.advertise.clone();
        config.ttl = self.ttl;
        config.weight = self.weight;
        config.zone = self.zone.clone();
        config.metadata = self.metadata.clone();
        config.grace = self.grace;
        Some(config)
    }
}

/// What every connection of one server shares.
pub(crate) struct ServerShared {
    pub(crate) router: router::Router,
    pub(crate) config: ServerConfig,
    /// The concurrency slots every call takes.
    pub(crate) admission: admission::Admission,
    /// The memory budget every request's bytes are reserved against.
    pub(crate) budget: Arc<budget::MemoryBudget>,
    pub(crate) stats: Arc<stats::Stats>,
    /// The user's layers, outermost first (see [`Layer`]).
    pub(crate) layers: Vec<Arc<dyn Layer>>,
    /// What gRPC reflection answers from, built on first use.
    #[cfg(feature = "grpc")]
    pub(crate) reflection: std::sync::OnceLock<grpc::reflection::Index>,
}

/// The entry point: `Server::builder()`.
#[derive(Debug, Clone, Copy)]
pub struct Server;

impl Server {
    /// Start configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: router::Router::default(),
            config: ServerConfig::default(),
            registration: RegistrationOptions::default(),
            layers: Vec::new(),
            error: None,
        }
    }
}

/// Configures services and limits, then binds.
#[must_use = "a builder does nothing until bound or served"]
pub struct ServerBuilder {
    router: router::Router,
    config: ServerConfig,
    registration: RegistrationOptions,
    layers: Vec<Arc<dyn Layer>>,
    error: Option<DuplicateService>,
}

impl ServerBuilder {
    /// Serve a service (a generated `XxxServer`, or any [`Service`]).
    pub fn add_service(mut self, service: impl Service) -> ServerBuilder {
        if let Err(err) = self.router.add(Arc::new(service)) {
            self.error.get_or_insert(err);
        }
        self
    }

    /// Add a layer on every call, on every protocol; the first added is the
    /// outermost (see [`Layer`] for where layers sit among the server's
    /// own steps).
    pub fn layer(mut self, layer: impl Layer) -> ServerBuilder {
        self.layers.push(Arc::new(layer));
        self
    }

    /// The longest a call may run, whatever deadline its caller set (or
    /// none): past it the handler is dropped and the caller gets
    /// `DeadlineExceeded`. It covers the layers too. JSON-RPC carries no
    /// deadline at all, so there this is the only one. Default: none.
    pub fn call_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.call_timeout = Some(timeout);
        self
    }

    /// Give each method an adaptive concurrency limit (see
    /// [`AdaptiveLimit`]): it finds the capacity from latency and sheds
    /// calls beyond it with `ResourceExhausted` and a retry pushback, so the
    /// calls it admits stay near the no-load latency. Off by default; the
    /// static limits apply either way.
    pub fn adaptive_concurrency(mut self, limit: AdaptiveLimit) -> ServerBuilder {
        self.config.adaptive = Some(limit);
        self
    }

    /// Calls running at once across all connections; calls beyond this get
    /// `ResourceExhausted` immediately. Default 10,000.
    pub fn max_concurrent_calls(mut self, limit: usize) -> ServerBuilder {
        self.config.max_concurrent_calls = limit;
        self
    }

    /// Calls running at once on one connection. Default 1,000.
    pub fn max_concurrent_calls_per_connection(mut self, limit: usize) -> ServerBuilder {
        self.config.max_concurrent_calls_per_connection = limit;
        self
    }

    /// Give one method (`"Service.Method"`) concurrency pools of its own:
    /// its calls take their slots from these instead of the server-wide
    /// and per-connection ones, so a flood of them (long polls, say) cannot
    /// take the capacity every other method needs. Over its limit, a call
    /// is refused with `ResourceExhausted` at once.
    pub fn method_limit(mut self, method: impl Into<String>, limit: MethodLimit) -> ServerBuilder {
        self.config.method_limits.insert(method.into(), limit);
        self
    }

    /// Connections open at once. Connections beyond it are accepted and
    /// closed at once (counted in [`ServerStats::connections_refused`] and
    /// logged), so a flood of connections neither locks out the ones
    /// already open nor leaves new ones hanging in the listen queue.
    /// Default: 10,000, or less where the process's open-file limit
    /// (`ulimit -n`) would run out first: a tenth of that limit (at least
    /// 32 descriptors) is kept for everything else the process opens.
    pub fn max_connections(mut self, limit: usize) -> ServerBuilder {
        self.config.max_connections = Some(limit);
        self
    }

    /// The memory budget across every connection: bytes of requests being
    /// received plus those of calls in flight. A request that would take
    /// the server past it is refused with `ResourceExhausted` (its bytes
    /// are not kept), and other callers go on being served. Default 1 GiB,
    /// or a quarter of the memory the process may use (its cgroup's limit,
    /// or the machine's memory) if that is less.
    pub fn memory_budget(mut self, bytes: usize) -> ServerBuilder {
        self.config.memory_budget = Some(bytes);
        self
    }

    /// How long a request that has started arriving may take in all:
    /// 60 s by default, extended by a second for every
    /// [`request_min_rate`](ServerBuilder::request_min_rate) bytes received,
    /// so a large request on a slow link still arrives while a trickle is
    /// cut off. An overdue request's connection is closed (on HTTP/2, its
    /// stream is reset), logged and counted. Idle time *between* requests
    /// is not limited by this (see [`keepalive_interval`](ServerBuilder::keepalive_interval)).
    pub fn request_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.request_timeouts.timeout = timeout;
        self
    }

    /// The longest a started request may go without a byte arriving.
    /// Default 20 s.
    pub fn request_stall_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.request_timeouts.stall = timeout;
        self
    }

    /// Bytes per second that earn a started request one more second beyond
    /// [`request_timeout`](ServerBuilder::request_timeout). Default 32 KiB.
    pub fn request_min_rate(mut self, bytes_per_second: u64) -> ServerBuilder {
        self.config.request_timeouts.min_rate = bytes_per_second;
        self
    }

    /// The largest frame payload accepted or sent. Default 16 MiB. A peer
    /// that sends more gets an error and its connection is closed.
    pub fn max_frame_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_frame_size = bytes;
        self
    }

    /// The largest metadata section (method name and headers) a request may
    /// carry; larger requests get `ResourceExhausted`. Default 16 KiB. At
    /// most 256 headers are accepted whatever their size.
    pub fn max_metadata_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_metadata_size = bytes;
        self
    }

    /// How long a graceful shutdown waits for in-flight calls. Default 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.drain_timeout = timeout;
        self
    }

    /// How long a new connection may take to say which protocol it speaks
    /// and complete that protocol's handshake; a silent one is closed.
    /// Default 5 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Serve only these protocols (all by default: native, gRPC, JSON-RPC
    /// and HTTP/JSON, told apart by their first bytes). A connection in
    /// another is closed.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = Protocol>) -> ServerBuilder {
        self.config.protocols = dispatch::Protocols::of(protocols);
        self
    }

    /// Stop serving one protocol; connections speaking it are closed.
    pub fn disable_protocol(mut self, protocol: Protocol) -> ServerBuilder {
        self.config.protocols = self.config.protocols.without(protocol);
        self
    }

    /// Ping a connection that has been silent this long, and close it if the
    /// ping is not answered within the same time. Default 60 s; `None` turns
    /// server-side pings off (clients ping on their own).
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> ServerBuilder {
        self.config.keepalive_interval = interval;
        self
    }

    /// Register every service in `registry` once the listener is bound, keep
    /// the registrations alive while serving, and deregister them first on
    /// graceful shutdown (before draining).
    pub fn register_with(mut self, registry: &crate::discovery::Registry) -> ServerBuilder {
        self.registration.registry = Some(registry.clone());
        self
    }

    /// The address consumers should call (`host:port`). Default: the bound
    /// address; for a wildcard bind, the loopback address (one machine only).
    pub fn advertise(mut self, addr: impl Into<String>) -> ServerBuilder {
        self.registration.advertise = Some(addr.into());
        self
    }

    /// The registration lease's TTL; it is renewed every third of it.
    /// Default 10 s. A crashed server disappears from consumers within it.
    pub fn registration_ttl(mut self, ttl: Duration) -> ServerBuilder {
        self.registration.ttl = ttl;
        self
    }

    /// The weight registered for this server's instances. Default 1.
    pub fn instance_weight(mut self, weight: u32) -> ServerBuilder {
        self.registration.weight = weight;
        self
    }

    /// The zone registered for this server's instances.
    pub fn instance_zone(mut self, zone: impl Into<String>) -> ServerBuilder {
        self.registration.zone = Some(zone.into());
        self
    }

    /// A metadata entry registered with this server's instances.
    pub fn instance_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> ServerBuilder {
        self.registration.metadata.insert(key.into(), value.into());
        self
    }

    /// How long to wait after deregistering before draining, so every
    /// consumer's watch sees it. Default zero: consumers move a call that
    /// finds this server gone to another instance anyway.
    pub fn deregistration_grace(mut self, grace: Duration) -> ServerBuilder {
        self.registration.grace = grace;
        self
    }

    /// Bind the listener. Fails on a bind error or a duplicate service.
    pub async fn bind(self, addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Listening, ServeError> {
        let shown = addr.to_string();
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: shown, source })?;
        self.listen_on(listener)
    }

    /// Serve on a listener you bound yourself.
    pub fn listen_on(self, listener: TcpListener) -> Result<Listening, ServeError> {
        if let Some(err) = self.error {
            return Err(err.into());
        }
        let local_addr = listener.local_addr().map_err(ServeError::Accept)?;
        let stats = Arc::new(stats::Stats::default());
        let mut config = self.config;
        config.max_connections = Some(config.max_connections.unwrap_or_else(accept::default_max_connections));
        let budget = budget::MemoryBudget::new(
            config.memory_budget.unwrap_or_else(budget::default_budget),
            stats.clone(),
        );
        let shared = Arc::new(ServerShared {
            admission: admission::Admission::new(
                config.max_concurrent_calls,
                config.max_concurrent_calls_per_connection,
                &config.method_limits,
                stats.clone(),
            ),
            budget,
            stats,
            layers: self.layers,
            router: {
                let mut router = self.router;
                if let Some(settings) = config.adaptive {
                    router.limit_adaptively(settings);
                }
                router
            },
            config,
            #[cfg(feature = "grpc")]
            reflection: std::sync::OnceLock::new(),
        });
        Ok(Listening { listener, local_addr, shared, registration: self.registration.config() })
    }

    /// Bind and serve until the process ends.
    pub async fn serve(self, addr: impl ToSocketAddrs + std::fmt::Display) -> Result<(), ServeError> {
        self.bind(addr).await?.serve().await
    }

    /// Bind and serve until `signal` completes, then shut down gracefully.
    /// Any future will do, whatever it returns: `tokio::signal::ctrl_c()`
    /// as it is, a oneshot receiver, or `async {}` blocks.
    pub async fn serve_with_shutdown<F>(
        self,
        addr: impl ToSocketAddrs + std::fmt::Display,
        signal: F,
    ) -> Result<(), ServeError>
    where
        F: Future + Send,
    {
        self.bind(addr).await?.serve_with_shutdown(signal).await
    }
}

/// A bound server, not yet accepting.
pub struct Listening {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<ServerShared>,
    registration: Option<registration::RegistrationConfig>,
}

impl Listening {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A live view of the server's counters (connections, refusals,
    /// timeouts, memory budget); keep it to read them while it serves.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle(self.shared.stats.clone())
    }

    /// The names of the services this server offers.
    pub fn service_names(&self) -> Vec<&'static str> {
        self.shared.router.services().iter().map(|s| s.descriptor().name).collect()
    }

    /// Serve until the process ends.
    pub async fn serve(self) -> Result<(), ServeError> {
        self.serve_with_shutdown(std::future::pending::<()>()).await
    }

    /// Serve until `signal` completes. Then: stop accepting (new connections
    /// are refused), send every connection a goaway, let in-flight calls
    /// finish within the drain timeout, and close. `signal`'s output is
    /// ignored (an error from `ctrl_c()` also means "stop").
    pub async fn serve_with_shutdown<F>(self, signal: F) -> Result<(), ServeError>
    where
        F: Future + Send,
    {
        // Whatever the signal says, it means "stop".
        let signal = async move {
            let _ = signal.await;
        };
        let Listening { listener, shared, local_addr, registration } = self;
        // The one line an operator looks for: where, and speaking what.
        let protocols: Vec<&str> = Protocol::ALL
            .into_iter()
            .filter(|p| shared.config.protocols.contains(*p))
            .filter(|p| match p {
                Protocol::Grpc => cfg!(feature = "grpc"),
                Protocol::HttpJson => cfg!(feature = "http-json"),
                Protocol::Native | Protocol::JsonRpc | Protocol::GoRpc => true,
            })
            .map(Protocol::name)
            .collect();
        let services: Vec<&str> = shared.router.services().iter().map(|s| s.descriptor().name).collect();
        tracing::info!(addr = %local_addr, protocols = %protocols.join(","), services = %services.join(","), "listening");
        // Registered only once the listener is bound: consumers never see an
        // address that refuses them.
        let registrations = registration.map(|config| {
            let services: Vec<_> = shared.router.services().iter().map(|s| s.descriptor()).collect();
            registration::Registrations::start(&config, &services, local_addr, shared.config.protocols)
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let max_connections = shared.config.max_connections.unwrap_or_else(accept::default_max_connections);
        let mut acceptor = accept::Acceptor::new(listener, max_connections, shared.stats.clone());
        tokio::pin!(signal);
        let result = loop {
            tokio::select! {
                () = &mut signal => break Ok(()),
                accepted = acceptor.next() => match accepted {
                    Ok((stream, peer)) => {
                        let open = shared.stats.connection_opened();
                        let (shared, shutdown) = (shared.clone(), shutdown_rx.clone());
                        // The connection's future is made inside the task's:
                        // moving a made one in would store it twice (2.5 KiB
                        // more for every idle connection).
                        connections.spawn(async move {
                            let _open = open;
                            dispatch::serve(stream, peer, shared, shutdown).await;
                        });
                    }
                    Err(err) => break Err(ServeError::Accept(err)),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        // Deregister first, while still accepting: consumers stop sending
        // here before the server stops taking calls.
        if let Some(registrations) = registrations {
            registrations.stop().await;
        }
        // Stop accepting: dropping the listener makes new connects fail.
        drop(acceptor);
        let _ = shutdown_tx.send(true);
        // Connections enforce the drain timeout themselves; this bound only
        // guards against one stuck in a write to a peer that never reads.
        let grace = shared.config.drain_timeout.saturating_add(Duration::from_secs(10));
        if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain timeout; closing them");
            connections.shutdown().await;
        }
        result
    }

    /// Serve in a background task; the handle shuts it down.
    pub fn start(self) -> ServerHandle {
        let local_addr = self.local_addr;
        let stats = self.stats();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve_with_shutdown(async move {
            let _ = stop_rx.await;
        }));
        ServerHandle { local_addr, stats, stop: Some(stop_tx), task }
    }
}

/// A live view of a server's counters (see [`Listening::stats`]).
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<stats::Stats>);

impl StatsHandle {
    /// The counters, now.
    pub fn get(&self) -> ServerStats {
        self.0.snapshot()
    }
}

/// A server running in the background (see [`Listening::start`]).
///
/// Dropping the handle shuts the server down gracefully in the background,
/// as [`ServerHandle::shutdown`] would without waiting; keep it for as long
/// as the server should run.
#[derive(Debug)]
#[must_use = "dropping the handle shuts the server down"]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stats: StatsHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters, now.
    pub fn stats(&self) -> ServerStats {
        self.stats.get()
    }

    /// Shut down gracefully and wait until every connection is closed.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Accept(io::Error::other(join.to_string()))),
        }
    }

    /// Stop at once: no drain; every connection is dropped mid-call.
    pub fn abort(self) {
        self.task.abort();
    }
}
