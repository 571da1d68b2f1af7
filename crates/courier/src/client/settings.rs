//! The settings of the connections to one address, whichever protocol
//! they speak. [`ChannelBuilder`](super::ChannelBuilder) fills them in.

use std::time::Duration;

use crate::protocol::native::DEFAULT_MAX_FRAME_SIZE;
use crate::resilience::Backoff;

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
pub(crate) const GRPC_KEEPALIVE: Duration = Duration::from_secs(300);
