//! [`ChannelBuilder`]: configures a channel to one address, and the
//! constructors of [`Channel`] that use it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::channel::Channel;
use super::endpoint::Endpoint;
use super::error::ConnectError;
use super::gorpc::GoWire;
use super::layer::{Layer, Layers};
use super::protocols::{Settings, Wire};
use super::route::Route;
use super::settings::{ChannelConfig, GRPC_KEEPALIVE};
use crate::resilience::Backoff;

/// Configures a [`Channel`] to one address; also the connection settings
/// of a discovered channel's instances
/// ([`DiscoverBuilder::configure_channels`](super::DiscoverBuilder::configure_channels)).
///
/// ```
/// use std::time::Duration;
///
/// let channel = courier::Channel::builder("127.0.0.1:9000")
///     .connect_timeout(Duration::from_secs(2))
///     .keepalive_interval(Some(Duration::from_secs(10)))
///     .pool_size(2)
///     .build_lazy(); // connects on the first call; `.connect().await` connects now
/// assert_eq!(channel.target(), "127.0.0.1:9000");
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until built"]
pub struct ChannelBuilder {
    addr: String,
    config: ChannelConfig,
    grpc: bool,
    /// Go's `net/rpc` instead of courier's protocol.
    go: Option<GoWire>,
    /// Whether `keepalive_interval` was chosen (gRPC mode defaults to none).
    keepalive_chosen: bool,
    layers: Vec<Arc<dyn Layer>>,
}

/// What a builder builds from: the address, the connection settings per
/// protocol, the protocol asked for, and the layers.
pub(crate) struct Parts {
    pub(crate) addr: String,
    pub(crate) settings: Settings,
    pub(crate) wire: Wire,
    pub(crate) layers: Vec<Arc<dyn Layer>>,
}

impl Channel {
    /// Configure a channel to `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder::new(addr)
    }

    /// A channel with default settings that connects on its first call.
    pub fn lazy(addr: impl Into<String>) -> Channel {
        ChannelBuilder::new(addr).build_lazy()
    }

    /// A channel with default settings, connected now.
    pub async fn connect(addr: impl Into<String>) -> Result<Channel, ConnectError> {
        ChannelBuilder::new(addr).connect().await
    }
}

