//! The call pipeline: the one path every call takes on the server, whatever
//! protocol it arrived in.
//!
//! Each protocol's adapter (`connection` for courier's own, `grpc`,
//! `jsonrpc`, `http`) turns its wire into an [`Incoming`] call and an
//! [`Outcome`] back into its wire; everything in between happens here, once:
//!
//! ```text
//!  adapter: frame limits, request progress, the request's bytes reserved
//!     │
//!  route        Service.Method or /Service/Method → Unimplemented if unknown,
//!     │         InvalidArgument for a codec the service cannot decode
//!  deadline     the caller's, capped by the server's call timeout; covers
//!     │         everything below, layers included
//!  layers       the server's layers, outermost first (ServerBuilder::layer)
//!     │
//!  admission    the concurrency slots (connection, server, per method)
//!     │
//!  handler      inline or in a task of its own, panics isolated, dropped on
//!               cancellation
//! ```
//!
//! The [`Layer`] docs say what a layer can do and where it sits. With no
//! layer configured nothing of the layer machinery runs: admission is taken
//! at once and the handler's future is run as it is (no extra box, no
//! allocation), so the common case is as cheap as a pipeline can be.
//!
//! - `layer`: [`Layer`] and [`Next`], the user's hook on every call.
//! - `run`: driving a call's future (its deadline, also made current for
//!   the calls the handler makes; panic isolation; the inline poll).

mod layer;
pub(crate) mod run;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

pub use layer::{Layer, Next};

use super::ServerShared;
use super::admission::{CallPermits, ConnectionSlots};
use super::budget::Reservation;
use super::inline::InlinePolicy;
use super::router::Route;
use crate::codec::Codec;
use crate::context::{CallParts, Context, ResponseMetadata};
use crate::metadata::Metadata;
use crate::protocol::sniff::Protocol;
use crate::service::BoxFuture;
use crate::status::Status;

/// What a call names as its method.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// `Service.Method` (courier's protocol, JSON-RPC).
    Name(&'a str),
    /// `/Service/Method` (gRPC).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    Path(&'a str),
}

/// Find the method a call is for, and check the service can read the codec
/// its arguments came in.
pub(crate) fn route(server: &ServerShared, target: Target<'_>, codec: Codec) -> Result<Route, Status> {
    let route = match target {
        Target::Name(name) => server.router.route(name)?,
        Target::Path(path) => server.router.route_path(path)?,
    };
    route.check_codec(codec)?;
    Ok(route.clone())
}

/// A routed call, whole, as its protocol received it.
pub(crate) struct Incoming {
    pub(crate) route: Route,
    pub(crate) protocol: Protocol,
    pub(crate) codec: Codec,
    /// When the caller stops waiting, if it said.
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) peer: SocketAddr,
    pub(crate) body: Bytes,
    /// The request's bytes, held against the server's budget until the call
    /// is done.
    pub(crate) memory: Reservation,
    /// A streaming call's halves, for its handler (`None` for unary calls).
    pub(crate) stream: Option<crate::stream::StreamSlot>,
}

/// How a call ended: what goes back to the caller.
pub(crate) struct Outcome {
    pub(crate) result: Result<Bytes, Status>,
    /// The response metadata the handler (or a layer) set.
    pub(crate) metadata: Metadata,
}

impl Outcome {
    /// An outcome without response metadata (a refusal).
    #[cfg_attr(not(any(feature = "grpc", feature = "http-json")), allow(dead_code))]
    pub(crate) fn error(status: Status) -> Outcome {
        Outcome { result: Err(status), metadata: Metadata::new() }
    }
}

/// A started call: its future (the handler, inside the layers if any), and
/// what it holds until it is done.
pub(crate) struct Call {
    future: BoxFuture<'static, Result<Bytes, Status>>,
    deadline: Option<Instant>,
    inline: Arc<InlinePolicy>,
    /// Whether the first poll was timed already (inline).
    first_poll_timed: bool,
    response: ResponseMetadata,
    /// Held only without layers; with layers, admission is a step inside
    /// the future (see `layer`).
    permits: Option<CallPermits>,
    memory: Reservation,
}

