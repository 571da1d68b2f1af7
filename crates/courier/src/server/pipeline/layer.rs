//! [`Layer`]: a step of the user's own on every call the server handles.

use std::sync::Arc;

use bytes::Bytes;

use super::super::ServerShared;
use super::super::admission::ConnectionSlots;
use super::super::router::Route;
use crate::context::Context;
use crate::service::BoxFuture;
use crate::status::Status;

/// A step on every call the server handles, on every protocol: an
/// interceptor. It gets the call's [`Context`] and encoded request, and
/// either answers itself (a `Status` to refuse the call) or hands the call
/// on to [`Next`], before and after which it can do what it likes: read
/// and set request metadata ([`Context::metadata_mut`]), set response
/// metadata ([`Context::set_response_metadata`]), time the call, look at
/// the outcome.
///
/// # Order
///
/// Where a call meets each step on the server, first to last:
///
/// 1. the protocol's own checks (frame and header limits, the request
///    arriving steadily, its bytes within the server's memory budget);
/// 2. routing (`Unimplemented` for an unknown method) and the codec check;
/// 3. the deadline: the caller's, capped by
///    [`ServerBuilder::call_timeout`](crate::ServerBuilder::call_timeout),
///    over everything below, layers included;
/// 4. the layers, in the order they were added with
///    [`ServerBuilder::layer`](crate::ServerBuilder::layer): the first
///    added is the outermost, sees the call first and its outcome last;
///    this is where authentication, tracing and metrics sit;
/// 5. admission: the concurrency limits (a refusal is a
///    `ResourceExhausted` outcome the layers see);
/// 6. the handler, its panics turned into `Internal`, dropped when the
///    caller cancels or goes away.
///
/// ```
/// use courier::server::{Layer, Next};
/// use courier::{Context, Status};
/// use courier::__private::{BoxFuture, Bytes};
///
/// /// Refuses calls without an `authorization` header.
/// struct RequireAuth;
///
/// impl Layer for RequireAuth {
///     fn call(&self, cx: Context, request: Bytes, next: Next) -> BoxFuture<'static, Result<Bytes, Status>> {
///         if cx.metadata().get("authorization").is_none() {
///             return Box::pin(async { Err(Status::unauthenticated("send an authorization header")) });
///         }
///         next.run(cx, request)
///     }
/// }
///
/// let builder = courier::Server::builder().layer(RequireAuth);
/// # drop(builder);
/// ```
pub trait Layer: Send + Sync + 'static {
    /// Handle one call: answer it, or pass it on with `next.run(cx, request)`.
    fn call(&self, cx: Context, request: Bytes, next: Next) -> BoxFuture<'static, Result<Bytes, Status>>;
}

/// A closure is a layer.
impl<F> Layer for F
where
    F: Fn(Context, Bytes, Next) -> BoxFuture<'static, Result<Bytes, Status>> + Send + Sync + 'static,
{
    fn call(&self, cx: Context, request: Bytes, next: Next) -> BoxFuture<'static, Result<Bytes, Status>> {
        self(cx, request, next)
    }
}

/// The rest of the pipeline after a layer: the layers inside it, then
/// admission and the handler.
pub struct Next {
    server: Arc<ServerShared>,
    slots: Arc<ConnectionSlots>,
    route: Route,
    /// The next layer to run; past the last, admission and the handler.
    index: usize,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("method", &self.route.method.full_name)
            .field("layers_left", &self.server.layers.len().saturating_sub(self.index))
            .finish()
    }
}

impl Next {
    /// The whole pipeline after routing.
    pub(super) fn first(server: Arc<ServerShared>, slots: Arc<ConnectionSlots>, route: Route) -> Next {
        Next { server, slots, route, index: 0 }
    }

    /// Pass the call on. The context given is the one the rest of the
    /// pipeline (and the handler) sees.
    pub fn run(mut self, cx: Context, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        if let Some(layer) = self.server.layers.get(self.index).cloned() {
            self.index += 1;
            return layer.call(cx, request, self);
        }
        // Innermost: admission, then the handler, holding its slots until
        // it is done.
        let Next { server, slots, mut route, .. } = self;
        match server.admission.admit(&slots, route.method.full_name, route.adaptive.take()) {
            Err(refusal) => {
                if let Some(pushback) = refusal.pushback {
                    super::push_back(&cx, pushback);
                }
                Box::pin(std::future::ready(Err(refusal.status)))
            }
            Ok(permits) => {
                let handler = route.service.call(route.index, cx, request);
                Box::pin(async move {
                    let outcome = handler.await;
                    drop(permits);
                    outcome
                })
            }
        }
    }
}
