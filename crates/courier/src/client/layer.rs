//! [`Layer`]: code that runs around every call a channel makes, whatever
//! protocol carries it, and the stack of them a channel keeps.

use std::fmt;
use std::sync::Arc;

use super::call::{Call, Outcome};
use super::route::Route;
use crate::service::BoxFuture;

/// Runs around every call of a channel (an interceptor): it sees the call
/// (method, request metadata it may read and change, deadline), may answer
/// it instead (reject it with a [`Status`](crate::Status)), or passes it on
/// with [`Next::run`] and sees the [`Outcome`], response metadata included.
/// The same on native and gRPC channels, and on discovered ones whatever
/// protocol each instance is called with.
///
/// Add layers with [`ChannelBuilder::layer`](super::ChannelBuilder::layer)
/// or [`DiscoverBuilder::layer`](super::DiscoverBuilder::layer). A channel
/// without layers runs none of this machinery: no allocation, no dynamic
/// call.
///
/// # Order
///
/// A call passes, outermost first (the outcome comes back the other way):
///
/// 1. **The deadline is fixed**: now plus the call's timeout. Layers see it
///    ([`Call::deadline`]); the time they take counts against it.
/// 2. **User layers, in the order added**: the first added sees the call
///    first and its outcome last.
/// 3. **The deadline is enforced**: what is below is dropped when it passes
///    and the outcome is `DeadlineExceeded`, which every layer sees.
/// 4. **Balancing and retries** (discovered channels): instances in the
///    balancer's order, the next tried when nothing was sent (or, for
///    idempotent methods, when the connection was lost mid-call), at most
///    three; unreachable instances ejected for a while.
/// 5. **The endpoint** of one instance, native or gRPC: a pool of
///    connections (opened lazily, reopened with backoff), a request the
///    server never processed sent again on a fresh connection, and the
///    wire's answer decoded into the outcome.
///
/// So a layer sees a call once however many instances or connections it
/// tries, and a rejection by a layer sends nothing.
///
/// # Example
///
/// A layer that adds a header to every call, counts them, and refuses one
/// method before anything is sent:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Instant;
///
/// use courier::client::{Call, Layer, Next, Outcome};
/// use courier::service::BoxFuture;
/// use courier::{Channel, CallOptions, Code, Status};
///
/// #[derive(Default)]
/// struct Guard {
///     calls: AtomicUsize,
/// }
///
/// impl Layer for Guard {
///     fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
///         Box::pin(async move {
///             self.calls.fetch_add(1, Ordering::Relaxed);
///             if call.method() == "Admin.Drop" {
///                 return Outcome::from(Status::new(Code::PermissionDenied, "not from here"));
///             }
///             call.metadata_mut().insert("x-caller", "billing");
///             let started = Instant::now();
///             let outcome = next.run(call).await;
///             eprintln!("{} took {:?}: {:?}", call.method(), started.elapsed(), outcome.code());
///             outcome
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let guard = std::sync::Arc::new(Guard::default());
/// let channel = Channel::builder("127.0.0.1:9000").layer(guard.clone()).build_lazy();
/// let err = channel
///     .unary_bytes("Admin.Drop", Default::default(), &CallOptions::new())
///     .await
///     .expect_err("refused before anything is sent");
/// assert_eq!((err.code(), err.message()), (Code::PermissionDenied, "not from here"));
/// assert_eq!(guard.calls.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub trait Layer: Send + Sync + 'static {
    /// Handle `call`: answer it, or pass it on with `next.run(call)`.
    fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome>;
}

/// A shared layer is a layer, so one instance can serve several channels
/// and the code that added it can still read its state.
impl<L: Layer + ?Sized> Layer for Arc<L> {
    fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        (**self).call(call, next)
    }
}

/// The rest of the stack below a layer: the layers added after it, then
/// the channel's deadline, balancing and endpoints.
pub struct Next<'a> {
    layers: &'a [Arc<dyn Layer>],
    route: &'a Route,
}

impl Next<'_> {
    /// Pass `call` on and wait for its outcome.
    pub async fn run(self, call: &mut Call<'_>) -> Outcome {
        match self.layers.split_first() {
            Some((layer, rest)) => layer.call(call, Next { layers: rest, route: self.route }).await,
            None => self.route.send(call).await,
        }
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("layers", &self.layers.len()).finish_non_exhaustive()
    }
}

/// A channel's layers, in the order added. Empty is `None`, so a channel
/// without layers clones and calls exactly as it would without this.
#[derive(Clone, Default)]
pub(crate) struct Layers(Option<Arc<[Arc<dyn Layer>]>>);

impl Layers {
    pub(crate) fn new(layers: Vec<Arc<dyn Layer>>) -> Layers {
        Layers((!layers.is_empty()).then(|| layers.into()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Run `call` through the layers, then `route`.
    pub(crate) async fn run(&self, route: &Route, call: &mut Call<'_>) -> Outcome {
        let layers = self.0.as_deref().unwrap_or_default();
        Next { layers, route }.run(call).await
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layers", self.0.as_ref().map_or(0, |layers| layers.len()))
    }
}
