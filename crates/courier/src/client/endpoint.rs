//! [`Endpoint`]: one address spoken to in one protocol, the seam between
//! what is true of every call and what one protocol's wire needs.
//!
//! Above an endpoint a call is a [`Call`] and its answer an [`Outcome`];
//! only the endpoint knows frames, streams and how its wire carries a
//! status. Two implement it: the native connection pool
//! ([`NativeEndpoint`](super::native::NativeEndpoint)) and the gRPC channel
//! ([`GrpcEndpoint`](super::grpc::GrpcEndpoint), feature `grpc`).

use std::future::Future;

use super::call::{Call, Outcome};
use super::error::ConnectError;
use crate::codec::Codec;
use crate::resilience::retry::AttemptError;

/// One address, one protocol, a pool of connections.
///
/// Statically dispatched (see `protocols::Transport`): a boxed future per
/// call would cost the native hot path an allocation.
pub(crate) trait Endpoint: Send + Sync {
    /// Where calls go, `host:port`.
    fn addr(&self) -> &str;

    /// The codec a call asking for `requested` travels in here.
    fn wire_codec(&self, requested: Codec) -> Codec;

    /// Send `call` and wait for its answer. An error status the server
    /// sent is an answer (`Ok`, with the status in the outcome); `Err` says
    /// the server's answer never came, and whether anything was sent.
    /// Requests the server provably never processed are sent again on a
    /// fresh connection (`resilience::retry`).
    fn call(&self, call: &Call<'_>) -> impl Future<Output = Result<Outcome, AttemptError>> + Send;

    /// Open the first connection now.
    fn connect_now(&self) -> impl Future<Output = Result<(), ConnectError>> + Send;
}
