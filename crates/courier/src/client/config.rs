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

/// The gRPC mode's keepalive interval: grpc-go's servers accept one ping
/// per 5 minutes by default.
const GRPC_KEEPALIVE: Duration = Duration::from_secs(300);

/// Configures a [`Channel`] to one address.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until built"]
pub struct ChannelBuilder {
    pub(crate) addr: String,
    pub(crate) config: ChannelConfig,
    grpc: bool,
    /// Whether `keepalive_interval` was chosen (gRPC mode defaults to none).
    keepalive_chosen: bool,
}

impl ChannelBuilder {
    pub(crate) fn new(addr: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            addr: addr.into(),
            config: ChannelConfig::default(),
            grpc: false,
            keepalive_chosen: false,
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
    #[cfg(feature = "grpc")]
    pub fn grpc(mut self) -> ChannelBuilder {
        self.grpc = true;
        self
    }

    /// The settings as built: gRPC mode has its own keepalive default.
    fn into_config(self) -> (String, ChannelConfig, bool) {
        let mut config = self.config;
        if self.grpc && !self.keepalive_chosen {
            config.keepalive_interval = Some(GRPC_KEEPALIVE);
        }
        (self.addr, config, self.grpc)
    }

    /// A channel that connects on its first call.
    pub fn build_lazy(self) -> Channel {
        let (addr, config, grpc) = self.into_config();
        #[cfg(feature = "grpc")]
        if grpc {
            return Channel::grpc(super::grpc::GrpcChannel::new(addr, config));
        }
        let _ = grpc;
        Channel::direct(Direct::new(addr, config))
    }

    /// A channel with its first connection established, so a wrong address
    /// or a server that is down shows up here rather than at the first call.
    pub async fn connect(self) -> Result<Channel, ConnectError> {
        let (addr, config, grpc) = self.into_config();
        #[cfg(feature = "grpc")]
        if grpc {
            let grpc = super::grpc::GrpcChannel::new(addr, config);
            grpc.connect_now().await?;
            return Ok(Channel::grpc(grpc));
        }
        let _ = grpc;
        let direct = Direct::new(addr, config);
        direct.connect_now().await?;
        Ok(Channel::direct(direct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_defaults_differ_by_protocol_and_a_choice_is_kept() {
        let native = ChannelBuilder::new("127.0.0.1:1").into_config().1;
        assert_eq!(native.keepalive_interval, Some(Duration::from_secs(30)));
        #[cfg(feature = "grpc")]
        {
            let grpc = ChannelBuilder::new("127.0.0.1:1").grpc().into_config().1;
            assert_eq!(grpc.keepalive_interval, Some(GRPC_KEEPALIVE), "grpc-go punishes frequent pings");
            let chosen = ChannelBuilder::new("127.0.0.1:1")
                .keepalive_interval(Some(Duration::from_secs(600)))
                .grpc()
                .into_config()
                .1;
            assert_eq!(chosen.keepalive_interval, Some(Duration::from_secs(600)));
        }
    }
}
