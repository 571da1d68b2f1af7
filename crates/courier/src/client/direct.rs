//! [`Direct`]: calls to one address over a small pool of multiplexed
//! connections, reconnecting with jittered backoff.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::ConnectError;
use super::config::ChannelConfig;
use super::connection::{CallError, Connection};
use super::options::CallOptions;
use super::pool::{Connect, Pool};
use crate::protocol::native::{Frame, FrameKind};
use crate::service::BoxFuture;
use crate::status::Status;

/// How often one call may move to a new connection because the one it
/// picked went away without processing it.
pub(crate) const MAX_DRAIN_RETRIES: usize = 3;

/// Why an attempt on one address failed.
pub(crate) enum AttemptError {
    /// Nothing reached the server (it could not be reached, or it refused
    /// the request unprocessed): another instance may be tried.
    NotSent(Status),
    /// The call failed, possibly after the server started on it.
    Failed(Status),
}

impl AttemptError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            AttemptError::NotSent(status) | AttemptError::Failed(status) => status,
        }
    }
}

/// One address, a pool of native connections to it.
pub(crate) struct Direct {
    pub(crate) pool: Arc<Pool<Connection>>,
}

impl Connect for Connection {
    fn connect(addr: String, config: ChannelConfig) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        Box::pin(async move { Connection::connect(&addr, &config).await })
    }

    fn is_usable(&self) -> bool {
        Connection::is_usable(self)
    }
}

impl Direct {
    pub(crate) fn new(addr: String, config: ChannelConfig) -> Arc<Direct> {
        Arc::new(Direct { pool: Arc::new(Pool::new(addr, config)) })
    }

    /// Where calls go.
    pub(crate) fn addr(&self) -> &str {
        &self.pool.addr
    }

    /// Establish the first connection now.
    pub(crate) async fn connect_now(&self) -> Result<(), ConnectError> {
        self.pool.connect_now().await
    }

    /// Send one call on a connection to this address. Calls the server
    /// provably never processed move to a fresh connection (at most
    /// `MAX_DRAIN_RETRIES` times).
    pub(crate) async fn attempt(
        self: &Arc<Self>,
        kind: FrameKind,
        method: &str,
        options: &CallOptions,
        deadline: Option<Instant>,
        encode_body: &(dyn Fn(&mut BytesMut) -> Result<(), Status> + Sync),
    ) -> Result<Option<Frame>, AttemptError> {
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
            match connection
                .call(kind, method, options.codec(), deadline, options.metadata(), encode_body)
                .await
            {
                Ok(frame) => return Ok(frame),
                Err(CallError::Failed(status)) => return Err(AttemptError::Failed(status)),
                Err(CallError::Unprocessed) => continue,
            }
        }
        Err(AttemptError::NotSent(Status::unavailable(format!(
            "every connection to {} is shutting down",
            self.pool.addr
        ))))
    }
}
