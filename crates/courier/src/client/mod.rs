//! The client: channels, call options, spawned calls.
//!
//! - [`Channel`] (`channel`): where calls go, one address or a discovered
//!   service.
//! - `direct`: one address, a pool of multiplexed connections, reconnect
//!   with jittered backoff.
//! - `balanced` and [`DiscoverBuilder`] (`discover`): the instances of a
//!   service from a registry, kept current by a watch, balanced, with
//!   unreachable instances ejected for a while.
//! - `connection`: one native connection (pending calls by id, its event
//!   loop, keepalive).
//! - `grpc`: one address over gRPC (feature `grpc`), for servers that are
//!   not courier.
//! - `pool`: the lazily opened, reopened connections to one address that
//!   the native and gRPC clients share.
//! - [`CallOptions`]: timeout, metadata and codec per call.
//! - [`CallHandle`]: a call started now and awaited later.
//! - [`Backoff`]: the reconnect delay policy.
//! - [`Stub`] (`stub`): the runtime core every generated client is a thin
//!   shell over.

mod backoff;
mod balanced;
mod channel;
mod config;
mod connection;
mod direct;
mod discover;
#[cfg(feature = "grpc")]
mod grpc;
mod handle;
mod options;
mod pool;
mod stub;

use std::io;
use std::time::Duration;

pub use backoff::Backoff;
pub use channel::{Channel, FromChannel};
pub use config::ChannelBuilder;
pub use discover::{DiscoverBuilder, DiscoverError};
pub use handle::CallHandle;
pub use options::CallOptions;
pub use stub::Stub;

use crate::status::{Code, Status};

/// A connection could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection failed (refused, unreachable, no such host).
    #[error("could not connect to {addr}: {source}")]
    Io {
        /// The address dialled.
        addr: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The attempt took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The address dialled.
        addr: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Something answered, but not a courier server of a compatible version.
    #[error("{addr} did not complete the courier handshake: {reason}")]
    Handshake {
        /// The address dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The blocking client's runtime could not be started.
    #[error("could not start the blocking client's runtime: {0}")]
    Runtime(io::Error),
}

impl From<ConnectError> for Status {
    fn from(err: ConnectError) -> Status {
        let code = match err {
            ConnectError::Runtime(_) => Code::FailedPrecondition,
            _ => Code::Unavailable,
        };
        Status::new(code, err.to_string())
    }
}
