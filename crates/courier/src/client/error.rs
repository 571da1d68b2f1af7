//! [`ConnectError`]: why a connection could not be established.

use std::io;
use std::time::Duration;

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