/// Start a call: build its context, pass it through the layers, admit it.
///
/// Without layers, a call the server has no room for is refused here
/// (`Err`), before anything is spawned for it; with layers, the refusal
/// comes out of the call's future, so the layers see it too.
pub(crate) fn start(
    server: &Arc<ServerShared>,
    slots: &Arc<ConnectionSlots>,
    incoming: Incoming,
    shutdown: &watch::Receiver<bool>,
) -> Result<Call, Status> {
    let Incoming { route, protocol, codec, deadline, metadata, peer, body, memory, stream } = incoming;
    if route.method.kind.is_streaming() && stream.is_none() {
        // One place for every protocol that cannot carry this method's
        // stream (JSON-RPC and Go's net/rpc have none; HTTP/JSON streams
        // replies only).
        return Err(Status::unimplemented(format!(
            "{} is a {} method, which {} cannot carry: call it over courier's protocol or gRPC{}",
            route.method.full_name,
            match route.method.kind {
                crate::service::MethodKind::ServerStreaming => "server-streaming",
                crate::service::MethodKind::ClientStreaming => "client-streaming",
                _ => "bidirectional streaming",
            },
            protocol.display_name(),
            if route.method.kind == crate::service::MethodKind::ServerStreaming {
                " (or HTTP/JSON, which streams the replies as JSON lines)"
            } else {
                ""
            }
        )));
    }
    let deadline = match server.config.call_timeout.and_then(|cap| Instant::now().checked_add(cap)) {
        Some(cap) => Some(deadline.map_or(cap, |asked| asked.min(cap))),
        None => deadline,
    };
    let response = ResponseMetadata::default();
    let cx = Context::for_call(CallParts {
        method: route.method.full_name,
        protocol,
        codec,
        deadline,
        metadata,
        peer,
        shutdown: shutdown.clone(),
        response: response.clone(),
        stream,
    });
    let mut route = route;
    let (future, permits, inline) = if server.layers.is_empty() {
        let permits = match server.admission.admit(slots, route.method.full_name, route.adaptive.take()) {
            Ok(permits) => permits,
            Err(refusal) => match refusal.pushback {
                None => return Err(refusal.status),
                // Shedding: the refusal carries response metadata, so it
                // goes out as the outcome of a call that ends at once.
                Some(pushback) => {
                    push_back(&cx, pushback);
                    let future: BoxFuture<'static, Result<Bytes, Status>> =
                        Box::pin(std::future::ready(Err(refusal.status)));
                    return Ok(Call {
                        future,
                        deadline,
                        inline: route.inline,
                        first_poll_timed: false,
                        response,
                        permits: None,
                        memory,
                    });
                }
            },
        };
        let Route { service, index, inline, .. } = route;
        (service.call(index, cx, body), Some(permits), inline)
    } else {
        let inline = route.inline.clone();
        // The first layer runs inside the future, so its own code is under
        // the call's deadline and panic isolation like everything after it.
        let next = Next::first(server.clone(), slots.clone(), route);
        let future: BoxFuture<'static, Result<Bytes, Status>> =
            Box::pin(async move { next.run(cx, body).await });
        (future, None, inline)
    };
    Ok(Call { future, deadline, inline, first_poll_timed: false, response, permits, memory })
}

/// Tell the caller when to try again (gRFC A6's pushback, in every
/// protocol's response metadata but JSON-RPC's, which has none).
pub(crate) fn push_back(cx: &Context, after: std::time::Duration) {
    let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
    cx.set_response_metadata(crate::resilience::RETRY_PUSHBACK, ms.to_string());
}

impl Call {
    /// Where the handler's response metadata goes (read early by a stream
    /// whose head goes out before the call ends).
    #[cfg_attr(not(feature = "http-json"), allow(dead_code))]
    pub(crate) fn response_metadata(&self) -> ResponseMetadata {
        self.response.clone()
    }

    /// Whether this call may be polled on the connection's own task (its
    /// method has shown itself quick to its first `.await`).
    pub(crate) fn may_run_inline(&self) -> bool {
        self.inline.allows_inline()
    }

    /// Poll the call once, here. Most handlers finish without waiting, and
    /// answering them on the connection's task saves a task spawn and a
    /// thread wake-up. `None`: it is waiting on something; run it in a task
    /// of its own with [`Call::run`], which polls it again (so it registers
    /// that task's waker, as the `Future` contract requires). `Some`: it is
    /// done; [`Call::finish`] turns the result into the outcome.
    ///
    /// A plain function polled through `poll_fn` by the adapter, not an
    /// `async fn` taking the call: that would move the whole call into a
    /// state machine and back out per call on the hottest path.
    pub(crate) fn poll_inline(&mut self, task: &mut std::task::Context<'_>) -> Option<Result<Bytes, Status>> {
        let started = Instant::now();
        let polled = run::poll_inline(&mut self.future, self.deadline, task);
        self.inline.record(started.elapsed());
        self.first_poll_timed = true;
        polled
    }

    /// The outcome of a call that finished inline.
    pub(crate) fn finish(self, result: Result<Bytes, Status>) -> Outcome {
        let Call { future, response, permits, memory, .. } = self;
        // A handler whose drop panics must not take the connection down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(future)));
        drop((permits, memory));
        Outcome { result, metadata: response.take() }
    }

    /// Run the call to its end, or to its deadline; a panic becomes
    /// `Internal`. Dropping the future drops the handler. The call's slots
    /// and memory are given back as soon as it is done, before its reply is
    /// written.
    pub(crate) async fn run(self) -> Outcome {
        let Call { future, deadline, inline, first_poll_timed, response, permits, memory } = self;
        let timing = (!first_poll_timed).then_some(inline);
        let result = run::run(future, deadline, timing).await;
        drop((permits, memory));
        Outcome { result, metadata: response.take() }
    }
}
