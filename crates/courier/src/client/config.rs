//! Channel settings and their builder.

use std::time::Duration;

use super::ConnectError;
use super::backoff::Backoff;
use super::channel::Channel;
use super::direct::Direct;
use crate::protocol::native::DEFAULT_MAX_FRAME_SIZE;

#[derive(Clone, Debug)]
pub(crate) struct ChannelConfig {
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) max_frame_size: usize,
    pub(crate) backoff: Backoff,
    pub(crate) write_high_water: usize,
    pub(crate) spin_wait: Option<Duration>,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            pool_size: 1,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(30)),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            backoff: Backoff::default(),
            write_high_water: 4 * 1024 * 1024,
            spin_wait: Some(Duration::from_micros(50)),
        }
    }
}

/// Configures a [`Channel`] to one address.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until built"]
pub struct ChannelBuilder {
    pub(crate) addr: String,
    pub(crate) config: ChannelConfig,
    grpc: bool,
}

impl ChannelBuilder {
    pub(crate) fn new(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder { addr: addr.into(), config: ChannelConfig::default(), grpc: false }
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
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> ChannelBuilder {
        self.config.keepalive_interval = interval;
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
    #[cfg(feature = "grpc")]
    pub fn grpc(mut self) -> ChannelBuilder {
        self.grpc = true;
        self
    }

    /// A channel that connects on its first call.
    pub fn build_lazy(self) -> Channel {
        #[cfg(feature = "grpc")]
        if self.grpc {
            return Channel::grpc(super::grpc::GrpcChannel::new(self.addr, self.config));
        }
        Channel::direct(Direct::new(self.addr, self.config))
    }

    /// A channel with its first connection established, so a wrong address
    /// or a server that is down shows up here rather than at the first call.
    pub async fn connect(self) -> Result<Channel, ConnectError> {
        #[cfg(feature = "grpc")]
        if self.grpc {
            let grpc = super::grpc::GrpcChannel::new(self.addr, self.config);
            grpc.connect_now().await?;
            return Ok(Channel::grpc(grpc));
        }
        let direct = Direct::new(self.addr, self.config);
        direct.connect_now().await?;
        Ok(Channel::direct(direct))
    }
}
