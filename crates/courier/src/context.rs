//! [`Context`]: what a handler knows about the call it is serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::metadata::Metadata;

/// Per-call information given to a handler.
///
/// A service method receives it by declaring a first argument of type
/// `&courier::Context`; the argument is not part of the wire signature.
///
/// ```
/// #[courier::service]
/// trait Greeter {
///     async fn hello(&self, cx: &courier::Context, name: String) -> String;
/// }
///
/// struct Polite;
/// impl Greeter for Polite {
///     async fn hello(&self, cx: &courier::Context, name: String) -> String {
///         let lang = cx.metadata().get("lang").unwrap_or("en");
///         format!("[{lang}] hello, {name}")
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Context {
    method: &'static str,
    deadline: Option<Instant>,
    metadata: Metadata,
    peer: Option<SocketAddr>,
    codec: Codec,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Context {
    /// A context for a call to `method`.
    pub fn new(method: &'static str, codec: Codec) -> Context {
        Context { method, deadline: None, metadata: Metadata::new(), peer: None, codec, shutdown: None }
    }

    /// Attach the server's shutdown signal.
    #[must_use]
    pub(crate) fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Context {
        self.shutdown = Some(shutdown);
        self
    }

    /// Resolves when the server starts a graceful shutdown (never, for a
    /// context not made by a courier server). A handler that waits for a
    /// long time (a long poll, say) can answer early, so the server's drain
    /// does not wait for it.
    pub async fn shutdown(&self) {
        match self.shutdown.clone() {
            Some(mut shutdown) => {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Set the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Context {
        self.deadline = deadline;
        self
    }

    /// Set the request metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Context {
        self.metadata = metadata;
        self
    }

    /// Set the caller's address.
    #[must_use]
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Context {
        self.peer = peer;
        self
    }

    /// The full method name, `Service.Method`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// When the caller stops waiting, if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` without one; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The headers the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The caller's socket address, when the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The codec the request was encoded with; the reply uses the same.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}
