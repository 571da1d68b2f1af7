//! The client: channels, layers, call options, spawned calls.
//!
//! A call goes down this list, and the modules import only downwards (no
//! circle): `builder` and `discover` make channels, `call` is the
//! vocabulary every level shares, and the rest is in the order a call
//! passes through.
//!
//! - [`Stub`] (`stub`): what a generated client holds, the runtime core
//!   both generators emit thin code over.
//! - [`Channel`] (`channel`): the typed calls; describes each call once as
//!   a [`Call`] (`call`) and decodes its [`Outcome`]. `builder`
//!   ([`ChannelBuilder`]) and `discover` ([`DiscoverBuilder`]) make channels.
//! - [`Layer`] (`layer`): user code around every call, in one documented
//!   order.
//! - `route`: the call's deadline, then one endpoint or a balanced set.
//! - `balanced`: the instances of a discovered service, kept current by the
//!   watch in `discover`, each with its circuit breaker, in the balancer's
//!   order; `attempts`: a call sent along that order under its method's
//!   breaker and retry or hedging policy, paid from the retry budget;
//!   `governance`: those policies, per-method state and counters
//!   ([`GovernanceReport`]).
//! - `protocols`: which protocol an instance is called with, and the
//!   endpoint of either kind.
//! - `endpoint`: the trait every protocol implements; below it, a
//!   protocol's frames. `native` (the native protocol over
//!   `connection`s), `grpc` (feature `grpc`) and `gorpc` (Go's `net/rpc`:
//!   gob over TCP or HTTP, or JSON-RPC), sharing the connection `pool`.
//! - `fallback`: [`Fallbacks`](crate::resilience::Fallbacks) as a layer.
//! - `settings`: connection settings; `error`: [`ConnectError`].
//! - [`CallOptions`] (`options`): timeout, metadata and codec per call;
//!   [`CallHandle`] (`handle`): a call started now and awaited later.

mod attempts;
mod balanced;
mod builder;
mod call;
mod channel;
mod connection;
mod discover;
mod endpoint;
mod error;
mod fallback;
mod gorpc;
mod governance;
#[cfg(feature = "grpc")]
mod grpc;
mod handle;
mod layer;
mod native;
mod options;
mod pool;
mod protocols;
mod route;
mod settings;
mod streams;
mod stub;

/// Reconnect backoff (also [`crate::resilience::Backoff`]).
pub use crate::resilience::Backoff;
pub use builder::ChannelBuilder;
pub use call::{Call, CallKind, Outcome};
pub use channel::{Channel, FromChannel};
pub use discover::{DiscoverBuilder, DiscoverError};
pub use error::ConnectError;
pub use governance::GovernanceReport;
pub use handle::CallHandle;
pub use layer::{Layer, Next};
pub use options::CallOptions;
pub use stub::Stub;