impl ChannelBuilder {
    pub(crate) fn new(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            addr: addr.into(),
            config: ChannelConfig::default(),
            grpc: false,
            go: None,
            keepalive_chosen: false,
            layers: Vec::new(),
        }
    }

    /// Connections to open to the address; calls are spread across them
    /// round-robin. Default 1: one multiplexed connection carries any number
    /// of concurrent calls, so more only help when one connection's
    /// reader or writer becomes the bottleneck.
    pub fn pool_size(mut self, connections: usize) -> ChannelBuilder {
        self.config.pool_size = connections.max(1);
        self
    }

    /// Give up on a connection attempt after this long. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.config.connect_timeout = timeout;
        self
    }

    /// Ping the server after this much silence; if the ping is not answered
    /// within the same time the connection is declared dead and its calls
    /// fail with `Unavailable`. Default 30 s; `None` disables pings.
    ///
    /// In gRPC mode the default is 5 minutes, and pings go out only while
    /// calls are in flight: grpc-go servers close connections that ping
    /// more often than their enforcement policy allows (once per 5 minutes
    /// by default), or at all while idle, with `too_many_pings`.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> ChannelBuilder {
        self.config.keepalive_interval = interval;
        self.keepalive_chosen = true;
        self
    }

    /// The largest frame payload sent or accepted. Default 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> ChannelBuilder {
        self.config.max_frame_size = bytes;
        self
    }

    /// How reconnect attempts back off after failures.
    pub fn backoff(mut self, backoff: Backoff) -> ChannelBuilder {
        self.config.backoff = backoff;
        self
    }

    /// How long a call made alone on its connection may spin (yielding to
    /// the runtime and checking for its reply) before it parks. Default
    /// 50 us, applied only while the connection's round trips are shorter
    /// than that; `None` never spins.
    ///
    /// On a fast link this halves the latency of one-at-a-time calls, at
    /// some CPU cost; see `docs/PERFORMANCE.md` for the numbers.
    pub fn spin_wait(mut self, budget: Option<Duration>) -> ChannelBuilder {
        self.config.spin_wait = budget;
        self
    }

    /// Speak gRPC (over HTTP/2) instead of courier's native protocol: to
    /// call servers that are not courier, or through what only passes
    /// HTTP/2. Serde services travel as `application/grpc+json` (the binary
    /// codec is native only), `.proto` services as protobuf. The pool size,
    /// timeouts, keepalive, backoff and message size limit apply; spinning
    /// does not.
    ///
    /// For a discovered channel (in `configure_channels`): call every
    /// instance that offers gRPC over gRPC, and those that name no protocol
    /// too.
    #[cfg(feature = "grpc")]
    pub fn grpc(mut self) -> ChannelBuilder {
        self.grpc = true;
        self
    }

    /// Call a Go `net/rpc` server that was never changed, as Go's
    /// `rpc.Dial` does: gob over TCP, to a server that `rpc.ServeConn`s.
    /// Arguments and results travel in the gob codec ([`Codec::Gob`]), with
    /// Go's field names matched to Rust's (`X` for `x`, `UserId` for
    /// `user_id`; `#[serde(rename)]` where Go names a field otherwise). The
    /// pool size, connect timeout, message size limit and backoff apply;
    /// Go's protocol has no keepalive, metadata or deadlines (the deadline
    /// is kept on this side). Not for discovered channels.
    ///
    /// [`Codec::Gob`]: crate::codec::Codec::Gob
    pub fn go_rpc(mut self) -> ChannelBuilder {
        self.go = Some(GoWire::Gob);
        self
    }

    /// [`ChannelBuilder::go_rpc`] over HTTP, as Go's `rpc.DialHTTP`: to a
    /// server that `rpc.HandleHTTP`s (`CONNECT /_goRPC_`, then gob).
    pub fn go_rpc_http(mut self) -> ChannelBuilder {
        self.go = Some(GoWire::GobOverHttp);
        self
    }

    /// Call a Go server that serves `net/rpc/jsonrpc` (`jsonrpc.ServeConn`),
    /// as Go's `jsonrpc.Dial` does: JSON-RPC 1.0, arguments and results in
    /// JSON, field names matched as Go's `encoding/json` matches them.
    pub fn go_jsonrpc(mut self) -> ChannelBuilder {
        self.go = Some(GoWire::JsonRpc);
        self
    }

    /// Run every call through `layer`, after the layers added before it;
    /// see [`Layer`] for what a layer can do and where layers sit among
    /// the channel's own steps ("Order").
    pub fn layer(mut self, layer: impl Layer) -> ChannelBuilder {
        self.layers.push(Arc::new(layer));
        self
    }

    /// The settings as built: gRPC mode has its own keepalive default.
    pub(crate) fn into_parts(self) -> Parts {
        #[cfg(feature = "grpc")]
        let grpc = {
            let mut grpc = self.config.clone();
            if !self.keepalive_chosen {
                grpc.keepalive_interval = Some(GRPC_KEEPALIVE);
            }
            grpc
        };
        #[cfg(not(feature = "grpc"))]
        let _ = (self.keepalive_chosen, GRPC_KEEPALIVE);
        let wire = match (self.go, self.grpc) {
            (Some(go), _) => Wire::Go(go),
            #[cfg(feature = "grpc")]
            (None, true) => Wire::Grpc,
            _ => Wire::Native,
        };
        Parts {
            addr: self.addr,
            settings: Settings {
                native: self.config,
                #[cfg(feature = "grpc")]
                grpc,
            },
            wire,
            layers: self.layers,
        }
    }

    /// A channel that connects on its first call.
    pub fn build_lazy(self) -> Channel {
        let Parts { addr, settings, wire, layers } = self.into_parts();
        Channel::new(Route::One(settings.open(wire, addr)), Layers::new(layers))
    }

    /// A channel with its first connection established, so a wrong address
    /// or a server that is down shows up here rather than at the first call.
    pub async fn connect(self) -> Result<Channel, ConnectError> {
        let Parts { addr, settings, wire, layers } = self.into_parts();
        let transport = settings.open(wire, addr);
        transport.connect_now().await?;
        Ok(Channel::new(Route::One(transport), Layers::new(layers)))
    }
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .field("grpc", &self.grpc)
            .field("layers", &self.layers.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_defaults_differ_by_protocol_and_a_choice_is_kept() {
        let native = ChannelBuilder::new("127.0.0.1:1").into_parts().settings.native;
        assert_eq!(native.keepalive_interval, Some(Duration::from_secs(30)));
        #[cfg(feature = "grpc")]
        {
            let parts = ChannelBuilder::new("127.0.0.1:1").grpc().into_parts();
            assert_eq!(parts.wire, Wire::Grpc);
            let grpc = parts.settings.grpc;
            assert_eq!(grpc.keepalive_interval, Some(GRPC_KEEPALIVE), "grpc-go punishes frequent pings");
            let chosen = ChannelBuilder::new("127.0.0.1:1")
                .keepalive_interval(Some(Duration::from_secs(600)))
                .grpc()
                .into_parts()
                .settings
                .grpc;
            assert_eq!(chosen.keepalive_interval, Some(Duration::from_secs(600)));
        }
    }
}
