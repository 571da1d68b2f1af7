//! [`Context`]: what a handler knows about the call it is serving.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::sniff::Protocol;

/// Per-call information given to a handler.
///
/// A service method receives it by declaring a first argument of type
/// `&courier::Context`; the argument is not part of the wire signature.
///
/// The calls a handler makes through courier channels inherit the deadline
/// of the call it is serving (the earlier of theirs and this one), and are
/// cancelled with it when its caller cancels or goes away: nothing to pass
/// along by hand. (A task the handler spawns runs outside the call, and
/// inherits nothing.)
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
    response_metadata: Option<ResponseMetadata>,
    protocol: Option<Protocol>,
    /// A streaming call's halves, until its handler takes them.
    stream: Option<crate::stream::StreamSlot>,
}

/// The headers a handler sends back with its reply, shared between the
/// handler's context and the transport that writes the reply.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponseMetadata(Arc<Mutex<Metadata>>);

impl ResponseMetadata {
    fn lock(&self) -> std::sync::MutexGuard<'_, Metadata> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the handler has set so far.
    #[cfg_attr(not(feature = "http-json"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> Metadata {
        self.lock().clone()
    }

    /// What the handler set, leaving nothing behind.
    pub(crate) fn take(&self) -> Metadata {
        std::mem::take(&mut *self.lock())
    }
}

/// Everything a server knows of a call when it builds its context.
pub(crate) struct CallParts {
    pub(crate) method: &'static str,
    pub(crate) protocol: Protocol,
    pub(crate) codec: Codec,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) peer: SocketAddr,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// Where the handler's response metadata goes.
    pub(crate) response: ResponseMetadata,
    /// A streaming call's halves.
    pub(crate) stream: Option<crate::stream::StreamSlot>,
}

impl Context {
    /// The context of a call a courier server received, built in one go
    /// (this is on every call's path).
    pub(crate) fn for_call(parts: CallParts) -> Context {
        let CallParts { method, protocol, codec, deadline, metadata, peer, shutdown, response, stream } =
            parts;
        Context {
            method,
            deadline,
            metadata,
            peer: Some(peer),
            codec,
            shutdown: Some(shutdown),
            response_metadata: Some(response),
            protocol: Some(protocol),
            stream,
        }
    }

    /// A context for a call to `method`.
    pub fn new(method: &'static str, codec: Codec) -> Context {
        Context {
            method,
            deadline: None,
            metadata: Metadata::new(),
            peer: None,
            codec,
            shutdown: None,
            response_metadata: None,
            protocol: None,
            stream: None,
        }
    }

    /// A streaming call's halves (once; `None` after, or for a unary call).
    pub(crate) fn take_stream(&self) -> Option<crate::stream::StreamIo> {
        self.stream.as_ref().and_then(crate::stream::StreamSlot::take)
    }

    /// Match JSON field names as Go does (what the JSON-RPC server sets).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_lenient_json(mut self) -> Context {
        self.protocol = Some(Protocol::JsonRpc);
        self
    }

    /// Whether JSON arguments match field names ignoring case: over
    /// JSON-RPC, whose Go clients write `X` for a field `x`.
    pub(crate) fn lenient_json(&self) -> bool {
        self.protocol == Some(Protocol::JsonRpc)
    }

    /// Send a header back with the reply (gRPC: a response header; HTTP:
    /// a response header; native: a response header; JSON-RPC has none).
    /// Replaces earlier values of `key`.
    pub fn set_response_metadata(&self, key: impl AsRef<str>, value: impl Into<String>) {
        if let Some(response) = &self.response_metadata {
            response.lock().insert(key, value);
        }
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

    /// The protocol the call arrived in (`None` for a context not made by
    /// a courier server).
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The headers the caller sent, to change: a server [`Layer`] can add
    /// or remove metadata before the handler sees it.
    ///
    /// [`Layer`]: crate::server::Layer
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
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

/// The deadline of the call whose handler is being polled on this thread,
/// so that calls the handler makes inherit it with no plumbing in user code
/// (see [`Context`]'s docs). The server sets it around every poll of a
/// handler (`server::pipeline::run`); a client reads it when it describes a
/// call. Cancellation needs nothing of the kind: a handler that is dropped
/// (its caller cancelled or went away) drops the calls it was awaiting, and
/// each of those tells its own server.
pub(crate) mod current {
    use std::cell::Cell;
    use std::time::Instant;

    thread_local! {
        static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// Restores the deadline that was current before, when dropped.
    pub(crate) struct Entered(Option<Instant>);

    impl Drop for Entered {
        fn drop(&mut self) {
            DEADLINE.with(|current| current.set(self.0));
        }
    }

    /// Make `deadline` the current one until the guard is dropped.
    pub(crate) fn enter(deadline: Option<Instant>) -> Entered {
        Entered(DEADLINE.with(|current| current.replace(deadline)))
    }

    /// The deadline of the call being served on this thread, if any.
    pub(crate) fn deadline() -> Option<Instant> {
        DEADLINE.with(Cell::get)
    }

    #[cfg(test)]
    mod tests {
        use std::time::Duration;

        use super::*;

        #[test]
        fn a_deadline_is_current_while_entered_and_nests() {
            assert_eq!(deadline(), None);
            let outer = Instant::now() + Duration::from_secs(5);
            let inner = Instant::now() + Duration::from_secs(1);
            {
                let _outer = enter(Some(outer));
                assert_eq!(deadline(), Some(outer));
                {
                    let _inner = enter(Some(inner));
                    assert_eq!(deadline(), Some(inner));
                }
                assert_eq!(deadline(), Some(outer));
            }
            assert_eq!(deadline(), None);
        }
    }
}
